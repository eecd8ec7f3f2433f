export {
  concurrencySpecSchema,
  pairRuleSchema,
  rateSchema,
  resolveBurst,
  tenantLimitsSchema,
  type ConcurrencySpec,
  type PairRule,
  type RateSpec,
  type RateSpecInput,
  type TenantLimits,
  type TenantLimitsInput,
} from './schema.js';
export {
  MemoryBucketStore,
  RateLimits,
  TokenBucket,
  type BucketStore,
  type LimitDenial,
  type LimitOutcome,
  type LimitScope,
  type LimitSource,
  type LimitTarget,
  type RateLimitsOptions,
  type RateRule,
  type ShadowDenial,
} from './buckets.js';
export { rateLimitHeaders, type DeniedLimit } from './headers.js';
export { ConcurrencyLimiter, ConcurrencyLimitError, type ConcurrencyLimit, type ConcurrencyRefusal, type Release } from './concurrency.js';
