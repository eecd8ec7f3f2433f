/**
 * The durable store: everything that must survive a restart. The embedded implementation is
 * SQLite (WAL); PostgreSQL comes with scale-out, so the interface is async and the SQL portable.
 */

import type { AuditWriter } from './audit-writer.js';

export type RecordSource = 'config' | 'api';

export interface TenantRecord {
  name: string;
  source: RecordSource;
  /**
   * The tenant's policy, limits and masking settings (`tenants[]` fields of the config file other than
   * name/agents/oauth), kept as given and validated by the tenancy part.
   */
  spec?: Record<string, unknown>;
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
  /** Tenancy settings of the agent: clearances, data tags, rate limit. */
  settings?: AgentSettings;
  source: RecordSource;
  createdAt: string;
  updatedAt: string;
}

export interface AgentSettings {
  /** Data tags this agent may receive (policy `requireClearance`). */
  clearances?: string[];
  /** Data tags every request this agent sends carries. */
  dataTags?: string[];
  /** This agent's own rate limit as a target (overrides the tenant's per-agent default). */
  limits?: Record<string, unknown>;
  /** Skills declared in config or through the Admin API (A2A skill shape), beside its card's. */
  skills?: Array<{ id: string; name?: string; description?: string; tags: string[]; examples?: string[]; inputModes?: string[]; outputModes?: string[] }>;
  /** Polling its endpoints for their load: false never; an object overrides `balancing.loadPoll` (and turns it on). */
  loadPoll?: false | { path?: string; intervalMs?: number; timeoutMs?: number };
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

/** Which agent owns an A2A task or conversation context the gateway routed (see routing/a2a). */
export interface TaskRouteRecord {
  tenant: string;
  kind: 'task' | 'context';
  id: string;
  agent: string;
  createdAt: string;
}

export interface DurableStore extends IdentityStore, AuditStore {
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

