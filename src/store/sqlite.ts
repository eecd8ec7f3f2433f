import Database from 'better-sqlite3';
import { MIGRATIONS } from './migrations.js';
import type { AgentCardRecord, AgentRecord, DurableStore, TenantRecord } from './types.js';

interface TenantRow {
  name: string;
  source: string;
  created_at: string;
  updated_at: string;
}

interface AgentRow extends TenantRow {
  tenant: string;
  endpoints: string;
  tags: string;
  health_check: string | null;
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
  createdAt: row.created_at,
  updatedAt: row.updated_at,
});

const toAgent = (row: AgentRow): AgentRecord => ({
  tenant: row.tenant,
  name: row.name,
  endpoints: JSON.parse(row.endpoints) as string[],
  tags: JSON.parse(row.tags) as string[],
  ...(row.health_check ? { healthCheck: JSON.parse(row.health_check) as AgentRecord['healthCheck'] } : {}),
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

/**
 * The embedded durable store: one SQLite file in WAL mode. better-sqlite3 is synchronous; control-plane
 * writes are small and rare, so they run on the event loop (a write is tens of microseconds) and
 * `synchronous=FULL` makes each acknowledged write survive power loss.
 */
export class SqliteStore implements DurableStore {
  private db: Database.Database | undefined;

  constructor(private readonly file: string) {}

  private get conn(): Database.Database {
    if (!this.db) throw new Error('store is not open');
    return this.db;
  }

  async open(): Promise<void> {
    if (this.db) return;
    const db = new Database(this.file);
    db.pragma('journal_mode = WAL');
    db.pragma('synchronous = FULL');
    db.pragma('foreign_keys = ON');
    db.pragma('busy_timeout = 5000');
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
    this.db?.close();
    this.db = undefined;
  }

  async getMeta(key: string): Promise<string | undefined> {
    const row = this.conn.prepare('SELECT value FROM meta WHERE key = ?').get(key) as { value: string } | undefined;
    return row?.value;
  }

  async setMeta(key: string, value: string): Promise<void> {
    this.conn
      .prepare('INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value')
      .run(key, value);
  }

  async listTenants(): Promise<TenantRecord[]> {
    return (this.conn.prepare('SELECT * FROM tenants ORDER BY name').all() as TenantRow[]).map(toTenant);
  }

  async getTenant(name: string): Promise<TenantRecord | undefined> {
    const row = this.conn.prepare('SELECT * FROM tenants WHERE name = ?').get(name) as TenantRow | undefined;
    return row && toTenant(row);
  }

  async putTenant(tenant: TenantRecord): Promise<void> {
    this.conn
      .prepare(
        `INSERT INTO tenants (name, source, created_at, updated_at) VALUES (?, ?, ?, ?)
         ON CONFLICT (name) DO UPDATE SET source = excluded.source, updated_at = excluded.updated_at`,
      )
      .run(tenant.name, tenant.source, tenant.createdAt, tenant.updatedAt);
  }

  async deleteTenant(name: string): Promise<boolean> {
    return this.conn.prepare('DELETE FROM tenants WHERE name = ?').run(name).changes > 0;
  }

  async listAgents(tenant?: string): Promise<AgentRecord[]> {
    const rows =
      tenant === undefined
        ? this.conn.prepare('SELECT * FROM agents ORDER BY tenant, name').all()
        : this.conn.prepare('SELECT * FROM agents WHERE tenant = ? ORDER BY name').all(tenant);
    return (rows as AgentRow[]).map(toAgent);
  }

  async getAgent(tenant: string, name: string): Promise<AgentRecord | undefined> {
    const row = this.conn.prepare('SELECT * FROM agents WHERE tenant = ? AND name = ?').get(tenant, name) as AgentRow | undefined;
    return row && toAgent(row);
  }

  async putAgent(agent: AgentRecord): Promise<void> {
    this.conn
      .prepare(
        `INSERT INTO agents (tenant, name, endpoints, tags, health_check, source, created_at, updated_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (tenant, name) DO UPDATE SET endpoints = excluded.endpoints, tags = excluded.tags,
           health_check = excluded.health_check, source = excluded.source, updated_at = excluded.updated_at`,
      )
      .run(
        agent.tenant,
        agent.name,
        JSON.stringify(agent.endpoints),
        JSON.stringify(agent.tags),
        agent.healthCheck ? JSON.stringify(agent.healthCheck) : null,
        agent.source,
        agent.createdAt,
        agent.updatedAt,
      );
  }

  async deleteAgent(tenant: string, name: string): Promise<boolean> {
    return this.conn.prepare('DELETE FROM agents WHERE tenant = ? AND name = ?').run(tenant, name).changes > 0;
  }

  async listAgentCards(): Promise<AgentCardRecord[]> {
    return (this.conn.prepare('SELECT * FROM agent_cards ORDER BY tenant, agent').all() as CardRow[]).map(toCard);
  }

  async getAgentCard(tenant: string, agent: string): Promise<AgentCardRecord | undefined> {
    const row = this.conn.prepare('SELECT * FROM agent_cards WHERE tenant = ? AND agent = ?').get(tenant, agent) as CardRow | undefined;
    return row && toCard(row);
  }

  async putAgentCard(card: AgentCardRecord): Promise<void> {
    this.conn
      .prepare(
        `INSERT INTO agent_cards (tenant, agent, source_url, card, etag, fetched_at) VALUES (?, ?, ?, ?, ?, ?)
         ON CONFLICT (tenant, agent) DO UPDATE SET source_url = excluded.source_url, card = excluded.card,
           etag = excluded.etag, fetched_at = excluded.fetched_at`,
      )
      .run(card.tenant, card.agent, card.sourceUrl, JSON.stringify(card.card), card.etag ?? null, card.fetchedAt);
  }

  async deleteAgentCard(tenant: string, agent: string): Promise<void> {
    this.conn.prepare('DELETE FROM agent_cards WHERE tenant = ? AND agent = ?').run(tenant, agent);
  }
}
