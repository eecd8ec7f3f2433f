import { z } from 'zod';

// This file does not import src/config/schema.ts: that file imports this one (no import cycle).

/** Same as config's NAME_PATTERN: a DNS label, 1-63 characters. */
const NAME_PATTERN = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

// No transforms here: these schemas end up in the Admin API's OpenAPI document (input and output
// JSON Schema), so the burst default is applied when limits are compiled (see `resolveBurst`).

const rateFields = {
  /** Sustained rate; may be fractional (0.5 = one request every two seconds). */
  requestsPerSecond: z
    .number()
    .positive('must be greater than 0 (fractions such as 0.5 are allowed)')
    .max(1_000_000, 'must be at most 1000000'),
  /** Bucket size: requests that may arrive at once after a quiet period. Default: max(1, ceil(requestsPerSecond)). */
  burst: z.number().int('must be a whole number').min(1, 'must be at least 1').max(1_000_000_000).optional(),
  /** Count and report what this limit would refuse, but let the requests through. */
  shadow: z.boolean().default(false),
  /**
   * Shaping: a request over this limit waits up to this long for a token instead of a 429 at once
   * (like nginx limit_req without nodelay). A waiting HTTP/1.1 request holds its connection, so a
   * flooding client is slowed by backpressure instead of costing the gateway one refusal per request.
   * 0 (default): refuse at once.
   */
  maxDelayMs: z.number().int('must be a whole number').min(0).max(60_000, 'must be at most 60000 (one minute)').default(0),
};

/** A token-bucket rate: `{ requestsPerSecond, burst?, shadow? }`. Also the shape of an agent's own `limits`. */
export const rateSchema = z.object(rateFields).strict();

const SOURCE_PATTERN = /^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)\/(\*|[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)$/;

/** An explicit limit for calls from one source (agent or whole tenant) to one agent of this tenant (or all of them). */
export const pairRuleSchema = z
  .object({
    from: z
      .string()
      .regex(SOURCE_PATTERN, 'must be "<tenant>/<agent>" or "<tenant>/*" (the calling side), e.g. beta/planner or beta/*'),
    to: z
      .string()
      .refine((value) => value === '*' || NAME_PATTERN.test(value), 'must be the name of an agent of this tenant, or "*" for all of them'),
    ...rateFields,
  })
  .strict();

export const concurrencySpecSchema = z
  .object({
    /** Requests forwarded at once to one endpoint (replica) of this tenant's agents. */
    perEndpoint: z.number().int('must be a whole number').min(1).max(100_000),
    /** Requests that may wait for a slot; more are refused at once. 0: no queue. */
    queue: z.number().int('must be a whole number').min(0).max(100_000).default(128),
    /** How long a request may wait in the queue before it is refused. */
    queueTimeoutMs: z.number().int('must be a whole number').min(1).max(600_000).default(2000),
  })
  .strict();

/** A tenant's `limits` block. */
export const tenantLimitsSchema = z
  .object({
    /** All requests made by this tenant's agents (and, in a separate bucket, anonymous requests to its agents). */
    tenant: rateSchema.optional(),
    /** Default for each agent of this tenant as a target (one bucket per agent); an agent's own `limits` overrides it. */
    agent: rateSchema.optional(),
    /** Default for each (calling agent, agent of this tenant) pair, one bucket per pair. */
    pair: rateSchema.optional(),
    /** Explicit rules that replace `pair` for the calls they match; each rule is one bucket shared by those calls. */
    pairs: z.array(pairRuleSchema).max(1000).default([]),
    concurrency: concurrencySpecSchema.optional(),
  })
  .strict()
  .superRefine((limits, ctx) => {
    const seen = new Set<string>();
    limits.pairs.forEach((rule, index) => {
      const key = `${rule.from} -> ${rule.to}`;
      if (seen.has(key)) {
        ctx.addIssue({ code: 'custom', path: ['pairs', index], message: `duplicate pair rule from "${rule.from}" to "${rule.to}"` });
      }
      seen.add(key);
    });
  });

export type RateSpec = z.infer<typeof rateSchema>;
export type PairRule = z.infer<typeof pairRuleSchema>;
export type ConcurrencySpec = z.infer<typeof concurrencySpecSchema>;
export type TenantLimits = z.infer<typeof tenantLimitsSchema>;
/** As written (defaults not yet applied); parsed values fit too. */
export type RateSpecInput = z.input<typeof rateSchema>;
export type TenantLimitsInput = z.input<typeof tenantLimitsSchema>;

/** The bucket size a spec gets when `burst` is omitted. */
export function resolveBurst(spec: { requestsPerSecond: number; burst?: number | undefined }): number {
  return spec.burst ?? Math.max(1, Math.ceil(spec.requestsPerSecond));
}
