import { setImmediate as nextTurn } from 'node:timers/promises';
import type { AuditFilter, AuditStore } from '../store/types.js';

export type ExportFilter = Omit<AuditFilter, 'limit'> & {
  /** At most this many records in all (default: every match). */
  limit?: number;
};

/**
 * The records matching `filter`, oldest first, as JSON Lines (one record per line, with seq,
 * prevHash and hash): one string per batch of up to `batchSize` records, so a consumer can write
 * each with backpressure and memory stays flat whatever the size of the trail.
 */
export async function* exportAudit(
  store: Pick<AuditStore, 'listAudit'>,
  filter: ExportFilter = {},
  batchSize = 1000,
): AsyncGenerator<string> {
  let remaining = filter.limit ?? Number.POSITIVE_INFINITY;
  let afterSeq = filter.afterSeq ?? 0;
  while (remaining > 0) {
    const records = await store.listAudit({ ...filter, afterSeq, limit: Math.min(batchSize, remaining) });
    if (records.length === 0) return;
    let text = '';
    for (const record of records) text += JSON.stringify(record) + '\n';
    yield text;
    remaining -= records.length;
    afterSeq = records.at(-1)!.seq;
    if (records.length < Math.min(batchSize, remaining + records.length)) return;
    await nextTurn(); // keep the gateway responsive during a long export
  }
}

/** An ISO-8601 time (any offset) as the trail stores times: UTC with milliseconds. Throws naming `what`. */
export function normalizeTime(text: string, what: string): string {
  const ms = Date.parse(text);
  if (!/^\d{4}-\d{2}-\d{2}/.test(text) || Number.isNaN(ms)) {
    throw new Error(`${what}: "${text}" is not an ISO-8601 time (e.g. 2025-01-31 or 2025-01-31T12:00:00Z)`);
  }
  return new Date(ms).toISOString();
}
