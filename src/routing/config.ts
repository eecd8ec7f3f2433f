import { z } from 'zod';

// Self-contained (zod only): the config schema imports these.

const agentName = z.string().regex(/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/, 'must be a lowercase name (a-z, 0-9, -)');

/** A tenant's own routing settings (`tenants[].routing`, or the spec given to the Admin API). */
export const tenantRoutingSchema = z
  .object({
    /** Where a message goes when no skill matches it well enough; without it, a clear error listing the closest skills. */
    defaultAgent: agentName.optional(),
    /** This tenant's confidence threshold (default: routing.intent.minConfidence). */
    minConfidence: z.number().min(0).max(1).optional(),
  })
  .strict();

export type TenantRouting = z.infer<typeof tenantRoutingSchema>;

export const routingSchema = z
  .object({
    intent: z
      .object({
        /** The body read to find the query text (an A2A message); larger bodies are refused (413). */
        maxBodyBytes: z.number().int().min(1024).max(16 * 1024 * 1024).default(256 * 1024),
        /** Characters of the message text the matcher reads (the rest is ignored). */
        maxTextChars: z.number().int().min(16).max(100_000).default(4096),
        /** Below this confidence (0..1) a message is not routed by its text: the tenant's default agent or an error. */
        minConfidence: z.number().min(0).max(1).default(0.2),
        /**
         * Agents whose score is within this share of the best one are equally good: the load decides
         * between them (power of two choices). 0: always the best score.
         */
        tieMargin: z.number().min(0).max(1).default(0.15),
        /** How many ranked agents a decision considers (the chosen one and its failover alternatives). */
        maxCandidates: z.number().int().min(1).max(100).default(8),
      })
      .strict()
      .prefault({}),
    /** Synonym groups added to the built-in ones, e.g. `{ refund: [reimbursement, "money back"] }`. */
    synonyms: z.record(z.string().min(1).max(64), z.array(z.string().min(1).max(128)).min(1).max(64)).default({}),
    taskRoutes: z
      .object({
        /** How long the gateway remembers which agent owns a task or conversation it routed. */
        ttlMs: z.number().int().min(60_000).max(365 * 24 * 3600_000).default(7 * 24 * 3600_000),
      })
      .strict()
      .prefault({}),
  })
  .strict();

export type RoutingConfig = z.infer<typeof routingSchema>;
