import Database from 'better-sqlite3';
import { MIGRATIONS } from './migrations.js';
import { inlineAuditWriter, ThreadAuditWriter, type AuditWriter } from './audit-writer.js';
import { auditInsertArgs, checkpointInsertArgs, CONNECTION_PRAGMAS, INSERT_AUDIT_SQL, INSERT_CHECKPOINT_SQL } from './audit-sql.js';
import { chainRecord, CHECKPOINT_KEY_PURPOSE } from '../audit/index.js';
import type {
  AdminTokenRecord,
  AgentCardRecord,
  AgentRecord,
  AuditCheckpointRecord,
  AuditFilter,
  AuditKeyRecord,
  AuditRecord,
  ChainedAuditRecord,
  StoredAuditRow,
  TaskRouteRecord,
  BootstrapTokenRecord,
  CaRecord,
  ClientSecretRecord,
  ConsumeTokenResult,
  DurableStore,
  IssuedCertRecord,
  SigningKeyRecord,
  TenantKeyRecord,
  TenantRecord,
} from './types.js';


interface TenantRow {
  name: string;
  source: string;
  spec?: string | null;
  created_at: string;
  updated_at: string;
}

interface AgentRow extends TenantRow {
  tenant: string;
  endpoints: string;
  tags: string;
  health_check: string | null;
  settings?: string | null;
}

interface CardRow {
  tenant: string;
  agent: string;
  source_url: string;
  card: string;
  etag: string | null;
  fetched_at: string;
}

const toTenant = (row: TenantRow): TenantRecord => ({
  name: row.name,
  source: row.source as TenantRecord['source'],
  ...(row.spec ? { spec: JSON.parse(row.spec) as Record<string, unknown> } : {}),
  createdAt: row.created_at,
  updatedAt: row.updated_at,
});

const toAgent = (row: AgentRow): AgentRecord => ({
  tenant: row.tenant,
  name: row.name,
  endpoints: JSON.parse(row.endpoints) as string[],
  tags: JSON.parse(row.tags) as string[],
  ...(row.health_check ? { healthCheck: JSON.parse(row.health_check) as AgentRecord['healthCheck'] } : {}),
  ...(row.settings ? { settings: JSON.parse(row.settings) as AgentRecord['settings'] } : {}),
  source: row.source as AgentRecord['source'],
  createdAt: row.created_at,
  updatedAt: row.updated_at,
});

const toCard = (row: CardRow): AgentCardRecord => ({
  tenant: row.tenant,
  agent: row.agent,
  sourceUrl: row.source_url,
  card: JSON.parse(row.card) as Record<string, unknown>,
  ...(row.etag ? { etag: row.etag } : {}),
  fetchedAt: row.fetched_at,
});


type Row = Record<string, unknown>;
const str = (value: unknown): string | undefined => (value === null || value === undefined ? undefined : String(value));
/** Drops undefined fields, so optional record fields are absent rather than undefined (exactOptional-friendly). */
function compact<T extends object>(value: T): T {
  for (const key of Object.keys(value) as Array<keyof T>) if (value[key] === undefined) delete value[key];
  return value;
}

const toAdminToken = (row: Row): AdminTokenRecord =>
  compact({
    id: String(row.id),
    tokenHash: String(row.token_hash),
    tenant: String(row.tenant),
    description: str(row.description),
    createdAt: String(row.created_at),
  });

const toCa = (row: Row): CaRecord =>
  compact({
    id: String(row.id),
    kind: row.kind as CaRecord['kind'],
    tenant: str(row.tenant),
    certPem: String(row.cert_pem),
    sealedKey: String(row.sealed_key),
    notBefore: String(row.not_before),
    notAfter: String(row.not_after),
    status: row.status as CaRecord['status'],
    createdAt: String(row.created_at),
  });

const toIssued = (row: Row): IssuedCertRecord =>
  compact({
    serial: String(row.serial),
    caId: String(row.ca_id),
    tenant: String(row.tenant),
    agent: String(row.agent),
    kind: row.kind as IssuedCertRecord['kind'],
    spiffeId: str(row.spiffe_id),
    notBefore: String(row.not_before),
    notAfter: String(row.not_after),
    revokedAt: str(row.revoked_at),
    revocationReason: str(row.revocation_reason),
    createdAt: String(row.created_at),
  });