  /** Records (or moves) a task's or context's owner. */
  putTaskRoute(route: TaskRouteRecord): void;
  getTaskRoute(tenant: string, kind: TaskRouteRecord['kind'], id: string): TaskRouteRecord | undefined;
  /** Forgets routes created before `before` (ISO time); returns how many. */
  pruneTaskRoutes(before: string): number;
  /** Forgets every route to an agent (it was removed) or of a tenant (offboarded, agent omitted). */
  deleteTaskRoutes(tenant: string, agent?: string): void;
}

// ---- identity (issue 3) ---------------------------------------------------------------------------

export type CaKind = 'root' | 'intermediate';
/** active: signs new certificates; retiring: trusted, signs nothing (rotation overlap); retired: gone. */
export type CaStatus = 'active' | 'retiring' | 'retired';

export interface CaRecord {
  id: string; // e.g. 'root-<hex>' or 'int-<tenant>-<hex>'
  kind: CaKind;
  tenant?: string; // intermediates only
  certPem: string;
  /** The private key (PKCS#8 PEM), sealed by the Keyring ('ca-key', context = id). */
  sealedKey: string;
  notBefore: string;
  notAfter: string;
  status: CaStatus;
  createdAt: string;
}

export type IssuedCertKind = 'agent' | 'server' | 'gateway-client';

export interface IssuedCertRecord {
  serial: string; // lowercase hex, no leading zeros stripped: exactly as in the certificate
  caId: string;
  tenant: string;
  agent: string; // for server/gateway-client certificates: the gateway's own name
  kind: IssuedCertKind;
  spiffeId?: string;
  notBefore: string;
  notAfter: string;
  revokedAt?: string;
  revocationReason?: string;
  createdAt: string;
}

export interface BootstrapTokenRecord {
  id: string; // public id (shown in lists and audit); the token itself is never stored
  tokenHash: string;
  tenant: string;
  agent: string;
  expiresAt: string;
  usedAt?: string;
  createdAt: string;
}

export type ConsumeTokenResult =
  | { ok: true; token: BootstrapTokenRecord }
  | { ok: false; reason: 'unknown' | 'used' | 'expired'; token?: BootstrapTokenRecord };

export interface SigningKeyRecord {
  kid: string;
  tenant: string;
  alg: string; // 'ES256'
  publicJwk: Record<string, unknown>;
  /** PKCS#8 PEM sealed by the Keyring ('signing-key', context = kid). */
  sealedPrivateKey: string;
  status: 'active' | 'retired';
  createdAt: string;
}

export interface AdminTokenRecord {
  id: string;
  tokenHash: string;
  /** The one tenant this token may read. */
  tenant: string;
  description?: string;
  createdAt: string;
}

export interface TenantKeyRecord {
  tenant: string;
  version: number;
  /** The 256-bit data key sealed by the Keyring ('tenant-data-key', context = `${tenant}/${version}`). */
  wrappedKey: string;
  createdAt: string;
}

export interface ClientSecretRecord {
  tenant: string;
  agent: string;
  secretHash: string;
  createdAt: string;
}

/** One record of the audit trail, as a caller describes it (the trail adds its place in the hash chain). */
export interface AuditRecord {
  seq: number; // assigned by the trail: 1, 2, 3, ... with no gaps
  time: string;
  tenant?: string;
  actor?: string; // an identity (SPIFFE ID), 'admin-token', 'anonymous', or an address
  action: string; // e.g. 'enroll', 'cert.issue', 'cert.revoke', 'authn', 'token.issue'
  target?: string;
  decision: 'allow' | 'deny' | 'info';
  reason?: string;
  requestId?: string;
  /** A small JSON object of non-sensitive facts (e.g. masking kinds and counts, a limit's scope). */
  detail?: Record<string, unknown>;
  /** Opaque text (data sealed by the tenant's data key): stored and hashed, never interpreted. */
  excerpt?: string;
}

/** A stored record with its link in the hash chain (see docs/audit.md for the hash's encoding). */
export interface ChainedAuditRecord extends AuditRecord {
  /** The previous record's hash; 64 zeros for seq 1. */
  prevHash: string;
  /** SHA-256 (hex) of the record's canonical encoding, every field but this one. */
  hash: string;
}

/**
 * A row of the audit table exactly as stored, values unchecked (a tampered table may hold anything):
 * what verification reads. `detail` is the stored JSON text.
 */
export interface StoredAuditRow {
  seq: number;
  time: unknown;
  tenant: unknown;
  actor: unknown;
  action: unknown;
  target: unknown;
  decision: unknown;
  reason: unknown;
  requestId: unknown;
  detail: unknown;
  excerpt: unknown;
  prevHash: unknown;
  hash: unknown;
}

export interface AuditFilter {
  tenant?: string;
  action?: string;
  /** Only records with seq greater than this. */
  afterSeq?: number;
  /** Only records with time >= since (ISO-8601, UTC). */
  since?: string;
  /** Only records with time < until (ISO-8601, UTC). */
  until?: string;
  /** 1-10000, default 1000. */
  limit?: number;
}

/** A signed statement "the record with this seq has this hash", written every N records or T ms. */
export interface AuditCheckpointRecord {
  seq: number;
  hash: string;
  time: string;
  keyId: string;
  /** Ed25519 signature (base64) over the checkpoint's canonical encoding (docs/audit.md). */
  signature: string;
}

export interface AuditKeyRecord {
  keyId: string;
  publicKeyPem: string;
  /** PKCS#8 PEM sealed by the Keyring ('audit-checkpoint-key', context = keyId). */
  sealedPrivateKey: string;
  createdAt: string;
}

/**
 * The audit trail's storage. The writer's methods are synchronous on purpose: when `insertAudit`
 * returns, the record is committed, so a caller that answers afterwards cannot lose it to a crash.
 * One writer process per database is assumed (the chain head is cached by the writer).
 */
export interface AuditStore {
  /** Appends a record at the end of the chain (reads the head from the database). Prefer AuditLog. */
  appendAudit(record: Omit<AuditRecord, 'seq'>): Promise<ChainedAuditRecord>;
  listAudit(filter?: AuditFilter): Promise<ChainedAuditRecord[]>;
  /** The last record's seq and hash (hash null for a record written before hash chaining). */
  auditHead(): { seq: number; hash: string | null } | undefined;
  /** Inserts a fully formed record (explicit seq and hashes); throws if the seq is taken. Committed on return. */
  insertAudit(record: ChainedAuditRecord, options?: { fsync?: boolean }): void;
  /** Inserts several records in one transaction (group commit); all or none. Committed on return. */
  insertAuditBatch(records: readonly ChainedAuditRecord[], options?: { fsync?: boolean }): void;
  /** Sets the chain fields of a record written before hash chaining. */
  setAuditChain(seq: number, prevHash: string, hash: string): void;
  /** Rows with seq > afterSeq in seq order, as stored. */
  auditRows(afterSeq: number, limit: number): StoredAuditRow[];
  /** Inserts a checkpoint (a second one for the same seq is ignored). */
  insertAuditCheckpoint(checkpoint: AuditCheckpointRecord): void;
  /** Where AuditLog writes (absent: inline through this store's own connection). */
  openAuditWriter?(): AuditWriter;
  /** Checkpoints in seq order, optionally only those at or below `upToSeq`. */
  listAuditCheckpoints(upToSeq?: number): Promise<AuditCheckpointRecord[]>;
  listAuditKeys(): Promise<AuditKeyRecord[]>;
  putAuditKey(key: AuditKeyRecord): Promise<void>;
}

export interface IdentityStore extends Pick<AuditStore, 'appendAudit' | 'listAudit'> {
  listCas(): Promise<CaRecord[]>;
  putCa(ca: CaRecord): Promise<void>;

