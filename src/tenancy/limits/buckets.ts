import { formatPolicy, quotaWindow } from './headers.js';
import { resolveBurst, type RateSpecInput, type TenantLimitsInput } from './schema.js';

/** A rate compiled once per config load; buckets point at it. */
export interface RateRule {
  readonly requestsPerSecond: number;
  readonly burst: number;
  readonly shadow: boolean;
  /** How long a request over this limit may wait for a token (0: refused at once). */
  readonly maxDelayMs: number;
  /** Quota per window for RateLimit-Limit / RateLimit-Policy. */
  readonly limit: number;
  readonly windowSeconds: number;
  readonly policy: string;
}

export function compileRate(spec: {
  requestsPerSecond: number;
  burst?: number | undefined;
  shadow?: boolean | undefined;
  maxDelayMs?: number | undefined;
}): RateRule {
  const burst = resolveBurst(spec);
  const { quota, windowSeconds } = quotaWindow(spec.requestsPerSecond);
  return {
    requestsPerSecond: spec.requestsPerSecond,
    burst,
    shadow: spec.shadow ?? false,
    maxDelayMs: spec.maxDelayMs ?? 0,
    limit: quota,
    windowSeconds,
    policy: formatPolicy(spec.requestsPerSecond, burst),
  };
}

// Float sums of refills (e.g. 1000 × 0.003) land a hair under the whole token they should make.
const EPSILON = 1e-9;

/**
 * A token bucket refilled lazily from a monotonic clock (milliseconds): no timers. Holds `burst`
 * tokens at most; a request takes one.
 */
export class TokenBucket {
  tokens: number;
  updatedAt: number;
  /** Set on every use; the store's eviction gives recently used buckets a second chance. */
  recentlyUsed = true;
  /** The store's list in insertion order (MemoryBucketStore). */
  older: TokenBucket | undefined = undefined;
  newer: TokenBucket | undefined = undefined;

  constructor(
    public rule: RateRule,
    now: number,
    // What a stored bucket is for, so a reload can work out its new rule: the target agent, and for
    // a per-pair bucket the calling agent too.
    readonly agent?: string,
    readonly sourceTenant?: string,
    readonly sourceAgent?: string,
  ) {
    this.tokens = rule.burst;
    this.updatedAt = now;
  }

  /** Brings the bucket up to `now` and returns its tokens. */
  refill(now: number): number {
    const elapsed = now - this.updatedAt;
    if (elapsed > 0) {
      const burst = this.rule.burst;
      const tokens = this.tokens + (elapsed * this.rule.requestsPerSecond) / 1000;
      this.tokens = tokens < burst ? tokens : burst;
      this.updatedAt = now;
    }
    return this.tokens;
  }

  /** Whether a refilled bucket holds a whole token (call `refill` first). */
  hasToken(): boolean {
    return this.tokens + EPSILON >= 1;
  }

  take(): void {
    this.tokens = Math.max(0, this.tokens - 1);
    this.recentlyUsed = true;
  }

  /** Milliseconds until the bucket holds a whole token (call `refill` first). */
  msUntilToken(): number {
    const missing = 1 - this.tokens - EPSILON;
    return missing <= 0 ? 0 : (missing * 1000) / this.rule.requestsPerSecond;
  }

  /** Whether the bucket would be full at `now`: then dropping it loses nothing. */
  fullAt(now: number): boolean {
    const elapsed = now - this.updatedAt;
    const tokens = elapsed > 0 ? this.tokens + (elapsed * this.rule.requestsPerSecond) / 1000 : this.tokens;
    return tokens + EPSILON >= this.rule.burst;
  }

  /**
   * Moves the bucket to a new rule: refills at the old rate up to `now`, then keeps its tokens,
   * capped at the new burst. A lowered limit therefore does not hand out a fresh burst.
   */
  reRule(rule: RateRule, now: number): void {
    this.refill(now);
    this.rule = rule;
    if (this.tokens > rule.burst) this.tokens = rule.burst;
  }
}

