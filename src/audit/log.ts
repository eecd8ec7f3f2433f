import type { Logger } from 'pino';
import { inlineAuditWriter, type AuditWrite, type AuditWriter } from '../store/audit-writer.js';
import type { AuditCheckpointRecord, AuditFilter, AuditStore, ChainedAuditRecord } from '../store/types.js';
import { loadCheckpointSigner, signCheckpoint, type CheckpointKeyring, type CheckpointSigner } from './checkpoints.js';
import { exportAudit, type ExportFilter } from './export.js';
import { chainRecord, GENESIS_HASH, hashOf, type AuditEvent } from './record.js';
import { verifyAudit, type VerifyResult } from './verify.js';

/**
 * process (default): a record is committed to the SQLite WAL before append() returns; it survives the
 * gateway being killed (kill -9, OOM, crash), not a power loss or kernel panic.
 * power: the WAL is also fsynced before append() returns; survives power loss, costs one fsync per record.
 */
export type AuditDurability = 'process' | 'power';

export interface AuditLogOptions {
  durability?: AuditDurability;
  /** thread (default when the store offers one): commits and WAL fsyncs on a writer thread; inline: on the caller's. */
  writer?: 'thread' | 'inline';
  /** The clock (tests). */
  now?: () => Date;
}

export interface CheckpointOptions {
  /** Sign a checkpoint after this many new records (default 1000). */
  everyRecords?: number;
  /** ... or this often while there are new records (default 60 s). */
  everyMs?: number;
}

export const DEFAULT_CHECKPOINT_RECORDS = 1000;
export const DEFAULT_CHECKPOINT_MS = 60_000;

type LogStore = Pick<
  AuditStore,
  | 'auditHead'
  | 'insertAudit'
  | 'insertAuditBatch'
  | 'setAuditChain'
  | 'auditRows'
  | 'listAudit'
  | 'insertAuditCheckpoint'
  | 'listAuditCheckpoints'
  | 'listAuditKeys'
  | 'putAuditKey'
  | 'openAuditWriter'
>;

function isSeqTaken(err: unknown): boolean {
  return (err as { code?: string }).code === 'SQLITE_CONSTRAINT_PRIMARYKEY';
}

/**
 * The audit trail: an append-only, hash-chained log of security decisions (authentication
 * failures, enrollments, certificate issue and revocation, token issue, policy and rate-limit
 * denials, admin writes), with signed checkpoints. append() and record() return once the record is
 * committed; commit() (the request path) resolves once it is, so a response sent afterwards cannot
 * outlive its record. Records are chained here, on the caller's thread, in call order; a writer
 * (by default a thread with its own database connection) stores them in that order.
 * One writer process per database (the chain head is kept here).
 */
export class AuditLog {
  private head: { seq: number; hash: string } | undefined;
  private readonly durability: AuditDurability;
  private readonly now: () => Date;
  private signer: CheckpointSigner | undefined;
  private keyring: CheckpointKeyring | undefined;
  private everyRecords = DEFAULT_CHECKPOINT_RECORDS;
  private lastCheckpointSeq = 0;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;
  /** Chained, not yet committed (group commit, see commit()). */
  private pending: ChainedAuditRecord[] = [];
  private batch: { promise: Promise<void>; resolve: () => void; reject: (err: Error) => void } | undefined;
  private readonly writer: AuditWriter;
  /** Bumped when a write fails and the chain restarts from what is stored; older writes' failures are then moot. */
  private generation = 0;

  constructor(
    private readonly store: LogStore,
    private readonly logger: Logger,
    options: AuditLogOptions = {},
  ) {
    this.durability = options.durability ?? 'process';
    this.now = options.now ?? (() => new Date());
    this.head = this.chainLegacyRecords();
    this.writer = (options.writer !== 'inline' && store.openAuditWriter?.()) || inlineAuditWriter(store);
  }

  /** The last record's seq and hash (seq 0 and the genesis hash when the trail is empty). */
  get last(): { seq: number; hash: string } {
    return this.head ?? { seq: 0, hash: GENESIS_HASH };
  }

