import { hash } from 'node:crypto';
import type { AuditRecord, ChainedAuditRecord, StoredAuditRow } from '../store/types.js';

/** What a caller records: the trail adds seq, time and the chain fields. */
export type AuditEvent = Omit<AuditRecord, 'seq' | 'time'>;

export type AuditDecision = AuditRecord['decision'];

/** prevHash of the first record (seq 1). */
export const GENESIS_HASH = '0'.repeat(64);

export const MAX_DETAIL_BYTES = 4096;
export const MAX_EXCERPT_CHARS = 65_536;

const DECISIONS: ReadonlySet<string> = new Set<AuditDecision>(['allow', 'deny', 'info']);
const HASH = /^[0-9a-f]{64}$/;

/**
 * RFC 8785 (JSON Canonicalization Scheme) for JSON values: object keys sorted by UTF-16 code units,
 * no whitespace, strings and numbers as ECMAScript's JSON.stringify writes them (which is what
 * RFC 8785 specifies). Any JCS library (Python, Go, Java, ...) produces the same text.
 */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value === 'string' || typeof value === 'boolean') return JSON.stringify(value);
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) throw new Error(`${value} is not a JSON number`);
    return JSON.stringify(value);
  }
  if (Array.isArray(value)) return '[' + value.map(canonicalJson).join(',') + ']';
  if (typeof value === 'object') {
    const entries = Object.keys(value)
      .sort()
      .map((key) => JSON.stringify(key) + ':' + canonicalJson((value as Record<string, unknown>)[key]));
    return '{' + entries.join(',') + '}';
  }
  throw new Error(`a ${typeof value} is not a JSON value`);
}

/** The fields the hash covers, with `detail` as its canonical JSON text. */
interface HashInput {
  seq: number;
  time: string;
  tenant?: string | undefined;
  actor?: string | undefined;
  action: string;
  target?: string | undefined;
  decision: string;
  reason?: string | undefined;
  requestId?: string | undefined;
  detailJson?: string | undefined;
  excerpt?: string | undefined;
  prevHash: string;
}

/**
 * The bytes a record's hash is computed over: the RFC 8785 canonical JSON of the record without its
 * `hash` field (absent optional fields are left out). Written out by hand in the canonical key order
 * (action, actor, decision, detail, excerpt, prevHash, reason, requestId, seq, target, tenant, time),
 * which is what a JCS library produces from the exported JSON line minus `hash`.
 */
export function canonicalRecord(r: HashInput): string {
  let text = '{"action":' + JSON.stringify(r.action);
  if (r.actor !== undefined) text += ',"actor":' + JSON.stringify(r.actor);
  text += ',"decision":' + JSON.stringify(r.decision);
  if (r.detailJson !== undefined) text += ',"detail":' + r.detailJson;
  if (r.excerpt !== undefined) text += ',"excerpt":' + JSON.stringify(r.excerpt);
  text += ',"prevHash":' + JSON.stringify(r.prevHash);
  if (r.reason !== undefined) text += ',"reason":' + JSON.stringify(r.reason);
  if (r.requestId !== undefined) text += ',"requestId":' + JSON.stringify(r.requestId);
  text += ',"seq":' + String(r.seq);
  if (r.target !== undefined) text += ',"target":' + JSON.stringify(r.target);
  if (r.tenant !== undefined) text += ',"tenant":' + JSON.stringify(r.tenant);
  text += ',"time":' + JSON.stringify(r.time) + '}';
  return text;
}

export function sha256Hex(text: string): string {
  return hash('sha256', text, 'hex');
}

const LONE_SURROGATE = /\p{Cs}/u;

/**
 * Strings as the database will give them back: a lone UTF-16 surrogate cannot be stored as UTF-8
 * (SQLite would keep U+FFFD instead), so it is replaced here, before hashing.
 */
function storable(value: string): string {
  return LONE_SURROGATE.test(value) ? Buffer.from(value, 'utf8').toString('utf8') : value;
}

function optionalText(event: AuditEvent, field: 'tenant' | 'actor' | 'target' | 'reason' | 'requestId' | 'excerpt'): string | undefined {
  const value = event[field];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'string') throw new Error(`audit event ${field}: must be a string, got ${typeof value}`);
  return storable(value);
}

/** The detail object as canonical JSON text (what is stored and hashed), after a JSON round trip. */
function detailText(detail: unknown): string | undefined {
  if (detail === undefined || detail === null) return undefined;
  // The round trip drops undefined members and applies toJSON, so what is hashed is what reads back.
  const plain: unknown = JSON.parse(JSON.stringify(detail, (_key, value: unknown) => (typeof value === 'string' ? storable(value) : value)));
  if (typeof plain !== 'object' || plain === null || Array.isArray(plain)) throw new Error('audit event detail: must be a JSON object');
  const text = canonicalJson(plain);
  if (Buffer.byteLength(text) > MAX_DETAIL_BYTES) {
    throw new Error(`audit event detail: ${Buffer.byteLength(text)} bytes of JSON, over the ${MAX_DETAIL_BYTES}-byte limit (keep it to non-sensitive facts)`);
  }
  return text;
}

