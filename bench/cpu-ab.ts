// CPU time per request, A/B: the gateway at a baseline commit against the working tree, alternated
// round by round on the same machine. Throughput on this 2-core VM swings 2x between runs; the CPU
// the gateway process spends per request (utime + stime from /proc, divided by requests answered)
// is the stable measure of what a change costs on the hot path.
//
// Usage: node --import tsx bench/cpu-ab.ts [--baseline REF] [--rounds 5] [--duration 5] [--connections 20]
//   Builds REF (default HEAD~1) in a git worktree under the bench work dir (node_modules shared with
//   this checkout), then per round runs each variant: the baseline, the working tree with every
//   delegation audited (audit.decisions: all, the default) and with only refusals audited
//   (audit.decisions: denials). The gateway runs on CPU 1, autocannon on CPU 0, over the plaintext
//   listener with anonymous callers (no client certificates), to an upstream on CPU 0.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { freePort, installCleanup, pinned, startProcess, stopAll, type Managed } from './procs.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const { values } = parseArgs({
  options: {
    baseline: { type: 'string', default: 'HEAD~1' },
    rounds: { type: 'string', default: '5' },
    duration: { type: 'string', default: '5' },
    connections: { type: 'string', default: '20' },
  },
});
const rounds = Number(values.rounds);
const duration = Number(values.duration);
const connections = Number(values.connections);
const work = mkdtempSync(path.join(os.tmpdir(), 'dmsc-cpu-ab-'));
const TICKS = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim());

function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(fields[11]) + Number(fields[12])) / TICKS; // utime, stime (fields 14 and 15 of stat)
}

function buildBaseline(ref: string): string {
  const dir = path.join(work, 'baseline');
  execFileSync('git', ['-C', ROOT, 'worktree', 'add', '--detach', dir, ref], { stdio: 'ignore' });
  symlinkSync(path.join(ROOT, 'node_modules'), path.join(dir, 'node_modules'));
  execFileSync(process.execPath, [path.join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', path.join(dir, 'tsconfig.build.json')], { stdio: 'inherit' });
  return dir;
}

interface Variant {
  name: string;
  dir: string;
  /** Extra YAML under the bench tenant, and at the top level. */
  tenantYaml: string[];
  topYaml: string[];
}

async function startGateway(variant: Variant, upstream: string): Promise<{ url: string; proc: Managed }> {
  const [plainPort, adminPort] = [await freePort(), await freePort()];
  const home = mkdtempSync(path.join(work, `${variant.name}-`));
  const configFile = path.join(home, 'dmsc.yaml');
  writeFileSync(
    configFile,
    [
      'listeners:',
      '  tls: { enabled: false }',
      `  plain: { host: 127.0.0.1, port: ${plainPort}, allowAnonymous: true }`,
      `  admin: { host: 127.0.0.1, port: ${adminPort} }`,
      'logging: { level: warn }',
      ...variant.topYaml,
      'tenants:',
      '  - name: bench',
      ...variant.tenantYaml,
      '    agents:',
      '      - name: echo',
      `        endpoints: ["${upstream}"]`,
      '        healthCheck: { enabled: false }',
      '',
    ].join('\n'),
  );
  const [cmd, args] = pinned('1', process.execPath, [path.join(variant.dir, 'bin', 'dmsc.js'), 'start', '--config', configFile, '--home', home]);
  const proc = startProcess(`gateway-${variant.name}`, cmd, args, { logFile: path.join(home, 'gateway.log'), env: { ...process.env, DMSC_ADMIN_TOKEN: 'dmsc_adm_bench' } });
  await proc.waitFor(/admin API:\s+http/, 30_000).catch(async () => {
    // Older banners: fall back to polling readiness.
    for (let i = 0; i < 100; i++) {
      const ok = await fetch(`http://127.0.0.1:${adminPort}/readyz`).then((r) => r.ok, () => false);
      if (ok) return;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`${variant.name} did not start:\n${proc.output().slice(-2000)}`);
  });
  return { url: `http://127.0.0.1:${plainPort}/agents/bench/echo/x`, proc };
}

function autocannon(url: string, seconds: number): { requests: number; non2xx: number; errors: number; rps: number } {
  const bin = path.join(ROOT, 'node_modules', 'autocannon', 'autocannon.js');
  const [cmd, args] = pinned('0', process.execPath, [bin, '-c', String(connections), '-d', String(seconds), '--json', url]);
  const run = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 64 << 20 });
  if (run.status !== 0) throw new Error(`autocannon failed: ${run.stderr}`);
  const result = JSON.parse(run.stdout) as { requests: { total: number; average: number }; non2xx: number; errors: number };
  return { requests: result.requests.total, non2xx: result.non2xx, errors: result.errors, rps: result.requests.average };
}

