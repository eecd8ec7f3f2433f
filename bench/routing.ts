// The cost of one routing decision at 10,000 agents x 10 skills (100,000 skills), how soon a registry
// change reaches routing through a real gateway, and the memory of the registry, router and index.
//
//   node --import tsx bench/routing.ts [--agents 10000] [--queries 20000] [--rounds 3] [--seed 7]
//     [--gateway-agents 10000] [--changes 50] [--single] [--no-gateway] [--no-decision]
//
// 1. Decision, in this process: a registry held in memory (RouterRegistry, as test/routing.test.ts)
//    of --agents agents, each with the corpus's 10 skills (bench/skill-corpus.ts, as
//    bench/capabilities.ts) and 2 real Endpoint objects (src/registry/endpoint.ts) whose load was fed
//    through a real Balancer (answers of 2-80 ms, 0-3 requests in flight; 1% of endpoints unhealthy,
//    so some agents have none); a CapabilityRouter over it with the Balancer's loadOf, as
//    src/gateway.ts wires them. One decision = router.route(tenant, {text}, eligible, context) +
//    balancer.pick(chosen agent), candidates checked by the real policy engine (PolicySet.decide, as
//    the gateway's candidatePolicyCheck; a deny rule refuses the 2% of agents tagged restricted),
//    the caller's context built per decision as the gateway does. Timed one at a time in wall time
//    and in process CPU time (which leaves out waits for a core on this shared machine), after a
//    warm-up; best of --rounds rounds by p99. Three kinds of decision, in loops of their own: with
//    the verdicts kept (the steady state between changes; the 4,096 queries were each decided once
//    before), each right after one agent changed (a random agent is listed in the change feed before
//    every decision, as when an endpoint's health flips: its verdicts are dropped in every context),
//    and right after a policy change (the eligibility epoch moves before every decision, so every
//    candidate is asked again: the worst case, and what every decision cost before verdicts were
//    kept). In the same rounds, rank() alone (limit = routing.intent.maxCandidates, no eligibility
//    filter) for comparison, and how many times a decision called the eligibility check.
//    One tenant holding every agent (the worst case), then the same agents over 100 tenants.
//    Memory: JS heap + typed-array buffers after a full gc, of the registry objects (records with
//    their own copy of the skills, runtimes, endpoints) and of the router with its index.
//    Also router.syncAgent of an agent whose 10 skills changed (what a registry change costs routing).
// 2. Visibility, through a real gateway (in-process, test/support/gateway.ts, SQLite state, one local
//    upstream for the endpoints; health checks off): --gateway-agents agents declared with their
//    skills in config, in one tenant. Each change is an Admin API write; after it returns, the bench
//    asks until routing shows the change, back to back: created agents with a new unique word in a
//    skill name (GET /admin/v1/route/explain?q=<word> names it), deleted agents (it no longer does),
//    and created agents with a new unique tag reached by a real request (GET
//    /capabilities/<tenant>/<tag>/... answered by the upstream with x-dmsc-routed-to naming it).
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import { parseArgs } from 'node:util';
import v8 from 'node:v8';
import vm from 'node:vm';
import { configSchema } from '../src/config/schema.js';
import { AgentChanges } from '../src/registry/changes.js';
import { Endpoint } from '../src/registry/endpoint.js';
import type { AgentRuntime, AgentView, SkillSummary } from '../src/registry/types.js';
import { Balancer } from '../src/routing/balancer.js';
import { CapabilityRouter, type Eligibility, type RouterRegistry } from '../src/routing/router.js';
import { PolicySet, type Caller, type TargetAgent } from '../src/tenancy/policy/index.js';
import type { AgentRecord, TenantRecord } from '../src/store/types.js';
import { startTestGateway } from '../test/support/gateway.js';
import { agentRuntime } from '../test/support/memory-registry.js';
import { percentile, skillCorpus, type CorpusAgent, type CorpusQuery } from './skill-corpus.js';

