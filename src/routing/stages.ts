import type { Logger } from 'pino';
import { readBody } from '../dataplane/body.js';
import { normalizeRest, pathOnly } from '../dataplane/stages.js';
import type { RequestContext } from '../dataplane/context.js';
import { GatewayError, errors } from '../dataplane/errors.js';
import { STOP, type Stage } from '../dataplane/pipeline.js';
import { sendJson } from '../dataplane/respond.js';
import { CARD_PATHS } from '../registry/card.js';
import type { AgentRuntime, EndpointState, RegistryView } from '../registry/types.js';
import type { Skill } from './capabilities/index.js';
import { A2aCallError, inspectA2aCall, ResultIdWatcher, type A2aCall, type A2aVersion } from './a2a.js';
import type { RoutingConfig } from './config.js';
import { countFailover, countRouteDecision } from './decisions.js';
import type { CapabilityRouter, Eligibility, NoRoute, RouteChoice, RouteCandidate } from './router.js';
import type { TaskRoutes } from './task-routes.js';
import { tenantAgentCard, tenantAgentCardV03 } from './tenant-card.js';

const TENANTS_PREFIX = '/tenants/';
const CAPABILITIES_PREFIX = '/capabilities/';
export const CAPABILITY_HEADER = 'x-dmsc-capability';
/** Where a tenant's A2A endpoint lives, relative to /tenants/<tenant>. */
export const TENANT_A2A_PATH = '/a2a';
/** How much of an agent's answer is read for the task and context ids it creates. */
const ID_WATCH_LIMIT = 64 * 1024;
/** JSON-RPC code of "no agent of the tenant handles this" (server-error range, implementation-defined). */
const NO_CAPABLE_AGENT_RPC = -32050;
/** A2A TaskNotFoundError. */
const TASK_NOT_FOUND_RPC = -32001;

export interface CapabilityRoutingDeps {
  router: CapabilityRouter;
  registry: RegistryView;
  taskRoutes: TaskRoutes;
  config: () => RoutingConfig;
  /** For one request: why its caller may not send it to `agent` at `path` (policy), and what that depends on. */
  policyFor: (ctx: RequestContext) => CandidatePolicy;
  /** The balancer: an endpoint of `agent` not in `tried`. */
  pickEndpoint: (agent: AgentRuntime, tried: readonly EndpointState[] | undefined) => EndpointState | undefined;
  logger: Logger;
}

/** The policy check of one request's candidate agents. */
export interface CandidatePolicy {
  /** Why the caller may not send the request to `agent` at `path`, or undefined. */
  readonly check: (agent: AgentRuntime, path: string) => string | undefined;
  /**
   * Names everything `check` depends on besides the agent and path (caller, labels, method, data
   * tags): requests of equal contexts get equal answers, so the router keeps them across decisions.
   */
  readonly context: string;
  /** The caller's tenant (undefined: anonymous): the policies of both tenants decide. */
  readonly callerTenant: string | undefined;
}

interface Address {
  tenant: string;
  /** The segment after the tenant (capability tags for /capabilities/...). */
  rest: string;
  /** What the caller used as the base for this tenant or capability. */
  base: string;
}

/** Splits `<prefix><tenant>/<rest>`; rest is '/'-rooted (query kept). */
function splitTenant(url: string, prefix: string): Address | undefined {
  const end = url.indexOf('/', prefix.length);
  const stop = end < 0 ? url.length : end;
  const query = url.indexOf('?', prefix.length);
  const tenantEnd = query >= 0 && query < stop ? query : stop;
  const tenant = url.slice(prefix.length, tenantEnd);
  if (!tenant) return undefined;
  const rest = url.slice(tenantEnd);
  return { tenant, rest: rest.startsWith('/') ? rest : '/' + rest, base: prefix + tenant };
}

function parseTags(value: string): string[] {
  const tags = value
    .split(',')
    .map((tag) => tag.trim())
    .filter((tag) => tag.length > 0);
  if (tags.length === 0 || tags.length > 16 || tags.some((tag) => tag.length > 64)) {
    throw errors.badRequest('capability tags: 1 to 16 comma-separated tags of at most 64 characters');
  }
  return tags;
}