/** A record ready to store: the chained record and its detail as stored text. */
export interface SealedRecord {
  record: ChainedAuditRecord;
  detailJson?: string;
}

/**
 * Validates an event and links it after `prev` (the chain head): the next seq, `prevHash` and the
 * record's own hash. Throws on an event the trail cannot store as given.
 */
export function chainRecord(prev: { seq: number; hash: string } | undefined, event: AuditEvent, time: string): SealedRecord {
  if (typeof event.action !== 'string' || event.action === '') throw new Error('audit event action: must be a non-empty string');
  if (!DECISIONS.has(event.decision)) throw new Error(`audit event decision: must be allow, deny or info, got ${JSON.stringify(event.decision)}`);
  const excerpt = optionalText(event, 'excerpt');
  if (excerpt !== undefined && excerpt.length > MAX_EXCERPT_CHARS) {
    throw new Error(`audit event excerpt: ${excerpt.length} characters, over the ${MAX_EXCERPT_CHARS} limit`);
  }
  const detailJson = detailText(event.detail);
  const input: HashInput = {
    seq: (prev?.seq ?? 0) + 1,
    time,
    tenant: optionalText(event, 'tenant'),
    actor: optionalText(event, 'actor'),
    action: storable(event.action),
    target: optionalText(event, 'target'),
    decision: event.decision,
    reason: optionalText(event, 'reason'),
    requestId: optionalText(event, 'requestId'),
    detailJson,
    excerpt,
    prevHash: prev?.hash ?? GENESIS_HASH,
  };
  const record: ChainedAuditRecord = {
    seq: input.seq,
    time,
    action: input.action,
    decision: event.decision,
    prevHash: input.prevHash,
    hash: sha256Hex(canonicalRecord(input)),
  };
  if (input.tenant !== undefined) record.tenant = input.tenant;
  if (input.actor !== undefined) record.actor = input.actor;
  if (input.target !== undefined) record.target = input.target;
  if (input.reason !== undefined) record.reason = input.reason;
  if (input.requestId !== undefined) record.requestId = input.requestId;
  if (detailJson !== undefined) record.detail = JSON.parse(detailJson) as Record<string, unknown>;
  if (excerpt !== undefined) record.excerpt = excerpt;
  return detailJson === undefined ? { record } : { record, detailJson };
}

/** Why a stored row does not hash to its `hash` column, or undefined when it does. */
export function rowProblem(row: StoredAuditRow): string | undefined {
  const text = (name: string, value: unknown, optional: boolean): string | undefined => {
    if (value === null && optional) return undefined;
    if (typeof value !== 'string') throw new Error(`${name} is ${value === null ? 'missing' : `not text (${typeof value})`}`);
    return value;
  };
  let input: HashInput;
  try {
    if (!Number.isSafeInteger(row.seq)) throw new Error('seq is not an integer');
    if (row.hash === null) throw new Error('it has no hash (written before hash chaining and never chained)');
    const hash = text('hash', row.hash, false)!;
    if (!HASH.test(hash)) throw new Error('hash is not 64 lowercase hex digits');
    const prevHash = text('prevHash', row.prevHash, false)!;
    const detailJson = text('detail', row.detail, true);
    if (detailJson !== undefined) {
      let parsed: unknown;
      try {
        parsed = JSON.parse(detailJson);
      } catch {
        throw new Error('detail is not JSON');
      }
      // Only the canonical text of an object is a valid detail: anything else could splice other fields into the hashed text.
      if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed) || canonicalJson(parsed) !== detailJson) {
        throw new Error('detail is not a canonical JSON object');
      }
    }
    input = {
      seq: row.seq,
      time: text('time', row.time, false)!,
      tenant: text('tenant', row.tenant, true),
      actor: text('actor', row.actor, true),
      action: text('action', row.action, false)!,
      target: text('target', row.target, true),
      decision: text('decision', row.decision, false)!,
      reason: text('reason', row.reason, true),
      requestId: text('requestId', row.requestId, true),
      detailJson,
      excerpt: text('excerpt', row.excerpt, true),
      prevHash,
    };
    if (!DECISIONS.has(input.decision)) throw new Error(`decision ${JSON.stringify(input.decision)} is not allow, deny or info`);
  } catch (err) {
    return (err as Error).message;
  }
  return sha256Hex(canonicalRecord(input)) === row.hash ? undefined : 'its content does not match its hash';
}

/** The hash of a well-formed stored row (fields as stored), for chaining records written before hash chaining. */
export function hashOf(row: Omit<StoredAuditRow, 'hash'>): string {
  const opt = (value: unknown) => (value === null || value === undefined ? undefined : String(value));
  return sha256Hex(
    canonicalRecord({
      seq: row.seq,
      time: String(row.time),
      tenant: opt(row.tenant),
      actor: opt(row.actor),
      action: String(row.action),
      target: opt(row.target),
      decision: String(row.decision),
      reason: opt(row.reason),
      requestId: opt(row.requestId),
      detailJson: opt(row.detail),
      excerpt: opt(row.excerpt),
      prevHash: String(row.prevHash),
    }),
  );
}