const { values: options } = parseArgs({
  options: {
    agents: { type: 'string', default: '10000' },
    queries: { type: 'string', default: '20000' },
    rounds: { type: 'string', default: '3' },
    seed: { type: 'string', default: '7' },
    'gateway-agents': { type: 'string', default: '10000' },
    changes: { type: 'string', default: '50' },
    single: { type: 'boolean', default: false },
    'no-gateway': { type: 'boolean', default: false },
    'no-decision': { type: 'boolean', default: false },
  },
});
const AGENTS = Number(options.agents);
const QUERIES = Number(options.queries);
const ROUNDS = Number(options.rounds);
const GATEWAY_AGENTS = Number(options['gateway-agents']);
const CHANGES = Number(options.changes);
const TENANTS_SPREAD = 100;
const ENDPOINTS_PER_AGENT = 2;
const SYNCS = 500;

v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc') as () => void;
const log = (line: string) => process.stderr.write(`[routing] ${line}\n`);

const defaults = configSchema.parse({});
const corpus = skillCorpus({ agents: AGENTS, words: 5_000, seed: Number(options.seed) });
const { random, pick } = corpus;

/** JS heap plus typed-array backing stores, after a full gc. */
function memoryMb(): number {
  gc();
  gc();
  const { heapUsed, arrayBuffers } = process.memoryUsage();
  return (heapUsed + arrayBuffers) / 1024 / 1024;
}

// ---- 1. the decision, over a registry held in memory ----------------------------------------

interface HeldAgent {
  record: AgentRecord;
  skills: SkillSummary[];
  endpoints: Endpoint[];
  runtime: AgentRuntime;
}

/** The registry's read side as the router sees it, held in memory (no store, no health checks). */
class MemoryRegistry implements RouterRegistry {
  private readonly agents = new Map<string, HeldAgent>();
  private readonly byTenant = new Map<string, HeldAgent[]>();
  private readonly tenants = new Map<string, TenantRecord>();

  add(tenant: string, name: string, skills: SkillSummary[], tags: string[], endpointUrls: string[]): AgentRuntime {
    const at = new Date().toISOString();
    if (!this.tenants.has(tenant)) this.tenants.set(tenant, { name: tenant, source: 'api', createdAt: at, updatedAt: at });
    const record: AgentRecord = { tenant, name, endpoints: endpointUrls, tags, settings: { skills }, source: 'api', createdAt: at, updatedAt: at };
    const endpoints = endpointUrls.map((url) => new Endpoint(url, () => defaults.healthCheck));
    const runtime = agentRuntime(tenant, name, skills, endpoints, tags);
    const held = { record, skills, endpoints, runtime };
    this.agents.set(runtime.key, held);
    const list = this.byTenant.get(tenant) ?? [];
    list.push(held);
    this.byTenant.set(tenant, list);
    return runtime;
  }

  setSkills(tenant: string, name: string, skills: SkillSummary[]): void {
    const held = this.agents.get(`${tenant}/${name}`)!;
    held.record = { ...held.record, settings: { skills } };
    held.skills = skills;
  }

  findAgent(tenant: string, agent: string): AgentRuntime | undefined {
    return this.agents.get(`${tenant}/${agent}`)?.runtime;
  }

  findAgentByKey(key: string): AgentRuntime | undefined {
    return this.agents.get(key)?.runtime;
  }

  getAgent(tenant: string, agent: string): AgentView | undefined {
    const held = this.agents.get(`${tenant}/${agent}`);
    return held && { ...held.record, endpointStatus: held.endpoints.map((endpoint) => endpoint.status()), skills: held.skills };
  }

  getTenant(name: string): TenantRecord | undefined {
    return this.tenants.get(name);
  }

  listTenants(): TenantRecord[] {
    return [...this.tenants.values()];
  }

  listAgents(tenant: string): AgentView[] {
    return (this.byTenant.get(tenant) ?? []).map((held) => this.getAgent(tenant, held.record.name)!);
  }
}

