// Response headers for a refused request, after draft-ietf-httpapi-ratelimit-headers-06/-07: the
// `RateLimit-Limit` / `RateLimit-Remaining` / `RateLimit-Reset` trio that most clients and gateways
// understand, plus `RateLimit-Policy` as a quota policy item `<quota>;w=<window>;burst=<burst>` (the
// draft's own example of a leaky-bucket policy is `12;w=1;burst=1000`). Drafts -08 and later replace
// the trio with structured `RateLimit: "name";r=..;t=..` and `RateLimit-Policy: "name";q=..;w=..`,
// whose `RateLimit-Policy` syntax clashes with the one here; switching is a change to this file only.

/** What the headers need to know about the limit that refused a request. */
export interface DeniedLimit {
  /** Quota per `windowSeconds` (RateLimit-Limit). */
  readonly limit: number;
  /** Whole tokens left in the bucket (RateLimit-Remaining); 0 when refused. */
  readonly remaining: number;
  /** Whole seconds, at least 1, until the request would be allowed (Retry-After and RateLimit-Reset). */
  readonly retryAfterSeconds: number;
  /** The RateLimit-Policy value of the limit. */
  readonly policy: string;
}

// Windows tried (in order) to express a fractional rate as an integer quota per integer window.
const WINDOWS = [1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400];

/** The rate as a whole quota per whole-second window, e.g. 100/s -> 100 per 1 s, 0.5/s -> 1 per 2 s, 2.5/s -> 5 per 2 s. */
export function quotaWindow(requestsPerSecond: number): { quota: number; windowSeconds: number } {
  for (const windowSeconds of WINDOWS) {
    const exact = requestsPerSecond * windowSeconds;
    const quota = Math.round(exact);
    if (quota >= 1 && Math.abs(exact - quota) < 1e-9 * Math.max(1, exact)) return { quota, windowSeconds };
  }
  // Not a whole number in any window (e.g. 1/7 per second): the day's quota, rounded down.
  return { quota: Math.max(1, Math.floor(requestsPerSecond * 86400)), windowSeconds: 86400 };
}

export function formatPolicy(requestsPerSecond: number, burst: number): string {
  const { quota, windowSeconds } = quotaWindow(requestsPerSecond);
  return `${quota};w=${windowSeconds};burst=${burst}`;
}

/**
 * Headers for a 429: `retry-after`, `ratelimit-limit`, `ratelimit-remaining`, `ratelimit-reset`
 * (same moment as Retry-After, as the draft asks) and `ratelimit-policy`. Names are lower case, as
 * HTTP/2 requires and the gateway's other error headers are.
 */
export function rateLimitHeaders(denied: DeniedLimit): Record<string, string> {
  const seconds = String(Math.max(1, Math.ceil(denied.retryAfterSeconds)));
  return {
    'retry-after': seconds,
    'ratelimit-limit': String(denied.limit),
    'ratelimit-remaining': String(Math.max(0, Math.floor(denied.remaining))),
    'ratelimit-reset': seconds,
    'ratelimit-policy': denied.policy,
  };
}
