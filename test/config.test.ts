import assert from 'node:assert/strict';
import { mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import {
  ConfigError,
  configOverrides,
  loadConfigFile,
  parseConfigText,
  watchConfig,
  type ConfigWatcher,
  type GatewayConfig,
} from '../src/config/index.js';

function configErrorOf(text: string): ConfigError {
  try {
    parseConfigText(text, 'dmsc.yaml');
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected a ConfigError, got ${String(err)}`);
    return err;
  }
  assert.fail('expected the config to be refused');
}

describe('config errors name file:line:col, the path and the problem', () => {
  test('wrong type', () => {
    const err = configErrorOf(['listeners:', '  tls:', '    port: "8443x"', ''].join('\n'));
    assert.equal(err.message, 'dmsc.yaml:3:11: listeners.tls.port: expected number, got string "8443x"');
  });

  test('bad URL deep in a list', () => {
    const text = [
      'domain: dmsc.localhost',
      'tenants:',
      '  - name: acme',
      '    agents:',
      '      - name: billing',
      '        endpoints:',
      '          - http://127.0.0.1:7001',
      '          - ftp://127.0.0.1:7002',
      '',
    ].join('\n');
    const err = configErrorOf(text);
    assert.match(err.message, /^dmsc\.yaml:8:13: tenants\[0\]\.agents\[0\]\.endpoints\[1\]: must be an http:\/\/ or https:\/\/ URL/);
  });

  test('unknown key points at the key', () => {
    const text = ['tenants:', '  - name: acme', '    agents:', '      - name: billing', '        endpoint: [http://127.0.0.1:7001]', ''].join('\n');
    const err = configErrorOf(text);
    assert.match(err.message, /^dmsc\.yaml:5:9: tenants\[0\]\.agents\[0\]\.endpoint: unknown key$/m);
    // The missing required field is reported at the nearest existing node: the agent.
    assert.match(err.message, /^dmsc\.yaml:4:9: tenants\[0\]\.agents\[0\]\.endpoints: required$/m);
    assert.equal(err.problems.length, 2);
  });

  test('YAML syntax error', () => {
    const err = configErrorOf(['listeners:', '  tls: [', 'domain: x', ''].join('\n'));
    assert.match(err.message, /^dmsc\.yaml:\d+:\d+: /);
    assert.equal(err.problems.length >= 1, true);
  });

  test('duplicate YAML key', () => {
    const err = configErrorOf(['domain: a.example', 'domain: b.example', ''].join('\n'));
    assert.match(err.message, /^dmsc\.yaml:2:1: .*unique/);
  });

  test('duplicate agent', () => {
    const text = [
      'tenants:',
      '  - name: acme',
      '    agents:',
      '      - name: billing',
      '        endpoints: [http://127.0.0.1:7001]',
      '      - name: billing',
      '        endpoints: [http://127.0.0.1:7002]',
      '',
    ].join('\n');
    const err = configErrorOf(text);
    assert.equal(err.message, 'dmsc.yaml:6:15: tenants[0].agents[1].name: duplicate agent "billing" in tenant "acme"');
  });

  test('several problems give several lines', () => {
    const err = configErrorOf(['domain: ""', 'limits:', '  maxHeaderBytes: 10', ''].join('\n'));
    assert.equal(err.problems.length, 2);
    assert.match(err.problems[0]!, /^dmsc\.yaml:1:9: domain: /);
    assert.match(err.problems[1]!, /^dmsc\.yaml:3:19: limits\.maxHeaderBytes: /);
  });

  test('a missing file names the file', async () => {
    await assert.rejects(loadConfigFile('/nonexistent/dmsc.yaml'), (err: Error) => err instanceof ConfigError && err.message === '/nonexistent/dmsc.yaml: file not found');
  });

  test('an empty file means all defaults', () => {
    const config = parseConfigText('', 'empty.yaml');
    assert.equal(config.listeners.tls.port, 8443);
    assert.equal(config.listeners.plain.host, '127.0.0.1');
    assert.equal(config.stateDir, undefined);
    assert.deepEqual(config.tenants, []);
  });
});

describe('overrides: flag > environment > file > default', () => {
  const file = ['domain: file.example', 'listeners:', '  tls:', '    port: 1001', '  plain:', '    port: 2001', ''].join('\n');

  test('each layer wins over the ones below it', () => {
    const overrides = configOverrides({ 'tls-port': '1003' }, { DMSC_TLS_PORT: '1002', DMSC_PLAIN_PORT: '2002', DMSC_LOG_LEVEL: 'warn' });
    const config = parseConfigText(file, 'dmsc.yaml', overrides);
    assert.equal(config.listeners.tls.port, 1003); // flag
    assert.equal(config.listeners.plain.port, 2002); // env over file
    assert.equal(config.domain, 'file.example'); // file over default
    assert.equal(config.logging.level, 'warn'); // env over default
    assert.equal(config.listeners.admin.port, 9400); // default
  });

  test('boolean flags and variables', () => {
    assert.equal(parseConfigText('', 'x', configOverrides({}, { DMSC_TLS: '0', DMSC_MTLS: 'true' })).listeners.tls.enabled, false);
    const flagged = parseConfigText('listeners: { tls: { enabled: true } }', 'x', configOverrides({ 'no-tls': true, mtls: true, 'no-plain': true }, { DMSC_TLS: '1' }));
    assert.equal(flagged.listeners.tls.enabled, false);
    assert.equal(flagged.listeners.tls.mtls.enabled, true);
    assert.equal(flagged.listeners.plain.enabled, false);
  });

  test('--home / DMSC_HOME set stateDir', () => {
    assert.equal(parseConfigText('stateDir: /from/file', 'x', configOverrides({}, { DMSC_HOME: '/from/env' })).stateDir, '/from/env');
    assert.equal(parseConfigText('stateDir: /from/file', 'x', configOverrides({ home: '/from/flag' }, { DMSC_HOME: '/from/env' })).stateDir, '/from/flag');
  });

  test('bad values name the variable or flag', () => {
    assert.throws(() => configOverrides({}, { DMSC_TLS_PORT: 'http' }), /^ConfigError: DMSC_TLS_PORT: must be a port number 0-65535, got "http"$/);
    assert.throws(() => configOverrides({}, { DMSC_ADMIN_PORT: '70000' }), /DMSC_ADMIN_PORT: must be a port number/);
    assert.throws(() => configOverrides({}, { DMSC_MTLS: 'yes please' }), /DMSC_MTLS: must be 0, 1, false or true/);
    assert.throws(() => configOverrides({}, { DMSC_LOG_LEVEL: 'loud' }), /DMSC_LOG_LEVEL=loud: .*"info"/);
    assert.throws(() => configOverrides({ 'log-level': 'loud' }, {}), /--log-level=loud: /);
    assert.throws(() => configOverrides({ 'plain-port': '-1' }, {}), /--plain-port: must be a port number/);
  });

  test('a file that is not a mapping is still reported against the file', () => {
    assert.throws(() => parseConfigText('listeners: 5', 'dmsc.yaml', configOverrides({ 'tls-port': '1' }, {})), /^ConfigError: dmsc\.yaml:1:12: listeners: expected object/);
  });
});

describe('watchConfig', () => {
  let dir: string;
  let file: string;
  let watcher: ConfigWatcher | undefined;
  const load = () => loadConfigFile(file);

  /** Events from the watcher as a queue the test awaits one by one. */
  function events() {
    const queue: Array<{ change?: GatewayConfig; error?: Error }> = [];
    const waiters: Array<(event: { change?: GatewayConfig; error?: Error }) => void> = [];
    const push = (event: { change?: GatewayConfig; error?: Error }) => {
      const waiter = waiters.shift();
      if (waiter) waiter(event);
      else queue.push(event);
    };
    return {
      onChange: async (change: GatewayConfig) => push({ change }),
      onError: (error: Error) => push({ error }),
      next: () => new Promise<{ change?: GatewayConfig; error?: Error }>((resolve) => {
        const queued = queue.shift();
        if (queued) resolve(queued);
        else waiters.push(resolve);
      }),
      pending: () => queue.length,
    };
  }

  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'dmsc-config-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  test('fires on change, on rename-replace, keeps running on invalid content and reports it', async () => {
    file = path.join(dir, 'dmsc.yaml');
    await writeFile(file, 'domain: one.example\n');
    const seen = events();
    watcher = watchConfig(file, load, seen.onChange, seen.onError);
    try {
      await writeFile(file, 'domain: two.example\n');
      assert.equal((await seen.next()).change?.domain, 'two.example');

      // Editor style: write a temp file, rename it over the original (new inode).
      const temp = path.join(dir, '.dmsc.yaml.swp');
      await writeFile(temp, 'domain: three.example\n');
      await rename(temp, file);
      assert.equal((await seen.next()).change?.domain, 'three.example');

      await writeFile(file, 'domain: 42\nlisteners: nope\n');
      const refused = await seen.next();
      assert.ok(refused.error instanceof ConfigError);
      assert.match(refused.error.message, /dmsc\.yaml:2:12: listeners: /);

      await writeFile(file, 'domain: four.example\n');
      assert.equal((await seen.next()).change?.domain, 'four.example');

      // SIGHUP: reloads even though nothing changed.
      watcher.trigger();
      assert.equal((await seen.next()).change?.domain, 'four.example');
      assert.equal(seen.pending(), 0);
    } finally {
      watcher.close();
    }
  });

  test('ignores writes that leave the content unchanged and never runs two reloads at once', async () => {
    file = path.join(dir, 'serial.yaml');
    await writeFile(file, 'domain: a.example\n');
    let active = 0;
    let maxActive = 0;
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    let markStarted!: () => void;
    const slowReloadStarted = new Promise<void>((resolve) => (markStarted = resolve));
    const seen = events();
    const slowChange = async (config: GatewayConfig) => {
      active++;
      maxActive = Math.max(maxActive, active);
      if (config.domain === 'b.example') {
        markStarted();
        await released;
      }
      active--;
      await seen.onChange(config);
    };
    watcher = watchConfig(file, load, slowChange, seen.onError);
    try {
      await writeFile(file, 'domain: a.example\n'); // same content: no reload
      await writeFile(file, 'domain: b.example\n');
      // While the slow reload of b runs, ask for more.
      await slowReloadStarted;
      watcher.trigger();
      watcher.trigger();
      await writeFile(file, 'domain: c.example\n');
      release();
      assert.equal((await seen.next()).change?.domain, 'b.example');
      assert.equal((await seen.next()).change?.domain, 'c.example');
      assert.equal(maxActive, 1);
    } finally {
      watcher.close();
    }
  });
});
