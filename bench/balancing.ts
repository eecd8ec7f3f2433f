// Load-aware balancing vs round-robin, in the same run on this machine.
//
//   node --import tsx bench/balancing.ts [--rounds 2 --duration 8 --warmup 2 --rate 400 --slow-ms 50]
//
// One gateway (this source tree, `dmsc start` under tsx) with one agent of four endpoints, all in one
// upstream process (a fixed 1 KiB JSON answer); open-loop load (bench/openloop.ts, latency from each
// request's due time, no coordinated omission) at --rate req/s on the plaintext listener. Scenarios,
// each under both policies (balancing.policy), interleaved (the order flips every round), with a fresh
// gateway per phase so that no phase inherits another's latency estimates or ejections:
//   healthy   all four alike (the machine's floor, for comparison)
//   slow      endpoint 4 answers --slow-ms later than the others
//   503       endpoint 4 answers 503 at once (GETs are retried on another endpoint; outlier detection ejects it)
//   refusing  endpoint 4 refuses connections (connect failures are retried; outlier detection ejects it)
// Then the cost of one pick (ns) at 4 and 64 endpoints, in this process. CPU pinning (default on >= 2
// CPUs, as bench/noisy.ts): the load generator on CPU 0, the gateway and the upstreams on the others.
// Prints a markdown table (medians over rounds) and the round-robin / load-aware ratios.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import type { OpenLoopResult } from './openloop.js';
import type { AgentRuntime } from '../src/registry/types.js';
import { freePort, installCleanup, pinned, startProcess, stopProcess, type Managed } from './procs.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const SELF = fileURLToPath(import.meta.url);
const log = (line: string) => process.stderr.write(`[balancing] ${line}\n`);

// ====================================================================== upstreams mode

/**
 * `balancing.ts upstreams --ports P1,P2,...`: one HTTP server per port. Commands on stdin, one per
 * line, each answered `ack <n>`: `set <i> <delayMs> <status>`, `down <i>` (close: connections are
 * refused), `up <i>`, `stats` (also prints `hits <h1,h2,...>` since the last stats).
 */
async function upstreamsMain(argv: string[]): Promise<void> {
  const { values } = parseArgs({ args: argv, options: { ports: { type: 'string' } } });
  const ports = (values.ports ?? '').split(',').map(Number);
  const head = '{"agent":"echo","ok":true,"pad":"';
  const body = Buffer.from(head + 'x'.repeat(1024 - head.length - 2) + '"}');
  const replicas = ports.map((port) => ({ port, delayMs: 0, status: 200, hits: 0, server: undefined as http.Server | undefined }));
  const listen = (r: (typeof replicas)[number]) =>
    new Promise<void>((resolve, reject) => {
      const server = http.createServer((req, res) => {
        r.hits++;
        req.resume();
        const answer = () => {
          res.writeHead(r.status, { 'content-type': 'application/json', 'content-length': String(body.length) });
          res.end(body);
        };
        if (r.delayMs > 0) setTimeout(answer, r.delayMs);
        else answer();
      });
      server.keepAliveTimeout = 120_000;
      server.once('error', reject);
      server.listen(r.port, '127.0.0.1', () => resolve());
      r.server = server;
    });
  await Promise.all(replicas.map(listen));
  process.stdout.write(`listening ${ports.join(',')}\n`);
  let acks = 0;
  let buffered = '';
  let queue = Promise.resolve();
  process.stdin.on('data', (chunk: Buffer) => {
    buffered += chunk.toString('utf8');
    let nl: number;
    while ((nl = buffered.indexOf('\n')) >= 0) {
      const [cmd, ...args] = buffered.slice(0, nl).trim().split(/\s+/);
      buffered = buffered.slice(nl + 1);
      queue = queue.then(async () => {
        const r = replicas[Number(args[0])];
        if (cmd === 'set' && r) {
          r.delayMs = Number(args[1]);
          r.status = Number(args[2]);
        } else if (cmd === 'down' && r?.server) {
          const server = r.server;
          r.server = undefined;
          server.closeAllConnections();
          await new Promise((resolve) => server.close(resolve));
        } else if (cmd === 'up' && r && !r.server) {
          await listen(r);
        } else if (cmd === 'stats') {
          process.stdout.write(`hits ${replicas.map((x) => x.hits).join(',')}\n`);
          for (const x of replicas) x.hits = 0;
        }
        process.stdout.write(`ack ${++acks}\n`);
      });
    }
  });
  process.stdin.on('end', () => process.exit(0));
}

// ====================================================================== gateway mode