async function main(): Promise<void> {
  const upstreamPort = await freePort();
  const [ucmd, uargs] = pinned('0', process.execPath, ['--import', 'tsx', path.join(ROOT, 'bench', 'upstream.ts'), String(upstreamPort)]);
  const upstream = startProcess('upstream', ucmd, uargs, { logFile: path.join(work, 'upstream.log'), cwd: ROOT });
  await upstream.waitFor(/listening \d+/, 15_000);
  const upstreamUrl = `http://127.0.0.1:${upstreamPort}`;

  const baselineDir = buildBaseline(values.baseline!);
  const variants: Variant[] = [
    { name: 'baseline', dir: baselineDir, tenantYaml: [], topYaml: [] },
    { name: 'audit-all', dir: ROOT, tenantYaml: ['    policy: { anonymous: allow }'], topYaml: ['audit: { decisions: all }'] },
    { name: 'audit-denials', dir: ROOT, tenantYaml: ['    policy: { anonymous: allow }'], topYaml: ['audit: { decisions: denials }'] },
  ];
  const results = new Map<string, number[]>(variants.map((v) => [v.name, []]));
  const rates = new Map<string, number[]>(variants.map((v) => [v.name, []]));
  console.log(`# node --import tsx bench/cpu-ab.ts --baseline ${values.baseline} --rounds ${rounds} --duration ${duration} --connections ${connections}`);
  for (let round = 1; round <= rounds; round++) {
    for (const variant of variants) {
      const gw = await startGateway(variant, upstreamUrl);
      try {
        autocannon(gw.url, 1); // warm-up: JIT, pools
        const pid = gw.proc.child.pid!;
        const before = cpuSeconds(pid);
        const run = autocannon(gw.url, duration);
        const used = cpuSeconds(pid) - before;
        if (run.non2xx > 0 || run.errors > 0) throw new Error(`${variant.name}: ${run.non2xx} non-2xx, ${run.errors} errors`);
        const micros = (used * 1e6) / run.requests;
        results.get(variant.name)!.push(micros);
        rates.get(variant.name)!.push(run.rps);
        console.log(`round ${round} ${variant.name.padEnd(14)} ${micros.toFixed(1).padStart(7)} µs CPU/request  ${Math.round(run.rps)} req/s`);
      } finally {
        gw.proc.child.kill('SIGKILL');
        await gw.proc.exited;
      }
    }
  }
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  const base = median(results.get('baseline')!);
  console.log('\nvariant          median µs CPU/request  vs baseline  median req/s');
  for (const variant of variants) {
    const m = median(results.get(variant.name)!);
    console.log(`${variant.name.padEnd(16)} ${m.toFixed(1).padStart(20)}  ${(m / base).toFixed(2).padStart(10)}x  ${Math.round(median(rates.get(variant.name)!)).toString().padStart(12)}`);
  }
}

installCleanup();
try {
  await main();
} finally {
  await stopAll();
  spawnSync('git', ['-C', ROOT, 'worktree', 'remove', '--force', path.join(work, 'baseline')], { stdio: 'ignore' });
  if (existsSync(work)) rmSync(work, { recursive: true, force: true });
}
