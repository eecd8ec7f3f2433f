// DMSC gateway benchmark: the gateway and its peers, in one run, on this machine.
//
//   npm run bench [-- --duration 10 --connections 50 --rounds 3 --only gateway,nginx --profile]
//
// One upstream agent (node:http, fixed 1 KiB JSON body) serves every target:
//   direct        plain HTTP/1.1 straight to the upstream (the floor)
//   gateway       `node bin/dmsc.js start` (built CLI), TLS 1.3 listener, path form /agents/bench/echo/
//   gateway-http  the same gateway process, plaintext local ingress (separates TLS cost from proxy cost)
//   nginx         Debian nginx, TLS 1.3 reverse proxy, worker_processes 1, upstream keepalive pool
//   fastify       @fastify/http-proxy over HTTPS (TLS 1.3), its own process
//   node-floor    the same Node listener + undici client as the gateway with no pipeline at all
//                 (bench/node-floor.ts): what any single-process Node proxy can reach here
// All TLS targets use the same ECDSA P-256 certificate (the gateway's development server cert).
//
// Tests, all with keep-alive connections:
//   1. throughput: wrk (HTTP/1.1), -t1 -cN for D seconds after a warm-up, R rounds interleaved
//      (target order rotates each round), median of the rounds reported
//   2. HTTP/2: h2load against gateway and nginx (same port, ALPN h2)
//   3. added latency at a fixed rate (default 1,000 req/s): an open-loop client (bench/openloop.ts)
//      sends on a fixed schedule and measures from each request's due time
// CPU pinning (default on machines with >= 2 CPUs): load generators on CPU 0, every server
// (upstream + proxy under test) on the other CPU(s), so the client never steals the proxy's core.
//
// Results: a markdown table on stdout and JSON (+ markdown, logs) under bench/results/.
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { request } from 'undici';
import type { OpenLoopResult } from './openloop.js';
import { freePort, hasBinary, installCleanup, pinned, runCommand, startProcess, stopAll, stopProcess, type Managed } from './procs.js';
import { formatSummary, summarise, type ProfileSummary } from './profile-summary.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const AGENT_PATH = '/agents/bench/echo/';
const ALL_TARGETS = ['direct', 'gateway', 'gateway-http', 'nginx', 'fastify', 'node-floor'] as const;
type TargetName = (typeof ALL_TARGETS)[number];
const H2_TARGETS: TargetName[] = ['gateway', 'nginx', 'node-floor'];

// ---------------------------------------------------------------- options

const HELP = `Usage: npm run bench -- [options]   (each option also as env BENCH_<NAME>, e.g. BENCH_DURATION=5)

  --duration S          seconds per measured load run (default 10)
  --warmup S            warm-up seconds before each run (default 2)
  --connections N       wrk connections (default 50)
  --rounds N            interleaved rounds; the median is reported (default 3)
  --only LIST           comma-separated targets: ${ALL_TARGETS.join(',')}
  --tests LIST          comma-separated tests: throughput,h2,rate (default all)
  --rate N              requests/s for the fixed-rate latency test (default 1000)
  --h2-connections N    h2load connections (default 10)
  --h2-streams N        h2load max concurrent streams per connection (default 10)
  --pin split|none      split: load generator on CPU 0, servers on the rest (default split when >= 2 CPUs)
  --profile             afterwards, run the gateway under --cpu-prof for one wrk run and summarise
  --out DIR             results directory (default bench/results)
  --help
`;

function envOr(name: string, fallback: string): string {
  return process.env[`BENCH_${name.toUpperCase().replace(/-/g, '_')}`] ?? fallback;
}

const { values: flags } = parseArgs({
  options: {
    duration: { type: 'string' },
    warmup: { type: 'string' },
    connections: { type: 'string' },
    rounds: { type: 'string' },
    only: { type: 'string' },
    tests: { type: 'string' },
    rate: { type: 'string' },
    'h2-connections': { type: 'string' },
    'h2-streams': { type: 'string' },
    pin: { type: 'string' },
    profile: { type: 'boolean' },
    out: { type: 'string' },
    help: { type: 'boolean' },
  },
});
if (flags.help) {
  process.stdout.write(HELP);
  process.exit(0);
}

function num(name: keyof typeof flags, fallback: number): number {
  const raw = (flags[name] as string | undefined) ?? envOr(name, String(fallback));
  const n = Number(raw);
  if (!Number.isFinite(n) || n <= 0) {
    console.error(`bench: --${name} must be a positive number (got "${raw}")`);
    process.exit(2);
  }
  return n;
}