/** The registry's own copy of an agent's skills, strings included (as read from its store). */
const ownSkills = (agent: CorpusAgent): SkillSummary[] =>
  (JSON.parse(JSON.stringify(agent.skills)) as CorpusAgent['skills']).map((skill) => ({
    id: skill.id,
    name: skill.name ?? skill.id,
    ...(skill.description !== undefined ? { description: skill.description } : {}),
    tags: [...(skill.tags ?? [])],
    ...(skill.examples !== undefined ? { examples: [...skill.examples] } : {}),
  }));

interface DecisionRow {
  label: string;
  registryMb: number;
  routerMb: number;
  buildMs: number;
  decision: Float64Array;
  decisionCpu: Float64Array;
  /** Decisions right after a policy change: every candidate's eligibility asked again. */
  changed: Float64Array;
  /** Decisions each right after one agent's change. */
  agentChanged: Float64Array;
  rank: Float64Array;
  /** Calls of the eligibility callback per decision (the last round), verdicts kept and right after a change. */
  checks: Float64Array;
  changedChecks: Float64Array;
  routed: number;
  targetChosen: number;
  noRoute: Record<string, number>;
  sync: Float64Array;
}

function decisionRun(label: string, tenantOf: (agent: number) => string): DecisionRow {
  corpus.agents.forEach((agent, i) => (agent.tenant = tenantOf(i)));
  const queries: CorpusQuery[] = Array.from({ length: 4096 }, () => corpus.queryFor(pick(corpus.agents)));
  const base = memoryMb();

  const registry = new MemoryRegistry();
  const balancer = new Balancer(() => defaults.balancing);
  corpus.agents.forEach((agent, i) => {
    const urls = Array.from({ length: ENDPOINTS_PER_AGENT }, (_, e) => `http://10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}:${7000 + e}`);
    const runtime = registry.add(agent.tenant, agent.name, ownSkills(agent), [...agent.tags], urls);
    for (const endpoint of runtime.endpoints) {
      // Load as the data plane leaves it: a few answers observed, some requests in flight.
      for (let n = 0; n < 3; n++) balancer.answered(runtime, endpoint, 200, 2 + random() * 78, undefined);
      endpoint.inflight = Math.floor(random() * 4);
      if (random() < 0.01) endpoint.healthy = false;
    }
  });
  const registryMb = memoryMb() - base;

  const started = performance.now();
  // As the gateway wires them: the policies' version, and the registry's feed of changed agents.
  let epoch = 0;
  const changes = new AgentChanges();
  const router = new CapabilityRouter({
    registry,
    config: () => defaults.routing,
    loadOf: (agent) => balancer.loadOf(agent) ?? Number.POSITIVE_INFINITY,
    eligibilityEpoch: () => epoch,
    agentChanges: changes,
  });
  router.syncAll();
  const buildMs = performance.now() - started;
  const routerMb = memoryMb() - base - registryMb;

  // The real policy engine, as the gateway asks it about each candidate (src/tenancy/stages.ts
  // candidatePolicyCheck): every tenant lets its agents call each other's A2A interface, except the
  // 2 % of agents tagged `restricted`, which a deny rule protects.
  const denied = new Set(corpus.agents.filter(() => random() < 0.02).map((agent) => `${agent.tenant}/${agent.name}`));
  const policy = new PolicySet();
  for (const tenant of registry.listTenants()) {
    policy.setTenant(tenant.name, {
      intraTenant: 'deny',
      rules: [
        { name: 'agents-a2a', effect: 'allow', from: { agents: ['*'] }, methods: ['POST'], paths: ['/a2a', '/a2a/*'] },
        { name: 'restricted', effect: 'deny', to: { tags: ['restricted'] } },
      ],
    });
  }
  const targets = new WeakMap<AgentRuntime, TargetAgent>();
  const targetOf = (agent: AgentRuntime): TargetAgent => {
    let target = targets.get(agent);
    if (!target) {
      const tags = denied.has(agent.key) ? [...agent.tags, 'restricted'] : agent.tags;
      targets.set(agent, (target = { tenant: agent.tenant, agent: agent.name, tags, skills: agent.skills, clearances: agent.clearances }));
    }
    return target;
  };
  const request = { method: 'POST', path: '/a2a', dataTags: [] as string[] };
  const callers = new Map<string, Caller>();
  let asked = 0;
  /** The eligibility check and its context, as src/tenancy/stages.ts candidatePolicyCheck builds them per request. */
  const eligibleFor = (tenant: string): { eligible: Eligibility; context: string } => {
    let caller = callers.get(tenant);
    if (!caller) callers.set(tenant, (caller = { tenant, agent: 'frontdesk', spiffeId: `spiffe://dmsc.test/tenant/${tenant}/agent/frontdesk`, labels: [] }));
    const from = caller;
    return {
      eligible: (agent) => {
        asked++;
        const decision = policy.decide(from, targetOf(agent), request);
        return decision.allow ? undefined : `policy: ${decision.code}`;
      },
      context: `${JSON.stringify([from.tenant, from.agent, from.spiffeId, from.labels, request.method, request.dataTags])}\na2a 1.0`,
    };
  };
  const limit = defaults.routing.intent.maxCandidates;

  /**
   * One decision; `change`: what changed just before it — 'policy': every verdict is asked again;
   * 'agent': one agent (at random) changed, as when an endpoint's health flips.
   */
  const decide = (query: CorpusQuery, change?: 'policy' | 'agent') => {
    if (change === 'policy') epoch++;
    else if (change === 'agent') {
      const changed = pick(corpus.agents);
      changes.record(`${changed.tenant}/${changed.name}`);
    }
    const { eligible, context } = eligibleFor(query.tenant);
    const choice = router.route(query.tenant, { text: query.text }, eligible, { key: context, callerTenant: query.tenant });
    return choice.agent ? (balancer.pick(choice.agent) ? choice : undefined) : choice;
  };
  for (let i = 0; i < 5_000; i++) {
    const query = queries[i % queries.length]!;
    decide(query, i % 2 === 0 ? 'policy' : undefined);
    router.index.rank(query.tenant, { text: query.text }, { limit });
  }

  let decision: Float64Array | undefined;
  let decisionCpu: Float64Array | undefined;
  let changed: Float64Array | undefined;
  let agentChanged: Float64Array | undefined;
  let rank: Float64Array | undefined;
  let checks: Float64Array | undefined;
  let changedChecks: Float64Array | undefined;
  let routed = 0;
  let targetChosen = 0;
  const noRoute: Record<string, number> = {};
  /** Times QUERIES decisions; returns wall times, CPU times and eligibility checks, each sorted. */
  const timeDecisions = (change: 'policy' | 'agent' | undefined, count: (choice: ReturnType<typeof decide>, query: CorpusQuery) => void) => {
    const wall = new Float64Array(QUERIES);
    const cpuTimes = new Float64Array(QUERIES);
    const asks = new Float64Array(QUERIES);
    for (let i = 0; i < QUERIES; i++) {
      const query = queries[i % queries.length]!;
      const askedBefore = asked;
      const cpu = process.cpuUsage();
      const t0 = process.hrtime.bigint();
      const choice = decide(query, change);
      wall[i] = Number(process.hrtime.bigint() - t0) / 1000;
      const used = process.cpuUsage(cpu);
      cpuTimes[i] = used.user + used.system;
      asks[i] = asked - askedBefore;
      count(choice, query);
    }
    for (const samples of [wall, cpuTimes, asks]) samples.sort();
    return { wall, cpuTimes, asks };
  };
  for (let round = 0; round < ROUNDS; round++) {
    // Right after a policy change: every decision asks about its candidates again (the epoch moves each time).
    const fresh = timeDecisions('policy', () => {});
    // Verdicts kept: the steady state between changes, once the queries' candidates were asked about.
    for (const query of queries) decide(query);
    routed = 0;
    targetChosen = 0;
    for (const key of Object.keys(noRoute)) delete noRoute[key];
    const kept = timeDecisions(undefined, (choice, query) => {
      if (choice?.agent) {
        routed++;
        if (choice.agent.key === query.target) targetChosen++;
      } else {
        const reason = choice?.reason ?? 'no endpoint';
        noRoute[reason] = (noRoute[reason] ?? 0) + 1;
      }
    });
    // One agent changes before every decision (its verdicts dropped in every context).
    const churn = timeDecisions('agent', () => {});
    // Apart from the decisions, so that neither runs on caches the other warmed for the same query.
    const rankWall = new Float64Array(QUERIES);
    for (let i = 0; i < QUERIES; i++) {
      const query = queries[i % queries.length]!;
      const t0 = process.hrtime.bigint();
      router.index.rank(query.tenant, { text: query.text }, { limit });
      rankWall[i] = Number(process.hrtime.bigint() - t0) / 1000;
    }
    rankWall.sort();
    checks = kept.asks;
    changedChecks = fresh.asks;
    if (!decision || percentile(kept.wall, 99) < percentile(decision, 99)) decision = kept.wall;
    if (!decisionCpu || percentile(kept.cpuTimes, 99) < percentile(decisionCpu, 99)) decisionCpu = kept.cpuTimes;
    if (!changed || percentile(fresh.wall, 99) < percentile(changed, 99)) changed = fresh.wall;
    if (!agentChanged || percentile(churn.wall, 99) < percentile(agentChanged, 99)) agentChanged = churn.wall;
    if (!rank || percentile(rankWall, 99) < percentile(rank, 99)) rank = rankWall;
  }

  // A registry change as routing sees it: the agent's skills changed, the router re-reads them.
  const sync = new Float64Array(SYNCS);
  for (let i = 0; i < SYNCS; i++) {
    const n = Math.floor(random() * corpus.agents.length);
    const agent = corpus.agents[n]!;
    registry.setSkills(agent.tenant, agent.name, ownSkills({ ...agent, skills: corpus.agentSkills(n, i + 1) }));
    const t0 = process.hrtime.bigint();
    router.syncAgent(agent.tenant, agent.name);
    sync[i] = Number(process.hrtime.bigint() - t0) / 1000;
  }
  sync.sort();
  return {
    label,
    registryMb,
    routerMb,
    buildMs,
    decision: decision!,
    decisionCpu: decisionCpu!,
    changed: changed!,
    agentChanged: agentChanged!,
    rank: rank!,
    checks: checks!,
    changedChecks: changedChecks!,
    routed,
    targetChosen,
    noRoute,
    sync,
  };
}

