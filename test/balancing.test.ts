import assert from 'node:assert/strict';
import type http from 'node:http';
import { after, describe, it } from 'node:test';
import { Pool } from 'undici';
import { parseLoadHeader } from '../src/routing/load.js';
import { outlierCounters } from '../src/routing/outlier.js';
import { retryCounters } from '../src/routing/retry-budget.js';
import { eventually, startTestGateway, type TestGateway } from './support/gateway.js';
import { startUpstream, type Upstream } from './support/upstream.js';

/** How an agent replica behaves; tests change it while traffic flows. */
interface Behaviour {
  delayMs: number;
  status: number;
  /** `x-dmsc-load` value to send, if any */
  load?: string;
  /** ORCA `endpoint-load-metrics` value to send, if any */
  orca?: string;
  /** 'reset': destroys the connection after reading the request; 'hang': never answers */
  fault?: 'reset' | 'hang';
}

interface Replica {
  name: string;
  upstream: Upstream;
  behaviour: Behaviour;
  /** performance.now() of every request it received (but Agent Card fetches), with its method */
  hits: Array<{ at: number; method: string }>;
  url: string;
}

const started: Array<{ close(): Promise<void> }> = [];
after(async () => {
  for (const thing of started.reverse()) await thing.close();
});

async function replica(name: string, behaviour: Partial<Behaviour> = {}): Promise<Replica> {
  const state: Replica = { name, behaviour: { delayMs: 0, status: 200, ...behaviour }, hits: [], url: '', upstream: undefined as unknown as Upstream };
  const handler = (req: http.IncomingMessage, res: http.ServerResponse) => {
    // The gateway's own Agent Card fetches (at registration) are not traffic.
    if (!req.url?.startsWith('/.well-known/')) state.hits.push({ at: performance.now(), method: req.method ?? '' });
    const b = state.behaviour;
    let bodyBytes = 0;
    req.on('data', (chunk: Buffer) => (bodyBytes += chunk.length));
    req.on('end', () => {
      if (b.fault === 'reset') {
        req.socket.destroy();
        return;
      }
      if (b.fault === 'hang') return;
      const answer = () => {
        const body = JSON.stringify({ name, bodyBytes });
        const headers: Record<string, string> = { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)) };
        if (b.load !== undefined) headers['x-dmsc-load'] = b.load;
        if (b.orca !== undefined) headers['endpoint-load-metrics'] = b.orca;
        res.writeHead(b.status, headers);
        res.end(body);
      };
      if (b.delayMs > 0) setTimeout(answer, b.delayMs);
      else answer();
    });
  };
  state.upstream = await startUpstream(name, handler);
  state.url = state.upstream.url;
  started.push(state.upstream);
  return state;
}

/** A port nothing listens on (connections are refused). */
async function refusingUrl(): Promise<string> {
  const dead = await startUpstream('dead');
  await dead.close();
  return dead.url;
}

async function gateway(
  agents: Array<{ name: string; endpoints: string[]; skills?: Array<Record<string, unknown>> }>,
  extra: Record<string, unknown> = {},
  tenant: Record<string, unknown> = {},
): Promise<TestGateway> {
  const gw = await startTestGateway({ healthCheck: { enabled: false }, ...extra, tenants: [{ name: 'acme', ...tenant, agents }] });
  started.push(gw);
  return gw;
}

function client(gw: TestGateway): Pool {
  const pool = new Pool(gw.plainUrl, { connections: 32 });
  started.push(pool);
  return pool;
}

async function call(pool: Pool, path: string, init: { method?: 'GET' | 'POST'; body?: string } = {}): Promise<{ status: number; name?: string; headers: Record<string, unknown> }> {
  const res = await pool.request({
    path,
    method: init.method ?? 'GET',
    ...(init.body !== undefined ? { body: init.body, headers: { 'content-type': 'application/json' } } : {}),
  });
  const text = await res.body.text();
  let name: string | undefined;
  try {
    name = (JSON.parse(text) as { name?: string }).name;
  } catch {
    // not an agent's answer
  }
  return { status: res.statusCode, ...(name ? { name } : {}), headers: res.headers };
}

