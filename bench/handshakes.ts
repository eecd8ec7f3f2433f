// Full mutual-TLS handshakes per second: the gateway's TLS listener against nginx with the same
// ECDSA P-256 server certificate, the same client certificate and CA chain, TLS 1.3, one process each.
// The client is `openssl s_time -new` (no session resumption) pinned to CPU 0; servers share CPU 1.
//
// Usage: node --import tsx bench/handshakes.ts [--time 8] [--rounds 3]
import { mkdtempSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { freePort, hasBinary, installCleanup, pinned, runCommand, startProcess, stopAll } from './procs.js';

const ROOT = path.resolve(import.meta.dirname, '..');
const { values } = parseArgs({ options: { time: { type: 'string', default: '8' }, rounds: { type: 'string', default: '3' } } });
const seconds = Number(values.time);
const rounds = Number(values.rounds);
const multiCpu = os.cpus().length >= 2;
const SERVER_CPUS = multiCpu ? '1' : undefined;
const CLIENT_CPUS = multiCpu ? '0' : undefined;

installCleanup();
const work = mkdtempSync(path.join(os.tmpdir(), 'dmsc-handshakes-'));
process.on('exit', () => rmSync(work, { recursive: true, force: true }));
const home = path.join(work, 'home');
const tlsDir = path.join(home, 'tls');

const [gwPort, adminPort, nginxPort] = [await freePort(), await freePort(), await freePort()];
const config = path.join(work, 'dmsc.yaml');
writeFileSync(
  config,
  [
    'listeners:',
    `  tls: { host: 127.0.0.1, port: ${gwPort}, mtls: { enabled: true } }`,
    '  plain: { enabled: false }',
    `  admin: { host: 127.0.0.1, port: ${adminPort} }`,
    'logging: { level: warn }',
    '',
  ].join('\n'),
);
const [gwCmd, gwArgs] = pinned(SERVER_CPUS, process.execPath, [path.join(ROOT, 'bin', 'dmsc.js'), 'start', '--config', config, '--home', home]);
const gateway = startProcess('gateway', gwCmd, gwArgs, {
  logFile: path.join(work, 'gateway.log'),
  env: { ...process.env, DMSC_ADMIN_TOKEN: 'bench-handshakes' },
  cwd: work,
});
await gateway.waitFor(/agent ingress \(HTTPS[^)]*\):\s+https:\/\/\S+/, 60_000);

let nginxVersion: string | undefined;
if (hasBinary('nginx')) {
  const prefix = path.join(work, 'nginx');
  mkdirSync(path.join(prefix, 'logs'), { recursive: true });
  writeFileSync(
    path.join(prefix, 'nginx.conf'),
    `worker_processes 1;
pid ${prefix}/nginx.pid;
error_log ${prefix}/logs/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  server {
    listen 127.0.0.1:${nginxPort} ssl;
    ssl_protocols TLSv1.3;
    ssl_certificate ${tlsDir}/server.crt;
    ssl_certificate_key ${tlsDir}/server.key;
    ssl_client_certificate ${tlsDir}/ca.crt;
    ssl_verify_client on;
    ssl_verify_depth 3;
    ssl_session_cache off;
    ssl_session_tickets off;
    location / { return 200 "ok"; }
  }
}
`,
  );
  const [cmd, args] = pinned(SERVER_CPUS, 'nginx', ['-p', prefix, '-c', path.join(prefix, 'nginx.conf'), '-g', 'daemon off;']);
  startProcess('nginx', cmd, args, { logFile: path.join(work, 'nginx.log') });
  nginxVersion = /nginx\/([\d.]+)/.exec((await runCommand('nginx', ['-v'])).stderr)?.[1];
} else {
  console.error('nginx not found: measuring the gateway only (apt-get install nginx)');
}

async function handshakesPerSecond(port: number): Promise<number> {
  const [cmd, args] = pinned(CLIENT_CPUS, 'openssl', [
    's_time', '-connect', `127.0.0.1:${port}`, '-new', '-tls1_3',
    '-cert', path.join(tlsDir, 'client.crt'), '-key', path.join(tlsDir, 'client.key'), '-CAfile', path.join(tlsDir, 'ca.crt'),
    '-time', String(seconds),
  ]);
  const { stdout } = await runCommand(cmd, args);
  // "1234 connections in 8.01s; 154.06 connections/user sec, bytes read 0"  then  "1234 connections in 9 real seconds, ..."
  const real = /(\d+) connections in (\d+) real seconds/.exec(stdout);
  if (!real) throw new Error(`unexpected s_time output: ${stdout}`);
  return Number(real[1]) / Number(real[2]);
}

await new Promise((resolve) => setTimeout(resolve, 500)); // let nginx bind
const targets: Array<{ name: string; port: number }> = [{ name: 'DMSC gateway', port: gwPort }];
if (nginxVersion) targets.push({ name: `nginx ${nginxVersion}`, port: nginxPort });
const results = new Map<string, number[]>(targets.map((t) => [t.name, []]));
for (let round = 0; round < rounds; round++) {
  const order = round % 2 === 0 ? targets : [...targets].reverse();
  for (const target of order) results.get(target.name)!.push(await handshakesPerSecond(target.port));
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
console.log(`\n### Full mTLS handshakes per second (openssl s_time -new -tls1_3, ${seconds} s x ${rounds} rounds, median)\n`);
console.log('| server | handshakes/s | rounds |');
console.log('| --- | ---: | --- |');
for (const [name, xs] of results) console.log(`| ${name} | ${median(xs).toFixed(0)} | ${xs.map((x) => x.toFixed(0)).join(', ')} |`);
if (nginxVersion) {
  const ratio = median(results.get('DMSC gateway')!) / median(results.get(`nginx ${nginxVersion}`)!);
  console.log(`\ngateway / nginx: ${ratio.toFixed(2)}x`);
}
await stopAll();
process.exit(0);
