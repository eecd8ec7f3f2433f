import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { parse } from 'yaml';
import { dmsc, type RunResult } from './support/cli.js';
import { startTestGateway, TEST_ADMIN_TOKEN, type TestGateway } from './support/gateway.js';
import { startUpstream, type Upstream } from './support/upstream.js';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const BIN = path.join(REPO, 'bin', 'dmsc.js');


let tmp: string;
before(async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), 'dmsc-cli-'));
});
after(async () => {
  await rm(tmp, { recursive: true, force: true });
});

const BAD_CONFIG = ['tenants:', '  - name: acme', '    agents:', '      - name: billing', '        endpoints: ["ftp://127.0.0.1:7001"]', ''].join('\n');

describe('help and usage', () => {
  test('--help lists every command', async () => {
    const { code, stdout } = await dmsc(['--help']);
    assert.equal(code, 0);
    for (const command of [
      'start',
      'config validate',
      'config print',
      'tenant list',
      'tenant create',
      'tenant get',
      'tenant offboard',
      'policy get',
      'policy set',
      'policy explain',
      'admin rotate-master-key',
      'agent list',
      'agent create',
      'agent get',
      'agent delete',
      'agent refresh-card',
      'admin reset-token',
    ]) {
      assert.match(stdout, new RegExp(`^  dmsc ${command}\\b`, 'm'), command);
    }
  });

  test('<command> --help shows its flags', async () => {
    const start = await dmsc(['start', '--help']);
    assert.equal(start.code, 0);
    for (const flag of ['--config FILE', '--home DIR', '--no-tls', '--tls-port PORT', '--mtls', '--no-plain', '--plain-host HOST', '--admin-port PORT', '--log-level LEVEL', '--domain DOMAIN']) {
      assert.ok(start.stdout.includes(flag), flag);
    }
    const create = await dmsc(['agent', 'create', '--help']);
    for (const flag of ['--tenant TENANT', '--endpoint URL', '--tag TAG', '--health-path PATH', '--admin-url URL', '--token TOKEN', '--json']) {
      assert.ok(create.stdout.includes(flag), flag);
    }
    const group = await dmsc(['agent', '--help']);
    assert.equal(group.code, 0);
    assert.match(group.stdout, /dmsc agent refresh-card NAME/);
    assert.doesNotMatch(group.stdout, /dmsc tenant/);
  });

  test('--version prints the package version', async () => {
    const { code, stdout } = await dmsc(['--version']);
    assert.equal(code, 0);
    assert.match(stdout, /^\d+\.\d+\.\d+/);
  });

  test('unknown commands, flags and missing arguments are usage errors (exit 2)', async () => {
    const unknown = await dmsc(['frobnicate']);
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /unknown command "frobnicate"/);
    const badSub = await dmsc(['tenant', 'rename']);
    assert.equal(badSub.code, 2);
    assert.match(badSub.stderr, /unknown tenant command "rename" \(expected list\|create\|get\|offboard\)/);
    const badFlag = await dmsc(['tenant', 'list', '--colour']);
    assert.equal(badFlag.code, 2);
    assert.match(badFlag.stderr, /--colour/);
    assert.match(badFlag.stderr, /dmsc tenant list --help/);
    assert.equal((await dmsc(['agent', 'list'])).code, 2, '--tenant is required');
    assert.equal((await dmsc(['agent', 'create', 'x', '--tenant', 't'])).code, 2, '--endpoint is required');
    assert.equal((await dmsc(['config', 'validate'])).code, 2);
    assert.equal((await dmsc([])).code, 2);
  });
});

