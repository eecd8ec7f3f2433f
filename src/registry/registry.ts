import { createHash } from 'node:crypto';
import type { Logger } from 'pino';
import { canonicalJson } from '../audit/record.js';
import { Agent as UndiciAgent, type Dispatcher } from 'undici';
import { agentSchema, nameSchema, type AgentConfig, type GatewayConfig, type HealthCheckConfig, type TenantConfig } from '../config/schema.js';
import type { AgentCardRecord, AgentRecord, AgentSettings, DurableStore, TenantRecord } from '../store/types.js';
import { cardSkills, jsonRpcInterfaces, jsonRpcPaths } from './card.js';
import { fetchAgentCard } from './card-fetch.js';
import { AgentChanges } from './changes.js';
import { Endpoint, normalizeEndpointUrl } from './endpoint.js';
import { HealthChecker } from './health.js';
import type { RateSpec } from '../tenancy/limits/index.js';
import {
  RegistryError,
  type AgentRuntime,
  type AgentSpec,
  type AgentView,
  type EndpointHealthSample,
  type EndpointState,
  type RegistryAdmin,
  type RegistryView,
  type SkillSummary,
} from './types.js';

export type CardsConfig = GatewayConfig['cards'];

export interface RegistryOptions {
  store: DurableStore;
  logger: Logger;
  healthDefaults: HealthCheckConfig;
  cards: CardsConfig;
  /**
   * Checks a tenant spec (policy, limits, masking) before it is stored; returns the problems as
   * `path: message` lines. Without it any object is accepted.
   */
  validateTenantSpec?: (tenant: string, spec: Record<string, unknown>) => string[];
  /** The client for an agent's https:// endpoints (mutual TLS with the gateway's certificate). */
  tlsDispatcher?: (tenant: string, agent: string) => Dispatcher | Promise<Dispatcher>;
}

interface AgentEntry {
  record: AgentRecord;
  runtime: AgentRuntime;
  endpoints: Endpoint[];
  cardTimer?: NodeJS.Timeout;
  cardFetch?: Promise<void>;
}

const keyOf = (tenant: string, agent: string) => `${tenant}/${agent}`;
const now = () => new Date().toISOString();
const sameList = (a: readonly string[], b: readonly string[]) => a.length === b.length && a.every((value, i) => value === b[i]);

/**
 * Tenants, agents and their endpoints: the durable records (in the store) and the runtime state the
 * data plane reads on every request (health, load, cards). Writes persist before they return.
 * Records from the config file are marked `source: config` and can only be changed by the file.
 */
export class Registry implements RegistryView, RegistryAdmin {
  private readonly store: DurableStore;
  private readonly logger: Logger;
  private healthDefaults: HealthCheckConfig;
  private cards: CardsConfig;
  private readonly tenants = new Map<string, TenantRecord>();
  private readonly agents = new Map<string, AgentEntry>();
  /** Each agent whose runtime was installed, replaced (a new record or card) or removed, or whose endpoint health changed. */
  readonly agentChanges = new AgentChanges();
  private readonly dispatcher = new UndiciAgent({ connections: 4, keepAliveTimeout: 10_000, pipelining: 1 });
  private readonly health: HealthChecker;
  private readonly changeListeners: Array<() => void> = [];
  private readonly tenantListeners: Array<(tenant: string) => Promise<void>> = [];
  private readonly tenantChangeListeners: Array<(tenant: string, record: TenantRecord | undefined) => void> = [];
  private readonly validateSpec: (tenant: string, spec: Record<string, unknown>) => string[];
  private readonly agentListeners: Array<(tenant: string, agent: string) => void> = [];
  private readonly tlsDispatcher: RegistryOptions['tlsDispatcher'];
  /** Which agent an endpoint belongs to (for its mTLS client). */
  private readonly owners = new WeakMap<Endpoint, { tenant: string; agent: string }>();
  private started = false;
  private stopped: Promise<void> | undefined;
  /** Serialises writes so concurrent API calls and reloads cannot interleave half-applied changes. */
  private writes: Promise<unknown> = Promise.resolve();

