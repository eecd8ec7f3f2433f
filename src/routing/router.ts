import type { AgentRuntime, AgentView } from '../registry/types.js';
import type { TenantRecord } from '../store/types.js';
import { CapabilityIndex, type CapabilityQuery, type MatchExplanation, type ScoringCandidate } from './capabilities/index.js';
import type { RoutingConfig, ScorerConfig, TenantRouting } from './config.js';
import { buildScorers, countLexicalFallback, runScorer, ScorerFailureLog, type ConfiguredScorer, type ScorerOutcome, type WarnLogger } from './semantic/index.js';
import { VerdictCache, type AgentChangeFeed, type ContextVerdicts, type VerdictContext } from './verdicts.js';

export type { VerdictContext } from './verdicts.js';

export { scorerCounters } from './semantic/index.js';

/** What the router reads of the registry. */
export interface RouterRegistry {
  findAgent(tenant: string, agent: string): AgentRuntime | undefined;
  /** findAgent by AgentRuntime.key (`tenant/name`), as the capability index names agents. */
  findAgentByKey(key: string): AgentRuntime | undefined;
  getAgent(tenant: string, agent: string): AgentView | undefined;
  getTenant(name: string): TenantRecord | undefined;
  listTenants(): TenantRecord[];
  listAgents(tenant: string): AgentView[];
}

/** One agent the router considered, as explained to operators. */
export interface RouteCandidate {
  agent: string;
  skill?: string | undefined;
  score: number;
  confidence: number;
  /** The agent's load score (lower is better; see loadOf). */
  load: number;
  healthyEndpoints: number;
  /** Why it could not be chosen (policy, no healthy endpoint, protocol), if so. */
  excluded?: string | undefined;
  matched?: MatchExplanation | undefined;
  /** With semantic scorers: each scorer's score in [0, 1] by name (`lexical` included); `confidence` is then their blend. */
  scores?: Record<string, number> | undefined;
}

/** How a configured semantic scorer took part in a decision. */
export interface ScorerReport {
  name: string;
  weight: number;
  ok: boolean;
  ms: number;
  /** Why it gave no scores (the decision was then lexical only). */
  error?: string;
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
  /** The semantic scorers of the decision, when configured (see routeScored). */
  scorers?: ScorerReport[];
}

export interface NoRoute {
  agent?: undefined;
  /** no_match: no skill matches; low_confidence: none well enough; not_eligible: the matches are excluded (policy, health, protocol). */
  reason: 'no_match' | 'low_confidence' | 'not_eligible';
  /** The closest skills, best first, to tell the caller what the tenant can do. */
  closest: RouteCandidate[];
  candidates: RouteCandidate[];
  scorers?: ScorerReport[];
}

/** Why an agent cannot take this call, or undefined when it can (policy, protocol version). */
export type Eligibility = (agent: AgentRuntime) => string | undefined;

export interface RouterOptions {
  registry: RouterRegistry;
  config: () => RoutingConfig;
  /** Lower is better: how busy the agent is now (the balancer's view of its best endpoint). */
  loadOf?: (agent: AgentRuntime) => number;
  random?: () => number;
  /** Where scorer failures are logged (at warn, rate-limited). */
  logger?: WarnLogger;
  /** Where a scorer's `apiKeyEnv` is looked up (default process.env). */
  env?: Readonly<Record<string, string | undefined>>;
  /**
   * A number that grows whenever the eligibility of a call into `tenant` by a caller of
   * `callerTenant` may change but for one agent's own change (the policies of both tenants; see
   * src/routing/verdicts.ts). With it, decisions given a `context` keep their verdicts until it
   * moves, or until `agentChanges` lists the agent; without it, every decision asks again.
   */
  eligibilityEpoch?: (tenant: string, callerTenant: string | undefined) => number;
  /**
   * The agents whose runtime or endpoint health changed (the registry's feed). Required with
   * eligibilityEpoch unless the epoch also moves on every such change.
   */
  agentChanges?: AgentChangeFeed;
}

