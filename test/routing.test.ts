import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { A2aCallError, inspectA2aCall, ResultIdWatcher, type LearnedIds } from '../src/routing/a2a.js';
import { routingSchema } from '../src/routing/config.js';
import { CapabilityRouter, type Eligibility } from '../src/routing/router.js';
import { AgentChanges } from '../src/registry/changes.js';
import { parseTenantPolicy, PolicySet } from '../src/tenancy/policy/index.js';
import { Endpoint } from '../src/registry/endpoint.js';
import type { AgentRuntime } from '../src/registry/types.js';
import { endpoint, MemoryRegistry, skill } from './support/memory-registry.js';

const body = (value: unknown) => Buffer.from(JSON.stringify(value));

describe('A2A calls to a tenant endpoint', () => {
  it('reads the method, version, text and continued task of v1.0 and v0.3 calls', () => {
    const v1 = inspectA2aCall(
      body({ jsonrpc: '2.0', id: 1, method: 'SendStreamingMessage', params: { message: { messageId: 'm', role: 'ROLE_USER', contextId: 'c1', parts: [{ text: 'hello' }, { data: { a: 1 } }, { text: 'world' }] } } }),
      100,
    );
    assert.deepEqual(v1, { kind: 'message', method: 'SendStreamingMessage', id: 1, version: '1.0', stream: true, text: 'hello\nworld', contextId: 'c1' });
    const v03 = inspectA2aCall(body({ jsonrpc: '2.0', id: 'x', method: 'message/send', params: { message: { kind: 'message', taskId: 't9', parts: [{ kind: 'text', text: 'a'.repeat(50) }] } } }), 10);
    assert.deepEqual(v03, { kind: 'message', method: 'message/send', id: 'x', version: '0.3', stream: false, text: 'a'.repeat(10), taskId: 't9' });
    assert.deepEqual(inspectA2aCall(body({ jsonrpc: '2.0', id: 2, method: 'tasks/resubscribe', params: { id: 't1' } }), 10), {
      kind: 'task',
      method: 'tasks/resubscribe',
      id: 2,
      version: '0.3',
      stream: true,
      taskId: 't1',
    });
  });

  it('refuses what is not a routable A2A call with the JSON-RPC code that says why', () => {
    const code = (raw: string | object) => {
      try {
        inspectA2aCall(typeof raw === 'string' ? Buffer.from(raw) : body(raw), 100);
      } catch (err) {
        assert.ok(err instanceof A2aCallError);
        return err.rpcCode;
      }
      assert.fail('accepted');
    };
    assert.equal(code('{not json'), -32700);
    assert.equal(code({ id: 1, method: 'SendMessage' }), -32600);
    assert.equal(code({ jsonrpc: '2.0', id: 1, method: 'DeleteEverything', params: {} }), -32601);
    assert.equal(code({ jsonrpc: '2.0', id: 1, method: 'toString', params: {} }), -32601, 'no prototype names');
    assert.equal(code({ jsonrpc: '2.0', id: 1, method: 'GetTask', params: {} }), -32602);
    assert.equal(code({ jsonrpc: '2.0', id: 1, method: 'SendMessage', params: { message: {} } }), -32602);
  });

  it('learns the task and context ids from a JSON answer and from the first events of a stream split anywhere', () => {
    const learned: LearnedIds[] = [];
    const json = new ResultIdWatcher(false, 1 << 16, (ids) => learned.push(ids));
    const answer = JSON.stringify({ jsonrpc: '2.0', id: 1, result: { task: { id: 't1', contextId: 'c1', status: {} } } });
    json.write(answer.slice(0, 10));
    json.write(Buffer.from(answer.slice(10)));
    json.end();
    assert.deepEqual(learned, [{ taskId: 't1', contextId: 'c1' }] as LearnedIds[]);

    learned.length = 0;
    const sse = new ResultIdWatcher(true, 1 << 16, (ids) => learned.push(ids));
    const stream =
      `data: ${JSON.stringify({ jsonrpc: '2.0', id: 1, result: { kind: 'status-update', contextId: 'c2' } })}\n\n` +
      `data: ${JSON.stringify({ jsonrpc: '2.0', id: 1, result: { statusUpdate: { taskId: 't2', contextId: 'c2' } } })}\n\n` +
      `data: ${JSON.stringify({ jsonrpc: '2.0', id: 1, result: { statusUpdate: { taskId: 'other', contextId: 'c9' } } })}\n\n`;
    for (let i = 0; i < stream.length; i += 7) sse.write(stream.slice(i, i + 7));
    sse.end();
    assert.deepEqual(learned, [{ contextId: 'c2', taskId: 't2' }] as LearnedIds[], 'the first ids, once');

    learned.length = 0;
    const capped = new ResultIdWatcher(false, 16, (ids) => learned.push(ids));
    capped.write(answer);
    capped.end();
    assert.deepEqual(learned, [], 'nothing learned past the byte limit, nothing buffered');
  });
});

