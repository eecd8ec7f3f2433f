import { createPrivateKey, createPublicKey, type KeyObject } from 'node:crypto';
import { setImmediate as nextTurn } from 'node:timers/promises';
import type { AuditCheckpointRecord, AuditStore, StoredAuditRow } from '../store/types.js';
import { CHECKPOINT_KEY_PURPOSE, checkpointPublicKeys, checkpointSignatureValid, type CheckpointKeyring } from './checkpoints.js';
import { GENESIS_HASH, rowProblem } from './record.js';

export type AuditProblem = 'modified' | 'deleted' | 'inserted' | 'reordered' | 'truncated' | 'bad_checkpoint';

export type VerifyResult =
  | {
      ok: true;
      /** Records verified (seq 1 to lastSeq). */
      records: number;
      /** Signed checkpoints verified. */
      checkpoints: number;
      lastSeq: number;
      lastHash: string;
      /** Whether the checkpoint keys were proven to be the gateway's (sealed under its master key). */
      keysAuthenticated: boolean;
    }
  | {
      ok: false;
      /** The first bad record: the smallest seq at which the log is no longer the log that was written. */
      seq: number;
      problem: AuditProblem;
      message: string;
      /** Records that verified before the first bad one. */
      records: number;
      checkpoints: number;
      keysAuthenticated: boolean;
    };

export interface VerifyOptions {
  /**
   * The gateway's keyring: each checkpoint key must then be sealed under the master key (so a key
   * added to the database by someone else signs nothing). Without it, stored public keys are trusted.
   */
  keyring?: CheckpointKeyring;
  /** Rows read per query (memory bound); default 2000. */
  batchSize?: number;
}

type VerifyStore = Pick<AuditStore, 'auditRows' | 'auditHead' | 'listAuditCheckpoints' | 'listAuditKeys'>;

const FIRST = -Number.MAX_SAFE_INTEGER;

/** Rows in seq order up to `lastSeq`, a batch at a time, with one row of look-ahead. */
class Rows {
  private batch: StoredAuditRow[] = [];
  private index = 0;
  private after = FIRST;
  private done = false;

  constructor(
    private readonly store: VerifyStore,
    private readonly lastSeq: number,
    private readonly batchSize: number,
  ) {}

  async peek(): Promise<StoredAuditRow | undefined> {
    if (this.index >= this.batch.length && !this.done) {
      // Between batches, let the event loop run (verification may run inside the gateway).
      if (this.after !== FIRST) await nextTurn();
      this.batch = this.store.auditRows(this.after, this.batchSize).filter((row) => row.seq <= this.lastSeq);
      this.index = 0;
      if (this.batch.length === 0) this.done = true;
      else this.after = this.batch.at(-1)!.seq;
    }
    return this.batch[this.index];
  }

  async next(): Promise<StoredAuditRow | undefined> {
    const row = await this.peek();
    if (row) this.index++;
    return row;
  }
}

const verifiesAt = (row: StoredAuditRow, seq: number) => rowProblem({ ...row, seq }) === undefined;

/** The first row after `afterSeq` (up to lastSeq) whose prevHash is `hash`: where the record that follows `hash` went. */
function findSuccessor(store: VerifyStore, hash: string, afterSeq: number, lastSeq: number, batchSize: number): StoredAuditRow | undefined {
  for (let after = afterSeq; ; ) {
    const rows = store.auditRows(after, batchSize);
    for (const row of rows) {
      if (row.seq > lastSeq) return undefined;
      if (row.prevHash === hash) return row;
    }
    if (rows.length < batchSize) return undefined;
    after = rows.at(-1)!.seq;
  }
}

/** Keys whose checkpoints count: proven by the keyring when given, else every stored public key. */
async function trustedKeys(store: VerifyStore, keyring: CheckpointKeyring | undefined): Promise<Map<string, KeyObject>> {
  const keys = await checkpointPublicKeys(store);
  if (!keyring) return keys;
  const proven = new Map<string, KeyObject>();
  for (const record of await store.listAuditKeys()) {
    const stored = keys.get(record.keyId);
    if (!stored) continue;
    try {
      const derived = createPublicKey(createPrivateKey(keyring.open(CHECKPOINT_KEY_PURPOSE, record.keyId, record.sealedPrivateKey)));
      const der = (key: KeyObject) => key.export({ type: 'spki', format: 'der' });
      if (der(derived).equals(der(stored))) proven.set(record.keyId, stored);
    } catch {
      // not sealed under this master key: not the gateway's key
    }
  }
  return proven;
}

/**
 * Verifies the whole audit trail: every record's hash, the prevHash links and seq continuity, and
 * every checkpoint's signature and agreement with the chain. Streams the table in batches, so
 * memory stays flat for millions of records. Names the first bad record (see docs/audit.md for how
 * each kind of tampering is recognised). Records appended while it runs are not covered.
 */
