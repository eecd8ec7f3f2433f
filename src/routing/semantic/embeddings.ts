import { createHash } from 'node:crypto';
import { z } from 'zod';
import type { CapabilityQuery, Scorer, ScoringCandidate, Skill } from '../capabilities/index.js';
import type { EmbeddingsScorerConfig } from '../config.js';
import { postJson, ScorerError } from './http.js';

/** Skills of one agent that are embedded (the first ones): bounds the work per candidate. */
const MAX_SKILLS_PER_AGENT = 64;
/** Characters of a skill's text that are embedded. */
const MAX_SKILL_TEXT = 2000;
/** Skill texts per embeddings call. */
const SKILL_BATCH = 32;
/** Skill embeddings are not on the request path: they may take this long (a cold model, a long batch). */
const SKILL_TIMEOUT_MS = 30_000;
/** After a skill batch failed, its skills are not embedded again for this long, doubling per failure up to the max. */
const SKILL_RETRY_MS = 1_000;
const SKILL_RETRY_MAX_MS = 60_000;
const QUERY_MAX_BYTES = 1024 * 1024;
const BATCH_MAX_BYTES = 16 * 1024 * 1024;
const MAX_DIMENSIONS = 16_384;

const embeddingsAnswer = z.object({
  data: z.array(z.object({ index: z.number().int().min(0), embedding: z.array(z.number()).min(1).max(MAX_DIMENSIONS) })),
});

/** A Map that forgets its least recently used entries beyond `max`. */
class LruMap<K, V> {
  private readonly map = new Map<K, V>();
  constructor(private readonly max: number) {}
  get(key: K): V | undefined {
    const value = this.map.get(key);
    if (value !== undefined) {
      this.map.delete(key);
      this.map.set(key, value);
    }
    return value;
  }
  has(key: K): boolean {
    return this.map.has(key);
  }
  set(key: K, value: V): void {
    this.map.delete(key);
    this.map.set(key, value);
    if (this.map.size > this.max) this.map.delete(this.map.keys().next().value as K);
  }
  delete(key: K): void {
    this.map.delete(key);
  }
  clear(): void {
    this.map.clear();
  }
}

/** What an agent's skills are embedded as: one text (and cache key) per skill. */
interface AgentPlan {
  readonly digest: string | undefined;
  readonly keys: readonly string[];
  readonly texts: readonly string[];
}

/** The text a skill is embedded as: name, description, examples and tags (its own and its agent's). */
export function skillText(skill: Skill, agentTags: readonly string[]): string {
  const lines = [skill.name];
  if (skill.description) lines.push(skill.description);
  if (skill.examples) lines.push(...skill.examples);
  const tags = [...(skill.tags ?? []), ...agentTags];
  if (tags.length > 0) lines.push(`tags: ${tags.join(', ')}`);
  return lines.join('\n').slice(0, MAX_SKILL_TEXT);
}

/**
 * Scores candidates by the cosine similarity between the query's embedding and their skills'
 * (an agent scores as its closest skill), mapped linearly from [minSimilarity, maxSimilarity] to
 * [0, 1]. Skills are embedded once per text (an LRU cache of `cacheEntries` vectors; a changed
 * skill has a new text, so it is embedded again), in the background: a request waits for them only
 * within its deadline. The query is embedded per request. Skills whose embedding failed are not
 * asked for again until a back-off (1 s, doubling to 60 s) has passed: meanwhile the scorer fails
 * at once (the decision is lexical) instead of sending the failing batch with every request.
 */
export class EmbeddingsScorer implements Scorer {
  readonly name: string;
  private readonly vectors: LruMap<string, Float32Array>;
  private readonly plans: LruMap<string, AgentPlan>;
  /** Skill embeddings under way, by cache key; they resolve to the error, if any. */
  private readonly inflight = new Map<string, Promise<ScorerError | undefined>>();
  /** Skills whose embedding failed, by cache key: not asked for again before `retryAt`. */
  private readonly failed: LruMap<string, { error: ScorerError; retryAt: number; backoffMs: number }>;

  constructor(
    name: string,
    private readonly config: EmbeddingsScorerConfig,
    private readonly apiKey: () => string | undefined,
  ) {
    this.name = name;
    this.vectors = new LruMap(config.cacheEntries);
    this.plans = new LruMap(config.cacheEntries);
    this.failed = new LruMap(config.cacheEntries);
  }

