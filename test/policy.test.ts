import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import {
  PolicyError,
  PolicySet,
  formatExplanation,
  parseTenantPolicy,
  policyPath,
  tenantPolicyIssues,
  validatePolicyDefaults,
  validateTenantPolicy,
  type Caller,
  type Decision,
  type PolicyDefaults,
  type RequestFacts,
  type TargetAgent,
  type TenantPolicy,
  type TenantPolicyInput,
} from '../src/tenancy/policy/index.js';
import { PrefixTree } from '../src/tenancy/policy/prefix-tree.js';

const TRUST_DOMAIN = 'example.org';

function caller(ref: string, extra: Partial<Caller> = {}): Caller {
  const [tenant, agent] = ref.split('/') as [string, string];
  return { tenant, agent, spiffeId: `spiffe://${TRUST_DOMAIN}/tenant/${tenant}/agent/${agent}`, labels: [], ...extra };
}

const ANONYMOUS: Caller = { labels: [] };

function target(ref: string, extra: Partial<TargetAgent> = {}): TargetAgent {
  const [tenant, agent] = ref.split('/') as [string, string];
  return { tenant, agent, tags: [], skills: [], clearances: [], ...extra };
}

function request(extra: Partial<RequestFacts> = {}): RequestFacts {
  return { method: 'POST', path: '/a2a', dataTags: [], ...extra };
}

/** A PolicySet with these tenant policies (as an operator writes them). */
function policies(tenants: Record<string, TenantPolicyInput | undefined>, defaults: Partial<PolicyDefaults> = {}): PolicySet {
  const set = new PolicySet(defaults);
  for (const [name, raw] of Object.entries(tenants)) set.setTenant(name, raw === undefined ? undefined : parseTenantPolicy(name, raw));
  return set;
}

function assertDecision(decision: Decision, expected: { allow: boolean; code: string; rule?: string; sourceRule?: string }): void {
  assert.deepEqual(
    { allow: decision.allow, code: decision.code, rule: decision.rule, sourceRule: decision.sourceRule },
    { allow: expected.allow, code: expected.code, rule: expected.rule, sourceRule: expected.sourceRule },
    decision.message,
  );
}

