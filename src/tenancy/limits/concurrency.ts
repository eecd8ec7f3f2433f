/** Slots and queue for one key (an endpoint); the `concurrency` block of a tenant's limits. */
export interface ConcurrencyLimit {
  readonly perEndpoint: number;
  readonly queue: number;
  readonly queueTimeoutMs: number;
}

export type ConcurrencyRefusal = 'queue_full' | 'queue_timeout' | 'aborted';

/** Why a request got no slot. The gateway answers `queue_full` and `queue_timeout` with 503 + Retry-After. */
export class ConcurrencyLimitError extends Error {
  constructor(
    readonly reason: ConcurrencyRefusal,
    readonly key: string,
    readonly limit: ConcurrencyLimit,
  ) {
    super(
      reason === 'queue_full'
        ? `${key} is at its concurrency limit (${limit.perEndpoint} in flight, ${limit.queue} waiting)`
        : reason === 'queue_timeout'
          ? `${key} had no free slot within ${limit.queueTimeoutMs} ms (${limit.perEndpoint} in flight)`
          : `the request was cancelled while waiting for a slot at ${key}`,
    );
    this.name = 'ConcurrencyLimitError';
  }
}

export type Release = () => void;

/** A queued request; a doubly linked list so a timeout or abort leaves the queue in O(1). */
class Waiter {
  prev: Waiter | undefined = undefined;
  next: Waiter | undefined = undefined;
  timer: NodeJS.Timeout | undefined = undefined;
  onAbort: (() => void) | undefined = undefined;

  constructor(
    readonly resolve: (release: Release) => void,
    readonly reject: (error: ConcurrencyLimitError) => void,
    readonly signal: AbortSignal | undefined,
  ) {}

  /** Stops the timer and the abort listener once the waiter leaves the queue. */
  settle(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    if (this.onAbort !== undefined) this.signal!.removeEventListener('abort', this.onAbort);
  }
}

class KeyState {
  active = 0;
  queued = 0;
  head: Waiter | undefined = undefined;
  tail: Waiter | undefined = undefined;

  constructor(public limit: ConcurrencyLimit) {}

  push(waiter: Waiter): void {
    waiter.prev = this.tail;
    if (this.tail) this.tail.next = waiter;
    else this.head = waiter;
    this.tail = waiter;
    this.queued++;
  }

  unlink(waiter: Waiter): void {
    if (waiter.prev) waiter.prev.next = waiter.next;
    else this.head = waiter.next;
    if (waiter.next) waiter.next.prev = waiter.prev;
    else this.tail = waiter.prev;
    waiter.prev = waiter.next = undefined;
    this.queued--;
  }
}

/**
 * Concurrency limits per key (per endpoint) with a bounded FIFO queue. State exists only for keys
 * with requests in flight or waiting, so memory is bounded by the requests themselves.
 */
export class ConcurrencyLimiter {
  private readonly keys = new Map<string, KeyState>();

  /**
   * A release function at once when a slot is free (no promise, no allocation beyond the release
   * closure); otherwise a promise of one, rejected with a ConcurrencyLimitError when the queue is
   * full, the wait exceeds `queueTimeoutMs` or `signal` aborts (the queue position is freed). Never
   * throws. Calling release more than once is harmless. The limit in force is the one passed last.
   */
  acquire(key: string, limit: ConcurrencyLimit, signal?: AbortSignal): Release | Promise<Release> {
    let state = this.keys.get(key);
    if (state === undefined) {
      state = new KeyState(limit);
      this.keys.set(key, state);
    } else if (state.limit !== limit) {
      state.limit = limit;
      this.drain(key, state); // a raised limit lets waiters in
    }
    if (state.active < limit.perEndpoint && state.queued === 0) {
      state.active++;
      return this.releaser(key, state);
    }
    if (signal?.aborted) return Promise.reject(new ConcurrencyLimitError('aborted', key, limit));
    if (state.queued >= limit.queue) {
      this.dropIfIdle(key, state);
      return Promise.reject(new ConcurrencyLimitError('queue_full', key, limit));
    }
    const queue = state;
    return new Promise<Release>((resolve, reject) => {
      const waiter = new Waiter(resolve, reject, signal);
      const leave = (reason: ConcurrencyRefusal) => {
        waiter.settle();
        queue.unlink(waiter);
        this.dropIfIdle(key, queue);
        reject(new ConcurrencyLimitError(reason, key, limit));
      };
      waiter.timer = setTimeout(leave, limit.queueTimeoutMs, 'queue_timeout');
      if (signal !== undefined) {
        waiter.onAbort = () => leave('aborted');
        signal.addEventListener('abort', waiter.onAbort, { once: true });
      }
      queue.push(waiter);
    });
  }

  stats(key: string): { active: number; queued: number } {
    const state = this.keys.get(key);
    return state === undefined ? { active: 0, queued: 0 } : { active: state.active, queued: state.queued };
  }

  /** Keys with requests in flight or waiting. */
  get size(): number {
    return this.keys.size;
  }

  private releaser(key: string, state: KeyState): Release {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      state.active--;
      this.drain(key, state);
    };
  }

  /** Hands free slots to the oldest waiters. */
  private drain(key: string, state: KeyState): void {
    while (state.head !== undefined && state.active < state.limit.perEndpoint) {
      const waiter = state.head;
      state.unlink(waiter);
      waiter.settle();
      state.active++;
      waiter.resolve(this.releaser(key, state));
    }
    this.dropIfIdle(key, state);
  }

  private dropIfIdle(key: string, state: KeyState): void {
    if (state.active === 0 && state.queued === 0 && this.keys.get(key) === state) this.keys.delete(key);
  }
}
