import assert from 'node:assert/strict';
import type http from 'node:http';
import { after, describe, it, type TestContext } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import { Pool } from 'undici';
import { configSchema } from '../src/config/schema.js';
import { loadPollCounters, type LoadPollFailure } from '../src/routing/load-poller.js';
import { parseLoadReport, parseOrcaReport } from '../src/routing/load.js';
import { eventually, startTestGateway, type TestGateway } from './support/gateway.js';
import { startUpstream, type Upstream } from './support/upstream.js';

/** What a replica's load endpoint answers; tests change it while traffic flows. */
interface LoadAnswer {
  status?: number;
  body?: string;
  headers?: Record<string, string>;
  /** 'hang': never answers; 'reset': drops the connection; 'chunked': `body` without content-length */
  fault?: 'hang' | 'reset' | 'chunked';
}

interface Replica {
  url: string;
  upstream: Upstream;
  /** Served on any path starting with `loadPath`. */
  load: LoadAnswer;
  loadPath: string;
  /** performance.now() of each poll and of each ordinary request */
  polls: number[];
  hits: number[];
}

const started: Array<{ close(): Promise<void> }> = [];
after(async () => {
  for (const thing of started.reverse()) await thing.close();
});

async function replica(load: LoadAnswer, loadPath = '/load'): Promise<Replica> {
  const state = { load, loadPath, polls: [], hits: [] } as unknown as Replica;
  const handler = (req: http.IncomingMessage, res: http.ServerResponse) => {
    if (req.url?.startsWith('/.well-known/')) {
      res.writeHead(404).end();
      return;
    }
    if (req.url === state.loadPath) {
      state.polls.push(performance.now());
      const answer = state.load;
      if (answer.fault === 'hang') return;
      if (answer.fault === 'reset') {
        req.socket.destroy();
        return;
      }
      const body = answer.body ?? '';
      const headers: Record<string, string> = { 'content-type': 'text/plain', ...answer.headers };
      if (answer.fault !== 'chunked') headers['content-length'] = String(Buffer.byteLength(body));
      res.writeHead(answer.status ?? 200, headers);
      if (answer.fault === 'chunked') for (let i = 0; i < body.length; i += 512) res.write(body.slice(i, i + 512));
      res.end(answer.fault === 'chunked' ? undefined : body);
      return;
    }
    state.hits.push(performance.now());
    res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}');
  };
  state.upstream = await startUpstream('replica', handler);
  state.url = state.upstream.url;
  started.push(state.upstream);
  return state;
}

type AgentRaw = { name: string; endpoints: string[]; loadPoll?: unknown };

/** A gateway closed when test `t` ends (its polls would otherwise count in the next test's counters). */
async function gateway(t: TestContext, agents: AgentRaw[], loadPoll: Record<string, unknown>): Promise<TestGateway> {
  const gw = await startTestGateway({ healthCheck: { enabled: false }, balancing: { loadPoll }, tenants: [{ name: 'acme', agents }] });
  t.after(() => gw.close());
  return gw;
}

function reported(gw: TestGateway, agent: string, url: string): { utilization: number; queue: number } | undefined {
  return gw.gateway.registry.getAgent('acme', agent)?.endpointStatus.find((e) => e.url === url)?.load.reported;
}

function client(gw: TestGateway): Pool {
  const pool = new Pool(gw.plainUrl, { connections: 8 });
  started.push(pool);
  return pool;
}

/** `loops` callers sending requests back to back until `stop()`; returns the statuses. */
async function traffic(pool: Pool, path: string, loops: number, stop: () => boolean): Promise<number[]> {
  const statuses: number[] = [];
  await Promise.all(
    Array.from({ length: loops }, async () => {
      while (!stop()) {
        const res = await pool.request({ path, method: 'GET' });
        await res.body.dump();
        statuses.push(res.statusCode);
      }
    }),
  );
  return statuses;
}

async function requests(pool: Pool, path: string, count: number): Promise<number[]> {
  let sent = 0;
  return traffic(pool, path, 4, () => sent++ >= count);
}

const between = (times: number[], from: number, to: number) => times.filter((at) => at >= from && at < to).length;

function shareOf(target: Replica, all: Replica[], from: number, to: number): { share: number; total: number } {
  const total = all.reduce((sum, r) => sum + between(r.hits, from, to), 0);
  return { share: total === 0 ? 0 : between(target.hits, from, to) / total, total };
}

function failedSince(before: ReturnType<typeof loadPollCounters>, reason: LoadPollFailure): number {
  return loadPollCounters().failed[reason] - before.failed[reason];
}

