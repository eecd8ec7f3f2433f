import type { Logger } from 'pino';
import type { LimitsConfig } from '../config/schema.js';
import type { AgentRuntime, RegistryView } from '../registry/types.js';
import { CARD_PATHS as CARD_WELL_KNOWN_PATHS, rewriteAgentCard } from '../registry/card.js';
import type { EndpointBalancer } from '../routing/balancer.js';
import type { RequestContext, TargetAddress } from './context.js';
import { errors } from './errors.js';
import type { Forwarder } from './forwarder.js';
import { STOP, type Stage } from './pipeline.js';
import { sendJson } from './respond.js';

const AGENTS_PREFIX = '/agents/';

/** Request size and concurrency limits, checked before any other work. */
export function limitStage(limits: () => LimitsConfig): Stage & { inflight(): number } {
  let inflight = 0;
  return {
    name: 'limit',
    inflight: () => inflight,
    run(ctx) {
      const current = limits();
      if (inflight >= current.maxConcurrentRequests) throw errors.overloaded();
      const req = ctx.req;
      if (ctx.http2) {
        // HTTP/1.1 header size is enforced by the parser (431 from the listener); HTTP/2 is checked here.
        let bytes = 0;
        const raw = req.rawHeaders;
        for (let i = 0; i < raw.length; i++) bytes += raw[i]!.length + 2;
        if (bytes > current.maxHeaderBytes) throw errors.headersTooLarge(current.maxHeaderBytes);
      }
      const length = req.headers['content-length'];
      if (length !== undefined) {
        const declared = Number(length);
        if (!Number.isSafeInteger(declared) || declared < 0) throw errors.badRequest('invalid content-length');
        if (declared > current.maxBodyBytes) throw errors.bodyTooLarge(current.maxBodyBytes);
      }
      inflight++;
      ctx.admitted = true;
    },
    finish(ctx) {
      if (ctx.admitted) inflight--;
    },
  };
}

/** The path of a request target, without its query. */
export function pathOnly(rest: string): string {
  const q = rest.indexOf('?');
  return q < 0 ? rest : rest.slice(0, q);
}

/** Resolves dot segments (also percent-encoded ones) so a caller cannot climb out of an endpoint's base path. */
export function normalizeRest(rest: string): string {
  if (!rest.includes('/.') && !/%2e/i.test(rest)) return rest;
  const url = new URL(rest, 'http://x');
  return url.pathname + url.search;
}

/**
 * Parses the addressed agent from the path (`/agents/<tenant>/<agent>/<rest>`) or the host
 * (`<agent>.<tenant>.<domain>`).
 */
export function parseTarget(ctx: RequestContext, domain: string): TargetAddress | undefined {
  const url = ctx.req.url ?? '/';
  const scheme = ctx.listener.scheme;
  if (url.startsWith(AGENTS_PREFIX)) {
    const tenantEnd = url.indexOf('/', AGENTS_PREFIX.length);
    if (tenantEnd < 0) return undefined;
    let agentEnd = tenantEnd + 1;
    while (agentEnd < url.length && url[agentEnd] !== '/' && url[agentEnd] !== '?') agentEnd++;
    const tenant = url.slice(AGENTS_PREFIX.length, tenantEnd);
    const agent = url.slice(tenantEnd + 1, agentEnd);
    if (!tenant || !agent) return undefined;
    let rest = agentEnd === url.length ? '/' : url[agentEnd] === '?' ? '/' + url.slice(agentEnd) : url.slice(agentEnd);
    rest = normalizeRest(rest);
    return { tenant, agent, rest, baseUrl: `${scheme}://${ctx.authority}/agents/${tenant}/${agent}` };
  }
  const authority = ctx.authority;
  if (authority.startsWith('[')) return undefined;
  const colon = authority.lastIndexOf(':');
  const host = colon < 0 ? authority : authority.slice(0, colon);
  const suffix = '.' + domain;
  if (!host.endsWith(suffix)) return undefined;
  const labels = host.slice(0, -suffix.length).split('.');
  if (labels.length !== 2 || !labels[0] || !labels[1]) return undefined;
  return { tenant: labels[1], agent: labels[0], rest: normalizeRest(url), baseUrl: `${scheme}://${authority}` };
}

export function routeStage(registry: RegistryView, domain: () => string): Stage {
  return {
    name: 'route',
    run(ctx) {
      if (ctx.agent) return; // capability routing chose it
      const target = parseTarget(ctx, domain());
      if (!target) {
        throw errors.notFound(`no agent addressed: use /agents/<tenant>/<agent>/... or <agent>.<tenant>.${domain()}`);
      }
      ctx.target = target;
      const agent = registry.findAgent(target.tenant, target.agent);
      if (!agent) {
        throw errors.notFound(
          registry.hasTenant(target.tenant)
            ? `unknown agent "${target.agent}" in tenant "${target.tenant}"`
            : `unknown tenant "${target.tenant}"`,
        );
      }
      ctx.agent = agent;
      ctx.jsonRpc = agent.jsonRpcPaths.size > 0 && ctx.req.method === 'POST' && agent.jsonRpcPaths.has(pathOnly(target.rest));
    },
  };
}

const CARD_PATHS = new Set<string>(CARD_WELL_KNOWN_PATHS);

/**
 * Serves the agent's A2A Agent Card with every interface URL pointing at the gateway, so a client
 * that discovers an agent through the gateway keeps talking through it.
 */
