/**
 * The durable store: everything that must survive a restart. The embedded implementation is
 * SQLite (WAL); PostgreSQL comes with scale-out, so the interface is async and the SQL portable.
 */

export type RecordSource = 'config' | 'api';

export interface TenantRecord {
  name: string;
  source: RecordSource;
  createdAt: string; // ISO-8601
  updatedAt: string;
}

export interface HealthCheckOverride {
  enabled?: boolean;
  path?: string;
  intervalMs?: number;
  timeoutMs?: number;
  healthyThreshold?: number;
  unhealthyThreshold?: number;
}

export interface AgentRecord {
  tenant: string;
  name: string;
  endpoints: string[];
  tags: string[];
  healthCheck?: HealthCheckOverride;
  source: RecordSource;
  createdAt: string;
  updatedAt: string;
}

/** The last Agent Card fetched from an agent, exactly as the agent served it. */
export interface AgentCardRecord {
  tenant: string;
  agent: string;
  /** Where it was fetched from (the endpoint URL + well-known path). */
  sourceUrl: string;
  card: Record<string, unknown>;
  etag?: string;
  fetchedAt: string;
}

export interface DurableStore {
  /** Creates/migrates the schema. Idempotent. */
  open(): Promise<void>;
  close(): Promise<void>;

  getMeta(key: string): Promise<string | undefined>;
  setMeta(key: string, value: string): Promise<void>;

  listTenants(): Promise<TenantRecord[]>;
  getTenant(name: string): Promise<TenantRecord | undefined>;
  /** Insert or replace. */
  putTenant(tenant: TenantRecord): Promise<void>;
  /** Deletes the tenant and, with it, its agents and cards. Returns false when absent. */
  deleteTenant(name: string): Promise<boolean>;

  listAgents(tenant?: string): Promise<AgentRecord[]>;
  getAgent(tenant: string, name: string): Promise<AgentRecord | undefined>;
  putAgent(agent: AgentRecord): Promise<void>;
  /** Also deletes its card. Returns false when absent. */
  deleteAgent(tenant: string, name: string): Promise<boolean>;

  listAgentCards(): Promise<AgentCardRecord[]>;
  getAgentCard(tenant: string, agent: string): Promise<AgentCardRecord | undefined>;
  putAgentCard(card: AgentCardRecord): Promise<void>;
  deleteAgentCard(tenant: string, agent: string): Promise<void>;
}