// ---- 2. visibility of registry changes, through a real gateway -----------------------------

interface VisibilityRow {
  label: string;
  /** The Admin API write, request to response. */
  write: Float64Array;
  /** From the write's response until routing showed the change (the answer that first did). */
  visible: Float64Array;
  /** From sending the write until routing showed the change. */
  total: Float64Array;
  /** How many reads it took (1: the first read after the write already saw it). */
  maxReads: number;
}

async function visibilityRun(): Promise<{ rows: VisibilityRow[]; agents: number; startMs: number }> {
  let upstreamHits = 0;
  const upstream = http.createServer((req, res) => {
    upstreamHits++;
    req.resume();
    // No Agent Cards here: the skills are the ones declared in config or through the Admin API.
    if (req.url?.includes('/.well-known/')) res.writeHead(404).end();
    else res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}');
  });
  await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve));
  const upstreamUrl = `http://127.0.0.1:${(upstream.address() as AddressInfo).port}`;
  const tenant = 'big';
  const agents = corpus.agents.slice(0, GATEWAY_AGENTS).map((agent, i) => ({
    name: agent.name,
    endpoints: Array.from({ length: ENDPOINTS_PER_AGENT }, (_, e) => `${upstreamUrl}/agent-${i}/replica-${e}`),
    tags: agent.tags,
    skills: agent.skills.map((skill) => ({ ...skill, tags: skill.tags ?? [] })),
  }));
  const started = performance.now();
  const gw = await startTestGateway({ healthCheck: { enabled: false }, tenants: [{ name: tenant, agents }] });
  const startMs = performance.now() - started;
  try {
    // Startup fetches every agent's card (404 here): let that settle before measuring.
    for (let settled = 0; settled < 3; ) {
      const before = upstreamHits;
      await new Promise((resolve) => setTimeout(resolve, 200));
      settled = upstreamHits === before ? settled + 1 : 0;
    }
    const explainAgent = async (word: string): Promise<string | null> => {
      const res = await gw.admin('GET', `/admin/v1/route/explain?tenant=${tenant}&q=${word}`);
      if (res.status !== 200) throw new Error(`explain: ${res.status} ${JSON.stringify(res.body)}`);
      return res.body.decision.agent as string | null;
    };
    const viaTag = async (tag: string): Promise<string | null> => {
      const res = await fetch(`${gw.plainUrl}/capabilities/${tenant}/${tag}/ping`);
      await res.arrayBuffer();
      return res.status === 200 ? res.headers.get('x-dmsc-routed-to') : null;
    };
    const measure = async (label: string, change: (n: number) => Promise<{ status: number; body: unknown }>, visible: (n: number) => Promise<boolean>): Promise<VisibilityRow> => {
      const write = new Float64Array(CHANGES);
      const seen = new Float64Array(CHANGES);
      const total = new Float64Array(CHANGES);
      let maxReads = 0;
      for (let n = 0; n < CHANGES; n++) {
        const t0 = performance.now();
        const res = await change(n);
        const t1 = performance.now();
        if (res.status >= 300) throw new Error(`${label}: ${res.status} ${JSON.stringify(res.body)}`);
        let reads = 0;
        for (;;) {
          reads++;
          if (await visible(n)) break;
          if (performance.now() - t1 > 10_000) throw new Error(`${label}: change ${n} not visible after 10 s`);
        }
        write[n] = t1 - t0;
        seen[n] = performance.now() - t1;
        total[n] = performance.now() - t0;
        maxReads = Math.max(maxReads, reads);
      }
      return { label, write: write.sort(), visible: seen.sort(), total: total.sort(), maxReads };
    };
    const word = (n: number) => `novel${n}word`;
    const skillWith = (n: number, extra: { name: string; tags: string[] }) => ({ id: `fresh-skill-${n}`, description: 'answers questions about one new subject', ...extra });
    const create = (prefix: string, skill: (n: number) => ReturnType<typeof skillWith>) => (n: number) =>
      gw.admin('POST', `/admin/v1/tenants/${tenant}/agents`, { name: `${prefix}-${n}`, endpoints: [`${upstreamUrl}/${prefix}-${n}`], skills: [skill(n)] });
    const rows: VisibilityRow[] = [];
    rows.push(await measure('agent created (explain, new word)', create('fresh', (n) => skillWith(n, { name: `${word(n)} lookup`, tags: [] })), async (n) => (await explainAgent(word(n))) === `${tenant}/fresh-${n}`));
    rows.push(
      await measure(
        'agent deleted (explain)',
        (n) => gw.admin('DELETE', `/admin/v1/tenants/${tenant}/agents/fresh-${n}`),
        async (n) => (await explainAgent(word(n))) !== `${tenant}/fresh-${n}`,
      ),
    );
    rows.push(
      await measure('agent created (request by new tag)', create('tagged', (n) => skillWith(n, { name: 'tagged lookup', tags: [`fresh-tag-${n}`] })), async (n) => (await viaTag(`fresh-tag-${n}`)) === `${tenant}/tagged-${n}`),
    );
    return { rows, agents: GATEWAY_AGENTS, startMs };
  } finally {
    await gw.close();
    upstream.closeAllConnections();
    await new Promise((resolve) => upstream.close(resolve));
  }
}