  constructor(options: RegistryOptions) {
    this.store = options.store;
    this.logger = options.logger;
    this.healthDefaults = options.healthDefaults;
    this.cards = options.cards;
    this.tlsDispatcher = options.tlsDispatcher;
    this.validateSpec = options.validateTenantSpec ?? (() => []);
    this.health = new HealthChecker((endpoint) => this.dispatcherFor(endpoint), this.logger, () => undefined);
  }

  // ---- lifecycle ---------------------------------------------------------------------------

  /** Reads every stored tenant, agent and card. */
  async load(): Promise<void> {
    for (const tenant of await this.store.listTenants()) this.tenants.set(tenant.name, tenant);
    const cards = new Map((await this.store.listAgentCards()).map((card) => [keyOf(card.tenant, card.agent), card]));
    for (const record of await this.store.listAgents()) {
      this.install(record, cards.get(keyOf(record.tenant, record.name)));
    }
  }

  /** Starts health checks and card refreshes. */
  start(): void {
    this.started = true;
    for (const entry of this.agents.values()) this.activate(entry, true);
  }

  stop(): Promise<void> {
    this.stopped ??= (async () => {
      this.started = false;
      this.health.stop();
      for (const entry of this.agents.values()) clearTimeout(entry.cardTimer);
      await this.writes.catch(() => undefined);
      await this.dispatcher.close();
    })();
    return this.stopped;
  }

  /** Called after endpoints were added or removed (the forwarder drops pools it no longer needs). */
  onEndpointsChanged(listener: () => void): void {
    this.changeListeners.push(listener);
  }

  /** Called (and awaited) before a new tenant is stored, e.g. to create its certificate authority. */
  onTenantAdded(listener: (tenant: string) => Promise<void>): void {
    this.tenantListeners.push(listener);
  }

  /**
   * Called when a tenant appears, its spec changes or it goes away (record undefined); only for that
   * tenant, so tenant-scoped state (policy, limits) is rebuilt for it alone.
   */
  onTenantChanged(listener: (tenant: string, record: TenantRecord | undefined) => void): void {
    this.tenantChangeListeners.push(listener);
  }

  /** Called after an agent was added, changed or removed. */
  onAgentChanged(listener: (tenant: string, agent: string) => void): void {
    this.agentListeners.push(listener);
  }

  /** The agents of a tenant that have their own rate limit (`limits` in their settings). */
  agentRateLimits(tenant: string): Map<string, RateSpec> {
    const limits = new Map<string, RateSpec>();
    for (const entry of this.agentsOf(tenant)) {
      const own = entry.record.settings?.limits;
      if (own) limits.set(entry.record.name, own as RateSpec);
    }
    return limits;
  }

  liveOrigins(): Set<string> {
    const origins = new Set<string>();
    for (const entry of this.agents.values()) for (const endpoint of entry.endpoints) origins.add(endpoint.origin);
    return origins;
  }

  updateDefaults(healthDefaults: HealthCheckConfig, cards: CardsConfig): void {
    const intervalChanged = healthDefaults.intervalMs !== this.healthDefaults.intervalMs || healthDefaults.enabled !== this.healthDefaults.enabled;
    this.healthDefaults = healthDefaults;
    this.cards = cards;
    if (intervalChanged) for (const entry of this.agents.values()) for (const endpoint of entry.endpoints) this.health.restart(endpoint);
  }

