import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { Keyring } from '../src/identity/keyring.js';
import { openStore } from '../src/store/index.js';
import { TenantKeys, TenantKeyUnavailable } from '../src/tenancy/keys.js';
import { startTestGateway } from './support/gateway.js';
import { dmsc } from './support/cli.js';

const dirs: string[] = [];
async function tempDir(): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'dmsc-keys-'));
  dirs.push(dir);
  return dir;
}
after(async () => {
  for (const dir of dirs) await rm(dir, { recursive: true, force: true });
});

describe('tenant data keys', () => {
  test('each tenant has its own 256-bit key; sealed values open only for that tenant and record', async () => {
    const store = await openStore(await tempDir());
    const keys = new TenantKeys(store, Keyring.fromKey(randomBytes(32)));
    await keys.ensure('acme');
    await keys.ensure('beta');
    const sealed = keys.seal('acme', 'audit/r1', 'secret excerpt');
    assert.match(sealed, /^dk1\.1\./);
    assert.equal(keys.open('acme', 'audit/r1', sealed).toString(), 'secret excerpt');
    assert.throws(() => keys.open('beta', 'audit/r1', sealed), TenantKeyUnavailable, 'another tenant cannot open it');
    assert.throws(() => keys.open('acme', 'audit/r2', sealed), TenantKeyUnavailable, 'it cannot be moved to another record');
    const stored = await store.listTenantKeys();
    assert.deepEqual(
      stored.map((key) => [key.tenant, key.version]),
      [
        ['acme', 1],
        ['beta', 1],
      ],
    );
    assert.ok(!stored.some((key) => key.wrappedKey.includes('secret')), 'keys are stored wrapped');
    await store.close();
  });

  test('rotation keeps old data readable; destroying the keys crypto-shreds it, also after a restart', async () => {
    const dir = await tempDir();
    const keyring = Keyring.fromKey(randomBytes(32));
    let store = await openStore(dir);
    let keys = new TenantKeys(store, keyring);
    await keys.ensure('acme');
    const before = keys.seal('acme', 'x', 'v1 data');
    assert.equal(await keys.rotate('acme'), 2);
    const afterRotation = keys.seal('acme', 'x', 'v2 data');
    assert.match(afterRotation, /^dk1\.2\./);
    assert.equal(keys.open('acme', 'x', before).toString(), 'v1 data');
    await store.close();

    store = await openStore(dir);
    keys = new TenantKeys(store, keyring);
    await keys.load();
    assert.equal(keys.open('acme', 'x', afterRotation).toString(), 'v2 data');
    assert.equal(await keys.destroy('acme'), 2);
    assert.throws(() => keys.open('acme', 'x', before), /is gone|no data key/);
    await store.close();

    store = await openStore(dir);
    keys = new TenantKeys(store, keyring);
    await keys.load();
    assert.equal(keys.has('acme'), false);
    assert.throws(() => keys.open('acme', 'x', afterRotation), TenantKeyUnavailable);
    await store.close();
  });
});

describe('master-key rotation', () => {
  test('dmsc admin rotate-master-key re-wraps tenant keys and CA keys; sealed data stays as it was', async () => {
    const stateDir = await tempDir();
    let gw = await startTestGateway({ tenants: [{ name: 'acme' }] }, { stateDir });
    const sealed = gw.gateway.tenancy.keys.seal('acme', 'audit/r1', 'kept across rotation');
    const oldKey = await readFile(path.join(stateDir, 'master.key'), 'utf8');
    await gw.close(false);

    const store = await openStore(stateDir);
    const wrappedBefore = (await store.listTenantKeys()).map((key) => key.wrappedKey);
    await store.close();

    const newKeyFile = path.join(stateDir, 'new.key');
    await writeFile(newKeyFile, randomBytes(32).toString('hex'));
    const rotated = await dmsc(['admin', 'rotate-master-key', '--new-key-file', newKeyFile, '--home', stateDir]);
    assert.equal(rotated.code, 0, rotated.stderr);
    assert.match(rotated.stdout, /re-wrapped \d+ sealed keys/);
    assert.notEqual(await readFile(path.join(stateDir, 'master.key'), 'utf8'), oldKey);
    assert.equal(existsSync(path.join(stateDir, 'master.key.next')), false);

    const reopened = await openStore(stateDir);
    const wrappedAfter = (await reopened.listTenantKeys()).map((key) => key.wrappedKey);
    await reopened.close();
    assert.equal(wrappedAfter.length, wrappedBefore.length);
    wrappedAfter.forEach((wrapped, i) => assert.notEqual(wrapped, wrappedBefore[i], 'each tenant key is re-wrapped'));

    // The gateway starts with the new key: CA keys open, and data sealed before is readable unchanged.
    gw = await startTestGateway({ tenants: [{ name: 'acme' }] }, { stateDir });
    assert.equal(gw.gateway.tenancy.keys.open('acme', 'audit/r1', sealed).toString(), 'kept across rotation');
    await gw.close(false);

    // The old key no longer opens this state.
    await writeFile(path.join(stateDir, 'master.key'), oldKey);
    await assert.rejects(startTestGateway({ tenants: [{ name: 'acme' }] }, { stateDir }), /not the one that sealed this state/);
  });

  test('refuses to run while a gateway uses the state directory', async () => {
    const stateDir = await tempDir();
    const gw = await startTestGateway({}, { stateDir });
    const newKeyFile = path.join(stateDir, 'new.key');
    await writeFile(newKeyFile, randomBytes(32).toString('hex'));
    try {
      // The test gateway runs in this process; the pid file names it.
      const result = await dmsc(['admin', 'rotate-master-key', '--new-key-file', newKeyFile, '--home', stateDir]);
      assert.equal(result.code, 1);
      assert.match(result.stderr, /is running on .*stop it first/);
    } finally {
      await gw.close();
    }
  });
});