// ---- the report ----------------------------------------------------------------------------

const us = (value: number): string => `${value.toFixed(1)} µs`;
const ms = (value: number): string => `${value.toFixed(1)} ms`;

console.log('# node --import tsx bench/routing.ts' + (process.argv.length > 2 ? ' ' + process.argv.slice(2).join(' ') : ''));
console.log(
  `# node ${process.version}, ${os.cpus()[0]?.model ?? 'unknown CPU'} x${os.cpus().length}; ${AGENTS.toLocaleString('en-US')} agents x 10 skills x ${ENDPOINTS_PER_AGENT} endpoints, ` +
    `${QUERIES.toLocaleString('en-US')} timed decisions x ${ROUNDS} rounds (best round by p99)`,
);

if (!options['no-decision']) {
  const rows = [decisionRun('1 tenant', () => 'big')];
  if (!options.single) rows.push(decisionRun(`${TENANTS_SPREAD} tenants`, (i) => `tenant-${i % TENANTS_SPREAD}`));
  console.log(
    '\n| registry | decision p50 | decision p99 | decision p99.9 | decision max | decision CPU p50 / p99 | after an agent changed p50 / p99 | after a policy change p50 / p99 | ' +
      'rank() alone p50 / p99 | eligibility checks p50 / p99 (after a policy change) | routed | target chosen | syncAgent p50 / p99 | index build | memory: registry | memory: router + index |',
  );
  console.log('| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |');
  for (const row of rows) {
    const cells = [
      row.label,
      us(percentile(row.decision, 50)),
      us(percentile(row.decision, 99)),
      us(percentile(row.decision, 99.9)),
      us(row.decision[row.decision.length - 1]!),
      `${percentile(row.decisionCpu, 50).toFixed(1)} / ${percentile(row.decisionCpu, 99).toFixed(1)} µs`,
      `${percentile(row.agentChanged, 50).toFixed(1)} / ${percentile(row.agentChanged, 99).toFixed(1)} µs`,
      `${percentile(row.changed, 50).toFixed(1)} / ${percentile(row.changed, 99).toFixed(1)} µs`,
      `${percentile(row.rank, 50).toFixed(1)} / ${percentile(row.rank, 99).toFixed(1)} µs`,
      `${percentile(row.checks, 50)} / ${percentile(row.checks, 99)} (${percentile(row.changedChecks, 50)} / ${percentile(row.changedChecks, 99)})`,
      `${((100 * row.routed) / QUERIES).toFixed(1)}%`,
      `${((100 * row.targetChosen) / QUERIES).toFixed(1)}%`,
      `${percentile(row.sync, 50).toFixed(0)} / ${percentile(row.sync, 99).toFixed(0)} µs`,
      `${(row.buildMs / 1000).toFixed(2)} s`,
      `${row.registryMb.toFixed(0)} MB`,
      `${row.routerMb.toFixed(0)} MB`,
    ];
    console.log(`| ${cells.join(' | ')} |`);
  }
  for (const row of rows) {
    const reasons = Object.entries(row.noRoute).map(([reason, count]) => `${reason} ${((100 * count) / QUERIES).toFixed(1)}%`);
    if (reasons.length > 0) console.log(`- ${row.label}, not routed: ${reasons.join(', ')}`);
  }
}

if (!options['no-gateway']) {
  log(`starting a gateway with ${GATEWAY_AGENTS} agents`);
  const { rows, agents, startMs } = await visibilityRun();
  console.log(`\nRegistry change to routing, real gateway with ${agents.toLocaleString('en-US')} agents (${(agents * 10).toLocaleString('en-US')} skills; start ${(startMs / 1000).toFixed(1)} s), ${CHANGES} changes each:\n`);
  console.log('| change | Admin API write p50 / p99 | visible after the write returned p50 / p99 / max | write sent to visible p50 / p99 / max | reads needed (max) |');
  console.log('| --- | --- | --- | --- | --- |');
  for (const row of rows) {
    console.log(
      `| ${row.label} | ${ms(percentile(row.write, 50))} / ${ms(percentile(row.write, 99))} | ` +
        `${ms(percentile(row.visible, 50))} / ${ms(percentile(row.visible, 99))} / ${ms(row.visible[row.visible.length - 1]!)} | ` +
        `${ms(percentile(row.total, 50))} / ${ms(percentile(row.total, 99))} / ${ms(row.total[row.total.length - 1]!)} | ${row.maxReads} |`,
    );
  }
}