  /**
   * Makes the registry match the config file's tenants and agents. Only what changed is touched:
   * an unchanged agent keeps its endpoints' health and in-flight state, and its requests.
   */
  applyConfig(tenants: readonly TenantConfig[]): Promise<void> {
    return this.serialized(async () => {
      const wanted = new Map(tenants.map((tenant) => [tenant.name, tenant]));
      for (const tenant of tenants) {
        const existing = this.tenants.get(tenant.name);
        const spec = tenantSpecOf(tenant);
        if (!existing || existing.source !== 'config' || !sameSpec(existing.spec, spec)) {
          await this.saveTenant({
            name: tenant.name,
            source: 'config',
            ...(spec ? { spec } : {}),
            createdAt: existing?.createdAt ?? now(),
            updatedAt: now(),
          });
        }
        const names = new Set(tenant.agents.map((agent) => agent.name));
        for (const agent of tenant.agents) {
          const current = this.agents.get(keyOf(tenant.name, agent.name))?.record;
          const record: AgentRecord = {
            tenant: tenant.name,
            name: agent.name,
            endpoints: agent.endpoints.map(normalizeEndpointUrl),
            tags: agent.tags,
            ...(agent.healthCheck ? { healthCheck: agent.healthCheck } : {}),
            ...settingsOf(agent),
            source: 'config',
            createdAt: current?.createdAt ?? now(),
            updatedAt: now(),
          };
          if (current && current.source === 'config' && sameRecord(current, record)) continue;
          await this.saveAgent(record);
        }
        for (const entry of [...this.agents.values()]) {
          if (entry.record.tenant === tenant.name && entry.record.source === 'config' && !names.has(entry.record.name)) {
            await this.removeAgent(entry);
          }
        }
      }
      for (const tenant of [...this.tenants.values()]) {
        if (tenant.source !== 'config' || wanted.has(tenant.name)) continue;
        for (const entry of [...this.agents.values()]) {
          if (entry.record.tenant === tenant.name && entry.record.source === 'config') await this.removeAgent(entry);
        }
        if (this.agentsOf(tenant.name).length === 0) await this.removeTenant(tenant.name);
        // Agents created through the API live on: the tenant is handed over to the API.
        else await this.saveTenant({ ...tenant, source: 'api', updatedAt: now() });
      }
    });
  }

  // ---- the data plane's view ---------------------------------------------------------------

  findAgent(tenant: string, agent: string): AgentRuntime | undefined {
    return this.agents.get(keyOf(tenant, agent))?.runtime;
  }

  /** findAgent by the agent's key (`tenant/name`, AgentRuntime.key) without building it again. */
  findAgentByKey(key: string): AgentRuntime | undefined {
    return this.agents.get(key)?.runtime;
  }

  hasTenant(tenant: string): boolean {
    return this.tenants.has(tenant);
  }

  reportFailure(endpoint: EndpointState, reason: string): void {
    const ep = endpoint as Endpoint;
    if (ep.recordFailure(reason)) {
      this.logger.warn({ endpoint: ep.url, reason }, 'endpoint marked unhealthy after failed requests');
      this.health.passivelyEjected(ep);
    }
  }

  reportSuccess(endpoint: EndpointState): void {
    if (endpoint.consecutiveFailures !== 0) endpoint.consecutiveFailures = 0;
  }

  /** Every agent as the data plane sees it. */
  runtimes(): AgentRuntime[] {
    return Array.from(this.agents.values(), (entry) => entry.runtime);
  }

  endpointHealth(): EndpointHealthSample[] {
    const samples: EndpointHealthSample[] = [];
    for (const entry of this.agents.values()) {
      for (const endpoint of entry.endpoints) {
        samples.push({ tenant: entry.record.tenant, agent: entry.record.name, endpoint: endpoint.url, healthy: endpoint.healthy });
      }
    }
    return samples;
  }

  // ---- the Admin API's view ----------------------------------------------------------------

  listTenants(): TenantRecord[] {
    return [...this.tenants.values()].sort((a, b) => a.name.localeCompare(b.name));
  }

  getTenant(name: string): TenantRecord | undefined {
    return this.tenants.get(name);
  }

  createTenant(name: string, spec?: Record<string, unknown>): Promise<TenantRecord> {
    return this.serialized(async () => {
      const valid = nameSchema.safeParse(name);
      if (!valid.success) throw new RegistryError('invalid', `tenant name: ${valid.error.issues[0]!.message}`);
      if (this.tenants.has(name)) throw new RegistryError('conflict', `tenant "${name}" already exists`);
      if (spec) this.checkSpec(name, spec);
      const record: TenantRecord = { name, source: 'api', ...(spec ? { spec } : {}), createdAt: now(), updatedAt: now() };
      await this.saveTenant(record);
      return record;
    });
  }

  setTenantSpec(name: string, spec: Record<string, unknown>): Promise<TenantRecord> {
    return this.serialized(async () => {
      const tenant = this.requireTenant(name);
      if (tenant.source === 'config') throw managedByConfig(`tenant "${name}"`);
      this.checkSpec(name, spec);
      const record: TenantRecord = { ...tenant, spec, updatedAt: now() };
      await this.saveTenant(record);
      return record;
    });
  }