/** RFC 6901: the value `pointer` designates in `document`, or undefined. */
function valueAt(document: unknown, pointer: string): unknown {
  let value = document;
  for (const raw of pointer.split('/').slice(1)) {
    const token = raw.replaceAll('~1', '/').replaceAll('~0', '~');
    if (Array.isArray(value)) value = /^(0|[1-9][0-9]*)$/.test(token) ? value[Number(token)] : undefined;
    else if (value !== null && typeof value === 'object' && Object.hasOwn(value, token)) value = (value as Record<string, unknown>)[token];
    else return undefined;
  }
  return value;
}

function isJson(ctx: RequestContext): boolean {
  const type = ctx.req.headers['content-type'];
  return typeof type === 'string' && /^application\/(?:[\w.+-]+\+)?json\b/i.test(type);
}

function a2aInterface(agent: AgentRuntime, version: A2aVersion): string | undefined {
  return agent.a2aInterfaces.find((entry) => entry.version === version)?.path;
}

function noRoute(tenant: string, result: NoRoute, what: string): GatewayError {
  countRouteDecision(tenant, result.reason);
  const closest = result.closest.map((candidate: RouteCandidate) => ({ agent: candidate.agent, skill: candidate.skill, confidence: candidate.confidence }));
  const error = new GatewayError(
    404,
    'no_capable_agent',
    result.reason === 'not_eligible'
      ? `no agent of tenant "${tenant}" that this caller may reach (policy, health, A2A version) handles ${what}`
      : `no agent of tenant "${tenant}" matches ${what}${result.reason === 'low_confidence' ? ' confidently enough' : ''}${closest.length ? `; closest: ${closest.map((c) => `${c.agent} (${c.skill}, ${c.confidence})`).join(', ')}` : ''}`,
  );
  error.details = { closest };
  error.rpcCode = NO_CAPABLE_AGENT_RPC;
  return error;
}

/**
 * Capability and intent addressing, before the agent-address route stage:
 * - `/tenants/<t>/.well-known/agent-card.json` (and `agent.json`): the tenant as one A2A agent;
 * - `POST /tenants/<t>/a2a`: A2A JSON-RPC to the tenant; a new message goes to the agent whose
 *   skills match its text best, calls on a task (and replies in a task or conversation) go to the
 *   agent that owns it;
 * - `/capabilities/<t>/<tag,tag>/<rest>`, or `/tenants/<t>/<rest>` with `x-dmsc-capability:
 *   tag,tag`: an agent having all the tags, the least loaded of them.
 * Candidates the caller's policy does not allow are never chosen; the authorize stage still
 * decides on the chosen one. Leaves other requests to the route stage.
 */
