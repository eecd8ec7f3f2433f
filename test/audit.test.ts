// The audit trail: hash chain, signed checkpoints, verification that names the first bad record
// (property-tested against random tampering done directly in SQLite), JSON Lines export, the CLI.
import assert from 'node:assert/strict';
import { createHash, createPublicKey, generateKeyPairSync, randomBytes, sign, verify } from 'node:crypto';
import { copyFile, mkdtemp, readFile, rm, unlink } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import fc from 'fast-check';
import { pino } from 'pino';
import { AuditLog, verifyAudit, type AuditEvent } from '../src/audit/index.js';
import { dmsc } from './support/cli.js';
import { Keyring } from '../src/identity/keyring.js';
import { SqliteStore, STORE_FILE } from '../src/store/index.js';
import { startTestGateway, TEST_ADMIN_TOKEN, type TestGateway } from './support/gateway.js';

const logger = pino({ level: 'silent' });
const GENESIS = '0'.repeat(64);

// ---- an independent implementation of the documented encoding (docs/audit.md) -------------------

/** RFC 8785 for the values the trail holds. */
function jcs(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(jcs).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const object = value as Record<string, unknown>;
    return `{${Object.keys(object)
      .sort()
      .map((key) => `${JSON.stringify(key)}:${jcs(object[key])}`)
      .join(',')}}`;
  }
  return JSON.stringify(value);
}

/** "Take the record as exported, drop hash, canonicalise, SHA-256." */
function recordHash(record: Record<string, unknown>): string {
  const { hash: _hash, ...rest } = record;
  return createHash('sha256').update(jcs(rest), 'utf8').digest('hex');
}

type Row = Record<string, unknown> & { seq: number };

/** A table row as the exported record (what recordHash takes). */
function rowRecord(row: Row): Record<string, unknown> {
  const fields: Array<[string, string]> = [
    ['seq', 'seq'], ['time', 'time'], ['tenant', 'tenant'], ['actor', 'actor'], ['action', 'action'], ['target', 'target'],
    ['decision', 'decision'], ['reason', 'reason'], ['requestId', 'request_id'], ['excerpt', 'excerpt'], ['prevHash', 'prev_hash'], ['hash', 'hash'],
  ];
  const record: Record<string, unknown> = {};
  for (const [name, column] of fields) if (row[column] !== null) record[name] = row[column];
  if (row.detail !== null) record.detail = JSON.parse(String(row.detail));
  return record;
}

const rowHash = (row: Row) => recordHash(rowRecord(row));

// ---- helpers ----------------------------------------------------------------------------------

let tmp: string;
let template: string;
before(async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), 'dmsc-audit-'));
  // A migrated empty database, copied for each log (cheaper than migrating hundreds of times).
  template = path.join(tmp, 'template.db');
  const store = new SqliteStore(template);
  await store.open();
  await store.close();
});
after(async () => {
  await rm(tmp, { recursive: true, force: true });
});

let files = 0;
async function freshStore(): Promise<{ store: SqliteStore; file: string }> {
  const file = path.join(tmp, `audit-${files++}.db`);
  await copyFile(template, file);
  const store = new SqliteStore(file);
  await store.open();
  return { store, file };
}

function rows(file: string): Row[] {
  const db = new Database(file);
  try {
    return db.prepare('SELECT * FROM audit_events ORDER BY seq').all() as Row[];
  } finally {
    db.close();
  }
}

/** Runs SQL against the database directly, as someone with file access would. */
function tamper(file: string, work: (db: Database.Database) => void): void {
  const db = new Database(file);
  try {
    db.transaction(() => work(db))();
  } finally {
    db.close();
  }
}

const sampleEvent = (i: number): AuditEvent => ({
  tenant: i % 2 ? 'acme' : 'globex',
  actor: `spiffe://dmsc.test/tenant/acme/agent/a${i}`,
  action: i % 3 ? 'authn' : 'policy',
  target: `plain GET /agents/acme/billing/${i}`,
  decision: i % 3 ? 'deny' : 'allow',
  reason: `reason ${i}`,
  requestId: `req-${i}`,
});

// ---- the chain --------------------------------------------------------------------------------

