import path from 'node:path';
import { SqliteStore } from './sqlite.js';
import type { DurableStore } from './types.js';

export type * from './types.js';
export { SqliteStore } from './sqlite.js';

export const STORE_FILE = 'dmsc.db';

/** Opens (creating and migrating) the embedded store in the state directory. */
export async function openStore(stateDir: string): Promise<DurableStore> {
  const store = new SqliteStore(path.join(stateDir, STORE_FILE));
  await store.open();
  return store;
}
export { inlineAuditWriter, type AuditWrite, type AuditWriter } from './audit-writer.js';
