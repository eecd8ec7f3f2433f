import { skillsDigest } from './digest.js';
import { Hit, TenantIndex, type Settings } from './tenant-index.js';
import { analyze, DEFAULT_SYNONYMS, normalizeTag, SynonymTable, type QueryTerm, type Term } from './text.js';
import {
  SKILL_FIELDS,
  type CapabilityIndexOptions,
  type MatchExplanation,
  type CapabilityQuery,
  type RankedAgent,
  type RankOptions,
  type Skill,
  type SkillField,
  type SkillMatch,
} from './types.js';

export { skillsDigest } from './digest.js';
export { LexicalScorer, rankBlended, type BlendedAgent, type Scorer, type ScoringCandidate, type WeightedScorer } from './scorer.js';
export { analyze, DEFAULT_SYNONYMS, STOP_WORDS, stem, tokenize, type SynonymGroups } from './text.js';
export type {
  CapabilityIndexOptions,
  CapabilityQuery,
  MatchExplanation,
  RankedAgent,
  RankOptions,
  Skill,
  SkillField,
  SkillMatch,
} from './types.js';

const DEFAULT_LIMIT = 5;
const DEFAULT_SEARCH_LIMIT = 20;
/** Distinct words of a query taken into account (the first ones): bounds the cost of long texts. */
const MAX_QUERY_WORDS = 64;

const DEFAULT_WEIGHTS: Record<SkillField, number> = { name: 3, description: 1, examples: 1, tags: 2 };
const DEFAULT_B: Record<SkillField, number> = { name: 0.3, description: 0.75, examples: 0.75, tags: 0.3 };

/**
 * Per-tenant index of agents' skills for intent routing: BM25F over skill name, description,
 * examples and tags (skill and agent tags), with stemming, stop words and query-side synonyms;
 * required tags filter. Updates are incremental; queries are synchronous and take microseconds.
 */
export class CapabilityIndex {
  private readonly tenants = new Map<string, TenantIndex>();
  private readonly settings: Settings;
  private synonyms: SynonymTable;
  private readonly synonymWeight: number;
  /** Agents added, replaced or removed so far: each change's stamp is the count. */
  private changes = 0;
  /** The stamp of each tenant's last change (kept after the tenant is gone, so a stamp never repeats). */
  private readonly stamps = new Map<string, number>();

  constructor(options: CapabilityIndexOptions = {}) {
    const b = typeof options.b === 'number' ? fill(options.b) : { ...DEFAULT_B, ...options.b };
    const weights = { ...DEFAULT_WEIGHTS, ...options.fieldWeights };
    this.settings = {
      k1: options.k1 ?? 1.2,
      b: SKILL_FIELDS.map((field) => b[field]),
      weights: SKILL_FIELDS.map((field) => weights[field]),
      unknownTermWeight: options.unknownTermWeight ?? 0.5,
      maxPostingsPerQuery: options.maxPostingsPerQuery ?? 2_000,
      maxRescoredDocuments: options.maxRescoredDocuments ?? 128,
    };
    this.synonymWeight = options.synonymWeight ?? 0.5;
    const { k1, b: bs, weights: ws, unknownTermWeight, maxPostingsPerQuery, maxRescoredDocuments } = this.settings;
    if (!(k1 > 0)) throw new RangeError('k1 must be > 0');
    if (!bs.every((value) => value >= 0 && value <= 1)) throw new RangeError('b must be within [0, 1]');
    if (!ws.every((value) => value > 0)) throw new RangeError('field weights must be > 0');
    if (!(this.synonymWeight >= 0 && this.synonymWeight <= 1)) throw new RangeError('synonymWeight must be within [0, 1]');
    if (!(unknownTermWeight >= 0)) throw new RangeError('unknownTermWeight must be >= 0');
    if (!(maxPostingsPerQuery > 0 && maxRescoredDocuments > 0)) throw new RangeError('query work bounds must be > 0');
    this.synonyms = synonymTable(options);
  }

  /** A number that grows whenever one of the tenant's agents is added, replaced or removed (its agents' slots may then change). */
  versionOf(tenant: string): number {
    return this.stamps.get(tenant) ?? 0;
  }

  /** Replaces the operator synonyms (a configuration reload); they apply to the next query. */
  setSynonyms(options: Pick<CapabilityIndexOptions, 'synonyms' | 'replaceDefaultSynonyms'>): void {
    this.synonyms = synonymTable(options);
  }