const options = {
  duration: num('duration', 10),
  warmup: Number(flags.warmup ?? envOr('warmup', '2')),
  connections: num('connections', 50),
  rounds: Math.round(num('rounds', 3)),
  rate: num('rate', 1000),
  h2Connections: Math.round(num('h2-connections', 10)),
  h2Streams: Math.round(num('h2-streams', 10)),
  pin: flags.pin ?? envOr('pin', os.availableParallelism() >= 2 ? 'split' : 'none'),
  profile: flags.profile ?? envOr('profile', '') === '1',
  out: path.resolve(flags.out ?? envOr('out', path.join(ROOT, 'bench', 'results'))),
  only: (flags.only ?? envOr('only', ALL_TARGETS.join(',')))
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean),
  tests: (flags.tests ?? envOr('tests', 'throughput,h2,rate'))
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean),
};
for (const t of options.only) {
  if (!(ALL_TARGETS as readonly string[]).includes(t)) {
    console.error(`bench: unknown target "${t}" (known: ${ALL_TARGETS.join(', ')})`);
    process.exit(2);
  }
}
for (const t of options.tests) {
  if (!['throughput', 'h2', 'rate'].includes(t)) {
    console.error(`bench: unknown test "${t}" (known: throughput, h2, rate)`);
    process.exit(2);
  }
}
if (options.pin !== 'split' && options.pin !== 'none') {
  console.error('bench: --pin must be split or none');
  process.exit(2);
}
const cpus = os.availableParallelism();
const CLIENT_CPU = options.pin === 'split' && cpus >= 2 ? '0' : undefined;
const SERVER_CPUS = options.pin === 'split' && cpus >= 2 ? (cpus === 2 ? '1' : `1-${cpus - 1}`) : undefined;
if (options.pin === 'split' && (cpus < 2 || !hasBinary('taskset'))) {
  console.error('bench: not pinning (needs >= 2 CPUs and taskset)');
}

// ---------------------------------------------------------------- helpers

const log = (line: string) => process.stderr.write(`[bench] ${line}\n`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function median(values: number[]): number {
  const sorted = values.filter((v) => Number.isFinite(v)).sort((a, b) => a - b);
  if (sorted.length === 0) return NaN;
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const idx = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[idx]!;
}

/** GET until 200 with the expected body size (the whole chain works), or throw after timeoutMs. */
async function probe(url: string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  while (Date.now() < deadline) {
    try {
      const res = await request(url, { method: 'GET', headersTimeout: 2000, bodyTimeout: 2000 });
      const body = await res.body.arrayBuffer();
      if (res.statusCode === 200 && body.byteLength === 1024) return;
      last = `status ${res.statusCode}, ${body.byteLength} bytes: ${Buffer.from(body).toString('utf8').slice(0, 200)}`;
    } catch (err) {
      last = (err as Error).message;
    }
    await sleep(200);
  }
  throw new Error(`${url} not ready after ${timeoutMs} ms (${last})`);
}

// undici's global dispatcher must accept the self-signed development certificate for probes.
const { Agent, setGlobalDispatcher } = await import('undici');
setGlobalDispatcher(new Agent({ connect: { rejectUnauthorized: false } }));

// ---------------------------------------------------------------- load generators

interface LoadResult {
  rps: number;
  p50: number; // ms
  p99: number; // ms
  requests: number;
  errors: number; // socket errors + non-2xx
  raw?: string;
}

function wrkMs(value: string, unit: string): number {
  const v = Number(value);
  return unit === 'us' ? v / 1000 : unit === 's' ? v * 1000 : unit === 'm' ? v * 60000 : v;
}

function parseWrk(out: string): LoadResult {
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? NaN);
  const lat = (p: string) => {
    const m = new RegExp(`^\\s+${p}%\\s+([\\d.]+)(us|ms|s|m)\\s*$`, 'm').exec(out);
    return m ? wrkMs(m[1]!, m[2]!) : NaN;
  };
  const requests = Number(/(\d+) requests in/.exec(out)?.[1] ?? NaN);
  const non2xx = Number(/Non-2xx or 3xx responses:\s+(\d+)/.exec(out)?.[1] ?? 0);
  const sock = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  const sockErrors = sock ? sock.slice(1).reduce((s, v) => s + Number(v), 0) : 0;
  return { rps, p50: lat('50'), p99: lat('99'), requests, errors: non2xx + sockErrors };
}

async function runWrk(url: string, seconds: number, connections: number): Promise<LoadResult> {
  const [cmd, args] = pinned(CLIENT_CPU, 'wrk', ['-t1', `-c${connections}`, `-d${seconds}s`, '--latency', url]);
  const { code, stdout, stderr } = await runCommand(cmd, args);
  if (code !== 0) throw new Error(`wrk failed (${code}): ${stderr || stdout}`);
  return { ...parseWrk(stdout), raw: stdout };
}