describe('config commands', () => {
  test('config validate: ok, and errors with file:line:col', async () => {
    const good = path.join(tmp, 'good.yaml');
    await writeFile(good, 'tenants:\n  - name: acme\n');
    assert.deepEqual(await dmsc(['config', 'validate', good]), { code: 0, stdout: `${good}: ok`, stderr: '' });

    const bad = path.join(tmp, 'bad.yaml');
    await writeFile(bad, BAD_CONFIG);
    const result = await dmsc(['config', 'validate', bad]);
    assert.equal(result.code, 1);
    assert.equal(result.stdout, '');
    assert.match(result.stderr, new RegExp(`^${bad.replace(/[.\\]/g, '\\$&')}:5:21: tenants\\[0\\]\\.agents\\[0\\]\\.endpoints\\[0\\]: must be an http:// or https:// URL`));

    const missing = await dmsc(['config', 'validate', path.join(tmp, 'absent.yaml')]);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /absent\.yaml: file not found/);
  });

  test('config print: the effective config with defaults, flag > env > file', async () => {
    const file = path.join(tmp, 'print.yaml');
    await writeFile(file, 'domain: file.example\nlisteners:\n  tls:\n    port: 1001\n  plain:\n    port: 2001\n');
    const { code, stdout } = await dmsc(['config', 'print', file, '--tls-port', '1003', '--no-plain'], { DMSC_TLS_PORT: '1002', DMSC_PLAIN_PORT: '2002', DMSC_HOME: '/srv/dmsc' });
    assert.equal(code, 0);
    const printed = parse(stdout);
    assert.equal(printed.listeners.tls.port, 1003);
    assert.equal(printed.listeners.plain.port, 2002);
    assert.equal(printed.listeners.plain.enabled, false);
    assert.equal(printed.domain, 'file.example');
    assert.equal(printed.stateDir, '/srv/dmsc');
    assert.equal(printed.timeouts.firstByteMs, 60000);

    const defaults = parse((await dmsc(['config', 'print'])).stdout);
    assert.equal(defaults.stateDir, './.dmsc');
    assert.equal(defaults.listeners.admin.port, 9400);

    const fromEnvFile = parse((await dmsc(['config', 'print'], { DMSC_CONFIG: file })).stdout);
    assert.equal(fromEnvFile.domain, 'file.example');
  });

  test('a bad environment value names the variable', async () => {
    const result = await dmsc(['config', 'print'], { DMSC_ADMIN_PORT: 'ninety' });
    assert.equal(result.code, 1);
    assert.match(result.stderr, /DMSC_ADMIN_PORT: must be a port number 0-65535, got "ninety"/);
  });
});