describe('intra-tenant calls', () => {
  test('no rule: the intraTenant default decides (gateway default, then the tenant setting)', () => {
    const allowAll = policies({ acme: {} });
    const allowed = allowAll.decide(caller('acme/x'), target('acme/y'), request());
    assertDecision(allowed, { allow: true, code: 'allowed_by_default' });
    assert.match(allowed.message, /intraTenant: allow/);

    const denyAll = policies({ acme: {} }, { intraTenant: 'deny' });
    const denied = denyAll.decide(caller('acme/x'), target('acme/y'), request());
    assertDecision(denied, { allow: false, code: 'denied_by_default' });
    assert.equal(denied.message, 'denied: tenant acme has no rule letting acme/x call acme/y (intraTenant: deny)');

    const tenantOverride = policies({ acme: { intraTenant: 'allow' }, beta: {} }, { intraTenant: 'deny' });
    assert.equal(tenantOverride.decide(caller('acme/x'), target('acme/y'), request()).allow, true);
    assert.equal(tenantOverride.decide(caller('beta/x'), target('beta/y'), request()).allow, false);
    const tenantDeny = policies({ acme: { intraTenant: 'deny' } });
    assertDecision(tenantDeny.decide(caller('acme/x'), target('acme/y'), request()), { allow: false, code: 'denied_by_default' });
  });

  test('setDefaults changes the fallback without recompiling tenants', () => {
    const set = policies({ acme: {} });
    const compiled = set.tenant('acme');
    assert.equal(set.decide(caller('acme/x'), target('acme/y'), request()).allow, true);
    set.setDefaults({ intraTenant: 'deny' });
    assert.equal(set.decide(caller('acme/x'), target('acme/y'), request()).allow, false);
    assert.equal(set.tenant('acme'), compiled);
    assert.equal(set.getDefaults().intraTenant, 'deny');
  });

  test('a tenant never set falls back to the gateway defaults', () => {
    const set = new PolicySet({ intraTenant: 'deny' });
    assertDecision(set.decide(caller('ghost/x'), target('ghost/y'), request()), { allow: false, code: 'denied_by_default' });
    assert.equal(set.ruleCount(), 0);
  });

  test('from.agents, to.agents and "*"', () => {
    const set = policies(
      {
        acme: {
          intraTenant: 'deny',
          rules: [
            { name: 'x-to-ledger', from: { agents: ['x'] }, to: { agents: ['ledger', 'audit'] } },
            { name: 'anyone-to-docs', from: { agents: ['*'] }, to: { agents: ['docs'] } },
          ],
        },
      },
      {},
    );
    assertDecision(set.decide(caller('acme/x'), target('acme/ledger'), request()), { allow: true, code: 'allowed_by_rule', rule: 'acme/x-to-ledger' });
    assertDecision(set.decide(caller('acme/x'), target('acme/audit'), request()), { allow: true, code: 'allowed_by_rule', rule: 'acme/x-to-ledger' });
    assert.equal(set.decide(caller('acme/z'), target('acme/ledger'), request()).allow, false);
    assert.equal(set.decide(caller('acme/x'), target('acme/other'), request()).allow, false);
    assertDecision(set.decide(caller('acme/z'), target('acme/docs'), request()), { allow: true, code: 'allowed_by_rule', rule: 'acme/anyone-to-docs' });
  });

  test('from.identities: exact and trailing-* prefix', () => {
    const set = policies({
      acme: {
        intraTenant: 'deny',
        rules: [
          { name: 'exact', from: { identities: ['spiffe://example.org/tenant/acme/agent/x'] }, to: { agents: ['a'] } },
          { name: 'prefix', from: { identities: ['spiffe://example.org/tenant/acme/agent/ops-*'] }, to: { agents: ['b'] } },
        ],
      },
    });
    assert.equal(set.decide(caller('acme/x'), target('acme/a'), request()).rule, 'acme/exact');
    assert.equal(set.decide(caller('acme/xy'), target('acme/a'), request()).allow, false);
    assert.equal(set.decide(caller('acme/ops-1'), target('acme/b'), request()).rule, 'acme/prefix');
    assert.equal(set.decide(caller('acme/op'), target('acme/b'), request()).allow, false);
    const lookalike = caller('acme/ops-1', { spiffeId: 'spiffe://exampl3.org/tenant/acme/agent/ops-1' });
    assert.equal(set.decide(lookalike, target('acme/b'), request()).allow, false, 'same tail, other trust domain');
    assert.equal(set.decide(caller('acme/x', { spiffeId: undefined }), target('acme/a'), request()).allow, false);
  });

  test('from.labels: every label must be present on the caller', () => {
    const set = policies({
      acme: { intraTenant: 'deny', rules: [{ name: 'team', from: { labels: ['team-x', 'prod'] } }] },
    });
    assert.equal(set.decide(caller('acme/x', { labels: ['prod', 'team-x', 'more'] }), target('acme/y'), request()).allow, true);
    assert.equal(set.decide(caller('acme/x', { labels: ['team-x'] }), target('acme/y'), request()).allow, false);
  });

  test('to.tags (agent tags or skill tags, any one) and to.skills (any one)', () => {
    const set = policies({
      acme: {
        intraTenant: 'deny',
        rules: [
          { name: 'finance', to: { tags: ['finance', 'ledger'] } },
          { name: 'refunds', to: { skills: ['refund', 'chargeback'] } },
        ],
      },
    });
    assert.equal(set.decide(caller('acme/x'), target('acme/y', { tags: ['ledger'] }), request()).rule, 'acme/finance');
    const skilled = target('acme/y', { skills: [{ id: 'report', tags: ['misc', 'finance'] }] });
    assert.equal(set.decide(caller('acme/x'), skilled, request()).rule, 'acme/finance');
    assert.equal(set.decide(caller('acme/x'), target('acme/y', { skills: [{ id: 'refund', tags: [] }] }), request()).rule, 'acme/refunds');
    assert.equal(set.decide(caller('acme/x'), target('acme/y', { tags: ['other'], skills: [{ id: 'other', tags: ['x'] }] }), request()).allow, false);
  });

  test('methods and paths (exact and prefix), matched on the normalised path', () => {
    const set = policies({
      acme: {
        intraTenant: 'deny',
        rules: [
          { name: 'reads', methods: ['get', 'HEAD'], paths: ['/v1/x', '/a2a/*'] },
          { name: 'no-admin', effect: 'deny', paths: ['/admin', '/admin/*'] },
          { name: 'admin-ok', paths: ['/*'], methods: ['DELETE'] },
        ],
      },
    });
    const from = caller('acme/x');
    const to = target('acme/y');
    assert.equal(set.decide(from, to, request({ method: 'GET', path: '/v1/x' })).rule, 'acme/reads');
    assert.equal(set.decide(from, to, request({ method: 'HEAD', path: '/a2a/tasks/1' })).rule, 'acme/reads');
    assert.equal(set.decide(from, to, request({ method: 'GET', path: '/v1/x?limit=3' })).rule, 'acme/reads');
    assert.equal(set.decide(from, to, request({ method: 'GET', path: '/v1/xy' })).allow, false);
    assert.equal(set.decide(from, to, request({ method: 'POST', path: '/v1/x' })).allow, false);
    assert.equal(set.decide(from, to, request({ method: 'get', path: '/v1/x' })).rule, 'acme/reads', 'methods compare upper-cased');
    for (const sneaky of ['/admin', '/admin?x=1', '/a2a/../admin', '//admin', '/%61dmin/users', '/a2a/%2e%2e/admin/x', '/a2a/.//../admin/', '\\admin']) {
      assertDecision(set.decide(from, to, request({ method: 'DELETE', path: sneaky })), { allow: false, code: 'denied_by_rule', rule: 'acme/no-admin' });
    }
    assert.equal(policyPath('/a2a/tasks'), '/a2a/tasks');
  });

  test('dataTags: an allow rule admits only requests whose tags are all listed; a deny rule fires on any listed tag', () => {
    const set = policies({
      acme: {
        intraTenant: 'deny',
        requireClearance: false,
        rules: [
          { name: 'public-finance', to: { agents: ['ledger'] }, dataTags: ['public', 'finance'] },
          { name: 'untagged-only', to: { agents: ['plain'] }, dataTags: [] },
          { name: 'no-phi', effect: 'deny', to: { agents: ['plain', 'ledger'] }, dataTags: ['phi'] },
        ],
      },
    });
    const from = caller('acme/x');
    assert.equal(set.decide(from, target('acme/ledger'), request({ dataTags: ['finance', 'public'] })).rule, 'acme/public-finance');
    assert.equal(set.decide(from, target('acme/ledger'), request()).rule, 'acme/public-finance');
    assert.equal(set.decide(from, target('acme/ledger'), request({ dataTags: ['finance', 'pii'] })).allow, false);
    assert.equal(set.decide(from, target('acme/plain'), request()).rule, 'acme/untagged-only');
    assert.equal(set.decide(from, target('acme/plain'), request({ dataTags: ['public'] })).allow, false);
    assertDecision(set.decide(from, target('acme/ledger'), request({ dataTags: ['phi'] })), { allow: false, code: 'denied_by_rule', rule: 'acme/no-phi' });
  });

  test('a matching deny beats any allow, whatever the order; the first matching rule is named', () => {
    const set = policies({
      acme: {
        rules: [
          { name: 'allow-all' },
          { name: 'allow-y', to: { agents: ['y'] } },
          { name: 'deny-y', effect: 'deny', to: { agents: ['y'] } },
          { name: 'deny-all-posts', effect: 'deny', methods: ['POST'] },
        ],
      },
    });
    assertDecision(set.decide(caller('acme/x'), target('acme/y'), request({ method: 'GET' })), { allow: false, code: 'denied_by_rule', rule: 'acme/deny-y' });
    assertDecision(set.decide(caller('acme/x'), target('acme/z'), request({ method: 'POST' })), { allow: false, code: 'denied_by_rule', rule: 'acme/deny-all-posts' });
    assertDecision(set.decide(caller('acme/x'), target('acme/z'), request({ method: 'GET' })), { allow: true, code: 'allowed_by_rule', rule: 'acme/allow-all' });
  });

  test('an inbound rule with from.tenant "*" covers the tenant\'s own agents too', () => {
    const set = policies({ acme: { intraTenant: 'deny', rules: [{ name: 'anyone', from: { tenant: '*' }, to: { agents: ['docs'] } }] } });
    assert.equal(set.decide(caller('acme/x'), target('acme/docs'), request()).rule, 'acme/anyone');
  });
});