  private checkSpec(tenant: string, spec: Record<string, unknown>): void {
    const problems = this.validateSpec(tenant, spec);
    if (problems.length > 0) throw new RegistryError('invalid', problems.join('; '));
  }

  deleteTenant(name: string): Promise<void> {
    return this.serialized(async () => {
      const tenant = this.requireTenant(name);
      if (tenant.source === 'config') throw managedByConfig(`tenant "${name}"`);
      for (const entry of this.agentsOf(name)) await this.removeAgent(entry);
      await this.removeTenant(name);
    });
  }

  listAgents(tenant: string): AgentView[] {
    this.requireTenant(tenant);
    return this.agentsOf(tenant)
      .sort((a, b) => a.record.name.localeCompare(b.record.name))
      .map((entry) => viewOf(entry));
  }

  getAgent(tenant: string, agent: string): AgentView | undefined {
    const entry = this.agents.get(keyOf(tenant, agent));
    return entry && viewOf(entry);
  }

  createAgent(tenant: string, name: string, spec: AgentSpec): Promise<AgentView> {
    return this.serialized(async () => {
      this.requireTenant(tenant);
      if (this.agents.has(keyOf(tenant, name))) throw new RegistryError('conflict', `agent "${name}" already exists in tenant "${tenant}"`);
      const entry = await this.saveAgent(this.apiRecord(tenant, name, spec));
      return viewOf(entry);
    });
  }

  putAgent(tenant: string, name: string, spec: AgentSpec): Promise<[AgentView, boolean]> {
    return this.serialized(async () => {
      this.requireTenant(tenant);
      const existing = this.agents.get(keyOf(tenant, name));
      if (existing?.record.source === 'config') throw managedByConfig(`agent "${tenant}/${name}"`);
      const record = this.apiRecord(tenant, name, spec, existing?.record.createdAt);
      const entry = existing && sameRecord(existing.record, record) ? existing : await this.saveAgent(record);
      return [viewOf(entry), !existing];
    });
  }

  deleteAgent(tenant: string, agent: string): Promise<void> {
    return this.serialized(async () => {
      this.requireTenant(tenant);
      const entry = this.agents.get(keyOf(tenant, agent));
      if (!entry) throw new RegistryError('not_found', `unknown agent "${agent}" in tenant "${tenant}"`);
      if (entry.record.source === 'config') throw managedByConfig(`agent "${tenant}/${agent}"`);
      await this.removeAgent(entry);
    });
  }

  async refreshCard(tenant: string, agent: string): Promise<AgentView> {
    const entry = this.agents.get(keyOf(tenant, agent));
    if (!entry) throw new RegistryError('not_found', `unknown agent "${agent}" in tenant "${tenant}"`);
    await this.fetchCard(entry);
    const fresh = this.agents.get(keyOf(tenant, agent));
    if (!fresh) throw new RegistryError('not_found', `agent "${tenant}/${agent}" was removed`);
    return viewOf(fresh);
  }

  // ---- internals ---------------------------------------------------------------------------

  private dispatcherFor(endpoint: Endpoint): Dispatcher | Promise<Dispatcher> {
    const owner = this.owners.get(endpoint);
    return endpoint.tls && this.tlsDispatcher && owner ? this.tlsDispatcher(owner.tenant, owner.agent) : this.dispatcher;
  }

  private serialized<T>(work: () => Promise<T>): Promise<T> {
    const run = this.writes.then(work, work);
    this.writes = run.catch(() => undefined);
    return run;
  }

  private requireTenant(name: string): TenantRecord {
    const tenant = this.tenants.get(name);
    if (!tenant) throw new RegistryError('not_found', `unknown tenant "${name}"`);
    return tenant;
  }

  private agentsOf(tenant: string): AgentEntry[] {
    return [...this.agents.values()].filter((entry) => entry.record.tenant === tenant);
  }

