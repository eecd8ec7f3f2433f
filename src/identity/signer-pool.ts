import os from 'node:os';
import { Worker } from 'node:worker_threads';
import type { SignAlgorithm, SignedLeaf } from './leaf.js';
import { PkiError, type PkiErrorCode } from './types.js';
import { workerTarget } from '../worker-target.js';

/**
 * A small pool of worker threads doing the per-certificate CPU work of issuing from a CSR (parse,
 * key and signature checks, TBSCertificate encoding, signing, PEM). The main thread keeps the
 * store writes, audit and caches. Each CA's PKCS#8 key is sent to a worker once (and imported
 * there as a non-extractable WebCrypto key); workers are unref'd while idle and terminated by close().
 */

export type WorkerRequest =
  | ({ t: 'ca'; pkcs8: Uint8Array } & Omit<PoolCa, 'pkcs8'>)
  | { t: 'drop'; caId: string }
  | { t: 'issue'; id: number; caId: string; csr: string | Uint8Array; agent: string; spiffeId: string; ttlMs: number; now: number; clockSkewMs: number };

export type WorkerReply = ({ id: number; ok: true } & SignedLeaf) | { id: number; ok: false; code?: PkiErrorCode; message: string };

/** What a worker needs to sign for a CA; `pkcs8` is produced on demand and not kept. */
export interface PoolCa {
  caId: string;
  pkcs8: () => Uint8Array;
  importAlgorithm: Record<string, unknown>;
  signingAlgorithm: SignAlgorithm;
  subjectDer: Uint8Array;
  signatureAlgorithmDer: Uint8Array;
  akiDer: Uint8Array;
  notAfterMs: number;
}

/** The pool could not run the job (no worker, or it died): the caller signs in-process instead. */
export class SignerUnavailable extends Error {}

interface Slot {
  worker: Worker;
  ready: boolean;
  inFlight: number;
  cas: Set<string>;
  pending: Map<number, { resolve: (leaf: SignedLeaf) => void; reject: (error: Error) => void }>;
}

export function defaultPoolSize(): number {
  const cpus = typeof os.availableParallelism === 'function' ? os.availableParallelism() : 2;
  return Math.max(1, Math.min(4, cpus || 2));
}

export class SignerPool {
  private readonly slots: Slot[] = [];
  private nextId = 1;
  private closed = false;

  constructor(size = defaultPoolSize()) {
    let target: { entry: string | URL; eval: boolean };
    try {
      target = workerTarget(import.meta.url, 'signer-worker');
    } catch {
      return; // no way to start a worker (sources without tsx): everything is signed in-process
    }
    for (let i = 0; i < size; i++) this.spawn(target);
  }

  private spawn(target: { entry: string | URL; eval: boolean }): void {
    let worker: Worker;
    try {
      worker = new Worker(target.entry, { eval: target.eval });
    } catch {
      return;
    }
    const slot: Slot = { worker, ready: false, inFlight: 0, cas: new Set(), pending: new Map() };
    this.slots.push(slot);
    worker.on('message', (message: WorkerReply | { t: 'ready' }) => {
      if ('t' in message) {
        slot.ready = true;
        return;
      }
      const job = slot.pending.get(message.id);
      if (!job) return;
      slot.pending.delete(message.id);
      if (--slot.inFlight === 0) worker.unref();
      if (message.ok) {
        job.resolve({ certPem: message.certPem, serial: message.serial, notBeforeMs: message.notBeforeMs, notAfterMs: message.notAfterMs });
      } else {
        job.reject(message.code ? new PkiError(message.code, message.message) : new Error(message.message));
      }
    });
    const fail = (error: Error) => this.remove(slot, error);
    worker.on('error', fail);
    worker.on('exit', (code) => fail(new Error(`signing worker exited (code ${code})`)));
    // After the listeners (adding a 'message' listener refs the worker again): idle workers never
    // keep the process alive; a worker is ref'd only while it has jobs in flight.
    worker.unref();
  }

  private remove(slot: Slot, cause: Error): void {
    const index = this.slots.indexOf(slot);
    if (index >= 0) this.slots.splice(index, 1);
    for (const job of slot.pending.values()) job.reject(new SignerUnavailable(cause.message));
    slot.pending.clear();
  }

  /** Whether a worker is up (until then, and after failures, the caller signs in-process). */
  get available(): boolean {
    return !this.closed && this.slots.some((slot) => slot.ready);
  }

  issue(ca: PoolCa, job: { csr: string | Uint8Array; agent: string; spiffeId: string; ttlMs: number; now: number; clockSkewMs: number }): Promise<SignedLeaf> {
    let slot: Slot | undefined;
    for (const candidate of this.slots) {
      if (candidate.ready && (!slot || candidate.inFlight < slot.inFlight)) slot = candidate;
    }
    if (!slot || this.closed) return Promise.reject(new SignerUnavailable('no signing worker is available'));
    if (!slot.cas.has(ca.caId)) {
      const pkcs8 = ca.pkcs8();
      const message: WorkerRequest = {
        t: 'ca',
        caId: ca.caId,
        pkcs8,
        importAlgorithm: ca.importAlgorithm,
        signingAlgorithm: ca.signingAlgorithm,
        subjectDer: ca.subjectDer,
        signatureAlgorithmDer: ca.signatureAlgorithmDer,
        akiDer: ca.akiDer,
        notAfterMs: ca.notAfterMs,
      };
      slot.worker.postMessage(message);
      pkcs8.fill(0);
      slot.cas.add(ca.caId);
    }
    const id = this.nextId++;
    const target = slot;
    return new Promise<SignedLeaf>((resolve, reject) => {
      target.pending.set(id, { resolve, reject });
      if (target.inFlight++ === 0) target.worker.ref();
      const message: WorkerRequest = { t: 'issue', id, caId: ca.caId, ...job };
      target.worker.postMessage(message);
    });
  }

  /** Forgets a CA's key in every worker (retired CA). */
  drop(caId: string): void {
    for (const slot of this.slots) {
      if (slot.cas.delete(caId)) slot.worker.postMessage({ t: 'drop', caId } satisfies WorkerRequest);
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const slots = this.slots.splice(0);
    for (const slot of slots) {
      for (const job of slot.pending.values()) job.reject(new SignerUnavailable('the signing pool is closed'));
      slot.pending.clear();
    }
    await Promise.all(slots.map((slot) => slot.worker.terminate().catch(() => undefined)));
  }
}
