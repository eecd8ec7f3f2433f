import type { Logger } from 'pino';
import { z } from 'zod';
import type { RequestContext } from '../dataplane/context.js';
import type { AgentRuntime } from '../registry/types.js';
import type { TenantRecord } from '../store/types.js';
import { ConcurrencyLimiter, RateLimits, tenantLimitsSchema, type RateSpec, type TenantLimits } from './limits/index.js';
import { compileMasking, maskingSchema, type Masker } from './masking/index.js';
import { tenantRoutingSchema } from '../routing/config.js';
import {
  formatPolicyPath,
  PolicySet,
  tenantPolicyIssues,
  tenantPolicySchema,
  type Caller,
  type Explanation,
  type PolicyDefaults,
  type TargetAgent,
} from './policy/index.js';
import type { TenantKeys } from './keys.js';

/** The tenancy fields of a tenant (config `tenants[]` entry or Admin API body): policy, limits, masking. */
export const tenantSpecSchema = z
  .object({
    policy: tenantPolicySchema.optional(),
    limits: tenantLimitsSchema.optional(),
    masking: maskingSchema.optional(),
    routing: tenantRoutingSchema.optional(),
  })
  .strict();

export type TenantSpec = z.infer<typeof tenantSpecSchema>;

/** Problems with a tenant spec as `path: message` lines (empty when valid). */
export function tenantSpecProblems(tenant: string, raw: unknown): string[] {
  const parsed = tenantSpecSchema.safeParse(raw);
  if (!parsed.success) return parsed.error.issues.map((issue) => `${formatPolicyPath(issue.path) || 'spec'}: ${issue.message}`);
  const problems: string[] = [];
  if (parsed.data.policy) {
    for (const issue of tenantPolicyIssues(tenant, parsed.data.policy)) problems.push(`${formatPolicyPath(['policy', ...issue.path])}: ${issue.message}`);
  }
  if (parsed.data.masking?.enabled) {
    try {
      compileMasking(parsed.data.masking);
    } catch (err) {
      problems.push(`masking: ${(err as Error).message}`);
    }
  }
  return problems;
}

/** Limits and masking for tenants that set none of their own (config `tenantDefaults`). */
export interface TenantDefaults {
  limits?: TenantLimits | undefined;
  masking?: TenantSpec['masking'];
}

export interface TenancyOptions {
  policyDefaults: PolicyDefaults;
  tenantDefaults?: TenantDefaults;
  keys: TenantKeys;
  logger: Logger;
  /** The registry's agent lookup (explain resolves names with it). */
  findAgent: (tenant: string, agent: string) => AgentRuntime | undefined;
  spiffeIdOf: (tenant: string, agent: string) => string;
  /** The agents of a tenant that have their own rate limit (`agents[].limits`). */
  agentLimitsOf: (tenant: string) => ReadonlyMap<string, RateSpec>;
}

/**
 * The tenant-scoped runtime state the request stages read: compiled policy, rate and concurrency
 * limits, maskers, data keys. Rebuilt per tenant when that tenant's spec changes, and only for it.
 */
export class Tenancy {
  readonly policy: PolicySet;
  readonly rates = new RateLimits();
  readonly concurrency = new ConcurrencyLimiter();
  readonly keys: TenantKeys;
  private readonly maskers = new Map<string, Masker>();
  private readonly specs = new Map<string, TenantSpec>();
  private tenantDefaults: TenantDefaults;
  private readonly targets = new WeakMap<AgentRuntime, TargetAgent>();
  private readonly logger: Logger;
  private readonly agentLimitsOf: TenancyOptions['agentLimitsOf'];
  private readonly findAgent: TenancyOptions['findAgent'];
  private readonly spiffeIdOf: TenancyOptions['spiffeIdOf'];
  /** Requests in flight per tenant (as caller or target), so offboarding can cut them at once. */
  private readonly inflight = new Map<string, Set<RequestContext>>();

  constructor(options: TenancyOptions) {
    this.policy = new PolicySet(options.policyDefaults);
    this.keys = options.keys;
    this.logger = options.logger;
    this.agentLimitsOf = options.agentLimitsOf;
    this.findAgent = options.findAgent;
    this.spiffeIdOf = options.spiffeIdOf;
    this.tenantDefaults = options.tenantDefaults ?? {};
  }

  /**
   * New defaults for tenants without their own limits or masking; only the tenants that fall back to
   * a default that changed are rebuilt.
   */
  setTenantDefaults(defaults: TenantDefaults): void {
    const limitsChanged = JSON.stringify(defaults.limits ?? null) !== JSON.stringify(this.tenantDefaults.limits ?? null);
    const maskingChanged = JSON.stringify(defaults.masking ?? null) !== JSON.stringify(this.tenantDefaults.masking ?? null);
    this.tenantDefaults = defaults;
    for (const [name, spec] of this.specs) {
      if (limitsChanged && !spec.limits) this.refreshLimits(name);
      if (maskingChanged && !spec.masking) this.applyMasking(name, spec);
    }
  }

  setDefaults(defaults: PolicyDefaults): void {
    this.policy.setDefaults(defaults);
  }