// ---- the router, over a registry held in memory -------------------------------------------------

describe('capability router', () => {
  const config = routingSchema.parse({});

  it('picks the best match; agents within the tie margin are chosen by load, the rest follow as failover', () => {
    const registry = new MemoryRegistry();
    const busy = endpoint(true, 10);
    registry.add('t', 'refunds-a', [skill('refunds', 'refunds for double charges on invoices')], [busy]);
    registry.add('t', 'refunds-b', [skill('refunds', 'refunds for double charges on invoices')]);
    registry.add('t', 'invoices', [skill('invoices', 'copies of invoices')]);
    const router = new CapabilityRouter({ registry, config: () => config });
    router.syncAll();
    const counts = new Map<string, number>();
    for (let i = 0; i < 200; i++) {
      const choice = router.route('t', { text: 'refund of a double charge' }, () => undefined);
      assert.ok(choice.agent);
      counts.set(choice.agent.name, (counts.get(choice.agent.name) ?? 0) + 1);
      if (choice.agent.name === 'refunds-b') assert.equal(choice.alternatives[0]?.name, 'refunds-a');
    }
    // Two candidates: power of two choices always compares both, so the idle one always wins.
    assert.deepEqual([...counts], [['refunds-b', 200]]);
    busy.inflight = 0;
    const shares = new Set<string>();
    for (let i = 0; i < 200; i++) shares.add(router.route('t', { text: 'refund of a double charge' }, () => undefined).agent!.name);
    assert.deepEqual([...shares].sort(), ['refunds-a', 'refunds-b'], 'equal load: both get traffic');
  });

  it('never chooses what the caller may not reach or what has no healthy endpoint, and says so in explain', () => {
    const registry = new MemoryRegistry();
    registry.add('t', 'secret', [skill('payroll', 'payroll and salary questions')]);
    registry.add('t', 'down', [skill('payroll', 'payroll and salary questions')], [endpoint(false)]);
    const router = new CapabilityRouter({ registry, config: () => config });
    router.syncAll();
    const policy = (agent: AgentRuntime) => (agent.name === 'secret' ? 'policy: denied_by_rule' : undefined);
    const result = router.route('t', { text: 'salary question' }, policy);
    assert.equal(result.agent, undefined);
    assert.equal(result.agent === undefined && result.reason, 'not_eligible');
    const { considered } = router.explain('t', { text: 'salary question' }, policy);
    assert.deepEqual(
      new Map(considered.map((c) => [c.agent, c.excluded])),
      new Map([
        ['t/secret', 'policy: denied_by_rule'],
        ['t/down', 'no healthy endpoint'],
      ]),
    );
  });

  it('below the confidence threshold: the tenant default agent, else no route with the closest skills', () => {
    const registry = new MemoryRegistry();
    registry.add('t', 'weather', [skill('forecast', 'weather forecast rain wind temperature')]);
    registry.add('t', 'helpdesk', [skill('anything', 'general questions')]);
    const router = new CapabilityRouter({ registry, config: () => config });
    router.syncAll();
    const vague = { text: 'rain banana spaceship quantum poetry' };
    const none = router.route('t', vague, () => undefined);
    assert.equal(none.agent, undefined);
    assert.equal(none.agent === undefined && none.reason, 'low_confidence');
    assert.equal(none.agent === undefined && none.closest[0]?.agent, 't/weather');

    registry.tenants.get('t')!.spec = { routing: { defaultAgent: 'helpdesk' } };
    const fallback = router.route('t', vague, () => undefined);
    assert.equal(fallback.agent?.name, 'helpdesk');
    assert.equal(fallback.agent && fallback.via, 'default-agent');
  });

  it('tags address a capability: only agents with every tag, the least loaded first; other tenants never', () => {
    const registry = new MemoryRegistry();
    registry.add('t', 'fast', [skill('quote', 'price quotes', ['finance'])], [endpoint(true, 0)], ['low-latency']);
    registry.add('t', 'slow', [skill('quote', 'price quotes', ['finance'])], [endpoint(true, 5)]);
    registry.add('other', 'fast', [skill('quote', 'price quotes', ['finance'])], [endpoint(true, 0)], ['low-latency']);
    const router = new CapabilityRouter({ registry, config: () => config });
    router.syncAll();
    assert.equal(router.route('t', { tags: ['finance', 'low-latency'] }, () => undefined).agent?.key, 't/fast');
    const both = router.route('t', { tags: ['finance'] }, () => undefined);
    assert.equal(both.agent?.key, 't/fast');
    assert.deepEqual(both.agent && both.alternatives.map((a) => a.key), ['t/slow']);
    assert.equal(router.route('t', { tags: ['gdpr'] }, () => undefined).agent, undefined);
  });

  it('follows the registry: a removed agent or tenant is no longer routed to', () => {
    const registry = new MemoryRegistry();
    registry.add('t', 'a', [skill('s', 'translate documents')]);
    const router = new CapabilityRouter({ registry, config: () => config });
    router.syncAll();
    assert.equal(router.route('t', { text: 'translate' }, () => undefined).agent?.name, 'a');
    registry.agents.delete('t/a');
    router.syncAgent('t', 'a');
    assert.equal(router.route('t', { text: 'translate' }, () => undefined).agent, undefined);
  });
});