const toToken = (row: Row): BootstrapTokenRecord =>
  compact({
    id: String(row.id),
    tokenHash: String(row.token_hash),
    tenant: String(row.tenant),
    agent: String(row.agent),
    expiresAt: String(row.expires_at),
    usedAt: str(row.used_at),
    createdAt: String(row.created_at),
  });

const toSigningKey = (row: Row): SigningKeyRecord => ({
  kid: String(row.kid),
  tenant: String(row.tenant),
  alg: String(row.alg),
  publicJwk: JSON.parse(String(row.public_jwk)) as Record<string, unknown>,
  sealedPrivateKey: String(row.sealed_private_key),
  status: row.status as SigningKeyRecord['status'],
  createdAt: String(row.created_at),
});

const toAudit = (row: Row): ChainedAuditRecord => {
  let detail: Record<string, unknown> | undefined;
  if (typeof row.detail === 'string') {
    try {
      detail = JSON.parse(row.detail) as Record<string, unknown>;
    } catch {
      // a tampered row: listed without its detail, and `dmsc audit verify` names it
    }
  }
  return compact({
    seq: Number(row.seq),
    time: String(row.time),
    tenant: str(row.tenant),
    actor: str(row.actor),
    action: String(row.action),
    target: str(row.target),
    decision: row.decision as AuditRecord['decision'],
    reason: str(row.reason),
    requestId: str(row.request_id),
    detail,
    excerpt: str(row.excerpt),
    prevHash: str(row.prev_hash) ?? '',
    hash: str(row.hash) ?? '',
  });
};

const toStoredAuditRow = (row: Row): StoredAuditRow => ({
  seq: Number(row.seq),
  time: row.time,
  tenant: row.tenant,
  actor: row.actor,
  action: row.action,
  target: row.target,
  decision: row.decision,
  reason: row.reason,
  requestId: row.request_id,
  detail: row.detail,
  excerpt: row.excerpt,
  prevHash: row.prev_hash,
  hash: row.hash,
});

const toCheckpoint = (row: Row): AuditCheckpointRecord => ({
  seq: Number(row.seq),
  hash: String(row.hash),
  time: String(row.time),
  keyId: String(row.key_id),
  signature: String(row.signature),
});

/**
 * The embedded durable store: one SQLite file in WAL mode. better-sqlite3 is synchronous; writes are
 * small, so they run on the event loop (tens of microseconds each). `synchronous=NORMAL` in WAL mode:
 * a committed write survives the process being killed (kill -9) because it is in the WAL in the OS's
 * page cache; a power loss may lose the last transactions (fsync at checkpoints only). FULL would
 * fsync every commit and halve certificate issuance (two writes each: the record and its audit).
 */
export class SqliteStore implements DurableStore {
  private db: Database.Database | undefined;

  constructor(private readonly file: string) {}

  private readonly statements = new Map<string, Database.Statement>();

  /** Prepared once per SQL text (preparing costs more than running most of these statements). */
  private sql(text: string): Database.Statement {
    let statement = this.statements.get(text);
    if (!statement) {
      statement = this.conn.prepare(text);
      this.statements.set(text, statement);
    }
    return statement;
  }

  private get conn(): Database.Database {
    if (!this.db) throw new Error('store is not open');
    return this.db;
  }

  async open(): Promise<void> {
    if (this.db) return;
    const db = new Database(this.file);
    for (const pragma of CONNECTION_PRAGMAS) db.pragma(pragma);
    db.exec('CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)');
    const applied = new Set(
      (db.prepare('SELECT version FROM schema_migrations').all() as Array<{ version: number }>).map((row) => row.version),
    );
    const newest = MIGRATIONS.at(-1)?.version ?? 0;
    const unknown = [...applied].filter((version) => version > newest);
    if (unknown.length > 0) {
      db.close();
      throw new Error(`${this.file} was written by a newer gateway (schema version ${Math.max(...unknown)} > ${newest})`);
    }
    for (const migration of MIGRATIONS) {
      if (applied.has(migration.version)) continue;
      db.transaction(() => {
        for (const statement of migration.sql) db.exec(statement);
        db.prepare('INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)').run(
          migration.version,
          migration.name,
          new Date().toISOString(),
        );
      })();
    }
    this.db = db;
  }