describe('the hash chain', () => {
  it('links every record to the previous one with seq 1, 2, 3 and hashes the documented encoding', async () => {
    const { store, file } = await freshStore();
    const log = new AuditLog(store, logger);
    const first = log.append({ action: 'cert.issue', decision: 'info', actor: 'system', target: 'ab12' });
    const second = log.append({
      tenant: 'acme',
      action: 'mask',
      decision: 'info',
      requestId: 'req-1',
      detail: { kinds: ['email', 'iban'], count: 3, scope: { b: 1, a: 'x' }, skipped: undefined },
      excerpt: 'v1.sealed-by-tenant-key',
    });
    log.record({ action: 'authn', decision: 'deny', reason: 'bad_token: expired' });

    assert.equal(first.seq, 1);
    assert.equal(first.prevHash, GENESIS);
    assert.equal(second.seq, 2);
    assert.equal(second.prevHash, first.hash);
    assert.deepEqual(second.detail, { count: 3, kinds: ['email', 'iban'], scope: { a: 'x', b: 1 } });

    const stored = rows(file);
    assert.deepEqual(stored.map((row) => row.seq), [1, 2, 3]);
    assert.equal(stored[1]!.detail, '{"count":3,"kinds":["email","iban"],"scope":{"a":"x","b":1}}', 'detail is stored canonical');
    assert.equal(stored[1]!.excerpt, 'v1.sealed-by-tenant-key');
    for (const [i, row] of stored.entries()) {
      assert.equal(row.hash, rowHash(row), `record ${row.seq} hashes as documented`);
      assert.equal(row.prev_hash, i === 0 ? GENESIS : stored[i - 1]!.hash);
    }
    const listed = await log.list();
    assert.deepEqual(listed[1], second);
    assert.equal(listed[2]!.prevHash, second.hash);
    assert.deepEqual(log.last, { seq: 3, hash: String(stored[2]!.hash) });

    // A second writer (the store's own append, as the token service uses without an AuditLog)
    // and a reopened log both continue the same chain.
    const viaStore = await store.appendAudit({ time: new Date().toISOString(), action: 'token.issue', decision: 'allow' });
    assert.equal(viaStore.seq, 4);
    assert.equal(log.append({ action: 'after-other-writer', decision: 'info' }).seq, 5);
    assert.equal(new AuditLog(store, logger).append({ action: 'reopened', decision: 'info' }).prevHash, rows(file)[4]!.hash);
    assert.deepEqual(await verifyAudit(store), { ok: true, records: 6, checkpoints: 0, lastSeq: 6, lastHash: rows(file)[5]!.hash, keysAuthenticated: false });
    await store.close();
  });

  it('stores strings exactly as they are hashed (lone surrogates, control characters) and refuses malformed events', async () => {
    const { store } = await freshStore();
    const log = new AuditLog(store, logger);
    const odd = log.append({ action: 'authn', decision: 'deny', reason: 'a\uD800b\u0000c\n"', detail: { 'k\uDC00': 'v\uD83D' } });
    assert.equal(odd.reason, 'a\uFFFDb\u0000c\n"');
    assert.throws(() => log.append({ action: 'x', decision: 'maybe' as 'allow' }), /decision: must be allow, deny or info/);
    assert.throws(() => log.append({ action: '', decision: 'info' }), /action: must be a non-empty string/);
    assert.throws(() => log.append({ action: 'x', decision: 'info', detail: { big: 'x'.repeat(5000) } }), /over the 4096-byte limit/);
    assert.throws(() => log.append({ action: 'x', decision: 'info', detail: [1] as unknown as Record<string, unknown> }), /detail: must be a JSON object/);
    log.record({ action: 'x', decision: 'nope' as 'allow' }); // logged, not thrown
    assert.equal((await log.list()).length, 1);
    assert.equal((await verifyAudit(store)).ok, true);
    await store.close();
  });

  it('fsyncs each record with durability "power" and still chains', async () => {
    const { store } = await freshStore();
    const log = new AuditLog(store, logger, { durability: 'power' });
    for (let i = 0; i < 5; i++) log.append(sampleEvent(i));
    assert.equal((await verifyAudit(store)).ok, true);
    await store.close();
  });

  it('group commit on the writer thread: a lost batch fails the records chained on it, then the chain resumes from what is stored', async () => {
    const { store, file } = await freshStore();
    const log = new AuditLog(store, logger);
    await log.commit({ action: 'first', decision: 'info' });
    // Another writer takes seq 2 between chaining and the batch's commit: that batch is lost...
    const lost = log.commit({ action: 'lost', decision: 'info' });
    await store.appendAudit({ time: new Date().toISOString(), action: 'other-writer', decision: 'info' });
    await new Promise<void>((resolve) => setImmediate(resolve));
    // ...and so is one chained on top of it before the failure is known.
    const onTop = log.commit({ action: 'on-top', decision: 'info' });
    await assert.rejects(lost, { code: 'SQLITE_CONSTRAINT_PRIMARYKEY' });
    await assert.rejects(onTop);
    await log.commit({ action: 'after', decision: 'info' });
    assert.equal(log.append({ action: 'sync-after', decision: 'info' }).seq, 4);
    assert.deepEqual(rows(file).map((row) => row.action), ['first', 'other-writer', 'after', 'sync-after']);
    assert.equal((await verifyAudit(store)).ok, true);
    await log.close();
    await store.close();
  });

  it('chains records written before hash chaining when the log opens', async () => {
    const { store, file } = await freshStore();
    tamper(file, (db) => {
      const insert = db.prepare('INSERT INTO audit_events (seq, time, action, decision, tenant) VALUES (?, ?, ?, ?, ?)');
      for (let seq = 1; seq <= 3; seq++) insert.run(seq, new Date().toISOString(), 'enroll.token', 'allow', 'acme');
    });
    const before = await verifyAudit(store);
    assert.equal(before.ok, false);
    assert.match(before.ok ? '' : before.message, /no hash/);
    const log = new AuditLog(store, logger);
    assert.equal(log.append({ action: 'new', decision: 'info' }).seq, 4);
    const result = await verifyAudit(store);
    assert.equal(result.ok, true);
    assert.equal(result.records, 4);
    for (const row of rows(file)) assert.equal(row.hash, rowHash(row));
    await store.close();
  });
});

