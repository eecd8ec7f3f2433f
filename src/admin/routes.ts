import type { z } from 'zod';
import type { RegistryAdmin } from '../registry/types.js';
import { AdminError, type Reply } from './http.js';
import type { GatewayMetrics } from './metrics.js';
import { GATEWAY_VERSION } from './version.js';
import {
  agentList,
  agentView,
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

/** What route handlers may use. */
export interface AdminContext {
  registry: RegistryAdmin;
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
  tag: 'health' | 'status' | 'tenants' | 'agents';
  /** Whether the route requires `Authorization: Bearer <admin token>`. */
  auth: boolean;
  /** The JSON request body, validated before the handler runs. */
  body?: z.ZodType<Body>;
  responses: Record<number, ResponseSpec>;
  /** Error statuses this route can answer besides the generic ones (401, 400/413/415 for bodies). */
  errors: number[];
  handle(input: { params: Record<string, string>; body: Body }, ctx: AdminContext): Reply | Promise<Reply>;
}

function route<Body = undefined>(definition: Route<Body>): Route {
  return definition as unknown as Route;
}

function tenantOrThrow(ctx: AdminContext, name: string) {
  const tenant = ctx.registry.getTenant(name);
  if (!tenant) throw new AdminError(404, 'not_found', `tenant "${name}" does not exist`);
  return tenant;
}

function agentOrThrow(ctx: AdminContext, tenant: string, name: string) {
  tenantOrThrow(ctx, tenant);
  const agent = ctx.registry.getAgent(tenant, name);
  if (!agent) throw new AdminError(404, 'not_found', `agent "${name}" does not exist in tenant "${tenant}"`);
  return agent;
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
    summary: 'Create a tenant',
    tag: 'tenants',
    auth: true,
    body: createTenantBody,
    responses: { 201: { description: 'created', schema: tenantRecord } },
    errors: [409],
    handle: async ({ body }, ctx) => ({ status: 201, json: await ctx.registry.createTenant(body.name) }),
  }),
  route({
    method: 'GET',
    path: TENANT,
    operationId: 'getTenant',
    summary: 'One tenant',
    tag: 'tenants',
    auth: true,
    responses: { 200: { description: 'the tenant', schema: tenantRecord } },
    errors: [404],
    handle: ({ params }, ctx) => ({ status: 200, json: tenantOrThrow(ctx, params.tenant!) }),
  }),
  route({
    method: 'DELETE',
    path: TENANT,
    operationId: 'deleteTenant',
    summary: 'Delete a tenant with its agents',
    tag: 'tenants',
    auth: true,
    responses: { 204: { description: 'deleted' } },
    errors: [404, 409],
    handle: async ({ params }, ctx) => {
      await ctx.registry.deleteTenant(params.tenant!);
      return { status: 204 };
    },
  }),
  route({
    method: 'GET',
    path: `${TENANT}/agents`,
    operationId: 'listAgents',
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
];