  async close(): Promise<void> {
    this.statements.clear();
    this.auditBatch = undefined;
    this.db?.close();
    this.db = undefined;
  }

  async getMeta(key: string): Promise<string | undefined> {
    const row = this.sql('SELECT value FROM meta WHERE key = ?').get(key) as { value: string } | undefined;
    return row?.value;
  }

  async setMeta(key: string, value: string): Promise<void> {
    this
      .sql('INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value')
      .run(key, value);
  }

  async listTenants(): Promise<TenantRecord[]> {
    return (this.sql('SELECT * FROM tenants ORDER BY name').all() as TenantRow[]).map(toTenant);
  }

  async getTenant(name: string): Promise<TenantRecord | undefined> {
    const row = this.sql('SELECT * FROM tenants WHERE name = ?').get(name) as TenantRow | undefined;
    return row && toTenant(row);
  }

  async putTenant(tenant: TenantRecord): Promise<void> {
    this
      .sql(
        `INSERT INTO tenants (name, source, spec, created_at, updated_at) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT (name) DO UPDATE SET source = excluded.source, spec = excluded.spec, updated_at = excluded.updated_at`,
      )
      .run(tenant.name, tenant.source, tenant.spec ? JSON.stringify(tenant.spec) : null, tenant.createdAt, tenant.updatedAt);
  }

  async deleteTenant(name: string): Promise<boolean> {
    return this.sql('DELETE FROM tenants WHERE name = ?').run(name).changes > 0;
  }

  async listAgents(tenant?: string): Promise<AgentRecord[]> {
    const rows =
      tenant === undefined
        ? this.sql('SELECT * FROM agents ORDER BY tenant, name').all()
        : this.sql('SELECT * FROM agents WHERE tenant = ? ORDER BY name').all(tenant);
    return (rows as AgentRow[]).map(toAgent);
  }

  async getAgent(tenant: string, name: string): Promise<AgentRecord | undefined> {
    const row = this.sql('SELECT * FROM agents WHERE tenant = ? AND name = ?').get(tenant, name) as AgentRow | undefined;
    return row && toAgent(row);
  }

  async putAgent(agent: AgentRecord): Promise<void> {
    this
      .sql(
        `INSERT INTO agents (tenant, name, endpoints, tags, health_check, settings, source, created_at, updated_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (tenant, name) DO UPDATE SET endpoints = excluded.endpoints, tags = excluded.tags,
           health_check = excluded.health_check, settings = excluded.settings, source = excluded.source,
           updated_at = excluded.updated_at`,
      )
      .run(
        agent.tenant,
        agent.name,
        JSON.stringify(agent.endpoints),
        JSON.stringify(agent.tags),
        agent.healthCheck ? JSON.stringify(agent.healthCheck) : null,
        agent.settings ? JSON.stringify(agent.settings) : null,
        agent.source,
        agent.createdAt,
        agent.updatedAt,
      );
  }

  async deleteAgent(tenant: string, name: string): Promise<boolean> {
    return this.sql('DELETE FROM agents WHERE tenant = ? AND name = ?').run(tenant, name).changes > 0;
  }

  async listAgentCards(): Promise<AgentCardRecord[]> {
    return (this.sql('SELECT * FROM agent_cards ORDER BY tenant, agent').all() as CardRow[]).map(toCard);
  }

  async getAgentCard(tenant: string, agent: string): Promise<AgentCardRecord | undefined> {
    const row = this.sql('SELECT * FROM agent_cards WHERE tenant = ? AND agent = ?').get(tenant, agent) as CardRow | undefined;
    return row && toCard(row);
  }

  async putAgentCard(card: AgentCardRecord): Promise<void> {
    this
      .sql(
        `INSERT INTO agent_cards (tenant, agent, source_url, card, etag, fetched_at) VALUES (?, ?, ?, ?, ?, ?)
         ON CONFLICT (tenant, agent) DO UPDATE SET source_url = excluded.source_url, card = excluded.card,
           etag = excluded.etag, fetched_at = excluded.fetched_at`,
      )
      .run(card.tenant, card.agent, card.sourceUrl, JSON.stringify(card.card), card.etag ?? null, card.fetchedAt);
  }