// ---- checkpoints ------------------------------------------------------------------------------

describe('signed checkpoints', () => {
  it('are written every N records and on close, signed with an Ed25519 key kept sealed', async () => {
    const { store, file } = await freshStore();
    const keyring = Keyring.fromKey(randomBytes(32));
    const log = new AuditLog(store, logger);
    log.append(sampleEvent(0));
    await log.enableCheckpoints(keyring, { everyRecords: 5, everyMs: 3_600_000 });
    for (let i = 1; i < 12; i++) log.append(sampleEvent(i));
    log.close();
    assert.throws(() => log.append(sampleEvent(99)), /closed/);

    const checkpoints = await store.listAuditCheckpoints();
    assert.deepEqual(checkpoints.map((c) => c.seq), [1, 6, 11, 12], 'one at enable, every 5, one on close');
    const [key] = await store.listAuditKeys();
    assert.ok(key && !key.sealedPrivateKey.includes('PRIVATE KEY'), 'the private key is stored sealed');
    const publicKey = createPublicKey(key.publicKeyPem);
    assert.equal(publicKey.asymmetricKeyType, 'ed25519');
    const chain = rows(file);
    for (const checkpoint of checkpoints) {
      assert.equal(checkpoint.hash, chain[checkpoint.seq - 1]!.hash);
      const payload = Buffer.from(jcs({ hash: checkpoint.hash, seq: checkpoint.seq, time: checkpoint.time }));
      assert.ok(verify(null, payload, publicKey, Buffer.from(checkpoint.signature, 'base64')), `checkpoint ${checkpoint.seq} verifies`);
    }
    assert.deepEqual(await verifyAudit(store, { keyring }), { ok: true, records: 12, checkpoints: 4, lastSeq: 12, lastHash: chain[11]!.hash, keysAuthenticated: true });

    // A reopened log reuses the key and signs again only when there are new records.
    const reopened = new AuditLog(store, logger);
    await reopened.enableCheckpoints(keyring, { everyRecords: 5 });
    assert.equal(reopened.checkpoint(), undefined);
    reopened.append(sampleEvent(12));
    assert.equal(reopened.checkpoint()?.keyId, key.keyId);
    reopened.close();
    assert.equal((await store.listAuditKeys()).length, 1);

    // An altered signature is named.
    tamper(file, (db) => db.prepare("UPDATE audit_checkpoints SET signature = ? WHERE seq = 6").run(randomBytes(64).toString('base64')));
    const result = await verifyAudit(store, { keyring });
    assert.equal(result.ok, false);
    assert.deepEqual(result.ok ? {} : { seq: result.seq, problem: result.problem }, { seq: 6, problem: 'bad_checkpoint' });
    await store.close();
  });

  it('trust only keys sealed by the master key when verified with the keyring', async () => {
    const { store, file } = await freshStore();
    const keyring = Keyring.fromKey(randomBytes(32));
    const log = new AuditLog(store, logger);
    await log.enableCheckpoints(keyring, { everyRecords: 3 });
    for (let i = 0; i < 6; i++) log.append(sampleEvent(i));
    // Someone with database access adds their own key and "signs" a rewritten history with it.
    const forged = generateKeyPairSync('ed25519');
    tamper(file, (db) => {
      db.prepare('INSERT INTO audit_keys (key_id, public_key_pem, sealed_private_key, created_at) VALUES (?, ?, ?, ?)').run(
        'ak-forged', forged.publicKey.export({ type: 'spki', format: 'pem' }), 'bm90IHNlYWxlZA==', new Date().toISOString(),
      );
      const seq = 9;
      const time = new Date().toISOString();
      const hash = 'f'.repeat(64);
      const signature = sign(null, Buffer.from(jcs({ hash, seq, time })), forged.privateKey).toString('base64');
      db.prepare('INSERT INTO audit_checkpoints (seq, hash, time, key_id, signature) VALUES (?, ?, ?, ?, ?)').run(seq, hash, time, 'ak-forged', signature);
    });
    const withKeyring = await verifyAudit(store, { keyring });
    assert.equal(withKeyring.ok, false);
    assert.equal(withKeyring.ok ? 0 : withKeyring.seq, 9);
    assert.equal(withKeyring.ok ? '' : withKeyring.problem, 'bad_checkpoint');
    // Without the master key, a stored key is trusted: its checkpoint claims records that are not there.
    const withoutKeyring = await verifyAudit(store);
    assert.equal(withoutKeyring.ok ? '' : withoutKeyring.problem, 'truncated');
    assert.equal(withoutKeyring.keysAuthenticated, false);
    log.close();
    await store.close();
  });

  it('are also written on a timer while there are new records', async () => {
    const { store } = await freshStore();
    const log = new AuditLog(store, logger);
    await log.enableCheckpoints(Keyring.fromKey(randomBytes(32)), { everyRecords: 1000, everyMs: 10 });
    log.append(sampleEvent(1));
    const deadline = Date.now() + 5000;
    while ((await store.listAuditCheckpoints()).length === 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 10));
    assert.deepEqual((await store.listAuditCheckpoints()).map((c) => c.seq), [1]);
    log.close();
    await store.close();
  });
});