describe('tenant and agent commands against a running gateway', () => {
  let gw: TestGateway;
  let agentUpstream: Upstream;
  const env = (): NodeJS.ProcessEnv => ({ DMSC_ADMIN_URL: gw.adminUrl, DMSC_ADMIN_TOKEN: TEST_ADMIN_TOKEN });

  before(async () => {
    agentUpstream = await startUpstream('cli-agent');
    gw = await startTestGateway({ tenants: [{ name: 'fromfile', agents: [{ name: 'pinned', endpoints: [agentUpstream.url] }] }] });
  });
  after(async () => {
    await gw?.close();
    await agentUpstream?.close();
  });

  test('tenant create, list, get, offboard', async () => {
    const created = await dmsc(['tenant', 'create', 'acme'], env());
    assert.deepEqual(created, { code: 0, stdout: 'tenant acme created', stderr: '' });

    const list = await dmsc(['tenant', 'list'], env());
    assert.equal(list.code, 0);
    assert.match(list.stdout, /^NAME\s+SOURCE\s+CREATED$/m);
    assert.match(list.stdout, /^acme\s+api\s+\d{4}-/m);
    assert.match(list.stdout, /^fromfile\s+config\s+/m);

    const json = await dmsc(['tenant', 'list', '--json'], env());
    const names = (JSON.parse(json.stdout) as { tenants: Array<{ name: string }> }).tenants.map((tenant) => tenant.name);
    assert.ok(names.includes('acme') && names.includes('fromfile'));

    const one = await dmsc(['tenant', 'get', 'acme'], env());
    assert.match(one.stdout, /^name:\s+acme$/m);

    const unconfirmed = await dmsc(['tenant', 'offboard', 'acme'], env());
    assert.equal(unconfirmed.code, 2);
    assert.match(unconfirmed.stderr, /cannot be undone: add --yes/);
    const offboarded = await dmsc(['tenant', 'offboard', 'acme', '--yes'], env());
    assert.equal(offboarded.code, 0, offboarded.stderr);
    assert.match(offboarded.stdout, /^tenant acme offboarded$/m);
    assert.match(offboarded.stdout, /^data keys destroyed:\s+1$/m);
    const gone = await dmsc(['tenant', 'get', 'acme'], env());
    assert.equal(gone.code, 1);
    assert.match(gone.stderr, /^error: .*acme/);
  });

  test('agent create, list, get, refresh-card, delete', async () => {
    await dmsc(['tenant', 'create', 'shop'], env());
    const created = await dmsc(
      ['agent', 'create', 'billing', '--tenant', 'shop', '--endpoint', agentUpstream.url, '--endpoint', 'http://127.0.0.1:9/replica', '--tag', 'finance', '--tag', 'eu', '--health-path', '/healthz'],
      env(),
    );
    assert.equal(created.code, 0, created.stderr);
    assert.match(created.stdout, /agent billing created in tenant shop/);
    assert.match(created.stdout, /^tags:\s+finance, eu$/m);

    const stored = await gw.admin('GET', '/admin/v1/tenants/shop/agents/billing');
    assert.equal(stored.status, 200);
    assert.deepEqual(stored.body.endpoints, [agentUpstream.url, 'http://127.0.0.1:9/replica']);
    assert.equal(stored.body.healthCheck.path, '/healthz');

    const list = await dmsc(['agent', 'list', '--tenant', 'shop'], env());
    assert.match(list.stdout, /^NAME\s+HEALTHY\s+SOURCE\s+TAGS\s+ENDPOINTS$/m);
    assert.match(list.stdout, /^billing\s+\d\/2\s+api\s+finance,eu\s+/m);

    const get = await dmsc(['agent', 'get', 'billing', '--tenant', 'shop', '--json'], env());
    assert.equal(JSON.parse(get.stdout).name, 'billing');

    const refreshed = await dmsc(['agent', 'refresh-card', 'billing', '--tenant', 'shop'], env());
    assert.equal(refreshed.code, 0, refreshed.stderr);
    assert.match(refreshed.stdout, /^name:\s+billing$/m);

    const duplicate = await dmsc(['agent', 'create', 'billing', '--tenant', 'shop', '--endpoint', agentUpstream.url], env());
    assert.equal(duplicate.code, 1);
    assert.match(duplicate.stderr, /^error: /);

    assert.equal((await dmsc(['agent', 'delete', 'billing', '--tenant', 'shop'], env())).code, 0);
    assert.equal((await gw.admin('GET', '/admin/v1/tenants/shop/agents/billing')).status, 404);
  });

  test('API errors: config-managed agent, wrong token, missing token', async () => {
    const managed = await dmsc(['agent', 'delete', 'pinned', '--tenant', 'fromfile'], env());
    assert.equal(managed.code, 1);
    assert.match(managed.stderr, /^error: .*config/);

    const wrong = await dmsc(['tenant', 'list', '--token', 'not-the-token'], env());
    assert.equal(wrong.code, 1);
    assert.match(wrong.stderr, /^error: /);

    const none = await dmsc(['tenant', 'list'], { DMSC_ADMIN_URL: gw.adminUrl });
    assert.equal(none.code, 1);
    assert.match(none.stderr, /--token or DMSC_ADMIN_TOKEN/);
  });

  test('admin reset-token: the new token works against the running gateway without a restart', async () => {
    const reset = await dmsc(['admin', 'reset-token', '--home', gw.stateDir]);
    assert.equal(reset.code, 0, reset.stderr);
    const token = reset.stdout.trim();
    assert.ok(token.length >= 20);
    const list = await dmsc(['tenant', 'list', '--json', '--admin-url', gw.adminUrl, '--token', token]);
    assert.equal(list.code, 0, list.stderr);
  });

  test('admin reset-token refuses a state directory that does not exist', async () => {
    const result = await dmsc(['admin', 'reset-token'], { DMSC_HOME: path.join(tmp, 'no-such-state') });
    assert.equal(result.code, 1);
    assert.match(result.stderr, /no gateway state in .*no-such-state/);
  });
});