export async function verifyAudit(store: VerifyStore, options: VerifyOptions = {}): Promise<VerifyResult> {
  const batchSize = options.batchSize ?? 2000;
  const keysAuthenticated = options.keyring !== undefined;
  // Checkpoints first, then the head: every genuine checkpoint is then at or below the head.
  const checkpoints = await store.listAuditCheckpoints();
  const lastSeq = store.auditHead()?.seq ?? 0;
  const keys = await trustedKeys(store, options.keyring);

  let badCheckpoint: { seq: number; message: string } | undefined;
  const signed = new Map<number, AuditCheckpointRecord>();
  for (const checkpoint of checkpoints) {
    const key = keys.get(checkpoint.keyId);
    if (key && checkpointSignatureValid(key, checkpoint)) {
      signed.set(checkpoint.seq, checkpoint);
      continue;
    }
    badCheckpoint ??= {
      seq: checkpoint.seq,
      message: !key
        ? `the checkpoint at seq ${checkpoint.seq} is signed by key ${checkpoint.keyId}, which is ${
            options.keyring ? "not one of this gateway's checkpoint keys" : 'unknown'
          }`
        : `the checkpoint at seq ${checkpoint.seq} has an invalid signature (the checkpoint or its key was altered)`,
    };
  }
  let lastSigned = 0;
  for (const seq of signed.keys()) lastSigned = Math.max(lastSigned, seq);
  const previousSigned = (seq: number) => {
    let found = 0;
    for (const s of signed.keys()) if (s < seq) found = Math.max(found, s);
    return found;
  };

  const rows = new Rows(store, lastSeq, batchSize);
  let prev = { seq: 0, hash: GENESIS_HASH };
  let prevPrevHash: string | undefined;
  let records = 0;

  const chainProblem = async (): Promise<{ seq: number; problem: AuditProblem; message: string } | undefined> => {
    for (let row = await rows.next(); row; row = await rows.next()) {
      const expected = prev.seq + 1;
      if (row.seq < expected) return { seq: row.seq, problem: 'inserted', message: `record ${row.seq} precedes the first record (seq 1)` };
      if (row.seq > expected) {
        return { seq: expected, problem: 'deleted', message: `record ${expected} is missing (the record after ${prev.seq} is ${row.seq})` };
      }
      const problem = rowProblem(row);
      if (problem) {
        // The record written as `prev` is stored one later: `prev` was inserted before it.
        if (prev.seq > 0 && row.prevHash === prevPrevHash && verifiesAt(row, prev.seq)) {
          return { seq: prev.seq, problem: 'inserted', message: `record ${prev.seq} was inserted: record ${row.seq} is the record written as ${prev.seq}, moved up by one` };
        }
        const successor = findSuccessor(store, prev.hash, row.seq, lastSeq, batchSize);
        if (successor) {
          const shifted = successor.seq === row.seq + 1 && verifiesAt(successor, row.seq);
          if (shifted && !verifiesAt(row, row.seq + 1)) {
            return { seq: row.seq, problem: 'inserted', message: `record ${row.seq} was inserted: record ${successor.seq} is the record written as ${row.seq}, moved up by one` };
          }
          return { seq: row.seq, problem: 'reordered', message: `record ${row.seq} is out of place: the record written as ${row.seq} is stored at seq ${successor.seq}` };
        }
        return { seq: row.seq, problem: 'modified', message: `record ${row.seq} was modified: ${problem}` };
      }
      if (row.prevHash !== prev.hash) {
        // Two self-consistent records that do not link: one of them was rewritten with a recomputed hash.
        let rowIsGenuine: boolean | undefined;
        if (prev.seq === 0 || signed.has(prev.seq)) rowIsGenuine = false; // prev is vouched for
        else {
          const next = await rows.peek();
          if (next) rowIsGenuine = next.seq === row.seq + 1 && next.prevHash === row.hash && rowProblem(next) === undefined;
          else if (signed.has(row.seq)) rowIsGenuine = signed.get(row.seq)!.hash === row.hash;
        }
        if (rowIsGenuine !== false) {
          const maybe = rowIsGenuine === undefined ? ` (or record ${row.seq}: nothing after it tells which)` : '';
          return { seq: prev.seq, problem: 'modified', message: `record ${prev.seq} was modified${maybe}: record ${row.seq} links to a different hash` };
        }
        const next = await rows.peek();
        if (next && next.seq === row.seq + 1 && next.prevHash === prev.hash && verifiesAt(next, row.seq)) {
          return { seq: row.seq, problem: 'inserted', message: `record ${row.seq} was inserted: record ${next.seq} is the record written as ${row.seq}, moved up by one` };
        }
        const successor = findSuccessor(store, prev.hash, row.seq, lastSeq, batchSize);
        if (successor) {
          return { seq: row.seq, problem: 'reordered', message: `record ${row.seq} is out of place: the record written as ${row.seq} is stored at seq ${successor.seq}` };
        }
        return { seq: row.seq, problem: 'modified', message: `record ${row.seq} was modified: it links to a hash that is not record ${prev.seq}'s` };
      }
      const checkpoint = signed.get(row.seq);
      if (checkpoint && checkpoint.hash !== row.hash) {
        const previous = previousSigned(row.seq);
        const range = previous + 1 < row.seq ? ` (if records before it were rewritten too, the rewrite starts after seq ${previous}, the previous checkpoint)` : '';
        return { seq: row.seq, problem: 'modified', message: `record ${row.seq} differs from the signed checkpoint at seq ${row.seq}${range}` };
      }
      prevPrevHash = prev.hash;
      prev = { seq: row.seq, hash: row.hash as string };
      records++;
    }
    if (lastSigned > prev.seq) {
      return {
        seq: prev.seq + 1,
        problem: 'truncated',
        message: `the log ends at seq ${prev.seq} but a signed checkpoint covers seq ${lastSigned}: records from ${prev.seq + 1} on were removed`,
      };
    }
    return undefined;
  };

  const chain = await chainProblem();
  const first = chain && (!badCheckpoint || chain.seq <= badCheckpoint.seq) ? chain : badCheckpoint && { ...badCheckpoint, problem: 'bad_checkpoint' as const };
  if (first) return { ok: false, ...first, records: Math.min(records, first.seq - 1), checkpoints: signed.size, keysAuthenticated };
  return { ok: true, records, checkpoints: signed.size, lastSeq: prev.seq, lastHash: prev.hash, keysAuthenticated };
}