/** `loops` callers, each sending its next request as soon as the previous answered, until `stop()` is true. */
async function traffic(pool: Pool, path: string, loops: number, stop: () => boolean): Promise<number[]> {
  const statuses: number[] = [];
  await Promise.all(
    Array.from({ length: loops }, async () => {
      while (!stop()) statuses.push((await call(pool, path)).status);
    }),
  );
  return statuses;
}

const shareOf = (target: Replica, all: Replica[], from: number, to: number): { share: number; total: number } => {
  const count = (r: Replica) => r.hits.filter((hit) => hit.at >= from && hit.at < to).length;
  const total = all.reduce((sum, r) => sum + count(r), 0);
  return { share: total === 0 ? 0 : count(target) / total, total };
};

async function endpointStatus(gw: TestGateway, agent: string): Promise<Array<{ url: string; outlier: { state: string; ejections: number }; load: Record<string, unknown> }>> {
  const view = await gw.admin('GET', `/admin/v1/tenants/acme/agents/${agent}`);
  assert.equal(view.status, 200);
  return view.body.endpointStatus;
}

describe('x-dmsc-load header format', () => {
  it('accepts a utilisation or cpu/queue members, caps values and ignores garbage', () => {
    assert.deepEqual(parseLoadHeader('0.73'), { utilization: 0.73, queue: 0 });
    assert.deepEqual(parseLoadHeader(' 1 '), { utilization: 1, queue: 0 });
    assert.deepEqual(parseLoadHeader('cpu=0.5, queue=12'), { utilization: 0.5, queue: 12 });
    assert.deepEqual(parseLoadHeader('queue=3'), { utilization: 0, queue: 3 });
    assert.deepEqual(parseLoadHeader('cpu=0.2,gpu=0.9,region=eu-west'), { utilization: 0.2, queue: 0 }, 'unknown keys are skipped');
    assert.deepEqual(parseLoadHeader('cpu=7.5, queue=999999999'), { utilization: 1, queue: 10_000 }, 'values are capped');
    assert.deepEqual(parseLoadHeader('3'), { utilization: 1, queue: 0 });
    for (const garbage of ['', 'high', '-0.5', '1e3', '0x10', 'cpu=', 'cpu=0.5,,queue=1', 'cpu=0.5, cpu=0.6', 'queue=1.5', 'cpu=NaN', 'CPU=0.5', 'gpu=0.4', '0.5; q=1', 'x'.repeat(300)]) {
      assert.equal(parseLoadHeader(garbage), undefined, garbage);
    }
  });
});