/** A ranked agent as a decision sees it: lexical, or blended with semantic scorers. */
interface Entry {
  readonly agentKey: string;
  /** The best-matching skill (lexically); none for an agent only a semantic scorer matched. */
  readonly skillId?: string;
  /** The BM25F score (0 when not matched lexically). */
  readonly score: number;
  /** Lexical confidence, or the blended one when `scores` is set. */
  readonly confidence: number;
  readonly explanation?: MatchExplanation;
  readonly scores?: Record<string, number>;
}

/** The agents a decision may choose (healthy, eligible) and why others were not. */
interface Gate {
  readonly excluded: Map<string, string>;
  readonly runtimes: Map<string, AgentRuntime>;
  readonly accept: (agentKey: string, slot: number) => boolean;
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

function healthyCount(agent: AgentRuntime): number {
  let healthy = 0;
  for (const endpoint of agent.endpoints) if (endpoint.healthy) healthy++;
  return healthy;
}

/** A decision and every candidate considered, for operators. */
export interface RouteExplanation {
  decision: RouteChoice | NoRoute;
  considered: RouteCandidate[];
}

const NO_SCORERS: readonly ScorerConfig[] = [];

/**
 * A RouteCandidate whose `matched`, load and health are computed when read (an explanation, the
 * JSON of one, the top candidates of a routed request's audit record): a decision alone reads few. A class with a getter, not a getter in an object literal (which
 * makes a dictionary-mode object whose accessor keeps the decision's objects alive through minor
 * GCs) nor Object.defineProperty per candidate (~0.2 µs each).
 */
class Candidate implements RouteCandidate {
  readonly agent: string;
  readonly skill: string | undefined;
  readonly score: number;
  readonly confidence: number;
  readonly excluded: string | undefined;
  readonly scores: Record<string, number> | undefined;
  readonly #entry: Entry;
  readonly #runtime: AgentRuntime | undefined;
  readonly #loadOf: (agent: AgentRuntime) => number;
  #load: number | undefined;
  #healthyEndpoints: number | undefined;

  constructor(entry: Entry, runtime: AgentRuntime | undefined, loadOf: (agent: AgentRuntime) => number, excluded?: string) {
    this.agent = entry.agentKey;
    this.skill = entry.skillId;
    this.score = round(entry.score);
    this.confidence = round(entry.confidence);
    this.excluded = excluded;
    this.scores = entry.scores;
    this.#entry = entry;
    this.#runtime = runtime;
    this.#loadOf = loadOf;
  }

  /** The agent's load as first read (most decisions read it for the first few candidates only). */
  get load(): number {
    this.#load ??= this.#runtime ? round(this.#loadOf(this.#runtime)) : Number.POSITIVE_INFINITY;
    return this.#load;
  }

  get healthyEndpoints(): number {
    this.#healthyEndpoints ??= this.#runtime ? healthyCount(this.#runtime) : 0;
    return this.#healthyEndpoints;
  }

  get matched(): MatchExplanation | undefined {
    return this.#entry.explanation;
  }

  toJSON(): Record<string, unknown> {
    const { agent, skill, score, confidence, load, healthyEndpoints, excluded, matched, scores } = this;
    return {
      agent,
      ...(skill !== undefined ? { skill } : {}),
      score,
      confidence,
      load,
      healthyEndpoints,
      ...(excluded !== undefined ? { excluded } : {}),
      ...(matched !== undefined ? { matched } : {}),
      ...(scores !== undefined ? { scores } : {}),
    };
  }
}

/**
 * Capability and intent routing: keeps the capability index in step with the registry and picks,
 * for a query (message text and/or tags), the agent that should handle it. Agents that match about
 * equally well (within `tieMargin` of the best score) are chosen between by load (power of two
 * choices); the others follow as failover alternatives. route() is lexical and synchronous;
 * routeScored() blends in the configured semantic scorers.
 */
export class CapabilityRouter {
  readonly index: CapabilityIndex;
  private readonly loadOf: (agent: AgentRuntime) => number;
  private readonly random: () => number;
  private readonly failureLog: ScorerFailureLog;
  private synonymsKey: string;
  /** The scorers built for the configuration last seen (by reference, then by content). */
  private scorerConfigs: readonly ScorerConfig[] = NO_SCORERS;
  private scorersKey = '[]';
  private configured: readonly ConfiguredScorer[] = [];
  private readonly verdicts: VerdictCache | undefined;