describe('eligibility verdicts kept across decisions', () => {
  const config = routingSchema.parse({});
  const healthCheck = () => ({ enabled: true, path: '/', intervalMs: 1000, timeoutMs: 1000, healthyThreshold: 1, unhealthyThreshold: 1 });

  /** A router over `primary` (the best match for "tax returns") and `backup`, with an epoch the test moves. */
  function setup() {
    const registry = new MemoryRegistry();
    const epoch = { value: 0 };
    registry.add('t', 'primary', [skill('tax', 'files tax returns and computes tax owed')]);
    registry.add('t', 'backup', [skill('books', 'keeps the books, helps with tax returns now and then')]);
    const router = new CapabilityRouter({ registry, config: () => config, eligibilityEpoch: () => epoch.value });
    router.syncAll();
    const asked: string[] = [];
    /** An eligibility check refusing the agents named in `denied` (read at each call), recording what it is asked. */
    const check = (denied: Set<string>): Eligibility => (agent) => {
      asked.push(agent.name);
      return denied.has(agent.name) ? 'policy: denied_by_rule' : undefined;
    };
    const tax = { text: 'tax returns' };
    return { registry, router, epoch, asked, check, tax };
  }

  it('asks once per agent and context until the epoch moves, then asks again and follows the new answer', () => {
    const { router, epoch, asked, check, tax } = setup();
    const denied = new Set<string>();
    assert.equal(router.route('t', tax, check(denied), { key: 'alice' }).agent?.name, 'primary');
    assert.deepEqual(asked.sort(), ['backup', 'primary']);
    asked.length = 0;
    for (let i = 0; i < 5; i++) assert.equal(router.route('t', tax, check(denied), { key: 'alice' }).agent?.name, 'primary');
    assert.deepEqual(asked, [], 'kept verdicts are not asked again');

    // The policy changes: until the epoch moves, the kept verdict stands (the caller wires every change to it).
    denied.add('primary');
    epoch.value++;
    const after = router.route('t', tax, check(denied), { key: 'alice' });
    assert.equal(after.agent?.name, 'backup');
    assert.deepEqual(asked.sort(), ['backup', 'primary']);
    const refused = router.route('t', tax, check(denied), { key: 'alice' });
    assert.equal(refused.agent?.name, 'backup', 'a kept refusal still refuses');
    assert.deepEqual(
      router.explain('t', tax, check(denied)).considered.map((candidate) => [candidate.agent, candidate.excluded]),
      [
        ['t/primary', 'policy: denied_by_rule'],
        ['t/backup', undefined],
      ],
    );
  });

  it('keeps contexts apart, and keeps nothing without a context', () => {
    const { router, asked, check, tax } = setup();
    assert.equal(router.route('t', tax, check(new Set()), { key: 'alice' }).agent?.name, 'primary');
    assert.equal(router.route('t', tax, check(new Set(['primary'])), { key: 'mallory' }).agent?.name, 'backup', "alice's verdicts are not mallory's");
    assert.equal(router.route('t', tax, check(new Set()), { key: 'alice' }).agent?.name, 'primary');
    const refusal = router.route('t', tax, check(new Set(['primary', 'backup'])), { key: 'eve' });
    assert.equal(refusal.agent === undefined && refusal.reason, 'not_eligible');
    asked.length = 0;
    for (let i = 0; i < 3; i++) router.route('t', tax, check(new Set()));
    assert.equal(asked.length, 6, 'no context: every decision asks');
  });

  it('a changed index is never read with slots of before (an agent replaced by another in its slot)', () => {
    const { registry, router, check, tax } = setup();
    assert.equal(router.route('t', tax, check(new Set(['intruder'])), { key: 'alice' }).agent?.name, 'primary');
    // primary leaves and intruder takes its place in the index; the registry's epoch does not move here.
    registry.agents.delete('t/primary');
    router.syncAgent('t', 'primary');
    registry.add('t', 'intruder', [skill('tax', 'files tax returns and computes tax owed')]);
    router.syncAgent('t', 'intruder');
    const choice = router.route('t', tax, check(new Set(['intruder'])), { key: 'alice' });
    assert.equal(choice.agent?.name, 'backup', 'the refused newcomer was asked about, not taken for primary');
  });

  it("an agent's change (its health, its runtime) drops its verdicts alone, in every context", () => {
    const registry = new MemoryRegistry();
    const changes = new AgentChanges();
    const flaky = new Endpoint('http://127.0.0.1:1', healthCheck, () => changes.record('t/primary'));
    registry.add('t', 'primary', [skill('tax', 'files tax returns and computes tax owed')], [flaky]);
    registry.add('t', 'backup', [skill('books', 'keeps the books, helps with tax returns now and then')]);
    const router = new CapabilityRouter({ registry, config: () => config, eligibilityEpoch: () => 0, agentChanges: changes });
    router.syncAll();
    const tax = { text: 'tax returns' };
    const asked: string[] = [];
    const check: Eligibility = (agent) => {
      asked.push(agent.name);
      return undefined;
    };
    for (const context of ['alice', 'bob']) assert.equal(router.route('t', tax, check, { key: context }).agent?.name, 'primary');
    asked.length = 0;
    assert.equal(flaky.recordFailure('connect ECONNREFUSED'), true);
    assert.equal(router.route('t', tax, check, { key: 'alice' }).agent?.name, 'backup');
    assert.deepEqual(asked, [], 'an unhealthy agent is refused before the policy is asked; backup was kept');
    assert.equal(router.route('t', tax, check, { key: 'bob' }).agent?.name, 'backup', "bob's verdict of primary was dropped too");
    flaky.healthy = true;
    assert.equal(router.route('t', tax, check, { key: 'alice' }).agent?.name, 'primary');
    assert.deepEqual(asked, ['primary'], 'only the changed agent is asked again');

    // A new runtime (a replaced record or card) with the same skills: the index keeps its slot.
    const replaced = { ...registry.agents.get('t/primary')!.runtime, clearances: ['pii'] };
    registry.agents.get('t/primary')!.runtime = replaced;
    changes.record('t/primary');
    const choice = router.route('t', tax, check, { key: 'alice' });
    assert.equal(choice.agent, replaced, 'the decision carries the new runtime, not the kept one');
  });

  it("a policy change drops the verdicts of the contexts it concerns only: the target's tenant and the caller's", () => {
    const registry = new MemoryRegistry();
    for (const tenant of ['t', 'u']) {
      registry.add(tenant, 'primary', [skill('tax', 'files tax returns and computes tax owed')]);
      registry.add(tenant, 'backup', [skill('books', 'keeps the books, helps with tax returns now and then')]);
    }
    const policy = new PolicySet();
    const router = new CapabilityRouter({ registry, config: () => config, eligibilityEpoch: (tenant, caller) => policy.versionFor(tenant, caller) });
    router.syncAll();
    const asked: string[] = [];
    const check: Eligibility = (agent) => {
      asked.push(agent.key);
      return undefined;
    };
    const tax = { text: 'tax returns' };
    // alice (of t) calls into t; carol (of s) calls into u.
    const decide = () => {
      router.route('t', tax, check, { key: 'alice', callerTenant: 't' });
      router.route('u', tax, check, { key: 'carol', callerTenant: 's' });
    };
    decide();
    asked.length = 0;
    decide();
    assert.deepEqual(asked, []);
    policy.setTenant('t', parseTenantPolicy('t', { rules: [] }));
    decide();
    assert.deepEqual(asked.sort(), ['t/backup', 't/primary'], "t's policy: alice's verdicts only");
    asked.length = 0;
    policy.setTenant('s', parseTenantPolicy('s', { rules: [] }));
    decide();
    assert.deepEqual(asked.sort(), ['u/backup', 'u/primary'], "the caller's tenant s: carol's verdicts in u only");
    asked.length = 0;
    policy.setDefaults({ intraTenant: 'allow' });
    decide();
    assert.equal(asked.length, 4, 'the defaults: every context');
  });

  it('a feed that overran (more changes than it holds) drops every verdict', () => {
    const registry = new MemoryRegistry();
    const changes = new AgentChanges(4);
    registry.add('t', 'primary', [skill('tax', 'files tax returns and computes tax owed')]);
    registry.add('t', 'backup', [skill('books', 'keeps the books, helps with tax returns now and then')]);
    const router = new CapabilityRouter({ registry, config: () => config, eligibilityEpoch: () => 0, agentChanges: changes });
    router.syncAll();
    const asked: string[] = [];
    const check: Eligibility = (agent) => {
      asked.push(agent.name);
      return undefined;
    };
    router.route('t', { text: 'tax returns' }, check, { key: 'alice' });
    asked.length = 0;
    for (let i = 0; i < 5; i++) changes.record('t/elsewhere');
    router.route('t', { text: 'tax returns' }, check, { key: 'alice' });
    assert.deepEqual(asked.sort(), ['backup', 'primary']);
  });
});