describe('load-aware balancing', () => {
  it('sends a slow endpoint far less traffic than round-robin gives it', async () => {
    // Slow by far more than the fast ones' latency spikes on a busy machine (tens of ms), which peak-EWMA follows.
    const replicas = [await replica('a'), await replica('b'), await replica('c'), await replica('slow', { delayMs: 100 })];
    const gw = await gateway([{ name: 'pool', endpoints: replicas.map((r) => r.url) }]);
    const pool = client(gw);
    const slow = replicas[3]!;

    let sent = 0;
    const from = performance.now();
    await traffic(pool, '/agents/acme/pool/', 8, () => sent++ >= 400);
    const loadAware = shareOf(slow, replicas, from, performance.now());

    const config = gw.gateway.config();
    await gw.gateway.reload({ ...config, balancing: { ...config.balancing, policy: 'round-robin' } });
    sent = 0;
    const rrFrom = performance.now();
    await traffic(pool, '/agents/acme/pool/', 8, () => sent++ >= 200);
    const roundRobin = shareOf(slow, replicas, rrFrom, performance.now());

    assert.ok(loadAware.share < 0.05, `load-aware gave the slow endpoint ${(loadAware.share * 100).toFixed(1)}% of ${loadAware.total}`);
    assert.ok(roundRobin.share > 0.2, `round-robin gave it ${(roundRobin.share * 100).toFixed(1)}%`);
  });

  it('moves traffic off an endpoint within one second of it reporting high load in x-dmsc-load, and strips the header', async () => {
    const replicas = await Promise.all(['a', 'b', 'c', 'd'].map((name) => replica(name, { load: 'cpu=0.10, queue=0' })));
    const gw = await gateway([{ name: 'pool', endpoints: replicas.map((r) => r.url) }]);
    const pool = client(gw);
    const d = replicas[3]!;

    const first = await call(pool, '/agents/acme/pool/');
    assert.equal(first.headers['x-dmsc-load'], undefined, 'the report is for the gateway, not the caller');

    const start = performance.now();
    let changedAt = Infinity;
    const run = traffic(pool, '/agents/acme/pool/', 4, () => performance.now() - changedAt > 1000);
    await new Promise((resolve) => setTimeout(resolve, 700));
    d.behaviour.load = 'cpu=0.95, queue=40';
    changedAt = performance.now();
    const statuses = await run;

    const before = shareOf(d, replicas, start + 200, changedAt);
    const afterChange = shareOf(d, replicas, changedAt, changedAt + 1000);
    assert.ok(statuses.every((status) => status === 200));
    assert.ok(before.share > 0.12, `before: ${(before.share * 100).toFixed(1)}% of ${before.total}`);
    assert.ok(afterChange.share < 0.06, `within 1 s after: ${(afterChange.share * 100).toFixed(1)}% of ${afterChange.total}`);
    assert.ok(afterChange.total > 100, 'real traffic flowed meanwhile');

    const status = (await endpointStatus(gw, 'pool')).find((e) => e.url === d.url)!;
    assert.deepEqual((status.load.reported as { utilization: number; queue: number }).utilization, 0.95, 'the Admin API shows the reported load');
  });

  it("reads ORCA's endpoint-load-metrics on answers (TEXT and JSON) and strips it", async () => {
    // One endpoint per agent: every call reaches it, so each answer's report is read.
    const text = await replica('text', { orca: 'TEXT cpu_utilization=0.1, named_metrics.queue=2' });
    const json = await replica('json', { orca: 'JSON {"cpu_utilization": 0.9, "named_metrics": {"queue": 40}}' });
    const gw = await gateway([
      { name: 'text', endpoints: [text.url] },
      { name: 'json', endpoints: [json.url] },
    ]);
    const pool = client(gw);
    const reportOf = async (agent: string) => {
      const reported = (await endpointStatus(gw, agent))[0]!.load.reported as { utilization: number; queue: number } | undefined;
      return reported && { utilization: reported.utilization, queue: reported.queue };
    };
    for (const agent of ['text', 'json']) {
      const answer = await call(pool, `/agents/acme/${agent}/`);
      assert.equal(answer.status, 200);
      assert.equal(answer.headers['endpoint-load-metrics'], undefined, 'the report is for the gateway, not the caller');
    }
    assert.deepEqual(await reportOf('text'), { utilization: 0.1, queue: 2 });
    assert.deepEqual(await reportOf('json'), { utilization: 0.9, queue: 40 });
  });

  it('moves traffic off an endpoint within one second of it becoming slow', async () => {
    const replicas = await Promise.all(['a', 'b', 'c', 'd'].map((name) => replica(name)));
    const gw = await gateway([{ name: 'pool', endpoints: replicas.map((r) => r.url) }]);
    const pool = client(gw);
    const d = replicas[3]!;

    const start = performance.now();
    let changedAt = Infinity;
    const run = traffic(pool, '/agents/acme/pool/', 4, () => performance.now() - changedAt > 1000);
    // d must be taking its share before it slows down. One slow early answer on a busy machine can
    // keep an endpoint's estimate high for seconds (decayMs 2 s): wait, within a bound, for a window
    // of 400 ms where it has its share.
    let window = { share: 0, total: 0 };
    await eventually(() => {
      const now = performance.now();
      window = shareOf(d, replicas, now - 400, now);
      return now - start > 700 && window.share > 0.12;
    }, 15_000, 100).catch(() => assert.fail(`d never took its share before slowing down (last 400 ms: ${(window.share * 100).toFixed(1)}% of ${window.total})`));
    const measuredFrom = performance.now() - 400;
    d.behaviour.delayMs = 40;
    changedAt = performance.now();
    await run;

    const before = shareOf(d, replicas, measuredFrom, changedAt);
    const afterChange = shareOf(d, replicas, changedAt, changedAt + 1000);
    assert.ok(before.share > 0.12, `before: ${(before.share * 100).toFixed(1)}% of ${before.total}`);
    assert.ok(afterChange.share < 0.06, `within 1 s after: ${(afterChange.share * 100).toFixed(1)}% of ${afterChange.total}`);
  });
});