  /** Applies one tenant's spec (from the registry's tenant-changed event); other tenants are untouched. */
  applyTenant(name: string, record: TenantRecord | undefined): void {
    if (!record) {
      this.specs.delete(name);
      this.maskers.delete(name);
      this.policy.removeTenant(name);
      this.rates.removeTenant(name);
      return;
    }
    const parsed = tenantSpecSchema.safeParse(record.spec ?? {});
    if (!parsed.success) {
      // Specs are validated before they are stored; one that no longer parses (e.g. written by a newer
      // gateway) must not leave the tenant open: everything but explicit rules falls back to defaults.
      this.logger.error({ tenant: name, issues: parsed.error.issues }, 'tenant spec is invalid: applying the gateway defaults (no rules)');
    }
    const spec: TenantSpec = parsed.success ? parsed.data : {};
    this.specs.set(name, spec);
    this.policy.setTenant(name, spec.policy);
    this.refreshLimits(name);
    this.applyMasking(name, spec);
  }

  private applyMasking(name: string, spec: TenantSpec): void {
    const masking = spec.masking ?? this.tenantDefaults.masking;
    if (masking?.enabled) this.maskers.set(name, compileMasking(masking));
    else this.maskers.delete(name);
  }

  /** The limits in force for a tenant: its own, else the defaults. */
  private limitsOf(tenant: string): TenantLimits | undefined {
    return this.specs.get(tenant)?.limits ?? this.tenantDefaults.limits;
  }

  /** Re-reads the agents' own rate limits of a tenant (after an agent changed). */
  refreshLimits(tenant: string): void {
    if (!this.specs.has(tenant)) return;
    this.rates.setTenant(tenant, this.limitsOf(tenant), this.agentLimitsOf(tenant));
  }

  /** Counts a request against the tenants it involves until it finishes (see cutTraffic). */
  track(ctx: RequestContext, tenants: readonly string[]): void {
    for (const tenant of tenants) {
      let set = this.inflight.get(tenant);
      if (!set) this.inflight.set(tenant, (set = new Set()));
      set.add(ctx);
    }
  }

  untrack(ctx: RequestContext, tenants: readonly string[]): void {
    for (const tenant of tenants) {
      const set = this.inflight.get(tenant);
      if (set && set.delete(ctx) && set.size === 0) this.inflight.delete(tenant);
    }
  }

  /** Ends every in-flight request to or from the tenant (offboarding). Returns how many. */
  cutTraffic(tenant: string): number {
    const set = this.inflight.get(tenant);
    if (!set) return 0;
    this.inflight.delete(tenant);
    for (const ctx of set) {
      // The caller's stream first, so nothing the upstream abort flushes can end it cleanly.
      const reason = new Error(`tenant ${tenant} was offboarded`);
      ctx.res.destroy(reason);
      ctx.abortUpstream?.(reason);
    }
    return set.size;
  }

  spec(tenant: string): TenantSpec | undefined {
    return this.specs.get(tenant);
  }

  masker(tenant: string): Masker | undefined {
    return this.maskers.get(tenant);
  }

  concurrencyFor(tenant: string): TenantLimits['concurrency'] | undefined {
    return this.limitsOf(tenant)?.concurrency;
  }

  /** The policy's view of an agent, built once per agent version (runtimes are replaced on change). */
  target(agent: AgentRuntime): TargetAgent {
    let target = this.targets.get(agent);
    if (!target) {
      target = { tenant: agent.tenant, agent: agent.name, tags: agent.tags, skills: agent.skills, clearances: agent.clearances };
      this.targets.set(agent, target);
    }
    return target;
  }

  /**
   * The policy decision for `from` ('tenant/agent' or 'anonymous') calling `to` ('tenant/agent'),
   * with every rule considered (`dmsc policy explain`, the Admin API). Throws ExplainError for names
   * that do not resolve.
   */
  explain(from: string, to: string, facts: { method?: string; path?: string; dataTags?: readonly string[] } = {}): Explanation {
    const target = splitAgent(to, 'to');
    const targetAgent = this.findAgent(target.tenant, target.agent);
    if (!targetAgent) throw new ExplainError('not_found', `to: unknown agent "${to}"`);
    let caller: Caller = ANONYMOUS;
    let dataTags = facts.dataTags ?? [];
    if (from !== 'anonymous') {
      const source = splitAgent(from, 'from');
      const sourceAgent = this.findAgent(source.tenant, source.agent);
      caller = {
        tenant: source.tenant,
        agent: source.agent,
        spiffeId: this.spiffeIdOf(source.tenant, source.agent),
        labels: sourceAgent?.tags ?? [],
      };
      if (sourceAgent?.dataTags.length) dataTags = [...new Set([...dataTags, ...sourceAgent.dataTags])];
    }
    return this.policy.explain(caller, this.target(targetAgent), { method: facts.method ?? 'POST', path: facts.path ?? '/', dataTags });
  }

  caller(identity: { tenant: string; agent: string; spiffeId: string } | undefined, labels: readonly string[]): Caller {
    return identity ? { tenant: identity.tenant, agent: identity.agent, spiffeId: identity.spiffeId, labels } : ANONYMOUS;
  }
}

export class ExplainError extends Error {
  constructor(
    readonly code: 'invalid' | 'not_found',
    message: string,
  ) {
    super(message);
  }
}

function splitAgent(value: string, field: string): { tenant: string; agent: string } {
  const match = /^([a-z0-9-]{1,63})\/([a-z0-9-]{1,63})$/.exec(value);
  if (!match) throw new ExplainError('invalid', `${field}: "${value}" must be <tenant>/<agent>${field === 'from' ? ' or "anonymous"' : ''}`);
  return { tenant: match[1]!, agent: match[2]! };
}

const ANONYMOUS: Caller = Object.freeze({ labels: Object.freeze([]) as readonly string[] });