describe('rule index', () => {
  test('prefix tree: a lookup visits exactly the stored prefixes of the key, shortest first', () => {
    const tree = new PrefixTree<string>();
    // inserted longest first, so later ones split edges
    for (const prefix of ['/abc/', '/ab', '/a', 'spiffe://x/', '']) assert.equal(tree.upsert(prefix, () => prefix), prefix);
    assert.equal(tree.upsert('/ab', () => 'again'), '/ab', 'an existing prefix keeps its value');
    assert.equal(tree.size, 5);
    const prefixesOf = (key: string): string[] => {
      const seen: string[] = [];
      tree.forEachPrefixOf(key, (value, into) => into.push(value), seen);
      return seen;
    };
    assert.deepEqual(prefixesOf('/abc/d'), ['', '/a', '/ab', '/abc/']);
    assert.deepEqual(prefixesOf('/abc'), ['', '/a', '/ab'], 'the key ends inside an edge');
    assert.deepEqual(prefixesOf('/abx/'), ['', '/a', '/ab'], 'the key leaves an edge');
    assert.deepEqual(prefixesOf('/'), ['']);
    assert.deepEqual(prefixesOf('spiffe://x/tenant/a'), ['', 'spiffe://x/']);
    assert.deepEqual(prefixesOf('spiffe://y'), ['']);
    assert.deepEqual(new PrefixTree<number>().size, 0);
  });

  test('prefix tree = filtering every stored prefix, on random prefixes and keys', () => {
    const text = fc.string({ unit: fc.constantFrom('a', 'b', '/'), maxLength: 6 });
    fc.assert(
      fc.property(fc.uniqueArray(text, { maxLength: 12 }), fc.array(text, { minLength: 1, maxLength: 8 }), (prefixes, keys) => {
        const tree = new PrefixTree<string>();
        for (const prefix of prefixes) tree.upsert(prefix, () => prefix);
        assert.equal(tree.size, prefixes.length);
        for (const key of keys) {
          const seen: string[] = [];
          tree.forEachPrefixOf(key, (value, into) => into.push(value), seen);
          const expected = prefixes.filter((prefix) => key.startsWith(prefix)).sort((a, b) => a.length - b.length);
          assert.deepEqual(seen, expected, key);
        }
      }),
      { numRuns: 2000 },
    );
  });

  test('overlapping path and identity prefixes: the first matching rule in rule order, a deny beating every allow', () => {
    const set = policies({
      acme: {
        intraTenant: 'deny',
        rules: [
          { name: 'ab', paths: ['/ab*'] },
          { name: 'a', paths: ['/a*', '/abc/*'] },
          { name: 'no-abc', effect: 'deny', paths: ['/abc/x*'] },
          { name: 'abc-exact', paths: ['/abc'] },
          { name: 'ops', from: { identities: ['spiffe://example.org/tenant/acme/agent/ops-*'] } },
          { name: 'acme', from: { identities: ['spiffe://example.org/tenant/acme/*'] } },
          { name: 'no-ops-9', effect: 'deny', from: { identities: ['spiffe://example.org/tenant/acme/agent/ops-9*'] } },
        ],
      },
    });
    const from = caller('acme/q', { spiffeId: undefined });
    const to = target('acme/y');
    assert.equal(set.decide(from, to, request({ path: '/abc/d' })).rule, 'acme/ab');
    assert.equal(set.decide(from, to, request({ path: '/abc' })).rule, 'acme/ab');
    assert.equal(set.decide(from, to, request({ path: '/ax' })).rule, 'acme/a');
    assert.equal(set.decide(from, to, request({ path: '/a' })).rule, 'acme/a');
    assertDecision(set.decide(from, to, request({ path: '/abc/xyz' })), { allow: false, code: 'denied_by_rule', rule: 'acme/no-abc' });
    assert.equal(set.decide(from, to, request({ path: '/b' })).allow, false);
    const path = request({ path: '/b' });
    assert.equal(set.decide(caller('acme/ops-1'), to, path).rule, 'acme/ops');
    assert.equal(set.decide(caller('acme/other'), to, path).rule, 'acme/acme');
    assertDecision(set.decide(caller('acme/ops-90'), to, path), { allow: false, code: 'denied_by_rule', rule: 'acme/no-ops-9' });
    assert.equal(set.decide(caller('acme/ops-1', { spiffeId: 'spiffe://example.org/tenant/acmex/agent/ops-1' }), to, path).allow, false);
  });

  test('rules narrowed by data tags alone: a deny on any of its tags, an allow for requests carrying only its tags (or none)', () => {
    const set = policies({
      acme: {
        intraTenant: 'deny',
        requireClearance: false,
        rules: [
          { name: 'no-phi', effect: 'deny', dataTags: ['phi', 'secret'] },
          { name: 'finance', dataTags: ['finance', 'public'] },
          { name: 'pii', dataTags: ['pii'] },
          { name: 'untagged', dataTags: [] },
        ],
      },
    });
    const decide = (dataTags: string[]) => set.decide(caller('acme/x'), target('acme/y'), request({ dataTags }));
    assert.equal(decide([]).rule, 'acme/finance', 'an untagged request carries only listed tags');
    assert.equal(decide(['public', 'finance']).rule, 'acme/finance');
    assert.equal(decide(['pii', 'pii']).rule, 'acme/pii');
    assert.equal(decide(['pii', 'finance']).allow, false, 'no rule lists both');
    assert.equal(decide(['ml']).allow, false);
    assertDecision(decide(['finance', 'secret']), { allow: false, code: 'denied_by_rule', rule: 'acme/no-phi' });
  });

  test('a field shared by many rules is not the one they are looked up by', () => {
    // Every rule names the same target agent (and, on the right, the same identity prefix); a
    // decision must still find the one rule for its caller, its method or its path.
    const rules = Array.from({ length: 300 }, (_, i) => ({ name: `r${i}`, to: { agents: ['popular'] }, from: { agents: [`c${i}`] } }));
    const prefixed = Array.from({ length: 300 }, (_, i) => ({ name: `p${i}`, from: { identities: ['spiffe://example.org/tenant/acme/*'] }, paths: [`/p${i}/*`] }));
    const set = policies({ acme: { intraTenant: 'deny', rules: [...rules, ...prefixed, { name: 'late', effect: 'deny', from: { agents: ['c7'] }, methods: ['DELETE'] }] } });
    assert.equal(set.decide(caller('acme/c7'), target('acme/popular'), request()).rule, 'acme/r7');
    assert.equal(set.decide(caller('acme/c7'), target('acme/popular'), request({ method: 'DELETE' })).rule, 'acme/late');
    assert.equal(set.decide(caller('acme/nobody'), target('acme/popular'), request()).allow, false);
    assert.equal(set.decide(caller('acme/nobody'), target('acme/z'), request({ path: '/p42/x' })).rule, 'acme/p42');
    assert.equal(set.decide(caller('acme/nobody', { spiffeId: undefined }), target('acme/z'), request({ path: '/p42/x' })).allow, false);
  });
});

describe('anonymous callers', () => {
  test('the anonymous default decides when no anonymous rule matches', () => {
    const set = policies({ acme: {}, open: { anonymous: 'allow' } });
    const denied = set.decide(ANONYMOUS, target('acme/y'), request());
    assertDecision(denied, { allow: false, code: 'anonymous_denied' });
    assertDecision(set.decide(ANONYMOUS, target('open/y'), request()), { allow: true, code: 'allowed_by_default' });
    const gatewayAllows = policies({ acme: {} }, { anonymous: 'allow' });
    assert.equal(gatewayAllows.decide(ANONYMOUS, target('acme/y'), request()).allow, true);
  });

  test('rules with from.anonymous match only anonymous callers; other rules never match them', () => {
    const set = policies({
      acme: {
        intraTenant: 'deny',
        rules: [
          { name: 'everyone', from: { tenant: '*' } },
          { name: 'public-card', from: { anonymous: true }, methods: ['GET'], paths: ['/.well-known/*'] },
          { name: 'no-anon-writes', effect: 'deny', from: { anonymous: true }, methods: ['POST'] },
        ],
      },
    });
    assertDecision(set.decide(ANONYMOUS, target('acme/y'), request({ method: 'GET', path: '/.well-known/agent-card.json' })), {
      allow: true,
      code: 'allowed_by_rule',
      rule: 'acme/public-card',
    });
    assertDecision(set.decide(ANONYMOUS, target('acme/y'), request({ method: 'POST' })), { allow: false, code: 'denied_by_rule', rule: 'acme/no-anon-writes' });
    assertDecision(set.decide(ANONYMOUS, target('acme/y'), request({ method: 'GET', path: '/x' })), { allow: false, code: 'anonymous_denied' });
    assertDecision(set.decide(caller('acme/x'), target('acme/y'), request({ method: 'POST' })), { allow: true, code: 'allowed_by_rule', rule: 'acme/everyone' });
  });
});

