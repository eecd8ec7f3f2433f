export { AuditLog, DEFAULT_CHECKPOINT_MS, DEFAULT_CHECKPOINT_RECORDS } from './log.js';
export type { AuditDurability, AuditLogOptions, CheckpointOptions } from './log.js';
export { canonicalJson, canonicalRecord, chainRecord, GENESIS_HASH, MAX_DETAIL_BYTES, MAX_EXCERPT_CHARS } from './record.js';
export type { AuditDecision, AuditEvent } from './record.js';
export { CHECKPOINT_KEY_PURPOSE, checkpointPayload, type CheckpointKeyring } from './checkpoints.js';
export { verifyAudit, type AuditProblem, type VerifyOptions, type VerifyResult } from './verify.js';
export { exportAudit, normalizeTime, type ExportFilter } from './export.js';
export { adminWriteEvent, type AdminWrite } from './admin.js';
