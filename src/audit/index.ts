import type { Logger } from 'pino';
import type { AuditRecord, IdentityStore } from '../store/types.js';

export type AuditEvent = Omit<AuditRecord, 'seq' | 'time'>;

/**
 * The audit trail: every authentication refusal, enrollment, certificate issue or revocation and
 * token issue is appended to the store (and logged at debug level). Records are append-only here; hash chaining,
 * signed checkpoints, verification and export come with the tenancy work, on this same table.
 */
export class AuditLog {
  private pending: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly store: Pick<IdentityStore, 'appendAudit' | 'listAudit'>,
    private readonly logger: Logger,
  ) {}

  /** Appends in call order; never throws into the caller (a failed append is logged as an error). */
  record(event: AuditEvent): void {
    const record = { ...event, time: new Date().toISOString() };
    this.pending = this.pending
      .then(() => this.store.appendAudit(record))
      .then(
        // The table is the record; the log line is for debugging (denials would flood an info log).
        (stored) => this.logger.debug({ audit: stored }, 'audit'),
        (err: unknown) => this.logger.error({ err, audit: record }, 'audit record could not be stored'),
      );
  }

  /** Resolves when every record so far is stored. */
  flush(): Promise<void> {
    return this.pending.then(() => undefined);
  }

  async list(filter: { tenant?: string; action?: string; afterSeq?: number; limit?: number } = {}): Promise<AuditRecord[]> {
    await this.flush();
    return this.store.listAudit(filter);
  }
}
