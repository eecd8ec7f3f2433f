import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import {
  ConcurrencyLimiter,
  ConcurrencyLimitError,
  MemoryBucketStore,
  RateLimits,
  concurrencySpecSchema,
  rateLimitHeaders,
  rateSchema,
  tenantLimitsSchema,
  type BucketStore,
  type LimitOutcome,
  type LimitSource,
  type LimitTarget,
  type Release,
  type TokenBucket,
  type TenantLimitsInput,
} from '../src/tenancy/limits/index.js';

function fakeClock(start = 10_000) {
  let t = start;
  return {
    now: () => t,
    advance(ms: number) {
      t += ms;
    },
  };
}

function limitsOf(raw: TenantLimitsInput) {
  return tenantLimitsSchema.parse(raw);
}

/** How many of `n` back-to-back checks pass. */
function allowedOf(limits: RateLimits, source: LimitSource, target: LimitTarget, n: number): number {
  let allowed = 0;
  for (let i = 0; i < n; i++) if (limits.check(source, target).allowed) allowed++;
  return allowed;
}

/** A store's buckets, oldest first, as `[address, bucket]`: `agent` or `tenant/caller>agent`. */
function entriesOf(store: BucketStore): [string, TokenBucket][] {
  const entries: [string, TokenBucket][] = [];
  store.forEach((bucket) =>
    entries.push([bucket.sourceAgent === undefined ? bucket.agent! : `${bucket.sourceTenant}/${bucket.sourceAgent}>${bucket.agent}`, bucket]),
  );
  return entries;
}

function denialOf(outcome: LimitOutcome) {
  assert.equal(outcome.allowed, false, 'expected the request to be refused');
  assert.ok(outcome.denied);
  return outcome.denied;
}

const ANON: LimitSource = {};
const planner = { tenant: 'beta', agent: 'planner' } as const;
const writer = { tenant: 'beta', agent: 'writer' } as const;
const ledger = { tenant: 'acme', agent: 'ledger' } as const;
const billing = { tenant: 'acme', agent: 'billing' } as const;

describe('limits schema', () => {
  test('the documented example parses, with defaults for shadow, pairs and the concurrency queue', () => {
    const parsed = limitsOf({
      tenant: { requestsPerSecond: 500, burst: 1000 },
      agent: { requestsPerSecond: 100, burst: 200 },
      pair: { requestsPerSecond: 20, burst: 40, shadow: true },
      pairs: [{ from: 'beta/planner', to: 'ledger', requestsPerSecond: 5, burst: 5 }],
      concurrency: { perEndpoint: 64 },
    });
    assert.equal(parsed.tenant?.shadow, false);
    assert.equal(parsed.pair?.shadow, true);
    assert.deepEqual(parsed.concurrency, { perEndpoint: 64, queue: 128, queueTimeoutMs: 2000 });
    assert.deepEqual(limitsOf({}).pairs, []);
    assert.deepEqual(rateSchema.parse({ requestsPerSecond: 0.5 }), { requestsPerSecond: 0.5, shadow: false, maxDelayMs: 0 });
  });

  test('bad values are refused with what is expected', () => {
    const messages = (raw: unknown) => {
      const result = tenantLimitsSchema.safeParse(raw);
      assert.equal(result.success, false);
      return result.error!.issues.map((issue) => `${issue.path.join('.')}: ${issue.message}`);
    };
    assert.deepEqual(messages({ agent: { requestsPerSecond: 0 } }), ['agent.requestsPerSecond: must be greater than 0 (fractions such as 0.5 are allowed)']);
    assert.deepEqual(messages({ agent: { requestsPerSecond: 1, burst: 1.5 } }), ['agent.burst: must be a whole number']);
    assert.deepEqual(messages({ agent: { requestsPerSecond: 1, burst: 0 } }), ['agent.burst: must be at least 1']);
    assert.match(messages({ agent: { rps: 1, requestsPerSecond: 1 } })[0]!, /Unrecognized key: "rps"/);
    assert.deepEqual(messages({ pairs: [{ from: 'planner', to: 'ledger', requestsPerSecond: 1 }] }), [
      'pairs.0.from: must be "<tenant>/<agent>" or "<tenant>/*" (the calling side), e.g. beta/planner or beta/*',
    ]);
    assert.deepEqual(messages({ pairs: [{ from: 'beta/*', to: 'acme/ledger', requestsPerSecond: 1 }] }), [
      'pairs.0.to: must be the name of an agent of this tenant, or "*" for all of them',
    ]);
    assert.deepEqual(
      messages({
        pairs: [
          { from: 'beta/*', to: '*', requestsPerSecond: 1 },
          { from: 'beta/*', to: '*', requestsPerSecond: 2 },
        ],
      }),
      ['pairs.1: duplicate pair rule from "beta/*" to "*"'],
    );
    assert.equal(concurrencySpecSchema.safeParse({ perEndpoint: 0 }).success, false);
  });
});