  private apiRecord(tenant: string, name: string, spec: AgentSpec, createdAt?: string): AgentRecord {
    const parsed = agentSchema.safeParse({
      name,
      endpoints: spec.endpoints,
      tags: spec.tags ?? [],
      healthCheck: spec.healthCheck,
      clearances: spec.clearances,
      dataTags: spec.dataTags,
      limits: spec.limits,
      skills: spec.skills,
      loadPoll: spec.loadPoll,
    });
    if (!parsed.success) {
      const issue = parsed.error.issues[0]!;
      throw new RegistryError('invalid', `${issue.path.join('.') || 'agent'}: ${issue.message}`);
    }
    const agent = parsed.data;
    return {
      tenant,
      name: agent.name,
      endpoints: [...new Set(agent.endpoints.map(normalizeEndpointUrl))],
      tags: agent.tags,
      ...(agent.healthCheck ? { healthCheck: agent.healthCheck } : {}),
      ...settingsOf(agent),
      source: 'api',
      createdAt: createdAt ?? now(),
      updatedAt: now(),
    };
  }

  private healthSettings(record: AgentRecord): () => HealthCheckConfig {
    return () => (record.healthCheck ? { ...this.healthDefaults, ...record.healthCheck } : this.healthDefaults);
  }

  private async saveTenant(record: TenantRecord): Promise<void> {
    const previous = this.tenants.get(record.name);
    if (!previous) for (const listener of this.tenantListeners) await listener(record.name);
    await this.store.putTenant(record);
    this.tenants.set(record.name, record);
    if (!previous || !sameSpec(previous.spec, record.spec)) this.notifyTenantChanged(record.name, record);
  }

  private notifyTenantChanged(name: string, record: TenantRecord | undefined): void {
    for (const listener of this.tenantChangeListeners) {
      try {
        listener(name, record);
      } catch (err) {
        this.logger.error({ err, tenant: name }, 'tenant change listener failed');
      }
    }
  }

  private async removeTenant(name: string): Promise<void> {
    await this.store.deleteTenant(name);
    this.tenants.delete(name);
    this.notifyTenantChanged(name, undefined);
  }

  private async saveAgent(record: AgentRecord): Promise<AgentEntry> {
    const previous = this.agents.get(keyOf(record.tenant, record.name));
    await this.store.putAgent(record);
    const keepCard = previous?.runtime.card && sameList(previous.record.endpoints, record.endpoints) ? previous.runtime.card : undefined;
    if (previous && !keepCard && previous.runtime.card) await this.store.deleteAgentCard(record.tenant, record.name);
    const entry = this.install(record, keepCard, previous);
    if (this.started) this.activate(entry, !keepCard);
    this.notifyAgentChanged(record.tenant, record.name);
    return entry;
  }

  private async removeAgent(entry: AgentEntry): Promise<void> {
    await this.store.deleteAgent(entry.record.tenant, entry.record.name);
    this.agents.delete(keyOf(entry.record.tenant, entry.record.name));
    this.agentChanges.record(keyOf(entry.record.tenant, entry.record.name));
    clearTimeout(entry.cardTimer);
    for (const endpoint of entry.endpoints) this.health.unwatch(endpoint);
    this.notifyEndpointsChanged();
    this.notifyAgentChanged(entry.record.tenant, entry.record.name);
  }

  private notifyAgentChanged(tenant: string, agent: string): void {
    for (const listener of this.agentListeners) {
      try {
        listener(tenant, agent);
      } catch (err) {
        this.logger.error({ err, tenant, agent }, 'agent change listener failed');
      }
    }
  }

  /**
   * Builds the runtime for a record. Endpoints that stay keep their state (health, in-flight count),
   * so updating an agent's tags or adding a replica does not disturb traffic to the others.
   */
  private install(record: AgentRecord, card: AgentCardRecord | undefined, previous?: AgentEntry): AgentEntry {
    const settings = this.healthSettings(record);
    const reusable = new Map((previous?.endpoints ?? []).map((endpoint) => [endpoint.url, endpoint]));
    const endpoints = record.endpoints.map((url) => {
      const kept = reusable.get(url);
      if (kept && sameHealth(previous!.record, record)) {
        reusable.delete(url);
        return kept;
      }
      const agentKey = keyOf(record.tenant, record.name);
      const endpoint = new Endpoint(url, settings, () => this.agentChanges.record(agentKey));
      this.owners.set(endpoint, { tenant: record.tenant, agent: record.name });
      return endpoint;
    });
    for (const stale of reusable.values()) this.health.unwatch(stale);
    if (previous && !sameHealth(previous.record, record)) for (const endpoint of previous.endpoints) this.health.unwatch(endpoint);
    const entry: AgentEntry = {
      record,
      endpoints,
      runtime: buildRuntime(record, endpoints, card, previous?.runtime.rrCursor ?? 0),
      ...(previous?.cardTimer ? { cardTimer: previous.cardTimer } : {}),
    };
    this.agents.set(keyOf(record.tenant, record.name), entry);
    this.agentChanges.record(keyOf(record.tenant, record.name));
    if (previous) this.notifyEndpointsChanged();
    return entry;
  }

