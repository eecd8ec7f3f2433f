// Noisy-neighbour benchmark for per-tenant rate limits: does one tenant flooding the gateway hurt
// another tenant that stays within its limit?
//
//   npm run bench:noisy [-- --rounds 3 --duration 10 --rate-b 150 --limit 200 --factor 10 --decisions all]
//
// One gateway (`node bin/dmsc.js start`, the built CLI, as bench/run.ts starts it) with two tenants,
// `a` and `b`, each with a calling agent `client` and a target agent `echo` on its own upstream
// (bench/upstream.ts, fixed 1 KiB JSON), and the same `limits.tenant` rate. Every request is made
// with a real identity: the TLS listener requires client certificates (`mtls.enabled`), and each
// tenant's `client` enrolls like an agent would (Admin API bootstrap token, a fresh P-256 key and CSR,
// POST /enroll), so A's requests are counted against tenant a's own bucket.
//
// Phases, interleaved (baseline/noisy in round 1, noisy/baseline in round 2, ...):
//   baseline  B alone: open loop at --rate-b req/s to b/echo for --warmup + --duration s
//   noisy     the same B load while A sends --factor x --limit req/s (open loop) to a/echo; A starts
//             first and runs past B's end, so B's measured window is under A's full load
// Each load generator is its own process (this file in `client` mode): requests leave on a fixed
// schedule whatever the answers do, latency is measured from each request's due time (no coordinated
// omission; the bench/openloop.ts method, which takes no client certificate), and each client also
// reports how late its sends left (its own stalls) and its CPU time. The gateway's CPU time (from
// /proc), each CPU's busy and steal time over B's measured window are reported beside B's figures.
// CPU pinning (default on >= 2 CPUs, like bench/run.ts): load generators on CPU 0, the gateway and
// the upstreams on the other CPU(s); A's generator runs at nice 19 (--nice-a) so that it does not
// delay B's on the CPU they share. --loop-probe measures the gateway's event-loop delay per window;
// --cpu-prof profiles the gateway and charges the functions' time to A's requests.
//
// Results: a markdown table on stdout (or JSON with --json) and JSON + markdown + logs in bench/results/.
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createHistogram, performance, type RecordableHistogram } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Pool, request } from 'undici';
import { freePort, hasBinary, installCleanup, pinned, startProcess, stopAll, stopProcess, type Managed } from './procs.js';
import { formatSummary, summarise } from './profile-summary.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const SELF = fileURLToPath(import.meta.url);
const TENANTS = ['a', 'b'] as const;
type TenantName = (typeof TENANTS)[number];

const log = (line: string) => process.stderr.write(`[noisy] ${line}\n`);
const fmt = (n: number, digits = 2) => (Number.isFinite(n) ? n.toFixed(digits) : 'n/a');
const fmtInt = (n: number) => (Number.isFinite(n) ? Math.round(n).toLocaleString('en-US') : 'n/a');