describe('cross-tenant calls need consent on both sides', () => {
  const inbound = { name: 'acme-may-call-ledger', from: { tenant: 'acme', agents: ['x'] }, to: { agents: ['ledger'] } };
  const outbound = { name: 'x-may-call-beta', from: { agents: ['x'] }, to: { tenant: 'beta' } };

  test('both sides allow: allowed, naming both rules', () => {
    const set = policies({ acme: { rules: [outbound] }, beta: { rules: [inbound] } });
    const decision = set.decide(caller('acme/x'), target('beta/ledger'), request());
    assertDecision(decision, { allow: true, code: 'allowed_by_rule', rule: 'beta/acme-may-call-ledger', sourceRule: 'acme/x-may-call-beta' });
    assert.equal(decision.message, 'allowed by rule beta/acme-may-call-ledger (inbound) and rule acme/x-may-call-beta (outbound)');
    assert.equal(set.decide(caller('acme/x'), target('beta/ledger'), request()), decision, 'the same frozen decision object each time');
    assert.ok(Object.isFrozen(decision));
  });

  test('each side alone is denied with the code naming the missing side', () => {
    const onlyInbound = policies({ acme: {}, beta: { rules: [inbound] } });
    const noOutbound = onlyInbound.decide(caller('acme/x'), target('beta/ledger'), request());
    assertDecision(noOutbound, { allow: false, code: 'no_outbound_consent', rule: 'beta/acme-may-call-ledger' });
    assert.match(noOutbound.message, /tenant acme has no rule letting acme\/x call out to beta\/ledger/);

    const onlyOutbound = policies({ acme: { rules: [outbound] }, beta: {} });
    const noInbound = onlyOutbound.decide(caller('acme/x'), target('beta/ledger'), request());
    assertDecision(noInbound, { allow: false, code: 'no_inbound_consent', sourceRule: 'acme/x-may-call-beta' });
    assert.match(noInbound.message, /^denied: tenant beta has no rule letting acme\/x call beta\/ledger/);

    const neither = policies({ acme: {}, beta: {} }, { intraTenant: 'allow' });
    assertDecision(neither.decide(caller('acme/x'), target('beta/ledger'), request()), { allow: false, code: 'no_consent' });
  });

  test('the intraTenant default never lets another tenant in', () => {
    const set = policies({ acme: { intraTenant: 'allow', rules: [outbound] }, beta: { intraTenant: 'allow' } });
    assert.equal(set.decide(caller('acme/x'), target('beta/ledger'), request()).code, 'no_inbound_consent');
  });

  test('a deny on either side wins over both allows', () => {
    const targetDenies = policies({
      acme: { rules: [outbound] },
      beta: { rules: [inbound, { name: 'no-posts-from-outside', effect: 'deny', from: { tenant: '*' }, methods: ['POST'] }] },
    });
    assertDecision(targetDenies.decide(caller('acme/x'), target('beta/ledger'), request({ method: 'POST' })), {
      allow: false,
      code: 'denied_by_rule',
      rule: 'beta/no-posts-from-outside',
    });
    assert.equal(targetDenies.decide(caller('acme/x'), target('beta/ledger'), request({ method: 'GET' })).allow, true);

    const sourceDenies = policies({
      acme: { rules: [outbound, { name: 'no-pii-out', effect: 'deny', to: { tenant: '*' }, dataTags: ['pii'] }] },
      beta: { rules: [inbound], requireClearance: false },
    });
    assertDecision(sourceDenies.decide(caller('acme/x'), target('beta/ledger'), request({ dataTags: ['pii'] })), {
      allow: false,
      code: 'denied_by_rule',
      rule: 'acme/no-pii-out',
    });
  });

  test('"*" tenants: inbound from any tenant, outbound to any other tenant', () => {
    const set = policies({
      acme: { rules: [{ name: 'out-anywhere', to: { tenant: '*' } }] },
      beta: { rules: [{ name: 'in-from-anyone', from: { tenant: '*' }, to: { agents: ['docs'] } }] },
      gamma: { rules: [{ name: 'out-to-beta', to: { tenant: 'beta' } }] },
    });
    assertDecision(set.decide(caller('acme/x'), target('beta/docs'), request()), {
      allow: true,
      code: 'allowed_by_rule',
      rule: 'beta/in-from-anyone',
      sourceRule: 'acme/out-anywhere',
    });
    assert.equal(set.decide(caller('gamma/x'), target('beta/docs'), request()).sourceRule, 'gamma/out-to-beta');
    assert.equal(set.decide(caller('gamma/x'), target('beta/other'), request()).code, 'no_inbound_consent');
    assert.equal(set.decide(caller('acme/x'), target('gamma/y'), request()).code, 'no_inbound_consent');
  });

  test('inbound rules for one tenant do not admit another', () => {
    const set = policies({ acme: { rules: [outbound] }, gamma: { rules: [{ ...outbound }] }, beta: { rules: [inbound] } });
    assert.equal(set.decide(caller('gamma/x'), target('beta/ledger'), request()).code, 'no_inbound_consent');
  });
});

describe('clearance', () => {
  const open = { rules: [{ name: 'all', from: { tenant: '*' } }] };

  test('tagged data goes only to agents cleared for every tag; public needs none; even when a rule allowed', () => {
    const set = policies({ acme: open });
    const from = caller('acme/x');
    const denied = set.decide(from, target('acme/y', { clearances: ['finance'] }), request({ dataTags: ['pii', 'finance', 'phi', 'public'] }));
    assertDecision(denied, { allow: false, code: 'not_cleared' });
    assert.deepEqual(denied.missingClearances, ['pii', 'phi']);
    assert.match(denied.message, /not cleared for data tagged pii, phi/);
    assert.equal(set.decide(from, target('acme/y', { clearances: ['finance', 'pii', 'phi'] }), request({ dataTags: ['pii', 'finance', 'phi'] })).allow, true);
    assert.equal(set.decide(from, target('acme/y'), request({ dataTags: ['public'] })).allow, true);
  });

  test('requireClearance off in the target tenant (or the gateway) lets tagged data through', () => {
    const set = policies({ acme: { ...open, requireClearance: false }, beta: open });
    assert.equal(set.decide(caller('acme/x'), target('acme/y'), request({ dataTags: ['pii'] })).allow, true);
    assert.equal(set.decide(caller('beta/x'), target('beta/y'), request({ dataTags: ['pii'] })).code, 'not_cleared');
    const gatewayOff = policies({ acme: open }, { requireClearance: false });
    assert.equal(gatewayOff.decide(caller('acme/x'), target('acme/y'), request({ dataTags: ['pii'] })).allow, true);
  });

  test('a cross-tenant call follows the target tenant\'s setting', () => {
    const set = policies({
      acme: { requireClearance: false, rules: [{ name: 'out', to: { tenant: 'beta' } }] },
      beta: { rules: [{ name: 'in', from: { tenant: 'acme' } }] },
    });
    assert.equal(set.decide(caller('acme/x'), target('beta/y'), request({ dataTags: ['finance'] })).code, 'not_cleared');
    assert.equal(set.decide(caller('acme/x'), target('beta/y', { clearances: ['finance'] }), request({ dataTags: ['finance'] })).allow, true);
  });
});

