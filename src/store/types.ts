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

export interface DurableStore extends IdentityStore {
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

export interface ClientSecretRecord {
  tenant: string;
  agent: string;
  secretHash: string;
  createdAt: string;
}

/** One record of the audit trail (hash chaining, checkpoints and export come with the tenancy work). */
export interface AuditRecord {
  seq: number; // assigned by the store, increasing
  time: string;
  tenant?: string;
  actor?: string; // an identity (SPIFFE ID), 'admin-token', 'anonymous', or an address
  action: string; // e.g. 'enroll', 'cert.issue', 'cert.revoke', 'authn', 'token.issue'
  target?: string;
  decision: 'allow' | 'deny' | 'info';
  reason?: string;
  requestId?: string;
}

export interface IdentityStore {
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

  putClientSecret(secret: ClientSecretRecord): Promise<void>;
  getClientSecret(tenant: string, agent: string): Promise<ClientSecretRecord | undefined>;
  deleteClientSecret(tenant: string, agent: string): Promise<void>;

  /** Appends and returns the stored record (with its seq). */
  appendAudit(record: Omit<AuditRecord, 'seq'>): Promise<AuditRecord>;
  listAudit(filter?: { tenant?: string; action?: string; afterSeq?: number; limit?: number }): Promise<AuditRecord[]>;
}
