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

/** What every semantic scorer behind an OpenAI-compatible API has. */
const openAiScorerFields = {
  /** How the scorer is named in explanations, logs and counters (default: `embeddings` or `classifier`). */
  name: z
    .string()
    .regex(/^[a-z0-9][a-z0-9-]{0,31}$/, 'must be a short lowercase name (a-z, 0-9, -)')
    .refine((name) => name !== 'lexical', '"lexical" is the built-in scorer')
    .optional(),
  /** Base URL of an OpenAI-compatible API, e.g. http://127.0.0.1:11434/v1 (`/embeddings`, `/chat/completions` are appended). */
  url: z.url({ protocol: /^https?$/, error: 'must be an http:// or https:// URL' }),
  model: z.string().min(1).max(256),
  /** The NAME of the environment variable that holds the API key (sent as `Authorization: Bearer`); never the key itself. */
  apiKeyEnv: z
    .string()
    .regex(/^[A-Za-z_][A-Za-z0-9_]{0,127}$/, 'must be the name of an environment variable (the key itself never goes in the config)')
    .optional(),
  /** Share of the blended confidence (0..1); the lexical scorer gets 1 minus the sum of the scorers' weights. 0: scored and explained, never decides. */
  weight: z.number().min(0).max(1).default(0.5),
};

const embeddingsScorerSchema = z
  .object({
    kind: z.literal('openai-embeddings'),
    ...openAiScorerFields,
    /** The scorer's share of a request: past it the decision is lexical only. */
    timeoutMs: z.number().int().min(10).max(60_000).default(300),
    /** Agents it scores per decision: the lexically best eligible ones, then other eligible agents of the tenant. */
    maxCandidates: z.number().int().min(1).max(1000).default(32),
    /** Skill embeddings kept (least recently used dropped beyond). */
    cacheEntries: z.number().int().min(16).max(1_000_000).default(10_000),
    /** Cosine similarity mapped to 0 (at or below) and to 1 (at or above), linearly between. */
    minSimilarity: z.number().min(-1).max(1).default(0),
    maxSimilarity: z.number().min(-1).max(1).default(1),
  })
  .strict()
  .refine((scorer) => scorer.minSimilarity < scorer.maxSimilarity, { message: 'minSimilarity must be below maxSimilarity', path: ['maxSimilarity'] });

const classifierScorerSchema = z
  .object({
    kind: z.literal('openai-classifier'),
    ...openAiScorerFields,
    timeoutMs: z.number().int().min(10).max(60_000).default(1500),
    /** Agents listed to the model per decision (the lexically best eligible ones first). */
    maxCandidates: z.number().int().min(1).max(50).default(8),
  })
  .strict();

/** Semantic scorers blended with the lexical one (docs/routing.md, "Semantic scorers"). */
export const scorerSchema = z.discriminatedUnion('kind', [embeddingsScorerSchema, classifierScorerSchema]);
export type ScorerConfig = z.infer<typeof scorerSchema>;
export type EmbeddingsScorerConfig = z.infer<typeof embeddingsScorerSchema>;
export type ClassifierScorerConfig = z.infer<typeof classifierScorerSchema>;

/** The name a scorer is known by (its own, or its kind's). */
export const scorerName = (scorer: ScorerConfig) => scorer.name ?? (scorer.kind === 'openai-embeddings' ? 'embeddings' : 'classifier');

const scorersSchema = z
  .array(scorerSchema)
  .max(4)
  .default([])
  .superRefine((scorers, ctx) => {
    const seen = new Set<string>();
    scorers.forEach((scorer, i) => {
      const name = scorerName(scorer);
      if (seen.has(name)) ctx.addIssue({ code: 'custom', path: [i, 'name'], message: `two scorers are named "${name}": give each a distinct name` });
      seen.add(name);
    });
    const total = scorers.reduce((sum, scorer) => sum + scorer.weight, 0);
    if (total > 1 + 1e-9) {
      ctx.addIssue({ code: 'custom', path: [], message: `the scorers' weights add up to ${total}: at most 1 (the lexical scorer gets 1 minus their sum)` });
    }
  });

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
        /**
         * For plain JSON requests to /tenants/<t>/<path> (not A2A): the JSON Pointer (RFC 6901) of the
         * string field holding the query text, e.g. "/question". Unset: such requests need a
         * capability header.
         */
        jsonField: z.string().regex(/^(\/([^~]|~[01])*)+$/, 'must be a JSON Pointer such as /query or /input/text').optional(),
      })
      .strict()
      .prefault({}),
    /** Synonym groups added to the built-in ones, e.g. `{ refund: [reimbursement, "money back"] }`. */
    synonyms: z.record(z.string().min(1).max(64), z.array(z.string().min(1).max(128)).min(1).max(64)).default({}),
    /** Semantic scorers (embeddings, an LLM classifier) blended with the lexical ranking; none by default (no network). */
    scorers: scorersSchema,
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