describe('polled load report formats', () => {
  it('reads ORCA TEXT and JSON reports and x-dmsc-load, and ignores malformed ones', () => {
    assert.deepEqual(parseOrcaReport('TEXT cpu_utilization=0.3, named_metrics.queue=4'), { utilization: 0.3, queue: 4 });
    assert.deepEqual(parseOrcaReport('TEXT cpu_utilization:0.3,mem_utilization:0.9,rps_fractional:100,eps:2,named_metrics.foo:1.5e3'), { utilization: 0.3, queue: 0 }, "Envoy's older `name:value` form");
    assert.deepEqual(parseOrcaReport('TEXT cpu_utilization=0.3, application_utilization=0.8'), { utilization: 0.8, queue: 0 }, 'application_utilization wins when set');
    assert.deepEqual(parseOrcaReport('TEXT cpu_utilization=1.7, utilization.gpu=0.5, request_cost.db=3'), { utilization: 1, queue: 0 }, 'utilisation above 1 counts as 1');
    assert.deepEqual(parseOrcaReport('TEXT named_metrics.queue=99999'), { utilization: 0, queue: 10_000 }, 'queue capped');
    assert.deepEqual(parseOrcaReport('JSON {"cpu_utilization":0.3,"named_metrics":{"queue":4,"kv_cache":0.5}}'), { utilization: 0.3, queue: 4 });
    assert.deepEqual(parseOrcaReport('JSON {"cpuUtilization":0.3,"namedMetrics":{"queue":4},"memUtilization":0.1}'), { utilization: 0.3, queue: 4 }, 'proto3 JSON lowerCamelCase');
    assert.deepEqual(parseOrcaReport('{"application_utilization":0.6}\n'), { utilization: 0.6, queue: 0 }, 'a bare JSON object body');
    assert.deepEqual(parseOrcaReport('JSON {}'), { utilization: 0, queue: 0 }, 'proto3: unset fields are 0');
    for (const bad of [
      'BIN CAESAg==',
      'XML <load/>',
      'TEXT cpu=0.3',
      'TEXT cpu_utilization=0.3, cpu_utilization=0.4',
      'TEXT cpu_utilization=-0.1',
      'TEXT cpu_utilization=NaN',
      'TEXT cpu_utilization=0x1',
      'TEXT cpu_utilization=1e999',
      'TEXT named_metrics.=3',
      'TEXT cpu_utilization=0.3,,',
      'TEXT named_metrics.queue=-2',
      'JSON {"cpu_utilization":"0.3"}',
      'JSON {"cpu_utilization":-1}',
      'JSON {"named_metrics":{"queue":"4"}}',
      'JSON [0.3]',
      'JSON {"cpu_utilization":0.3',
    ]) {
      assert.equal(parseOrcaReport(bad), undefined, bad);
    }
    assert.deepEqual(parseLoadReport('cpu=0.95, queue=50'), { utilization: 0.95, queue: 50 }, 'x-dmsc-load syntax');
    assert.deepEqual(parseLoadReport(' TEXT cpu_utilization=0.5\n'), { utilization: 0.5, queue: 0 });
    assert.equal(parseLoadReport('busy'), undefined);
  });

  it('configures polling off by default, with bounds, and per agent', () => {
    const defaults = configSchema.parse({}).balancing.loadPoll;
    assert.deepEqual(defaults, { enabled: false, path: '/load', intervalMs: 1000, timeoutMs: 500, maxBodyBytes: 4096, maxConcurrent: 64 });
    assert.throws(() => configSchema.parse({ balancing: { loadPoll: { intervalMs: 10 } } }));
    assert.throws(() => configSchema.parse({ balancing: { loadPoll: { path: 'load' } } }));
    const agent = (loadPoll: unknown) => ({ tenants: [{ name: 'acme', agents: [{ name: 'a', endpoints: ['http://127.0.0.1:1'], loadPoll }] }] });
    assert.equal(configSchema.parse(agent(false)).tenants[0]!.agents[0]!.loadPoll, false);
    assert.deepEqual(configSchema.parse(agent({ path: '/metrics/load' })).tenants[0]!.agents[0]!.loadPoll, { path: '/metrics/load' });
    assert.throws(() => configSchema.parse(agent(true)));
    assert.throws(() => configSchema.parse(agent({ maxConcurrent: 3 })));
  });
});