describe('token buckets', () => {
  test('a burst, then exactly the configured rate', () => {
    const clock = fakeClock();
    const limits = new RateLimits({ now: clock.now });
    limits.setTenant('acme', limitsOf({ agent: { requestsPerSecond: 10, burst: 20 } }));
    assert.equal(allowedOf(limits, planner, ledger, 25), 20);
    const denied = denialOf(limits.check(planner, ledger));
    assert.equal(denied.retryAfterSeconds, 1);
    assert.equal(denied.refillSeconds, 2);
    clock.advance(99);
    assert.equal(limits.check(planner, ledger).allowed, false, '0.99 tokens after 99 ms');
    clock.advance(1);
    assert.equal(allowedOf(limits, planner, ledger, 3), 1, 'one token after 100 ms');
    clock.advance(1000);
    assert.equal(allowedOf(limits, planner, ledger, 20), 10, 'ten tokens after a second');
    clock.advance(60_000);
    assert.equal(allowedOf(limits, planner, ledger, 30), 20, 'never more than the burst');
  });

  test('fractional rates and the default burst', () => {
    const clock = fakeClock();
    const limits = new RateLimits({ now: clock.now });
    limits.setTenant('acme', limitsOf({ agent: { requestsPerSecond: 0.5 } }));
    assert.equal(allowedOf(limits, planner, ledger, 3), 1, 'burst defaults to max(1, ceil(0.5)) = 1');
    assert.equal(denialOf(limits.check(planner, ledger)).retryAfterSeconds, 2);
    clock.advance(1999);
    assert.equal(denialOf(limits.check(planner, ledger)).retryAfterSeconds, 1);
    clock.advance(1);
    assert.equal(allowedOf(limits, planner, ledger, 2), 1);

    limits.setTenant('acme', limitsOf({ agent: { requestsPerSecond: 2.5 } }));
    clock.advance(10_000);
    assert.equal(allowedOf(limits, planner, ledger, 5), 3, 'burst defaults to ceil(2.5) = 3');
    clock.advance(400);
    assert.equal(allowedOf(limits, planner, ledger, 2), 1);

    // A thousand refills of 1 ms at 3/s add up to exactly three tokens (no float shortfall).
    limits.setTenant('acme', limitsOf({ agent: { requestsPerSecond: 3, burst: 3 } }));
    clock.advance(10_000);
    assert.equal(allowedOf(limits, planner, ledger, 3), 3);
    let allowed = 0;
    for (let i = 0; i < 1000; i++) {
      clock.advance(1);
      if (limits.check(planner, ledger).allowed) allowed++;
    }
    assert.equal(allowed, 3);
  });
});

