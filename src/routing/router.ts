import type { AgentRuntime, AgentView } from '../registry/types.js';
import type { TenantRecord } from '../store/types.js';
import { CapabilityIndex, type CapabilityQuery, type MatchExplanation, type RankedAgent } from './capabilities/index.js';
import type { RoutingConfig, TenantRouting } from './config.js';

/** What the router reads of the registry. */
export interface RouterRegistry {
  findAgent(tenant: string, agent: string): AgentRuntime | undefined;
  getAgent(tenant: string, agent: string): AgentView | undefined;
  getTenant(name: string): TenantRecord | undefined;
  listTenants(): TenantRecord[];
  listAgents(tenant: string): AgentView[];
}

/** One agent the router considered, as explained to operators. */
export interface RouteCandidate {
  agent: string;
  skill?: string;
  score: number;
  confidence: number;
  /** The agent's load score (lower is better; see loadOf). */
  load: number;
  healthyEndpoints: number;
  /** Why it could not be chosen (policy, no healthy endpoint, protocol), if so. */
  excluded?: string;
  matched?: MatchExplanation;
}

export type RouteVia = 'intent' | 'tags' | 'default-agent';

export interface RouteChoice {
  agent: AgentRuntime;
  via: RouteVia;
  skill?: string;
  score: number;
  confidence: number;
  /** Next-best agents, in order, for failover when the chosen one cannot be reached. */
  alternatives: AgentRuntime[];
  candidates: RouteCandidate[];
}

export interface NoRoute {
  agent?: undefined;
  /** no_match: no skill matches; low_confidence: none well enough; not_eligible: the matches are excluded (policy, health, protocol). */
  reason: 'no_match' | 'low_confidence' | 'not_eligible';
  /** The closest skills, best first, to tell the caller what the tenant can do. */
  closest: RouteCandidate[];
  candidates: RouteCandidate[];
}

/** Why an agent cannot take this call, or undefined when it can (policy, protocol version). */
export type Eligibility = (agent: AgentRuntime) => string | undefined;

export interface RouterOptions {
  registry: RouterRegistry;
  config: () => RoutingConfig;
  /** Lower is better: how busy the agent is now (the balancer's view of its best endpoint). */
  loadOf?: (agent: AgentRuntime) => number;
  random?: () => number;
}

/** Default load: in-flight requests per healthy endpoint. */
export function inflightLoad(agent: AgentRuntime): number {
  let inflight = 0;
  let healthy = 0;
  for (const endpoint of agent.endpoints) {
    if (!endpoint.healthy) continue;
    healthy++;
    inflight += endpoint.inflight;
  }
  return healthy === 0 ? Number.POSITIVE_INFINITY : inflight / healthy;
}

const healthyCount = (agent: AgentRuntime) => agent.endpoints.reduce((n, endpoint) => n + (endpoint.healthy ? 1 : 0), 0);

/**
 * Capability and intent routing: keeps the capability index in step with the registry and picks,
 * for a query (message text and/or tags), the agent that should handle it. Agents that match about
 * equally well (within `tieMargin` of the best score) are chosen between by load (power of two
 * choices); the others follow as failover alternatives.
 */
export class CapabilityRouter {
  readonly index: CapabilityIndex;
  private readonly loadOf: (agent: AgentRuntime) => number;
  private readonly random: () => number;
  private synonymsKey: string;

  constructor(private readonly opts: RouterOptions) {
    this.synonymsKey = JSON.stringify(opts.config().synonyms);
    this.index = new CapabilityIndex({ synonyms: opts.config().synonyms });
    this.loadOf = opts.loadOf ?? inflightLoad;
    this.random = opts.random ?? Math.random;
  }

  /** Indexes every agent the registry holds (start, and after a synonym change). */
  syncAll(): void {
    for (const tenant of this.opts.registry.listTenants()) {
      for (const agent of this.opts.registry.listAgents(tenant.name)) this.syncAgent(tenant.name, agent.name);
    }
  }

  /** Re-reads one agent's skills (registry change, card fetched); removes it when it is gone. */
  syncAgent(tenant: string, name: string): void {
    const view = this.opts.registry.getAgent(tenant, name);
    if (!view) {
      this.index.removeAgent(tenant, name);
      return;
    }
    this.index.upsertAgent(tenant, name, view.skills, view.tags);
  }

  removeTenant(tenant: string): void {
    this.index.removeTenant(tenant);
  }

  /** A config reload: new synonyms apply to the next query (everything else is read per query). */
  reconfigure(): boolean {
    const key = JSON.stringify(this.opts.config().synonyms);
    if (key === this.synonymsKey) return false;
    this.synonymsKey = key;
    this.index.setSynonyms({ synonyms: this.opts.config().synonyms });
    return true;
  }

  tenantRouting(tenant: string): TenantRouting {
    return ((this.opts.registry.getTenant(tenant)?.spec as { routing?: TenantRouting } | undefined)?.routing ?? {}) as TenantRouting;
  }