describe('polled load', () => {
  it('moves traffic off an endpoint within one second of its load endpoint reporting high load', async (t) => {
    const [a, b] = [await replica({ body: 'cpu=0.10, queue=0' }), await replica({ body: 'cpu=0.10, queue=0' })];
    const gw = await gateway(t, [{ name: 'pool', endpoints: [a!.url, b!.url] }], { enabled: true, intervalMs: 200 });
    const pool = client(gw);
    await eventually(() => reported(gw, 'pool', a!.url) !== undefined && reported(gw, 'pool', b!.url) !== undefined);

    const start = performance.now();
    let changedAt = Infinity;
    const run = traffic(pool, '/agents/acme/pool/', 4, () => performance.now() - changedAt > 1000);
    await delay(600);
    a!.load = { body: 'cpu=0.95, queue=50' };
    changedAt = performance.now();
    const statuses = await run;

    const before = shareOf(a!, [a!, b!], start + 100, changedAt);
    const settled = shareOf(a!, [a!, b!], changedAt + 300, changedAt + 1000);
    const firstPoll = a!.polls.find((at) => at >= changedAt)! - changedAt;
    const lastHit = Math.max(...a!.hits.filter((at) => at >= changedAt && at < changedAt + 1000), changedAt) - changedAt;
    t.diagnostic(`share before ${(before.share * 100).toFixed(1)}% of ${before.total}; 300-1000 ms after ${(settled.share * 100).toFixed(1)}% of ${settled.total}`);
    t.diagnostic(`first poll after the change at +${firstPoll.toFixed(0)} ms, last request to it at +${lastHit.toFixed(0)} ms`);
    assert.ok(statuses.every((status) => status === 200));
    assert.ok(before.share > 0.25, `before: ${(before.share * 100).toFixed(1)}%`);
    assert.ok(settled.share < 0.06, `after: ${(settled.share * 100).toFixed(1)}%`);
    assert.ok(settled.total > 50, 'real traffic flowed meanwhile');
    assert.ok(lastHit < 1000, `traffic moved within 1 s (last request at +${lastHit.toFixed(0)} ms)`);
    assert.equal(reported(gw, 'pool', a!.url)?.queue, 50, 'the Admin API shows the polled report');
  });

  it('reads ORCA reports: TEXT in the body, JSON in the endpoint-load-metrics header', async (t) => {
    const text = await replica({ body: 'TEXT cpu_utilization=0.95, mem_utilization=0.2, named_metrics.queue=50\n' });
    const json = await replica({ headers: { 'endpoint-load-metrics': 'JSON {"cpu_utilization":0.2,"named_metrics":{"queue":1}}' }, body: 'ignored' });
    const gw = await gateway(t, [{ name: 'orca', endpoints: [text.url, json.url] }], { enabled: true, intervalMs: 150 });
    await eventually(() => reported(gw, 'orca', text.url)?.queue === 50 && reported(gw, 'orca', json.url)?.queue === 1);
    assert.equal(reported(gw, 'orca', text.url)!.utilization, 0.95);
    assert.equal(reported(gw, 'orca', json.url)!.utilization, 0.2);

    const pool = client(gw);
    const from = performance.now();
    assert.ok((await requests(pool, '/agents/acme/orca/', 100)).every((status) => status === 200));
    const share = shareOf(text, [text, json], from, performance.now());
    assert.ok(share.share < 0.1, `the loaded endpoint got ${(share.share * 100).toFixed(1)}% of ${share.total}`);
  });

  it('ignores and counts malformed, oversized, slow and failing answers without harming routing', async (t) => {
    const replicas = [
      await replica({ body: 'cpu=lots' }),
      await replica({ body: 'x'.repeat(8192), fault: 'chunked' }),
      await replica({ body: 'y'.repeat(9000) }),
      await replica({ fault: 'hang' }),
      await replica({ status: 404, body: 'no such path' }),
    ];
    const before = loadPollCounters();
    const gw = await gateway(t, [{ name: 'messy', endpoints: replicas.map((r) => r.url) }], { enabled: true, intervalMs: 150, timeoutMs: 100 });
    await eventually(
      () => failedSince(before, 'malformed') >= 2 && failedSince(before, 'too_large') >= 4 && failedSince(before, 'timeout') >= 2 && failedSince(before, 'status') >= 2,
    );

    const pool = client(gw);
    const from = performance.now();
    assert.ok((await requests(pool, '/agents/acme/messy/', 400)).every((status) => status === 200));
    const to = performance.now();
    const shares = replicas.map((r) => shareOf(r, replicas, from, to).share);
    t.diagnostic(`shares of 400 requests: ${shares.map((share) => `${(share * 100).toFixed(1)}%`).join(' ')}`);
    for (const [i, r] of replicas.entries()) {
      assert.equal(reported(gw, 'messy', r.url), undefined, 'no report taken');
      // Load-aware P2C splits by observed latency, unevenly (more so on a busy machine, whose latency
      // spikes it follows): what matters is that every endpoint stays in rotation.
      assert.ok(shares[i]! > 0, `endpoint ${i} keeps a share (${(shares[i]! * 100).toFixed(1)}%)`);
    }
    assert.equal(loadPollCounters().ok - before.ok, 0);
  });

  it("forgets a report once its load endpoint has not answered for three intervals", async (t) => {
    const [a, b] = [await replica({ body: 'cpu=0.95, queue=50' }), await replica({ body: 'cpu=0.10' })];
    const gw = await gateway(t, [{ name: 'stale', endpoints: [a!.url, b!.url] }], { enabled: true, intervalMs: 200 });
    await eventually(() => reported(gw, 'stale', a!.url) !== undefined);
    const pool = client(gw);
    let from = performance.now();
    await requests(pool, '/agents/acme/stale/', 60);
    assert.ok(shareOf(a!, [a!, b!], from, performance.now()).share < 0.1, 'the report keeps traffic away');

    a!.load = { fault: 'reset' };
    const stoppedAt = performance.now();
    await eventually(() => reported(gw, 'stale', a!.url) === undefined, 3000, 10);
    const expiredAfter = performance.now() - stoppedAt;
    t.diagnostic(`report dropped ${expiredAfter.toFixed(0)} ms after its load endpoint went away (interval 200 ms)`);
    assert.ok(expiredAfter >= 300 && expiredAfter < 1500, `expired after ${expiredAfter.toFixed(0)} ms`);
    assert.equal(reported(gw, 'stale', b!.url)?.utilization, 0.1, 'the other endpoint keeps its report');

    from = performance.now();
    await requests(pool, '/agents/acme/stale/', 200);
    const share = shareOf(a!, [a!, b!], from, performance.now());
    assert.ok(share.share > 0.2, `back in rotation: ${(share.share * 100).toFixed(1)}% of ${share.total}`);
  });

  it('follows agents and settings as they come and go, and stops with the gateway', async (t) => {
    const opted = await replica({ body: '0.5' }, '/custom');
    const quiet = await replica({ body: '0.5' });
    const gw = await gateway(
      t,
      [
        { name: 'opted', endpoints: [opted.url], loadPoll: { path: '/custom', intervalMs: 100 } },
        { name: 'quiet', endpoints: [quiet.url] },
      ],
      { enabled: false, intervalMs: 100 },
    );
    await eventually(() => reported(gw, 'opted', opted.url)?.utilization === 0.5);

    // Registered through the Admin API while polling is off for everyone else: not polled; on after a reload.
    const added = await replica({ body: '0.25' });
    assert.equal((await gw.admin('POST', '/admin/v1/tenants/acme/agents', { name: 'added', endpoints: [added.url] })).status, 201);
    // One registered through the Admin API with its own loadPoll is polled, and shows the setting.
    const apiOpted = await replica({ body: '0.75' }, '/custom');
    const apiSpec = { name: 'api-opted', endpoints: [apiOpted.url], loadPoll: { path: '/custom', intervalMs: 100 } };
    assert.equal((await gw.admin('POST', '/admin/v1/tenants/acme/agents', apiSpec)).status, 201);
    await eventually(() => reported(gw, 'api-opted', apiOpted.url)?.utilization === 0.75);
    assert.deepEqual((await gw.admin('GET', '/admin/v1/tenants/acme/agents/api-opted')).body.settings.loadPoll, apiSpec.loadPoll);
    const seen = opted.polls.length;
    await eventually(() => opted.polls.length >= seen + 3);
    assert.equal(added.polls.length + quiet.polls.length, 0, 'polling is off for agents without their own loadPoll');
    const config = gw.gateway.config();
    await gw.gateway.reload({
      ...config,
      balancing: { ...config.balancing, loadPoll: { ...config.balancing.loadPoll, enabled: true } },
      tenants: config.tenants.map((tenant) => ({ ...tenant, agents: tenant.agents.map((agent) => (agent.name === 'opted' ? { ...agent, loadPoll: false as const } : agent)) })),
    });
    await eventually(() => reported(gw, 'added', added.url)?.utilization === 0.25 && reported(gw, 'quiet', quiet.url)?.utilization === 0.5);
    assert.equal(reported(gw, 'opted', opted.url), undefined, 'turned off for it: its polled report is dropped');
    const optedPolls = opted.polls.length;

    assert.equal((await gw.admin('DELETE', '/admin/v1/tenants/acme/agents/added')).status, 204);
    const addedPolls = added.polls.length;
    await gw.close();
    const quietPolls = quiet.polls.length;
    await delay(400);
    assert.ok(added.polls.length <= addedPolls + 1, 'no polls after the agent was removed');
    assert.ok(quiet.polls.length <= quietPolls, 'no polls after the gateway closed');
    assert.ok(opted.polls.length <= optedPolls + 1, 'no polls after its loadPoll: false');
  });
});
