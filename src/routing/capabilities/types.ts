import type { SynonymGroups } from './text.js';

/** A skill as an A2A Agent Card (or the config) describes it. */
export interface Skill {
  readonly id: string;
  readonly name: string;
  readonly description?: string;
  readonly tags?: readonly string[];
  readonly examples?: readonly string[];
  readonly inputModes?: readonly string[];
  readonly outputModes?: readonly string[];
}

export const SKILL_FIELDS = ['name', 'description', 'examples', 'tags'] as const;
/** The text fields a skill is searched by; `tags` holds the skill's and its agent's tags. */
export type SkillField = (typeof SKILL_FIELDS)[number];

export interface CapabilityQuery {
  /** Free text, e.g. the text parts of an A2A message. */
  readonly text?: string;
  /** Required tags: a skill qualifies only if its own tags plus its agent's tags include all of them. */
  readonly tags?: readonly string[];
}

export interface RankOptions {
  /** How many results at most (default 5). */
  readonly limit?: number;
  /**
   * Only agents for which this returns true (policy, health); called at most once per agent and
   * query. `slot` numbers the agent within its tenant's index, small and dense, and stays the
   * agent's until CapabilityIndex.version() changes (for verdicts kept across queries).
   */
  readonly candidates?: (agentKey: string, slot: number) => boolean;
}

/** Why a skill matched: query words per field, words that matched only as synonyms, required tags. */
export interface MatchExplanation {
  readonly fields: Partial<Record<SkillField, string[]>>;
  readonly synonyms: { readonly word: string; readonly via: string }[];
  readonly tags: string[];
}

export interface RankedAgent {
  /** `tenant/agent`. */
  readonly agentKey: string;
  /** The agent's best-matching skill. */
  readonly skillId: string;
  /** BM25F score; comparable only within one tenant and query. */
  readonly score: number;
  /** In [0, 1]: see CapabilityIndex.rank for how it is computed. */
  readonly confidence: number;
  readonly explanation: MatchExplanation;
}

export interface SkillMatch extends RankedAgent {
  readonly tenant: string;
  readonly agent: string;
  readonly skill: Skill;
}

export interface CapabilityIndexOptions {
  /** BM25 term-frequency saturation (default 1.2). */
  readonly k1?: number;
  /** BM25 length normalization, for all fields or per field (default name 0.3, tags 0.3, others 0.75). */
  readonly b?: number | Partial<Record<SkillField, number>>;
  /** BM25F field weights (default name 3, description 1, examples 1, tags 2). */
  readonly fieldWeights?: Partial<Record<SkillField, number>>;
  /** Operator synonym groups, added to the built-in ones (group name -> words or phrases). */
  readonly synonyms?: SynonymGroups;
  /** Drop the built-in synonym groups (default false). */
  readonly replaceDefaultSynonyms?: boolean;
  /** Weight of a term added by synonym expansion, relative to 1 for the query's own terms (default 0.5). */
  readonly synonymWeight?: number;
  /**
   * How much a query word unknown to the tenant's skills lowers the confidence, as a share of the
   * weight of the rarest known word (default 0.5; 0 ignores unknown words).
   */
  readonly unknownTermWeight?: number;
  /**
   * Work bound of one query: postings walked before the remaining (most common) query terms only
   * rescore the skills found so far (default 2,000; see tenant-index.ts). It matters only where the
   * query words' skills add up to more, i.e. in large tenants; larger values trade latency for recall.
   */
  readonly maxPostingsPerQuery?: number;
  /** At most this many skills, the best so far, are rescored by those remaining terms (default 128). */
  readonly maxRescoredDocuments?: number;
}
