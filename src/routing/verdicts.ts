import type { AgentRuntime } from '../registry/types.js';

/**
 * Routing's eligibility verdicts (registered, a healthy endpoint, allowed by policy, speaks the
 * protocol) kept across decisions. A decision asks about ~8 agents, and each ask reads the agent's
 * runtime and endpoints and runs the policy engine: a series of cache misses on a large heap, ~2-4 µs
 * per agent at 10,000 agents, a third of the decision. A kept verdict is a byte read.
 *
 * Verdicts are kept per tenant and caller context, by the agent's slot in the capability index. The
 * context is a key naming everything a verdict depends on besides the agent: the caller's identity
 * and labels, the method, the path or protocol version, the data tags. Everything else a verdict
 * depends on (the registry's agents, endpoint health, policies, the index's slots) must move the
 * `stamp`: every verdict is dropped when it changes. Without a context, nothing is kept.
 */

/** Caller contexts that keep verdicts (the oldest is dropped beyond): ~1 byte per agent of the tenant each. */
const MAX_CONTEXTS = 1_024;
/** A longer context is not kept: each would take an entry (a request listing many data tags, say). */
const MAX_CONTEXT_CHARS = 1_024;

/**
 * A verdict is a byte: the context's generation (1-63) << 2 | ACCEPTED or REFUSED, so emptying a
 * context moves its generation instead of clearing its bytes (once every 63 times it clears them).
 */
const ACCEPTED = 1;
const REFUSED = 2;
const GENERATIONS = 63;

/**
 * The runtimes of one tenant's accepted agents, by slot, shared by its contexts. Never emptied: a
 * context reads a slot only after accepting it under the current stamp, and every accept under one
 * stamp writes the same runtime (the registry and the index are unchanged while the stamp is).
 */
class TenantRuntimes {
  bySlot: (AgentRuntime | undefined)[] = new Array<AgentRuntime | undefined>(64);

  set(slot: number, runtime: AgentRuntime): void {
    if (slot >= this.bySlot.length) {
      // A preallocated array (holes, not a dictionary), as large as the index's slots.
      const grown = new Array<AgentRuntime | undefined>(Math.max(slot + 1, 2 * this.bySlot.length));
      for (let i = 0; i < this.bySlot.length; i++) grown[i] = this.bySlot[i];
      this.bySlot = grown;
    }
    this.bySlot[slot] = runtime;
  }
}

/** The verdicts of one caller context in one tenant, valid for one stamp. */
export class ContextVerdicts {
  private verdicts = new Uint8Array(64);
  private generation = 1;
  /** Why a refused agent was refused (undefined: it is not registered). */
  private readonly reasons = new Map<number, string | undefined>();

  constructor(
    public stamp: number,
    private readonly runtimes: TenantRuntimes,
  ) {}

  reset(stamp: number): void {
    this.stamp = stamp;
    this.reasons.clear();
    if (++this.generation > GENERATIONS) {
      this.generation = 1;
      this.verdicts.fill(0);
    }
  }

  /** The runtime of an agent known to be eligible, or undefined (refused or not known). */
  accepted(slot: number): AgentRuntime | undefined {
    return this.verdicts[slot] === ((this.generation << 2) | ACCEPTED) ? this.runtimes.bySlot[slot] : undefined;
  }

  refused(slot: number): boolean {
    return this.verdicts[slot] === ((this.generation << 2) | REFUSED);
  }

  /** Why a refused agent was refused (undefined: not registered). */
  reason(slot: number): string | undefined {
    return this.reasons.get(slot);
  }

  accept(slot: number, runtime: AgentRuntime): void {
    this.runtimes.set(slot, runtime);
    this.set(slot, ACCEPTED);
  }

  refuse(slot: number, reason: string | undefined): void {
    this.reasons.set(slot, reason);
    this.set(slot, REFUSED);
  }

  private set(slot: number, verdict: number): void {
    if (slot >= this.verdicts.length) {
      const grown = new Uint8Array(Math.max(slot + 1, 2 * this.verdicts.length));
      grown.set(this.verdicts);
      this.verdicts = grown;
    }
    this.verdicts[slot] = (this.generation << 2) | verdict;
  }
}

export class VerdictCache {
  private readonly contexts = new Map<string, ContextVerdicts>();
  private readonly tenants = new Map<string, TenantRuntimes>();

  constructor(private readonly stamp: () => number) {}

  /** The verdicts of `context` in `tenant` (emptied when the stamp moved), or undefined: keep none. */
  open(tenant: string, context: string | undefined): ContextVerdicts | undefined {
    if (context === undefined || context.length > MAX_CONTEXT_CHARS) return undefined;
    const stamp = this.stamp();
    let runtimes = this.tenants.get(tenant);
    if (!runtimes) this.tenants.set(tenant, (runtimes = new TenantRuntimes()));
    // Tenant names hold no newline.
    const key = `${tenant}\n${context}`;
    let verdicts = this.contexts.get(key);
    if (!verdicts) {
      this.contexts.set(key, (verdicts = new ContextVerdicts(stamp, runtimes)));
      if (this.contexts.size > MAX_CONTEXTS) this.contexts.delete(this.contexts.keys().next().value!);
    } else if (verdicts.stamp !== stamp) verdicts.reset(stamp);
    return verdicts;
  }

  /** Forgets a removed tenant's verdicts (they would be dropped as stale anyway; this frees them now). */
  removeTenant(tenant: string): void {
    this.tenants.delete(tenant);
    const prefix = `${tenant}\n`;
    for (const key of this.contexts.keys()) if (key.startsWith(prefix)) this.contexts.delete(key);
  }

  /** How many contexts keep verdicts (for tests and diagnostics). */
  get size(): number {
    return this.contexts.size;
  }
}
