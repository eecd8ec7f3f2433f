import { canonicalJson } from '../audit/record.js';
import type { AuditCheckpointRecord, ChainedAuditRecord } from './types.js';

/** The audit trail's inserts, shared by the store's own connection and the audit writer thread. */
export const INSERT_AUDIT_SQL = `INSERT INTO audit_events (seq, time, tenant, actor, action, target, decision, reason, request_id, detail, excerpt, prev_hash, hash)
  VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`;

export const INSERT_CHECKPOINT_SQL =
  'INSERT INTO audit_checkpoints (seq, hash, time, key_id, signature) VALUES (?, ?, ?, ?, ?) ON CONFLICT (seq) DO NOTHING';

export function auditInsertArgs(record: ChainedAuditRecord): unknown[] {
  return [
    record.seq,
    record.time,
    record.tenant ?? null,
    record.actor ?? null,
    record.action,
    record.target ?? null,
    record.decision,
    record.reason ?? null,
    record.requestId ?? null,
    record.detail === undefined ? null : canonicalJson(record.detail),
    record.excerpt ?? null,
    record.prevHash,
    record.hash,
  ];
}

export function checkpointInsertArgs(checkpoint: AuditCheckpointRecord): unknown[] {
  return [checkpoint.seq, checkpoint.hash, checkpoint.time, checkpoint.keyId, checkpoint.signature];
}

/** The pragmas of every connection to the store's file (see SqliteStore). */
export const CONNECTION_PRAGMAS = ['journal_mode = WAL', 'synchronous = NORMAL', 'foreign_keys = ON', 'busy_timeout = 5000'] as const;
