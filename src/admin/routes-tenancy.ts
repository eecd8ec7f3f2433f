import { z } from 'zod';
import { tenantLimitsSchema } from '../tenancy/limits/schema.js';
import { maskingSchema } from '../tenancy/masking/schema.js';
import { dataTagSchema, tenantPolicySchema, type Explanation, type PolicyDefaults } from '../tenancy/policy/index.js';
import type { OffboardSummary } from '../tenancy/lifecycle.js';
import { ExplainError, type TenantSpec } from '../tenancy/runtime.js';
import type { TenantRecord } from '../store/types.js';
import { AdminError, tenantOrThrow } from './http.js';
import type { AdminContext, Route } from './routes.js';

/** The tenancy operations the Admin API drives. */
export interface AdminTenancy {
  onboard(name: string, spec: Record<string, unknown> | undefined, actor: string): Promise<TenantRecord>;
  offboard(name: string, actor: string): Promise<OffboardSummary>;
  explain(from: string, to: string, facts: { method?: string; path?: string; dataTags?: readonly string[] }): Explanation;
  /** The tenant's applied spec (parsed, with defaults). */
  spec(tenant: string): TenantSpec | undefined;
  defaults(): PolicyDefaults;
  /** Read-only Admin API tokens for one tenant's operators (the token is returned once, stored hashed). */
  createAdminToken(tenant: string, description: string | undefined): Promise<{ id: string; token: string; tenant: string; createdAt: string }>;
  listAdminTokens(tenant?: string): Promise<Array<{ id: string; tenant: string; description?: string; createdAt: string }>>;
  deleteAdminToken(id: string): Promise<boolean>;
}

const createAdminTokenBody = z
  .object({
    tenant: z.string().regex(/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/, 'must be a tenant name'),
    description: z.string().max(200).optional(),
  })
  .strict();

const adminTokenView = z.object({ id: z.string(), tenant: z.string(), description: z.string().optional(), createdAt: z.string() });
const adminTokenCreated = adminTokenView.extend({ token: z.string().describe('shown once; send it as "Authorization: Bearer <token>"') });
const adminTokenList = z.object({ tokens: z.array(adminTokenView) });
const adminTokensQuery = z.object({ tenant: z.string().optional() }).strict();

export const offboardSummary = z.object({
  tenant: z.string(),
  agentsRemoved: z.number(),
  certificatesRevoked: z.number(),
  casRetired: z.array(z.string()),
  requestsCut: z.number(),
  dataKeysDestroyed: z.number(),
});

const policyView = z.object({
  tenant: z.string(),
  source: z.enum(['config', 'api']),
  policy: z.record(z.string(), z.unknown()).describe('the tenant policy as stored (rules, and overrides of the defaults)'),
  defaults: z.record(z.string(), z.unknown()).describe('the gateway-wide defaults the tenant falls back to'),
});

const explainQuery = z
  .object({
    from: z.string().describe('<tenant>/<agent> of the caller, or "anonymous"'),
    to: z.string().describe('<tenant>/<agent> of the target'),
    method: z.string().regex(/^[A-Za-z]{1,16}$/).optional(),
    path: z.string().startsWith('/').max(2048).optional(),
    dataTags: z.string().max(1024).optional().describe('comma-separated data tags the request carries'),
  })
  .strict();

const explanation = z
  .object({
    decision: z.object({ allow: z.boolean(), code: z.string(), rule: z.string().optional(), sourceRule: z.string().optional(), message: z.string() }).loose(),
    caller: z.string(),
    target: z.string(),
    kind: z.string(),
    steps: z.array(z.record(z.string(), z.unknown())),
  })
  .loose();

function tenancyOrThrow(ctx: AdminContext): AdminTenancy {
  if (!ctx.tenancy) throw new AdminError(501, 'not_configured', 'tenancy is not enabled on this gateway');
  return ctx.tenancy;
}

function apiTenant(ctx: AdminContext, name: string): TenantRecord {
  const tenant = tenantOrThrow(ctx.registry, name);
  if (tenant.source === 'config') {
    throw new AdminError(409, 'managed_by_config', `tenant "${name}" is defined in the config file; change its settings there`);
  }
  return tenant;
}

const TENANT = '/admin/v1/tenants/{tenant}';

/** Names of this file's schemas in the OpenAPI document. */
export const TENANCY_SCHEMA_NAMES: ReadonlyArray<[z.ZodType, string]> = [
  [tenantPolicySchema, 'TenantPolicy'],
  [tenantLimitsSchema, 'TenantLimits'],
  [maskingSchema, 'Masking'],
  [policyView, 'PolicyView'],
  [explanation, 'PolicyExplanation'],
  [offboardSummary, 'OffboardSummary'],
  [createAdminTokenBody, 'CreateAdminTokenRequest'],
  [adminTokenCreated, 'AdminTokenCreated'],
  [adminTokenList, 'AdminTokenList'],
];

