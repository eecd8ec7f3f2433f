import type { AgentRuntime } from '../registry/types.js';

/**
 * Routing's eligibility verdicts (registered, a healthy endpoint, allowed by policy, speaks the
 * protocol) kept across decisions. A decision asks about ~8 agents, and each ask reads the agent's
 * runtime and endpoints and runs the policy engine: a series of cache misses on a large heap, ~2-4 µs
 * per agent at 10,000 agents, a third of the decision. A kept verdict is a byte read.
 *
 * Verdicts are kept per tenant and caller context, by the agent's slot in the capability index. The
 * context is a key naming everything a verdict depends on besides the agent: the caller's identity
 * and labels, the method, the path or protocol version, the data tags. The rest a verdict depends
 * on must reach this cache, one of two ways:
 * - the `stamp` of the tenant and caller's tenant moves (their policies, the policy defaults, the
 *   tenant index's slots): every verdict of the contexts concerned is dropped;
 * - the agent is listed in the `changes` feed (its runtime installed, replaced or removed, or an
 *   endpoint's health changed): its verdicts, in every context, are dropped before the next decision.
 * Without a context, nothing is kept.
 */

/** The caller facts a decision's verdicts depend on: all of them in `key`, and the caller's tenant (policies are per tenant). */
export interface VerdictContext {
  readonly key: string;
  readonly callerTenant?: string | undefined;
}

/** What the router reads of the registry's change feed (src/registry/changes.ts). */
export interface AgentChangeFeed {
  readonly sequence: number;
  since(from: number, visit: (agentKey: string) => void): boolean;
}

/** Caller contexts that keep verdicts (the oldest is dropped beyond): ~1 byte per agent of the tenant each. */
const MAX_CONTEXTS = 1_024;
/** A longer context is not kept: each would take an entry (a request listing many data tags, say). */
const MAX_CONTEXT_CHARS = 1_024;

/**
 * A verdict is a byte: the context's generation (1-63) << 2 | ACCEPTED or REFUSED, so emptying a
 * context moves its generation instead of clearing its bytes (once every 63 times it clears them).
 * 0 is "not known".
 */
const ACCEPTED = 1;
const REFUSED = 2;
const GENERATIONS = 63;

/**
 * A tenant's kept state: the runtimes of its accepted agents by slot, shared by its contexts, and
 * those contexts. A context reads a runtime only for a slot it accepted since the stamp and the
 * agent last changed, and every accept since then wrote the same runtime (the registry holds one
 * per agent between changes), so the array is never emptied.
 */
class TenantVerdicts {
  bySlot: (AgentRuntime | undefined)[] = new Array<AgentRuntime | undefined>(64);
  readonly contexts = new Set<ContextVerdicts>();

  setRuntime(slot: number, runtime: AgentRuntime): void {
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
    /** Its key in VerdictCache.contexts. */
    readonly key: string,
    public stamp: number,
    readonly tenant: TenantVerdicts,
  ) {}

  reset(stamp: number): void {
    this.stamp = stamp;
    this.reasons.clear();
    if (++this.generation > GENERATIONS) {
      this.generation = 1;
      this.verdicts.fill(0);
    }
  }

  /** Forgets what was known of one agent. */
  forget(slot: number): void {
    if (slot < this.verdicts.length) this.verdicts[slot] = 0;
  }

  /** The runtime of an agent known to be eligible, or undefined (refused or not known). */
  accepted(slot: number): AgentRuntime | undefined {
    return this.verdicts[slot] === ((this.generation << 2) | ACCEPTED) ? this.tenant.bySlot[slot] : undefined;
  }

  refused(slot: number): boolean {
    return this.verdicts[slot] === ((this.generation << 2) | REFUSED);
  }

  /** Why a refused agent was refused (undefined: not registered). */
  reason(slot: number): string | undefined {
    return this.reasons.get(slot);
  }

  accept(slot: number, runtime: AgentRuntime): void {
    this.tenant.setRuntime(slot, runtime);
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
  private readonly tenants = new Map<string, TenantVerdicts>();
  /** How far the change feed has been read. */
  private seen: number;
  /** Moves when the feed could not be read (more changes than it holds): everything is dropped. */
  private overruns = 0;

  constructor(
    /** Grows whenever the verdicts of calls into `tenant` by callers of `callerTenant` may all change. */
    private readonly stamp: (tenant: string, callerTenant: string | undefined) => number,
    private readonly changes: AgentChangeFeed | undefined,
    /** The agent's slot in the capability index, if it holds it. */
    private readonly slotOf: (tenant: string, agent: string) => number | undefined,
  ) {
    this.seen = changes?.sequence ?? 0;
  }

  /** The verdicts of `context` in `tenant` (emptied when the stamp moved), or undefined: keep none. */
  open(tenant: string, context: VerdictContext | undefined): ContextVerdicts | undefined {
    if (context === undefined || context.key.length > MAX_CONTEXT_CHARS) return undefined;
    this.readChanges();
    const stamp = this.stamp(tenant, context.callerTenant) + this.overruns;
    let state = this.tenants.get(tenant);
    if (!state) this.tenants.set(tenant, (state = new TenantVerdicts()));
    // Tenant names hold no newline.
    const key = `${tenant}\n${context.key}`;
    let verdicts = this.contexts.get(key);
    if (!verdicts) {
      verdicts = new ContextVerdicts(key, stamp, state);
      this.contexts.set(key, verdicts);
      state.contexts.add(verdicts);
      if (this.contexts.size > MAX_CONTEXTS) {
        const oldest = this.contexts.values().next().value!;
        this.contexts.delete(oldest.key);
        oldest.tenant.contexts.delete(oldest);
      }
    } else if (verdicts.stamp !== stamp) verdicts.reset(stamp);
    return verdicts;
  }

  /** Forgets a removed tenant's verdicts (they would be dropped as stale anyway; this frees them now). */
  removeTenant(tenant: string): void {
    const state = this.tenants.get(tenant);
    if (!state) return;
    this.tenants.delete(tenant);
    for (const verdicts of state.contexts) this.contexts.delete(verdicts.key);
  }

  /** How many contexts keep verdicts (for tests and diagnostics). */
  get size(): number {
    return this.contexts.size;
  }

  /** Drops the verdicts of every agent the feed lists since it was last read. */
  private readChanges(): void {
    const changes = this.changes;
    if (!changes || changes.sequence === this.seen) return;
    const complete = changes.since(this.seen, (agentKey) => {
      const split = agentKey.indexOf('/');
      const state = this.tenants.get(agentKey.slice(0, split));
      if (!state) return;
      const slot = this.slotOf(agentKey.slice(0, split), agentKey.slice(split + 1));
      // An agent the index no longer holds has no slot: its removal moved the index's version (the stamp).
      if (slot === undefined) return;
      for (const verdicts of state.contexts) verdicts.forget(slot);
    });
    if (!complete) this.overruns++;
    this.seen = changes.sequence;
  }
}