describe('outlier detection', () => {
  // errorPenalty 0: the load score alone would already steer around a failing endpoint; here the detector is under test.
  const balancing = { errorPenalty: 0, outlierDetection: { consecutiveFailures: 3, intervalMs: 1000, baseEjectionMs: 400 } };

  it('ejects a failing endpoint, probes it when the ejection ends, ejects it longer after a failed probe, and takes it back after a good one', async () => {
    const replicas = [await replica('a'), await replica('b'), await replica('bad', { status: 503 })];
    const bad = replicas[2]!;
    const gw = await gateway([{ name: 'pool', endpoints: replicas.map((r) => r.url) }], { balancing });
    const pool = client(gw);
    const before = outlierCounters();

    // 503 to a GET is retried on another endpoint: the caller never sees it.
    for (let i = 0; i < 40; i++) assert.equal((await call(pool, '/agents/acme/pool/')).status, 200);
    let status = (await endpointStatus(gw, 'pool')).find((e) => e.url === bad.url)!;
    assert.equal(status.outlier.state, 'ejected');
    assert.equal(status.outlier.ejections, 1);
    assert.ok(bad.hits.length >= 3 && bad.hits.length <= 4, `ejected after 3 failures (${bad.hits.length} hits)`);

    const hitsWhenEjected = bad.hits.length;
    for (let i = 0; i < 20; i++) assert.equal((await call(pool, '/agents/acme/pool/')).status, 200);
    assert.equal(bad.hits.length, hitsWhenEjected, 'no traffic while ejected');

    // Still failing when the ejection ends: one probe, then out again for twice as long.
    await eventually(async () => (await endpointStatus(gw, 'pool')).find((e) => e.url === bad.url)!.outlier.state === 'half-open');
    for (let i = 0; i < 20; i++) assert.equal((await call(pool, '/agents/acme/pool/')).status, 200);
    assert.equal(bad.hits.length, hitsWhenEjected + 1, 'exactly one probe');
    status = (await endpointStatus(gw, 'pool')).find((e) => e.url === bad.url)!;
    assert.equal(status.outlier.state, 'ejected');
    assert.equal(status.outlier.ejections, 2);

    // Healed: the next probe succeeds and it takes its share again.
    bad.behaviour.status = 200;
    await eventually(async () => (await endpointStatus(gw, 'pool')).find((e) => e.url === bad.url)!.outlier.state === 'half-open', 3000);
    for (let i = 0; i < 60; i++) assert.equal((await call(pool, '/agents/acme/pool/')).status, 200);
    status = (await endpointStatus(gw, 'pool')).find((e) => e.url === bad.url)!;
    assert.equal(status.outlier.state, 'in-service');
    // Its share comes back as its latency estimate decays toward its peers' (decayMs 2 s: a probe
    // answered in a latency spike of a busy machine takes seconds): keep the traffic going, within a
    // time bound, until it has taken some.
    const until = performance.now() + 15_000;
    let sent = 0;
    for (; performance.now() < until && bad.hits.length <= hitsWhenEjected + 5; sent++) assert.equal((await call(pool, '/agents/acme/pool/')).status, 200);
    assert.ok(bad.hits.length > hitsWhenEjected + 5, `back in rotation (${bad.hits.length - hitsWhenEjected - 1} of ${sent} requests since)`);

    const counters = outlierCounters();
    assert.equal(counters.ejections - before.ejections, 2);
    assert.equal(counters.probeFailures - before.probeFailures, 1);
    assert.equal(counters.probeSuccesses - before.probeSuccesses, 1);
  });

  it("never ejects an agent's last endpoint in service", async () => {
    const lone = await replica('lone', { status: 500 });
    const pair = [await replica('p1', { status: 500 }), await replica('p2', { status: 500 })];
    const gw = await gateway(
      [
        { name: 'lone', endpoints: [lone.url] },
        { name: 'pair', endpoints: pair.map((r) => r.url) },
      ],
      { balancing },
    );
    const pool = client(gw);
    for (let i = 0; i < 20; i++) {
      assert.equal((await call(pool, '/agents/acme/lone/')).status, 500, "the agent's own answer, not no_healthy_endpoint");
      assert.equal((await call(pool, '/agents/acme/pair/')).status, 500);
    }
    assert.equal(lone.hits.length, 20);
    assert.equal((await endpointStatus(gw, 'lone'))[0]!.outlier.state, 'in-service');
    const states = (await endpointStatus(gw, 'pair')).map((e) => e.outlier.state).sort();
    assert.deepEqual(states, ['ejected', 'in-service']);
  });
});

