import { MessageChannel, receiveMessageOnPort, Worker, type MessagePort } from 'node:worker_threads';
import { workerTarget } from '../worker-target.js';
import type { AuditCheckpointRecord, AuditStore, ChainedAuditRecord } from './types.js';

/** What one write stores, in one transaction: records (in chain order) and, after them, a checkpoint. */
export interface AuditWrite {
  records: readonly ChainedAuditRecord[];
  checkpoint?: AuditCheckpointRecord;
  /** Also fsync the WAL before the write counts as done (audit.durability: power). */
  fsync: boolean;
}

/**
 * Where the audit log's chained records go. Writes are applied in call order (sync and async
 * alike). After a failed write every later one fails too until reset(): records chained on top of a
 * lost batch must not be stored.
 */
export interface AuditWriter {
  /** Resolves once committed. */
  write(batch: AuditWrite): Promise<void>;
  /** Returns once committed (blocks the caller's thread until then). */
  writeSync(batch: AuditWrite): void;
  /** Accepts writes again after a failure; everything written before this call has been refused. */
  reset(): void;
  /** Resolves when every write made so far is settled. */
  drain(): Promise<void>;
  close(): Promise<void>;
}

type StoreWrites = Pick<AuditStore, 'insertAuditBatch' | 'insertAuditCheckpoint'>;

/** Writes on the caller's thread through the store's own connection. */
export function inlineAuditWriter(store: StoreWrites): AuditWriter {
  const writeSync = (batch: AuditWrite) => {
    if (batch.records.length > 0) store.insertAuditBatch(batch.records, { fsync: batch.fsync });
    if (batch.checkpoint) store.insertAuditCheckpoint(batch.checkpoint);
  };
  return {
    write: (batch) => {
      try {
        writeSync(batch);
        return Promise.resolve();
      } catch (err) {
        return Promise.reject(err as Error);
      }
    },
    writeSync,
    reset: () => undefined,
    drain: () => Promise.resolve(),
    close: () => Promise.resolve(),
  };
}

export type WriterRequest = { t: 'write'; n: number; batch: AuditWrite } | { t: 'reset' } | { t: 'close' };
export type WriterReply = { n: number; ok: true } | { n: number; ok: false; message: string; code?: string };

/** Slot 0 of the shared counters: the number of the last write the thread has answered. */
const ANSWERED = 0;
/** How long a synchronous write waits for the thread before it gives up (the thread is stuck or gone). */
const SYNC_TIMEOUT_MS = 30_000;

/**
 * Writes on a worker thread with its own connection to the SQLite file, so the commits and the WAL
 * checkpoints' fsyncs happen off the event loop; the loop only chains records and posts them. The
 * thread answers each write on a MessagePort and counts it in shared memory, which lets writeSync()
 * block on Atomics.wait and read its answer with receiveMessageOnPort. If the thread cannot start or
 * dies, writes fail (the audit log then refuses to act unaudited) rather than fall back silently.
 */
export class ThreadAuditWriter implements AuditWriter {
  private readonly worker: Worker;
  private readonly port: MessagePort;
  private readonly answered: Int32Array;
  private readonly waiting = new Map<number, { resolve: () => void; reject: (err: Error) => void }>();
  private next = 1;
  private lastWrite: Promise<void> = Promise.resolve();
  private dead: Error | undefined;
  private exited: Promise<void>;

  constructor(file: string) {
    const target = workerTarget(import.meta.url, 'audit-writer-worker');
    const { port1, port2 } = new MessageChannel();
    const shared = new SharedArrayBuffer(4);
    this.answered = new Int32Array(shared);
    this.port = port1;
    this.worker = new Worker(target.entry, {
      eval: target.eval,
      workerData: { file, port: port2, shared },
      transferList: [port2],
      name: 'dmsc-audit-writer',
    });
    this.port.on('message', (reply: WriterReply) => this.settle(reply));
    this.exited = new Promise((resolve) => this.worker.once('exit', () => resolve()));
    this.worker.on('error', (err) => this.fail(err));
    this.worker.on('exit', (code) => this.fail(new Error(`the audit writer thread exited (code ${code})`)));
    this.worker.unref();
    this.port.unref();
  }

  write(batch: AuditWrite): Promise<void> {
    if (this.dead) return Promise.reject(this.dead);
    const n = this.post(batch);
    const promise = new Promise<void>((resolve, reject) => this.waiting.set(n, { resolve, reject }));
    this.port.ref();
    this.lastWrite = promise.catch(() => undefined);
    return promise;
  }

  writeSync(batch: AuditWrite): void {
    if (this.dead) throw this.dead;
    const n = this.post(batch);
    const deadline = Date.now() + SYNC_TIMEOUT_MS;
    while (Atomics.load(this.answered, ANSWERED) < n) {
      const left = deadline - Date.now();
      if (left <= 0 || this.dead) throw this.dead ?? new Error('the audit writer thread did not answer');
      Atomics.wait(this.answered, ANSWERED, Atomics.load(this.answered, ANSWERED), Math.min(left, 100));
    }
    let mine: WriterReply | undefined;
    for (let message = receiveMessageOnPort(this.port); message; message = receiveMessageOnPort(this.port)) {
      const reply = message.message as WriterReply;
      if (reply.n === n) mine = reply;
      else this.settle(reply);
    }
    if (!mine) throw new Error('the audit writer thread answered without a result');
    if (!mine.ok) throw writeError(mine);
  }

  reset(): void {
    if (!this.dead) this.port.postMessage({ t: 'reset' } satisfies WriterRequest);
  }

  drain(): Promise<void> {
    return this.lastWrite;
  }

  async close(): Promise<void> {
    await this.lastWrite;
    if (!this.dead) this.port.postMessage({ t: 'close' } satisfies WriterRequest);
    this.worker.ref();
    await this.exited;
    this.port.close();
  }

  private post(batch: AuditWrite): number {
    const n = this.next++;
    this.port.postMessage({ t: 'write', n, batch } satisfies WriterRequest);
    return n;
  }

  private settle(reply: WriterReply): void {
    const waiter = this.waiting.get(reply.n);
    if (!waiter) return;
    this.waiting.delete(reply.n);
    if (this.waiting.size === 0) this.port.unref();
    if (reply.ok) waiter.resolve();
    else waiter.reject(writeError(reply));
  }

  private fail(err: Error): void {
    this.dead ??= err;
    for (const waiter of this.waiting.values()) waiter.reject(this.dead);
    this.waiting.clear();
    this.port.unref();
  }
}

function writeError(reply: { message: string; code?: string }): Error {
  return Object.assign(new Error(reply.message), reply.code === undefined ? {} : { code: reply.code });
}