  /**
   * Appends and returns the stored record; committed when this returns. Throws when the event is
   * malformed or the record could not be stored: a caller that must not act unaudited uses this.
   */
  append(event: AuditEvent): ChainedAuditRecord {
    if (this.closed) throw new Error('the audit log is closed');
    this.flushPending();
    const time = this.now().toISOString();
    let sealed = chainRecord(this.head, event, time);
    try {
      this.writer.writeSync(this.writeOf([sealed.record]));
    } catch (err) {
      this.restartChain();
      if (!isSeqTaken(err)) throw err;
      // Another writer appended to this database: continue its chain (one writer is the supported setup).
      this.logger.warn({ seq: sealed.record.seq }, 'audit: another writer appended to the audit trail; continuing after its records');
      sealed = chainRecord(this.head, event, time);
      try {
        this.writer.writeSync(this.writeOf([sealed.record]));
      } catch (retryErr) {
        this.restartChain();
        throw retryErr;
      }
    }
    const { record } = sealed;
    this.head = { seq: record.seq, hash: record.hash };
    // The table is the record; the log line is for debugging (denials would flood an info log).
    this.logger.debug({ audit: record }, 'audit');
    if (this.signer && record.seq - this.lastCheckpointSeq >= this.everyRecords) this.checkpointQuietly();
    return record;
  }

  private writeOf(records: readonly ChainedAuditRecord[], checkpoint?: AuditCheckpointRecord): AuditWrite {
    return { records, fsync: this.durability === 'power', ...(checkpoint ? { checkpoint } : {}) };
  }

  /**
   * After a failed write: continue the chain from what is stored; the writer accepts writes again.
   * Records chained on top of the lost ones and not yet written are dropped (their waiters fail).
   */
  private restartChain(): void {
    this.generation++;
    const dropped = this.batch;
    this.pending = [];
    this.batch = undefined;
    dropped?.reject(new Error('an earlier audit write failed; this record was not stored'));
    this.head = this.readHead();
    this.writer.reset();
  }

  /**
   * Group commit, for the request path: the record is chained now (call order is chain order) and
   * committed with every other record of this event-loop turn in one transaction; the promise
   * resolves once it is committed, so a caller that answers afterwards cannot outlive its record.
   * One SQLite commit costs ~40 µs, a row in a shared one a few, both off the event loop with the
   * writer thread; rejects if the commit fails.
   */
  commit(event: AuditEvent): Promise<void> {
    if (this.closed) return Promise.reject(new Error('the audit log is closed'));
    const { record } = chainRecord(this.head, event, this.now().toISOString());
    this.head = { seq: record.seq, hash: record.hash };
    this.pending.push(record);
    if (!this.batch) {
      let resolve!: () => void;
      let reject!: (err: Error) => void;
      const promise = new Promise<void>((res, rej) => {
        resolve = res;
        reject = rej;
      });
      this.batch = { promise, resolve, reject };
      setImmediate(() => this.flushPending());
    }
    return this.batch.promise;
  }

  /** Writes the records chained by commit() so far, in one transaction. */
  private flushPending(): void {
    const records = this.pending;
    const batch = this.batch;
    if (records.length === 0) return;
    this.pending = [];
    this.batch = undefined;
    const generation = this.generation;
    this.writer.write(this.writeOf(records)).then(
      () => {
        batch?.resolve();
        const last = records.at(-1)!;
        if (this.signer && last.seq - this.lastCheckpointSeq >= this.everyRecords) this.checkpointLater();
      },
      (err: Error) => {
        // Nothing of the batch is stored, nor of any later write: continue the chain from what is.
        if (generation === this.generation) {
          this.logger.error({ err, records: records.length }, 'audit records could not be stored');
          if (!this.closed) this.restartChain();
        }
        batch?.reject(err);
      },
    );
  }

  /** Appends; never throws into the caller (a failure is logged as an error with the record). */
  record(event: AuditEvent): void {
    try {
      this.append(event);
    } catch (err) {
      this.logger.error({ err, audit: event }, 'audit record could not be stored');
    }
  }

  /**
   * Starts signed checkpoints (once the keyring is open): one now if records were written since the
   * last, then every `everyRecords` records or `everyMs` while there are new records, and on close.
   */
  async enableCheckpoints(keyring: CheckpointKeyring, options: CheckpointOptions = {}): Promise<void> {
    this.everyRecords = options.everyRecords ?? DEFAULT_CHECKPOINT_RECORDS;
    const everyMs = options.everyMs ?? DEFAULT_CHECKPOINT_MS;
    if (!(this.everyRecords >= 1) || !(everyMs >= 1)) throw new Error('audit checkpoints: everyRecords and everyMs must be at least 1');
    this.keyring = keyring;
    this.signer = await loadCheckpointSigner(this.store, keyring, (why) => this.logger.info({ why }, 'audit: created a checkpoint signing key'));
    this.lastCheckpointSeq = (await this.store.listAuditCheckpoints()).at(-1)?.seq ?? 0;
    this.checkpointQuietly();
    clearInterval(this.timer);
    this.timer = setInterval(() => this.checkpointLater(), everyMs);
    this.timer.unref();
  }