  putTaskRoute(route: TaskRouteRecord): void {
    this
      .sql('INSERT INTO task_routes (tenant, kind, id, agent, created_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT (tenant, kind, id) DO UPDATE SET agent = excluded.agent, created_at = excluded.created_at')
      .run(route.tenant, route.kind, route.id, route.agent, route.createdAt);
  }

  getTaskRoute(tenant: string, kind: TaskRouteRecord['kind'], id: string): TaskRouteRecord | undefined {
    const row = this.sql('SELECT * FROM task_routes WHERE tenant = ? AND kind = ? AND id = ?').get(tenant, kind, id) as Row | undefined;
    return row && { tenant: String(row.tenant), kind: row.kind as TaskRouteRecord['kind'], id: String(row.id), agent: String(row.agent), createdAt: String(row.created_at) };
  }

  pruneTaskRoutes(before: string): number {
    return this.sql('DELETE FROM task_routes WHERE created_at < ?').run(before).changes;
  }

  deleteTaskRoutes(tenant: string, agent?: string): void {
    if (agent === undefined) this.sql('DELETE FROM task_routes WHERE tenant = ?').run(tenant);
    else this.sql('DELETE FROM task_routes WHERE tenant = ? AND agent = ?').run(tenant, agent);
  }

  async deleteAgentCard(tenant: string, agent: string): Promise<void> {
    this.sql('DELETE FROM agent_cards WHERE tenant = ? AND agent = ?').run(tenant, agent);
  }

  // ---- identity ----------------------------------------------------------------------------

  async listCas(): Promise<CaRecord[]> {
    return (this.sql('SELECT * FROM cas ORDER BY created_at, id').all() as Row[]).map(toCa);
  }

  async putCa(ca: CaRecord): Promise<void> {
    this
      .sql(
        `INSERT INTO cas (id, kind, tenant, cert_pem, sealed_key, not_before, not_after, status, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (id) DO UPDATE SET status = excluded.status, sealed_key = excluded.sealed_key`,
      )
      .run(ca.id, ca.kind, ca.tenant ?? null, ca.certPem, ca.sealedKey, ca.notBefore, ca.notAfter, ca.status, ca.createdAt);
  }