/** Nearest-rank percentile. */
function percentileOf(values: number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

function median(values: number[]): number {
  const sorted = values.filter((v) => Number.isFinite(v)).sort((a, b) => a - b);
  if (sorted.length === 0) return NaN;
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

// ====================================================================== client mode (one process per load)

export interface ClientResult {
  label: string;
  rate: number;
  durationS: number;
  sent: number;
  /** 2xx answers */
  ok: number;
  /** 429 answers */
  limited: number;
  /** still waiting one second after the window (held back by rate-limit shaping), then aborted */
  abandoned: number;
  /** not sent because --max-pending requests were already outstanding */
  shed: number;
  /** other non-2xx answers */
  otherStatus: Record<string, number>;
  /** socket/protocol errors (no answer) */
  errors: number;
  achievedRate: number;
  /** seconds from the first send to the last answer (longer than durationS when the client or gateway fell behind) */
  elapsedS: number;
  /** latency of every answer (any status), from the request's due time */
  latencyMs: { p50: number; p90: number; p99: number; p999: number; max: number; mean: number };
  /** latency of 2xx answers only */
  okLatencyMs: { p50: number; p99: number; p999: number };
  /** how late each request left this process after its due time: the load generator's own stalls */
  sendLagMs: { p50: number; p99: number; max: number };
  /** this process's CPU time over the measured phase, % of one CPU */
  cpuPct: number;
  /** every answer's latency (ms, µs precision), with --samples: B's, pooled over phases by the orchestrator */
  samplesMs?: number[];
}

const msOf = (ns: number) => Math.round(ns / 1e3) / 1e3;

/** Spin this long before a due time instead of sleeping (timers fire up to ~1 ms late). */
const SPIN_MS = 2;

async function openLoopPhase(pool: Pool, urlPath: string, rate: number, seconds: number, precise: boolean, maxPending = 0, samples?: number[]) {
  const all = createHistogram();
  const okHist = createHistogram();
  const lag = createHistogram();
  const otherStatus: Record<string, number> = {};
  let sent = 0;
  let done = 0;
  let ok = 0;
  let limited = 0;
  let errors = 0;
  let abandoned = 0;
  // With maxPending, a request due while that many are outstanding is not sent ("shed"): a client
  // held back by the gateway then keeps a bounded backlog instead of one that eats its CPU.
  let shed = 0;
  let outstanding = 0;
  const total = Math.max(1, Math.round(rate * seconds));
  const intervalMs = 1000 / rate;
  const cpuBefore = process.cpuUsage();
  const start = performance.now();
  let lastSend = start;
  const record = (h: RecordableHistogram, ms: number) => h.record(Math.max(1, Math.round(ms * 1e6)));
  // A client held back by the gateway (rate-limit shaping) would otherwise keep sending its backlog
  // into later phases: one second after its window it abandons what is still outstanding.
  const abandon = new AbortController();
  const abandonTimer = setTimeout(() => abandon.abort(), seconds * 1000 + 1000);
  await new Promise<void>((resolve) => {
    const finish = () => {
      if (++done === total) resolve();
    };
    const fire = (due: number) => {
      if (maxPending > 0 && outstanding >= maxPending) {
        shed++;
        finish();
        return;
      }
      outstanding++;
      lastSend = performance.now();
      record(lag, lastSend - due);
      pool
        .request({ path: urlPath, method: 'GET', signal: abandon.signal })
        .then(async (res) => {
          await res.body.dump({ limit: 1 << 20 });
          const latency = performance.now() - due;
          record(all, latency);
          samples?.push(Math.round(latency * 1000) / 1000);
          if (res.statusCode >= 200 && res.statusCode < 300) {
            ok++;
            record(okHist, latency);
          } else if (res.statusCode === 429) limited++;
          else otherStatus[res.statusCode] = (otherStatus[res.statusCode] ?? 0) + 1;
        })
        .catch(() => {
          if (abandon.signal.aborted) abandoned++;
          else errors++;
        })
        .finally(() => {
          outstanding--;
          finish();
        });
    };
    // Close to a due time the loop spins (setImmediate) so that the request leaves within microseconds
    // of it; further away it sleeps, so that a load generator at a low rate does not burn its CPU (A's
    // and B's generators share one). With `precise` false (A: the flood) it only ever sleeps: its
    // requests leave in batches every ~1 ms, each measured from its own due time all the same.
    const tick = () => {
      const now = performance.now();
      while (sent < total && start + sent * intervalMs <= now) {
        fire(start + sent * intervalMs);
        sent++;
      }
      if (sent >= total) return;
      const wait = start + sent * intervalMs - performance.now();
      if (precise && wait < SPIN_MS) setImmediate(tick);
      else setTimeout(tick, precise ? wait - SPIN_MS : Math.max(0, wait));
    };
    tick();
  });
  clearTimeout(abandonTimer);
  const elapsedS = (performance.now() - start) / 1000;
  const cpu = process.cpuUsage(cpuBefore);
  const pct = (h: RecordableHistogram, p: number) => (h.count > 0 ? msOf(h.percentile(p)) : NaN);
  return {
    sent,
    ok,
    limited,
    otherStatus,
    errors,
    abandoned,
    shed,
    // the rate requests actually left at (lower than asked when this process was starved of CPU)
    achievedRate: Math.round((sent / ((lastSend - start) / 1000 + 1 / rate)) * 10) / 10,
    elapsedS: Math.round(elapsedS * 1000) / 1000,
    latencyMs: {
      p50: pct(all, 50),
      p90: pct(all, 90),
      p99: pct(all, 99),
      p999: pct(all, 99.9),
      max: all.count > 0 ? msOf(all.max) : NaN,
      mean: all.count > 0 ? msOf(all.mean) : NaN,
    },
    okLatencyMs: { p50: pct(okHist, 50), p99: pct(okHist, 99), p999: pct(okHist, 99.9) },
    sendLagMs: { p50: pct(lag, 50), p99: pct(lag, 99), max: lag.count > 0 ? msOf(lag.max) : NaN },
    cpuPct: Math.round(((cpu.user + cpu.system) / 1e3 / (elapsedS * 1000)) * 1000) / 10,
    ...(samples ? { samplesMs: samples } : {}),
  };
}

/** `noisy.ts client --url U --rate R --duration S --warmup W --connections N --cert F --key F --ca F --label L` */
async function clientMain(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      url: { type: 'string' },
      rate: { type: 'string' },
      duration: { type: 'string' },
      warmup: { type: 'string', default: '0' },
      connections: { type: 'string', default: '8' },
      cert: { type: 'string' },
      key: { type: 'string' },
      ca: { type: 'string' },
      label: { type: 'string', default: 'client' },
      coarse: { type: 'boolean', default: false },
      'max-pending': { type: 'string', default: '0' },
      samples: { type: 'boolean', default: false },
    },
  });
  if (!values.url || !values.rate || !values.duration || !values.cert || !values.key || !values.ca) {
    throw new Error('client mode needs --url, --rate, --duration, --cert, --key and --ca');
  }
  const target = new URL(values.url);
  const rate = Number(values.rate);
  const duration = Number(values.duration);
  const warmup = Number(values.warmup);
  const pool = new Pool(target.origin, {
    connections: Number(values.connections),
    pipelining: 1,
    keepAliveTimeout: 120_000,
    connect: { ca: readFileSync(values.ca), cert: readFileSync(values.cert), key: readFileSync(values.key) },
  });
  // Loaded and compiled: wait for the orchestrator's "go" so that A and B start when it says.
  process.stdout.write('ready\n');
  await new Promise<void>((resolve, reject) => {
    let buffered = '';
    const onData = (chunk: Buffer) => {
      buffered += chunk.toString('utf8');
      if (buffered.includes('go\n')) {
        process.stdin.off('data', onData);
        resolve();
      }
    };
    process.stdin.on('data', onData);
    process.stdin.once('end', () => reject(new Error('stdin closed before "go"')));
  });
  process.stdin.on('end', () => process.exit(0)); // the orchestrator went away: no orphan
  const urlPath = target.pathname + target.search;
  const maxPending = Number(values['max-pending']);
  if (warmup > 0) await openLoopPhase(pool, urlPath, rate, warmup, !values.coarse, maxPending);
  process.stdout.write('measuring\n');
  const result = await openLoopPhase(pool, urlPath, rate, duration, !values.coarse, maxPending, values.samples ? [] : undefined);
  await pool.close();
  const out: ClientResult = { label: values.label, rate, durationS: duration, ...result };
  process.stdout.write('RESULT ' + JSON.stringify(out) + '\n');
  process.exit(0);
}

// ====================================================================== orchestrator

const HELP = `Usage: npm run bench:noisy -- [options]
       node --import tsx bench/noisy.ts [options]

  --rounds N            interleaved rounds of (baseline, noisy); medians reported (default 3)
  --duration S          measured seconds of B's load per phase (default 10)
  --warmup S            B's warm-up seconds before each measured window (default 2)
  --rate-b N            B's open-loop rate, req/s (default 150; should stay below --limit)
  --limit N             limits.tenant.requestsPerSecond of both tenants (default 200)
  --burst N             limits.tenant.burst of both tenants (default 50)
  --a-max-pending N     A's generator sends nothing new while N requests are outstanding (counted as shed; default 0: no bound)
  --max-delay-ms N      limits.tenant.maxDelayMs of both tenants: shape (wait for a token) instead of refusing at once (default 0)
  --factor N            A sends N x --limit req/s in the noisy phase (default 10)
  --baseline-factor N   A sends N x --limit req/s in the baseline phase too (default 0: B alone); 1 measures
                        what A's excess over its limit costs B, apart from A's allowed traffic
  --decisions MODE      audit.decisions: all | denials (default all)
  --connections-a N     A's keep-alive connections (default 32)
  --connections-b N     B's keep-alive connections (default 8)
  --nice-a N            A's load generator runs at this nice level, so that it does not delay B's on
                        the CPU they share (default 19; 0 to treat them alike)
  --a-path PATH         what A floods (default /agents/a/echo/); e.g. /agents/a/missing/ (a 404 from
                        routing, before policy, limits and audit) as a control for the refusal's cost
  --pin split|none      split: load generators on CPU 0, gateway + upstreams on the rest (default split on >= 2 CPUs)
  --cpu-prof            run the gateway under node --cpu-prof and summarise B's measured windows
  --loop-probe          measure the gateway's event-loop delay (monitorEventLoopDelay, 10 ms resolution,
                        loaded with --import) in each of B's measured windows: shows stalls
  --gateway-node-args S extra node options for the gateway, e.g. "--trace-gc" (output in its log)
  --json                print the result as JSON on stdout instead of the markdown table
  --out DIR             results directory (default bench/results)
  --help
`;

interface Options {
  rounds: number;
  duration: number;
  warmup: number;
  rateB: number;
  limit: number;
  burst: number;
  maxDelayMs: number;
  factor: number;
  baselineFactor: number;
  decisions: 'all' | 'denials';
  connectionsA: number;
  aMaxPending: number;
  connectionsB: number;
  niceA: number;
  aPath: string;
  pin: 'split' | 'none';
  cpuProf: boolean;
  loopProbe: boolean;
  gatewayNodeArgs: string[];
  json: boolean;
  out: string;
}

