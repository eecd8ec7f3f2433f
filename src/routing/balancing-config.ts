import { z } from 'zod';

// Self-contained (zod only): the config schema imports it as the `balancing` section. Every field
// has a default; docs/balancing.md explains each one.

const ms = (min: number, max: number) => z.number().int().min(min).max(max);

export const outlierDetectionSchema = z
  .object({
    enabled: z.boolean().default(true),
    /** Consecutive 5xx answers or connect/reset/timeout failures that eject an endpoint (Envoy: consecutive_5xx 5). */
    consecutiveFailures: z.number().int().min(1).max(1000).default(5),
    /** Length of the failure-rate window; also how long a quiet endpoint needs to earn one step of back-off back. */
    intervalMs: ms(1000, 3_600_000).default(10_000),
    /** Share of failed attempts in one window (with at least minRequests) that ejects an endpoint. */
    failureRateThreshold: z.number().gt(0).max(1).default(0.5),
    minRequests: z.number().int().min(1).max(1_000_000).default(20),
    /** First ejection lasts this long; each further one a multiple of it (Envoy: base_ejection_time 30 s). */
    baseEjectionMs: ms(100, 3_600_000).default(30_000),
    maxEjectionMs: ms(100, 24 * 3_600_000).default(300_000),
    /** Never more than this share of an agent's endpoints out at once (at least one may go; never the last one in service). */
    maxEjectionPercent: z.number().min(0).max(100).default(50),
  })
  .strict();

export const retriesSchema = z
  .object({
    /** Attempts per request on one agent, the first included (1: no retries). */
    maxAttempts: z.number().int().min(1).max(10).default(3),
    /** Times a request that reached no endpoint may move to the next-best agent (capability routing). */
    maxFailovers: z.number().int().min(0).max(10).default(2),
    /** Retries may add at most this share of an agent's requests over the window (Linkerd/Finagle: 0.2)... */
    budgetRatio: z.number().min(0).max(10).default(0.2),
    /** ...plus this many per second, so that a quiet agent can still fail over (Linkerd/Finagle: 10). */
    minRetriesPerSecond: z.number().min(0).max(100_000).default(10),
    budgetWindowMs: ms(1000, 600_000).default(10_000),
    /** Upstream answers retried on another endpoint for idempotent requests whose body can be replayed. */
    retryOnStatus: z.array(z.number().int().min(500).max(599)).max(16).default([502, 503, 504]),
  })
  .strict();

/** Polling each endpoint for its load (docs/balancing.md, "Polled load"), for agents that cannot set a response header. */
export const loadPollSchema = z
  .object({
    /** Poll every agent's endpoints; an agent's own `loadPoll` turns it on (an object) or off (`false`) for that agent. */
    enabled: z.boolean().default(false),
    /** Appended to the endpoint URL (its base path included), as health checks do. */
    path: z.string().startsWith('/').max(256).default('/load'),
    /** Each endpoint is polled this often (±10 %, first poll at a random point of the interval). */
    intervalMs: ms(100, 600_000).default(1000),
    /** For the whole answer, body included; a slower answer counts as a failed poll. */
    timeoutMs: ms(10, 60_000).default(500),
    /** A larger answer is not read (a failed poll); a report is a few dozen bytes. */
    maxBodyBytes: z.number().int().min(64).max(65_536).default(4096),
    /** Polls in flight at once over all endpoints; the others wait their turn. */
    maxConcurrent: z.number().int().min(1).max(4096).default(64),
  })
  .strict();

/** An agent's own `loadPoll`: `false` never polls it; an object polls it (even when `balancing.loadPoll.enabled` is false), unset fields from `balancing.loadPoll`. */
export const agentLoadPollSchema = z.union([
  z.literal(false),
  z
    .object({ path: z.string().startsWith('/').max(256), intervalMs: ms(100, 600_000), timeoutMs: ms(10, 60_000) })
    .partial()
    .strict(),
]);

export const balancingSchema = z
  .object({
    /** load-aware: power of two choices on a load score; round-robin: in turn. Both skip ejected endpoints. */
    policy: z.enum(['load-aware', 'round-robin']).default('load-aware'),
    /** Time constant of the peak-EWMA latency, the error rate and reported load (Finagle/Linkerd use 10 s). */
    decayMs: ms(100, 600_000).default(2000),
    /** How much the recent error rate weighs: the score is multiplied by 1 + errorPenalty x rate. */
    errorPenalty: z.number().min(0).max(1000).default(10),
    /** Use the load agents report: `x-dmsc-load` (or ORCA) on every upstream answer (stripped from what the caller receives) and polled reports. */
    reportedLoad: z.boolean().default(true),
    /** Poll a load endpoint on each agent endpoint (off by default; needs reportedLoad). */
    loadPoll: loadPollSchema.prefault({}),
    outlierDetection: outlierDetectionSchema.prefault({}),
    retries: retriesSchema.prefault({}),
  })
  .strict();

export type BalancingConfig = z.infer<typeof balancingSchema>;
export type OutlierDetectionConfig = z.infer<typeof outlierDetectionSchema>;
export type RetriesConfig = z.infer<typeof retriesSchema>;
export type LoadPollConfig = z.infer<typeof loadPollSchema>;
export type AgentLoadPoll = z.infer<typeof agentLoadPollSchema>;