  /**
   * Adds or replaces an agent's skills (`agentTags` apply to all its skills). Returns false when
   * the skills and tags are unchanged (same digest), which costs a hash and nothing else. The
   * change is visible to the next query (synchronous; an agent of 10 skills takes well under 1 ms).
   */
  upsertAgent(tenant: string, agent: string, skills: readonly Skill[], agentTags: readonly string[] = []): boolean {
    if (tenant.length === 0 || tenant.includes('/') || agent.length === 0) throw new TypeError(`invalid agent ${tenant}/${agent}`);
    const copies = skills.map(copySkill);
    const digest = skillsDigest(copies, agentTags);
    let index = this.tenants.get(tenant);
    if (index?.agents.get(agent)?.digest === digest) return false;
    if (!index) this.tenants.set(tenant, (index = new TenantIndex(this.settings)));
    this.stamps.set(tenant, ++this.changes);
    index.removeAgent(agent);
    index.addAgent(agent, `${tenant}/${agent}`, copies, [...agentTags], digest);
    return true;
  }

  removeAgent(tenant: string, agent: string): boolean {
    const index = this.tenants.get(tenant);
    if (!index?.removeAgent(agent)) return false;
    this.stamps.set(tenant, ++this.changes);
    if (index.agents.size === 0) this.tenants.delete(tenant);
    return true;
  }

  removeTenant(tenant: string): boolean {
    if (!this.tenants.delete(tenant)) return false;
    this.stamps.set(tenant, ++this.changes);
    return true;
  }

  /** The digest (see skillsDigest) of what the index holds for an agent. */
  agentDigest(tenant: string, agent: string): string | undefined {
    return this.tenants.get(tenant)?.agents.get(agent)?.digest;
  }

  /** The agent's slot in its tenant's index (see RankOptions.candidates), if the index holds it. */
  slotOf(tenant: string, agent: string): number | undefined {
    return this.tenants.get(tenant)?.agents.get(agent)?.slot;
  }

  /** The skills and agent tags the index holds for an agent. */
  agentSkills(tenant: string, agent: string): { skills: readonly Skill[]; tags: readonly string[] } | undefined {
    const entry = this.tenants.get(tenant)?.agents.get(agent);
    return entry && { skills: entry.skills, tags: entry.tags };
  }

  /**
   * The tenant's agents best matching the query, best first, one entry per agent (its best skill).
   * With `tags` (at most 32), only skills whose own tags plus their agent's tags include all of
   * them qualify; qualifying agents the text does not match follow the matched ones with score 0,
   * in index order (the order is not meaningful: all qualify equally).
   *
   * confidence = min(1, score / ideal), where ideal is what a skill would score that has every
   * word of the query (after stop words; synonyms not counted) once in its name at average name
   * length; a word no skill of the tenant contains adds unknownTermWeight times the idf of the
   * rarest possible word to the ideal, so queries made mostly of unknown words get a low
   * confidence. A query with tags and no words gives confidence 1 (the tags matched exactly).
   */
  rank(tenant: string, query: CapabilityQuery, options: RankOptions = {}): RankedAgent[] {
    const index = this.tenants.get(tenant);
    if (!index) return [];
    return index.match(this.queryTerms(query), requiredTags(query), true, options.limit ?? DEFAULT_LIMIT, options.candidates);
  }

  /**
   * Skills (not agents) matching the query in one or several tenants, for the admin listing:
   * ranked like rank(), merged across tenants by confidence then score. Without text and tags,
   * lists skills in agent order.
   */
  search(tenants: string | readonly string[], query: CapabilityQuery, options: { readonly limit?: number } = {}): SkillMatch[] {
    const limit = options.limit ?? DEFAULT_SEARCH_LIMIT;
    const terms = this.queryTerms(query);
    const tags = requiredTags(query);
    const matches: SkillMatch[] = [];
    for (const tenant of typeof tenants === 'string' ? [tenants] : tenants) {
      const index = this.tenants.get(tenant);
      if (!index) continue;
      if (terms.length === 0 && tags.length === 0) {
        for (const doc of index.allDocs()) {
          if (matches.length >= limit) return matches;
          matches.push(skillMatch(tenant, new Hit(doc, 0, 0, [], [])));
        }
        continue;
      }
      for (const hit of index.match(terms, tags, false, limit)) matches.push(skillMatch(tenant, hit));
    }
    matches.sort((x, y) => y.confidence - x.confidence || y.score - x.score);
    return matches.slice(0, limit);
  }