function parseOptionValues() {
  return parseArgs({
    options: {
      rounds: { type: 'string', default: '3' },
      duration: { type: 'string', default: '10' },
      warmup: { type: 'string', default: '2' },
      'rate-b': { type: 'string', default: '150' },
      limit: { type: 'string', default: '200' },
      burst: { type: 'string', default: '50' },
      'max-delay-ms': { type: 'string', default: '0' },
      factor: { type: 'string', default: '10' },
      'baseline-factor': { type: 'string', default: '0' },
      decisions: { type: 'string', default: 'all' },
      'connections-a': { type: 'string', default: '32' },
      'a-max-pending': { type: 'string', default: '0' },
      'connections-b': { type: 'string', default: '8' },
      'nice-a': { type: 'string', default: '19' },
      'a-path': { type: 'string', default: '/agents/a/echo/' },
      pin: { type: 'string', default: os.availableParallelism() >= 2 ? 'split' : 'none' },
      'cpu-prof': { type: 'boolean', default: false },
      'loop-probe': { type: 'boolean', default: false },
      'gateway-node-args': { type: 'string', default: '' },
      json: { type: 'boolean', default: false },
      out: { type: 'string', default: path.join(ROOT, 'bench', 'results') },
      help: { type: 'boolean', default: false },
    },
  });
}

function parseOptions(): Options {
  const fail = (message: string): never => {
    console.error(`bench:noisy: ${message} (see --help)`);
    process.exit(2);
  };
  let parsed;
  try {
    parsed = parseOptionValues();
  } catch (err) {
    return fail((err as Error).message.split('\n')[0]!);
  }
  const values = parsed.values;
  if (values.help) {
    process.stdout.write(HELP);
    process.exit(0);
  }
  const num = (name: keyof typeof values, { integer = false, min = Number.MIN_VALUE } = {}): number => {
    const raw = String(values[name]);
    const n = Number(raw);
    if (!Number.isFinite(n) || n < min || (integer && !Number.isInteger(n))) {
      fail(`--${name} must be ${integer ? 'a whole number' : 'a number'} ${min === Number.MIN_VALUE ? 'greater than 0' : `>= ${min}`} (got "${raw}")`);
    }
    return n;
  };
  const decisions = values.decisions;
  if (decisions !== 'all' && decisions !== 'denials') fail(`--decisions must be all or denials (got "${decisions}")`);
  if (values.pin !== 'split' && values.pin !== 'none') fail(`--pin must be split or none (got "${values.pin}")`);
  const options: Options = {
    rounds: num('rounds', { integer: true, min: 1 }),
    duration: num('duration'),
    warmup: num('warmup', { min: 0 }),
    rateB: num('rate-b'),
    limit: num('limit'),
    burst: num('burst', { integer: true, min: 1 }),
    maxDelayMs: num('max-delay-ms', { integer: true, min: 0 }),
    factor: num('factor'),
    baselineFactor: num('baseline-factor', { min: 0 }),
    decisions: decisions as 'all' | 'denials',
    connectionsA: num('connections-a', { integer: true, min: 1 }),
    aMaxPending: num('a-max-pending', { integer: true, min: 0 }),
    connectionsB: num('connections-b', { integer: true, min: 1 }),
    niceA: num('nice-a', { integer: true, min: -20 }),
    aPath: values['a-path'].startsWith('/') ? values['a-path'] : fail(`--a-path must start with "/" (got "${values['a-path']}")`),
    pin: values.pin as 'split' | 'none',
    cpuProf: values['cpu-prof'],
    loopProbe: values['loop-probe'],
    gatewayNodeArgs: values['gateway-node-args'].split(/\s+/).filter(Boolean),
    json: values.json,
    out: path.resolve(values.out),
  };
  if (options.rateB >= options.limit) log(`WARNING: --rate-b ${options.rateB} is not below --limit ${options.limit}: B will be refused too`);
  return options;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------- CPU accounting from /proc

const CLK_TCK = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim()) || 100;

/** utime + stime of a process in ms (all its threads), or NaN. */
function processCpuMs(pid: number | undefined): number {
  if (pid === undefined) return NaN;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // fields[0] is field 3 (state): utime is field 14, stime field 15
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / CLK_TCK;
  } catch {
    return NaN;
  }
}

interface CpuTimes {
  busy: number;
  steal: number;
  total: number;
}

/** Per-CPU jiffies from /proc/stat: busy (not idle/iowait/steal), steal and total. */
function cpuTimes(): Map<string, CpuTimes> {
  const out = new Map<string, CpuTimes>();
  try {
    for (const line of readFileSync('/proc/stat', 'utf8').split('\n')) {
      const m = /^(cpu\d*)\s+(.*)$/.exec(line);
      if (!m) continue;
      const [user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0] = m[2]!.split(/\s+/).map(Number);
      const total = user + nice + system + idle + iowait + irq + softirq + steal;
      out.set(m[1]!, { busy: user + nice + system + irq + softirq, steal, total });
    }
  } catch {
    /* not Linux: no figures */
  }
  return out;
}

function cpuDelta(before: Map<string, CpuTimes>, after: Map<string, CpuTimes>): Record<string, { busyPct: number; stealPct: number }> {
  const out: Record<string, { busyPct: number; stealPct: number }> = {};
  for (const [name, a] of after) {
    const b = before.get(name);
    if (!b || name === 'cpu') continue;
    const total = a.total - b.total || 1;
    out[name] = { busyPct: Math.round(((a.busy - b.busy) / total) * 1000) / 10, stealPct: Math.round(((a.steal - b.steal) / total) * 1000) / 10 };
  }
  return out;
}

// ---------------------------------------------------------------- processes

interface Env {
  options: Options;
  work: string;
  logDir: string;
  clientCpu: string | undefined;
  serverCpus: string | undefined;
}

async function startUpstream(env: Env, name: string): Promise<{ url: string; proc: Managed }> {
  const port = await freePort();
  const [cmd, args] = pinned(env.serverCpus, process.execPath, ['--import', 'tsx', path.join(ROOT, 'bench', 'upstream.ts'), String(port)]);
  const proc = startProcess(name, cmd, args, { logFile: path.join(env.logDir, `${name}.log`), cwd: ROOT });
  const m = await proc.waitFor(/listening (\d+)/, 20_000);
  return { url: `http://127.0.0.1:${m[1]}`, proc };
}

/**
 * Loaded into the gateway with --import (a data: URL, no file): a libuv timer every 10 ms records how
 * late it fires (event-loop delay: a 50 ms synchronous block shows as one sample ~50 ms late); SIGUSR2
 * prints the histogram since the last SIGUSR2 and resets it.
 */