export function agentCardStage(
  registry: RegistryView,
  refreshCard: (tenant: string, agent: string) => Promise<{ cardError?: string }>,
): Stage {
  // A card is never passed through as the agent serves it: its URLs would lead clients past the gateway.
  const serve = (ctx: RequestContext, agent: AgentRuntime, cardError?: string): typeof STOP => {
    if (!agent.card) {
      throw cardError ? errors.cardUnavailable(agent.key, cardError) : errors.notFound(`agent ${agent.key} serves no A2A Agent Card`);
    }
    const card = rewriteAgentCard(agent.card.card, {
      agentBaseUrl: ctx.target!.baseUrl,
      endpointUrls: agent.endpoints.map((endpoint) => endpoint.url),
    });
    sendJson(ctx, 200, card, { 'cache-control': 'no-cache' });
    return STOP;
  };
  return {
    name: 'agent-card',
    run(ctx) {
      const method = ctx.req.method;
      if ((method !== 'GET' && method !== 'HEAD') || !CARD_PATHS.has(pathOnly(ctx.target!.rest))) return undefined;
      const agent = ctx.agent!;
      if (agent.card) return serve(ctx, agent);
      return refreshCard(agent.tenant, agent.name).then((view) => {
        const fresh = registry.findAgent(agent.tenant, agent.name);
        if (!fresh) throw errors.notFound(`unknown agent "${agent.name}" in tenant "${agent.tenant}"`);
        ctx.agent = fresh;
        return serve(ctx, fresh, view.cardError);
      });
    },
  };
}

export function balanceStage(balancer: Pick<EndpointBalancer, 'pick'>): Stage {
  return {
    name: 'balance',
    run(ctx) {
      const endpoint = balancer.pick(ctx.agent!);
      if (!endpoint) throw errors.noHealthyEndpoint(ctx.agent!.key);
      ctx.endpoint = endpoint;
    },
  };
}

export function forwardStage(forwarder: Forwarder): Stage {
  return {
    name: 'forward',
    run(ctx) {
      forwarder.forward(ctx);
      return STOP;
    },
    finish(ctx) {
      forwarder.finished(ctx);
    },
  };
}

/** Access log, one JSON line per request when enabled (audit proper comes with tenancy). */
export function accessLogStage(logger: Logger, enabled: () => boolean): Stage {
  return {
    name: 'access-log',
    run() {},
    finish(ctx) {
      if (!enabled()) return;
      logger.info(
        {
          requestId: ctx.id,
          listener: ctx.listener.name,
          method: ctx.req.method,
          path: ctx.req.url,
          tenant: ctx.target?.tenant,
          agent: ctx.target?.agent,
          endpoint: ctx.endpoint?.url,
          status: ctx.status,
          error: ctx.errorCode,
          ms: Math.round(ctx.elapsedSeconds() * 1e6) / 1e3,
          // Chosen by the gateway (capability / intent routing): to whom and why.
          ...(ctx.routedByGateway ? { route: ctx.routeReason } : {}),
        },
        'request',
      );
    },
  };
}


/** What the authenticate stage learns about a request: undefined when it carries no credentials. */
export type AuthOutcome =
  | { ok: true; identity: NonNullable<RequestContext['identity']> }
  | { ok: false; reason: string; detail: string }
  | undefined;

export interface RequestAuthenticator {
  /** From the connection's client certificate and/or the request's bearer token. */
  authenticate(ctx: RequestContext): AuthOutcome | Promise<AuthOutcome>;
  /** A refusal, for the audit trail. */
  /** Records the refusal; the 401 is sent once the returned promise settles (the record is stored first). */
  refused(ctx: RequestContext, reason: string, detail: string): void | Promise<void>;
}

/**
 * Maps a verified client certificate or bearer token to one identity for the rest of the pipeline.
 * Requests with neither are refused (401) unless the listener explicitly allows anonymous traffic.
 */
export function authenticateStage(authenticator: RequestAuthenticator, allowAnonymous: (listener: string) => boolean): Stage {
  const refuse = (ctx: RequestContext, reason: string, detail: string, error: Error): Promise<never> | never => {
    const recorded = authenticator.refused(ctx, reason, detail);
    if (!recorded) throw error;
    // Refused either way; only the order matters: the record is stored before the 401 goes out.
    const fail = (): never => {
      throw error;
    };
    return recorded.then(fail, fail);
  };
  const decide = (ctx: RequestContext, outcome: AuthOutcome): void | Promise<never> => {
    if (outcome?.ok) {
      ctx.identity = outcome.identity;
      return;
    }
    if (outcome === undefined) {
      if (allowAnonymous(ctx.listener.name)) return;
      return refuse(ctx, 'no_credentials', 'no client certificate or bearer token', errors.unauthenticated('no_credentials', 'authentication required: present a client certificate or a bearer token'));
    }
    return refuse(ctx, outcome.reason, outcome.detail, errors.unauthenticated(outcome.reason, `authentication failed (${outcome.reason}): ${outcome.detail}`));
  };
  return {
    name: 'authenticate',
    run(ctx) {
      const outcome = authenticator.authenticate(ctx);
      if (outcome instanceof Promise) return outcome.then((value) => decide(ctx, value));
      return decide(ctx, outcome);
    },
  };
}

/** Gateway-served endpoints that precede authentication (enrollment, trust bundles, CRLs, OAuth). */
export interface GatewayEndpoints {
  /** Answers and returns true for its own paths; returns false, touching nothing, otherwise. */
  handle(ctx: RequestContext): boolean;
}

export function gatewayEndpointsStage(endpoints: GatewayEndpoints, domain: () => string): Stage {
  return {
    name: 'gateway-endpoints',
    run(ctx) {
      // A request addressed to an agent (by path or host) is the agent's, whatever its path.
      if (parseTarget(ctx, domain())) return undefined;
      return endpoints.handle(ctx) ? STOP : undefined;
    },
  };
}