export function capabilityRouteStage(deps: CapabilityRoutingDeps): Stage {
  const { router, registry, config } = deps;

  const tenantOrThrow = (tenant: string) => {
    if (!registry.hasTenant(tenant)) throw errors.notFound(`unknown tenant "${tenant}"`);
  };

  const serveCard = (ctx: RequestContext, address: Address, v03: boolean): typeof STOP => {
    const url = `${ctx.listener.scheme}://${ctx.authority}${address.base}${TENANT_A2A_PATH}`;
    const agents: { name: string; skills: readonly Skill[] }[] = [];
    const policy = deps.policyFor(ctx);
    for (const entry of router.index.agentsOf(address.tenant)) {
      const agent = registry.findAgent(address.tenant, entry.agentKey.slice(address.tenant.length + 1));
      if (!agent || agent.a2aInterfaces.length === 0) continue;
      const path = agent.a2aInterfaces[0]!.path;
      if (policy.check(agent, path) !== undefined) continue;
      agents.push({ name: agent.name, skills: entry.skills });
    }
    const input = { tenant: address.tenant, url, agents };
    sendJson(ctx, 200, v03 ? tenantAgentCardV03(input) : tenantAgentCard(input), { 'cache-control': 'no-cache' });
    return STOP;
  };

  /** Points the request at `agent` (path `rest`) and arms failover to `alternatives`. */
  const routeTo = (
    ctx: RequestContext,
    address: Address,
    via: string,
    agent: AgentRuntime,
    rest: string,
    alternatives: readonly AgentRuntime[],
    restFor: (agent: AgentRuntime) => string | undefined,
  ) => {
    countRouteDecision(address.tenant, via);
    ctx.agent = agent;
    ctx.target = { tenant: address.tenant, agent: agent.name, rest, baseUrl: `${ctx.listener.scheme}://${ctx.authority}${address.base}` };
    ctx.routedByGateway = true;
    if (alternatives.length === 0) return;
    const queue = [...alternatives];
    ctx.failover = () => {
      while (queue.length > 0) {
        const next = queue.shift()!;
        const nextRest = restFor(next);
        if (nextRest === undefined) continue;
        const endpoint = deps.pickEndpoint(next, ctx.tried);
        if (!endpoint) continue;
        const from = ctx.agent!.key;
        ctx.agent = next;
        ctx.target = { ...ctx.target!, agent: next.name, rest: nextRest };
        ctx.routeReason = { ...ctx.routeReason, to: next.key, failoverFrom: [...((ctx.routeReason?.failoverFrom as string[] | undefined) ?? []), from] };
        countFailover();
        deps.logger.info({ requestId: ctx.id, from, to: next.key }, 'failover to the next-best agent');
        return endpoint;
      }
      return undefined;
    };
  };

  const routeByTags = (ctx: RequestContext, address: Address, tags: string[], rest: string): undefined => {
    const path = pathOnly(rest);
    const policy = deps.policyFor(ctx);
    const eligible: Eligibility = (agent) => policy.check(agent, path);
    const result = router.route(address.tenant, { tags }, eligible, { key: `${policy.context}\npath ${path}`, callerTenant: policy.callerTenant });
    if (!result.agent) throw noRoute(address.tenant, result, `the capability ${tags.join(',')}`);
    routeTo(ctx, address, 'tags', result.agent, rest, result.alternatives, () => rest);
    ctx.routeReason = { to: result.agent.key, via: 'tags', tags, ...(result.skill ? { skill: result.skill } : {}) };
    ctx.jsonRpc = ctx.req.method === 'POST' && result.agent.jsonRpcPaths.has(path);
    return undefined;
  };

  /** A plain JSON request to the tenant: the query text is the configured field of its body. */
  const routeByJsonField = (ctx: RequestContext, address: Address, pointer: string): Promise<void> => {
    const limit = config().intent.maxBodyBytes;
    const rest = normalizeRest(address.rest);
    const path = pathOnly(rest);
    return readBody(ctx, limit).then((body) => {
      if (!body.complete) throw errors.bodyTooLarge(limit);
      let document: unknown;
      try {
        document = JSON.parse(Buffer.concat(body.chunks, body.length).toString('utf8'));
      } catch {
        throw errors.badRequest(`the body is not JSON: intent routing reads the text at ${pointer}`);
      }
      const text = valueAt(document, pointer);
      if (typeof text !== 'string' || !text.trim()) throw errors.badRequest(`intent routing reads a string at ${pointer} of the JSON body; there is none`);
      const policy = deps.policyFor(ctx);
      const eligible: Eligibility = (agent) => policy.check(agent, path);
      const delegate = (result: RouteChoice | NoRoute) => {
        if (!result.agent) throw noRoute(address.tenant, result, 'this request');
        routeTo(ctx, address, result.via, result.agent, rest, result.alternatives, () => rest);
        ctx.routeReason = {
          to: result.agent.key,
          via: result.via,
          field: pointer,
          ...(result.skill ? { skill: result.skill } : {}),
          confidence: result.confidence,
          candidates: result.candidates.slice(0, 3).map((candidate) => `${candidate.agent}:${candidate.score}/${candidate.load}`),
        };
      };
      const context = { key: `${policy.context}\npath ${path}`, callerTenant: policy.callerTenant };
      const decision = router.routeScored(address.tenant, { text: text.slice(0, config().intent.maxTextChars) }, eligible, context);
      if (decision instanceof Promise) return decision.then(delegate);
      delegate(decision);
      return undefined;
    });
  };

  const routeA2a = (ctx: RequestContext, address: Address, call: A2aCall): void | Promise<void> => {
    const { tenant } = address;
    const version = call.version;
    // An agent of the other version only is reached through the bridge (the forwarder's, see ctx.a2aVersion).
    const restFor = (agent: AgentRuntime) => a2aInterface(agent, version) ?? a2aInterface(agent, version === '1.0' ? '0.3' : '1.0');
    ctx.a2aVersion = version;
    const policy = deps.policyFor(ctx);
    const eligible: Eligibility = (agent) => {
      const path = restFor(agent);
      return path === undefined ? 'speaks no A2A JSON-RPC' : policy.check(agent, path);
    };
    const owned = (kind: 'task' | 'context', id: string) => {
      const name = deps.taskRoutes.ownerOf(tenant, kind, id);
      return name === undefined ? undefined : registry.findAgent(tenant, name);
    };
    const ownerOfTask = call.taskId !== undefined ? owned('task', call.taskId) : undefined;
    if (call.kind === 'task' && !ownerOfTask) {
      const error = new GatewayError(404, 'task_not_found', `task "${call.taskId}" was not routed by this gateway for tenant "${tenant}" (or has expired)`);
      error.rpcCode = TASK_NOT_FOUND_RPC;
      throw error;
    }
    const owner = ownerOfTask ?? (call.kind === 'message' && call.contextId !== undefined ? owned('context', call.contextId) : undefined);
    if (owner) {
      // A follow-up belongs to the agent that has the task: no alternative can take it.
      const path = restFor(owner);
      if (path === undefined) throw errors.badRequest(`agent ${owner.key} owns this task but speaks no A2A JSON-RPC`);
      const via = ownerOfTask ? 'task' : 'context';
      routeTo(ctx, address, via, owner, path, [], restFor);
      ctx.routeReason = { to: owner.key, via, method: call.method };
    } else if (call.kind === 'message') {
      const delegate = (result: RouteChoice | NoRoute) => {
        if (!result.agent) throw noRoute(tenant, result, 'this message');
        routeTo(ctx, address, result.via, result.agent, restFor(result.agent)!, result.alternatives, restFor);
        ctx.routeReason = {
          to: result.agent.key,
          via: result.via,
          method: call.method,
          ...(result.skill ? { skill: result.skill } : {}),
          confidence: result.confidence,
          candidates: result.candidates.slice(0, 3).map((candidate) => `${candidate.agent}:${candidate.score}/${candidate.load}`),
          ...(result.scorers ? { scorers: result.scorers.map((scorer) => (scorer.ok ? scorer.name : `${scorer.name}:failed`)) } : {}),
        };
        watchIds(ctx, tenant, call.stream);
      };
      // Synchronous unless semantic scorers are configured.
      const decision = router.routeScored(tenant, { text: call.text }, eligible, { key: `${policy.context}\na2a ${version}`, callerTenant: policy.callerTenant });
      if (decision instanceof Promise) return decision.then(delegate);
      delegate(decision);
      return;
    }
    if (call.kind === 'message') watchIds(ctx, tenant, call.stream);
  };

  /** Learns the task and context ids of the agent's answer, so follow-ups reach the same agent. */
  const watchIds = (ctx: RequestContext, tenant: string, stream: boolean) => {
    const watcher = new ResultIdWatcher(stream, ID_WATCH_LIMIT, (ids) => {
      if (ctx.status !== 0 && ctx.status >= 300) return;
      try {
        deps.taskRoutes.remember(tenant, ids, ctx.agent!.name);
      } catch (err) {
        deps.logger.error({ err, requestId: ctx.id }, 'could not store the task route');
      }
    });
    const res = ctx.res as unknown as { write: (...args: unknown[]) => boolean; end: (...args: unknown[]) => unknown };
    const write = res.write;
    const end = res.end;
    res.write = function (this: unknown, chunk: unknown, ...rest: unknown[]) {
      if (typeof chunk === 'string' || Buffer.isBuffer(chunk)) watcher.write(chunk);
      return write.call(this, chunk, ...rest);
    };
    res.end = function (this: unknown, chunk?: unknown, ...rest: unknown[]) {
      if (typeof chunk === 'string' || Buffer.isBuffer(chunk)) watcher.write(chunk);
      watcher.end();
      return end.call(this, chunk, ...rest);
    };
  };

  const tenantRequest = (ctx: RequestContext, address: Address): undefined | typeof STOP | Promise<void> => {
    tenantOrThrow(address.tenant);
    const path = pathOnly(address.rest);
    const method = ctx.req.method;
    if ((method === 'GET' || method === 'HEAD') && (CARD_PATHS as readonly string[]).includes(path)) {
      return serveCard(ctx, address, path === CARD_PATHS[1]);
    }
    const header = ctx.req.headers[CAPABILITY_HEADER];
    if (typeof header === 'string') return routeByTags(ctx, address, parseTags(header), normalizeRest(address.rest));
    const jsonField = config().intent.jsonField;
    if (path !== TENANT_A2A_PATH && path !== TENANT_A2A_PATH + '/' && jsonField !== undefined && method === 'POST' && isJson(ctx)) {
      return routeByJsonField(ctx, address, jsonField);
    }
    if (path !== TENANT_A2A_PATH && path !== TENANT_A2A_PATH + '/') {
      throw errors.notFound(
        `/tenants/${address.tenant}: use ${TENANT_A2A_PATH} (A2A JSON-RPC), /.well-known/agent-card.json, a ${CAPABILITY_HEADER} header, or (with routing.intent.jsonField) a JSON POST`,
      );
    }
    if (method !== 'POST') throw new GatewayError(405, 'method_not_allowed', `the tenant's A2A endpoint takes POST (JSON-RPC)`, { allow: 'POST' });
    ctx.jsonRpc = true;
    const limit = config().intent.maxBodyBytes;
    return readBody(ctx, limit).then((body) => {
      if (!body.complete) throw errors.bodyTooLarge(limit);
      let call: A2aCall;
      try {
        call = inspectA2aCall(Buffer.concat(body.chunks, body.length), config().intent.maxTextChars);
      } catch (err) {
        if (!(err instanceof A2aCallError)) throw err;
        ctx.jsonRpcId = err.id;
        const error = new GatewayError(err.rpcCode === -32601 ? 404 : 400, 'invalid_a2a_call', err.message);
        error.rpcCode = err.rpcCode;
        throw error;
      }
      ctx.jsonRpcId = call.id;
      return routeA2a(ctx, address, call);
    });
  };

  return {
    name: 'capability-route',
    run(ctx) {
      const url = ctx.req.url ?? '/';
      if (url.startsWith(TENANTS_PREFIX)) {
        const address = splitTenant(url, TENANTS_PREFIX);
        if (!address) throw errors.notFound('no tenant addressed: use /tenants/<tenant>/...');
        return tenantRequest(ctx, address);
      }
      if (url.startsWith(CAPABILITIES_PREFIX)) {
        const address = splitTenant(url, CAPABILITIES_PREFIX);
        if (!address) throw errors.notFound('no tenant addressed: use /capabilities/<tenant>/<tag,tag>/...');
        tenantOrThrow(address.tenant);
        const tagsEnd = address.rest.indexOf('/', 1);
        const segment = address.rest.slice(1, tagsEnd < 0 ? undefined : tagsEnd).split('?')[0]!;
        let tags: string[];
        try {
          tags = parseTags(decodeURIComponent(segment));
        } catch (err) {
          if (err instanceof GatewayError) throw err;
          throw errors.badRequest('capability tags are not valid percent-encoding');
        }
        const rest = tagsEnd < 0 ? '/' : normalizeRest(address.rest.slice(tagsEnd));
        return routeByTags(ctx, { ...address, base: `${address.base}/${segment}` }, tags, rest);
      }
      return undefined;
    },
  };
}