describe('retries', () => {
  it('fails over from an endpoint that refuses connections without the caller noticing, for GET and POST', async () => {
    const live = [await replica('a'), await replica('b')];
    const gw = await gateway([{ name: 'pool', endpoints: [await refusingUrl(), ...live.map((r) => r.url)] }]);
    const pool = client(gw);
    for (let i = 0; i < 30; i++) {
      const got = await call(pool, '/agents/acme/pool/');
      assert.equal(got.status, 200);
      const posted = await call(pool, '/agents/acme/pool/orders', { method: 'POST', body: JSON.stringify({ order: i }) });
      assert.equal(posted.status, 200, 'a POST that never reached an agent is safe to send elsewhere');
    }
    assert.equal(live[0]!.hits.length + live[1]!.hits.length, 60);
  });

  it('does not retry a POST the agent may have seen (reset after reading it, or a 503)', async () => {
    const resetting = await replica('resetting', { fault: 'reset' });
    const unavailable = await replica('unavailable', { status: 503 });
    const good = await replica('good');
    const outlierOff = { balancing: { outlierDetection: { enabled: false } }, healthCheck: { enabled: false, unhealthyThreshold: 100 } };
    const gw = await gateway(
      [
        { name: 'resets', endpoints: [resetting.url, good.url] },
        { name: 'busy', endpoints: [unavailable.url, good.url] },
      ],
      outlierOff,
    );
    const pool = client(gw);
    let failedPosts = 0;
    for (let i = 0; i < 20; i++) {
      const goodBefore = good.hits.length;
      const posted = await call(pool, '/agents/acme/resets/orders', { method: 'POST', body: '{}' });
      if (posted.status === 502) {
        failedPosts++;
        assert.equal(good.hits.length, goodBefore, 'the POST was not replayed on the other endpoint');
      } else assert.equal(posted.status, 200);
      const busyBefore = good.hits.length;
      const busy = await call(pool, '/agents/acme/busy/orders', { method: 'POST', body: '{}' });
      if (busy.status === 503) assert.equal(good.hits.length, busyBefore, "the agent's 503 to a POST is passed on, not retried");
      else assert.equal(busy.status, 200);
    }
    assert.ok(failedPosts > 0, 'some POSTs went to the resetting endpoint');
    assert.equal(resetting.hits.length, failedPosts);
    // The same reset on a GET is retried.
    for (let i = 0; i < 10; i++) assert.equal((await call(pool, '/agents/acme/resets/')).status, 200);
  });

  it('caps retries with the retry budget', async () => {
    const both = [await replica('r1', { fault: 'reset' }), await replica('r2', { fault: 'reset' })];
    const gw = await gateway([{ name: 'flaky', endpoints: both.map((r) => r.url) }], {
      healthCheck: { enabled: false, unhealthyThreshold: 100 },
      balancing: { outlierDetection: { enabled: false }, retries: { budgetRatio: 0.1, minRetriesPerSecond: 0 } },
    });
    const pool = client(gw);
    const before = retryCounters();
    for (let i = 0; i < 100; i++) assert.equal((await call(pool, '/agents/acme/flaky/')).status, 502);
    const attempts = both[0]!.hits.length + both[1]!.hits.length;
    const retries = attempts - 100;
    assert.ok(retries >= 8 && retries <= 10, `retries within 10% of requests (${retries})`);
    const counters = retryCounters();
    assert.equal(counters.retries.reset - before.retries.reset, retries);
    assert.ok(counters.budgetExhausted - before.budgetExhausted >= 85);

    // Without the cap, every request tries both endpoints.
    const config = gw.gateway.config();
    await gw.gateway.reload({ ...config, balancing: { ...config.balancing, retries: { ...config.balancing.retries, budgetRatio: 10 } } });
    for (let i = 0; i < 20; i++) assert.equal((await call(pool, '/agents/acme/flaky/')).status, 502);
    assert.equal(both[0]!.hits.length + both[1]!.hits.length - attempts, 40);
  });

  it('tries another endpoint after timeouts.perTryMs, and the overall deadline bounds all tries', async () => {
    const hanging = await replica('hanging', { fault: 'hang' });
    const good = await replica('good');
    const alsoHanging = await replica('also-hanging', { fault: 'hang' });
    const gw = await gateway(
      [
        { name: 'mixed', endpoints: [hanging.url, good.url] },
        { name: 'stuck', endpoints: [hanging.url, alsoHanging.url] },
      ],
      // Room for the retry after a per-try timeout (350 ms left 50 ms for it: too tight on a busy machine).
      { timeouts: { perTryMs: 300, totalMs: 5_000 }, healthCheck: { enabled: false, unhealthyThreshold: 100 } },
    );
    const pool = client(gw);
    for (let i = 0; i < 6; i++) {
      const t0 = performance.now();
      const res = await call(pool, '/agents/acme/mixed/');
      assert.equal(res.status, 200);
      assert.ok(performance.now() - t0 < 1000);
    }
    assert.ok(hanging.hits.length >= 1, 'the hanging endpoint was tried at least once');

    const config = gw.gateway.config();
    await gw.gateway.reload({ ...config, timeouts: { ...config.timeouts, totalMs: 350 } });
    const t0 = performance.now();
    const res = await call(pool, '/agents/acme/stuck/');
    const elapsed = performance.now() - t0;
    assert.equal(res.status, 504);
    // Two tries of 300 ms would take 600 ms: the 350 ms deadline (checked every 100 ms) cuts the second.
    assert.ok(elapsed < 550, `the overall deadline bounds all tries (${elapsed.toFixed(0)} ms)`);
  });
});