/**
 * Where a tenant's per-agent and per-pair buckets live (one store per tenant, so a tenant's reload
 * or removal touches only its own). Buckets are addressed by target agent and, for a pair, the
 * calling tenant and agent: no key strings are built per request. The in-process store is
 * `MemoryBucketStore`; a store shared by several replicas (Redis) can implement the same contract,
 * e.g. by leasing tokens in small batches so the request path stays synchronous.
 */
export interface BucketStore {
  /** The bucket of an agent (no source) or of a (calling agent, agent) pair. */
  get(agent: string, sourceTenant: string | undefined, sourceAgent: string | undefined): TokenBucket | undefined;
  /** Adds a bucket whose address is not in the store yet, evicting another when at capacity. */
  add(bucket: TokenBucket, now: number): void;
  delete(bucket: TokenBucket): void;
  /** Visits every bucket, oldest first; `visit` may delete the bucket it is given. */
  forEach(visit: (bucket: TokenBucket) => void): void;
  readonly size: number;
  /** Buckets dropped to stay within capacity, since the store was made. */
  readonly evictions: number;
}

// Buckets looked at per eviction: bounds the work of one insert when the store is full.
const MAX_SCAN = 32;

/** An agent's own bucket and the pair buckets of its callers (by calling tenant, then agent). */
interface AgentSlot {
  bucket: TokenBucket | undefined;
  pairs: Map<string, Map<string, TokenBucket>> | undefined;
}

/**
 * Nested Maps plus a list in insertion order. When full, it drops the oldest bucket that is full
 * (idle: dropping it loses nothing) among the first MAX_SCAN; a bucket used since it was last
 * looked at gets a second chance (moved to the back) instead; failing that, the oldest bucket not
 * used recently, else the oldest of all. Dropping a bucket that is not full forgives what it owed:
 * its caller starts again from a full bucket.
 */
export class MemoryBucketStore implements BucketStore {
  private readonly agents = new Map<string, AgentSlot>();
  private oldest: TokenBucket | undefined = undefined;
  private newest: TokenBucket | undefined = undefined;
  size = 0;
  evictions = 0;

  constructor(readonly capacity: number) {
    if (!Number.isSafeInteger(capacity) || capacity < 1) throw new RangeError(`bucket capacity must be a whole number >= 1, got ${capacity}`);
  }

  get(agent: string, sourceTenant: string | undefined, sourceAgent: string | undefined): TokenBucket | undefined {
    const slot = this.agents.get(agent);
    if (slot === undefined) return undefined;
    if (sourceTenant === undefined || sourceAgent === undefined) return slot.bucket;
    return slot.pairs?.get(sourceTenant)?.get(sourceAgent);
  }

  add(bucket: TokenBucket, now: number): void {
    if (this.size >= this.capacity) this.evictOne(now);
    const agent = bucket.agent!;
    let slot = this.agents.get(agent);
    if (slot === undefined) this.agents.set(agent, (slot = { bucket: undefined, pairs: undefined }));
    const { sourceTenant, sourceAgent } = bucket;
    if (sourceTenant === undefined || sourceAgent === undefined) {
      if (slot.bucket !== undefined) this.unlink(slot.bucket);
      slot.bucket = bucket;
    } else {
      slot.pairs ??= new Map();
      let callers = slot.pairs.get(sourceTenant);
      if (callers === undefined) slot.pairs.set(sourceTenant, (callers = new Map()));
      const replaced = callers.get(sourceAgent);
      if (replaced !== undefined) this.unlink(replaced);
      callers.set(sourceAgent, bucket);
    }
    this.append(bucket);
  }

  delete(bucket: TokenBucket): void {
    const agent = bucket.agent!;
    const slot = this.agents.get(agent);
    if (slot === undefined) return;
    const { sourceTenant, sourceAgent } = bucket;
    if (sourceTenant === undefined || sourceAgent === undefined) {
      if (slot.bucket !== bucket) return;
      slot.bucket = undefined;
    } else {
      const callers = slot.pairs?.get(sourceTenant);
      if (callers === undefined || callers.get(sourceAgent) !== bucket) return;
      callers.delete(sourceAgent);
      if (callers.size === 0) slot.pairs!.delete(sourceTenant);
      if (slot.pairs!.size === 0) slot.pairs = undefined;
    }
    if (slot.bucket === undefined && slot.pairs === undefined) this.agents.delete(agent);
    this.unlink(bucket);
  }