// ---- tampering (property) ---------------------------------------------------------------------

const FIELDS = ['time', 'tenant', 'actor', 'action', 'target', 'decision', 'reason', 'request_id', 'detail', 'excerpt', 'prev_hash', 'hash'] as const;
type Field = (typeof FIELDS)[number];

type Tamper =
  | { kind: 'none' }
  | { kind: 'edit'; at: number; field: Field; rehash: boolean }
  | { kind: 'move'; at: number; by: number }
  | { kind: 'delete'; at: number }
  | { kind: 'insert'; at: number; forgery: 'linked' | 'unlinked' | 'garbage' }
  | { kind: 'swap'; at: number; other: number; rehash: boolean }
  | { kind: 'truncate'; at: number }
  | { kind: 'checkpoint'; at: number };

const position = fc.nat({ max: 1_000_000 });
const tamperArb: fc.Arbitrary<Tamper> = fc.oneof(
  fc.constant({ kind: 'none' as const }),
  fc.record({ kind: fc.constant('edit' as const), at: position, field: fc.constantFrom(...FIELDS), rehash: fc.boolean() }),
  fc.record({ kind: fc.constant('move' as const), at: position, by: fc.integer({ min: 1, max: 5 }) }),
  fc.record({ kind: fc.constant('delete' as const), at: position }),
  fc.record({ kind: fc.constant('insert' as const), at: position, forgery: fc.constantFrom('linked' as const, 'unlinked' as const, 'garbage' as const) }),
  fc.record({ kind: fc.constant('swap' as const), at: position, other: position, rehash: fc.boolean() }),
  fc.record({ kind: fc.constant('truncate' as const), at: position }),
  fc.record({ kind: fc.constant('checkpoint' as const), at: position }),
);

const optionalText = fc.option(fc.string({ unit: 'binary', maxLength: 24 }), { nil: undefined });
const eventArb: fc.Arbitrary<AuditEvent> = fc.record(
  {
    tenant: fc.option(fc.constantFrom('acme', 'globex', 'initech'), { nil: undefined }),
    actor: optionalText,
    action: fc.constantFrom('authn', 'enroll.token', 'cert.issue', 'cert.revoke', 'policy', 'limit', 'admin.write'),
    target: optionalText,
    decision: fc.constantFrom('allow' as const, 'deny' as const, 'info' as const),
    reason: optionalText,
    requestId: fc.option(fc.stringMatching(/^[A-Za-z0-9._:-]{1,32}$/), { nil: undefined }),
    detail: fc.option(fc.dictionary(fc.string({ maxLength: 6 }), fc.jsonValue({ maxDepth: 2 }), { maxKeys: 3 }) as fc.Arbitrary<Record<string, unknown>>, {
      nil: undefined,
    }),
    excerpt: fc.option(fc.base64String({ maxLength: 40 }), { nil: undefined }),
  },
  { requiredKeys: ['action', 'decision'] },
);

