import type { CapabilityQuery, Scorer, ScoringCandidate } from '../capabilities/index.js';
import { scorerName, type ScorerConfig } from '../config.js';
import { ClassifierScorer } from './classifier.js';
import { EmbeddingsScorer } from './embeddings.js';
import { ScorerError, type ScorerFailureReason } from './http.js';

export { ClassifierScorer, classifierPrompt } from './classifier.js';
export { EmbeddingsScorer, skillText } from './embeddings.js';
export { ScorerError, type ScorerFailureReason } from './http.js';

/** A scorer as the configuration sets it up. */
export interface ConfiguredScorer {
  readonly scorer: Scorer;
  readonly name: string;
  readonly weight: number;
  readonly timeoutMs: number;
  /** How many of the decision's candidates (best lexical first) it scores. */
  readonly maxCandidates: number;
}

/** What one scorer gave for one decision. */
export type ScorerOutcome =
  | { readonly name: string; readonly weight: number; readonly ms: number; readonly ok: true; readonly scores: ReadonlyMap<string, number> }
  | { readonly name: string; readonly weight: number; readonly ms: number; readonly ok: false; readonly error: ScorerError };

/** Builds the configured scorers; `env` is read per call (the API key's variable). */
export function buildScorers(configs: readonly ScorerConfig[], env: () => Readonly<Record<string, string | undefined>>): ConfiguredScorer[] {
  return configs.map((config) => {
    const name = scorerName(config);
    const apiKey = () => {
      if (config.apiKeyEnv === undefined) return undefined;
      const key = env()[config.apiKeyEnv];
      if (!key) throw new ScorerError('config', `the environment variable ${config.apiKeyEnv} (apiKeyEnv) is not set`);
      return key;
    };
    const scorer = config.kind === 'openai-embeddings' ? new EmbeddingsScorer(name, config, apiKey) : new ClassifierScorer(name, config, apiKey);
    return { scorer, name, weight: config.weight, timeoutMs: config.timeoutMs, maxCandidates: config.maxCandidates };
  });
}

const REASONS: readonly ScorerFailureReason[] = ['timeout', 'http', 'network', 'invalid', 'config'];
const counters = {
  scorers: new Map<string, { calls: number; failures: Record<ScorerFailureReason, number> }>(),
  /** Decisions made on the lexical ranking alone because a scorer failed. */
  fallbacks: 0,
};

function countersOf(name: string) {
  let entry = counters.scorers.get(name);
  if (!entry) counters.scorers.set(name, (entry = { calls: 0, failures: Object.fromEntries(REASONS.map((reason) => [reason, 0])) as Record<ScorerFailureReason, number> }));
  return entry;
}

/** Calls and failures (by reason) per scorer name, and lexical fallbacks, since the process started. */
export function scorerCounters(): { fallbacks: number; scorers: Record<string, { calls: number; failures: Record<ScorerFailureReason, number> }> } {
  const scorers: Record<string, { calls: number; failures: Record<ScorerFailureReason, number> }> = {};
  for (const [name, entry] of counters.scorers) scorers[name] = { calls: entry.calls, failures: { ...entry.failures } };
  return { fallbacks: counters.fallbacks, scorers };
}

export function countLexicalFallback(): void {
  counters.fallbacks++;
}

/**
 * Runs one scorer within its deadline. Never rejects: a failure (timeout, HTTP status, network,
 * an answer that does not parse, a missing API key) is counted and returned as such.
 */
export async function runScorer(configured: ConfiguredScorer, tenant: string, query: CapabilityQuery, candidates: readonly ScoringCandidate[]): Promise<ScorerOutcome> {
  const { name, weight, timeoutMs } = configured;
  const entry = countersOf(name);
  entry.calls++;
  const started = performance.now();
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(new ScorerError('timeout', `no answer within ${timeoutMs} ms`)), timeoutMs);
  try {
    const scores = await new Promise<Map<string, number>>((resolve, reject) => {
      // The deadline holds even for a scorer that ignores the signal.
      controller.signal.addEventListener('abort', () => reject(controller.signal.reason), { once: true });
      configured.scorer.score(tenant, query, candidates, controller.signal).then(resolve, reject);
    });
    return { name, weight, ms: performance.now() - started, ok: true, scores };
  } catch (err) {
    const error = err instanceof ScorerError ? err : new ScorerError('invalid', (err as Error)?.message ?? String(err));
    entry.failures[error.reason]++;
    return { name, weight, ms: performance.now() - started, ok: false, error };
  } finally {
    clearTimeout(timer);
    controller.abort();
  }
}

export interface WarnLogger {
  warn(fields: object, message: string): void;
}

/** Logs scorer failures at warn, at most one line per scorer per `intervalMs` (saying how many were not logged). */
export class ScorerFailureLog {
  private readonly last = new Map<string, { at: number; suppressed: number }>();

  constructor(
    private readonly logger: WarnLogger | undefined,
    private readonly intervalMs = 10_000,
  ) {}

  report(outcome: Extract<ScorerOutcome, { ok: false }>, tenant: string): void {
    if (!this.logger) return;
    const now = Date.now();
    const state = this.last.get(outcome.name);
    if (state && now - state.at < this.intervalMs) {
      state.suppressed++;
      return;
    }
    this.last.set(outcome.name, { at: now, suppressed: 0 });
    this.logger.warn(
      { scorer: outcome.name, tenant, reason: outcome.error.reason, error: outcome.error.message, notLoggedSince: state?.suppressed ?? 0 },
      'semantic scorer failed: this decision is lexical only',
    );
  }
}