  forEach(visit: (bucket: TokenBucket) => void): void {
    for (let bucket = this.oldest; bucket !== undefined; ) {
      const next = bucket.newer;
      visit(bucket);
      bucket = next;
    }
  }

  private append(bucket: TokenBucket): void {
    bucket.older = this.newest;
    bucket.newer = undefined;
    if (this.newest !== undefined) this.newest.newer = bucket;
    else this.oldest = bucket;
    this.newest = bucket;
    this.size++;
  }

  private unlink(bucket: TokenBucket): void {
    if (bucket.older !== undefined) bucket.older.newer = bucket.newer;
    else this.oldest = bucket.newer;
    if (bucket.newer !== undefined) bucket.newer.older = bucket.older;
    else this.newest = bucket.older;
    bucket.older = bucket.newer = undefined;
    this.size--;
  }

  private evictOne(now: number): void {
    let victim: TokenBucket | undefined;
    let notRecent: TokenBucket | undefined;
    let bucket = this.oldest;
    for (let scanned = 0; bucket !== undefined && scanned < MAX_SCAN; scanned++) {
      const next = bucket.newer;
      if (bucket.fullAt(now)) {
        victim = bucket;
        break;
      }
      if (bucket.recentlyUsed) {
        bucket.recentlyUsed = false;
        this.unlink(bucket);
        this.append(bucket); // second chance: to the back
      } else {
        notRecent ??= bucket;
      }
      bucket = next;
    }
    victim ??= notRecent ?? this.oldest;
    if (victim !== undefined) {
      this.delete(victim);
      this.evictions++;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The per-request check

export type LimitScope = 'tenant' | 'agent' | 'pair';

/** The limit that refused a request: for the 429 body and headers, audit and metrics. */
export interface LimitDenial {
  readonly scope: LimitScope;
  /** Which bucket, e.g. `acme` (tenant), `anonymous->acme`, `acme/ledger` (agent), `beta/planner->acme/ledger` (pair), or an explicit rule `beta/*->acme/ledger`. Unbounded: not a metric label. */
  readonly key: string;
  /** The tenant whose configuration set the limit (bounded: fine as a metric label, with `scope`). */
  readonly tenant: string;
  readonly requestsPerSecond: number;
  readonly burst: number;
  /** Quota per window, as in RateLimit-Limit. */
  readonly limit: number;
  readonly windowSeconds: number;
  /** Whole tokens left (0). */
  readonly remaining: number;
  /** Whole seconds, at least 1, until the request would pass this limit. */
  readonly retryAfterSeconds: number;
  /** Milliseconds until the refusing bucket has a token again. */
  readonly waitMs: number;
  /** The refusing limit's shaping allowance (see RateSpec.maxDelayMs). */
  readonly maxDelayMs: number;
  /** Whole seconds until this bucket is full again. */
  readonly refillSeconds: number;
  /** RateLimit-Policy value, e.g. `100;w=1;burst=200`. */
  readonly policy: string;
}

export interface ShadowDenial {
  readonly scope: LimitScope;
  readonly key: string;
  readonly tenant: string;
}

export interface LimitOutcome {
  readonly allowed: boolean;
  /** When refused: the enforcing limit with the longest wait. */
  readonly denied?: LimitDenial;
  /** Shadow limits that would have refused the request (counted, not enforced). */
  readonly shadowDenied?: readonly ShadowDenial[];
}

/** The caller: an authenticated agent, or nobody (anonymous). */
export interface LimitSource {
  readonly tenant?: string | undefined;
  readonly agent?: string | undefined;
}

export interface LimitTarget {
  readonly tenant: string;
  readonly agent: string;
}

export interface RateLimitsOptions {
  /** Monotonic clock in milliseconds; default `performance.now`. */
  now?: () => number;
  /** Per-agent and per-pair buckets kept per tenant (default 100000); see MemoryBucketStore for eviction. */
  maxBucketsPerTenant?: number;
  /** Where a tenant's buckets live; default an in-process MemoryBucketStore. */
  createStore?: (tenant: string, capacity: number) => BucketStore;
}

const ALLOWED: LimitOutcome = Object.freeze({ allowed: true });
const EMPTY_AGENT_LIMITS: ReadonlyMap<string, RateSpecInput> = new Map();

/** An explicit pair rule: one bucket shared by every call it matches. */
interface ExplicitPair {
  readonly key: string; // `${from}->${tenant}/${to}`
  readonly bucket: TokenBucket;
}

/** Explicit rules of one calling tenant, by calling agent (or any) and then by target agent (or '*'). */
interface ExplicitBySource {
  readonly byAgent: Map<string, Map<string, ExplicitPair>>;
  readonly anyAgent: Map<string, ExplicitPair>;
}

class TenantState {
  readonly tenantBucket: TokenBucket | undefined;
  /** Anonymous requests to this tenant's agents: same rate as `tenant`, a bucket of their own. */
  readonly anonymousBucket: TokenBucket | undefined;
  readonly agentDefault: RateRule | undefined;
  readonly agentOverrides: Map<string, RateRule>;
  readonly pairDefault: RateRule | undefined;
  readonly explicit: Map<string, ExplicitBySource> | undefined;
  /** Whether any agent or pair limit is set (else the target side is skipped). */
  readonly targetSide: boolean;

  constructor(
    readonly name: string,
    limits: TenantLimitsInput | undefined,
    agentLimits: ReadonlyMap<string, RateSpecInput>,
    readonly store: BucketStore,
    previous: TenantState | undefined,
    now: number,
  ) {
    const carry = (rule: RateRule, old: TokenBucket | undefined): TokenBucket => {
      if (old === undefined) return new TokenBucket(rule, now);
      old.reRule(rule, now);
      return old;
    };
    const tenantRule = limits?.tenant ? compileRate(limits.tenant) : undefined;
    this.tenantBucket = tenantRule ? carry(tenantRule, previous?.tenantBucket) : undefined;
    this.anonymousBucket = tenantRule ? carry(tenantRule, previous?.anonymousBucket) : undefined;
    this.agentDefault = limits?.agent ? compileRate(limits.agent) : undefined;
    this.agentOverrides = new Map();
    for (const [agent, spec] of agentLimits) this.agentOverrides.set(agent, compileRate(spec));
    this.pairDefault = limits?.pair ? compileRate(limits.pair) : undefined;

    const rules = limits?.pairs ?? [];
    if (rules.length > 0) {
      const oldExplicit = new Map<string, TokenBucket>();
      previous?.explicit?.forEach((bySource) => {
        for (const pair of bySource.anyAgent.values()) oldExplicit.set(pair.key, pair.bucket);
        for (const targets of bySource.byAgent.values()) for (const pair of targets.values()) oldExplicit.set(pair.key, pair.bucket);
      });
      this.explicit = new Map();
      for (const spec of rules) {
        const slash = spec.from.indexOf('/');
        const sourceTenant = spec.from.slice(0, slash);
        const sourceAgent = spec.from.slice(slash + 1);
        const key = `${spec.from}->${name}/${spec.to}`;
        const pair: ExplicitPair = { key, bucket: carry(compileRate(spec), oldExplicit.get(key)) };
        let bySource = this.explicit.get(sourceTenant);
        if (!bySource) this.explicit.set(sourceTenant, (bySource = { byAgent: new Map(), anyAgent: new Map() }));
        let targets = bySource.anyAgent;
        if (sourceAgent !== '*') {
          targets = bySource.byAgent.get(sourceAgent) ?? new Map();
          bySource.byAgent.set(sourceAgent, targets);
        }
        targets.set(spec.to, pair);
      }
    } else {
      this.explicit = undefined;
    }
    this.targetSide = this.agentDefault !== undefined || this.agentOverrides.size > 0 || this.pairDefault !== undefined || this.explicit !== undefined;

    // Stored buckets: keep each one whose limit still applies (tokens carried over), drop the rest.
    store.forEach((bucket) => {
      const agent = bucket.agent!;
      const rule =
        bucket.sourceAgent === undefined
          ? this.agentRule(agent)
          : this.explicitPair(bucket.sourceTenant!, bucket.sourceAgent, agent) === undefined
            ? this.pairDefault
            : undefined;
      if (rule === undefined) store.delete(bucket);
      else bucket.reRule(rule, now);
    });
  }

  agentRule(agent: string): RateRule | undefined {
    return this.agentOverrides.get(agent) ?? this.agentDefault;
  }

  /** The most specific explicit rule: exact calling agent before `tenant/*`, then exact target before `*`. */
  explicitPair(sourceTenant: string, sourceAgent: string, agent: string): ExplicitPair | undefined {
    const bySource = this.explicit?.get(sourceTenant);
    if (bySource === undefined) return undefined;
    const targets = bySource.byAgent.get(sourceAgent);
    if (targets !== undefined) {
      const pair = targets.get(agent) ?? targets.get('*');
      if (pair !== undefined) return pair;
    }
    return bySource.anyAgent.get(agent) ?? bySource.anyAgent.get('*');
  }
}

const SCOPES: readonly LimitScope[] = ['tenant', 'agent', 'pair'];

/**
 * Token-bucket rate limits per tenant (requests its agents make), per target agent and per
 * (calling agent, target agent) pair. State is per tenant: reloading or removing one tenant never
 * touches another's buckets. In-process; see BucketStore for a shared store.
 */
export class RateLimits {
  private readonly tenants = new Map<string, TenantState>();
  private readonly now: () => number;
  private readonly capacity: number;
  private readonly createStore: (tenant: string, capacity: number) => BucketStore;
  // Scratch for check(): the buckets of one request, in SCOPES order (check is synchronous).
  private readonly scratch: (TokenBucket | undefined)[] = [undefined, undefined, undefined];

  constructor(options: RateLimitsOptions = {}) {
    this.now = options.now ?? (() => performance.now());
    this.capacity = options.maxBucketsPerTenant ?? 100_000;
    this.createStore = options.createStore ?? ((_tenant, capacity) => new MemoryBucketStore(capacity));
    if (!Number.isSafeInteger(this.capacity) || this.capacity < 1) {
      throw new RangeError(`maxBucketsPerTenant must be a whole number >= 1, got ${options.maxBucketsPerTenant}`);
    }
  }

  /**
   * Sets one tenant's limits (its `limits` block and its agents' own `limits`). Only this tenant's
   * state changes. Buckets whose limit still applies keep their tokens (capped at a changed burst);
   * buckets whose limit is gone are dropped.
   */
  setTenant(name: string, limits: TenantLimitsInput | undefined, agentLimits: ReadonlyMap<string, RateSpecInput> = EMPTY_AGENT_LIMITS): void {
    const hasRates = limits?.tenant !== undefined || limits?.agent !== undefined || limits?.pair !== undefined || (limits?.pairs?.length ?? 0) > 0 || agentLimits.size > 0;
    if (!hasRates) {
      this.tenants.delete(name); // the common case: no state, check() costs a Map lookup
      return;
    }
    const previous = this.tenants.get(name);
    const store = previous?.store ?? this.createStore(name, this.capacity);
    this.tenants.set(name, new TenantState(name, limits, agentLimits, store, previous, this.now()));
  }

  removeTenant(name: string): void {
    this.tenants.delete(name);
  }

  /** Bucket counts of one tenant, for metrics; undefined when it has no rate limits. */
  stats(tenant: string): { buckets: number; evictions: number } | undefined {
    const state = this.tenants.get(tenant);
    return state && { buckets: state.store.size, evictions: state.store.evictions };
  }

  /**
   * One call per request. Takes a token from every applicable bucket only if every enforcing one
   * has a token; shadow limits never refuse, they are reported in `shadowDenied`.
   */
  check(source: LimitSource, target: LimitTarget): LimitOutcome {
    const tenants = this.tenants;
    const targetState = tenants.get(target.tenant);
    const sourceTenant = source.tenant;
    // Anonymous requests count against the target's tenant (in a bucket of their own).
    const sourceState = sourceTenant === undefined || sourceTenant === target.tenant ? targetState : tenants.get(sourceTenant);
    if (targetState === undefined && sourceState === undefined) return ALLOWED;

    const now = this.now();
    const buckets = this.scratch;
    buckets[0] = sourceState === undefined ? undefined : sourceTenant === undefined ? sourceState.anonymousBucket : sourceState.tenantBucket;
    buckets[1] = undefined;
    buckets[2] = undefined;
    let explicit: ExplicitPair | undefined;
    if (targetState !== undefined && targetState.targetSide) {
      const agent = target.agent;
      const store = targetState.store;
      const agentRule = targetState.agentRule(agent);
      if (agentRule !== undefined) {
        let bucket = store.get(agent, undefined, undefined);
        if (bucket === undefined) store.add((bucket = new TokenBucket(agentRule, now, agent)), now);
        buckets[1] = bucket;
      }
      const sourceAgent = source.agent;
      if (sourceTenant !== undefined && sourceAgent !== undefined) {
        explicit = targetState.explicit === undefined ? undefined : targetState.explicitPair(sourceTenant, sourceAgent, agent);
        if (explicit !== undefined) {
          buckets[2] = explicit.bucket;
        } else if (targetState.pairDefault !== undefined) {
          let bucket = store.get(agent, sourceTenant, sourceAgent);
          if (bucket === undefined) store.add((bucket = new TokenBucket(targetState.pairDefault, now, agent, sourceTenant, sourceAgent)), now);
          buckets[2] = bucket;
        }
      }
    }

    let worst = -1;
    let worstWait = -1;
    let shadowed = 0;
    for (let i = 0; i < 3; i++) {
      const bucket = buckets[i];
      if (bucket === undefined) continue;
      bucket.refill(now);
      if (bucket.hasToken()) continue;
      if (bucket.rule.shadow) {
        shadowed++;
      } else {
        const wait = bucket.msUntilToken();
        if (wait > worstWait) {
          worstWait = wait;
          worst = i;
        }
      }
    }
    if (worst < 0) {
      for (let i = 0; i < 3; i++) {
        const bucket = buckets[i];
        if (bucket !== undefined && bucket.hasToken()) bucket.take();
      }
    }
    if (worst < 0 && shadowed === 0) return ALLOWED;

    // Refused, or a shadow limit was hit: the rare path may allocate.
    const describe = (i: number): ShadowDenial => ({
      scope: SCOPES[i]!,
      key: keyOf(i, source, target, explicit),
      tenant: i === 0 ? (sourceTenant ?? target.tenant) : target.tenant,
    });
    let shadowDenied: ShadowDenial[] | undefined;
    if (shadowed > 0) {
      shadowDenied = [];
      for (let i = 0; i < 3; i++) {
        const bucket = buckets[i];
        if (bucket !== undefined && bucket.rule.shadow && !bucket.hasToken()) shadowDenied.push(describe(i));
      }
    }
    if (worst < 0) return { allowed: true, shadowDenied };
    const bucket = buckets[worst]!;
    const rule = bucket.rule;
    const denied: LimitDenial = {
      ...describe(worst),
      requestsPerSecond: rule.requestsPerSecond,
      burst: rule.burst,
      limit: rule.limit,
      windowSeconds: rule.windowSeconds,
      remaining: Math.floor(bucket.tokens),
      retryAfterSeconds: Math.max(1, Math.ceil(worstWait / 1000)),
      waitMs: worstWait,
      maxDelayMs: rule.maxDelayMs,
      refillSeconds: Math.max(1, Math.ceil((rule.burst - bucket.tokens) / rule.requestsPerSecond)),
      policy: rule.policy,
    };
    return shadowDenied ? { allowed: false, denied, shadowDenied } : { allowed: false, denied };
  }
}

function keyOf(scope: number, source: LimitSource, target: LimitTarget, explicit: ExplicitPair | undefined): string {
  if (scope === 0) return source.tenant === undefined ? `anonymous->${target.tenant}` : source.tenant;
  if (scope === 1) return `${target.tenant}/${target.agent}`;
  return explicit !== undefined ? explicit.key : `${source.tenant}/${source.agent}->${target.tenant}/${target.agent}`;
}