  putIssuedCert(cert: IssuedCertRecord): Promise<void>;
  getIssuedCert(serial: string): Promise<IssuedCertRecord | undefined>;
  listIssuedCerts(filter?: { tenant?: string; agent?: string; caId?: string; revoked?: boolean }): Promise<IssuedCertRecord[]>;
  /** Marks revoked (idempotent: keeps the first revocation). Returns the record, undefined if unknown. */
  revokeCert(serial: string, reason: string, at: string): Promise<IssuedCertRecord | undefined>;

  putBootstrapToken(token: BootstrapTokenRecord): Promise<void>;
  /** Atomically marks the token used if it exists, is unused and unexpired at `now`. */
  consumeBootstrapToken(tokenHash: string, now: string): Promise<ConsumeTokenResult>;
  listBootstrapTokens(tenant?: string): Promise<BootstrapTokenRecord[]>;

  listSigningKeys(tenant?: string): Promise<SigningKeyRecord[]>;
  putSigningKey(key: SigningKeyRecord): Promise<void>;

  /** Tenant-scoped Admin API tokens (hashes only). */
  putAdminToken(token: AdminTokenRecord): Promise<void>;
  listAdminTokens(tenant?: string): Promise<AdminTokenRecord[]>;
  findAdminToken(tokenHash: string): Promise<AdminTokenRecord | undefined>;
  deleteAdminToken(id: string): Promise<boolean>;

  /** Tenant data keys (wrapped by the master key); deleting them crypto-shreds the tenant's sealed records. */
  listTenantKeys(tenant?: string): Promise<TenantKeyRecord[]>;
  putTenantKey(key: TenantKeyRecord): Promise<void>;
  deleteTenantKeys(tenant: string): Promise<number>;
  /**
   * Replaces sealed values in one transaction (master-key rotation): `rewrap` gets each sealed value
   * with the purpose and context it was sealed for and returns the new sealed value.
   */
  rewrapSealed(rewrap: (purpose: string, context: string, sealed: string) => string, meta?: Record<string, string>): Promise<number>;

  putClientSecret(secret: ClientSecretRecord): Promise<void>;
  getClientSecret(tenant: string, agent: string): Promise<ClientSecretRecord | undefined>;
  deleteClientSecret(tenant: string, agent: string): Promise<void>;
}