describe('scopes', () => {
  test('tenant: every request made by the tenant\'s agents, whatever the target', () => {
    const limits = new RateLimits({ now: fakeClock().now });
    limits.setTenant('beta', limitsOf({ tenant: { requestsPerSecond: 1, burst: 3 } }));
    assert.equal(limits.check(planner, ledger).allowed, true);
    assert.equal(limits.check(writer, billing).allowed, true);
    assert.equal(limits.check(planner, { tenant: 'beta', agent: 'writer' }).allowed, true);
    const denied = denialOf(limits.check(writer, ledger));
    assert.equal(denied.scope, 'tenant');
    assert.equal(denied.key, 'beta');
    assert.equal(denied.tenant, 'beta');
    // Requests made by others into beta are not beta's requests.
    assert.equal(limits.check({ tenant: 'acme', agent: 'ledger' }, { tenant: 'beta', agent: 'writer' }).allowed, true);
  });

  test('anonymous requests count against the target tenant, in a bucket of their own', () => {
    const limits = new RateLimits({ now: fakeClock().now });
    limits.setTenant('acme', limitsOf({ tenant: { requestsPerSecond: 1, burst: 2 } }));
    assert.equal(allowedOf(limits, ANON, ledger, 5), 2);
    const denied = denialOf(limits.check(ANON, billing));
    assert.deepEqual([denied.scope, denied.key, denied.tenant], ['tenant', 'anonymous->acme', 'acme']);
    // acme's own agents still have their budget.
    assert.equal(allowedOf(limits, { tenant: 'acme', agent: 'billing' }, { tenant: 'beta', agent: 'planner' }, 5), 2);
  });

  test('agent: one bucket per target agent; an agent\'s own limit overrides the default', () => {
    const limits = new RateLimits({ now: fakeClock().now });
    limits.setTenant('acme', limitsOf({ agent: { requestsPerSecond: 1, burst: 3 } }), new Map([['ledger', { requestsPerSecond: 1, burst: 1 }]]));
    assert.equal(allowedOf(limits, planner, ledger, 5), 1);
    assert.equal(allowedOf(limits, writer, ledger, 5), 0, 'the agent bucket is shared by all callers');
    assert.equal(allowedOf(limits, planner, billing, 5), 3);
    const denied = denialOf(limits.check(ANON, ledger));
    assert.deepEqual([denied.scope, denied.key, denied.tenant, denied.burst], ['agent', 'acme/ledger', 'acme', 1]);
    // An override alone (no tenant default) limits that agent only.
    limits.setTenant('beta', undefined, new Map([['planner', { requestsPerSecond: 1, burst: 1 }]]));
    assert.equal(allowedOf(limits, ANON, planner, 3), 1);
    assert.equal(allowedOf(limits, ANON, writer, 3), 3);
  });

  test('pair: one bucket per (calling agent, target agent); anonymous requests have no pair', () => {
    const limits = new RateLimits({ now: fakeClock().now });
    limits.setTenant('acme', limitsOf({ pair: { requestsPerSecond: 1, burst: 2 } }));
    assert.equal(allowedOf(limits, planner, ledger, 5), 2);
    assert.equal(allowedOf(limits, writer, ledger, 5), 2);
    assert.equal(allowedOf(limits, planner, billing, 5), 2);
    assert.equal(allowedOf(limits, ANON, ledger, 5), 5);
    const denied = denialOf(limits.check(planner, ledger));
    assert.deepEqual([denied.scope, denied.key, denied.tenant], ['pair', 'beta/planner->acme/ledger', 'acme']);
  });

  test('explicit pairs replace the pair default; a rule is one bucket shared by the calls it matches', () => {
    const limits = new RateLimits({ now: fakeClock().now });
    limits.setTenant(
      'acme',
      limitsOf({
        pair: { requestsPerSecond: 1, burst: 10 },
        pairs: [
          { from: 'beta/planner', to: 'ledger', requestsPerSecond: 1, burst: 1 },
          { from: 'beta/planner', to: '*', requestsPerSecond: 1, burst: 2 },
          { from: 'beta/*', to: 'ledger', requestsPerSecond: 1, burst: 3 },
          { from: 'gamma/*', to: '*', requestsPerSecond: 1, burst: 4 },
        ],
      }),
    );
    // Exact caller and target.
    assert.equal(allowedOf(limits, planner, ledger, 5), 1);
    assert.equal(denialOf(limits.check(planner, ledger)).key, 'beta/planner->acme/ledger');
    // The exact caller's wildcard target beats the tenant-wide caller with an exact target.
    assert.equal(allowedOf(limits, planner, billing, 5), 2);
    assert.equal(allowedOf(limits, planner, { tenant: 'acme', agent: 'audit' }, 5), 0, 'beta/planner->acme/* is one bucket');
    assert.equal(denialOf(limits.check(planner, billing)).key, 'beta/planner->acme/*');
    // Any other beta agent to ledger: the shared beta/* rule.
    assert.equal(allowedOf(limits, writer, ledger, 2), 2);
    assert.equal(allowedOf(limits, { tenant: 'beta', agent: 'critic' }, ledger, 5), 1);
    assert.equal(denialOf(limits.check(writer, ledger)).key, 'beta/*->acme/ledger');
    // beta/writer to billing matches no rule: the per-pair default.
    assert.equal(allowedOf(limits, writer, billing, 20), 10);
    assert.equal(denialOf(limits.check(writer, billing)).key, 'beta/writer->acme/billing');
    // A whole tenant to every agent.
    assert.equal(allowedOf(limits, { tenant: 'gamma', agent: 'a' }, ledger, 3) + allowedOf(limits, { tenant: 'gamma', agent: 'b' }, billing, 3), 4);
  });

  test('all or nothing: a refused request takes no token from any bucket', () => {
    const clock = fakeClock();
    const limits = new RateLimits({ now: clock.now });
    limits.setTenant('beta', limitsOf({ tenant: { requestsPerSecond: 1, burst: 3 } }));
    limits.setTenant('acme', limitsOf({ pair: { requestsPerSecond: 0.001, burst: 1 } }));
    assert.equal(allowedOf(limits, planner, ledger, 3), 1, 'the pair limit refuses the 2nd and 3rd');
    // Those two refusals took nothing from beta's tenant bucket: two more requests pass.
    assert.equal(limits.check(writer, ledger).allowed, true);
    assert.equal(limits.check({ tenant: 'beta', agent: 'critic' }, ledger).allowed, true);
    const fifth = { tenant: 'beta', agent: 'fifth' };
    assert.equal(denialOf(limits.check(fifth, ledger)).scope, 'tenant');
    // ... and the tenant refusal took nothing from fifth's new pair bucket (it refills once in 1000 s).
    clock.advance(1000);
    assert.equal(limits.check(fifth, ledger).allowed, true);
  });

  test('the limit with the longest wait is the one reported', () => {
    const limits = new RateLimits({ now: fakeClock().now });
    limits.setTenant('beta', limitsOf({ tenant: { requestsPerSecond: 10, burst: 1 } }));
    limits.setTenant('acme', limitsOf({ agent: { requestsPerSecond: 0.1, burst: 1 } }));
    assert.equal(limits.check(planner, ledger).allowed, true);
    const denied = denialOf(limits.check(planner, ledger));
    assert.equal(denied.scope, 'agent');
    assert.equal(denied.retryAfterSeconds, 10);
  });

  test('shadow limits count and report but never refuse, nor take tokens when they would', () => {
    const clock = fakeClock();
    const limits = new RateLimits({ now: clock.now });
    limits.setTenant('acme', limitsOf({ pair: { requestsPerSecond: 1, burst: 2, shadow: true }, agent: { requestsPerSecond: 1, burst: 3 } }));
    assert.deepEqual(limits.check(planner, ledger), { allowed: true });
    assert.deepEqual(limits.check(planner, ledger), { allowed: true });
    assert.deepEqual(limits.check(planner, ledger), { allowed: true, shadowDenied: [{ scope: 'pair', key: 'beta/planner->acme/ledger', tenant: 'acme' }] });
    const refused = limits.check(planner, ledger);
    assert.equal(refused.denied?.scope, 'agent');
    assert.deepEqual(refused.shadowDenied, [{ scope: 'pair', key: 'beta/planner->acme/ledger', tenant: 'acme' }]);
    // One second later the shadow bucket holds exactly one token: it took none while "refusing".
    clock.advance(1000);
    assert.deepEqual(limits.check(planner, ledger), { allowed: true });
    assert.equal(limits.check(planner, ledger).shadowDenied?.length, 1);
  });

  test('no limits configured: every request passes and the outcome is a shared constant', () => {
    const limits = new RateLimits();
    limits.setTenant('acme', limitsOf({ concurrency: { perEndpoint: 4 } }));
    const first = limits.check(planner, ledger);
    assert.equal(first.allowed, true);
    assert.equal(limits.check(ANON, ledger), first);
    assert.equal(limits.stats('acme'), undefined);
  });
});