test('an unreachable Admin API names the URL and hints --admin-url', async () => {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as { port: number };
  server.close();
  await once(server, 'close');
  const result = await dmsc(['tenant', 'list', '--admin-url', `http://127.0.0.1:${port}`]);
  assert.equal(result.code, 1);
  assert.match(result.stderr, new RegExp(`cannot reach the Admin API at http://127\\.0\\.0\\.1:${port} \\(connection refused\\).*--admin-url`));
});

describe('the dmsc binary (dist/, built by npm run build)', () => {
  function spawnDmsc(args: string[], env: NodeJS.ProcessEnv = {}): ChildProcess {
    return spawn(process.execPath, [BIN, ...args], { cwd: tmp, env: { PATH: process.env.PATH, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  }

  async function finished(child: ChildProcess): Promise<RunResult> {
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (chunk) => (stdout += chunk));
    child.stderr!.on('data', (chunk) => (stderr += chunk));
    const [code] = (await once(child, 'close')) as [number];
    return { code, stdout, stderr };
  }

  test('config validate and start exit 1 naming file:line:col for a bad file', async () => {
    const bad = path.join(tmp, 'bin-bad.yaml');
    await writeFile(bad, BAD_CONFIG);
    const validate = await finished(spawnDmsc(['config', 'validate', bad]));
    assert.equal(validate.code, 1);
    assert.match(validate.stderr, /bin-bad\.yaml:5:21: tenants\[0\]\.agents\[0\]\.endpoints\[0\]: /);

    const start = await finished(spawnDmsc(['start', '--config', bad, '--home', path.join(tmp, 'never')]));
    assert.equal(start.code, 1);
    assert.match(start.stderr, /bin-bad\.yaml:5:21: /);
  });

  test('start serves, reloads on file change and SIGHUP, and exits 0 on SIGTERM', async () => {
    const file = path.join(tmp, 'live.yaml');
    await writeFile(file, 'tenants:\n  - name: live\n');
    const child = spawnDmsc(['start', '--config', file, '--tls-port', '0', '--plain-port', '0', '--admin-port', '0'], {
      DMSC_HOME: path.join(tmp, 'live-state'),
      DMSC_ADMIN_TOKEN: TEST_ADMIN_TOKEN,
    });
    const exited = finished(child);
    const lines = createInterface({ input: child.stdout! })[Symbol.asyncIterator]();
    const nextLine = async (pattern: RegExp): Promise<string> => {
      for (;;) {
        const { value, done } = await lines.next();
        if (done) assert.fail(`the gateway's output ended before ${pattern}: ${(await exited).stderr}`);
        if (pattern.test(value)) return value;
      }
    };
    try {
      const adminUrl = /(http:\/\/127\.0\.0\.1:\d+)\/admin\/v1/.exec(await nextLine(/admin API:/))![1]!;
      const cliEnv = { DMSC_ADMIN_URL: adminUrl, DMSC_ADMIN_TOKEN: TEST_ADMIN_TOKEN };
      assert.match((await dmsc(['tenant', 'list'], cliEnv)).stdout, /^live\s+config/m);

      await writeFile(file, 'tenants:\n  - name: live\n  - name: added\n');
      await nextLine(/configuration reloaded/);
      assert.match((await dmsc(['tenant', 'list'], cliEnv)).stdout, /^added\s+config/m);

      await writeFile(file, 'tenants: [ {name: BAD} ]\n');
      await nextLine(/configuration reload refused/);
      assert.match((await dmsc(['tenant', 'list'], cliEnv)).stdout, /^added\s+config/m, 'the running config is kept');

      await writeFile(file, 'tenants:\n  - name: live\n');
      await nextLine(/configuration reloaded/);
      child.kill('SIGHUP');
      await nextLine(/configuration reloaded/);
      assert.doesNotMatch((await dmsc(['tenant', 'list'], cliEnv)).stdout, /^added/m);
    } finally {
      child.kill('SIGTERM');
    }
    assert.equal((await exited).code, 0);
  });
});
