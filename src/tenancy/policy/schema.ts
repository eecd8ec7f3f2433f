import { z } from 'zod';

// Tenant policy: who may call whom. The config file holds gateway defaults at the top level
// (`policy:`) and a policy per tenant (`tenants[].policy:`); the Admin API takes the same shapes.
// This file does not import src/config/schema.ts: that file imports this one (no import cycle).

/** Same as config's NAME_PATTERN: a DNS label, 1-63 characters. */
export const POLICY_NAME_PATTERN = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
const DNS_LABEL = 'lowercase letters, digits and "-", 1-63 characters, not starting or ending with "-"';

/** Classification tags on requests and agent clearances: pii, phi, finance, public, or custom ones. */
export const DATA_TAG_PATTERN = /^[a-z0-9][a-z0-9_.:-]{0,63}$/;
export const dataTagSchema = z
  .string()
  .regex(DATA_TAG_PATTERN, 'must be a data tag: lowercase letters, digits, "-", "_", ".", ":", 1-64 characters, such as pii or finance');

/** The tag every request may carry without clearance. */
export const PUBLIC_DATA_TAG = 'public';

const effectSchema = z.enum(['allow', 'deny'], { error: 'must be "allow" or "deny"' });
const ruleName = z.string().regex(POLICY_NAME_PATTERN, `must be a rule name: ${DNS_LABEL}`);
const agentName = z.string().regex(POLICY_NAME_PATTERN, `must be an agent name (${DNS_LABEL}) or "*"`);
const tenantRef = z
  .string()
  .refine((value) => value === '*' || POLICY_NAME_PATTERN.test(value), `must be a tenant name (${DNS_LABEL}) or "*" for any tenant`);
const freeTag = z.string().min(1, 'must not be empty').max(128, 'must be at most 128 characters');

function isPattern(value: string, prefix: string): boolean {
  const star = value.indexOf('*');
  return value.startsWith(prefix) && (star === -1 || star === value.length - 1);
}