/** dmsc_route_failovers_total and acme's intent decisions in dmsc_route_decisions_total. */
async function routingMetrics(gw: TestGateway): Promise<{ failovers: number; intent: number }> {
  const text = String((await gw.admin('GET', '/metrics')).body);
  const value = (pattern: RegExp) => Number(pattern.exec(text)?.[1] ?? 0);
  return {
    failovers: value(/^dmsc_route_failovers_total (\d+)$/m),
    intent: value(/^dmsc_route_decisions_total\{tenant="acme",outcome="intent"\} (\d+)$/m),
  };
}

describe('failover to the next-best agent', () => {
  // primary matches "tax returns" best but none of its three endpoints accepts connections;
  // backup matches less well and answers (slowly when a test wants a request held in flight).
  let gw: TestGateway;
  let backup: Replica;
  const ask = (pool: Pool) => pool.request({ path: '/tenants/acme/ask', method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ q: 'please file my tax returns' }) });

  it('is not cut short by maxAttempts on the first agent (attempts count per agent)', async () => {
    backup = await replica('backup');
    const dead = [await refusingUrl(), await refusingUrl(), await refusingUrl()];
    gw = await gateway(
      [
        { name: 'primary', endpoints: dead, skills: [{ id: 'tax', name: 'Tax returns', description: 'Files tax returns and computes tax owed', tags: [] }] },
        { name: 'backup', endpoints: [backup.url], skills: [{ id: 'books', name: 'Bookkeeping', description: 'Keeps the books and helps with tax returns', tags: [] }] },
      ],
      {
        healthCheck: { enabled: false, unhealthyThreshold: 100 },
        routing: { intent: { jsonField: '/q' } },
        balancing: { outlierDetection: { enabled: false }, retries: { maxAttempts: 2 } },
      },
      { limits: { concurrency: { perEndpoint: 1, queue: 0 } } },
    );
    const pool = client(gw);
    const explained = await gw.admin('GET', '/admin/v1/route/explain?tenant=acme&q=please%20file%20my%20tax%20returns');
    assert.equal(explained.body.decision.agent, 'acme/primary');
    assert.deepEqual(explained.body.decision.alternatives, ['acme/backup']);
    const before = await routingMetrics(gw);
    for (let i = 0; i < 3; i++) {
      const res = await ask(pool);
      const body = await res.body.json() as { name?: string };
      assert.equal(res.statusCode, 200, JSON.stringify(body));
      assert.equal(body.name, 'backup');
      assert.equal(res.headers['x-dmsc-routed-to'], 'acme/backup');
    }
    assert.equal(backup.hits.length, 3);
    const metrics = await routingMetrics(gw);
    assert.equal(metrics.failovers - before.failovers, 3);
    assert.equal(metrics.intent - before.intent, 3);
  });

  it("moves the request's concurrency slot to the endpoint it failed over to", async () => {
    backup.behaviour.delayMs = 1_000;
    const pool = client(gw);
    const hitsBefore = backup.hits.length;
    const held = ask(pool).then(async (res) => ({ status: res.statusCode, body: (await res.body.json()) as { name?: string } }));
    await eventually(() => backup.hits.length > hitsBefore);
    // Its slot is backup's now: a direct call to backup finds the endpoint at its limit.
    const direct = await call(pool, '/agents/acme/backup/');
    assert.equal(direct.status, 503);
    const first = await held;
    assert.equal(first.status, 200);
    assert.equal(first.body.name, 'backup');
    backup.behaviour.delayMs = 0;
    // Released when it finished: nothing leaked on either agent.
    assert.equal((await call(pool, '/agents/acme/backup/')).status, 200);
    const again = await ask(pool);
    assert.equal(again.statusCode, 200);
    await again.body.dump();
  });

  it('moves to at most balancing.retries.maxFailovers other agents', async () => {
    const config = gw.gateway.config();
    await gw.gateway.reload({ ...config, balancing: { ...config.balancing, retries: { ...config.balancing.retries, maxFailovers: 0 } } });
    const pool = client(gw);
    const hits = backup.hits.length;
    const refused = await ask(pool);
    const body = (await refused.body.json()) as { error?: { code?: string } };
    assert.equal(refused.statusCode, 502);
    assert.equal(body.error?.code, 'upstream_unavailable');
    assert.equal(backup.hits.length, hits);
    await gw.gateway.reload(config);
    const res = await ask(pool);
    assert.equal(res.statusCode, 200);
    await res.body.dump();
  });
});
