import { existsSync } from 'node:fs';
import { chmod, copyFile, readFile, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { GatewayConfig } from '../config/schema.js';
import { envMasterKey, fileMasterKey, Keyring, type MasterKeyProvider } from './keyring.js';
import { openStore } from '../store/index.js';
import type { DurableStore } from '../store/types.js';

/**
 * Master-key rotation, offline (the gateway is stopped: a running one keeps the old key in memory).
 * Every value sealed by the master key is re-sealed under the new key in one SQLite transaction,
 * which also records the new key's id. With the default key file (<state>/master.key) the new key is
 * first written next to it as master.key.next and moved into place after the commit; a crash between
 * the two is repaired at the next start (`promotePendingMasterKey`), because the stored key id says
 * which key sealed the state.
 */

export const MASTER_KEY_ID_META = 'master_key_id';
const PID_FILE = 'gateway.pid';

/** Where the master key comes from: the config's file or env variable, else <state>/master.key (created at first start). */
export function masterKeyProvider(
  config: GatewayConfig,
  stateDir: string,
  env: NodeJS.ProcessEnv,
  options: { createDefault: boolean } = { createDefault: true },
): MasterKeyProvider {
  const { file, env: variable } = config.identity.masterKey;
  if (variable) return envMasterKey(variable, env);
  if (file) return fileMasterKey(path.resolve(file), { create: false });
  return fileMasterKey(path.join(stateDir, 'master.key'), { create: options.createDefault });
}

function keyringOf(file: string): Promise<Keyring> {
  return Keyring.open(fileMasterKey(file, { create: false }));
}

/** Written at start, removed at close: offline tools refuse to run under a live gateway. */
export async function writePidFile(stateDir: string): Promise<() => Promise<void>> {
  const file = path.join(stateDir, PID_FILE);
  await writeFile(file, `${process.pid}\n`, { mode: 0o600 });
  return () => rm(file, { force: true });
}

async function runningGateway(stateDir: string): Promise<number | undefined> {
  const file = path.join(stateDir, PID_FILE);
  if (!existsSync(file)) return undefined;
  const pid = Number((await readFile(file, 'utf8')).trim());
  if (!Number.isSafeInteger(pid) || pid <= 0) return undefined;
  try {
    process.kill(pid, 0);
    return pid;
  } catch {
    return undefined; // stale: the process is gone (e.g. killed with -9)
  }
}

export async function rotateMasterKey(options: {
  stateDir: string;
  config: GatewayConfig;
  env: NodeJS.ProcessEnv;
  newKeyFile: string;
}): Promise<{ rewrapped: number; note: string }> {
  const { stateDir, config, env } = options;
  const pid = await runningGateway(stateDir);
  if (pid !== undefined) throw new Error(`a gateway (pid ${pid}) is running on ${stateDir}: stop it first, then rotate the master key`);
  const oldKeyring = await Keyring.open(masterKeyProvider(config, stateDir, env));
  const newKeyring = await keyringOf(options.newKeyFile);
  if (newKeyring.fingerprint() === oldKeyring.fingerprint()) throw new Error('the new master key is the current one');
  const defaultFile = !config.identity.masterKey.file && !config.identity.masterKey.env;
  const current = path.join(stateDir, 'master.key');
  const next = `${current}.next`;
  if (defaultFile) {
    await copyFile(options.newKeyFile, next);
    await chmod(next, 0o600);
  }
  const store = await openStore(stateDir);
  let rewrapped: number;
  try {
    // Tenant data keys are among these: re-wrapped, while the data they sealed is not touched.
    rewrapped = await store.rewrapSealed(
      (purpose, context, sealed) => newKeyring.seal(purpose, context, oldKeyring.open(purpose, context, sealed)),
      { [MASTER_KEY_ID_META]: newKeyring.fingerprint() },
    );
  } finally {
    await store.close();
  }
  if (defaultFile) {
    await rename(next, current);
    return { rewrapped, note: `${current} now holds the new key; start the gateway as usual.` };
  }
  const where = config.identity.masterKey.file ? `the file ${config.identity.masterKey.file}` : `the environment variable ${config.identity.masterKey.env}`;
  return { rewrapped, note: `Put the new key in ${where} before starting the gateway: the state is now sealed under it.` };
}

/**
 * At start, before any sealed value is opened: if the stored key id names master.key.next (a
 * rotation was interrupted after its commit), move it into place; if it names neither key, say so.
 */
export async function promotePendingMasterKey(stateDir: string, store: Pick<DurableStore, 'getMeta'>): Promise<void> {
  const expected = await store.getMeta(MASTER_KEY_ID_META);
  const current = path.join(stateDir, 'master.key');
  const next = `${current}.next`;
  if (!expected || !existsSync(next)) return;
  if (existsSync(current) && (await keyringOf(current)).fingerprint() === expected) {
    await rm(next, { force: true }); // the rotation never committed
    return;
  }
  if ((await keyringOf(next)).fingerprint() === expected) await rename(next, current);
}

/** Records which master key seals this state (first start) or checks it is still the same one. */
export async function checkMasterKey(store: Pick<DurableStore, 'getMeta' | 'setMeta'>, keyring: Keyring): Promise<void> {
  const expected = await store.getMeta(MASTER_KEY_ID_META);
  if (!expected) {
    await store.setMeta(MASTER_KEY_ID_META, keyring.fingerprint());
    return;
  }
  if (expected !== keyring.fingerprint()) {
    throw new Error(
      `the master key (id ${keyring.fingerprint()}) is not the one that sealed this state (id ${expected}): point identity.masterKey at the right key`,
    );
  }
}