  /** The tenant's agents that have a skill qualifying for `tags` (all agents without tags). */
  agentsOf(tenant: string, tags: readonly string[] = []): { agentKey: string; slot: number; skills: readonly Skill[]; tags: readonly string[] }[] {
    const index = this.tenants.get(tenant);
    if (!index) return [];
    const required = requiredTags({ tags });
    const agents = required.length === 0 ? [...index.agents.values()] : index.match([], required, true, index.agents.size).map((hit) => hit.doc.agent);
    return agents.map((agent) => ({ agentKey: agent.key, slot: agent.slot, skills: agent.skills, tags: agent.tags }));
  }

  stats(): { tenants: number; agents: number; skills: number; terms: number } {
    let agents = 0;
    let skills = 0;
    let terms = 0;
    for (const index of this.tenants.values()) {
      agents += index.agents.size;
      skills += index.skillCount;
      terms += index.termCount;
    }
    return { tenants: this.tenants.size, agents, skills, terms };
  }

  private queryTerms(query: CapabilityQuery): QueryTerm[] {
    if (!query.text) return [];
    const terms = analyze(query.text);
    // At most MAX_QUERY_WORDS distinct stems: only a longer text can have more.
    if (terms.length <= MAX_QUERY_WORDS) return this.synonyms.expand(terms, this.synonymWeight);
    const kept: Term[] = [];
    const distinct = new Set<string>();
    for (const term of terms) {
      if (!distinct.has(term.stem)) {
        if (distinct.size === MAX_QUERY_WORDS) break;
        distinct.add(term.stem);
      }
      kept.push(term);
    }
    return this.synonyms.expand(kept, this.synonymWeight);
  }
}

function synonymTable({ synonyms, replaceDefaultSynonyms }: Pick<CapabilityIndexOptions, 'synonyms' | 'replaceDefaultSynonyms'>): SynonymTable {
  return new SynonymTable({ ...(replaceDefaultSynonyms ? {} : DEFAULT_SYNONYMS), ...synonyms });
}

const MAX_REQUIRED_TAGS = 32;

const NO_TAGS: readonly string[] = [];

function requiredTags(query: CapabilityQuery): readonly string[] {
  if (!query.tags || query.tags.length === 0) return NO_TAGS;
  const tags = [...new Set(query.tags.map(normalizeTag).filter((tag) => tag.length > 0))];
  if (tags.length > MAX_REQUIRED_TAGS) throw new RangeError(`at most ${MAX_REQUIRED_TAGS} required tags`);
  return tags;
}

function skillMatch(tenant: string, hit: Hit): SkillMatch {
  return new LazySkillMatch(tenant, hit);
}

/** A Hit of search(), with its tenant, agent and skill (see Hit for why a class with a getter). */
class LazySkillMatch implements SkillMatch {
  readonly agent: string;
  readonly agentKey: string;
  readonly skill: Skill;
  readonly skillId: string;
  readonly score: number;
  readonly confidence: number;
  readonly #hit: Hit;

  constructor(
    readonly tenant: string,
    hit: Hit,
  ) {
    this.agent = hit.doc.agent.name;
    this.agentKey = hit.agentKey;
    this.skill = hit.doc.skill;
    this.skillId = hit.skillId;
    this.score = hit.score;
    this.confidence = hit.confidence;
    this.#hit = hit;
  }

  get explanation(): MatchExplanation {
    return this.#hit.explanation;
  }

  toJSON(): SkillMatch {
    const { tenant, agent, agentKey, skill, skillId, score, confidence, explanation } = this;
    return { tenant, agent, agentKey, skill, skillId, score, confidence, explanation };
  }
}

/** Only the fields the index uses, so a card's other content is not retained. */
function copySkill(skill: Skill): Skill {
  const copy: { -readonly [K in keyof Skill]: Skill[K] } = { id: skill.id, name: skill.name };
  if (skill.description !== undefined) copy.description = skill.description;
  if (skill.tags !== undefined) copy.tags = [...skill.tags];
  if (skill.examples !== undefined) copy.examples = [...skill.examples];
  if (skill.inputModes !== undefined) copy.inputModes = [...skill.inputModes];
  if (skill.outputModes !== undefined) copy.outputModes = [...skill.outputModes];
  return copy;
}

function fill(value: number): Record<SkillField, number> {
  return { name: value, description: value, examples: value, tags: value };
}