  async score(_tenant: string, query: CapabilityQuery, candidates: readonly ScoringCandidate[], signal: AbortSignal = new AbortController().signal): Promise<Map<string, number>> {
    const text = query.text?.trim();
    const scores = new Map<string, number>();
    if (!text || candidates.length === 0) return scores;
    const apiKey = this.apiKey();
    const plans = candidates.map((candidate) => this.planOf(candidate));
    const waits = new Set<Promise<ScorerError | undefined>>();
    const missing = new Map<string, string>();
    const now = performance.now();
    for (const plan of plans) {
      plan.keys.forEach((key, i) => {
        if (this.vectors.has(key) || missing.has(key)) return;
        const pending = this.inflight.get(key);
        if (pending) {
          waits.add(pending);
          return;
        }
        const failure = this.failed.get(key);
        if (failure && failure.retryAt > now) throw new ScorerError(failure.error.reason, `${failure.error.message} (skills not embedded again for ${Math.ceil(failure.retryAt - now)} ms)`);
        missing.set(key, plan.texts[i]!);
      });
    }
    const entries = [...missing];
    for (let i = 0; i < entries.length; i += SKILL_BATCH) waits.add(this.embedSkills(entries.slice(i, i + SKILL_BATCH), apiKey));
    const [queryVectors, ...errors] = await Promise.all([this.embed([text], apiKey, signal, QUERY_MAX_BYTES), ...waits]);
    const error = errors.find((e) => e !== undefined);
    if (error) throw error;
    const queryVector = queryVectors[0]!;
    const { minSimilarity: low, maxSimilarity: high } = this.config;
    candidates.forEach((candidate, i) => {
      let best = Number.NEGATIVE_INFINITY;
      for (const key of plans[i]!.keys) {
        // Absent only when the cache is smaller than one request's skills: that skill is not compared.
        const vector = this.vectors.get(key);
        if (vector) best = Math.max(best, this.cosine(queryVector, vector));
      }
      if (best > Number.NEGATIVE_INFINITY) scores.set(candidate.agentKey, Math.min(1, Math.max(0, (best - low) / (high - low))));
    });
    return scores;
  }

  private planOf(candidate: ScoringCandidate): AgentPlan {
    const known = this.plans.get(candidate.agentKey);
    if (known && candidate.digest !== undefined && known.digest === candidate.digest) return known;
    const texts = candidate.skills.slice(0, MAX_SKILLS_PER_AGENT).map((skill) => skillText(skill, candidate.tags));
    const plan = { digest: candidate.digest, texts, keys: texts.map((text) => createHash('sha256').update(text).digest('base64')) };
    this.plans.set(candidate.agentKey, plan);
    return plan;
  }

  private embedSkills(batch: readonly (readonly [string, string])[], apiKey: string | undefined): Promise<ScorerError | undefined> {
    const done = this.embed(
      batch.map(([, text]) => text),
      apiKey,
      AbortSignal.timeout(SKILL_TIMEOUT_MS),
      BATCH_MAX_BYTES,
    ).then(
      (vectors) => {
        batch.forEach(([key], i) => {
          this.vectors.set(key, vectors[i]!);
          this.failed.delete(key);
        });
        return undefined;
      },
      (err: unknown) => {
        const error = err instanceof ScorerError ? err : new ScorerError('invalid', String(err));
        const now = performance.now();
        for (const [key] of batch) {
          const backoffMs = Math.min(SKILL_RETRY_MAX_MS, (this.failed.get(key)?.backoffMs ?? SKILL_RETRY_MS / 2) * 2);
          this.failed.set(key, { error, retryAt: now + backoffMs, backoffMs });
        }
        return error;
      },
    );
    for (const [key] of batch) this.inflight.set(key, done);
    void done.then(() => {
      for (const [key] of batch) this.inflight.delete(key);
    });
    return done;
  }

  /** Unit vectors, in the order of `input`. */
  private async embed(input: readonly string[], apiKey: string | undefined, signal: AbortSignal, maxBytes: number): Promise<Float32Array[]> {
    const url = `${this.config.url.replace(/\/+$/, '')}/embeddings`;
    const parsed = embeddingsAnswer.safeParse(await postJson(url, { model: this.config.model, input }, { signal, maxBytes, ...(apiKey ? { apiKey } : {}) }));
    if (!parsed.success) throw new ScorerError('invalid', `${url}: not an embeddings answer (${parsed.error.issues[0]?.message})`);
    const vectors: Float32Array[] = new Array(input.length);
    for (const { index, embedding } of parsed.data.data) {
      if (index >= input.length || vectors[index] !== undefined) throw new ScorerError('invalid', `${url}: embedding index ${index} unexpected`);
      vectors[index] = unit(embedding);
    }
    for (let i = 0; i < input.length; i++) if (vectors[i] === undefined) throw new ScorerError('invalid', `${url}: ${parsed.data.data.length} embeddings for ${input.length} inputs`);
    return vectors;
  }

  private cosine(x: Float32Array, y: Float32Array): number {
    if (x.length !== y.length) {
      // The model behind the URL changed: what is cached is of no use.
      this.vectors.clear();
      this.plans.clear();
      throw new ScorerError('invalid', `embeddings of ${x.length} and ${y.length} dimensions: the model changed; skills will be embedded again`);
    }
    let dot = 0;
    for (let i = 0; i < x.length; i++) dot += x[i]! * y[i]!;
    return dot;
  }
}

function unit(values: readonly number[]): Float32Array {
  let norm = 0;
  for (const value of values) norm += value * value;
  norm = Math.sqrt(norm);
  const vector = new Float32Array(values.length);
  if (norm > 0) for (let i = 0; i < values.length; i++) vector[i] = values[i]! / norm;
  return vector;
}