describe('tenant isolation and reloads', () => {
  function trackingStores() {
    const stores = new Map<string, MemoryBucketStore>();
    const createStore = (tenant: string, capacity: number): BucketStore => {
      const store = new MemoryBucketStore(capacity);
      stores.set(tenant, store);
      return store;
    };
    return { stores, createStore };
  }

  test('A exhausting its buckets leaves B\'s untouched', () => {
    const limits = new RateLimits({ now: fakeClock().now });
    const spec = limitsOf({ tenant: { requestsPerSecond: 1, burst: 5 }, agent: { requestsPerSecond: 1, burst: 5 } });
    limits.setTenant('acme', spec);
    limits.setTenant('beta', spec);
    assert.equal(allowedOf(limits, { tenant: 'acme', agent: 'x' }, ledger, 100), 5);
    assert.equal(allowedOf(limits, ANON, ledger, 100), 0);
    assert.equal(allowedOf(limits, planner, { tenant: 'beta', agent: 'writer' }, 100), 5);
  });

  test('setTenant(A) keeps B\'s bucket objects and tokens, and A\'s tokens when its spec is unchanged', () => {
    const clock = fakeClock();
    const { stores, createStore } = trackingStores();
    const limits = new RateLimits({ now: clock.now, createStore });
    const spec = { agent: { requestsPerSecond: 1, burst: 10 }, pair: { requestsPerSecond: 1, burst: 10 } } as const;
    limits.setTenant('acme', limitsOf(spec));
    limits.setTenant('beta', limitsOf(spec));
    const toWriter = { tenant: 'beta', agent: 'writer' };
    assert.equal(allowedOf(limits, ANON, ledger, 4), 4);
    assert.equal(allowedOf(limits, ANON, toWriter, 6), 6);
    const betaBuckets = entriesOf(stores.get('beta')!);

    limits.setTenant('acme', limitsOf({ ...spec, agent: { requestsPerSecond: 5, burst: 100 } }));
    limits.setTenant('acme', limitsOf(spec));
    const after = entriesOf(stores.get('beta')!);
    assert.equal(after.length, 1);
    assert.equal(after[0]![0], betaBuckets[0]![0]);
    assert.equal(after[0]![1], betaBuckets[0]![1], 'the same bucket object');
    assert.equal(after[0]![1].tokens, 4);
    assert.equal(allowedOf(limits, ANON, toWriter, 10), 4);

    limits.setTenant('acme', limitsOf(spec));
    assert.equal(allowedOf(limits, ANON, ledger, 10), 6, 'same spec: acme keeps its tokens');
  });

  test('a changed spec carries tokens over, capped at the new burst; a removed limit drops its buckets', () => {
    const clock = fakeClock();
    const { stores, createStore } = trackingStores();
    const limits = new RateLimits({ now: clock.now, createStore });
    limits.setTenant('acme', limitsOf({ agent: { requestsPerSecond: 1, burst: 10 }, pair: { requestsPerSecond: 1, burst: 10 } }));
    assert.equal(allowedOf(limits, planner, ledger, 4), 4); // 6 left in each bucket
    clock.advance(500); // +0.5 at the old rate before the change

    limits.setTenant('acme', limitsOf({ agent: { requestsPerSecond: 2, burst: 20 }, pair: { requestsPerSecond: 1, burst: 3 } }));
    const buckets = new Map(entriesOf(stores.get('acme')!).map(([key, bucket]) => [key, bucket.tokens]));
    assert.deepEqual(buckets, new Map([['ledger', 6.5], ['beta/planner>ledger', 3]]));
    assert.equal(allowedOf(limits, writer, ledger, 100), 3, 'writer: new pair bucket with the new burst');
    clock.advance(250); // agent bucket: 3.5 + 0.5 at the new rate
    assert.equal(allowedOf(limits, { tenant: 'beta', agent: 'critic' }, ledger, 100), 3);

    limits.setTenant('acme', limitsOf({ agent: { requestsPerSecond: 2, burst: 20 } }));
    assert.deepEqual(entriesOf(stores.get('acme')!).map(([key]) => key), ['ledger']);
    limits.setTenant('acme', undefined);
    assert.equal(limits.stats('acme'), undefined);
    assert.equal(allowedOf(limits, planner, ledger, 50), 50);
  });

  test('an explicit pair rule that now matches replaces the per-pair bucket', () => {
    const { stores, createStore } = trackingStores();
    const limits = new RateLimits({ now: fakeClock().now, createStore });
    limits.setTenant('acme', limitsOf({ pair: { requestsPerSecond: 1, burst: 5 } }));
    limits.check(planner, ledger);
    limits.check(writer, ledger);
    limits.setTenant('acme', limitsOf({ pair: { requestsPerSecond: 1, burst: 5 }, pairs: [{ from: 'beta/planner', to: '*', requestsPerSecond: 1, burst: 2 }] }));
    assert.deepEqual(entriesOf(stores.get('acme')!).map(([key]) => key), ['beta/writer>ledger']);
    assert.equal(allowedOf(limits, planner, ledger, 5), 2);
  });

  test('removeTenant drops only that tenant', () => {
    const limits = new RateLimits({ now: fakeClock().now });
    limits.setTenant('acme', limitsOf({ agent: { requestsPerSecond: 1, burst: 1 } }));
    limits.setTenant('beta', limitsOf({ agent: { requestsPerSecond: 1, burst: 1 } }));
    limits.check(ANON, ledger);
    limits.check(ANON, { tenant: 'beta', agent: 'writer' });
    limits.removeTenant('acme');
    assert.equal(allowedOf(limits, ANON, ledger, 3), 3);
    assert.equal(allowedOf(limits, ANON, { tenant: 'beta', agent: 'writer' }, 3), 0);
  });
});