const LOOP_PROBE = `import { monitorEventLoopDelay } from 'node:perf_hooks';
const h = monitorEventLoopDelay({ resolution: 10 });
h.enable();
// The histogram holds the time between two timer callbacks (10 ms when the loop is free): the lateness is what exceeds 10 ms.
const ms = (ns) => Math.max(0, Math.round((ns - 1e7) / 1e4) / 100);
process.on('SIGUSR2', () => {
  const out = { count: h.count, p50: ms(h.percentile(50)), p99: ms(h.percentile(99)), p999: ms(h.percentile(99.9)), max: ms(h.max), mean: ms(h.mean) };
  process.stderr.write('NOISY-LOOP ' + JSON.stringify(out) + '\\n');
  h.reset();
});`;

export interface LoopDelay {
  count: number;
  p50: number;
  p99: number;
  p999: number;
  max: number;
  mean: number;
}

/** Asks the loop probe for its histogram since the last ask (and resets it); undefined without the probe. */
async function loopDelay(gw: GatewayProc, enabled: boolean): Promise<LoopDelay | undefined> {
  if (!enabled || gw.proc.child.pid === undefined) return undefined;
  const before = gw.proc.output().split('NOISY-LOOP ').length;
  process.kill(gw.proc.child.pid, 'SIGUSR2');
  for (let i = 0; i < 100; i++) {
    const parts = gw.proc.output().split('NOISY-LOOP ');
    if (parts.length > before) return JSON.parse(parts[parts.length - 1]!.split('\n')[0]!) as LoopDelay;
    await sleep(10);
  }
  return undefined;
}

interface GatewayProc {
  tls: string;
  adminUrl: string;
  adminToken: string;
  caFile: string;
  proc: Managed;
}