  /** Signs and stores a checkpoint of the current head; undefined when nothing was appended since the last one. */
  checkpoint(): AuditCheckpointRecord | undefined {
    this.flushPending();
    const checkpoint = this.signHead();
    if (checkpoint) this.writer.writeSync(this.writeOf([], checkpoint));
    return checkpoint;
  }

  private signHead(): AuditCheckpointRecord | undefined {
    if (!this.signer) throw new Error('audit checkpoints are not enabled (enableCheckpoints)');
    const head = this.head;
    if (!head || head.seq <= this.lastCheckpointSeq) return undefined;
    const checkpoint = signCheckpoint(this.signer, { seq: head.seq, hash: head.hash, time: this.now().toISOString() });
    this.lastCheckpointSeq = head.seq;
    // At info level: a copy outside the database, to compare with if the database itself is rolled back.
    this.logger.info({ auditCheckpoint: checkpoint }, 'audit checkpoint');
    return checkpoint;
  }

  private checkpointQuietly(): void {
    try {
      this.checkpoint();
    } catch (err) {
      this.logger.error({ err }, 'audit checkpoint could not be written');
    }
  }

  /** A checkpoint written after the records before it, without waiting (the request path, the timer). */
  private checkpointLater(): void {
    if (this.closed) return;
    try {
      this.flushPending();
      const checkpoint = this.signHead();
      if (!checkpoint) return;
      this.writer.write(this.writeOf([], checkpoint)).catch((err: unknown) => {
        this.logger.error({ err }, 'audit checkpoint could not be written');
      });
    } catch (err) {
      this.logger.error({ err }, 'audit checkpoint could not be written');
    }
  }

  /** Commits what commit() has chained so far; resolves once every write made so far is settled. */
  flush(): Promise<void> {
    this.flushPending();
    return this.writer.drain();
  }

  async list(filter: AuditFilter = {}): Promise<ChainedAuditRecord[]> {
    await this.flush();
    return this.store.listAudit(filter);
  }

  /** JSON Lines of the matching records, one string per batch (see exportAudit). */
  async *export(filter: ExportFilter = {}): AsyncGenerator<string> {
    await this.flush();
    yield* exportAudit(this.store, filter);
  }

  /** Verifies the whole trail; checkpoint keys are authenticated with the keyring given to enableCheckpoints. */
  async verify(): Promise<VerifyResult> {
    await this.flush();
    return verifyAudit(this.store, this.keyring ? { keyring: this.keyring } : {});
  }

  /** Stops the checkpoint timer, writes a last checkpoint and stops the writer; later appends throw. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.flushPending();
    clearInterval(this.timer);
    this.timer = undefined;
    if (this.signer) this.checkpointQuietly();
    this.closed = true;
    await this.writer.close();
  }

  private readHead(): { seq: number; hash: string } | undefined {
    const head = this.store.auditHead();
    return head && { seq: head.seq, hash: head.hash ?? '' };
  }

  /** Records written before hash chaining (schema version 2) get their chain fields, in order, once. */
  private chainLegacyRecords(): { seq: number; hash: string } | undefined {
    const head = this.store.auditHead();
    if (!head || head.hash !== null) return this.readHead();
    let prev = { seq: 0, hash: GENESIS_HASH };
    let count = 0;
    for (let after = -Number.MAX_SAFE_INTEGER; ; ) {
      const rows = this.store.auditRows(after, 1000);
      if (rows.length === 0) break;
      for (const row of rows) {
        if (row.hash === null) {
          const hash = hashOf({ ...row, prevHash: prev.hash });
          this.store.setAuditChain(row.seq, prev.hash, hash);
          prev = { seq: row.seq, hash };
          count++;
        } else prev = { seq: row.seq, hash: String(row.hash) };
      }
      after = rows.at(-1)!.seq;
    }
    this.logger.info({ records: count }, 'audit: chained the records written before hash chaining');
    return prev.seq === 0 ? undefined : prev;
  }
}