describe('headers', () => {
  test('exact values for a refused request', () => {
    const limits = new RateLimits({ now: fakeClock().now });
    limits.setTenant('acme', limitsOf({ agent: { requestsPerSecond: 100, burst: 200 } }));
    allowedOf(limits, planner, ledger, 200);
    const denied = denialOf(limits.check(planner, ledger));
    assert.deepEqual(rateLimitHeaders(denied), {
      'retry-after': '1',
      'ratelimit-limit': '100',
      'ratelimit-remaining': '0',
      'ratelimit-reset': '1',
      'ratelimit-policy': '100;w=1;burst=200',
    });
  });

  test('fractional rates become a whole quota per whole-second window', () => {
    const clock = fakeClock();
    const limits = new RateLimits({ now: clock.now });
    const cases: [number, number | undefined, Record<string, string>][] = [
      [0.5, undefined, { 'retry-after': '2', 'ratelimit-limit': '1', 'ratelimit-remaining': '0', 'ratelimit-reset': '2', 'ratelimit-policy': '1;w=2;burst=1' }],
      [2.5, 5, { 'retry-after': '1', 'ratelimit-limit': '5', 'ratelimit-remaining': '0', 'ratelimit-reset': '1', 'ratelimit-policy': '5;w=2;burst=5' }],
      [0.1, 2, { 'retry-after': '10', 'ratelimit-limit': '1', 'ratelimit-remaining': '0', 'ratelimit-reset': '10', 'ratelimit-policy': '1;w=10;burst=2' }],
      [1 / 7, 1, { 'retry-after': '7', 'ratelimit-limit': '12342', 'ratelimit-remaining': '0', 'ratelimit-reset': '7', 'ratelimit-policy': '12342;w=86400;burst=1' }],
    ];
    for (const [requestsPerSecond, burst, expected] of cases) {
      clock.advance(1_000_000);
      limits.setTenant('acme', limitsOf({ agent: { requestsPerSecond, burst } }));
      allowedOf(limits, planner, ledger, 5);
      assert.deepEqual(rateLimitHeaders(denialOf(limits.check(planner, ledger))), expected, `rate ${requestsPerSecond}`);
    }
  });

  test('Retry-After is a whole number of seconds, at least 1', () => {
    assert.deepEqual(rateLimitHeaders({ limit: 3, remaining: 0.4, retryAfterSeconds: 0.2, policy: '3;w=1;burst=3' }), {
      'retry-after': '1',
      'ratelimit-limit': '3',
      'ratelimit-remaining': '0',
      'ratelimit-reset': '1',
      'ratelimit-policy': '3;w=1;burst=3',
    });
  });
});