async function startGateway(env: Env, upstreams: Record<TenantName, string>, profileDir: string | undefined): Promise<GatewayProc> {
  const { options } = env;
  const [tlsPort, adminPort] = [await freePort(), await freePort()];
  const home = path.join(env.work, 'home');
  const configFile = path.join(env.work, 'dmsc.yaml');
  const tenantLines = TENANTS.flatMap((t) => [
    `  - name: ${t}`,
    `    limits: { tenant: { requestsPerSecond: ${options.limit}, burst: ${options.burst}, maxDelayMs: ${options.maxDelayMs} } }`,
    `    agents:`,
    `      - { name: client, endpoints: ["${upstreams[t]}"] }`,
    `      - { name: echo, endpoints: ["${upstreams[t]}"] }`,
  ]);
  writeFileSync(
    configFile,
    [
      `listeners:`,
      `  tls: { host: 127.0.0.1, port: ${tlsPort}, mtls: { enabled: true } }`,
      `  plain: { enabled: false }`,
      `  admin: { host: 127.0.0.1, port: ${adminPort} }`,
      `logging: { level: warn }`,
      `audit: { decisions: ${options.decisions} }`,
      `tenants:`,
      ...tenantLines,
      ``,
    ].join('\n'),
  );
  const nodeArgs = [
    ...(profileDir ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`] : []),
    ...(options.loopProbe ? [`--import=data:text/javascript,${encodeURIComponent(LOOP_PROBE)}`] : []),
    ...options.gatewayNodeArgs,
  ];
  const [cmd, args] = pinned(env.serverCpus, process.execPath, [...nodeArgs, path.join(ROOT, 'bin', 'dmsc.js'), 'start', '--config', configFile, '--home', home]);
  const adminToken = 'dmsc_adm_bench-' + Math.random().toString(36).slice(2);
  const childEnv: NodeJS.ProcessEnv = { ...process.env, DMSC_ADMIN_TOKEN: adminToken, NODE_ENV: 'production' };
  delete childEnv.DMSC_HOME;
  delete childEnv.DMSC_CONFIG;
  const proc = startProcess('gateway', cmd, args, { logFile: path.join(env.logDir, 'gateway.log'), env: childEnv, cwd: env.work });
  const tls = (await proc.waitFor(/agent ingress \(HTTPS[^)]*\):\s+(https:\/\/\S+)/, 60_000))[1]!;
  const caFile = (await proc.waitFor(/trust \(root CA\):\s+(\S+)/, 5_000))[1]!;
  return { tls, adminUrl: `http://127.0.0.1:${adminPort}`, adminToken, caFile, proc };
}

interface Credentials {
  certFile: string;
  keyFile: string;
}

/** Enrolls `<tenant>/client` the way an agent does: bootstrap token, local key + CSR, POST /enroll. */
async function enroll(env: Env, gw: GatewayProc, tenant: TenantName): Promise<Credentials> {
  const { generateKeyAndCsr } = await import('../src/identity/keygen.js');
  const tokenRes = await request(`${gw.adminUrl}/admin/v1/tenants/${tenant}/agents/client/bootstrap-tokens`, {
    method: 'POST',
    headers: { authorization: `Bearer ${gw.adminToken}`, 'content-type': 'application/json' },
    body: JSON.stringify({ ttlMs: 600_000 }),
  });
  const tokenBody = (await tokenRes.body.json()) as { token?: string };
  if (tokenRes.statusCode !== 201 || !tokenBody.token) throw new Error(`bootstrap token for ${tenant}/client: ${tokenRes.statusCode} ${JSON.stringify(tokenBody)}`);
  const { keyPem, csrPem } = await generateKeyAndCsr('client');
  const { Agent } = await import('undici');
  const dispatcher = new Agent({ connect: { ca: readFileSync(gw.caFile) } });
  try {
    const res = await request(`${gw.tls}/enroll`, {
      method: 'POST',
      dispatcher,
      headers: { authorization: `Bearer ${tokenBody.token}`, 'content-type': 'application/pkcs10' },
      body: csrPem,
    });
    const chain = await res.body.text();
    if (res.statusCode !== 200 && res.statusCode !== 201) throw new Error(`enroll ${tenant}/client: ${res.statusCode} ${chain.slice(0, 300)}`);
    const certFile = path.join(env.work, `${tenant}-client.crt`);
    const keyFile = path.join(env.work, `${tenant}-client.key`);
    writeFileSync(certFile, chain);
    writeFileSync(keyFile, keyPem, { mode: 0o600 });
    // The whole chain works: an authenticated request reaches the tenant's upstream.
    const probe = new Agent({ connect: { ca: readFileSync(gw.caFile), cert: chain, key: keyPem } });
    const check = await request(`${gw.tls}/agents/${tenant}/echo/`, { dispatcher: probe });
    const body = await check.body.arrayBuffer();
    await probe.close();
    if (check.statusCode !== 200 || body.byteLength !== 1024) throw new Error(`${tenant}/client -> ${tenant}/echo: status ${check.statusCode}, ${body.byteLength} bytes`);
    return { certFile, keyFile };
  } finally {
    await dispatcher.close();
  }
}

function startClient(
  env: Env,
  name: string,
  url: string,
  rate: number,
  durationS: number,
  warmupS: number,
  connections: number,
  creds: Credentials,
  caFile: string,
  nice: number,
  coarse: boolean,
  maxPending = 0,
): Managed {
  const nodeArgs = [
    '--import', 'tsx', SELF, 'client',
    ...(coarse ? ['--coarse'] : ['--samples']),
    ...(maxPending > 0 ? ['--max-pending', String(maxPending)] : []),
    '--url', url,
    '--rate', String(rate),
    '--duration', String(durationS),
    '--warmup', String(warmupS),
    '--connections', String(connections),
    '--cert', creds.certFile,
    '--key', creds.keyFile,
    '--ca', caFile,
    '--label', name,
  ];
  const [node, args] = nice !== 0 ? ['nice', ['-n', String(nice), process.execPath, ...nodeArgs]] : [process.execPath, nodeArgs];
  const [cmd, full] = pinned(env.clientCpu, node, args);
  return startProcess(name, cmd, full, { logFile: path.join(env.logDir, `${name}.log`), cwd: ROOT });
}

async function resultOf(proc: Managed): Promise<ClientResult> {
  const code = await proc.exited;
  const m = /^RESULT (.*)$/m.exec(proc.output());
  if (code !== 0 || !m) throw new Error(`${proc.name} failed (exit ${code}): ${proc.output().slice(-2000)}`);
  return JSON.parse(m[1]!) as ClientResult;
}

// ---------------------------------------------------------------- phases

interface PhaseResult {
  round: number;
  phase: 'baseline' | 'noisy';
  b: ClientResult;
  a?: ClientResult;
  /** gateway CPU time over B's measured window, % of one CPU */
  gatewayCpuPct: number;
  /** gateway CPU ms over B's measured window */
  gatewayCpuMs: number;
  /** the gateway's event-loop delay over B's measured window (--loop-probe) */
  gatewayLoopDelayMs?: LoopDelay;
  windowS: number;
  cpus: Record<string, { busyPct: number; stealPct: number }>;
  /** monotonic µs of B's measured window (for the CPU profile) */
  window: { fromUs: number; toUs: number };
}

const monoUs = () => Number(process.hrtime.bigint() / 1000n);

async function runPhase(env: Env, gw: GatewayProc, round: number, phase: 'baseline' | 'noisy', creds: Record<TenantName, Credentials>): Promise<PhaseResult> {
  const { options } = env;
  const tag = `r${round}-${phase}`;
  const b = startClient(env, `b-${tag}`, `${gw.tls}/agents/b/echo/`, options.rateB, options.duration, options.warmup, options.connectionsB, creds.b, gw.caFile, 0, false);
  // A runs from before B's warm-up until after B's measured window ends.
  const aSeconds = options.warmup + options.duration + 1.5;
  const aRate = options.limit * (phase === 'noisy' ? options.factor : options.baselineFactor);
  const a =
    aRate > 0
      ? startClient(env, `a-${tag}`, gw.tls + options.aPath, aRate, aSeconds, 0, options.connectionsA, creds.a, gw.caFile, options.niceA, true, options.aMaxPending)
      : undefined;
  await Promise.all([b.waitFor(/^ready$/m, 30_000), a?.waitFor(/^ready$/m, 30_000)]);
  if (a) {
    a.child.stdin!.write('go\n');
    await sleep(250); // A's connections are open and its flood is on before B starts
  }
  b.child.stdin!.write('go\n');
  await b.waitFor(/^measuring$/m, (options.warmup + 30) * 1000);
  await loopDelay(gw, options.loopProbe); // resets the histogram
  const fromUs = monoUs();
  const cpu0 = cpuTimes();
  const gw0 = processCpuMs(gw.proc.child.pid);
  const bResult = await resultOf(b);
  const gw1 = processCpuMs(gw.proc.child.pid);
  const gatewayLoopDelayMs = await loopDelay(gw, options.loopProbe);
  const cpu1 = cpuTimes();
  const toUs = monoUs();
  const aResult = a ? await resultOf(a) : undefined;
  const windowS = (toUs - fromUs) / 1e6;
  return {
    round,
    phase,
    b: bResult,
    ...(aResult ? { a: aResult } : {}),
    gatewayCpuMs: gw1 - gw0,
    ...(gatewayLoopDelayMs ? { gatewayLoopDelayMs } : {}),
    gatewayCpuPct: Math.round(((gw1 - gw0) / (windowS * 1000)) * 1000) / 10,
    windowS: Math.round(windowS * 100) / 100,
    cpus: cpuDelta(cpu0, cpu1),
    window: { fromUs, toUs },
  };
}

// ---------------------------------------------------------------- CPU profile: inclusive time

interface CpuProfile {
  nodes: Array<{ id: number; callFrame: { functionName: string; url: string; lineNumber: number }; children?: number[] }>;
  startTime: number;
  samples?: number[];
  timeDeltas?: number[];
}

/**
 * Inclusive ("total") time of the gateway's own functions (dist/) and of a few Node internals that
 * matter here, over the given windows: for each sample, every distinct function on its stack is
 * charged once. `busyMs` is the non-idle time in the windows.
 */
function inclusiveTimes(file: string, windows: Array<{ fromUs: number; toUs: number }>): { busyUs: number; totals: Map<string, number> } {
  const profile = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const parent = new Map<number, number>();
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const interesting = (url: string) => url.includes('/dist/') || url.startsWith('node:_tls') || url.startsWith('node:tls') || url.includes('better-sqlite3');
  const labelOf = (id: number) => {
    const f = byId.get(id)!.callFrame;
    const where = f.url.includes('/dist/') ? 'dist/' + f.url.slice(f.url.indexOf('/dist/') + 6) : f.url.slice(f.url.lastIndexOf('node_modules/') + 1 || 0);
    return `${f.functionName || '(anonymous)'} ${where}:${f.lineNumber + 1}`;
  };
  const totals = new Map<string, number>();
  let busyUs = 0;
  let t = profile.startTime;
  const samples = profile.samples ?? [];
  const deltas = profile.timeDeltas ?? [];
  for (let i = 0; i < samples.length; i++) {
    t += deltas[i] ?? 0;
    if (!windows.some((w) => t >= w.fromUs && t <= w.toUs)) continue;
    const us = Math.max(0, deltas[i + 1] ?? 0);
    const leaf = samples[i]!;
    if (byId.get(leaf)?.callFrame.functionName === '(idle)') continue;
    busyUs += us;
    const seen = new Set<string>();
    for (let id: number | undefined = leaf; id !== undefined; id = parent.get(id)) {
      const node = byId.get(id)!;
      if (!interesting(node.callFrame.url)) continue;
      const label = labelOf(id);
      if (seen.has(label)) continue;
      seen.add(label);
      totals.set(label, (totals.get(label) ?? 0) + us);
    }
  }
  return { busyUs, totals };
}

interface ProfileRowCompared {
  name: string;
  /** inclusive ms in the noisy windows, and % of their busy time */
  noisyMs: number;
  noisyPct: number;
  /** inclusive ms in the baseline windows, scaled to the noisy windows' length */
  baselineMs: number;
  /** (noisy - scaled baseline) per request A sent during the noisy windows */
  usPerA: number;
}

function compareProfiles(
  noisy: { busyUs: number; totals: Map<string, number> },
  baseline: { busyUs: number; totals: Map<string, number> },
  scale: number,
  aRequests: number,
  top: number,
): ProfileRowCompared[] {
  const round1 = (n: number) => Math.round(n * 10) / 10;
  return [...noisy.totals]
    .sort((x, y) => y[1] - x[1])
    .slice(0, top)
    .map(([name, us]) => {
      const base = (baseline.totals.get(name) ?? 0) * scale;
      return {
        name,
        noisyMs: round1(us / 1000),
        noisyPct: round1((us / (noisy.busyUs || 1)) * 100),
        baselineMs: round1(base / 1000),
        usPerA: round1((us - base) / (aRequests || 1)),
      };
    });
}

// ---------------------------------------------------------------- report

function commandLine(): string {
  const args = process.argv.slice(2).join(' ');
  if (process.env.npm_lifecycle_event === 'bench:noisy') return `npm run bench:noisy${args ? ' -- ' + args : ''}`;
  return `node --import tsx bench/noisy.ts${args ? ' ' + args : ''}`;
}

function summarisePhases(results: PhaseResult[], options: Options) {
  const base = results.filter((r) => r.phase === 'baseline');
  const noisy = results.filter((r) => r.phase === 'noisy');
  const stats = (rs: PhaseResult[]) => ({
    p50: median(rs.map((r) => r.b.latencyMs.p50)),
    p99: median(rs.map((r) => r.b.latencyMs.p99)),
    p999: median(rs.map((r) => r.b.latencyMs.p999)),
    sent: rs.reduce((s, r) => s + r.b.sent, 0),
    ok: rs.reduce((s, r) => s + r.b.ok, 0),
    gatewayCpuPct: median(rs.map((r) => r.gatewayCpuPct)),
    bSendLagP99: median(rs.map((r) => r.b.sendLagMs.p99)),
  });
  const baseline = stats(base);
  const under = stats(noisy);
  const pairRatios = noisy.map((n) => {
    const b = base.find((r) => r.round === n.round);
    return b ? n.b.latencyMs.p99 / b.b.latencyMs.p99 : NaN;
  });
  const aSent = noisy.reduce((s, r) => s + (r.a?.sent ?? 0), 0);
  const aLimited = noisy.reduce((s, r) => s + (r.a?.limited ?? 0), 0);
  const aOk = noisy.reduce((s, r) => s + (r.a?.ok ?? 0), 0);
  const aOther = noisy.reduce((s, r) => s + (r.a?.errors ?? 0) + Object.values(r.a?.otherStatus ?? {}).reduce((x, y) => x + y, 0), 0);
  // Gateway CPU per A request: the noisy window's extra CPU over the baseline's, per A request in it.
  const extraCpuUsPerA = median(
    noisy.map((n) => {
      const b = base.find((r) => r.round === n.round);
      if (!b || !n.a) return NaN;
      const extraMs = n.gatewayCpuMs - (b.gatewayCpuMs / b.windowS) * n.windowS;
      return (extraMs * 1000) / (n.a.achievedRate * n.windowS);
    }),
  );
  const cpuUsPerB = median(base.map((b) => (b.gatewayCpuMs * 1000) / (b.b.achievedRate * b.windowS)));
  const bSuccess = (baseline.ok + under.ok) / (baseline.sent + under.sent || 1);
  const p99Ratio = under.p99 / baseline.p99;
  // All of B's answers of all baseline phases against all of the noisy phases (same run, interleaved):
  // steadier than a median of three or five per-round p99s, which one stall can move.
  const pooled = (rs: PhaseResult[]) => percentileOf(rs.flatMap((r) => r.b.samplesMs ?? []), 99);
  const pooledP99 = { baseline: pooled(base), noisy: pooled(noisy) };
  const pooledP99Ratio = pooledP99.noisy / pooledP99.baseline;
  return {
    baseline,
    noisy: under,
    p99Ratio,
    pairRatios,
    pooledP99,
    pooledP99Ratio,
    bSuccess,
    a: {
      rateAsked: options.limit * options.factor,
      achievedRate: median(noisy.map((r) => r.a?.achievedRate ?? NaN)),
      sent: aSent,
      ok: aOk,
      limited: aLimited,
      other: aOther,
      limitedShare: aLimited / (aSent || 1),
      okRate: median(noisy.map((r) => (r.a ? r.a.ok / r.a.elapsedS : NaN))),
    },
    gatewayCpuUsPerBRequest: cpuUsPerB,
    gatewayCpuUsPerARequest: extraCpuUsPerA,
    goals: {
      bSuccess100: bSuccess === 1,
      p99Within20Pct: p99Ratio <= 1.2,
      pooledP99Within20Pct: pooledP99Ratio <= 1.2,
    },
  };
}

function markdown(results: PhaseResult[], summary: ReturnType<typeof summarisePhases>, meta: { command: string; machine: string; build: string; options: Options }, profileText: string | undefined): string {
  const { options } = meta;
  const md: string[] = [];
  md.push(`Command: \`${meta.command}\``);
  md.push(meta.machine);
  md.push(`Gateway build: ${meta.build}.`);
  md.push(
    `Tenants a and b, each \`limits.tenant: { requestsPerSecond: ${options.limit}, burst: ${options.burst}, maxDelayMs: ${options.maxDelayMs} }\`, mTLS with enrolled client certificates, HTTP/1.1 keep-alive, audit.decisions: ${options.decisions}. ` +
      `B: open loop ${options.rateB} req/s (${options.connectionsB} connections), ${options.warmup} s warm-up + ${options.duration} s measured per phase. ` +
      `A (noisy phases): open loop ${fmtInt(options.limit * options.factor)} req/s = ${options.factor}x its limit (${options.connectionsA} connections${options.niceA ? `, nice ${options.niceA}` : ''}${options.aPath !== '/agents/a/echo/' ? `, to ${options.aPath}` : ''}). ${options.baselineFactor > 0 ? `Baseline phases: A at ${options.baselineFactor}x its limit (not B alone). ` : ''}${options.rounds} interleaved rounds.`,
  );
  const probe = results.some((r) => r.gatewayLoopDelayMs);
  md.push('', `| round | phase | B sent | B ok | B p50 ms | B p99 ms | B p99.9 ms | B max ms | B send lag p99 ms | A req/s sent | A 2xx | A 429 | A other | gateway CPU % |${probe ? ' gateway loop delay p99 / max ms |' : ''} CPU busy % (steal) |`);
  md.push(`| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |${probe ? ' ---: |' : ''} --- |`);
  for (const r of results) {
    const a = r.a;
    const aOther = a ? a.errors + Object.values(a.otherStatus).reduce((x, y) => x + y, 0) : 0;
    const cpus = Object.entries(r.cpus)
      .map(([name, c]) => `${name.replace('cpu', '')}: ${fmt(c.busyPct, 0)}${c.stealPct >= 0.5 ? ` (${fmt(c.stealPct, 0)})` : ''}`)
      .join(', ');
    md.push(
      `| ${r.round} | ${r.phase} | ${fmtInt(r.b.sent)} | ${fmtInt(r.b.ok)} | ${fmt(r.b.latencyMs.p50, 3)} | ${fmt(r.b.latencyMs.p99, 3)} | ${fmt(r.b.latencyMs.p999, 3)} | ${fmt(r.b.latencyMs.max, 1)} | ${fmt(r.b.sendLagMs.p99, 3)} | ${a ? fmtInt(a.achievedRate) : '-'} | ${a ? fmtInt(a.ok) : '-'} | ${a ? fmtInt(a.limited) : '-'} | ${a ? fmtInt(aOther) : '-'} | ${fmt(r.gatewayCpuPct, 1)} |${probe ? ` ${r.gatewayLoopDelayMs ? `${fmt(r.gatewayLoopDelayMs.p99, 1)} / ${fmt(r.gatewayLoopDelayMs.max, 1)}` : 'n/a'} |` : ''} ${cpus} |`,
    );
  }
  const s = summary;
  md.push('', '| B (medians of the rounds) | p50 ms | p99 ms | p99.9 ms | success | gateway CPU % |', '| --- | ---: | ---: | ---: | ---: | ---: |');
  md.push(`| baseline (${options.baselineFactor > 0 ? `A at ${options.baselineFactor}x its limit` : 'B alone'}) | ${fmt(s.baseline.p50, 3)} | ${fmt(s.baseline.p99, 3)} | ${fmt(s.baseline.p999, 3)} | ${fmtInt(s.baseline.ok)}/${fmtInt(s.baseline.sent)} | ${fmt(s.baseline.gatewayCpuPct, 1)} |`);
  md.push(`| noisy (A at ${options.factor}x its limit) | ${fmt(s.noisy.p50, 3)} | ${fmt(s.noisy.p99, 3)} | ${fmt(s.noisy.p999, 3)} | ${fmtInt(s.noisy.ok)}/${fmtInt(s.noisy.sent)} | ${fmt(s.noisy.gatewayCpuPct, 1)} |`);
  md.push('', '| measure | value | target | met |', '| --- | ---: | --- | --- |');
  md.push(`| B success rate (all phases) | ${fmt(s.bSuccess * 100, 3)} % | 100 % | ${s.goals.bSuccess100 ? 'yes' : '**no**'} |`);
  md.push(`| B p99 noisy / baseline (medians) | ${fmt(s.p99Ratio)}x | <= 1.2x | ${s.goals.p99Within20Pct ? 'yes' : '**no**'} |`);
  md.push(`| B p99 noisy / baseline, per round | ${s.pairRatios.map((r) => fmt(r)).join(', ')} | - | - |`);
  md.push(`| B p99 of all answers pooled over the rounds: baseline / noisy | ${fmt(s.pooledP99.baseline, 3)} / ${fmt(s.pooledP99.noisy, 3)} ms = **${fmt(s.pooledP99Ratio)}x** | <= 1.2x | ${s.goals.pooledP99Within20Pct ? 'yes' : '**no**'} |`);
  md.push(`| A sent (median rate) / asked | ${fmtInt(s.a.achievedRate)} / ${fmtInt(s.a.rateAsked)} req/s | - | - |`);
  md.push(`| A answers: 2xx / 429 / other | ${fmtInt(s.a.ok)} / ${fmtInt(s.a.limited)} (${fmt(s.a.limitedShare * 100, 1)} %) / ${fmtInt(s.a.other)} | 429 for what exceeds ${options.limit}/s | - |`);
  md.push(`| A's 2xx rate (median) | ${fmt(s.a.okRate, 1)} req/s | <= ${options.limit} + burst | - |`);
  md.push(`| gateway CPU per B request (baseline; at ${options.rateB} req/s, not a per-request floor) | ${fmt(s.gatewayCpuUsPerBRequest, 0)} µs | - | - |`);
  md.push(`| gateway CPU per A request (noisy minus baseline) | ${fmt(s.gatewayCpuUsPerARequest, 0)} µs | - | - |`);
  if (profileText) md.push('', profileText);
  return md.join('\n');
}

async function orchestratorMain(): Promise<void> {
  const options = parseOptions();
  installCleanup();
  if (!readdirSafe(path.join(ROOT, 'dist', 'cli')).includes('index.js')) throw new Error('dist/cli/index.js is missing: run `npm run build` first');
  const cpus = os.availableParallelism();
  const split = options.pin === 'split' && cpus >= 2 && hasBinary('taskset');
  if (options.pin === 'split' && !split) log('not pinning (needs >= 2 CPUs and taskset)');
  const runId = new Date().toISOString().replace(/[:.]/g, '-');
  mkdirSync(options.out, { recursive: true });
  const logDir = path.join(options.out, `noisy-logs-${runId}`);
  mkdirSync(logDir, { recursive: true });
  const work = mkdtempSync(path.join(os.tmpdir(), 'dmsc-noisy-'));
  process.on('exit', () => rmSync(work, { recursive: true, force: true }));
  const env: Env = {
    options,
    work,
    logDir,
    clientCpu: split ? '0' : undefined,
    serverCpus: split ? (cpus === 2 ? '1' : `1-${cpus - 1}`) : undefined,
  };
  const command = commandLine();
  const build = gatewayBuild();
  log(`gateway build: ${build}`);
  const loadAvg = os.loadavg().map((v) => Math.round(v * 100) / 100);
  const machine =
    `Machine: ${cpus} CPUs (${os.cpus()[0]?.model ?? 'unknown'}), node ${process.version}, ${os.type()} ${os.release()}; ` +
    `pinning: ${split ? `load generators on CPU ${env.clientCpu}, gateway + upstreams on CPU ${env.serverCpus}` : 'none'}; load average before the run ${loadAvg.join(' ')}.`;
  log(command);
  log(machine);
  if (loadAvg[0]! > 0.5 * cpus) log(`WARNING: load average ${loadAvg.join(' ')} on ${cpus} CPUs: other work is running, figures will be noisy`);

  try {
    const upA = await startUpstream(env, 'upstream-a');
    const upB = await startUpstream(env, 'upstream-b');
    const profileDir = options.cpuProf ? path.join(options.out, `noisy-profile-${runId}`) : undefined;
    if (profileDir) mkdirSync(profileDir, { recursive: true });
    const gw = await startGateway(env, { a: upA.url, b: upB.url }, profileDir);
    log(`gateway ${gw.tls} (admin ${gw.adminUrl}); upstreams ${upA.url} ${upB.url}`);
    const creds = { a: await enroll(env, gw, 'a'), b: await enroll(env, gw, 'b') };
    log('enrolled a/client and b/client (mTLS)');
    // The gateway's own background work (health checks, timers) with no traffic, for reference.
    await sleep(1000);
    const idle0 = processCpuMs(gw.proc.child.pid);
    await sleep(3000);
    const idleGatewayCpuPct = Math.round(((processCpuMs(gw.proc.child.pid) - idle0) / 3000) * 1000) / 10;
    log(`gateway CPU with no traffic: ${fmt(idleGatewayCpuPct, 1)} %`);

    const results: PhaseResult[] = [];
    for (let round = 1; round <= options.rounds; round++) {
      const order: Array<'baseline' | 'noisy'> = round % 2 === 1 ? ['baseline', 'noisy'] : ['noisy', 'baseline'];
      for (const phase of order) {
        await sleep(1000); // let the previous phase's connections close and A's bucket refill
        const r = await runPhase(env, gw, round, phase, creds);
        results.push(r);
        const bBad = r.b.sent - r.b.ok;
        log(
          `round ${round} ${phase.padEnd(8)} B p50 ${fmt(r.b.latencyMs.p50, 3)} p99 ${fmt(r.b.latencyMs.p99, 3)} p99.9 ${fmt(r.b.latencyMs.p999, 3)} ms, ok ${r.b.ok}/${r.b.sent}${bBad ? ` (429: ${r.b.limited}, other: ${JSON.stringify(r.b.otherStatus)}, errors: ${r.b.errors})` : ''}, send lag p99 ${fmt(r.b.sendLagMs.p99, 3)} ms` +
            (r.a ? `; A ${fmtInt(r.a.achievedRate)} req/s: ${r.a.ok} ok, ${r.a.limited} 429, other ${JSON.stringify(r.a.otherStatus)}/${r.a.errors} errors, cpu ${fmt(r.a.cpuPct, 0)} %` : '') +
            `; gateway CPU ${fmt(r.gatewayCpuPct, 1)} %` +
            (r.gatewayLoopDelayMs ? `, loop delay p99 ${fmt(r.gatewayLoopDelayMs.p99, 1)} max ${fmt(r.gatewayLoopDelayMs.max, 1)} ms` : ''),
        );
      }
    }

    let profileText: string | undefined;
    let profile: unknown;
    if (profileDir) {
      await stopProcess(gw.proc, 30_000);
      const file = readdirSafe(profileDir).find((f) => f.endsWith('.cpuprofile'));
      if (file) {
        const full = path.join(profileDir, file);
        const noisyWindows = results.filter((r) => r.phase === 'noisy').map((r) => r.window);
        const baseWindows = results.filter((r) => r.phase === 'baseline').map((r) => r.window);
        const lastNoisy = noisyWindows[noisyWindows.length - 1]!;
        const self = summarise(full, 25, lastNoisy);
        const incNoisy = inclusiveTimes(full, noisyWindows);
        const incBase = inclusiveTimes(full, baseWindows);
        const span = (ws: Array<{ fromUs: number; toUs: number }>) => ws.reduce((sum, w) => sum + (w.toUs - w.fromUs), 0);
        const aRequests = results.reduce((sum, r) => sum + (r.a ? r.a.achievedRate * r.windowS : 0), 0);
        const scale = span(noisyWindows) / (span(baseWindows) || 1);
        const compared = compareProfiles(incNoisy, incBase, scale, aRequests, 30);
        profile = { file: full, selfLastNoisy: self, noisyBusyMs: incNoisy.busyUs / 1000, baselineBusyMs: incBase.busyUs / 1000, aRequests, inclusive: compared };
        profileText = [
          `### Gateway CPU profile (node --cpu-prof; the latency figures above are under the profiler)`,
          '',
          `Profile: ${full}`,
          '',
          `Inclusive time ("total": the function and everything it calls) of the gateway's functions (dist/), TLS and better-sqlite3 frames in B's measured windows: ` +
            `noisy phases busy ${fmtInt(incNoisy.busyUs / 1000)} ms, baseline phases busy ${fmtInt(incBase.busyUs / 1000)} ms (scaled to the same length below); ` +
            `"µs per A request" = (noisy - baseline) / the ${fmtInt(aRequests)} requests A sent in the noisy windows.`,
          '',
          '| incl. % of noisy busy | noisy ms | baseline ms | µs per A request | function |',
          '| ---: | ---: | ---: | ---: | --- |',
          `| 100.0 | ${fmt(incNoisy.busyUs / 1000, 0)} | ${fmt((incBase.busyUs * scale) / 1000, 0)} | ${fmt((incNoisy.busyUs - incBase.busyUs * scale) / (aRequests || 1), 1)} | all busy time (any code) |`,
          ...compared.map((r) => `| ${fmt(r.noisyPct, 1)} | ${fmt(r.noisyMs, 0)} | ${fmt(r.baselineMs, 0)} | ${fmt(r.usPerA, 1)} | \`${r.name}\` |`),
          '',
          'Self time, last noisy window:',
          '',
          formatSummary(self),
        ].join('\n');
        log(`CPU profile: ${full}`);
      } else log('no .cpuprofile written (the gateway did not exit cleanly?)');
    }

    if (!build.endsWith(distBuiltAt())) log(`WARNING: dist/ was rebuilt during the run (now ${distBuiltAt()}): the gateway process kept the code it started with, but check which build you report`);
    const summary = summarisePhases(results, options);
    const table = markdown(results, summary, { command, machine, build, options }, profileText);
    // B's raw samples are in the pooled figures; the JSON keeps each phase's summary only.
    const phases = results.map((r) => ({ ...r, b: { ...r.b, samplesMs: undefined } }));
    const result = { runId, command, machine, build, options: { ...options, out: undefined }, idleGatewayCpuPct, summary, phases, profile };
    const jsonFile = path.join(options.out, `noisy-${runId}.json`);
    writeFileSync(jsonFile, JSON.stringify(result, null, 2) + '\n');
    writeFileSync(path.join(options.out, `noisy-${runId}.md`), table + '\n');
    if (options.json) process.stdout.write(JSON.stringify(result) + '\n');
    else process.stdout.write('\n' + table + '\n\n');
    log(`results: ${jsonFile} (logs in ${logDir})`);
  } finally {
    await stopAll();
    rmSync(work, { recursive: true, force: true });
  }
}

/** Which code the gateway runs: the commit, whether src/ differs from it, and when dist/ was built. */
function gatewayBuild(): string {
  const git = (...args: string[]) => spawnSync('git', args, { cwd: ROOT, encoding: 'utf8' });
  const head = git('rev-parse', '--short', 'HEAD').stdout.trim() || 'unknown commit';
  const dirty = git('status', '--porcelain', '--', 'src').stdout.trim() ? ' + uncommitted changes in src/' : '';
  return `${head}${dirty}, dist/ built ${distBuiltAt()}`;
}

function distBuiltAt(): string {
  try {
    return statSync(path.join(ROOT, 'dist', 'gateway.js')).mtime.toISOString();
  } catch {
    return 'never';
  }
}

function readdirSafe(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

if (process.argv[2] === 'client') await clientMain(process.argv.slice(3));
else await orchestratorMain();
