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
];