/** `balancing.ts gateway <dmsc start options>`: the gateway from this source tree (no build needed). */
async function gatewayMain(argv: string[]): Promise<void> {
  const { main } = await import('../src/cli/index.js');
  const code = await main(['start', ...argv]);
  if (code !== 0) process.exit(code);
  process.stdin.on('end', () => process.exit(0)); // the orchestrator went away: no orphan
  process.stdin.resume();
}

// ====================================================================== pick microbenchmark

async function microbench(): Promise<Array<{ endpoints: number; policy: string; nsPerPick: number; nsPerObservation?: number }>> {
  const { Endpoint } = await import('../src/registry/endpoint.js');
  const { Balancer } = await import('../src/routing/balancer.js');
  const { balancingSchema } = await import('../src/routing/balancing-config.js');
  const { healthCheckSchema } = await import('../src/config/schema.js');
  const health = healthCheckSchema.parse({});
  const out: Array<{ endpoints: number; policy: string; nsPerPick: number; nsPerObservation?: number }> = [];
  for (const count of [4, 64]) {
    const endpoints = Array.from({ length: count }, (_, i) => new Endpoint(`http://10.0.0.${i % 250}:${7000 + i}`, () => health));
    // The balancer reads an agent's endpoints, key and round-robin cursor only.
    const agent = { tenant: 't', name: 'a', key: 't/a', endpoints, rrCursor: 0 } as Partial<AgentRuntime> as AgentRuntime;
    for (const policy of ['load-aware', 'round-robin'] as const) {
      const settings = balancingSchema.parse({ policy });
      const balancer = new Balancer(() => settings);
      // Warm state: every endpoint has answered, with varied latency, some in flight, one reporting load.
      for (let round = 0; round < 50; round++) {
        for (const endpoint of endpoints) balancer.answered(agent, endpoint, 200, 1 + Math.random() * 4, round % 7 === 0 ? 'cpu=0.4, queue=2' : undefined);
      }
      for (const endpoint of endpoints) endpoint.inflight = Math.floor(Math.random() * 4);
      const picks = 2_000_000;
      let sink = 0;
      for (let i = 0; i < 200_000; i++) sink += balancer.pick(agent)!.inflight; // warm-up (JIT)
      const t0 = process.hrtime.bigint();
      for (let i = 0; i < picks; i++) sink += balancer.pick(agent)!.inflight;
      const t1 = process.hrtime.bigint();
      let nsPerObservation: number | undefined;
      if (policy === 'load-aware') {
        const observations = 1_000_000;
        const o0 = process.hrtime.bigint();
        for (let i = 0; i < observations; i++) balancer.answered(agent, endpoints[i % count]!, 200, 2, undefined);
        nsPerObservation = Number(process.hrtime.bigint() - o0) / observations;
      }
      if (sink === -1) log('unreachable');
      out.push({ endpoints: count, policy, nsPerPick: Number(t1 - t0) / picks, ...(nsPerObservation !== undefined ? { nsPerObservation } : {}) });
    }
  }
  return out;
}

// ====================================================================== orchestrator

type Scenario = 'healthy' | 'slow' | '503' | 'refusing';
type Policy = 'load-aware' | 'round-robin';

interface Phase {
  round: number;
  scenario: Scenario;
  policy: Policy;
  result: OpenLoopResult;
  /** share of the requests that reached endpoint 4 (refusing: attempts are not counted by the upstream) */
  badShare: number;
}

interface Options {
  rounds: number;
  duration: number;
  warmup: number;
  rate: number;
  slowMs: number;
  connections: number;
  scenarios: Scenario[];
  pin: 'split' | 'none';
  micro: boolean;
}