const flipHex = (hex: string) => (hex[0] === '0' ? '1' : '0') + hex.slice(1);

function editedValue(row: Row, field: Field): unknown {
  const value = row[field];
  switch (field) {
    case 'time':
      return new Date(Date.parse(String(value)) + 1000).toISOString();
    case 'decision':
      return value === 'allow' ? 'deny' : 'allow';
    case 'detail':
      return value === null ? '{"forged":true}' : jcs({ ...JSON.parse(String(value)), forged: true });
    case 'prev_hash':
    case 'hash':
      return flipHex(String(value));
    default:
      return value === null ? 'forged' : `${String(value)}x`;
  }
}

const COLUMNS = ['time', 'tenant', 'actor', 'action', 'target', 'decision', 'reason', 'request_id', 'detail', 'excerpt', 'prev_hash', 'hash'];

function writeRow(db: Database.Database, row: Row): void {
  db.prepare(`UPDATE audit_events SET ${COLUMNS.map((c) => `${c} = ?`).join(', ')} WHERE seq = ?`).run(...COLUMNS.map((c) => row[c]), row.seq);
}

/** Applies the tamper at positions at or before the last checkpoint L; returns the tampered checkpoint's seq, if any. */
function applyTamper(file: string, t: Tamper, written: Row[], checkpointSeqs: number[]): { checkpointSeq?: number } {
  const L = checkpointSeqs.at(-1)!;
  const n = written.length;
  const pick = (at: number) => 1 + (at % L); // 1..L
  const row = (seq: number): Row => ({ ...written[seq - 1]! });
  let checkpointSeq: number | undefined;
  tamper(file, (db) => {
    switch (t.kind) {
      case 'none':
        return;
      case 'edit': {
        const edited = row(pick(t.at));
        edited[t.field] = editedValue(edited, t.field);
        if (t.rehash && t.field !== 'hash') edited.hash = rowHash(edited);
        writeRow(db, edited);
        return;
      }
      case 'move':
        db.prepare('UPDATE audit_events SET seq = ? WHERE seq = ?').run(n + t.by, pick(t.at));
        return;
      case 'delete':
        db.prepare('DELETE FROM audit_events WHERE seq = ?').run(pick(t.at));
        return;
      case 'insert': {
        const k = pick(t.at);
        db.prepare('UPDATE audit_events SET seq = -seq WHERE seq >= ?').run(k);
        db.prepare('UPDATE audit_events SET seq = 1 - seq WHERE seq < 0').run();
        const forged: Row = {
          seq: k, time: new Date().toISOString(), tenant: 'acme', actor: 'intruder', action: 'admin.write', target: 'POST /admin/v1/tenants',
          decision: 'allow', reason: 'HTTP 201', request_id: null, detail: null, excerpt: null,
          prev_hash: t.forgery === 'linked' ? (k === 1 ? GENESIS : written[k - 2]!.hash) : randomBytes(32).toString('hex'), hash: '',
        };
        forged.hash = t.forgery === 'garbage' ? randomBytes(32).toString('hex') : rowHash(forged);
        db.prepare(`INSERT INTO audit_events (seq, ${COLUMNS.join(', ')}) VALUES (?, ${COLUMNS.map(() => '?').join(', ')})`).run(forged.seq, ...COLUMNS.map((c) => forged[c]));
        return;
      }
      case 'swap': {
        const a = pick(t.at);
        let b = pick(t.other);
        if (b === a) b = a === L ? a - 1 : a + 1;
        const [x, y] = [row(a), row(b)];
        const movedX: Row = { ...y, seq: a };
        const movedY: Row = { ...x, seq: b };
        if (t.rehash) {
          movedX.hash = rowHash(movedX);
          movedY.hash = rowHash(movedY);
        }
        writeRow(db, movedX);
        writeRow(db, movedY);
        return;
      }
      case 'truncate':
        db.prepare('DELETE FROM audit_events WHERE seq >= ?').run(pick(t.at));
        return;
      case 'checkpoint': {
        checkpointSeq = checkpointSeqs[t.at % checkpointSeqs.length]!;
        const stored = db.prepare('SELECT signature FROM audit_checkpoints WHERE seq = ?').get(checkpointSeq) as { signature: string };
        const signature = Buffer.from(stored.signature, 'base64');
        signature[0] = signature[0]! ^ 0xff;
        db.prepare('UPDATE audit_checkpoints SET signature = ? WHERE seq = ?').run(signature.toString('base64'), checkpointSeq);
        return;
      }
    }
  });
  return checkpointSeq === undefined ? {} : { checkpointSeq };
}