describe('bucket cap', () => {
  test('a full store drops an idle (full) bucket first, then the oldest not used recently', () => {
    const clock = fakeClock();
    const store = new MemoryBucketStore(3);
    const limits = new RateLimits({ now: clock.now, createStore: () => store });
    limits.setTenant('acme', limitsOf({ pair: { requestsPerSecond: 1, burst: 2 } }));
    const caller = (agent: string) => ({ tenant: 'beta', agent });
    limits.check(caller('a'), ledger);
    limits.check(caller('b'), ledger);
    limits.check(caller('c'), ledger);
    clock.advance(500);
    limits.check(caller('b'), ledger); // b: 0.5 tokens; a and c: 1.5
    clock.advance(600); // a and c full again (2), b at 1.1
    limits.check(caller('d'), ledger);
    assert.deepEqual(entriesOf(store).map(([key]) => key), ['beta/b>ledger', 'beta/c>ledger', 'beta/d>ledger']);
    assert.equal(limits.stats('acme')?.evictions, 1);
    assert.equal(limits.stats('acme')?.buckets, 3);

    // None full: every bucket used since it was last looked at gets a second chance, then the oldest goes.
    limits.check(caller('b'), ledger);
    limits.check(caller('c'), ledger);
    limits.check(caller('d'), ledger);
    limits.check(caller('e'), ledger);
    assert.equal(store.size, 3);
    assert.equal(store.evictions, 2);
    assert.deepEqual(entriesOf(store).map(([key]) => key), ['beta/c>ledger', 'beta/d>ledger', 'beta/e>ledger']);
  });

  test('the cap holds under many callers, per tenant', () => {
    const limits = new RateLimits({ now: fakeClock().now, maxBucketsPerTenant: 100 });
    limits.setTenant('acme', limitsOf({ pair: { requestsPerSecond: 1, burst: 1 } }));
    limits.setTenant('beta', limitsOf({ pair: { requestsPerSecond: 1, burst: 1 } }));
    for (let i = 0; i < 1000; i++) limits.check({ tenant: 'gamma', agent: `a${i}` }, ledger);
    limits.check(ledger, { tenant: 'beta', agent: 'writer' });
    assert.deepEqual(limits.stats('acme'), { buckets: 100, evictions: 900 });
    assert.deepEqual(limits.stats('beta'), { buckets: 1, evictions: 0 });
    assert.throws(() => new RateLimits({ maxBucketsPerTenant: 0 }), /maxBucketsPerTenant must be a whole number >= 1, got 0/);
  });
});