describe('explain', () => {
  test('names the deciding rule and says why each other rule did not match', () => {
    const set = policies({
      acme: { rules: [{ name: 'x-out', from: { agents: ['x'] }, to: { tenant: 'beta' } }, { name: 'to-gamma', to: { tenant: 'gamma' } }] },
      beta: {
        rules: [
          { name: 'from-gamma', from: { tenant: 'gamma' } },
          { name: 'ops-only', from: { tenant: 'acme', labels: ['ops'] } },
          { name: 'reads', from: { tenant: 'acme' }, methods: ['GET'] },
          { name: 'acme-in', from: { tenant: 'acme' }, to: { agents: ['y'] } },
          { name: 'not-finance', effect: 'deny', from: { tenant: '*' }, dataTags: ['finance'] },
        ],
      },
    });
    const explanation = set.explain(caller('acme/x'), target('beta/y'), request({ method: 'POST', path: '/a2a' }));
    assertDecision(explanation.decision, { allow: true, code: 'allowed_by_rule', rule: 'beta/acme-in', sourceRule: 'acme/x-out' });
    assert.equal(explanation.kind, 'cross-tenant');
    const rules = explanation.steps.filter((step) => step.kind === 'rule');
    assert.deepEqual(
      rules.map((step) => [step.side, step.rule, step.matched, step.decided, step.field, step.reason]),
      [
        ['inbound', 'beta/from-gamma', false, false, 'from.tenant', 'caller tenant acme is not gamma'],
        ['inbound', 'beta/ops-only', false, false, 'from.labels', 'caller lacks label(s) ops'],
        ['inbound', 'beta/reads', false, false, 'methods', 'method POST is not in methods [GET]'],
        ['inbound', 'beta/acme-in', true, true, undefined, undefined],
        ['inbound', 'beta/not-finance', false, false, 'dataTags', 'the request carries none of dataTags [finance]'],
        ['outbound', 'acme/x-out', true, true, undefined, undefined],
        ['outbound', 'acme/to-gamma', false, false, 'to.tenant', 'target tenant beta is not gamma'],
      ],
    );
    const text = formatExplanation(explanation);
    assert.match(text, /^ALLOW acme\/x -> beta\/y \(cross-tenant\): allowed_by_rule/);
    assert.match(text, /\* inbound allow beta\/acme-in: matches/);
    assert.match(text, / {3}inbound allow beta\/reads: no match: methods: method POST is not in methods \[GET\]/);
    assert.doesNotMatch(formatExplanation(explanation, { onlyMatching: true }), /beta\/reads/);
  });

  test('reports the default and the clearance check that decided', () => {
    const set = policies({ acme: { intraTenant: 'deny', rules: [{ name: 'only-z', from: { agents: ['z'] } }] }, beta: { rules: [{ name: 'all' }] } });
    const byDefault = set.explain(caller('acme/x'), target('acme/y'), request());
    assert.equal(byDefault.decision.code, 'denied_by_default');
    assert.deepEqual(byDefault.steps[0], {
      kind: 'rule',
      side: 'inbound',
      rule: 'acme/only-z',
      effect: 'allow',
      matched: false,
      decided: false,
      field: 'from.agents',
      reason: 'caller agent x is not in from.agents [z]',
    });
    assert.deepEqual(byDefault.steps[1], { kind: 'default', tenant: 'acme', setting: 'intraTenant', value: 'deny', from: 'tenant', applied: true });

    const uncleared = set.explain(caller('beta/x'), target('beta/y'), request({ dataTags: ['pii', 'public'] }));
    assert.equal(uncleared.decision.code, 'not_cleared');
    assert.deepEqual(uncleared.steps.at(-1), {
      kind: 'clearance',
      tenant: 'beta',
      required: true,
      from: 'gateway',
      dataTags: ['pii', 'public'],
      missing: ['pii'],
      applied: true,
    });
    assert.match(formatExplanation(uncleared), /\* clearance: required \(gateway default\); data tags \[pii, public\]; not cleared for pii/);

    const anonymous = set.explain(ANONYMOUS, target('beta/y'), request());
    assert.equal(anonymous.kind, 'anonymous');
    assert.equal(anonymous.caller, 'an anonymous caller');
    const first = anonymous.steps[0];
    assert.ok(first?.kind === 'rule');
    assert.equal(first.reason, 'the rule is for authenticated callers; the caller is anonymous');
    assert.deepEqual(anonymous.steps[1], { kind: 'default', tenant: 'beta', setting: 'anonymous', value: 'deny', from: 'gateway', applied: true });
  });
});

describe('validation', () => {
  function errorsOf(tenant: string, raw: unknown): { path: string; message: string }[] {
    const result = validateTenantPolicy(tenant, raw);
    assert.equal(result.ok, false, 'expected the policy to be refused');
    return result.ok ? [] : result.errors;
  }

  test('a valid policy comes back with defaults applied', () => {
    const result = validateTenantPolicy('acme', { rules: [{ name: 'r', methods: ['get'] }] });
    assert.ok(result.ok);
    assert.deepEqual(result.value, { rules: [{ name: 'r', effect: 'allow', methods: ['get'] }] }, 'kept as written; the engine upper-cases');
    assert.deepEqual(validateTenantPolicy('acme', {}), { ok: true, value: { rules: [] } });
  });

  test('bad name, duplicate names, unknown field, bad path pattern — every problem with its path', () => {
    const errors = errorsOf('acme', {
      rules: [
        { name: 'Ledger_Readers' },
        { name: 'dup' },
        { name: 'dup', paths: ['/a/*/b', 'v1', '/ok*'] },
        { name: 'extra', form: { tenant: 'beta' } },
      ],
    });
    assert.deepEqual(errors, [
      { path: 'rules[0].name', message: 'must be a rule name: lowercase letters, digits and "-", 1-63 characters, not starting or ending with "-"' },
      {
        path: 'rules[2].paths[0]',
        message: 'must be a path starting with "/" (exact, such as /v1/x) or a prefix ending in "*" (such as /a2a/*); "*" only at the end, no query',
      },
      {
        path: 'rules[2].paths[1]',
        message: 'must be a path starting with "/" (exact, such as /v1/x) or a prefix ending in "*" (such as /a2a/*); "*" only at the end, no query',
      },
      { path: 'rules[3].form', message: 'unknown field' },
      { path: 'rules[2].name', message: 'duplicate rule name "dup" (first used by rules[1])' },
    ]);
  });

  test('a rule must speak for its tenant', () => {
    const errors = errorsOf('acme', {
      rules: [
        { name: 'fine-in', from: { tenant: 'beta' } },
        { name: 'fine-out', to: { tenant: 'beta' } },
        { name: 'elsewhere', from: { tenant: 'beta' }, to: { tenant: 'gamma' } },
        { name: 'star-star', from: { tenant: '*' }, to: { tenant: '*' } },
      ],
    });
    assert.deepEqual(errors, [
      { path: 'rules[2]', message: 'a rule in tenant acme must have acme on one side: from.tenant or to.tenant (got from.tenant beta, to.tenant gamma)' },
      { path: 'rules[3]', message: 'a rule in tenant acme must have acme on one side: from.tenant or to.tenant (got from.tenant *, to.tenant *)' },
    ]);
    const parsed = parseTenantPolicy('gamma', { rules: [{ name: 'elsewhere', from: { tenant: 'beta' }, to: { tenant: 'gamma' } }] });
    assert.deepEqual(tenantPolicyIssues('acme', parsed), [
      { path: ['rules', 0], message: 'a rule in tenant acme must have acme on one side: from.tenant or to.tenant (got from.tenant beta, to.tenant gamma)' },
    ]);
    assert.throws(
      () => new PolicySet().setTenant('acme', parsed),
      (err: unknown) => err instanceof PolicyError && err.tenant === 'acme' && /rules\[0\]: a rule in tenant acme must have acme on one side/.test(err.message),
    );
  });

  test('anonymous cannot be combined with other from-fields and is inbound only', () => {
    const errors = errorsOf('acme', {
      rules: [
        { name: 'a', from: { anonymous: true, agents: ['x'], labels: ['l'] } },
        { name: 'b', from: { anonymous: true }, to: { tenant: 'beta' } },
      ],
    });
    assert.deepEqual(errors, [
      {
        path: 'rules[0].from.anonymous',
        message: 'a rule for anonymous callers cannot also set from.agents, from.labels: anonymous callers have no tenant, agent, identity or labels',
      },
      { path: 'rules[1]', message: "a rule for anonymous callers lets them call this tenant's agents: to.tenant must be acme or left out (got beta)" },
    ]);
  });

  test('other field errors are specific', () => {
    const errors = errorsOf('acme', {
      intraTenant: 'maybe',
      rules: [
        {
          name: 'r',
          effect: 'permit',
          from: { tenant: 'Beta', agents: [], identities: ['https://x'] },
          to: { agents: ['*', 'y'] },
          methods: ['GE T'],
          dataTags: ['PII'],
        },
      ],
    });
    const byPath = Object.fromEntries(errors.map((error) => [error.path, error.message]));
    assert.equal(byPath['intraTenant'], 'must be "allow" or "deny"');
    assert.equal(byPath['rules[0].effect'], 'must be "allow" or "deny"');
    assert.match(byPath['rules[0].from.tenant'] ?? '', /must be a tenant name .* or "\*" for any tenant/);
    assert.equal(byPath['rules[0].from.agents'], 'give at least one agent, or leave the field out to match any');
    assert.match(byPath['rules[0].from.identities[0]'] ?? '', /must be a SPIFFE ID/);
    assert.equal(byPath['rules[0].methods[0]'], 'must be an HTTP method such as GET or POST');
    assert.match(byPath['rules[0].dataTags[0]'] ?? '', /must be a data tag/);
    const star = errorsOf('acme', { rules: [{ name: 'r', to: { agents: ['*', 'y'] } }] });
    assert.deepEqual(star, [{ path: 'rules[0].to.agents', message: '"*" (any agent) must be the only entry' }]);
    assert.deepEqual(errorsOf('acme', { rules: [{ name: 'r', effect: 'deny', dataTags: [] }] }).map((error) => error.path), ['rules[0].dataTags']);
    assert.deepEqual(errorsOf('acme', { rulez: [] }), [{ path: 'rulez', message: 'unknown field' }]);
    assert.deepEqual(validatePolicyDefaults({ intraTenant: 'deny', anonymous: 'x' }), {
      ok: false,
      errors: [{ path: 'anonymous', message: 'must be "allow" or "deny"' }],
    });
  });
});