async function runH2load(url: string, seconds: number, warmup: number, logDir: string): Promise<LoadResult> {
  const logFile = path.join(logDir, `h2load-${Date.now()}.tsv`);
  const [cmd, args] = pinned(CLIENT_CPU, 'h2load', [
    '-t1',
    `-c${options.h2Connections}`,
    `-m${options.h2Streams}`,
    `-D${seconds}`,
    ...(warmup > 0 ? [`--warm-up-time=${warmup}`] : []),
    `--log-file=${logFile}`,
    url,
  ]);
  const { code, stdout, stderr } = await runCommand(cmd, args);
  if (code !== 0) throw new Error(`h2load failed (${code}): ${stderr || stdout}`);
  const rps = Number(/finished in [\d.]+\w*, ([\d.]+) req\/s/.exec(stdout)?.[1] ?? NaN);
  const req = /requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored/.exec(stdout);
  const status = /status codes: \d+ 2xx, \d+ 3xx, (\d+) 4xx, (\d+) 5xx/.exec(stdout);
  const latencies: number[] = [];
  try {
    for (const line of readFileSync(logFile, 'utf8').split('\n')) {
      const cols = line.split('\t');
      if (cols.length >= 3 && cols[1] !== '-1') latencies.push(Number(cols[2]) / 1000);
    }
  } catch {
    /* no log: percentiles stay NaN */
  }
  rmSync(logFile, { force: true });
  latencies.sort((a, b) => a - b);
  return {
    rps,
    p50: percentile(latencies, 50),
    p99: percentile(latencies, 99),
    requests: Number(req?.[1] ?? NaN),
    // failed + errored requests and 4xx/5xx answers (requests cut off when the duration ends are not errors)
    errors: Number(req?.[4] ?? 0) + Number(req?.[5] ?? 0) + Number(status?.[1] ?? 0) + Number(status?.[2] ?? 0),
    raw: stdout,
  };
}

async function runOpenLoop(url: string): Promise<OpenLoopResult> {
  const script = path.join(ROOT, 'bench', 'openloop.ts');
  const [cmd, args] = pinned(CLIENT_CPU, process.execPath, [
    '--import',
    'tsx',
    script,
    '--url',
    url,
    '--rate',
    String(options.rate),
    '--duration',
    String(options.duration),
    '--warmup',
    String(Math.max(options.warmup, 1)),
  ]);
  const { code, stdout, stderr } = await runCommand(cmd, args);
  if (code !== 0) throw new Error(`openloop failed (${code}): ${stderr || stdout}`);
  return JSON.parse(stdout.trim().split('\n').pop()!) as OpenLoopResult;
}

// ---------------------------------------------------------------- servers

interface Target {
  name: TargetName;
  /** URL for HTTP/1.1 load. */
  url: string;
  /** URL for HTTP/2 load (same port, ALPN h2), when the target speaks it. */
  h2Url?: string;
  proc?: Managed;
}

const runId = new Date().toISOString().replace(/[:.]/g, '-');
mkdirSync(options.out, { recursive: true });
const work = mkdtempSync(path.join(os.tmpdir(), 'dmsc-bench-'));
process.on('exit', () => rmSync(work, { recursive: true, force: true })); // also after Ctrl-C
const logDir = path.join(options.out, `logs-${runId}`);
mkdirSync(logDir, { recursive: true });
const logFile = (name: string) => path.join(logDir, `${name}.log`);
const nodeTs = (script: string, ...args: string[]) => [process.execPath, ['--import', 'tsx', path.join(ROOT, 'bench', script), ...args]] as const;

async function startUpstream(): Promise<{ url: string; proc: Managed }> {
  const port = await freePort();
  const [node, args] = nodeTs('upstream.ts', String(port));
  const [cmd, full] = pinned(SERVER_CPUS, node, [...args]);
  const proc = startProcess('upstream', cmd, full, { logFile: logFile('upstream'), cwd: ROOT });
  const m = await proc.waitFor(/listening (\d+)/, 20_000);
  const url = `http://127.0.0.1:${m[1]}`;
  await probe(url + '/');
  return { url, proc };
}

