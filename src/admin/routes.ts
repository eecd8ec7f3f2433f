import type { z } from 'zod';
import { normalizeTime, type AuditLog } from '../audit/index.js';
import type { BootstrapTokens } from '../identity/bootstrap.js';
import type { TokenService } from '../identity/oauth.js';
import { PkiError, type Pki } from '../identity/types.js';
import type { IdentityStore } from '../store/types.js';
import type { RegistryAdmin } from '../registry/types.js';
import { AdminError, tenantOrThrow, type Reply } from './http.js';
import type { GatewayMetrics } from './metrics.js';
import { GATEWAY_VERSION } from './version.js';
import { offboardSummary, tenancyRoutes, type AdminTenancy } from './routes-tenancy.js';
import { routingRoutes, type AdminRouting } from './routes-routing.js';
import {
  agentList,
  agentView,
  auditExportQuery,
  auditList,
  auditQuery,
  auditVerifyResult,
  bootstrapTokenCreated,
  certificateList,
  certificateRecord,
  certificatesQuery,
  clientSecretCreated,
  createBootstrapTokenBody,
  revokeBody,
  revokedSerials,
  createAgentBody,
  createTenantBody,
  gatewayStatus,
  probeStatus,
  putAgentBody,
  tenantList,
  tenantRecord,
} from './schemas.js';

/** What the gateway reports about itself for GET /admin/v1/status. */
export interface StatusSnapshot {
  listeners: Record<string, string>;
  inflight: number;
  tenants: number;
  stateDir: string;
}

/** The identity parts the Admin API drives (enrollment tokens, certificates, client secrets, audit). */
export interface AdminIdentity {
  pki: Pki;
  bootstrap: BootstrapTokens;
  /** The OAuth token service; without it the client-secret route answers 501. */
  tokens?: Pick<TokenService, 'createClientSecret'>;
  audit: AuditLog;
  /** Where issued certificates are listed from (the durable store). */
  store: Pick<IdentityStore, 'listIssuedCerts'>;
}

/** What route handlers may use. */
export interface AdminContext {
  registry: RegistryAdmin;
  /** Policy, onboarding/offboarding; absent: those routes answer 501 (and tenants are created bare). */
  tenancy?: AdminTenancy;
  /** Capability search and route explanations; absent: those routes answer 501. */
  routing?: AdminRouting;
  /** Absent when the gateway runs without its built-in identity (routes that need it answer 501). */
  identity?: AdminIdentity;
  metrics: GatewayMetrics;
  isReady(): boolean;
  status(): StatusSnapshot;
  startedAt: Date;
  /** The OpenAPI document generated from adminRoutes. */
  openApi: object;
}

export type HttpMethod = 'GET' | 'POST' | 'PUT' | 'DELETE';

export interface ResponseSpec {
  description: string;
  schema?: z.ZodType;
  /** Defaults to application/json when a schema is given. */
  contentType?: string;
}

export interface Route<Body = unknown> {
  method: HttpMethod;
  /** OpenAPI path template; `{param}` segments are DNS-label names. */
  path: string;
  operationId: string;
  summary: string;
  tag: 'health' | 'status' | 'tenants' | 'agents' | 'identity' | 'audit';
  /** Whether the route requires `Authorization: Bearer <admin token>`. */
  auth: boolean;
  /**
   * A tenant-scoped admin token may call it (reads only): the `{tenant}` in the path must be its
   * tenant, and a `tenant` query filter is forced to it. Other routes need the operator token.
   */
  tenantReadable?: boolean;
  /** The JSON request body, validated before the handler runs. */
  body?: z.ZodType<Body>;
  /** A POST whose body may be left out entirely (then validated as `{}`). */
  bodyOptional?: boolean;
  /** Query parameters (all optional strings), validated before the handler runs. */
  query?: z.ZodObject;
  responses: Record<number, ResponseSpec>;
  /** Error statuses this route can answer besides the generic ones (401, 400/413/415 for bodies). */
  errors: number[];
  handle(
    input: { params: Record<string, string>; body: Body; query: Record<string, string | undefined> },
    ctx: AdminContext,
  ): Reply | Promise<Reply>;
}