describe('per-tenant reloads', () => {
  test('versionFor(tenant, callerTenant) grows with either tenant\'s policy or the defaults, and never repeats', () => {
    const set = new PolicySet();
    const seen = new Set<number>();
    const snapshot = () => ({ acmeFromBeta: set.versionFor('acme', 'beta'), acmeAnonymous: set.versionFor('acme', undefined), gamma: set.versionFor('gamma', 'gamma') });
    let last = snapshot();
    const step = (change: () => void, moved: Array<keyof typeof last>) => {
      change();
      const now = snapshot();
      for (const key of Object.keys(now) as Array<keyof typeof last>) {
        if (moved.includes(key)) assert.ok(now[key] > last[key], `${key} grows`);
        else assert.equal(now[key], last[key], `${key} is unchanged`);
      }
      if (moved.includes('acmeFromBeta')) {
        assert.ok(!seen.has(now.acmeFromBeta), 'a version of acme <- beta never comes back');
        seen.add(now.acmeFromBeta);
      }
      last = now;
    };
    seen.add(last.acmeFromBeta);
    step(() => set.setTenant('acme', parseTenantPolicy('acme', { rules: [{ name: 'in', from: { tenant: 'beta' } }] })), ['acmeFromBeta', 'acmeAnonymous']);
    step(() => set.setTenant('beta', parseTenantPolicy('beta', { rules: [{ name: 'out', to: { tenant: 'acme' } }] })), ['acmeFromBeta']);
    step(() => set.setTenant('gamma', parseTenantPolicy('gamma', { intraTenant: 'deny' })), ['gamma']);
    step(() => set.removeTenant('beta'), ['acmeFromBeta']);
    step(() => set.setTenant('beta', undefined), ['acmeFromBeta']);
    step(() => set.setDefaults({ intraTenant: 'deny' }), ['acmeFromBeta', 'acmeAnonymous', 'gamma']);
  });

  test('setTenant recompiles only that tenant; others keep their compiled objects and decisions', () => {
    const set = policies({
      acme: { rules: [{ name: 'out', to: { tenant: 'beta' } }] },
      beta: { rules: [{ name: 'in', from: { tenant: 'acme' } }] },
      gamma: { intraTenant: 'deny' },
    });
    assert.equal(set.ruleCount(), 2);
    const acme = set.tenant('acme');
    const gamma = set.tenant('gamma');
    const before = set.decide(caller('acme/x'), target('beta/y'), request());
    const gammaBefore = set.decide(caller('gamma/x'), target('gamma/y'), request());
    assert.equal(before.allow, true);

    const replaced = set.setTenant('beta', parseTenantPolicy('beta', { rules: [{ name: 'in', from: { tenant: 'acme' }, methods: ['GET'] }, { name: 'more' }] }));
    assert.equal(set.tenant('beta'), replaced);
    assert.equal(set.tenant('acme'), acme);
    assert.equal(set.tenant('gamma'), gamma);
    assert.equal(set.ruleCount(), 3);
    assert.equal(set.decide(caller('acme/x'), target('beta/y'), request({ method: 'POST' })).code, 'no_inbound_consent');
    assert.equal(set.decide(caller('acme/x'), target('beta/y'), request({ method: 'GET' })).allow, true);
    assert.deepEqual(set.decide(caller('gamma/x'), target('gamma/y'), request()), gammaBefore);

    set.removeTenant('beta');
    assert.equal(set.ruleCount(), 1);
    assert.equal(set.tenant('beta'), undefined);
    assert.deepEqual(set.tenantNames().sort(), ['acme', 'gamma']);
    assert.equal(set.decide(caller('beta/x'), target('beta/y'), request()).code, 'allowed_by_default');
    assert.equal(set.tenant('acme'), acme);
  });

  test('common results are the same frozen objects every time (no allocation per decision)', () => {
    const set = policies({ acme: { rules: [{ name: 'r', to: { agents: ['y'] } }] } });
    const byRule = set.decide(caller('acme/x'), target('acme/y'), request());
    assert.equal(set.decide(caller('acme/q'), target('acme/y'), request({ method: 'GET' })), byRule);
    const byDefault = set.decide(caller('acme/x'), target('acme/z'), request());
    assert.equal(set.decide(caller('acme/q'), target('acme/w'), request()), byDefault);
    assert.ok(Object.isFrozen(byRule) && Object.isFrozen(byDefault));
  });
});

// ---- property: the compiled engine agrees with a linear-scan reference ----------------------------

