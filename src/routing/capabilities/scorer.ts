import type { CapabilityIndex } from './index.js';
import type { CapabilityQuery, RankOptions, Skill } from './types.js';

/** An agent a scorer is asked about, with what the index knows of it. */
export interface ScoringCandidate {
  readonly agentKey: string;
  readonly skills: readonly Skill[];
  readonly tags: readonly string[];
  /** The digest of its skills and tags (see skillsDigest), when known: unchanged digest, unchanged skills. */
  readonly digest?: string;
}

/**
 * Scores how well each candidate agent matches a query, in [0, 1] (absent = 0). The lexical
 * scorer is the default; a semantic one (embeddings, an LLM classifier) implements the same
 * interface and is blended with it by rankBlended.
 */
export interface Scorer {
  readonly name: string;
  score(tenant: string, query: CapabilityQuery, candidates: readonly ScoringCandidate[], signal?: AbortSignal): Promise<Map<string, number>>;
}

/** The index's BM25F ranking as a Scorer: each candidate's confidence. */
export class LexicalScorer implements Scorer {
  readonly name = 'lexical';

  constructor(private readonly index: CapabilityIndex) {}

  async score(tenant: string, query: CapabilityQuery, candidates: readonly ScoringCandidate[]): Promise<Map<string, number>> {
    const keys = new Set(candidates.map((candidate) => candidate.agentKey));
    const ranked = this.index.rank(tenant, query, { limit: keys.size, candidates: (agentKey) => keys.has(agentKey) });
    return new Map(ranked.map((agent) => [agent.agentKey, agent.confidence]));
  }
}

export interface WeightedScorer {
  readonly scorer: Scorer;
  readonly weight: number;
}

export interface BlendedAgent {
  readonly agentKey: string;
  /** Weighted mean of the scorers' scores, in [0, 1]. */
  readonly confidence: number;
  /** Each scorer's score, by scorer name. */
  readonly scores: Readonly<Record<string, number>>;
}

/**
 * Ranks the tenant's agents (those qualifying for query.tags and accepted by options.candidates)
 * by the weighted mean of several scorers, best first. Scorers run concurrently; a scorer that
 * fails rejects the whole ranking (the caller decides whether to fall back to rank()).
 */
export async function rankBlended(
  index: CapabilityIndex,
  tenant: string,
  query: CapabilityQuery,
  scorers: readonly WeightedScorer[],
  options: RankOptions = {},
): Promise<BlendedAgent[]> {
  const candidates = index.agentsOf(tenant, query.tags).filter((agent) => options.candidates?.(agent.agentKey, agent.slot) ?? true);
  const results = await Promise.all(scorers.map(({ scorer }) => scorer.score(tenant, query, candidates)));
  const totalWeight = scorers.reduce((sum, { weight }) => sum + weight, 0);
  const blended = candidates.map(({ agentKey }) => {
    const scores: Record<string, number> = {};
    let sum = 0;
    scorers.forEach(({ scorer, weight }, i) => {
      const score = Math.min(1, Math.max(0, results[i]!.get(agentKey) ?? 0));
      scores[scorer.name] = score;
      sum += weight * score;
    });
    return { agentKey, confidence: totalWeight > 0 ? sum / totalWeight : 0, scores };
  });
  blended.sort((x, y) => y.confidence - x.confidence || (x.agentKey < y.agentKey ? -1 : 1));
  return blended.filter((agent) => agent.confidence > 0).slice(0, options.limit ?? 5);
}
