// kill -9 under load: every audit record whose request got a response survives, and the chain
// verifies after restart. The gateway runs as users run it (`dmsc start`) in its own process.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Agent, request } from 'undici';

const REPO = path.resolve(import.meta.dirname, '..');
const TOKEN = 'dmsc_adm_kill-test-token-0123456789';
const CONCURRENCY = 12;
const LOAD_MS = 2000;

interface Running {
  child: ChildProcess;
  plainUrl: string;
  adminUrl: string;
  exited: Promise<number | null>;
}

/** `dmsc start` from the sources (so the test needs no build), ready once it prints its URLs. */
async function startGateway(configFile: string, home: string): Promise<Running> {
  const entry = "import { main } from './src/cli/index.ts'; main(process.argv.slice(1)).then((code) => { if (typeof code === 'number') process.exitCode = code; });";
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', entry, 'start', '--config', configFile, '--home', home], {
    cwd: REPO,
    env: { ...process.env, DMSC_ADMIN_TOKEN: TOKEN },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const exited = once(child, 'exit').then(([code]) => code as number | null);
  let output = '';
  const urls = await new Promise<{ plainUrl: string; adminUrl: string }>((resolve, reject) => {
    const onData = (chunk: Buffer) => {
      output += chunk.toString();
      const plain = /local ingress \(HTTP\):\s+(http:\/\/\S+)/.exec(output);
      const admin = /admin API:\s+(http:\/\/\S+)\/admin\/v1/.exec(output);
      if (plain && admin) resolve({ plainUrl: plain[1]!, adminUrl: admin[1]! });
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString()));
    void exited.then((code) => reject(new Error(`the gateway exited with ${code}: ${output}`)));
  });
  child.stdout!.resume();
  return { child, ...urls, exited };
}

async function admin(gateway: Running, pathname: string): Promise<string> {
  const response = await request(gateway.adminUrl + pathname, { headers: { authorization: `Bearer ${TOKEN}` } });
  assert.equal(response.statusCode, 200, pathname);
  return response.body.text();
}

describe('audit durability: kill -9 under load', () => {
  let home: string;
  let configFile: string;
  let gateway: Running | undefined;

  before(async () => {
    home = await mkdtemp(path.join(os.tmpdir(), 'dmsc-audit-kill-'));
    configFile = path.join(home, 'dmsc.yaml');
    await writeFile(
      configFile,
      [
        'listeners:',
        '  tls: { enabled: false }',
        '  plain: { host: 127.0.0.1, port: 0, allowAnonymous: true }',
        '  admin: { host: 127.0.0.1, port: 0 }',
        'logging: { level: warn }',
        '',
      ].join('\n'),
    );
  });

  after(async () => {
    if (gateway && gateway.child.exitCode === null) {
      gateway.child.kill('SIGKILL');
      await gateway.exited;
    }
    await rm(home, { recursive: true, force: true });
  });

  it('keeps every record whose request was answered, and the chain verifies after restart', async () => {
    gateway = await startGateway(configFile, home);
    const dispatcher = new Agent({ connections: CONCURRENCY, pipelining: 1 });
    const answered: string[] = [];
    let failures = 0;
    let stop = false;
    const target = `${gateway.plainUrl}/agents/default/anything/`;

    // Each request carries an invalid bearer token: a 401 authentication failure, audited with its request id.
    const worker = async (id: number) => {
      for (let n = 0; !stop; n++) {
        const requestId = `kill-${id}-${n}`;
        try {
          const response = await request(target, {
            dispatcher,
            headers: { authorization: 'Bearer not-a-token', 'x-dmsc-request-id': requestId },
          });
          await response.body.dump();
          assert.equal(response.statusCode, 401);
          assert.equal(response.headers['x-dmsc-request-id'], requestId);
          answered.push(requestId);
        } catch (err) {
          if (err instanceof assert.AssertionError) throw err;
          failures++; // the gateway died under this request: it was never answered
          if (gateway!.child.exitCode !== null || gateway!.child.signalCode !== null) return;
        }
      }
    };
    // Warm up (first requests load and compile code), then load for LOAD_MS and kill mid-way through it.
    for (let i = 0; i < 50; i++) {
      const response = await request(target, { dispatcher, headers: { authorization: 'Bearer not-a-token', 'x-dmsc-request-id': `warm-${i}` } });
      await response.body.dump();
      answered.push(`warm-${i}`);
    }
    const workers = Array.from({ length: CONCURRENCY }, (_, id) => worker(id));
    await new Promise((resolve) => setTimeout(resolve, LOAD_MS));
    const answeredBeforeKill = answered.length;
    gateway.child.kill('SIGKILL'); // mid-load: workers are still sending
    await gateway.exited;
    stop = true;
    await Promise.all(workers);
    await dispatcher.close();
    assert.ok(answeredBeforeKill > 200, `load was applied (${answeredBeforeKill} answered before the kill)`);
    assert.equal(gateway.child.signalCode, 'SIGKILL');

    gateway = await startGateway(configFile, home);
    const exported = await admin(gateway, '/admin/v1/audit/export?action=authn');
    const recorded = new Set(
      exported
        .trimEnd()
        .split('\n')
        .map((line) => (JSON.parse(line) as { requestId?: string }).requestId),
    );
    const lost = answered.filter((requestId) => !recorded.has(requestId));
    assert.deepEqual(lost, [], `${lost.length} of ${answered.length} answered requests have no audit record`);

    const verdict = JSON.parse(await admin(gateway, '/admin/v1/audit/verify')) as { ok: boolean; records: number; message?: string };
    assert.equal(verdict.ok, true, verdict.message);
    assert.ok(verdict.records >= answered.length);

    // The restarted gateway continues the chain.
    const answer = await request(`${gateway.plainUrl}/agents/default/anything/`, { headers: { authorization: 'Bearer not-a-token', 'x-dmsc-request-id': 'after-restart' } });
    await answer.body.dump();
    assert.equal(answer.statusCode, 401);
    assert.match(await admin(gateway, '/admin/v1/audit/export?action=authn&after=' + (verdict.records - 1)), /"requestId":"after-restart"/);
    assert.equal((JSON.parse(await admin(gateway, '/admin/v1/audit/verify')) as { ok: boolean }).ok, true);

    gateway.child.kill('SIGTERM');
    assert.equal(await gateway.exited, 0);
    process.stdout.write(`# answered ${answered.length} (${answeredBeforeKill} before the kill), ${failures} cut by the kill, ${recorded.size} authn records kept\n`);
  });
});
