import { z } from 'zod';
import { ExplainError } from '../tenancy/runtime.js';
import { AdminError, tenantOrThrow } from './http.js';
import type { AdminContext, Route } from './routes.js';

export interface CapabilityQueryInput {
  q?: string;
  tags?: string[];
}

/** Capability search and route explanations, as the gateway's router answers them. */
export interface AdminRouting {
  /** Skills matching the query in these tenants (all tenants when undefined), best first. */
  search(tenants: readonly string[] | undefined, query: CapabilityQueryInput, limit: number, viewer?: string): unknown[];
  /**
   * What the router would decide for the query in `tenant`, with every candidate's score, load and
   * health; `from` (`<tenant>/<agent>` or "anonymous") evaluates the policy as that caller.
   */
  explain(tenant: string, query: CapabilityQueryInput, from: string | undefined): unknown | Promise<unknown>;
}

const tagsParam = z.string().max(1024).optional().describe('comma-separated tags every returned skill (with its agent\'s tags) must have');
const textParam = z.string().max(4096).optional();

const capabilitiesQuery = z
  .object({
    q: textParam.describe('free text, matched against skill names, descriptions, examples and tags'),
    tags: tagsParam,
    tenant: z.string().optional().describe('only this tenant (a tenant-scoped token always sees only its own)'),
    limit: z.string().regex(/^[0-9]{1,3}$/).optional().describe('at most this many skills (default 20, at most 200)'),
  })
  .strict();

const reachableQuery = capabilitiesQuery.omit({ tenant: true });

const routeExplainQuery = z
  .object({
    tenant: z.string().describe('the tenant whose agents are candidates'),
    q: textParam.describe('the message text to route'),
    tags: tagsParam,
    from: z.string().optional().describe('evaluate the policy as this caller: <tenant>/<agent> or "anonymous" (default: the policy is not evaluated)'),
  })
  .strict();

const skillMatch = z
  .object({
    tenant: z.string(),
    agent: z.string(),
    skillId: z.string(),
    score: z.number(),
    confidence: z.number(),
    skill: z.record(z.string(), z.unknown()),
    explanation: z.record(z.string(), z.unknown()),
  })
  .loose();

const routeExplanation = z
  .object({
    tenant: z.string(),
    query: z.record(z.string(), z.unknown()),
    decision: z.record(z.string(), z.unknown()).describe('the chosen agent (via, skill, score, confidence, failover alternatives) or why none'),
    candidates: z.array(z.record(z.string(), z.unknown())).describe('every agent considered: score, confidence, load, healthy endpoints, and why excluded'),
    policyEvaluated: z.boolean(),
  })
  .loose();

const skillMatchList = z.object({ skills: z.array(skillMatch) });

export const ROUTING_SCHEMA_NAMES: ReadonlyArray<[z.ZodType, string]> = [
  [skillMatch, 'SkillMatch'],
  [skillMatchList, 'SkillMatchList'],
  [routeExplanation, 'RouteExplanation'],
];

function routingOrThrow(ctx: AdminContext): AdminRouting {
  if (!ctx.routing) throw new AdminError(501, 'not_implemented', 'capability routing is not running in this gateway');
  return ctx.routing;
}

/** A search's text and tags (both optional: nothing lists every skill). */
function searchQuery(query: Record<string, string | undefined>): CapabilityQueryInput {
  const q = query.q?.trim();
  const tags = splitTags(query.tags);
  return { ...(q ? { q } : {}), ...(tags.length ? { tags } : {}) };
}

const searchLimit = (query: Record<string, string | undefined>) => Math.min(Number(query.limit ?? 20), 200);

const splitTags = (tags: string | undefined) =>
  (tags ?? '')
    .split(',')
    .map((tag) => tag.trim())
    .filter(Boolean);

function queryOf(q: string | undefined, tags: string | undefined): CapabilityQueryInput {
  const list = splitTags(tags);
  if (!q?.trim() && list.length === 0) throw new AdminError(400, 'invalid', 'give q (text) or tags, or both');
  return { ...(q?.trim() ? { q } : {}), ...(list.length ? { tags: list } : {}) };
}

export const routingRoutes: readonly Route[] = [
  {
    method: 'GET',
    path: '/admin/v1/capabilities',
    operationId: 'searchCapabilities',
    tenantReadable: true,
    summary: 'Search the capability registry: skills of every agent (from Agent Cards and config), ranked like intent routing ranks them',
    tag: 'agents',
    auth: true,
    query: capabilitiesQuery,
    responses: { 200: { description: 'matching skills, best first', schema: skillMatchList } },
    errors: [404, 501],
    handle: ({ query }, ctx) => {
      const routing = routingOrThrow(ctx);
      if (query.tenant !== undefined) tenantOrThrow(ctx.registry, query.tenant);
      const skills = routing.search(query.tenant === undefined ? undefined : [query.tenant], searchQuery(query), searchLimit(query));
      return { status: 200, json: { skills } };
    },
  },
  {
    method: 'GET',
    path: '/admin/v1/tenants/{tenant}/capabilities',
    operationId: 'searchReachableCapabilities',
    tenantReadable: true,
    summary: "Skills a tenant's agents may reach: its own and other tenants' where both tenants' policies allow it",
    tag: 'agents',
    auth: true,
    query: reachableQuery,
    responses: { 200: { description: 'matching skills, best first', schema: skillMatchList } },
    errors: [404, 501],
    handle: ({ params, query }, ctx) => {
      const routing = routingOrThrow(ctx);
      tenantOrThrow(ctx.registry, params.tenant!);
      return { status: 200, json: { skills: routing.search(undefined, searchQuery(query), searchLimit(query), params.tenant!) } };
    },
  },
  {
    method: 'GET',
    path: '/admin/v1/route/explain',
    operationId: 'explainRoute',
    tenantReadable: true,
    summary: 'Which agent would the gateway route this message (or these tags) to, and why: candidates, scores, load, health, exclusions',
    tag: 'agents',
    auth: true,
    query: routeExplainQuery,
    responses: { 200: { description: 'the decision and every candidate', schema: routeExplanation } },
    errors: [404, 501],
    handle: async ({ query }, ctx) => {
      const routing = routingOrThrow(ctx);
      tenantOrThrow(ctx.registry, query.tenant!);
      try {
        return { status: 200, json: await routing.explain(query.tenant!, queryOf(query.q, query.tags), query.from) };
      } catch (err) {
        // The policy could not be evaluated as `from` (unknown tenant or agent, malformed name).
        if (err instanceof ExplainError) throw new AdminError(err.code === 'not_found' ? 404 : 400, err.code, `from: ${err.message}`);
        throw err;
      }
    },
  },
];