interface World {
  defaults: PolicyDefaults;
  tenants: Map<string, TenantPolicy>;
}

function refRuleMatches(owner: string, rule: TenantPolicy['rules'][number], from: Caller, to: TargetAgent, req: RequestFacts): boolean {
  const anonymous = rule.from?.anonymous === true;
  if (anonymous !== (from.tenant === undefined)) return false;
  if (!anonymous) {
    const fromTenant = rule.from?.tenant ?? owner;
    if (fromTenant !== '*' && fromTenant !== from.tenant) return false;
    const agents = rule.from?.agents;
    if (agents && !agents.includes('*') && !agents.includes(from.agent ?? '')) return false;
    const ids = rule.from?.identities;
    if (ids && !ids.some((p) => (p.endsWith('*') ? (from.spiffeId ?? '').startsWith(p.slice(0, -1)) && from.spiffeId !== undefined : p === from.spiffeId))) return false;
    if (rule.from?.labels && !rule.from.labels.every((label) => from.labels.includes(label))) return false;
  }
  const toTenant = rule.to?.tenant ?? owner;
  if (toTenant !== '*' && toTenant !== to.tenant) return false;
  const agents = rule.to?.agents;
  if (agents && !agents.includes('*') && !agents.includes(to.agent)) return false;
  const allTags = [...to.tags, ...to.skills.flatMap((skill) => skill.tags)];
  if (rule.to?.tags && !rule.to.tags.some((tag) => allTags.includes(tag))) return false;
  if (rule.to?.skills && !rule.to.skills.some((id) => to.skills.some((skill) => skill.id === id))) return false;
  if (rule.methods && !rule.methods.includes(req.method)) return false;
  if (rule.paths && !rule.paths.some((p) => (p.endsWith('*') ? req.path.startsWith(p.slice(0, -1)) : p === req.path))) return false;
  if (rule.dataTags) {
    const listed = rule.dataTags;
    if (rule.effect === 'deny' ? !req.dataTags.some((tag) => listed.includes(tag)) : !req.dataTags.every((tag) => listed.includes(tag))) return false;
  }
  return true;
}

function refIsInbound(owner: string, rule: TenantPolicy['rules'][number]): boolean {
  return (rule.to?.tenant ?? owner) === owner;
}

function refDecide(world: World, from: Caller, to: TargetAgent, req: RequestFacts): { allow: boolean; code: string; rule?: string; sourceRule?: string } {
  const policyOf = (tenant: string): TenantPolicy => world.tenants.get(tenant) ?? { rules: [] };
  const firstMatch = (owner: string, inbound: boolean, effect: 'allow' | 'deny') =>
    policyOf(owner).rules.find((rule) => refIsInbound(owner, rule) === inbound && rule.effect === effect && refRuleMatches(owner, rule, from, to, req));
  const id = (owner: string, rule: { name: string } | undefined) => (rule ? `${owner}/${rule.name}` : undefined);
  const targetPolicy = policyOf(to.tenant);
  let result: { allow: boolean; code: string; rule?: string; sourceRule?: string };
  const deny = firstMatch(to.tenant, true, 'deny');
  const allow = firstMatch(to.tenant, true, 'allow');
  if (from.tenant === undefined || from.tenant === to.tenant) {
    const setting = from.tenant === undefined ? 'anonymous' : 'intraTenant';
    const fallback = targetPolicy[setting] ?? world.defaults[setting];
    if (deny) result = { allow: false, code: 'denied_by_rule', rule: id(to.tenant, deny) };
    else if (allow) result = { allow: true, code: 'allowed_by_rule', rule: id(to.tenant, allow) };
    else if (fallback === 'allow') result = { allow: true, code: 'allowed_by_default' };
    else result = { allow: false, code: setting === 'anonymous' ? 'anonymous_denied' : 'denied_by_default' };
  } else {
    const outDeny = firstMatch(from.tenant, false, 'deny');
    const outAllow = firstMatch(from.tenant, false, 'allow');
    if (deny) result = { allow: false, code: 'denied_by_rule', rule: id(to.tenant, deny) };
    else if (outDeny) result = { allow: false, code: 'denied_by_rule', rule: id(from.tenant, outDeny) };
    else if (allow && outAllow) result = { allow: true, code: 'allowed_by_rule', rule: id(to.tenant, allow), sourceRule: id(from.tenant, outAllow) };
    else if (!allow && !outAllow) result = { allow: false, code: 'no_consent' };
    else if (!allow) result = { allow: false, code: 'no_inbound_consent', sourceRule: id(from.tenant, outAllow) };
    else result = { allow: false, code: 'no_outbound_consent', rule: id(to.tenant, allow) };
  }
  if (result.allow && (targetPolicy.requireClearance ?? world.defaults.requireClearance)) {
    if (req.dataTags.some((tag) => tag !== 'public' && !to.clearances.includes(tag))) return { allow: false, code: 'not_cleared' };
  }
  return result;
}

const TENANTS = ['a', 'b', 'c'];
const AGENTS = ['x', 'y', 'z'];
const LABELS = ['l1', 'l2'];
const TAGS = ['t1', 't2', 'pii'];
const SKILLS = ['s1', 's2'];
const METHODS = ['GET', 'POST'];
const PATHS = ['/a', '/a/b', '/c', '/ab', '/abc', '/abc/d', '/abx', '/a/bc', '/', '/cd/e'];
// overlapping prefixes, ending inside a segment or at a '/', next to exact paths
const PATH_PATTERNS = ['/a', '/a*', '/a/*', '/c', '/*', '/ab', '/ab*', '/abc/*', '/abc', '/a/b*', '/c*', '/cd/*'];
const DATA_TAGS = ['pii', 'finance', 'public'];
/** Requests may carry a tag no rule names, and a tag twice. */
const REQUEST_DATA_TAGS = [...DATA_TAGS, 'phi'];

function identityPatterns(owner: string): string[] {
  const base = `spiffe://${TRUST_DOMAIN}`;
  return [
    ...AGENTS.map((agent) => `${base}/tenant/${owner}/agent/${agent}`),
    ...TENANTS.map((tenant) => `${base}/tenant/${tenant}/*`),
    `${base}/*`,
    `${base}/tenant/${owner}*`, // mid-segment: also matches tenant '<owner>x'
    `${base}/tenant/${owner}/agent/*`,
    `${base}/tenant/${owner}/agent/x*`,
  ];
}

const subset = <T>(values: readonly T[]) => fc.subarray([...values], { minLength: 1 });
/** Mostly left out, so that random rules match often enough to exercise every code. */
const maybe = <T>(arb: fc.Arbitrary<T>): fc.Arbitrary<T | undefined> =>
  fc.oneof({ weight: 3, arbitrary: fc.constant(undefined) }, { weight: 1, arbitrary: arb });
const effectArb = fc.constantFrom('allow' as const, 'deny' as const);