/** The smallest seq whose row differs between the written and the tampered table (computed without the verifier). */
function firstDifference(written: Row[], tampered: Row[]): number | undefined {
  const before = new Map(written.map((r) => [r.seq, JSON.stringify(r)]));
  const now = new Map(tampered.map((r) => [r.seq, JSON.stringify(r)]));
  const seqs = [...new Set([...before.keys(), ...now.keys()])].sort((a, b) => a - b);
  return seqs.find((seq) => before.get(seq) !== now.get(seq));
}

const PROBLEMS: Record<Tamper['kind'], string[]> = {
  none: [],
  edit: ['modified'],
  move: ['deleted'],
  delete: ['deleted', 'truncated'],
  insert: ['inserted', 'modified'],
  swap: ['reordered'],
  truncate: ['truncated'],
  checkpoint: ['bad_checkpoint'],
};

describe('verification under random tampering (property)', () => {
  it('names exactly the first bad record; an untouched log always verifies', async () => {
    const keyring = Keyring.fromKey(randomBytes(32));
    const kinds = new Map<string, number>();
    await fc.assert(
      fc.asyncProperty(
        fc.array(eventArb, { minLength: 2, maxLength: 40 }),
        fc.integer({ min: 1, max: 8 }),
        fc.boolean(),
        tamperArb,
        async (events, everyRecords, closeAtEnd, t) => {
          const { store, file } = await freshStore();
          try {
            // Inline: this property is about verification, and a log left open (closeAtEnd false) keeps no thread.
            const log = new AuditLog(store, logger, { writer: 'inline' });
            await log.enableCheckpoints(keyring, { everyRecords: Math.min(everyRecords, events.length), everyMs: 3_600_000 });
            for (const event of events) log.append(event);
            if (closeAtEnd) log.close();
            const written = rows(file);
            const checkpointSeqs = (await store.listAuditCheckpoints()).map((c) => c.seq);
            if (t.kind === 'swap') fc.pre(checkpointSeqs.at(-1)! >= 2);

            const { checkpointSeq } = applyTamper(file, t, written, checkpointSeqs);
            kinds.set(t.kind, (kinds.get(t.kind) ?? 0) + 1);
            const expected = firstDifference(written, rows(file)) ?? checkpointSeq;
            const result = await verifyAudit(store, { keyring });
            if (t.kind === 'none') {
              assert.equal(expected, undefined);
              assert.deepEqual(result, { ok: true, records: events.length, checkpoints: checkpointSeqs.length, lastSeq: events.length, lastHash: written.at(-1)!.hash, keysAuthenticated: true });
              return;
            }
            assert.equal(result.ok, false, `${JSON.stringify(t)} went unnoticed`);
            if (result.ok) return;
            assert.equal(result.seq, expected, `${JSON.stringify(t)}: ${result.problem} ${result.message}`);
            assert.ok(PROBLEMS[t.kind].includes(result.problem), `${JSON.stringify(t)}: ${result.problem} ${result.message}`);
          } finally {
            await store.close();
          }
        },
      ),
      { numRuns: 120 },
    );
    for (const kind of Object.keys(PROBLEMS)) assert.ok((kinds.get(kind) ?? 0) > 5, `tamper kind ${kind} was exercised`);
  });

  it('cannot see records cut after the last checkpoint (the documented bound)', async () => {
    const { store, file } = await freshStore();
    const log = new AuditLog(store, logger);
    await log.enableCheckpoints(Keyring.fromKey(randomBytes(32)), { everyRecords: 10, everyMs: 3_600_000 });
    for (let i = 0; i < 15; i++) log.append(sampleEvent(i));
    tamper(file, (db) => db.prepare('DELETE FROM audit_events WHERE seq > 12').run());
    const result = await verifyAudit(store);
    assert.equal(result.ok, true);
    assert.equal(result.ok && result.lastSeq, 12);
    tamper(file, (db) => db.prepare('DELETE FROM audit_events WHERE seq > 9').run());
    const cut = await verifyAudit(store);
    assert.deepEqual(cut.ok ? {} : { seq: cut.seq, problem: cut.problem }, { seq: 10, problem: 'truncated' });
    await store.close();
  });

  it('streams the table in batches (memory-bounded) with the same verdict', async () => {
    const { store, file } = await freshStore();
    const log = new AuditLog(store, logger);
    for (let i = 0; i < 250; i++) log.append(sampleEvent(i));
    assert.equal((await verifyAudit(store, { batchSize: 7 })).ok, true);
    tamper(file, (db) => db.prepare('DELETE FROM audit_events WHERE seq = 200').run());
    const result = await verifyAudit(store, { batchSize: 7 });
    assert.deepEqual(result.ok ? {} : { seq: result.seq, problem: result.problem }, { seq: 200, problem: 'deleted' });
    await store.close();
  });
});

