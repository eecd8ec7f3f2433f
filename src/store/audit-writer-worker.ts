// Entry of the audit writer thread (see audit-writer.ts): its own connection to the store's file.
import Database from 'better-sqlite3';
import { workerData, type MessagePort } from 'node:worker_threads';
import { auditInsertArgs, checkpointInsertArgs, CONNECTION_PRAGMAS, INSERT_AUDIT_SQL, INSERT_CHECKPOINT_SQL } from './audit-sql.js';
import type { AuditWrite, WriterReply, WriterRequest } from './audit-writer.js';

const { file, port, shared } = workerData as { file: string; port: MessagePort; shared: SharedArrayBuffer };
const answered = new Int32Array(shared);

type Failure = { message: string; code?: string };

function failureOf(err: unknown): Failure {
  const { message, code } = err as { message: string; code?: unknown };
  return typeof code === 'string' ? { message, code } : { message };
}

function openWriter(): (batch: AuditWrite) => void {
  const db = new Database(file);
  for (const pragma of CONNECTION_PRAGMAS) db.pragma(pragma);
  const insertRecord = db.prepare(INSERT_AUDIT_SQL);
  const insertCheckpoint = db.prepare(INSERT_CHECKPOINT_SQL);
  const fullSync = db.prepare('PRAGMA synchronous = FULL');
  const normalSync = db.prepare('PRAGMA synchronous = NORMAL');
  const store = db.transaction((batch: AuditWrite) => {
    for (const record of batch.records) insertRecord.run(...auditInsertArgs(record));
    if (batch.checkpoint) insertCheckpoint.run(...checkpointInsertArgs(batch.checkpoint));
  });
  closeDb = () => db.close();
  return (batch) => {
    if (!batch.fsync) return void store(batch);
    // synchronous applies to this connection's next commit: FULL fsyncs the WAL before it returns.
    fullSync.run();
    try {
      store(batch);
    } finally {
      normalSync.run();
    }
  };
}

let closeDb = () => undefined as void;
/** Could not open the database: every write fails (answered, so a blocked writeSync() learns why). */
let fatal: Failure | undefined;
let write: (batch: AuditWrite) => void = () => undefined;
try {
  write = openWriter();
} catch (err) {
  fatal = failureOf(err);
  fatal.message = `the audit writer could not open ${file}: ${fatal.message}`;
}

/** Set by a failed write: later writes were chained on top of it and are refused until a reset. */
let failure: Failure | undefined = fatal;

port.on('message', (request: WriterRequest) => {
  if (request.t === 'reset') {
    failure = fatal;
    return;
  }
  if (request.t === 'close') {
    closeDb();
    port.close();
    return;
  }
  if (failure === undefined) {
    try {
      write(request.batch);
    } catch (err) {
      failure = failureOf(err);
    }
  }
  const reply: WriterReply = failure === undefined ? { n: request.n, ok: true } : { n: request.n, ok: false, ...failure };
  // Answer before counting: a writeSync() woken by the count finds the answer on its port.
  port.postMessage(reply);
  Atomics.store(answered, 0, request.n);
  Atomics.notify(answered, 0);
});