  /** Picks the agent for a query, or says why none (with the closest skills). */
  route(tenant: string, query: CapabilityQuery, eligible: Eligibility): RouteChoice | NoRoute {
    const config = this.opts.config().intent;
    const own = this.tenantRouting(tenant);
    const minConfidence = own.minConfidence ?? config.minConfidence;
    const excluded = new Map<string, string>();
    const runtimes = new Map<string, AgentRuntime>();
    const ranked = this.index.rank(tenant, query, {
      limit: config.maxCandidates,
      candidates: (key) => {
        const agent = this.runtimeOf(key);
        if (!agent) return false;
        const why = healthyCount(agent) === 0 ? 'no healthy endpoint' : eligible(agent);
        if (why !== undefined) {
          excluded.set(key, why);
          return false;
        }
        runtimes.set(key, agent);
        return true;
      },
    });
    const textual = Boolean(query.text && query.text.trim());
    const usable = textual ? ranked.filter((entry) => entry.confidence >= minConfidence) : ranked;
    const candidates = ranked.map((entry) => this.candidate(entry, runtimes.get(entry.agentKey)!));
    if (usable.length === 0) {
      const fallback = own.defaultAgent ? this.opts.registry.findAgent(tenant, own.defaultAgent) : undefined;
      if (fallback && healthyCount(fallback) > 0 && eligible(fallback) === undefined) {
        return { agent: fallback, via: 'default-agent', score: 0, confidence: ranked[0]?.confidence ?? 0, alternatives: [], candidates };
      }
      const closest = ranked.length > 0 ? candidates.slice(0, 3) : this.closestIgnoringEligibility(tenant, query);
      const reason = ranked.length > 0 ? 'low_confidence' : excluded.size > 0 ? 'not_eligible' : 'no_match';
      return { reason, closest, candidates };
    }
    const best = usable[0]!;
    const margin = textual ? config.tieMargin : 1;
    const ties = usable.filter((entry) => entry.score >= best.score * (1 - margin));
    const chosen = this.powerOfTwo(ties, runtimes);
    const rest = [...ties.filter((entry) => entry !== chosen).sort((x, y) => this.loadOf(runtimes.get(x.agentKey)!) - this.loadOf(runtimes.get(y.agentKey)!)), ...usable.slice(ties.length)];
    return {
      agent: runtimes.get(chosen.agentKey)!,
      via: textual ? 'intent' : 'tags',
      skill: chosen.skillId,
      score: chosen.score,
      confidence: chosen.confidence,
      alternatives: rest.map((entry) => runtimes.get(entry.agentKey)!),
      candidates,
    };
  }

  /** Every candidate with its score, load and health, and what was excluded and why (operators' view). */
  explain(tenant: string, query: CapabilityQuery, eligible: Eligibility): { decision: RouteChoice | NoRoute; considered: RouteCandidate[] } {
    const decision = this.route(tenant, query, eligible);
    const considered = this.index.rank(tenant, query, { limit: Math.max(20, this.opts.config().intent.maxCandidates) }).map((entry) => {
      const agent = this.runtimeOf(entry.agentKey);
      const candidate = this.candidate(entry, agent);
      const why = !agent ? 'not registered' : healthyCount(agent) === 0 ? 'no healthy endpoint' : eligible(agent);
      return why === undefined ? candidate : { ...candidate, excluded: why };
    });
    return { decision, considered };
  }

  private closestIgnoringEligibility(tenant: string, query: CapabilityQuery): RouteCandidate[] {
    return this.index.rank(tenant, query, { limit: 3 }).map((entry) => this.candidate(entry, this.runtimeOf(entry.agentKey)));
  }

  private candidate(entry: RankedAgent, agent: AgentRuntime | undefined): RouteCandidate {
    return {
      agent: entry.agentKey,
      skill: entry.skillId,
      score: round(entry.score),
      confidence: round(entry.confidence),
      load: agent ? round(this.loadOf(agent)) : Number.POSITIVE_INFINITY,
      healthyEndpoints: agent ? healthyCount(agent) : 0,
      matched: entry.explanation,
    };
  }

  private runtimeOf(agentKey: string): AgentRuntime | undefined {
    const slash = agentKey.indexOf('/');
    return this.opts.registry.findAgent(agentKey.slice(0, slash), agentKey.slice(slash + 1));
  }

  private powerOfTwo(entries: RankedAgent[], runtimes: Map<string, AgentRuntime>): RankedAgent {
    if (entries.length === 1) return entries[0]!;
    const i = Math.floor(this.random() * entries.length);
    let j = Math.floor(this.random() * (entries.length - 1));
    if (j >= i) j++;
    const a = entries[i]!;
    const b = entries[j]!;
    return this.loadOf(runtimes.get(b.agentKey)!) < this.loadOf(runtimes.get(a.agentKey)!) ? b : a;
  }
}

const round = (value: number) => (Number.isFinite(value) ? Math.round(value * 1000) / 1000 : value);
