/**
 * Schema migrations, in order. Plain SQL that PostgreSQL accepts as well (TEXT columns, JSON kept as
 * TEXT, no SQLite-only syntax), so the scale-out store can run the same list.
 */
export const MIGRATIONS: ReadonlyArray<{ version: number; name: string; sql: string[] }> = [
  {
    version: 1,
    name: 'registry',
    sql: [
      `CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
      )`,
      `CREATE TABLE tenants (
        name TEXT PRIMARY KEY,
        source TEXT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
      )`,
      `CREATE TABLE agents (
        tenant TEXT NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
        name TEXT NOT NULL,
        endpoints TEXT NOT NULL,
        tags TEXT NOT NULL,
        health_check TEXT,
        source TEXT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (tenant, name)
      )`,
      `CREATE TABLE agent_cards (
        tenant TEXT NOT NULL,
        agent TEXT NOT NULL,
        source_url TEXT NOT NULL,
        card TEXT NOT NULL,
        etag TEXT,
        fetched_at TEXT NOT NULL,
        PRIMARY KEY (tenant, agent),
        FOREIGN KEY (tenant, agent) REFERENCES agents(tenant, name) ON DELETE CASCADE
      )`,
    ],
  },
  {
    version: 2,
    name: 'identity',
    sql: [
      `CREATE TABLE cas (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        tenant TEXT,
        cert_pem TEXT NOT NULL,
        sealed_key TEXT NOT NULL,
        not_before TEXT NOT NULL,
        not_after TEXT NOT NULL,
        status TEXT NOT NULL,
        created_at TEXT NOT NULL
      )`,
      `CREATE TABLE issued_certs (
        serial TEXT PRIMARY KEY,
        ca_id TEXT NOT NULL REFERENCES cas(id),
        tenant TEXT NOT NULL,
        agent TEXT NOT NULL,
        kind TEXT NOT NULL,
        spiffe_id TEXT,
        not_before TEXT NOT NULL,
        not_after TEXT NOT NULL,
        revoked_at TEXT,
        revocation_reason TEXT,
        created_at TEXT NOT NULL
      )`,
      `CREATE INDEX issued_certs_agent ON issued_certs (tenant, agent)`,
      `CREATE TABLE bootstrap_tokens (
        id TEXT PRIMARY KEY,
        token_hash TEXT NOT NULL UNIQUE,
        tenant TEXT NOT NULL,
        agent TEXT NOT NULL,
        expires_at TEXT NOT NULL,
        used_at TEXT,
        created_at TEXT NOT NULL
      )`,
      `CREATE TABLE signing_keys (
        kid TEXT PRIMARY KEY,
        tenant TEXT NOT NULL,
        alg TEXT NOT NULL,
        public_jwk TEXT NOT NULL,
        sealed_private_key TEXT NOT NULL,
        status TEXT NOT NULL,
        created_at TEXT NOT NULL
      )`,
      `CREATE TABLE client_secrets (
        tenant TEXT NOT NULL,
        agent TEXT NOT NULL,
        secret_hash TEXT NOT NULL,
        created_at TEXT NOT NULL,
        PRIMARY KEY (tenant, agent)
      )`,
      `CREATE TABLE audit_events (
        seq INTEGER PRIMARY KEY,
        time TEXT NOT NULL,
        tenant TEXT,
        actor TEXT,
        action TEXT NOT NULL,
        target TEXT,
        decision TEXT NOT NULL,
        reason TEXT,
        request_id TEXT
      )`,
      `CREATE INDEX audit_events_tenant ON audit_events (tenant, seq)`,
    ],
  },
  {
    version: 3,
    name: 'audit-chain',
    sql: [
      // Records written before this migration get their chain fields when the gateway next starts (AuditLog).
      `ALTER TABLE audit_events ADD COLUMN detail TEXT`,
      `ALTER TABLE audit_events ADD COLUMN excerpt TEXT`,
      `ALTER TABLE audit_events ADD COLUMN prev_hash TEXT`,
      `ALTER TABLE audit_events ADD COLUMN hash TEXT`,
      `CREATE TABLE audit_checkpoints (
        seq INTEGER PRIMARY KEY,
        hash TEXT NOT NULL,
        time TEXT NOT NULL,
        key_id TEXT NOT NULL,
        signature TEXT NOT NULL
      )`,
      `CREATE TABLE audit_keys (
        key_id TEXT PRIMARY KEY,
        public_key_pem TEXT NOT NULL,
        sealed_private_key TEXT NOT NULL,
        created_at TEXT NOT NULL
      )`,
    ],
  },
  {
    version: 4,
    name: 'tenancy',
    sql: [
      // The tenant's policy, limits and masking (JSON), and an agent's clearances, data tags and rate limit.
      `ALTER TABLE tenants ADD COLUMN spec TEXT`,
      `ALTER TABLE agents ADD COLUMN settings TEXT`,
      `CREATE TABLE tenant_keys (
        tenant TEXT NOT NULL,
        version INTEGER NOT NULL,
        wrapped_key TEXT NOT NULL,
        created_at TEXT NOT NULL,
        PRIMARY KEY (tenant, version)
      )`,
      // Admin API tokens scoped to one tenant (read-only); the operator token stays in meta.
      `CREATE TABLE admin_tokens (
        id TEXT PRIMARY KEY,
        token_hash TEXT NOT NULL UNIQUE,
        tenant TEXT NOT NULL,
        description TEXT,
        created_at TEXT NOT NULL
      )`,
    ],
  },
  {
    version: 5,
    name: 'collaboration',
    sql: [
      // Which agent owns an A2A task (and a conversation context) the gateway routed: follow-up
      // calls to the tenant's endpoint (GetTask, CancelTask, SubscribeToTask, a reply in the task
      // or context) go to the same agent, also after a restart.
      `CREATE TABLE task_routes (
        tenant TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('task', 'context')),
        id TEXT NOT NULL,
        agent TEXT NOT NULL,
        created_at TEXT NOT NULL,
        PRIMARY KEY (tenant, kind, id)
      )`,
      `CREATE INDEX task_routes_created ON task_routes (created_at)`,
    ],
  },
];