async function startGateway(home: string, upstream: string, cpuProfileDir?: string): Promise<{ tls: string; plain: string; proc: Managed }> {
  const [tlsPort, plainPort, adminPort] = [await freePort(), await freePort(), await freePort()];
  const configFile = path.join(work, 'dmsc.yaml');
  writeFileSync(
    configFile,
    [
      `listeners:`,
      // wrk and h2load cannot present client certificates: measure the proxy path without authentication.
      `  tls: { host: 127.0.0.1, port: ${tlsPort}, allowAnonymous: true }`,
      `  plain: { host: 127.0.0.1, port: ${plainPort}, allowAnonymous: true }`,
      `  admin: { host: 127.0.0.1, port: ${adminPort} }`,
      `logging: { level: warn }`,
      `tenants:`,
      `  - name: bench`,
      `    policy: { anonymous: allow }`,
      `    agents:`,
      `      - name: echo`,
      `        endpoints: ["${upstream}"]`,
      ``,
    ].join('\n'),
  );
  const nodeArgs = cpuProfileDir ? ['--cpu-prof', `--cpu-prof-dir=${cpuProfileDir}`] : [];
  const [cmd, args] = pinned(SERVER_CPUS, process.execPath, [
    ...nodeArgs,
    path.join(ROOT, 'bin', 'dmsc.js'),
    'start',
    '--config',
    configFile,
    '--home',
    home,
  ]);
  const env: NodeJS.ProcessEnv = { ...process.env, DMSC_ADMIN_TOKEN: 'bench-' + Math.random().toString(36).slice(2), NODE_ENV: 'production' };
  delete env.DMSC_HOME;
  delete env.DMSC_CONFIG;
  const proc = startProcess(cpuProfileDir ? 'gateway-profiled' : 'gateway', cmd, args, { logFile: logFile(cpuProfileDir ? 'gateway-profiled' : 'gateway'), env, cwd: work });
  const tls = (await proc.waitFor(/agent ingress \(HTTPS[^)]*\):\s+(https:\/\/\S+)/, 60_000))[1]!;
  const plain = (await proc.waitFor(/local ingress \(HTTP\):\s+(http:\/\/\S+)/, 5_000))[1]!;
  await probe(tls + AGENT_PATH);
  await probe(plain + AGENT_PATH);
  return { tls, plain, proc };
}

async function nginxVersion(): Promise<string | undefined> {
  if (!hasBinary('nginx')) return undefined;
  const { stderr, stdout } = await runCommand('nginx', ['-v']);
  return /nginx\/([\d.]+)/.exec(stderr + stdout)?.[1];
}

function versionAtLeast(version: string, min: string): boolean {
  const a = version.split('.').map(Number);
  const b = min.split('.').map(Number);
  for (let i = 0; i < 3; i++) {
    if ((a[i] ?? 0) !== (b[i] ?? 0)) return (a[i] ?? 0) > (b[i] ?? 0);
  }
  return true;
}

async function startNginx(version: string, upstream: string, cert: string, key: string): Promise<{ url: string; proc: Managed }> {
  const port = await freePort();
  const prefix = path.join(work, 'nginx');
  mkdirSync(path.join(prefix, 'logs'), { recursive: true });
  const up = new URL(upstream);
  // `http2 on;` exists from nginx 1.25.1; older versions take `http2` on the listen line.
  const modernH2 = versionAtLeast(version, '1.25.1');
  const conf = `# generated by bench/run.ts
worker_processes 1;
pid ${prefix}/nginx.pid;
error_log ${prefix}/logs/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path ${prefix}/client_body;
  proxy_temp_path ${prefix}/proxy;
  fastcgi_temp_path ${prefix}/fastcgi;
  uwsgi_temp_path ${prefix}/uwsgi;
  scgi_temp_path ${prefix}/scgi;
  keepalive_timeout 120s;
  keepalive_requests 1000000;   # default 1000 would re-handshake TLS every 1000 requests
  upstream agent {
    server ${up.host};
    keepalive 64;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
  }
  server {
    listen 127.0.0.1:${port} ssl${modernH2 ? '' : ' http2'};
    ${modernH2 ? 'http2 on;' : ''}
    ssl_certificate ${cert};
    ssl_certificate_key ${key};
    ssl_protocols TLSv1.3;
    location ${AGENT_PATH} {
      proxy_pass http://agent/;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
`;
  const confFile = path.join(prefix, 'nginx.conf');
  writeFileSync(confFile, conf);
  const [cmd, args] = pinned(SERVER_CPUS, 'nginx', ['-p', prefix, '-e', path.join(prefix, 'logs', 'error.log'), '-c', confFile, '-g', 'daemon off;']);
  const proc = startProcess('nginx', cmd, args, { logFile: logFile('nginx'), cwd: prefix });
  const url = `https://127.0.0.1:${port}`;
  await Promise.race([probe(url + AGENT_PATH), proc.exited.then(() => Promise.reject(new Error(`nginx exited: ${proc.output()}`)))]);
  return { url, proc };
}

async function startNodeFloor(upstream: string, cert: string, key: string): Promise<{ url: string; proc: Managed }> {
  const port = await freePort();
  const [node, args] = nodeTs('node-floor.ts', String(port), upstream, cert, key, AGENT_PATH);
  const [cmd, full] = pinned(SERVER_CPUS, node, [...args]);
  const proc = startProcess('node-floor', cmd, full, { logFile: logFile('node-floor'), cwd: ROOT, env: { ...process.env, NODE_ENV: 'production' } });
  await proc.waitFor(/listening (\d+)/, 30_000);
  const url = `https://127.0.0.1:${port}`;
  await probe(url + AGENT_PATH);
  return { url, proc };
}