  private activate(entry: AgentEntry, fetchCardNow: boolean): void {
    for (const endpoint of entry.endpoints) this.health.watch(endpoint);
    if (fetchCardNow) void this.fetchCard(entry);
    else this.scheduleCardRefresh(entry);
  }

  private scheduleCardRefresh(entry: AgentEntry): void {
    clearTimeout(entry.cardTimer);
    if (!this.started) return;
    const key = keyOf(entry.record.tenant, entry.record.name);
    entry.cardTimer = setTimeout(() => {
      const current = this.agents.get(key);
      if (current) void this.fetchCard(current);
    }, this.cards.refreshIntervalMs * (0.9 + Math.random() * 0.2));
    entry.cardTimer.unref();
  }

  /** One fetch per agent at a time; concurrent callers share it. */
  private fetchCard(entry: AgentEntry): Promise<void> {
    entry.cardFetch ??= this.doFetchCard(entry).finally(() => {
      entry.cardFetch = undefined;
      const current = this.agents.get(keyOf(entry.record.tenant, entry.record.name));
      if (current) {
        current.cardFetch = undefined;
        this.scheduleCardRefresh(current);
      }
    });
    return entry.cardFetch;
  }

  private async doFetchCard(entry: AgentEntry): Promise<void> {
    const { tenant, name } = entry.record;
    const held = entry.runtime.card;
    const result = await fetchAgentCard((endpoint) => this.dispatcherFor(endpoint), entry.endpoints, {
      timeoutMs: this.cards.fetchTimeoutMs,
      maxBytes: this.cards.maxBytes,
      ...(held?.etag ? { etag: held.etag } : {}),
    });
    const current = this.agents.get(keyOf(tenant, name));
    if (!current || current.record !== entry.record) return; // replaced or removed meanwhile
    await this.serialized(async () => {
      if (this.agents.get(keyOf(tenant, name)) !== current) return;
      switch (result.kind) {
        case 'card': {
          const record: AgentCardRecord = {
            tenant,
            agent: name,
            sourceUrl: result.sourceUrl,
            card: result.card,
            ...(result.etag ? { etag: result.etag } : {}),
            fetchedAt: now(),
          };
          await this.store.putAgentCard(record);
          current.runtime = buildRuntime(current.record, current.endpoints, record, current.runtime.rrCursor);
          this.agentChanges.record(keyOf(tenant, name));
          this.logger.debug({ tenant, agent: name, skills: cardSkills(record.card).length }, 'agent card stored');
          // Skills feed routing and policy: a card that changed is an agent that changed.
          if (!held || JSON.stringify(held.card) !== JSON.stringify(record.card)) this.notifyAgentChanged(tenant, name);
          break;
        }
        case 'none':
          if (held) {
            await this.store.deleteAgentCard(tenant, name);
            current.runtime = buildRuntime(current.record, current.endpoints, undefined, current.runtime.rrCursor);
            this.agentChanges.record(keyOf(tenant, name));
            this.notifyAgentChanged(tenant, name);
          }
          break;
        case 'error':
          this.logger.debug({ tenant, agent: name, reason: result.message }, 'agent card fetch failed; keeping what we had');
          break;
        case 'not-modified':
          break;
      }
    });
  }

  private notifyEndpointsChanged(): void {
    for (const listener of this.changeListeners) {
      try {
        listener();
      } catch (err) {
        this.logger.error({ err }, 'endpoint change listener failed');
      }
    }
  }
}

