import type { AgentCardRecord, AgentRecord, AgentSettings, HealthCheckOverride, TenantRecord } from '../store/types.js';

/** One replica of an agent. Mutable runtime state lives here; the data plane reads it per request. */
export interface EndpointState {
  /** Normalised endpoint URL: origin + base path, no trailing slash. */
  readonly url: string;
  readonly origin: string; // e.g. http://127.0.0.1:7001
  readonly basePath: string; // '' or '/base' (no trailing slash)
  readonly tls: boolean;
  healthy: boolean;
  /** Requests currently forwarded to this endpoint. */
  inflight: number;
  consecutiveFailures: number;
  consecutiveSuccesses: number;
  lastCheckedAt?: string;
  lastError?: string;
  /** What the gateway observed of its load (src/routing/load.ts writes it). */
  readonly load: EndpointLoad;
  /** Outlier detection and circuit breaking (src/routing/outlier.ts writes it). */
  readonly outlier: EndpointOutlier;
}

/**
 * Load observations of one endpoint. Times are performance.now() milliseconds. Decaying values are
 * stored as of their timestamp; readers apply the decay (balancing.decayMs) for the time since.
 */
export interface EndpointLoad {
  /** Peak-EWMA time to the response headers, ms, as of `at`; -1 before the first answer. */
  latencyMs: number;
  /** Exponentially decayed counts of finished attempts and of failed ones (5xx, connect/reset/timeout), as of `at`. */
  attempts: number;
  failures: number;
  /** When latencyMs, attempts and failures were last updated; 0: never. */
  at: number;
  /** What the agent reports (`x-dmsc-load` or ORCA, on its answers or polled): utilisation 0..1 and queue depth, as of `reportedAt` (0: none). */
  utilization: number;
  queue: number;
  reportedAt: number;
}

export interface EndpointOutlier {
  /** Consecutive failed attempts (5xx or connect/reset/timeout); an answer below 500 resets it. */
  consecutiveFailures: number;
  /** The current failure-rate window. */
  windowStart: number;
  windowRequests: number;
  windowFailures: number;
  /** Ejected until this time (performance.now() ms); 0: in service; past it: half-open (one probe at a time). */
  ejectedUntil: number;
  /** Back-off multiplier: the number of recent ejections. */
  ejections: number;
  /** When the endpoint last returned to service (for the back-off's decay); 0: never ejected. */
  restoredAt: number;
  /** When the half-open probe in flight started; 0: none. */
  probeStartedAt: number;
}

/** What the data plane needs to know about an agent; replaced (not mutated) when the agent changes. */
export interface AgentRuntime {
  readonly tenant: string;
  readonly name: string;
  /** `${tenant}/${name}` */
  readonly key: string;
  readonly endpoints: readonly EndpointState[];
  readonly tags: readonly string[];
  /** Data tags this agent may receive. */
  readonly clearances: readonly string[];
  /** Data tags every request this agent sends carries. */
  readonly dataTags: readonly string[];
  /** Skills from its Agent Card and its config (id and tags), for policy rules on skills and capability tags. */
  readonly skills: readonly { readonly id: string; readonly tags: readonly string[] }[];
  /** Last fetched Agent Card, if the agent serves one. */
  readonly card?: AgentCardRecord;
  /** The card's JSON-RPC interfaces and the A2A version of each, for the tenant's A2A endpoint. */
  readonly a2aInterfaces: readonly { readonly path: string; readonly version: '1.0' | '0.3' }[];
  /** Its own `loadPoll` setting (config or Admin API), if any. */
  readonly loadPoll: AgentSettings['loadPoll'];
  /** Agent-relative paths of the card's JSON-RPC interfaces (e.g. '/a2a/jsonrpc'), for A2A-shaped errors. */
  readonly jsonRpcPaths: ReadonlySet<string>;
  /** Round-robin cursor, owned by the balancer. */
  rrCursor: number;
}

/** The narrow read interface the data plane uses. */
export interface RegistryView {
  findAgent(tenant: string, agent: string): AgentRuntime | undefined;
  hasTenant(tenant: string): boolean;
  /** Passive health: a connect error, reset or timeout talking to this endpoint. */
  reportFailure(endpoint: EndpointState, reason: string): void;
  /** Passive health: the endpoint answered. Cheap; called on every response. */
  reportSuccess(endpoint: EndpointState): void;
}