async function startFastify(upstream: string, cert: string, key: string): Promise<{ url: string; proc: Managed }> {
  const port = await freePort();
  const [node, args] = nodeTs('fastify-proxy.ts', String(port), upstream, cert, key, AGENT_PATH);
  const [cmd, full] = pinned(SERVER_CPUS, node, [...args]);
  const proc = startProcess('fastify', cmd, full, { logFile: logFile('fastify'), cwd: ROOT, env: { ...process.env, NODE_ENV: 'production' } });
  await proc.waitFor(/listening (\d+)/, 30_000);
  const url = `https://127.0.0.1:${port}`;
  await probe(url + AGENT_PATH);
  return { url, proc };
}

// ---------------------------------------------------------------- machine

async function machine() {
  const cpuModel = os.cpus()[0]?.model ?? 'unknown';
  const wrk = hasBinary('wrk') ? (await runCommand('wrk', ['-v'])).stdout.split('\n')[0]?.trim() : undefined;
  const h2load = hasBinary('h2load') ? (await runCommand('h2load', ['--version'])).stdout.trim() : undefined;
  const fastifyPkg = JSON.parse(readFileSync(path.join(ROOT, 'node_modules', '@fastify', 'http-proxy', 'package.json'), 'utf8')) as { version: string };
  const gatewayPkg = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string };
  return {
    nproc: cpus,
    cpuModel,
    memGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    kernel: `${os.type()} ${os.release()} ${os.arch()}`,
    node: process.version,
    nginx: await nginxVersion(),
    wrk,
    h2load,
    fastifyHttpProxy: fastifyPkg.version,
    gateway: gatewayPkg.version,
    loadAvgAtStart: os.loadavg().map((v) => Math.round(v * 100) / 100),
    pinning: CLIENT_CPU ? `load generator on CPU ${CLIENT_CPU}; upstream + proxy on CPU ${SERVER_CPUS}` : 'none',
  };
}

// ---------------------------------------------------------------- main

installCleanup();

const fmt = (n: number, digits = 2) => (Number.isFinite(n) ? n.toFixed(digits) : 'n/a');
const fmtInt = (n: number) => (Number.isFinite(n) ? Math.round(n).toLocaleString('en-US') : 'n/a');
const ratio = (a: number | undefined, b: number | undefined) => (a && b && Number.isFinite(a) && Number.isFinite(b) ? a / b : NaN);

interface Summary {
  rps: number;
  p50: number;
  p99: number;
  errors: number;
  rounds: Array<Omit<LoadResult, 'raw'>>;
}

function summariseRounds(rounds: LoadResult[]): Summary {
  return {
    rps: median(rounds.map((r) => r.rps)),
    p50: median(rounds.map((r) => r.p50)),
    p99: median(rounds.map((r) => r.p99)),
    errors: rounds.reduce((s, r) => s + r.errors, 0),
    rounds: rounds.map(({ raw: _raw, ...rest }) => rest),
  };
}