// ---- the gateway: admin writes, export, verify over the Admin API and the CLI -------------------

describe('a running gateway', () => {
  let gw: TestGateway;
  let stateDir: string;
  const env = () => ({ DMSC_ADMIN_TOKEN: TEST_ADMIN_TOKEN });

  before(async () => {
    stateDir = await mkdtemp(path.join(tmp, 'state-'));
    gw = await startTestGateway({}, { stateDir });
  });
  after(async () => {
    await gw?.close(false);
  });

  it('audits every admin write (method, path, status, actor) before answering it', async () => {
    assert.equal((await gw.admin('POST', '/admin/v1/tenants', { name: 'acme' })).status, 201);
    const denied = await fetch(`${gw.adminUrl}/admin/v1/tenants/acme`, { method: 'DELETE' });
    assert.equal(denied.status, 401);
    const { body } = await gw.admin('GET', '/admin/v1/audit?action=admin.write');
    const writes = body.records.map((r: Record<string, string>) => [r.tenant, r.actor, r.target, r.decision, r.reason]);
    assert.deepEqual(writes, [
      [undefined, 'admin-token', 'POST /admin/v1/tenants', 'allow', 'HTTP 201'],
      ['acme', 'anonymous', 'DELETE /admin/v1/tenants/acme', 'deny', 'HTTP 401'],
    ]);
  });

  it('exports JSON Lines with hashes, filtered by tenant, action and time, streamed in batches', async () => {
    const marks: string[] = [];
    for (let i = 0; i < 2500; i++) {
      const record = gw.gateway.audit.append({ ...sampleEvent(i), tenant: i % 2 ? 'acme' : 'globex' });
      if (i === 1000) marks.push(record.time);
    }
    const exportLines = async (query: string) => {
      const response = await fetch(`${gw.adminUrl}/admin/v1/audit/export?${query}`, { headers: { authorization: `Bearer ${TEST_ADMIN_TOKEN}` } });
      assert.equal(response.status, 200);
      assert.equal(response.headers.get('content-type'), 'application/x-ndjson');
      const text = await response.text();
      assert.ok(text.endsWith('\n'));
      return text.trimEnd().split('\n').map((line) => JSON.parse(line) as Record<string, unknown>);
    };
    const all = await gw.gateway.audit.list({ limit: 10000 });
    const lines = await exportLines('tenant=acme');
    const expected = all.filter((r) => r.tenant === 'acme');
    assert.ok(expected.length > 1000, 'spans several batches');
    assert.deepEqual(lines, JSON.parse(JSON.stringify(expected)));
    for (const line of lines) assert.equal(line.hash, recordHash(line), 'each line verifies on its own (documented recipe)');
    assert.deepEqual(await exportLines('tenant=acme&action=authn'), JSON.parse(JSON.stringify(expected.filter((r) => r.action === 'authn'))));

    const since = marks[0]!;
    const sinced = await fetch(`${gw.adminUrl}/admin/v1/audit/export?since=${encodeURIComponent(since)}&limit=5`, {
      headers: { authorization: `Bearer ${TEST_ADMIN_TOKEN}` },
    });
    const window = (await sinced.text()).trimEnd().split('\n').map((line) => JSON.parse(line) as { time: string; seq: number });
    assert.equal(window.length, 5);
    assert.ok(window.every((r) => r.time >= since));
    const until = await gw.admin('GET', `/admin/v1/audit?until=${encodeURIComponent(since)}&limit=1000`);
    assert.ok(until.body.records.length > 0 && until.body.records.every((r: { time: string }) => r.time < since));

    const bad = await gw.admin('GET', '/admin/v1/audit/export?since=yesterday');
    assert.equal(bad.status, 400);
    assert.match(bad.body.error.message, /since: must be an ISO-8601 time/);
  });

  it('verifies through the Admin API and the CLI (dmsc audit verify / export --admin-url)', async () => {
    const verdict = await gw.admin('GET', '/admin/v1/audit/verify');
    assert.equal(verdict.status, 200);
    assert.equal(verdict.body.ok, true);
    assert.equal(verdict.body.keysAuthenticated, true);
    assert.ok(verdict.body.checkpoints >= 2, 'checkpoints every 1000 records');

    const verify = await dmsc(['audit', 'verify', '--admin-url', gw.adminUrl], env());
    assert.equal(verify.code, 0, verify.stderr);
    assert.match(verify.stdout, /^audit trail intact: \d+ records \(seq 1-\d+\), \d+ signed checkpoints; last hash [0-9a-f]{64}$/);

    const out = path.join(tmp, 'export.jsonl');
    const exported = await dmsc(['audit', 'export', '--admin-url', gw.adminUrl, '--tenant', 'globex', '--out', out], env());
    assert.equal(exported.code, 0, exported.stderr);
    const lines = (await readFile(out, 'utf8')).trimEnd().split('\n').map((line) => JSON.parse(line) as { tenant: string });
    assert.equal(exported.stderr, `exported ${lines.length} records to ${out}`);
    assert.ok(lines.length >= 1250 && lines.every((r) => r.tenant === 'globex'));

    const listed = await dmsc(['audit', 'list', '--admin-url', gw.adminUrl, '--action', 'admin.write', '--limit', '1'], env());
    assert.equal(listed.code, 0, listed.stderr);
    assert.match(listed.stdout, /^SEQ\s+TIME\s+TENANT\s+ACTOR\s+ACTION/);
    assert.match(listed.stdout, /admin-token\s+admin\.write\s+POST \/admin\/v1\/tenants\s+allow\s+HTTP 201/);

    const badTime = await dmsc(['audit', 'export', '--since', 'last tuesday', '--admin-url', gw.adminUrl], env());
    assert.equal(badTime.code, 2);
    assert.match(badTime.stderr, /--since: "last tuesday" is not an ISO-8601 time/);
  });

  it('dmsc audit verify --home reads the database: exit 0 intact, exit 1 naming the first bad record', async () => {
    await gw.close(false);
    const intact = await dmsc(['audit', 'verify', '--home', stateDir]);
    assert.equal(intact.code, 0, intact.stderr);
    assert.match(intact.stdout, /^audit trail intact: /);
    assert.equal(intact.stderr, '');

    const local = await dmsc(['audit', 'export', '--state-dir', stateDir, '--action', 'admin.write']);
    assert.equal(local.code, 0, local.stderr);
    assert.equal(local.stdout.split('\n').length, 2);

    const file = path.join(stateDir, STORE_FILE);
    tamper(file, (db) => db.prepare("UPDATE audit_events SET reason = 'HTTP 204' WHERE seq = (SELECT MIN(seq) FROM audit_events WHERE action = 'admin.write')").run());
    const seq = (rows(file).find((r) => r.action === 'admin.write' && r.reason === 'HTTP 204')!).seq;
    const broken = await dmsc(['audit', 'verify', '--home', stateDir]);
    assert.equal(broken.code, 1);
    assert.equal(broken.stdout, `audit trail NOT intact: first bad record seq ${seq} (modified): record ${seq} was modified: its content does not match its hash`);
    const json = await dmsc(['audit', 'verify', '--home', stateDir, '--json']);
    assert.equal(json.code, 1);
    assert.deepEqual({ ...JSON.parse(json.stdout), message: undefined, records: undefined, checkpoints: undefined }, {
      ok: false, seq, problem: 'modified', keysAuthenticated: true, message: undefined, records: undefined, checkpoints: undefined,
    });

    await unlink(path.join(stateDir, 'master.key'));
    const keyless = await dmsc(['audit', 'verify', '--home', stateDir]);
    assert.equal(keyless.code, 1);
    assert.match(keyless.stderr, /warning: master key not available .*master\.key.*; checkpoint keys are trusted as stored/);
    assert.match(keyless.stdout, /note: checkpoint keys were not authenticated/);

    const missing = await dmsc(['audit', 'verify', '--home', path.join(tmp, 'nowhere')]);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /no gateway database in .*nowhere: point at the gateway's state with --home DIR or DMSC_HOME/);
  });
});