/** An exact SPIFFE ID or a prefix ending in '*'. */
const identityPattern = z
  .string()
  .max(2048)
  .refine(
    (value) => isPattern(value, 'spiffe://') && !/[\s?#]/.test(value),
    'must be a SPIFFE ID such as spiffe://example.org/tenant/beta/agent/x, or a prefix ending in "*" such as spiffe://example.org/tenant/beta/*',
  );

/** An exact path or a prefix ending in '*'. */
const pathPattern = z
  .string()
  .max(2048)
  .refine(
    (value) => isPattern(value, '/') && !/[\s?#]/.test(value),
    'must be a path starting with "/" (exact, such as /v1/x) or a prefix ending in "*" (such as /a2a/*); "*" only at the end, no query',
  );

const methodSchema = z
  .string()
  // No transform (the schema is also the Admin API's JSON Schema): the engine upper-cases when compiling.
  .regex(/^[A-Za-z]{1,32}$/, 'must be an HTTP method such as GET or POST');

/** At least one entry: an empty list would match nothing, which is never what a rule means. */
function list<T extends z.ZodType>(item: T, max: number, what: string) {
  return z
    .array(item)
    .min(1, `give at least one ${what}, or leave the field out to match any`)
    .max(max, `at most ${max} entries`);
}

const agentList = list(z.union([z.literal('*'), agentName], { error: `must be an agent name (${DNS_LABEL}) or "*"` }), 1024, 'agent');

export const ruleFromSchema = z
  .object({
    /** Default: the tenant that owns the policy; '*' = any tenant. */
    tenant: tenantRef.optional(),
    /** Agent names in from.tenant; omitted or ['*'] = any. */
    agents: agentList.optional(),
    /** Exact SPIFFE IDs or trailing-'*' prefixes; any one matches. */
    identities: list(identityPattern, 1024, 'identity').optional(),
    /** The calling agent's tags; all must be present. */
    labels: list(freeTag, 64, 'label').optional(),
    /** true: the rule matches only callers without an identity (and no other from-field may be set). */
    anonymous: z.boolean().optional(),
  })
  .strict();

export const ruleToSchema = z
  .object({
    /** Default: the tenant that owns the policy; '*' (outbound rules only) = any other tenant. */
    tenant: tenantRef.optional(),
    agents: agentList.optional(),
    /** The target agent's tags or any tag of any of its skills; any one matches. */
    tags: list(freeTag, 256, 'tag').optional(),
    /** Skill ids on the target's Agent Card; any one matches. */
    skills: list(freeTag, 256, 'skill id').optional(),
  })
  .strict();

export const policyRuleSchema = z
  .object({
    name: ruleName,
    effect: effectSchema.default('allow'),
    from: ruleFromSchema.optional(),
    to: ruleToSchema.optional(),
    methods: list(methodSchema, 32, 'method').optional(),
    paths: list(pathPattern, 1024, 'path').optional(),
    /**
     * allow rules: the request may carry only these tags (an empty list: no tags at all).
     * deny rules: the rule matches requests carrying any of these tags.
     */
    dataTags: z.array(dataTagSchema).max(256, 'at most 256 entries').optional(),
  })
  .strict()
  .superRefine((rule, ctx) => {
    const from = rule.from;
    if (from?.anonymous) {
      const others = (['tenant', 'agents', 'identities', 'labels'] as const).filter((key) => from[key] !== undefined);
      if (others.length > 0) {
        ctx.addIssue({
          code: 'custom',
          path: ['from', 'anonymous'],
          message: `a rule for anonymous callers cannot also set from.${others.join(', from.')}: anonymous callers have no tenant, agent, identity or labels`,
        });
      }
    }
    for (const side of ['from', 'to'] as const) {
      const agents = rule[side]?.agents;
      if (agents && agents.length > 1 && agents.includes('*')) {
        ctx.addIssue({ code: 'custom', path: [side, 'agents'], message: '"*" (any agent) must be the only entry' });
      }
    }
    if (rule.effect === 'deny' && rule.dataTags?.length === 0) {
      ctx.addIssue({
        code: 'custom',
        path: ['dataTags'],
        message: 'a deny rule matches requests carrying any of its dataTags; an empty list never matches (leave the field out to match any request)',
      });
    }
  });

const MAX_RULES = 10_000;

/**
 * A tenant's policy; every setting left out falls back to the gateway default. Structure only: the
 * checks across rules (unique names, each rule speaks for its tenant) need the tenant's name and
 * are in tenantPolicyIssues.
 */
export const tenantPolicySchema = z
  .object({
    intraTenant: effectSchema.optional(),
    anonymous: effectSchema.optional(),
    requireClearance: z.boolean().optional(),
    rules: z.array(policyRuleSchema).max(MAX_RULES, `at most ${MAX_RULES.toLocaleString('en-US')} rules per tenant`).default([]),
  })
  .strict();

export const policyDefaultsSchema = z
  .object({
    /** Calls between agents of the same tenant that no rule matches. */
    intraTenant: effectSchema.default('allow'),
    /** Callers without an identity (only possible on a listener with allowAnonymous). */
    anonymous: effectSchema.default('deny'),
    /** Tagged requests go only to agents cleared for every tag ('public' needs no clearance). */
    requireClearance: z.boolean().default(true),
  })
  .strict();

/** The top-level `policy:` section of the config file. */
export const gatewayPolicySchema = z
  .object({ defaults: policyDefaultsSchema.prefault({}) })
  .strict();

export type PolicyEffect = z.infer<typeof effectSchema>;
export type PolicyRule = z.infer<typeof policyRuleSchema>;
export type TenantPolicy = z.infer<typeof tenantPolicySchema>;
/** What an operator writes (defaults not applied yet). */
export type TenantPolicyInput = z.input<typeof tenantPolicySchema>;
export type PolicyDefaults = z.infer<typeof policyDefaultsSchema>;
export type GatewayPolicyConfig = z.infer<typeof gatewayPolicySchema>;

/** A problem at a path relative to the validated value (e.g. ['rules', 5, 'from', 'agents']). */
export interface PolicyIssue {
  path: (string | number)[];
  message: string;
}

/** A problem as the Admin API reports it: `path` reads like `rules[5].from.agents`. */
export interface PolicyValidationError {
  path: string;
  message: string;
}

/** The side of a rule: inbound (who may call this tenant's agents) or outbound (this tenant's consent to call another). */
export function ruleDirection(tenant: string, rule: PolicyRule): 'inbound' | 'outbound' | undefined {
  const from = rule.from?.anonymous ? undefined : (rule.from?.tenant ?? tenant);
  const to = rule.to?.tenant ?? tenant;
  if (to === tenant) return 'inbound';
  if (from === tenant) return 'outbound';
  return undefined;
}

/**
 * The checks across rules, which need the owning tenant's name: rule names are unique, and a rule
 * in tenant X speaks only for X, so X is on one side of it. Paths are relative to the policy. Call
 * from the config schema's superRefine (prefixing ['tenants', i, 'policy']); PolicySet.setTenant
 * calls it too.
 */
export function tenantPolicyIssues(tenant: string, policy: TenantPolicy): PolicyIssue[] {
  return ruleIssues(
    tenant,
    policy.rules.map((rule, index) => [index, rule.name, rule]),
  );
}

/** [index, name, the parsed rule or undefined when it did not parse]. */
type RuleEntry = [number, unknown, PolicyRule | undefined];

function ruleIssues(tenant: string, rules: readonly RuleEntry[]): PolicyIssue[] {
  const issues: PolicyIssue[] = [];
  const seen = new Map<string, number>();
  for (const [index, name, rule] of rules) {
    if (typeof name === 'string') {
      const first = seen.get(name);
      if (first !== undefined) {
        issues.push({ path: ['rules', index, 'name'], message: `duplicate rule name "${name}" (first used by rules[${first}])` });
      } else {
        seen.set(name, index);
      }
    }
    if (rule === undefined) continue;
    const direction = ruleDirection(tenant, rule);
    if (rule.from?.anonymous && direction !== 'inbound') {
      issues.push({
        path: ['rules', index],
        message: `a rule for anonymous callers lets them call this tenant's agents: to.tenant must be ${tenant} or left out (got ${rule.to?.tenant})`,
      });
    } else if (direction === undefined) {
      issues.push({
        path: ['rules', index],
        message: `a rule in tenant ${tenant} must have ${tenant} on one side: from.tenant or to.tenant (got from.tenant ${rule.from?.tenant ?? tenant}, to.tenant ${rule.to?.tenant ?? tenant})`,
      });
    }
  }
  return issues;
}

/** The cross-rule checks over whatever rules of an invalid policy still parse, so one answer lists every problem. */
function rawRuleIssues(tenant: string, raw: unknown): PolicyIssue[] {
  if (typeof raw !== 'object' || raw === null) return [];
  const rules = (raw as { rules?: unknown }).rules;
  if (!Array.isArray(rules)) return [];
  return ruleIssues(
    tenant,
    rules.map((value: unknown, index): RuleEntry => {
      const parsed = policyRuleSchema.safeParse(value);
      const name = typeof value === 'object' && value !== null ? (value as { name?: unknown }).name : undefined;
      return [index, name, parsed.success ? parsed.data : undefined];
    }),
  );
}

/** `rules[5].from.agents`, like the config loader's paths. */
export function formatPolicyPath(path: readonly PropertyKey[]): string {
  let text = '';
  for (const segment of path) {
    if (typeof segment === 'number') text += `[${segment}]`;
    else text += (text ? '.' : '') + String(segment);
  }
  return text || '(top level)';
}

function zodErrors(issues: readonly z.core.$ZodIssue[]): PolicyValidationError[] {
  const errors: PolicyValidationError[] = [];
  for (const issue of issues) {
    if (issue.code === 'unrecognized_keys') {
      for (const key of issue.keys) errors.push({ path: formatPolicyPath([...issue.path, key]), message: 'unknown field' });
    } else {
      errors.push({ path: formatPolicyPath(issue.path), message: issue.message });
    }
  }
  return errors;
}

export type PolicyValidation<T> = { ok: true; value: T } | { ok: false; errors: PolicyValidationError[] };

/** Validates a tenant policy as parsed from YAML or JSON (Admin API writes): the policy with defaults applied, or every problem with its path. */
export function validateTenantPolicy(tenant: string, raw: unknown): PolicyValidation<TenantPolicy> {
  const parsed = tenantPolicySchema.safeParse(raw);
  const issues = parsed.success ? tenantPolicyIssues(tenant, parsed.data) : rawRuleIssues(tenant, raw);
  const errors = [
    ...(parsed.success ? [] : zodErrors(parsed.error.issues)),
    ...issues.map((issue) => ({ path: formatPolicyPath(issue.path), message: issue.message })),
  ];
  if (errors.length > 0 || !parsed.success) return { ok: false, errors };
  return { ok: true, value: parsed.data };
}

/** Validates the gateway-wide defaults (the `defaults` object of the top-level `policy:`). */
export function validatePolicyDefaults(raw: unknown): PolicyValidation<PolicyDefaults> {
  const parsed = policyDefaultsSchema.safeParse(raw);
  return parsed.success ? { ok: true, value: parsed.data } : { ok: false, errors: zodErrors(parsed.error.issues) };
}

/** A policy that failed validation; `errors` carry paths, the message lists them one per line. */
export class PolicyError extends Error {
  constructor(
    readonly tenant: string,
    readonly errors: readonly PolicyValidationError[],
  ) {
    super(`invalid policy for tenant ${tenant}:\n${errors.map((error) => `  ${error.path}: ${error.message}`).join('\n')}`);
    this.name = 'PolicyError';
  }
}

/** validateTenantPolicy, throwing a PolicyError instead of returning the problems. */
export function parseTenantPolicy(tenant: string, raw: unknown): TenantPolicy {
  const result = validateTenantPolicy(tenant, raw);
  if (!result.ok) throw new PolicyError(tenant, result.errors);
  return result.value;
}