describe('property: never more than burst + rate × window', () => {
  test('over random request sequences', () => {
    fc.assert(
      fc.property(
        fc.double({ min: 0.05, max: 50, noNaN: true }),
        fc.integer({ min: 1, max: 20 }),
        fc.array(fc.tuple(fc.double({ min: 0, max: 400, noNaN: true }), fc.integer({ min: 1, max: 4 })), { minLength: 1, maxLength: 150 }),
        (requestsPerSecond, burst, steps) => {
          const clock = fakeClock(0);
          const limits = new RateLimits({ now: clock.now });
          limits.setTenant('acme', limitsOf({ agent: { requestsPerSecond, burst } }));
          const allowedAt: number[] = [];
          for (const [gap, requests] of steps) {
            clock.advance(gap);
            for (let i = 0; i < requests; i++) if (limits.check(ANON, ledger).allowed) allowedAt.push(clock.now());
          }
          for (let i = 0; i < allowedAt.length; i++) {
            for (let j = i; j < allowedAt.length; j++) {
              const windowSeconds = (allowedAt[j]! - allowedAt[i]!) / 1000;
              assert.ok(j - i + 1 <= burst + requestsPerSecond * windowSeconds + 1e-6, `${j - i + 1} allowed in ${windowSeconds} s`);
            }
          }
        },
      ),
      { numRuns: 300 },
    );
  });
});