function buildRuntime(record: AgentRecord, endpoints: Endpoint[], card: AgentCardRecord | undefined, rrCursor: number): AgentRuntime {
  return {
    tenant: record.tenant,
    name: record.name,
    key: keyOf(record.tenant, record.name),
    endpoints,
    tags: record.tags,
    clearances: record.settings?.clearances ?? NO_STRINGS,
    dataTags: record.settings?.dataTags ?? NO_STRINGS,
    skills: agentSkills(record, card).map((skill) => ({ id: skill.id, tags: skill.tags })),
    ...(card ? { card } : {}),
    jsonRpcPaths: jsonRpcPaths(card?.card, record.endpoints),
    a2aInterfaces: jsonRpcInterfaces(card?.card, record.endpoints),
    loadPoll: record.settings?.loadPoll,
    rrCursor,
  };
}

function viewOf(entry: AgentEntry): AgentView {
  const card = entry.runtime.card;
  return {
    ...entry.record,
    endpointStatus: entry.endpoints.map((endpoint) => endpoint.status()),
    ...(card
      ? {
          card: {
            sourceUrl: card.sourceUrl,
            fetchedAt: card.fetchedAt,
            ...(typeof card.card.name === 'string' ? { name: card.card.name } : {}),
            skills: cardSkills(card.card),
            digest: cardDigest(card.card),
          },
        }
      : {}),
    skills: agentSkills(entry.record, card),
  };
}

const digests = new WeakMap<object, string>();

/** Cached per card object (a card is replaced, never changed in place). */
function cardDigest(card: Record<string, unknown>): string {
  let digest = digests.get(card);
  if (digest === undefined) {
    digest = createHash('sha256').update(canonicalJson(card)).digest('hex');
    digests.set(card, digest);
  }
  return digest;
}

/** The card's skills, then the configured ones whose id the card does not have. */
export function agentSkills(record: AgentRecord, card: AgentCardRecord | undefined): SkillSummary[] {
  const fromCard = card ? cardSkills(card.card) : [];
  const configured = record.settings?.skills;
  if (!configured?.length) return fromCard;
  const ids = new Set(fromCard.map((skill) => skill.id));
  for (const skill of configured) {
    if (!ids.has(skill.id)) fromCard.push({ ...skill, name: skill.name ?? skill.id });
  }
  return fromCard;
}

function sameHealth(a: AgentRecord, b: AgentRecord): boolean {
  return JSON.stringify(a.healthCheck ?? null) === JSON.stringify(b.healthCheck ?? null);
}

function sameRecord(a: AgentRecord, b: AgentRecord): boolean {
  return (
    a.source === b.source &&
    sameList(a.endpoints, b.endpoints) &&
    sameList(a.tags, b.tags) &&
    sameHealth(a, b) &&
    JSON.stringify(a.settings ?? null) === JSON.stringify(b.settings ?? null)
  );
}

const NO_STRINGS: readonly string[] = Object.freeze([]);

/** The tenancy fields of a config tenant (everything but its name, agents and OAuth issuers). */
function tenantSpecOf(tenant: TenantConfig): Record<string, unknown> | undefined {
  const { name: _name, agents: _agents, oauth: _oauth, ...spec } = tenant;
  const defined = Object.fromEntries(Object.entries(spec).filter(([, value]) => value !== undefined));
  return Object.keys(defined).length > 0 ? defined : undefined;
}

function sameSpec(a: Record<string, unknown> | undefined, b: Record<string, unknown> | undefined): boolean {
  return JSON.stringify(a ?? null) === JSON.stringify(b ?? null);
}

function settingsOf(agent: AgentConfig): { settings?: AgentSettings } {
  const settings: AgentSettings = {
    ...(agent.clearances?.length ? { clearances: agent.clearances } : {}),
    ...(agent.dataTags?.length ? { dataTags: agent.dataTags } : {}),
    ...(agent.limits ? { limits: agent.limits as Record<string, unknown> } : {}),
    ...(agent.skills?.length ? { skills: agent.skills } : {}),
    ...(agent.loadPoll !== undefined ? { loadPoll: agent.loadPoll } : {}),
  };
  return Object.keys(settings).length > 0 ? { settings } : {};
}

function managedByConfig(what: string): RegistryError {
  return new RegistryError('managed_by_config', `${what} is defined in the config file; change it there`);
}
