import type { RetriesConfig } from './balancing-config.js';

/**
 * Retry budgets, one per agent (Linkerd's and Finagle's retry budget): over a sliding window of
 * `budgetWindowMs` (ten buckets), retries may be at most budgetRatio x the requests sent in it plus
 * minRetriesPerSecond x the window's seconds. When the agent is failing, retries stop at that share
 * instead of multiplying the load on it.
 */

const BUCKETS = 10;

const counters = {
  /** Retries made, by why the attempt before failed. */
  retries: { connect: 0, reset: 0, timeout: 0, status: 0 } as Record<RetryReason, number>,
  /** Retries not made because the agent's budget was spent. */
  budgetExhausted: 0,
};

export type RetryReason = 'connect' | 'reset' | 'timeout' | 'status';

export function retryCounters(): { retries: Record<RetryReason, number>; budgetExhausted: number } {
  return { retries: { ...counters.retries }, budgetExhausted: counters.budgetExhausted };
}

export function countRetry(reason: RetryReason): void {
  counters.retries[reason]++;
}

class RetryBudget {
  private readonly requests = new Float64Array(BUCKETS);
  private readonly retries = new Float64Array(BUCKETS);
  private requestSum = 0;
  private retrySum = 0;
  /** Index (time / bucketMs) of the newest bucket. */
  private head = 0;

  constructor(readonly bucketMs: number) {}

  private advance(now: number): number {
    const tick = Math.floor(now / this.bucketMs);
    const steps = tick - this.head;
    if (steps > 0) {
      if (steps >= BUCKETS) {
        this.requests.fill(0);
        this.retries.fill(0);
        this.requestSum = 0;
        this.retrySum = 0;
      } else {
        for (let t = this.head + 1; t <= tick; t++) {
          const slot = t % BUCKETS;
          this.requestSum -= this.requests[slot]!;
          this.retrySum -= this.retries[slot]!;
          this.requests[slot] = 0;
          this.retries[slot] = 0;
        }
      }
      this.head = tick;
    }
    return tick % BUCKETS;
  }

  request(now: number): void {
    this.requests[this.advance(now)]!++;
    this.requestSum++;
  }

  allows(now: number, settings: RetriesConfig): boolean {
    this.advance(now);
    const allowed = settings.budgetRatio * this.requestSum + (settings.minRetriesPerSecond * settings.budgetWindowMs) / 1000;
    return this.retrySum + 1 <= allowed;
  }

  spend(now: number): void {
    this.retries[this.advance(now)]!++;
    this.retrySum++;
  }
}

export class RetryBudgets {
  private readonly budgets = new Map<string, RetryBudget>();

  constructor(private readonly settings: () => RetriesConfig) {}

  private budget(agentKey: string): RetryBudget {
    const bucketMs = this.settings().budgetWindowMs / BUCKETS;
    let budget = this.budgets.get(agentKey);
    if (!budget || budget.bucketMs !== bucketMs) {
      budget = new RetryBudget(bucketMs);
      this.budgets.set(agentKey, budget);
    }
    return budget;
  }

  /** A request (its first attempt) to the agent. */
  request(agentKey: string, now = performance.now()): void {
    this.budget(agentKey).request(now);
  }

  /** Whether one more retry fits the agent's budget now; counts the refusal when not. */
  allows(agentKey: string, now = performance.now()): boolean {
    if (this.budget(agentKey).allows(now, this.settings())) return true;
    counters.budgetExhausted++;
    return false;
  }

  /** A retry is being made. */
  spend(agentKey: string, reason: RetryReason, now = performance.now()): void {
    this.budget(agentKey).spend(now);
    countRetry(reason);
  }

  /** Forgets the budgets of agents that no longer exist. */
  retain(isLive: (agentKey: string) => boolean): void {
    for (const key of this.budgets.keys()) if (!isLive(key)) this.budgets.delete(key);
  }
}
