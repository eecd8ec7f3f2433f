// The synthetic skill corpus of the capability benches (bench/capabilities.ts, bench/routing.ts).
// A vocabulary of pseudo-words; each skill's text drawn half from a global Zipf distribution (words
// shared by all, like "data" or "request") and half from the Zipf distribution of its agent's topic
// (one of 500 topics with 150 words each); 300 tags. Queries are 5-30 word texts: words of one
// target skill, words from the global distribution and English stop words. Seeded: the same options
// give the same corpus, and the same draws from `random` afterwards.
import type { Skill } from '../src/routing/capabilities/index.js';
import { mulberry32 } from '../test/support/prng.js';

export interface CorpusOptions {
  agents: number;
  /** Size of the vocabulary (distinct pseudo-words). */
  words: number;
  seed: number;
  skillsPerAgent?: number;
}

export interface CorpusAgent {
  /** Set by the bench (one tenant, or spread over several). */
  tenant: string;
  name: string;
  skills: Skill[];
  tags: string[];
}

export interface CorpusQuery {
  tenant: string;
  text: string;
  /** `<tenant>/<agent>` of the agent whose skill the query was drawn from. */
  target: string;
}

export interface SkillCorpus {
  /** The corpus's seeded generator, in [0, 1): keep drawing from it for reproducible runs. */
  random(): number;
  between(low: number, high: number): number;
  pick<T>(values: readonly T[]): T;
  readonly vocabulary: readonly string[];
  readonly agents: CorpusAgent[];
  /** A fresh set of skills for agent number `agent` (ids carry `version`). */
  agentSkills(agent: number, version: number): Skill[];
  /** A query drawn from one of the agent's skills, in the agent's current tenant. */
  queryFor(agent: CorpusAgent): CorpusQuery;
}

const TOPICS = 500;
const TOPIC_WORDS = 150;
const TAGS = 300;
const SYLLABLES = ['ka', 'lo', 'mi', 'ner', 'sta', 'vo', 'tri', 'dex', 'pul', 'gra', 'fen', 'qui', 'ros', 'bel', 'cor', 'zan', 'ith', 'mur', 'oph', 'sel'];
const STOP = ['the', 'a', 'to', 'of', 'my', 'i', 'is', 'for', 'can', 'you', 'please', 'how', 'do', 'with', 'on', 'and'];

export function skillCorpus({ agents: agentCount, words: wordCount, seed: initialSeed, skillsPerAgent = 10 }: CorpusOptions): SkillCorpus {
  const random = mulberry32(initialSeed);
  const between = (low: number, high: number): number => low + Math.floor(random() * (high - low + 1));
  const pick = <T>(values: readonly T[]): T => values[Math.floor(random() * values.length)]!;

  /** Samples indexes 0..n-1 with P(i) proportional to 1 / (i + 1)^exponent. */
  function zipf(n: number, exponent = 1): () => number {
    const cumulative = new Float64Array(n);
    let sum = 0;
    for (let i = 0; i < n; i++) cumulative[i] = sum += 1 / (i + 1) ** exponent;
    return () => {
      const target = random() * sum;
      let low = 0;
      let high = n - 1;
      while (low < high) {
        const middle = (low + high) >>> 1;
        if (cumulative[middle]! < target) low = middle + 1;
        else high = middle;
      }
      return low;
    };
  }

  const vocabulary = [...new Set(Array.from({ length: wordCount * 3 }, () => Array.from({ length: between(2, 4) }, () => pick(SYLLABLES)).join('')))].slice(0, wordCount);
  const globalWord = zipf(vocabulary.length);
  const topicWordRank = zipf(TOPIC_WORDS);
  const topics = Array.from({ length: TOPICS }, () => Array.from({ length: TOPIC_WORDS }, () => pick(vocabulary)));
  const tagRank = zipf(TAGS);
  const tags = Array.from({ length: TAGS }, (_, i) => `tag-${i}`);

  function words(topic: readonly string[], count: number): string {
    return Array.from({ length: count }, () => (random() < 0.5 ? vocabulary[globalWord()]! : topic[topicWordRank()]!)).join(' ');
  }

  function agentSkills(agent: number, version: number): Skill[] {
    const topic = topics[agent % TOPICS]!;
    return Array.from({ length: skillsPerAgent }, (_, s) => ({
      id: `skill-${s}-${version}`,
      name: words(topic, between(2, 4)),
      description: words(topic, between(8, 25)),
      examples: Array.from({ length: between(0, 3) }, () => words(topic, between(4, 10))),
      tags: Array.from({ length: between(1, 3) }, () => tags[tagRank()]!),
    }));
  }

  const agents: CorpusAgent[] = Array.from({ length: agentCount }, (_, i) => ({
    tenant: '',
    name: `agent-${i}`,
    skills: agentSkills(i, 0),
    tags: Array.from({ length: between(1, 2) }, () => tags[tagRank()]!),
  }));

  function queryFor(agent: CorpusAgent): CorpusQuery {
    const skill = pick(agent.skills);
    const own = [skill.name, skill.description ?? '', ...(skill.examples ?? [])].join(' ').split(' ');
    const length = between(5, 30);
    const text: string[] = [];
    for (let i = 0; i < length; i++) {
      const kind = random();
      text.push(kind < 0.45 ? pick(own) : kind < 0.7 ? vocabulary[globalWord()]! : pick(STOP));
    }
    return { tenant: agent.tenant, text: text.join(' '), target: `${agent.tenant}/${agent.name}` };
  }

  return { random, between, pick, vocabulary, agents, agentSkills, queryFor };
}

/** The p-th percentile of ascending samples. */
export function percentile(sorted: Float64Array, p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}