function route<Body = undefined>(definition: Route<Body>): Route {
  return definition as unknown as Route;
}

function agentOrThrow(ctx: AdminContext, tenant: string, name: string) {
  tenantOrThrow(ctx.registry, tenant);
  const agent = ctx.registry.getAgent(tenant, name);
  if (!agent) throw new AdminError(404, 'not_found', `agent "${name}" does not exist in tenant "${tenant}"`);
  return agent;
}

function identityOrThrow(ctx: AdminContext): AdminIdentity {
  if (!ctx.identity) throw new AdminError(501, 'not_configured', 'the built-in identity (CA, enrollment) is not enabled on this gateway');
  return ctx.identity;
}

/** PKI failures in Admin API words. */
async function pkiCall<T>(run: () => Promise<T>): Promise<T> {
  try {
    return await run();
  } catch (err) {
    if (err instanceof PkiError) {
      const status = err.code === 'not_found' || err.code === 'unknown_tenant' ? 404 : 400;
      throw new AdminError(status, status === 404 ? 'not_found' : 'invalid', err.message);
    }
    throw err;
  }
}

/** The audit filters common to list and export (query already validated). */
function auditFilter(query: Record<string, string | undefined>) {
  return {
    ...(query.tenant ? { tenant: query.tenant } : {}),
    ...(query.action ? { action: query.action } : {}),
    ...(query.since ? { since: normalizeTime(query.since, 'since') } : {}),
    ...(query.until ? { until: normalizeTime(query.until, 'until') } : {}),
    ...(query.after ? { afterSeq: Number(query.after) } : {}),
  };
}

const TENANT = '/admin/v1/tenants/{tenant}';
const AGENT = '/admin/v1/tenants/{tenant}/agents/{agent}';

/**
 * The one table that both dispatches requests and generates the OpenAPI document, so the two
 * cannot drift.
 */