export interface AgentSpec {
  endpoints: string[];
  tags?: string[];
  healthCheck?: HealthCheckOverride;
  clearances?: string[];
  dataTags?: string[];
  limits?: Record<string, unknown>;
  skills?: NonNullable<AgentSettings['skills']>;
  loadPoll?: AgentSettings['loadPoll'];
}

export type { AgentSettings };

export interface EndpointStatus {
  url: string;
  healthy: boolean;
  inflight: number;
  consecutiveFailures: number;
  lastCheckedAt?: string;
  lastError?: string;
  load: EndpointLoadStatus;
  outlier: EndpointOutlierStatus;
}

/** Load as last observed (decay not applied): what the balancer's score is made of. */
export interface EndpointLoadStatus {
  /** Peak-EWMA time to response headers; absent before the first answer. */
  latencyMs?: number;
  /** Recent share of failed attempts (decayed counts, one success assumed as a prior). */
  errorRate: number;
  /** The agent's last load report (`x-dmsc-load` or ORCA, on an answer or polled). */
  reported?: { utilization: number; queue: number; at: string };
}

export interface EndpointOutlierStatus {
  state: 'in-service' | 'ejected' | 'half-open';
  /** Recent ejections (the back-off multiplier). */
  ejections: number;
  ejectedUntil?: string;
}

export interface SkillSummary {
  id: string;
  name: string;
  description?: string;
  tags: string[];
  examples?: string[];
  inputModes?: string[];
  outputModes?: string[];
}

/** An agent as the Admin API shows it. */
export interface AgentView extends AgentRecord {
  endpointStatus: EndpointStatus[];
  /** Every skill routing knows for this agent: its card's, then those declared in config not on the card. */
  skills: SkillSummary[];
  card?: {
    sourceUrl: string;
    fetchedAt: string;
    name?: string;
    skills: SkillSummary[];
    /** SHA-256 (hex) of the card's RFC 8785 canonical JSON, as the agent served it: compare cards across gateways. */
    digest: string;
  };
  /** Why the last Agent Card fetch failed (unreachable, invalid card); absent after a good fetch. */
  cardError?: string;
}

export type RegistryErrorCode = 'not_found' | 'conflict' | 'managed_by_config' | 'invalid';

export class RegistryError extends Error {
  constructor(
    readonly code: RegistryErrorCode,
    message: string,
  ) {
    super(message);
    this.name = 'RegistryError';
  }
}

/** The control-plane surface the Admin API and CLI use. Writes persist before they return. */
export interface RegistryAdmin {
  listTenants(): TenantRecord[];
  getTenant(name: string): TenantRecord | undefined;
  /** `spec`: the tenant's policy, limits and masking (validated by the registry's `validateTenantSpec`). */
  createTenant(name: string, spec?: Record<string, unknown>): Promise<TenantRecord>; // conflict if exists, invalid
  /** Replaces an API tenant's spec (policy, limits, masking); managed_by_config for config tenants. */
  setTenantSpec(name: string, spec: Record<string, unknown>): Promise<TenantRecord>;
  deleteTenant(name: string): Promise<void>; // not_found; managed_by_config
  listAgents(tenant: string): AgentView[]; // not_found if tenant absent
  getAgent(tenant: string, agent: string): AgentView | undefined;
  createAgent(tenant: string, name: string, spec: AgentSpec): Promise<AgentView>; // conflict, not_found (tenant), invalid
  /** Replace (PUT semantics); creates when absent. Returns [view, created]. */
  putAgent(tenant: string, name: string, spec: AgentSpec): Promise<[AgentView, boolean]>;
  deleteAgent(tenant: string, agent: string): Promise<void>;
  /** Fetch the agent's card now (also done on registration and on a schedule). */
  refreshCard(tenant: string, agent: string): Promise<AgentView>;
}

/** One endpoint's health, for the `dmsc_endpoint_healthy` gauge. */
export interface EndpointHealthSample {
  tenant: string;
  agent: string;
  endpoint: string;
  healthy: boolean;
}