  constructor(private readonly opts: RouterOptions) {
    this.synonymsKey = JSON.stringify(opts.config().synonyms);
    this.index = new CapabilityIndex({ synonyms: opts.config().synonyms });
    this.loadOf = opts.loadOf ?? inflightLoad;
    this.random = opts.random ?? Math.random;
    this.failureLog = new ScorerFailureLog(opts.logger);
    const epoch = opts.eligibilityEpoch;
    // The index's slots name the agents whose verdicts are kept: its changes move the stamp too.
    this.verdicts =
      epoch &&
      new VerdictCache(
        (tenant, callerTenant) => epoch(tenant, callerTenant) + this.index.versionOf(tenant),
        opts.agentChanges,
        (tenant, agent) => this.index.slotOf(tenant, agent),
      );
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
    this.verdicts?.removeTenant(tenant);
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

  /**
   * Picks the agent for a query by the lexical ranking alone, or says why none (with the closest
   * skills). `context.key` names everything `eligible` depends on besides the agent (caller, labels,
   * method, path or protocol, data tags), and `context.callerTenant` the caller's tenant: its
   * verdicts are then kept across decisions (see eligibilityEpoch). Two calls with one context key
   * must be given equivalent `eligible` functions.
   */
  route(tenant: string, query: CapabilityQuery, eligible: Eligibility, context?: VerdictContext): RouteChoice | NoRoute {
    const gate = this.gate(eligible, this.verdicts?.open(tenant, context));
    const ranked = this.index.rank(tenant, query, { limit: this.opts.config().intent.maxCandidates, candidates: gate.accept });
    return this.decide(tenant, query, eligible, ranked, gate, false);
  }

  /**
   * route() with the configured semantic scorers (`routing.scorers`) blended in. Without scorers
   * (the default) or without query text, this is route(), synchronously. Otherwise a promise that
   * never rejects because of a scorer: a scorer that fails or misses its deadline makes this
   * decision lexical only (counted, see scorerCounters(), and logged at warn).
   */
  routeScored(tenant: string, query: CapabilityQuery, eligible: Eligibility, context?: VerdictContext): RouteChoice | NoRoute | Promise<RouteChoice | NoRoute> {
    const scorers = this.scorers();
    if (scorers.length === 0 || !query.text?.trim()) return this.route(tenant, query, eligible, context);
    return this.routeBlended(tenant, query, eligible, scorers, context).then(({ decision }) => decision);
  }

  /** Every candidate with its score, load and health, and what was excluded and why (operators' view); lexical only. */
  explain(tenant: string, query: CapabilityQuery, eligible: Eligibility): RouteExplanation {
    return { decision: this.route(tenant, query, eligible), considered: this.considered(tenant, query, eligible) };
  }

  /** explain() of routeScored(): with scorers, the candidates they scored come first, with each scorer's score. */
  explainScored(tenant: string, query: CapabilityQuery, eligible: Eligibility): RouteExplanation | Promise<RouteExplanation> {
    const scorers = this.scorers();
    if (scorers.length === 0 || !query.text?.trim()) return this.explain(tenant, query, eligible);
    return this.routeBlended(tenant, query, eligible, scorers).then(({ decision, pool }) => {
      const lexical = this.considered(tenant, query, eligible);
      if (pool.length === 0) return { decision, considered: lexical };
      const scored = new Set(pool.map((entry) => entry.agentKey));
      return {
        decision,
        considered: [...pool.map((entry) => this.candidate(entry, this.runtimeOf(entry.agentKey))), ...lexical.filter((candidate) => !scored.has(candidate.agent))],
      };
    });
  }

  /**
   * The lexical ranking picks the candidates: the best eligible ones, then (when fewer match) other
   * eligible agents of the tenant, as many as the largest of maxCandidates and the scorers'. The
   * scorers score them concurrently; confidence = lexical confidence x (1 - sum of the scorers'
   * weights) + sum of weight x score; the decision then runs on that confidence.
   */
  private async routeBlended(
    tenant: string,
    query: CapabilityQuery,
    eligible: Eligibility,
    scorers: readonly ConfiguredScorer[],
    context?: VerdictContext,
  ): Promise<{ decision: RouteChoice | NoRoute; pool: Entry[] }> {
    const { maxCandidates } = this.opts.config().intent;
    const gate = this.gate(eligible, this.verdicts?.open(tenant, context));
    const poolSize = scorers.reduce((size, scorer) => Math.max(size, scorer.maxCandidates), maxCandidates);
    const pool: Entry[] = this.index.rank(tenant, query, { limit: poolSize, candidates: gate.accept });
    if (pool.length < poolSize) {
      const ranked = new Set(pool.map((entry) => entry.agentKey));
      for (const agent of this.index.agentsOf(tenant, query.tags)) {
        if (pool.length >= poolSize) break;
        if (ranked.has(agent.agentKey) || gate.excluded.has(agent.agentKey) || !gate.accept(agent.agentKey, agent.slot)) continue;
        pool.push({ agentKey: agent.agentKey, score: 0, confidence: 0 });
      }
    }
    if (pool.length === 0) return { decision: this.decide(tenant, query, eligible, pool, gate, false), pool };

    const candidates = pool.map((entry) => this.scoringCandidate(tenant, entry.agentKey));
    const outcomes = await Promise.all(scorers.map((scorer) => runScorer(scorer, tenant, query, candidates.slice(0, scorer.maxCandidates))));
    const reports = outcomes.map(reportOf);
    if (outcomes.some((outcome) => !outcome.ok)) {
      for (const outcome of outcomes) if (!outcome.ok) this.failureLog.report(outcome, tenant);
      countLexicalFallback();
      return { decision: { ...this.route(tenant, query, eligible, context), scorers: reports }, pool: [] };
    }

    const lexicalWeight = Math.max(0, 1 - scorers.reduce((sum, scorer) => sum + scorer.weight, 0));
    const blended: Entry[] = pool.map((entry) => {
      const scores: Record<string, number> = { lexical: round(entry.confidence) };
      let confidence = lexicalWeight * entry.confidence;
      for (const outcome of outcomes) {
        const score = outcome.ok ? (outcome.scores.get(entry.agentKey) ?? 0) : 0;
        scores[outcome.name] = round(score);
        confidence += outcome.weight * score;
      }
      return {
        agentKey: entry.agentKey,
        skillId: entry.skillId,
        score: entry.score,
        confidence: Math.min(1, confidence),
        scores,
        get explanation() {
          return entry.explanation;
        },
      };
    });
    blended.sort((x, y) => y.confidence - x.confidence || y.score - x.score);
    const decision = this.decide(tenant, query, eligible, blended.slice(0, maxCandidates), gate, true);
    return { decision: { ...decision, scorers: reports }, pool: blended };
  }

  /**
   * The decision over ranked entries (best first): the confidence threshold for text, the tie
   * margin (on the BM25F score, or on the blended confidence) and power of two choices by load,
   * the default agent or why none.
   */
  private decide(tenant: string, query: CapabilityQuery, eligible: Eligibility, ranked: readonly Entry[], gate: Gate, blended: boolean): RouteChoice | NoRoute {
    const config = this.opts.config().intent;
    const own = this.tenantRouting(tenant);
    const minConfidence = own.minConfidence ?? config.minConfidence;
    const { excluded, runtimes } = gate;
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
    const floor = (blended ? best.confidence : best.score) * (1 - margin);
    const ties = usable.filter((entry) => (blended ? entry.confidence : entry.score) >= floor);
    // The load of the two agents the power of two choices compares only (each load reads the agent's
    // endpoints: cache misses, ~1-2 µs at 10,000 agents). Failover tries the one it passed over, then
    // the other ties and the rest by score.
    const [chosen, passedOver] = this.powerOfTwo(ties, (entry) => this.loadOf(runtimes.get(entry.agentKey)!));
    const rest = [...(passedOver ? [passedOver] : []), ...usable.filter((entry) => entry !== chosen && entry !== passedOver)];
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

  /**
   * Whether an agent may be chosen (registered, a healthy endpoint, eligible), recording why not;
   * with `verdicts`, what they know is not asked again, and what is asked is kept.
   */
  private gate(eligible: Eligibility, verdicts: ContextVerdicts | undefined): Gate {
    const excluded = new Map<string, string>();
    const runtimes = new Map<string, AgentRuntime>();
    const accept = (key: string, slot: number) => {
      if (verdicts) {
        const known = verdicts.accepted(slot);
        if (known) {
          runtimes.set(key, known);
          return true;
        }
        if (verdicts.refused(slot)) {
          const why = verdicts.reason(slot);
          if (why !== undefined) excluded.set(key, why);
          return false;
        }
      }
      const agent = this.runtimeOf(key);
      const why = !agent ? undefined : healthyCount(agent) === 0 ? 'no healthy endpoint' : eligible(agent);
      if (!agent || why !== undefined) {
        verdicts?.refuse(slot, why);
        if (why !== undefined) excluded.set(key, why);
        return false;
      }
      verdicts?.accept(slot, agent);
      runtimes.set(key, agent);
      return true;
    };
    return { excluded, runtimes, accept };
  }

  /** The lexical ranking without eligibility (at least 20), each marked with why it was excluded. */
  private considered(tenant: string, query: CapabilityQuery, eligible: Eligibility): RouteCandidate[] {
    return this.index.rank(tenant, query, { limit: Math.max(20, this.opts.config().intent.maxCandidates) }).map((entry) => {
      const agent = this.runtimeOf(entry.agentKey);
      const why = !agent ? 'not registered' : healthyCount(agent) === 0 ? 'no healthy endpoint' : eligible(agent);
      return this.candidate(entry, agent, why);
    });
  }

  /** The scorers of the current configuration, rebuilt (caches emptied) when it changes. */
  private scorers(): readonly ConfiguredScorer[] {
    const configs = this.opts.config().scorers ?? NO_SCORERS;
    if (configs === this.scorerConfigs) return this.configured;
    this.scorerConfigs = configs;
    const key = JSON.stringify(configs);
    if (key !== this.scorersKey) {
      this.scorersKey = key;
      this.configured = buildScorers(configs, () => this.opts.env ?? process.env);
    }
    return this.configured;
  }

  private scoringCandidate(tenant: string, agentKey: string): ScoringCandidate {
    const name = agentKey.slice(agentKey.indexOf('/') + 1);
    const held = this.index.agentSkills(tenant, name);
    const digest = this.index.agentDigest(tenant, name);
    return { agentKey, skills: held?.skills ?? [], tags: held?.tags ?? [], ...(digest !== undefined ? { digest } : {}) };
  }

  private closestIgnoringEligibility(tenant: string, query: CapabilityQuery): RouteCandidate[] {
    return this.index.rank(tenant, query, { limit: 3 }).map((entry) => this.candidate(entry, this.runtimeOf(entry.agentKey)));
  }

  private candidate(entry: Entry, agent: AgentRuntime | undefined, excluded?: string): RouteCandidate {
    return new Candidate(entry, agent, this.loadOf, excluded);
  }

  private runtimeOf(agentKey: string): AgentRuntime | undefined {
    return this.opts.registry.findAgentByKey(agentKey);
  }

  /** The less loaded of two entries drawn at random, and the other one (none with one entry). */
  private powerOfTwo(entries: readonly Entry[], loadOf: (entry: Entry) => number): [Entry, Entry | undefined] {
    if (entries.length === 1) return [entries[0]!, undefined];
    const i = Math.floor(this.random() * entries.length);
    let j = Math.floor(this.random() * (entries.length - 1));
    if (j >= i) j++;
    const a = entries[i]!;
    const b = entries[j]!;
    return loadOf(b) < loadOf(a) ? [b, a] : [a, b];
  }
}

function reportOf(outcome: ScorerOutcome): ScorerReport {
  const report: ScorerReport = { name: outcome.name, weight: outcome.weight, ok: outcome.ok, ms: Math.round(outcome.ms * 10) / 10 };
  if (!outcome.ok) report.error = `${outcome.error.reason}: ${outcome.error.message}`;
  return report;
}

const round = (value: number) => (Number.isFinite(value) ? Math.round(value * 1000) / 1000 : value);