function options(): Options {
  const { values } = parseArgs({
    options: {
      rounds: { type: 'string', default: '2' },
      duration: { type: 'string', default: '8' },
      warmup: { type: 'string', default: '2' },
      rate: { type: 'string', default: '400' },
      'slow-ms': { type: 'string', default: '50' },
      connections: { type: 'string', default: '64' },
      scenarios: { type: 'string', default: 'healthy,slow,503,refusing' },
      pin: { type: 'string', default: os.availableParallelism() >= 2 ? 'split' : 'none' },
      'no-micro': { type: 'boolean', default: false },
      'micro-only': { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) {
    process.stdout.write('usage: node --import tsx bench/balancing.ts [--rounds 2] [--duration 8] [--warmup 2] [--rate 400] [--slow-ms 50]\n' +
      '       [--connections 64] [--scenarios healthy,slow,503,refusing] [--pin split|none] [--no-micro] [--micro-only]\n');
    process.exit(0);
  }
  const scenarios = values.scenarios.split(',').filter(Boolean) as Scenario[];
  for (const s of scenarios) if (!['healthy', 'slow', '503', 'refusing'].includes(s)) throw new Error(`unknown scenario ${s}`);
  return {
    rounds: Number(values.rounds),
    duration: Number(values.duration),
    warmup: Number(values.warmup),
    rate: Number(values.rate),
    slowMs: Number(values['slow-ms']),
    connections: Number(values.connections),
    scenarios: values['micro-only'] ? [] : scenarios,
    pin: values.pin === 'none' ? 'none' : 'split',
    micro: !values['no-micro'],
  };
}

class Upstreams {
  private acks = 0;
  constructor(readonly proc: Managed, readonly urls: string[]) {}

  async send(command: string): Promise<void> {
    const n = ++this.acks;
    this.proc.child.stdin!.write(command + '\n');
    await this.proc.waitFor(new RegExp(`^ack ${n}$`, 'm'), 10_000);
  }

  async hits(): Promise<number[]> {
    const before = this.proc.output().split('\nhits ').length;
    await this.send('stats');
    const parts = this.proc.output().split('\nhits ');
    if (parts.length <= before) throw new Error('no stats from the upstreams');
    return parts[parts.length - 1]!.split('\n')[0]!.split(',').map(Number);
  }
}

async function runPhase(o: Options, work: string, upstreams: Upstreams, serverCpus: string | undefined, clientCpu: string | undefined, round: number, scenario: Scenario, policy: Policy): Promise<Phase> {
  const slowIndex = 3;
  await upstreams.send('up 3');
  await upstreams.send(`set ${slowIndex} ${scenario === 'slow' ? o.slowMs : 0} ${scenario === '503' ? 503 : 200}`);
  if (scenario === 'refusing') await upstreams.send('down 3');

  const [plainPort, adminPort] = [await freePort(), await freePort()];
  const configFile = path.join(work, `dmsc-${round}-${scenario}-${policy}.yaml`);
  writeFileSync(
    configFile,
    [
      `listeners:`,
      `  tls: { enabled: false }`,
      `  plain: { host: 127.0.0.1, port: ${plainPort}, allowAnonymous: true }`,
      `  admin: { host: 127.0.0.1, port: ${adminPort} }`,
      `logging: { level: warn }`,
      `audit: { decisions: denials }`,
      `balancing: { policy: ${policy} }`,
      `policy: { defaults: { anonymous: allow } }`,
      `tenants:`,
      `  - name: bench`,
      `    agents:`,
      `      - { name: echo, endpoints: [${upstreams.urls.map((u) => `"${u}"`).join(', ')}] }`,
      ``,
    ].join('\n'),
  );
  const [cmd, args] = pinned(serverCpus, process.execPath, ['--import', 'tsx', SELF, 'gateway', '--config', configFile, '--home', path.join(work, 'home')]);
  const env: NodeJS.ProcessEnv = { ...process.env, DMSC_ADMIN_TOKEN: 'dmsc_adm_bench-balancing-0123456789', NODE_ENV: 'production' };
  delete env.DMSC_HOME;
  delete env.DMSC_CONFIG;
  const gateway = startProcess('gateway', cmd, args, { logFile: path.join(work, `gateway-${round}-${scenario}-${policy}.log`), env, cwd: ROOT });
  try {
    const url = (await gateway.waitFor(/local ingress \(HTTP\):\s+(http:\/\/\S+)/, 60_000))[1]!;
    await upstreams.hits(); // reset the counts
    const [lcmd, largs] = pinned(clientCpu, process.execPath, [
      '--import', 'tsx', path.join(ROOT, 'bench', 'openloop.ts'),
      '--url', `${url}/agents/bench/echo/`,
      '--rate', String(o.rate),
      '--duration', String(o.duration),
      '--warmup', String(o.warmup),
      '--connections', String(o.connections),
    ]);
    const load = startProcess('openloop', lcmd, largs, { logFile: path.join(work, `openloop-${round}-${scenario}-${policy}.log`), cwd: ROOT });
    const code = await load.exited;
    const line = load.output().split('\n').find((l) => l.startsWith('{'));
    if (code !== 0 || !line) throw new Error(`openloop failed (exit ${code}): ${load.output().slice(-1000)}`);
    const result = JSON.parse(line) as OpenLoopResult;
    const hits = await upstreams.hits();
    const total = hits.reduce((a, b) => a + b, 0);
    return { round, scenario, policy, result, badShare: total === 0 ? 0 : hits[slowIndex]! / total };
  } finally {
    await stopProcess(gateway);
  }
}

const median = (values: number[]) => {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
};
const fmt = (n: number, digits = 2) => (Number.isFinite(n) ? n.toFixed(digits) : 'n/a');

async function orchestrate(): Promise<void> {
  const o = options();
  installCleanup();
  const cpus = os.availableParallelism();
  const clientCpu = o.pin === 'split' && cpus >= 2 ? '0' : undefined;
  const serverCpus = o.pin === 'split' && cpus >= 2 ? `1-${cpus - 1}` : undefined;
  const lines: string[] = [];
  const phases: Phase[] = [];

  if (o.scenarios.length > 0) {
    const work = mkdtempSync(path.join(os.tmpdir(), 'dmsc-bench-balancing-'));
    try {
      const ports = [await freePort(), await freePort(), await freePort(), await freePort()];
      const [ucmd, uargs] = pinned(serverCpus, process.execPath, ['--import', 'tsx', SELF, 'upstreams', '--ports', ports.join(',')]);
      const proc = startProcess('upstreams', ucmd, uargs, { logFile: path.join(work, 'upstreams.log'), cwd: ROOT });
      await proc.waitFor(/^listening /m, 30_000);
      const upstreams = new Upstreams(proc, ports.map((p) => `http://127.0.0.1:${p}`));
      for (let round = 1; round <= o.rounds; round++) {
        for (const scenario of o.scenarios) {
          const order: Policy[] = round % 2 === 1 ? ['load-aware', 'round-robin'] : ['round-robin', 'load-aware'];
          for (const policy of order) {
            log(`round ${round}: ${scenario}, ${policy}`);
            const phase = await runPhase(o, work, upstreams, serverCpus, clientCpu, round, scenario, policy);
            const l = phase.result.latencyMs;
            log(`  p50 ${l.p50} ms, p99 ${l.p99} ms, non-2xx ${phase.result.non2xx}, errors ${phase.result.errors}, endpoint 4 got ${(phase.badShare * 100).toFixed(1)}%`);
            phases.push(phase);
          }
        }
      }
      await stopProcess(proc);
    } finally {
      rmSync(work, { recursive: true, force: true });
    }

    lines.push(
      `Open loop ${o.rate} req/s, ${o.duration} s measured after ${o.warmup} s warm-up per phase, ${o.rounds} round(s), medians; ` +
        `one agent with 4 endpoints; endpoint 4: slow = +${o.slowMs} ms, 503 = answers 503, refusing = connection refused ` +
        `(its share counts the warm-up too). ` +
        `CPUs: ${cpus}, pinning ${o.pin}${clientCpu ? ` (load generator on CPU ${clientCpu}, gateway + upstreams on ${serverCpus})` : ''}.`,
      '',
      '| scenario | policy | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | non-2xx | errors | endpoint 4 share |',
      '| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
    );
    const ratios: string[] = [];
    for (const scenario of o.scenarios) {
      const p99: Record<string, number> = {};
      for (const policy of ['load-aware', 'round-robin'] as const) {
        const mine = phases.filter((p) => p.scenario === scenario && p.policy === policy);
        if (mine.length === 0) continue;
        const m = (pick: (p: Phase) => number) => median(mine.map(pick));
        p99[policy] = m((p) => p.result.latencyMs.p99);
        lines.push(
          `| ${scenario} | ${policy} | ${fmt(m((p) => p.result.latencyMs.p50))} | ${fmt(m((p) => p.result.latencyMs.p90))} | ${fmt(p99[policy]!)} | ` +
            `${fmt(m((p) => p.result.latencyMs.p999))} | ${fmt(m((p) => p.result.latencyMs.max))} | ${m((p) => p.result.non2xx)} | ${m((p) => p.result.errors)} | ` +
            `${scenario === 'refusing' ? 'n/a' : `${fmt(m((p) => p.badShare * 100), 1)}%`} |`,
        );
      }
      if (p99['load-aware'] && p99['round-robin']) ratios.push(`${scenario}: p99 round-robin / load-aware = ${fmt(p99['round-robin'] / p99['load-aware'])}x`);
    }
    lines.push('', ...ratios.map((r) => `- ${r}`));
  }

  if (o.micro) {
    const micro = await microbench();
    lines.push('', 'Cost of one pick (this process, warm state, 2,000,000 picks):', '', '| endpoints | policy | ns per pick | ns per observation |', '| ---: | --- | ---: | ---: |');
    for (const m of micro) lines.push(`| ${m.endpoints} | ${m.policy} | ${fmt(m.nsPerPick, 0)} | ${m.nsPerObservation !== undefined ? fmt(m.nsPerObservation, 0) : ''} |`);
  }
  process.stdout.write(lines.join('\n') + '\n');
}

const mode = process.argv[2];
if (mode === 'upstreams') await upstreamsMain(process.argv.slice(3));
else if (mode === 'gateway') await gatewayMain(process.argv.slice(3));
else await orchestrate();