async function main(): Promise<void> {
  const mach = await machine();
  log(`machine: ${mach.nproc} CPUs (${mach.cpuModel}), node ${mach.node}, nginx ${mach.nginx ?? 'missing'}, ${mach.pinning}`);
  log(`options: ${JSON.stringify({ ...options, out: undefined })}`);
  if (mach.loadAvgAtStart[0]! > 0.5 * cpus) {
    log(`WARNING: load average ${mach.loadAvgAtStart.join(' ')} on ${cpus} CPUs: other work is running, figures will be noisy`);
  }
  const skipped: Record<string, string> = {};
  const want = new Set(options.only as TargetName[]);

  if (options.tests.includes('throughput') || options.tests.includes('h2')) {
    if (!hasBinary('wrk') && options.tests.includes('throughput')) {
      console.error('bench: wrk is missing (Debian: apt-get install -y wrk); the throughput test is skipped');
      skipped.throughput = 'wrk not installed';
    }
    if (!hasBinary('h2load') && options.tests.includes('h2')) {
      console.error('bench: h2load is missing (Debian: apt-get install -y nghttp2-client); the HTTP/2 test is skipped');
      skipped.h2 = 'h2load not installed';
    }
  }

  // The peers' server certificate: ECDSA P-256, like the one the gateway's built-in CA issues itself.
  const home = path.join(work, 'home');
  const pki = { serverCertFile: path.join(work, 'peer.crt'), serverKeyFile: path.join(work, 'peer.key') };
  const made = await runCommand('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '2', '-subj', '/CN=localhost',
    '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1', '-keyout', pki.serverKeyFile, '-out', pki.serverCertFile,
  ]);
  if (made.code !== 0) throw new Error(`openssl could not make the peers' certificate: ${made.stderr}`);

  const upstream = await startUpstream();
  log(`upstream agent: ${upstream.url}`);
  const targets = new Map<TargetName, Target>();
  if (want.has('direct')) targets.set('direct', { name: 'direct', url: upstream.url + '/' });

  let gatewayProc: Managed | undefined;
  if (want.has('gateway') || want.has('gateway-http')) {
    if (!readdirSafe(path.join(ROOT, 'dist', 'cli')).includes('index.js')) {
      throw new Error('dist/cli/index.js is missing: run `npm run build` first');
    }
    const gw = await startGateway(home, upstream.url);
    gatewayProc = gw.proc;
    log(`gateway: ${gw.tls} and ${gw.plain}`);
    if (want.has('gateway')) targets.set('gateway', { name: 'gateway', url: gw.tls + AGENT_PATH, h2Url: gw.tls + AGENT_PATH, proc: gw.proc });
    if (want.has('gateway-http')) targets.set('gateway-http', { name: 'gateway-http', url: gw.plain + AGENT_PATH, proc: gw.proc });
  }
  if (want.has('nginx')) {
    const version = await nginxVersion();
    if (!version) {
      console.error('bench: nginx is missing (Debian: apt-get install -y nginx); target "nginx" skipped');
      skipped.nginx = 'nginx not installed';
    } else {
      const ng = await startNginx(version, upstream.url, pki.serverCertFile, pki.serverKeyFile);
      log(`nginx ${version}: ${ng.url}`);
      targets.set('nginx', { name: 'nginx', url: ng.url + AGENT_PATH, h2Url: ng.url + AGENT_PATH, proc: ng.proc });
    }
  }
  if (want.has('fastify')) {
    const fp = await startFastify(upstream.url, pki.serverCertFile, pki.serverKeyFile);
    log(`@fastify/http-proxy: ${fp.url}`);
    targets.set('fastify', { name: 'fastify', url: fp.url + AGENT_PATH, proc: fp.proc });
  }

  if (want.has('node-floor')) {
    const nf = await startNodeFloor(upstream.url, pki.serverCertFile, pki.serverKeyFile);
    log(`node floor (http2.createSecureServer + undici, no pipeline): ${nf.url}`);
    targets.set('node-floor', { name: 'node-floor', url: nf.url + AGENT_PATH, h2Url: nf.url + AGENT_PATH, proc: nf.proc });
  }

  const order = [...targets.keys()];
  const rotate = <T>(list: T[], by: number) => list.map((_, i) => list[(i + by) % list.length]!);

  // 1. throughput (wrk, HTTP/1.1)
  const throughput = new Map<TargetName, LoadResult[]>();
  if (options.tests.includes('throughput') && !skipped.throughput) {
    for (let round = 0; round < options.rounds; round++) {
      for (const name of rotate(order, round)) {
        const t = targets.get(name)!;
        if (options.warmup > 0) await runWrk(t.url, options.warmup, options.connections);
        const r = await runWrk(t.url, options.duration, options.connections);
        log(`throughput round ${round + 1}/${options.rounds} ${name}: ${fmtInt(r.rps)} req/s p50 ${fmt(r.p50)} ms p99 ${fmt(r.p99)} ms${r.errors ? ` ERRORS ${r.errors}` : ''}`);
        if (r.errors) log(r.raw ?? '');
        throughput.set(name, [...(throughput.get(name) ?? []), r]);
      }
    }
  }

  // 2. HTTP/2 (h2load)
  const h2 = new Map<TargetName, LoadResult[]>();
  const h2Order = order.filter((n) => H2_TARGETS.includes(n) && targets.get(n)!.h2Url);
  if (options.tests.includes('h2') && !skipped.h2 && h2Order.length > 0) {
    for (let round = 0; round < options.rounds; round++) {
      for (const name of rotate(h2Order, round)) {
        const t = targets.get(name)!;
        const r = await runH2load(t.h2Url!, options.duration, options.warmup, logDir);
        log(`h2 round ${round + 1}/${options.rounds} ${name}: ${fmtInt(r.rps)} req/s p50 ${fmt(r.p50)} ms p99 ${fmt(r.p99)} ms${r.errors ? ` ERRORS ${r.errors}` : ''}`);
        if (r.errors) log(r.raw ?? '');
        h2.set(name, [...(h2.get(name) ?? []), r]);
      }
    }
  }

  // 3. fixed rate (open loop)
  const fixed = new Map<TargetName, OpenLoopResult[]>();
  if (options.tests.includes('rate')) {
    for (let round = 0; round < options.rounds; round++) {
      for (const name of rotate(order, round)) {
        const t = targets.get(name)!;
        const r = await runOpenLoop(t.url);
        const bad = r.errors + r.non2xx;
        log(`rate ${options.rate}/s round ${round + 1}/${options.rounds} ${name}: p50 ${fmt(r.latencyMs.p50, 3)} ms p99 ${fmt(r.latencyMs.p99, 3)} ms (achieved ${r.achievedRate}/s)${bad ? ` ERRORS ${bad}` : ''}`);
        fixed.set(name, [...(fixed.get(name) ?? []), r]);
      }
    }
  }

  // 4. optional CPU profile of the gateway under wrk load
  let profile: (ProfileSummary & { windowed: boolean }) | undefined;
  if (options.profile && gatewayProc && hasBinary('wrk')) {
    await stopProcess(gatewayProc);
    const profDir = path.join(options.out, `profile-${runId}`);
    mkdirSync(profDir, { recursive: true });
    const gw = await startGateway(home, upstream.url, profDir);
    log(`profiling the gateway (${gw.tls}) under wrk for ${options.duration}s...`);
    await runWrk(gw.tls + AGENT_PATH, options.warmup || 1, options.connections);
    const fromUs = Number(process.hrtime.bigint() / 1000n);
    const r = await runWrk(gw.tls + AGENT_PATH, options.duration, options.connections);
    const toUs = Number(process.hrtime.bigint() / 1000n);
    log(`profiled run: ${fmtInt(r.rps)} req/s (slower than unprofiled: the profiler samples)`);
    await stopProcess(gw.proc, 20_000);
    const file = readdirSafe(profDir).find((f) => f.endsWith('.cpuprofile'));
    if (file) {
      profile = summarise(path.join(profDir, file), 40, { fromUs, toUs });
      log(`CPU profile: ${path.join(profDir, file)}`);
    } else log('no .cpuprofile written (the gateway did not exit cleanly?)');
  }

  // ------------------------------------------------------------ report
  const tp = new Map([...throughput].map(([k, v]) => [k, summariseRounds(v)] as const));
  const h2s = new Map([...h2].map(([k, v]) => [k, summariseRounds(v)] as const));
  const fx = new Map(
    [...fixed].map(([k, v]) => [
      k,
      {
        p50: median(v.map((r) => r.latencyMs.p50)),
        p99: median(v.map((r) => r.latencyMs.p99)),
        p999: median(v.map((r) => r.latencyMs.p999)),
        achieved: median(v.map((r) => r.achievedRate)),
        errors: v.reduce((s, r) => s + r.errors + r.non2xx, 0),
        rounds: v,
      },
    ] as const),
  );

  const g = tp.get('gateway')?.rps;
  const ratios = {
    gatewayOverDirect: ratio(g, tp.get('direct')?.rps),
    gatewayOverNginx: ratio(g, tp.get('nginx')?.rps),
    gatewayOverFastify: ratio(g, tp.get('fastify')?.rps),
    h2GatewayOverNginx: ratio(h2s.get('gateway')?.rps, h2s.get('nginx')?.rps),
    addedP99Ms: (fx.get('gateway')?.p99 ?? NaN) - (fx.get('direct')?.p99 ?? NaN),
    addedP50Ms: (fx.get('gateway')?.p50 ?? NaN) - (fx.get('direct')?.p50 ?? NaN),
    nginxAddedP99Ms: (fx.get('nginx')?.p99 ?? NaN) - (fx.get('direct')?.p99 ?? NaN),
  };
  const goals = [
    { goal: 'gateway / nginx (HTTP/1.1 over TLS req/s)', target: '>= 0.5x', value: ratios.gatewayOverNginx, ok: ratios.gatewayOverNginx >= 0.5, shown: Number.isFinite(ratios.gatewayOverNginx) ? `${fmt(ratios.gatewayOverNginx)}x` : 'n/a' },
    { goal: 'gateway / @fastify/http-proxy (HTTP/1.1 over TLS req/s)', target: '>= 1.3x', value: ratios.gatewayOverFastify, ok: ratios.gatewayOverFastify >= 1.3, shown: Number.isFinite(ratios.gatewayOverFastify) ? `${fmt(ratios.gatewayOverFastify)}x` : 'n/a' },
    { goal: `added p99 at ${options.rate} req/s (gateway HTTPS minus direct HTTP)`, target: '<= 1 ms', value: ratios.addedP99Ms, ok: ratios.addedP99Ms <= 1, shown: Number.isFinite(ratios.addedP99Ms) ? `${fmt(ratios.addedP99Ms, 3)} ms` : 'n/a' },
  ];

  const label: Record<TargetName, string> = {
    direct: 'direct (HTTP, no proxy)',
    gateway: 'DMSC gateway (HTTPS)',
    'gateway-http': 'DMSC gateway (plain local ingress)',
    nginx: `nginx ${mach.nginx ?? ''} (HTTPS)`.replace('  ', ' '),
    fastify: `@fastify/http-proxy ${mach.fastifyHttpProxy} (HTTPS)`,
    'node-floor': 'Node floor: bare http2 server + undici (HTTPS)',
  };
  const md: string[] = [];
  md.push(`Run ${runId} — ${mach.nproc} CPUs (${mach.cpuModel}), node ${mach.node}, pinning: ${mach.pinning}; load average before the run ${mach.loadAvgAtStart.join(' ')}`);
  md.push(`${options.rounds} interleaved rounds, median shown; ${options.duration}s per run after ${options.warmup}s warm-up; 1 KiB JSON response; keep-alive.`);
  if (tp.size) {
    md.push('', `### Throughput, HTTP/1.1 keep-alive (wrk -t1 -c${options.connections})`, '');
    md.push('| target | req/s | p50 ms | p99 ms | errors |', '| --- | ---: | ---: | ---: | ---: |');
    for (const name of order) {
      const s = tp.get(name);
      if (s) md.push(`| ${label[name]} | ${fmtInt(s.rps)} | ${fmt(s.p50)} | ${fmt(s.p99)} | ${s.errors} |`);
    }
  }
  if (h2s.size) {
    md.push('', `### Throughput, HTTP/2 over TLS (h2load -t1 -c${options.h2Connections} -m${options.h2Streams})`, '');
    md.push('| target | req/s | p50 ms | p99 ms | errors |', '| --- | ---: | ---: | ---: | ---: |');
    for (const name of h2Order) {
      const s = h2s.get(name);
      if (s) md.push(`| ${label[name]} | ${fmtInt(s.rps)} | ${fmt(s.p50)} | ${fmt(s.p99)} | ${s.errors} |`);
    }
  }
  if (fx.size) {
    md.push('', `### Latency at a fixed ${options.rate} req/s (open loop, HTTP/1.1 keep-alive)`, '');
    md.push('| target | p50 ms | p99 ms | p99.9 ms | added p50 ms | added p99 ms | errors |', '| --- | ---: | ---: | ---: | ---: | ---: | ---: |');
    const d = fx.get('direct');
    for (const name of order) {
      const s = fx.get(name);
      if (s) md.push(`| ${label[name]} | ${fmt(s.p50, 3)} | ${fmt(s.p99, 3)} | ${fmt(s.p999, 3)} | ${d && name !== 'direct' ? fmt(s.p50 - d.p50, 3) : '-'} | ${d && name !== 'direct' ? fmt(s.p99 - d.p99, 3) : '-'} | ${s.errors} |`);
    }
  }
  md.push('', '### Ratios and targets', '');
  md.push('| measure | value | target | met |', '| --- | ---: | --- | --- |');
  if (tp.get('node-floor')) md.push(`| gateway / node floor (HTTP/1.1 over TLS req/s) | ${fmt(ratio(g, tp.get('node-floor')?.rps))}x | - | - |`, `| node floor / nginx (HTTP/1.1 over TLS req/s) | ${fmt(ratio(tp.get('node-floor')?.rps, tp.get('nginx')?.rps))}x | - | - |`);
  md.push(`| gateway / direct (HTTP/1.1 req/s) | ${Number.isFinite(ratios.gatewayOverDirect) ? fmt(ratios.gatewayOverDirect) + "x" : "n/a"} | - | - |`);
  for (const goal of goals) md.push(`| ${goal.goal} | ${goal.shown} | ${goal.target} | ${Number.isFinite(goal.value) ? (goal.ok ? 'yes' : '**no**') : 'n/a'} |`);
  if (h2s.get('gateway') && h2s.get('nginx')) md.push(`| gateway / nginx (HTTP/2 req/s) | ${fmt(ratios.h2GatewayOverNginx)}x | - | - |`);
  if (Object.keys(skipped).length) md.push('', `Skipped: ${Object.entries(skipped).map(([k, v]) => `${k} (${v})`).join(', ')}`);
  if (profile) md.push('', '### Gateway CPU profile (wrk HTTP/1.1 over TLS)', '', formatSummary(profile));
  const table = md.join('\n');

  const result = {
    runId,
    command: `npm run bench -- ${process.argv.slice(2).join(' ')}`.trim(),
    machine: mach,
    options: { ...options, out: undefined },
    throughput: Object.fromEntries(tp),
    h2: Object.fromEntries(h2s),
    fixedRate: Object.fromEntries(fx),
    ratios,
    goals,
    skipped,
    profile,
  };
  const jsonFile = path.join(options.out, `bench-${runId}.json`);
  writeFileSync(jsonFile, JSON.stringify(result, null, 2) + '\n');
  writeFileSync(path.join(options.out, 'latest.json'), JSON.stringify(result, null, 2) + '\n');
  writeFileSync(path.join(options.out, `bench-${runId}.md`), table + '\n');
  process.stdout.write('\n' + table + '\n\n');
  log(`results: ${jsonFile} (logs in ${logDir})`);
}

function readdirSafe(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

try {
  await main();
} finally {
  await stopAll();
  rmSync(work, { recursive: true, force: true });
}