export const adminRoutes: readonly Route[] = [
  route({
    method: 'GET',
    path: '/healthz',
    operationId: 'getLiveness',
    summary: 'Liveness: 200 while the process is alive',
    tag: 'health',
    auth: false,
    responses: { 200: { description: 'alive', schema: probeStatus } },
    errors: [],
    handle: () => ({ status: 200, json: { status: 'ok' } }),
  }),
  route({
    method: 'GET',
    path: '/readyz',
    operationId: 'getReadiness',
    summary: 'Readiness: 200 while accepting traffic, 503 while draining',
    tag: 'health',
    auth: false,
    responses: {
      200: { description: 'ready', schema: probeStatus },
      503: { description: 'draining (shutting down)', schema: probeStatus },
    },
    errors: [],
    handle: (_input, ctx) => (ctx.isReady() ? { status: 200, json: { status: 'ok' } } : { status: 503, json: { status: 'draining' } }),
  }),
  route({
    method: 'GET',
    path: '/metrics',
    operationId: 'getMetrics',
    summary: 'Prometheus metrics (text exposition format)',
    tag: 'health',
    auth: false,
    responses: { 200: { description: 'Prometheus text', contentType: 'text/plain; version=0.0.4' } },
    errors: [],
    handle: async (_input, ctx) => {
      const { contentType, body } = await ctx.metrics.scrape();
      return { status: 200, text: body, contentType };
    },
  }),
  route({
    method: 'GET',
    path: '/admin/v1/openapi.json',
    operationId: 'getOpenApi',
    summary: 'This OpenAPI 3.1 document',
    tag: 'status',
    auth: false,
    responses: { 200: { description: 'OpenAPI 3.1 document', contentType: 'application/json' } },
    errors: [],
    handle: (_input, ctx) => ({ status: 200, json: ctx.openApi }),
  }),
  route({
    method: 'GET',
    path: '/admin/v1/status',
    operationId: 'getStatus',
    summary: 'Version, uptime, listeners and counts',
    tag: 'status',
    auth: true,
    responses: { 200: { description: 'gateway status', schema: gatewayStatus } },
    errors: [],
    handle: (_input, ctx) => {
      const snapshot = ctx.status();
      const tenants = ctx.registry.listTenants();
      const agents = tenants.reduce((sum, tenant) => sum + ctx.registry.listAgents(tenant.name).length, 0);
      return {
        status: 200,
        json: {
          version: GATEWAY_VERSION,
          startedAt: ctx.startedAt.toISOString(),
          uptimeSeconds: Math.round((Date.now() - ctx.startedAt.getTime()) / 1000),
          ready: ctx.isReady(),
          ...snapshot,
          agents,
        },
      };
    },
  }),
  route({
    method: 'GET',
    path: '/admin/v1/tenants',
    operationId: 'listTenants',
    summary: 'List tenants',
    tag: 'tenants',
    auth: true,
    responses: { 200: { description: 'all tenants', schema: tenantList } },
    errors: [],
    handle: (_input, ctx) => ({ status: 200, json: { tenants: ctx.registry.listTenants() } }),
  }),
  route<z.output<typeof createTenantBody>>({
    method: 'POST',
    path: '/admin/v1/tenants',
    operationId: 'createTenant',
    summary: 'Onboard a tenant: its CA, data key, policy and limits (deny-by-default policy unless given)',
    tag: 'tenants',
    auth: true,
    body: createTenantBody,
    responses: { 201: { description: 'created', schema: tenantRecord } },
    errors: [409],
    handle: async ({ body }, ctx) => {
      const { name, ...rest } = body;
      const spec = Object.keys(rest).length > 0 ? (rest as Record<string, unknown>) : undefined;
      const record = ctx.tenancy ? await ctx.tenancy.onboard(name, spec, 'admin-token') : await ctx.registry.createTenant(name, spec);
      return { status: 201, json: record };
    },
  }),
  route({
    method: 'GET',
    path: TENANT,
    operationId: 'getTenant',
    tenantReadable: true,
    summary: 'One tenant',
    tag: 'tenants',
    auth: true,
    responses: { 200: { description: 'the tenant', schema: tenantRecord } },
    errors: [404],
    handle: ({ params }, ctx) => ({ status: 200, json: tenantOrThrow(ctx.registry, params.tenant!) }),
  }),
  route({
    method: 'DELETE',
    path: TENANT,
    operationId: 'deleteTenant',
    summary:
      'Offboard a tenant (irreversible): remove its agents, cut its traffic, revoke its certificates, retire its CAs and destroy its data keys',
    tag: 'tenants',
    auth: true,
    responses: { 200: { description: 'offboarded', schema: offboardSummary } },
    errors: [404, 409],
    handle: async ({ params }, ctx) => {
      if (!ctx.tenancy) {
        await ctx.registry.deleteTenant(params.tenant!);
        return { status: 200, json: { tenant: params.tenant!, agentsRemoved: 0, certificatesRevoked: 0, casRetired: [], requestsCut: 0, dataKeysDestroyed: 0 } };
      }
      return { status: 200, json: await ctx.tenancy.offboard(params.tenant!, 'admin-token') };
    },
  }),
  route({
    method: 'GET',
    path: `${TENANT}/agents`,
    operationId: 'listAgents',
    tenantReadable: true,
    summary: "List a tenant's agents",
    tag: 'agents',
    auth: true,
    responses: { 200: { description: "the tenant's agents", schema: agentList } },
    errors: [404],
    handle: ({ params }, ctx) => ({ status: 200, json: { agents: ctx.registry.listAgents(params.tenant!) } }),
  }),
  route<z.output<typeof createAgentBody>>({
    method: 'POST',
    path: `${TENANT}/agents`,
    operationId: 'createAgent',
    summary: 'Register an agent',
    tag: 'agents',
    auth: true,
    body: createAgentBody,
    responses: { 201: { description: 'registered', schema: agentView } },
    errors: [404, 409],
    handle: async ({ params, body }, ctx) => {
      const { name, ...spec } = body;
      return { status: 201, json: await ctx.registry.createAgent(params.tenant!, name, spec) };
    },
  }),
  route({
    method: 'GET',
    path: AGENT,
    operationId: 'getAgent',
    tenantReadable: true,
    summary: 'One agent, with endpoint health and card skills',
    tag: 'agents',
    auth: true,
    responses: { 200: { description: 'the agent', schema: agentView } },
    errors: [404],
    handle: ({ params }, ctx) => ({ status: 200, json: agentOrThrow(ctx, params.tenant!, params.agent!) }),
  }),
  route<z.output<typeof putAgentBody>>({
    method: 'PUT',
    path: AGENT,
    operationId: 'putAgent',
    summary: 'Replace an agent (creates it when absent)',
    tag: 'agents',
    auth: true,
    body: putAgentBody,
    responses: {
      200: { description: 'replaced', schema: agentView },
      201: { description: 'created', schema: agentView },
    },
    errors: [404, 409],
    handle: async ({ params, body }, ctx) => {
      const { name, ...spec } = body;
      if (name !== undefined && name !== params.agent) {
        throw new AdminError(400, 'invalid', `name: "${name}" differs from the agent named in the path ("${params.agent}")`);
      }
      const [view, created] = await ctx.registry.putAgent(params.tenant!, params.agent!, spec);
      return { status: created ? 201 : 200, json: view };
    },
  }),
  route({
    method: 'DELETE',
    path: AGENT,
    operationId: 'deleteAgent',
    summary: 'Remove an agent',
    tag: 'agents',
    auth: true,
    responses: { 204: { description: 'removed' } },
    errors: [404, 409],
    handle: async ({ params }, ctx) => {
      await ctx.registry.deleteAgent(params.tenant!, params.agent!);
      return { status: 204 };
    },
  }),
  route({
    method: 'POST',
    path: `${AGENT}/refresh-card`,
    operationId: 'refreshAgentCard',
    summary: "Fetch the agent's A2A Agent Card now",
    tag: 'agents',
    auth: true,
    responses: { 200: { description: 'the agent after the refresh', schema: agentView } },
    errors: [404],
    handle: async ({ params }, ctx) => ({ status: 200, json: await ctx.registry.refreshCard(params.tenant!, params.agent!) }),
  }),
  route<z.output<typeof createBootstrapTokenBody>>({
    method: 'POST',
    path: `${AGENT}/bootstrap-tokens`,
    operationId: 'createBootstrapToken',
    summary: 'Create a one-time enrollment token for the agent (POST /enroll on the agent listener)',
    tag: 'identity',
    auth: true,
    body: createBootstrapTokenBody,
    bodyOptional: true,
    responses: { 201: { description: 'created; the token is shown only now', schema: bootstrapTokenCreated } },
    errors: [404, 501],
    handle: async ({ params, body }, ctx) => {
      const identity = identityOrThrow(ctx);
      agentOrThrow(ctx, params.tenant!, params.agent!);
      const created = await identity.bootstrap.create(params.tenant!, params.agent!, body.ttlMs, 'admin-token');
      return { status: 201, json: { ...created, tenant: params.tenant!, agent: params.agent! } };
    },
  }),
  route({
    method: 'GET',
    path: `${TENANT}/certificates`,
    operationId: 'listCertificates',
    tenantReadable: true,
    summary: "Certificates issued by the tenant's CA (filter with ?agent= and ?revoked=true|false)",
    tag: 'identity',
    auth: true,
    query: certificatesQuery,
    responses: { 200: { description: 'issued certificates', schema: certificateList } },
    errors: [404, 501],
    handle: async ({ params, query }, ctx) => {
      const identity = identityOrThrow(ctx);
      tenantOrThrow(ctx.registry, params.tenant!);
      const certificates = await identity.store.listIssuedCerts({
        tenant: params.tenant!,
        ...(query.agent ? { agent: query.agent } : {}),
        ...(query.revoked ? { revoked: query.revoked === 'true' } : {}),
      });
      return { status: 200, json: { certificates } };
    },
  }),
  route<z.output<typeof revokeBody>>({
    method: 'POST',
    path: '/admin/v1/certificates/{serial}/revoke',
    operationId: 'revokeCertificate',
    summary: "Revoke one certificate; its CA's CRL is regenerated and live connections using it are closed",
    tag: 'identity',
    auth: true,
    body: revokeBody,
    responses: { 200: { description: 'the revoked certificate', schema: certificateRecord } },
    errors: [404, 501],
    handle: async ({ params, body }, ctx) => {
      const identity = identityOrThrow(ctx);
      const record = await pkiCall(() => identity.pki.revoke(params.serial!.toLowerCase(), body.reason, 'admin-token'));
      return { status: 200, json: record };
    },
  }),
  route<z.output<typeof revokeBody>>({
    method: 'POST',
    path: `${AGENT}/revoke`,
    operationId: 'revokeAgentCertificates',
    summary: "Revoke every unexpired certificate of the agent",
    tag: 'identity',
    auth: true,
    body: revokeBody,
    responses: { 200: { description: 'the serials revoked now', schema: revokedSerials } },
    errors: [404, 501],
    handle: async ({ params, body }, ctx) => {
      const identity = identityOrThrow(ctx);
      tenantOrThrow(ctx.registry, params.tenant!);
      const revoked = await pkiCall(() => identity.pki.revokeAgent(params.tenant!, params.agent!, body.reason, 'admin-token'));
      return { status: 200, json: { revoked } };
    },
  }),
  route({
    method: 'POST',
    path: `${AGENT}/client-secret`,
    operationId: 'createClientSecret',
    summary: 'Create (or replace) the OAuth client secret of the agent (client-credentials grant)',
    tag: 'identity',
    auth: true,
    responses: { 201: { description: 'created; the secret is shown only now', schema: clientSecretCreated } },
    errors: [404, 501],
    handle: async ({ params }, ctx) => {
      const tokens = identityOrThrow(ctx).tokens;
      if (!tokens) throw new AdminError(501, 'not_configured', 'the OAuth token service is not enabled on this gateway');
      agentOrThrow(ctx, params.tenant!, params.agent!);
      const clientSecret = await pkiCall(() => tokens.createClientSecret(params.tenant!, params.agent!, { actor: 'admin-token' }));
      return { status: 201, json: { clientId: params.agent!, clientSecret } };
    },
  }),
  route({
    method: 'GET',
    path: '/admin/v1/audit',
    operationId: 'listAudit',
    tenantReadable: true,
    summary: 'Audit records in order (filter with ?tenant=, ?action=, ?since=, ?until=; page with ?after=<seq>&limit=)',
    tag: 'audit',
    auth: true,
    query: auditQuery,
    responses: { 200: { description: 'audit records, oldest first', schema: auditList } },
    errors: [501],
    handle: async ({ query }, ctx) => {
      const identity = identityOrThrow(ctx);
      const limit = query.limit === undefined ? 100 : Math.min(Math.max(Number(query.limit), 1), 1000);
      const records = await identity.audit.list({ ...auditFilter(query), limit });
      return { status: 200, json: { records } };
    },
  }),
  route({
    method: 'GET',
    path: '/admin/v1/audit/export',
    operationId: 'exportAudit',
    tenantReadable: true,
    summary: 'Audit records as JSON Lines for a SIEM, streamed (same filters as listAudit; no limit unless ?limit=)',
    tag: 'audit',
    auth: true,
    query: auditExportQuery,
    responses: { 200: { description: 'one record per line, oldest first, with seq, prevHash and hash', contentType: 'application/x-ndjson' } },
    errors: [501],
    handle: ({ query }, ctx) => {
      const identity = identityOrThrow(ctx);
      const filter = { ...auditFilter(query), ...(query.limit !== undefined ? { limit: Number(query.limit) } : {}) };
      return { status: 200, contentType: 'application/x-ndjson', stream: identity.audit.export(filter) };
    },
  }),
  route({
    method: 'GET',
    path: '/admin/v1/audit/verify',
    operationId: 'verifyAudit',
    summary: 'Verify the whole audit trail (hash chain and signed checkpoints); names the first bad record',
    tag: 'audit',
    auth: true,
    responses: { 200: { description: 'the verdict (ok false names the first bad record)', schema: auditVerifyResult } },
    errors: [501],
    handle: async (_input, ctx) => ({ status: 200, json: await identityOrThrow(ctx).audit.verify() }),
  }),
  ...tenancyRoutes,
  ...routingRoutes,
];