function ruleArb(owner: string): fc.Arbitrary<Record<string, unknown>> {
  const others = TENANTS.filter((tenant) => tenant !== owner);
  const common = {
    effect: fc.oneof({ weight: 3, arbitrary: fc.constant('allow' as const) }, { weight: 1, arbitrary: fc.constant('deny' as const) }),
    methods: maybe(subset(METHODS)),
    paths: maybe(subset(PATH_PATTERNS)),
    dataTags: maybe(fc.subarray(DATA_TAGS)),
    toAgents: maybe(fc.oneof(subset(AGENTS), fc.constant(['*']))),
    toTags: maybe(subset(TAGS)),
    toSkills: maybe(subset(SKILLS)),
  };
  const authenticatedFrom = {
    agents: maybe(fc.oneof(subset(AGENTS), fc.constant(['*']))),
    identities: maybe(subset(identityPatterns(owner))),
    labels: maybe(subset(LABELS)),
  };
  const shape = (fromTenant: fc.Arbitrary<string | undefined>, toTenant: fc.Arbitrary<string | undefined>, anonymous: boolean) =>
    fc.record({ ...common, ...authenticatedFrom, fromTenant, toTenant }).map(({ effect, methods, paths, dataTags, toAgents, toTags, toSkills, agents, identities, labels, fromTenant: ft, toTenant: tt }) => {
      const from = anonymous ? { anonymous: true } : prune({ tenant: ft, agents, identities, labels });
      const to = prune({ tenant: tt, agents: toAgents, tags: toTags, skills: toSkills });
      return prune({ effect, from, to, methods, paths, dataTags: denyNeedsTags(effect, dataTags) });
    });
  // One narrowing field only, so the rule is filed by it: identity prefixes, path prefixes, data tags.
  const narrow = (fromTenant: fc.Arbitrary<string | undefined>, toTenant: fc.Arbitrary<string | undefined>, anonymous: boolean) =>
    fc
      .record({
        effect: common.effect,
        fromTenant,
        toTenant,
        field: fc.oneof(
          ...(anonymous ? [] : [fc.record({ identities: subset(identityPatterns(owner)) })]),
          fc.record({ paths: subset(PATH_PATTERNS) }),
          fc.record({ dataTags: fc.subarray(DATA_TAGS) }),
        ),
      })
      .map(({ effect, fromTenant: ft, toTenant: tt, field }) => {
        const { identities, paths, dataTags } = field as { identities?: string[]; paths?: string[]; dataTags?: string[] };
        const from = anonymous ? { anonymous: true } : prune({ tenant: ft, identities });
        return prune({ effect, from, to: prune({ tenant: tt }), paths, dataTags: denyNeedsTags(effect, dataTags) });
      });
  const inboundFrom = fc.constantFrom(undefined, '*', ...TENANTS);
  const outboundTo = fc.constantFrom('*', ...others);
  return fc.oneof(
    { weight: 2, arbitrary: shape(inboundFrom, maybe(fc.constant(owner)), false) }, // inbound
    { weight: 2, arbitrary: shape(maybe(fc.constant(owner)), outboundTo, false) }, // outbound
    { weight: 1, arbitrary: shape(fc.constant(undefined), maybe(fc.constant(owner)), true) }, // anonymous
    { weight: 2, arbitrary: narrow(inboundFrom, maybe(fc.constant(owner)), false) },
    { weight: 1, arbitrary: narrow(maybe(fc.constant(owner)), outboundTo, false) },
    { weight: 1, arbitrary: narrow(fc.constant(undefined), maybe(fc.constant(owner)), true) },
  );
}

/** A deny rule with no data tags would never match (the schema refuses it): leave the field out instead. */
function denyNeedsTags(effect: string, dataTags: string[] | undefined): string[] | undefined {
  return effect === 'deny' && dataTags?.length === 0 ? undefined : dataTags;
}

function prune(value: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined && !(typeof v === 'object' && !Array.isArray(v) && Object.keys(v as object).length === 0)));
}

const worldArb: fc.Arbitrary<World> = fc
  .record({
    defaults: fc.record({ intraTenant: effectArb, anonymous: effectArb, requireClearance: fc.boolean() }),
    tenants: fc.tuple(
      ...TENANTS.map((tenant) =>
        fc.option(
          fc.record({
            intraTenant: maybe(effectArb),
            anonymous: maybe(effectArb),
            requireClearance: maybe(fc.boolean()),
            rules: fc.array(ruleArb(tenant), { maxLength: 16 }),
          }),
          { nil: undefined, freq: 6 },
        ),
      ),
    ),
  })
  .map(({ defaults, tenants }) => {
    const map = new Map<string, TenantPolicy>();
    tenants.forEach((raw, i) => {
      if (raw === undefined) return;
      const tenant = TENANTS[i]!;
      const rules = raw.rules.map((rule, n) => ({ name: `r${n}`, ...rule }));
      map.set(tenant, parseTenantPolicy(tenant, prune({ ...raw, rules })));
    });
    return { defaults, tenants: map };
  });

const callArb = fc.record({
  from: fc.oneof(
    { weight: 1, arbitrary: fc.constant(ANONYMOUS) },
    {
      weight: 6,
      arbitrary: fc
        .record({
          tenant: fc.constantFrom(...TENANTS),
          agent: fc.constantFrom(...AGENTS),
          labels: fc.subarray(LABELS),
          // no identity, its own, one in a tenant whose name extends it ('ax'), one in another trust domain
          id: fc.constantFrom(undefined, 'own', 'own', 'longer-tenant', 'other-domain'),
        })
        .map(({ tenant, agent, labels, id }): Caller => {
          const spiffeId =
            id === 'own'
              ? `spiffe://${TRUST_DOMAIN}/tenant/${tenant}/agent/${agent}`
              : id === 'longer-tenant'
                ? `spiffe://${TRUST_DOMAIN}/tenant/${tenant}x/agent/${agent}`
                : id === 'other-domain'
                  ? `spiffe://other.org/tenant/${tenant}/agent/${agent}`
                  : undefined;
          return { tenant, agent, labels, ...(spiffeId === undefined ? {} : { spiffeId }) };
        }),
    },
  ),
  to: fc.record({
    tenant: fc.constantFrom(...TENANTS),
    agent: fc.constantFrom(...AGENTS),
    tags: fc.subarray(TAGS),
    skills: fc.subarray(SKILLS).chain((ids) => fc.tuple(...ids.map((id) => fc.record({ id: fc.constant(id), tags: fc.subarray(TAGS) })))),
    clearances: fc.subarray(DATA_TAGS),
  }),
  req: fc.record({
    method: fc.constantFrom(...METHODS),
    path: fc.constantFrom(...PATHS),
    dataTags: fc.oneof(fc.subarray(REQUEST_DATA_TAGS), fc.array(fc.constantFrom(...REQUEST_DATA_TAGS), { maxLength: 3 })),
  }),
});

describe('property: compiled engine = linear-scan reference', () => {
  test('decide and explain agree with the reference on random rule sets and calls', () => {
    fc.assert(
      fc.property(worldArb, fc.array(callArb, { minLength: 1, maxLength: 25 }), (world, calls) => {
        const set = new PolicySet(world.defaults);
        for (const [tenant, policy] of world.tenants) set.setTenant(tenant, policy);
        for (const { from, to, req } of calls) {
          const decision = set.decide(from, to as TargetAgent, req);
          const expected = refDecide(world, from, to as TargetAgent, req);
          assertDecision(decision, expected);
          const explanation = set.explain(from, to as TargetAgent, req);
          assert.deepEqual(explanation.decision, decision);
          for (const step of explanation.steps) {
            if (step.kind === 'rule' && step.decided) assert.equal(step.matched, true, `${step.rule} decided but did not match`);
          }
        }
      }),
      { numRuns: 3000 },
    );
  });
});