describe('ConcurrencyLimiter', () => {
  const limit = { perEndpoint: 2, queue: 2, queueTimeoutMs: 60_000 };

  function sync(result: Release | Promise<Release>): Release {
    assert.equal(typeof result, 'function', 'expected a slot at once');
    return result as Release;
  }

  async function refusal(promise: Release | Promise<Release>): Promise<ConcurrencyLimitError> {
    assert.ok(promise instanceof Promise);
    const err = await promise.then(
      () => assert.fail('expected a refusal'),
      (e: unknown) => e,
    );
    assert.ok(err instanceof ConcurrencyLimitError);
    return err;
  }

  test('free slots are handed out synchronously; then a FIFO queue', async () => {
    const limiter = new ConcurrencyLimiter();
    const first = sync(limiter.acquire('ep', limit));
    const second = sync(limiter.acquire('ep', limit));
    const order: string[] = [];
    const third = limiter.acquire('ep', limit);
    const fourth = limiter.acquire('ep', limit);
    assert.ok(third instanceof Promise && fourth instanceof Promise);
    void third.then(() => order.push('third'));
    void fourth.then(() => order.push('fourth'));
    assert.deepEqual(limiter.stats('ep'), { active: 2, queued: 2 });
    assert.equal(sync(limiter.acquire('other', limit)) instanceof Function, true, 'keys are independent');

    second();
    const thirdRelease = await third;
    assert.deepEqual(order, ['third']);
    assert.deepEqual(limiter.stats('ep'), { active: 2, queued: 1 });
    first();
    const fourthRelease = await fourth;
    assert.deepEqual(order, ['third', 'fourth']);
    thirdRelease();
    fourthRelease();
    assert.deepEqual(limiter.stats('ep'), { active: 0, queued: 0 });
    assert.equal(limiter.size, 1, 'idle keys are dropped (only "other" is left)');
  });

  test('a full queue refuses at once', async () => {
    const limiter = new ConcurrencyLimiter();
    const running = [sync(limiter.acquire('ep', limit)), sync(limiter.acquire('ep', limit))];
    const waiting = [limiter.acquire('ep', limit), limiter.acquire('ep', limit)];
    const err = await refusal(limiter.acquire('ep', limit));
    assert.equal(err.reason, 'queue_full');
    assert.equal(err.message, 'ep is at its concurrency limit (2 in flight, 2 waiting)');
    assert.deepEqual(limiter.stats('ep'), { active: 2, queued: 2 });
    for (const release of running) release();
    for (const release of await Promise.all(waiting)) release();
    assert.deepEqual(limiter.stats('ep'), { active: 0, queued: 0 });

    const noQueue = { perEndpoint: 1, queue: 0, queueTimeoutMs: 1000 };
    sync(limiter.acquire('solo', noQueue));
    assert.equal((await refusal(limiter.acquire('solo', noQueue))).reason, 'queue_full');
  });

  test('a wait longer than queueTimeoutMs is refused and leaves the queue', async () => {
    const limiter = new ConcurrencyLimiter();
    const short = { perEndpoint: 1, queue: 5, queueTimeoutMs: 20 };
    const release = sync(limiter.acquire('ep', short));
    const err = await refusal(limiter.acquire('ep', short));
    assert.equal(err.reason, 'queue_timeout');
    assert.equal(err.message, 'ep had no free slot within 20 ms (1 in flight)');
    assert.deepEqual(limiter.stats('ep'), { active: 1, queued: 0 });
    release();
    assert.equal(limiter.size, 0);
  });

  test('abort frees the queue position; the slot goes to the next waiter', async () => {
    const limiter = new ConcurrencyLimiter();
    const one = { perEndpoint: 1, queue: 5, queueTimeoutMs: 60_000 };
    const release = sync(limiter.acquire('ep', one));
    const controller = new AbortController();
    const aborted = limiter.acquire('ep', one, controller.signal);
    const next = limiter.acquire('ep', one);
    assert.deepEqual(limiter.stats('ep'), { active: 1, queued: 2 });
    controller.abort();
    assert.equal((await refusal(aborted)).reason, 'aborted');
    assert.deepEqual(limiter.stats('ep'), { active: 1, queued: 1 });
    release();
    const nextRelease = await (next as Promise<Release>);
    assert.deepEqual(limiter.stats('ep'), { active: 1, queued: 0 });
    nextRelease();
    assert.equal(limiter.size, 0);

    // Already aborted: refused without queueing.
    sync(limiter.acquire('ep', one));
    assert.equal((await refusal(limiter.acquire('ep', one, AbortSignal.abort()))).reason, 'aborted');
    assert.deepEqual(limiter.stats('ep'), { active: 1, queued: 0 });
  });

  test('release is idempotent', () => {
    const limiter = new ConcurrencyLimiter();
    const release = sync(limiter.acquire('ep', limit));
    sync(limiter.acquire('ep', limit));
    release();
    release();
    assert.deepEqual(limiter.stats('ep'), { active: 1, queued: 0 });
  });

  test('a raised limit lets waiters in at once', async () => {
    const limiter = new ConcurrencyLimiter();
    const one = { perEndpoint: 1, queue: 5, queueTimeoutMs: 60_000 };
    sync(limiter.acquire('ep', one));
    const waiting = limiter.acquire('ep', one);
    const raised = { perEndpoint: 3, queue: 5, queueTimeoutMs: 60_000 };
    sync(limiter.acquire('ep', raised));
    assert.equal(typeof (await waiting), 'function');
    assert.deepEqual(limiter.stats('ep'), { active: 3, queued: 0 });
  });
});