/** Replaces one section (policy, limits or masking) of an API tenant's spec. */
function putSection<K extends 'policy' | 'limits' | 'masking'>(
  section: K,
  schema: z.ZodType,
  summary: string,
): Route {
  return {
    method: 'PUT',
    path: `${TENANT}/${section}`,
    operationId: `put${section[0]!.toUpperCase()}${section.slice(1)}`,
    summary,
    tag: 'tenants',
    auth: true,
    body: schema,
    responses: { 200: { description: 'stored and applied to this tenant only', schema } },
    errors: [404, 409],
    handle: async ({ params, body }, ctx) => {
      const tenant = apiTenant(ctx, params.tenant!);
      const spec = { ...(tenant.spec ?? {}), [section]: body };
      const stored = await ctx.registry.setTenantSpec(tenant.name, spec);
      return { status: 200, json: (stored.spec ?? {})[section] ?? {} };
    },
  } as Route;
}

export const tenancyRoutes: readonly Route[] = [
  {
    method: 'GET',
    path: `${TENANT}/policy`,
    operationId: 'getPolicy',
    summary: "A tenant's policy and the defaults it falls back to",
    tag: 'tenants',
    auth: true,
    responses: { 200: { description: 'the policy', schema: policyView } },
    errors: [404, 501],
    handle: ({ params }, ctx) => {
      const tenancy = tenancyOrThrow(ctx);
      const tenant = tenantOrThrow(ctx.registry, params.tenant!);
      return {
        status: 200,
        json: { tenant: tenant.name, source: tenant.source, policy: tenancy.spec(tenant.name)?.policy ?? { rules: [] }, defaults: tenancy.defaults() },
      };
    },
  },
  putSection('policy', tenantPolicySchema, "Replace a tenant's policy (validated; applied to this tenant only)"),
  putSection('limits', tenantLimitsSchema, "Replace a tenant's rate limits, quotas and concurrency limits"),
  putSection('masking', maskingSchema, "Replace a tenant's masking settings"),
  {
    method: 'GET',
    path: '/admin/v1/policy/explain',
    operationId: 'explainPolicy',
    summary: 'Would <from> be allowed to call <to>? The decision, the rule that decided and every rule considered',
    tag: 'tenants',
    auth: true,
    query: explainQuery,
    responses: { 200: { description: 'the decision and its explanation', schema: explanation } },
    errors: [404, 501],
    handle: ({ query }, ctx) => {
      const tenancy = tenancyOrThrow(ctx);
      const dataTags = (query.dataTags ?? '')
        .split(',')
        .map((tag) => tag.trim())
        .filter(Boolean);
      for (const tag of dataTags) {
        const ok = dataTagSchema.safeParse(tag);
        if (!ok.success) throw new AdminError(400, 'invalid', `dataTags: "${tag}": ${ok.error.issues[0]!.message}`);
      }
      try {
        const result = tenancy.explain(query.from!, query.to!, {
          ...(query.method ? { method: query.method.toUpperCase() } : {}),
          ...(query.path ? { path: query.path } : {}),
          dataTags,
        });
        return { status: 200, json: result };
      } catch (err) {
        if (err instanceof ExplainError) {
          throw new AdminError(err.code === 'not_found' ? 404 : 400, err.code, err.message);
        }
        throw err;
      }
    },
  },
  {
    method: 'POST',
    path: '/admin/v1/admin-tokens',
    operationId: 'createAdminToken',
    summary: "A read-only Admin API token for one tenant's operators: its tenant, agents, policy, certificates and audit records",
    tag: 'tenants',
    auth: true,
    body: createAdminTokenBody,
    responses: { 201: { description: 'created; the token is shown only now', schema: adminTokenCreated } },
    errors: [404, 501],
    handle: async ({ body }, ctx) => {
      const tenancy = tenancyOrThrow(ctx);
      const input = body as z.output<typeof createAdminTokenBody>;
      tenantOrThrow(ctx.registry, input.tenant);
      return { status: 201, json: await tenancy.createAdminToken(input.tenant, input.description) };
    },
  },
  {
    method: 'GET',
    path: '/admin/v1/admin-tokens',
    operationId: 'listAdminTokens',
    summary: 'Tenant-scoped admin tokens (ids and tenants; never the tokens)',
    tag: 'tenants',
    auth: true,
    query: adminTokensQuery,
    responses: { 200: { description: 'the tokens', schema: adminTokenList } },
    errors: [501],
    handle: async ({ query }, ctx) => ({ status: 200, json: { tokens: await tenancyOrThrow(ctx).listAdminTokens(query.tenant) } }),
  },
  {
    method: 'DELETE',
    path: '/admin/v1/admin-tokens/{id}',
    operationId: 'deleteAdminToken',
    summary: 'Revoke a tenant-scoped admin token (effective at once)',
    tag: 'tenants',
    auth: true,
    responses: { 204: { description: 'revoked' } },
    errors: [404, 501],
    handle: async ({ params }, ctx) => {
      if (!(await tenancyOrThrow(ctx).deleteAdminToken(params.id!))) throw new AdminError(404, 'not_found', `no admin token "${params.id}"`);
      return { status: 204 };
    },
  },
];