  async putIssuedCert(cert: IssuedCertRecord): Promise<void> {
    this
      .sql(
        `INSERT INTO issued_certs (serial, ca_id, tenant, agent, kind, spiffe_id, not_before, not_after, revoked_at, revocation_reason, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      )
      .run(
        cert.serial,
        cert.caId,
        cert.tenant,
        cert.agent,
        cert.kind,
        cert.spiffeId ?? null,
        cert.notBefore,
        cert.notAfter,
        cert.revokedAt ?? null,
        cert.revocationReason ?? null,
        cert.createdAt,
      );
  }

  async getIssuedCert(serial: string): Promise<IssuedCertRecord | undefined> {
    const row = this.sql('SELECT * FROM issued_certs WHERE serial = ?').get(serial) as Row | undefined;
    return row && toIssued(row);
  }

  async listIssuedCerts(filter: { tenant?: string; agent?: string; caId?: string; revoked?: boolean } = {}): Promise<IssuedCertRecord[]> {
    const where: string[] = [];
    const args: unknown[] = [];
    if (filter.tenant !== undefined) (where.push('tenant = ?'), args.push(filter.tenant));
    if (filter.agent !== undefined) (where.push('agent = ?'), args.push(filter.agent));
    if (filter.caId !== undefined) (where.push('ca_id = ?'), args.push(filter.caId));
    if (filter.revoked !== undefined) where.push(filter.revoked ? 'revoked_at IS NOT NULL' : 'revoked_at IS NULL');
    const sql = `SELECT * FROM issued_certs${where.length ? ' WHERE ' + where.join(' AND ') : ''} ORDER BY created_at, serial`;
    return (this.sql(sql).all(...args) as Row[]).map(toIssued);
  }

  async revokeCert(serial: string, reason: string, at: string): Promise<IssuedCertRecord | undefined> {
    this
      .sql('UPDATE issued_certs SET revoked_at = ?, revocation_reason = ? WHERE serial = ? AND revoked_at IS NULL')
      .run(at, reason, serial);
    return this.getIssuedCert(serial);
  }

  async putBootstrapToken(token: BootstrapTokenRecord): Promise<void> {
    this
      .sql(
        `INSERT INTO bootstrap_tokens (id, token_hash, tenant, agent, expires_at, used_at, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)`,
      )
      .run(token.id, token.tokenHash, token.tenant, token.agent, token.expiresAt, token.usedAt ?? null, token.createdAt);
  }

  async consumeBootstrapToken(tokenHash: string, now: string): Promise<ConsumeTokenResult> {
    // One conditional UPDATE: of two concurrent uses exactly one changes the row.
    const changed = this
      .sql('UPDATE bootstrap_tokens SET used_at = ? WHERE token_hash = ? AND used_at IS NULL AND expires_at > ?')
      .run(now, tokenHash, now).changes;
    const row = this.sql('SELECT * FROM bootstrap_tokens WHERE token_hash = ?').get(tokenHash) as Row | undefined;
    if (!row) return { ok: false, reason: 'unknown' };
    const token = toToken(row);
    if (changed === 1) return { ok: true, token };
    return { ok: false, reason: token.usedAt ? 'used' : 'expired', token };
  }

  async listBootstrapTokens(tenant?: string): Promise<BootstrapTokenRecord[]> {
    const rows =
      tenant === undefined
        ? this.sql('SELECT * FROM bootstrap_tokens ORDER BY created_at').all()
        : this.sql('SELECT * FROM bootstrap_tokens WHERE tenant = ? ORDER BY created_at').all(tenant);
    return (rows as Row[]).map(toToken);
  }

  async listSigningKeys(tenant?: string): Promise<SigningKeyRecord[]> {
    const rows =
      tenant === undefined
        ? this.sql('SELECT * FROM signing_keys ORDER BY created_at').all()
        : this.sql('SELECT * FROM signing_keys WHERE tenant = ? ORDER BY created_at').all(tenant);
    return (rows as Row[]).map(toSigningKey);
  }

  async putSigningKey(key: SigningKeyRecord): Promise<void> {
    this
      .sql(
        `INSERT INTO signing_keys (kid, tenant, alg, public_jwk, sealed_private_key, status, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (kid) DO UPDATE SET status = excluded.status`,
      )
      .run(key.kid, key.tenant, key.alg, JSON.stringify(key.publicJwk), key.sealedPrivateKey, key.status, key.createdAt);
  }

  async putClientSecret(secret: ClientSecretRecord): Promise<void> {
    this
      .sql(
        `INSERT INTO client_secrets (tenant, agent, secret_hash, created_at) VALUES (?, ?, ?, ?)
         ON CONFLICT (tenant, agent) DO UPDATE SET secret_hash = excluded.secret_hash, created_at = excluded.created_at`,
      )
      .run(secret.tenant, secret.agent, secret.secretHash, secret.createdAt);
  }

  async putAdminToken(token: AdminTokenRecord): Promise<void> {
    this
      .sql('INSERT INTO admin_tokens (id, token_hash, tenant, description, created_at) VALUES (?, ?, ?, ?, ?)')
      .run(token.id, token.tokenHash, token.tenant, token.description ?? null, token.createdAt);
  }

  async listAdminTokens(tenant?: string): Promise<AdminTokenRecord[]> {
    const rows = (
      tenant === undefined
        ? this.sql('SELECT * FROM admin_tokens ORDER BY created_at, id').all()
        : this.sql('SELECT * FROM admin_tokens WHERE tenant = ? ORDER BY created_at, id').all(tenant)
    ) as Row[];
    return rows.map(toAdminToken);
  }

  async findAdminToken(tokenHash: string): Promise<AdminTokenRecord | undefined> {
    const row = this.sql('SELECT * FROM admin_tokens WHERE token_hash = ?').get(tokenHash) as Row | undefined;
    return row && toAdminToken(row);
  }

  async deleteAdminToken(id: string): Promise<boolean> {
    return this.sql('DELETE FROM admin_tokens WHERE id = ?').run(id).changes > 0;
  }

  async listTenantKeys(tenant?: string): Promise<TenantKeyRecord[]> {
    const rows = (
      tenant === undefined
        ? this.sql('SELECT * FROM tenant_keys ORDER BY tenant, version').all()
        : this.sql('SELECT * FROM tenant_keys WHERE tenant = ? ORDER BY version').all(tenant)
    ) as Row[];
    return rows.map((row) => ({
      tenant: String(row.tenant),
      version: Number(row.version),
      wrappedKey: String(row.wrapped_key),
      createdAt: String(row.created_at),
    }));
  }

  async putTenantKey(key: TenantKeyRecord): Promise<void> {
    this
      .sql('INSERT INTO tenant_keys (tenant, version, wrapped_key, created_at) VALUES (?, ?, ?, ?)')
      .run(key.tenant, key.version, key.wrappedKey, key.createdAt);
  }

  async deleteTenantKeys(tenant: string): Promise<number> {
    return this.sql('DELETE FROM tenant_keys WHERE tenant = ?').run(tenant).changes;
  }

  async rewrapSealed(rewrap: (purpose: string, context: string, sealed: string) => string, meta: Record<string, string> = {}): Promise<number> {
    // Every table holding a value sealed by the master key: [table, key column, sealed column, purpose, context].
    const sealedColumns: Array<[string, string, string, string, (row: Row) => string]> = [
      ['cas', 'id', 'sealed_key', 'ca-key', (row) => String(row.id)],
      ['signing_keys', 'kid', 'sealed_private_key', 'signing-key', (row) => String(row.kid)],
      ['tenant_keys', 'rowid', 'wrapped_key', 'tenant-data-key', (row) => `${String(row.tenant)}/${Number(row.version)}`],
      ['audit_keys', 'key_id', 'sealed_private_key', CHECKPOINT_KEY_PURPOSE, (row) => String(row.key_id)],
    ];
    let count = 0;
    this.conn.transaction(() => {
      for (const [table, key, column, purpose, context] of sealedColumns) {
        const rows = this.conn.prepare(`SELECT rowid AS rowid, * FROM ${table}`).all() as Row[];
        const update = this.conn.prepare(`UPDATE ${table} SET ${column} = ? WHERE ${key === 'rowid' ? 'rowid' : key} = ?`);
        for (const row of rows) {
          update.run(rewrap(purpose, context(row), String(row[column])), row[key === 'rowid' ? 'rowid' : key]);
          count++;
        }
      }
      const setMeta = this.conn.prepare('INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value');
      for (const [key, value] of Object.entries(meta)) setMeta.run(key, value);
    })();
    return count;
  }

  async getClientSecret(tenant: string, agent: string): Promise<ClientSecretRecord | undefined> {
    const row = this.sql('SELECT * FROM client_secrets WHERE tenant = ? AND agent = ?').get(tenant, agent) as Row | undefined;
    return row && { tenant: String(row.tenant), agent: String(row.agent), secretHash: String(row.secret_hash), createdAt: String(row.created_at) };
  }

  async deleteClientSecret(tenant: string, agent: string): Promise<void> {
    this.sql('DELETE FROM client_secrets WHERE tenant = ? AND agent = ?').run(tenant, agent);
  }

  // ---- audit trail (src/audit owns the chain; these only store it) -------------------------------

  async appendAudit(record: Omit<AuditRecord, 'seq'>): Promise<ChainedAuditRecord> {
    const { time, ...event } = record;
    // IMMEDIATE: the head read and the insert are one write transaction, so two writers cannot fork the chain.
    return this.conn
      .transaction(() => {
        const head = this.auditHead();
        const { record: chained } = chainRecord(head && { seq: head.seq, hash: head.hash ?? '' }, event, time);
        this.insertAudit(chained);
        return chained;
      })
      .immediate();
  }

  /** A writer thread with its own connection (an in-memory database has no file to share: inline). */
  openAuditWriter(): AuditWriter {
    if (this.file === ':memory:' || this.file === '') return inlineAuditWriter(this);
    return new ThreadAuditWriter(this.file);
  }

  auditHead(): { seq: number; hash: string | null } | undefined {
    const row = this.sql('SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1').get() as Row | undefined;
    return row && { seq: Number(row.seq), hash: row.hash === null ? null : String(row.hash) };
  }

  /** One transaction function for every batch (better-sqlite3 builds a wrapper per transaction() call). */
  private auditBatch: ((records: readonly ChainedAuditRecord[]) => void) | undefined;

  insertAuditBatch(records: readonly ChainedAuditRecord[], options: { fsync?: boolean } = {}): void {
    this.auditBatch ??= this.conn.transaction((batch: readonly ChainedAuditRecord[]) => {
      for (const record of batch) this.insertAudit(record);
    });
    if (!options.fsync) return void this.auditBatch(records);
    this.sql('PRAGMA synchronous = FULL').run();
    try {
      this.auditBatch(records);
    } finally {
      this.sql('PRAGMA synchronous = NORMAL').run();
    }
  }

  insertAudit(record: ChainedAuditRecord, options: { fsync?: boolean } = {}): void {
    const insert = () => this.sql(INSERT_AUDIT_SQL).run(...auditInsertArgs(record));
    if (!options.fsync) return void insert();
    // synchronous is per connection and applies to the next commit: FULL fsyncs the WAL (and with it
    // every earlier commit) before this insert returns; other writes stay at NORMAL.
    this.sql('PRAGMA synchronous = FULL').run();
    try {
      insert();
    } finally {
      this.sql('PRAGMA synchronous = NORMAL').run();
    }
  }

  setAuditChain(seq: number, prevHash: string, hash: string): void {
    this.sql('UPDATE audit_events SET prev_hash = ?, hash = ? WHERE seq = ?').run(prevHash, hash, seq);
  }

  auditRows(afterSeq: number, limit: number): StoredAuditRow[] {
    return (this.sql('SELECT * FROM audit_events WHERE seq > ? ORDER BY seq LIMIT ?').all(afterSeq, limit) as Row[]).map(toStoredAuditRow);
  }

  async listAudit(filter: AuditFilter = {}): Promise<ChainedAuditRecord[]> {
    const where: string[] = ['seq > ?'];
    const args: unknown[] = [filter.afterSeq ?? 0];
    if (filter.tenant !== undefined) (where.push('tenant = ?'), args.push(filter.tenant));
    if (filter.action !== undefined) (where.push('action = ?'), args.push(filter.action));
    if (filter.since !== undefined) (where.push('time >= ?'), args.push(filter.since));
    if (filter.until !== undefined) (where.push('time < ?'), args.push(filter.until));
    args.push(Math.min(Math.max(filter.limit ?? 1000, 1), 10000));
    const sql = `SELECT * FROM audit_events WHERE ${where.join(' AND ')} ORDER BY seq LIMIT ?`;
    return (this.sql(sql).all(...args) as Row[]).map(toAudit);
  }

  insertAuditCheckpoint(checkpoint: AuditCheckpointRecord): void {
    this.sql(INSERT_CHECKPOINT_SQL).run(...checkpointInsertArgs(checkpoint));
  }

  async listAuditCheckpoints(upToSeq?: number): Promise<AuditCheckpointRecord[]> {
    const rows =
      upToSeq === undefined
        ? this.sql('SELECT * FROM audit_checkpoints ORDER BY seq').all()
        : this.sql('SELECT * FROM audit_checkpoints WHERE seq <= ? ORDER BY seq').all(upToSeq);
    return (rows as Row[]).map(toCheckpoint);
  }

  async listAuditKeys(): Promise<AuditKeyRecord[]> {
    return (this.sql('SELECT * FROM audit_keys ORDER BY created_at, key_id').all() as Row[]).map((row) => ({
      keyId: String(row.key_id),
      publicKeyPem: String(row.public_key_pem),
      sealedPrivateKey: String(row.sealed_private_key),
      createdAt: String(row.created_at),
    }));
  }

  async putAuditKey(key: AuditKeyRecord): Promise<void> {
    this
      .sql('INSERT INTO audit_keys (key_id, public_key_pem, sealed_private_key, created_at) VALUES (?, ?, ?, ?)')
      .run(key.keyId, key.publicKeyPem, key.sealedPrivateKey, key.createdAt);
  }
}
