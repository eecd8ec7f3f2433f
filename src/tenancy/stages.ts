import type { AuditEvent } from '../audit/index.js';
import { readBody } from '../dataplane/body.js';
import type { RequestContext } from '../dataplane/context.js';
import { GatewayError, errors } from '../dataplane/errors.js';
import type { Stage } from '../dataplane/pipeline.js';
import { pathOnly } from '../dataplane/stages.js';
import type { AgentRuntime, EndpointState, RegistryView } from '../registry/types.js';
import { rateLimitHeaders } from './limits/index.js';
import { DATA_TAG_PATTERN, type Decision } from './policy/index.js';
import type { TenantKeys } from './keys.js';
import type { Tenancy } from './runtime.js';

/**
 * Where tenancy stages write their audit records: `commit` resolves once the record is stored (group
 * commit per event-loop turn), and stages wait for it, so no response goes out before its record.
 */
export interface AuditSink {
  record(event: AuditEvent): void;
  commit(event: AuditEvent): Promise<void>;
}

export interface TenancyStageOptions {
  tenancy: Tenancy;
  registry: RegistryView;
  audit: AuditSink;
  /** Whether allowed delegations are audited too (denials always are). */
  auditAllowed: () => boolean;
}

const DATA_TAGS_HEADER = 'x-dmsc-data-tags';
const ANONYMOUS_SOURCE = Object.freeze({});
const MAX_DATA_TAGS = 32;
const NO_TAGS: readonly string[] = Object.freeze([]);

/** Tags from the `x-dmsc-data-tags` header plus those the calling agent's config attaches. */
function requestDataTags(ctx: RequestContext, fromAgent: readonly string[]): readonly string[] {
  const header = ctx.req.headers[DATA_TAGS_HEADER];
  if (header === undefined) return fromAgent;
  const tags = new Set(fromAgent);
  for (const raw of (Array.isArray(header) ? header.join(',') : header).split(',')) {
    const tag = raw.trim().toLowerCase();
    if (!tag) continue;
    if (!DATA_TAG_PATTERN.test(tag)) {
      throw errors.badRequest(`${DATA_TAGS_HEADER}: "${tag.slice(0, 70)}" is not a data tag (lowercase letters, digits, "_", ".", ":" and "-")`);
    }
    tags.add(tag);
  }
  if (tags.size > MAX_DATA_TAGS) throw errors.badRequest(`${DATA_TAGS_HEADER}: at most ${MAX_DATA_TAGS} tags`);
  return [...tags];
}

function actorOf(ctx: RequestContext): string {
  return ctx.identity?.spiffeId ?? 'anonymous';
}

/**
 * Records a delegation decision for the target's tenant and, for a cross-tenant call, for the
 * caller's tenant too: each tenant reads its own side of the trail.
 */
function recordDecision(
  audit: AuditSink,
  ctx: RequestContext,
  action: string,
  decision: 'allow' | 'deny',
  reason: string,
  detail?: Record<string, unknown>,
  keys?: TenantKeys,
): Promise<void> {
  const agent = ctx.agent!;
  const event: AuditEvent = {
    tenant: agent.tenant,
    actor: actorOf(ctx),
    action,
    target: agent.key,
    decision,
    reason,
    requestId: ctx.id,
    ...(detail ? { detail } : {}),
  };
  let committed = audit.commit(keys ? withExcerpt(event, ctx, keys, agent.tenant) : event);
  const source = ctx.identity?.tenant;
  if (source !== undefined && source !== agent.tenant) {
    const mirrored = { ...event, tenant: source };
    // Same batch, same promise: waiting for the second waits for both.
    committed = audit.commit(keys ? withExcerpt(mirrored, ctx, keys, source) : mirrored);
  }
  return committed;
}

function auditUnavailable(): never {
  // The decision could not be recorded: refuse rather than act unaudited.
  throw new GatewayError(503, 'audit_unavailable', 'the decision could not be recorded in the audit trail; try again', { 'retry-after': '1' });
}

/** Continues once the record is stored; fails the request if it could not be. */
function afterCommit(committed: Promise<void>): Promise<void> {
  return committed.then(undefined, auditUnavailable);
}

/** Refuses with `error` once the refusal is stored. */
function refuseAfterCommit(committed: Promise<void>, error: GatewayError): Promise<never> {
  return committed.then(() => {
    throw error;
  }, auditUnavailable);
}

/**
 * Refusals keep an excerpt of the request (method, path, peer, user agent) for investigation,
 * sealed with the tenant's data key: readable through the Admin API until the tenant is offboarded.
 */
function withExcerpt(event: AuditEvent, ctx: RequestContext, keys: TenantKeys, tenant: string): AuditEvent {
  if (!keys.has(tenant)) return event;
  const req = ctx.req;
  const excerpt = JSON.stringify({
    method: req.method,
    path: ctx.target?.rest.slice(0, 1024),
    peer: req.socket?.remoteAddress,
    userAgent: req.headers['user-agent']?.slice(0, 256),
  });
  return { ...event, excerpt: keys.seal(tenant, `audit/${ctx.id}`, excerpt) };
}

const reasons = new WeakMap<Decision, string>();

/** `code: tenant/rule (+ tenant/rule)`; decisions are shared objects, so this is built once each. */
function reasonOf(decision: Decision): string {
  let reason = reasons.get(decision);
  if (reason === undefined) {
    const rules = [decision.rule, decision.sourceRule].filter(Boolean).join(' + ');
    reason = rules ? `${decision.code}: ${rules}` : decision.code;
    reasons.set(decision, reason);
  }
  return reason;
}

function forbidden(decision: Decision): GatewayError {
  // An anonymous caller the tenant does not let in can fix it by authenticating: 401, not 403.
  if (decision.code === 'anonymous_denied') {
    return new GatewayError(401, 'unauthenticated', decision.message, {
      'www-authenticate': 'Bearer realm="dmsc"',
      'x-dmsc-auth-failure': 'no_credentials',
      'x-dmsc-policy-decision': decision.code,
    });
  }
  return new GatewayError(403, 'forbidden', decision.message, { 'x-dmsc-policy-decision': decision.code });
}

function callerAgentOf(registry: RegistryView, ctx: RequestContext): AgentRuntime | undefined {
  const identity = ctx.identity;
  return identity ? registry.findAgent(identity.tenant, identity.agent) : undefined;
}

/** The policy's decision for this request carrying `ctx.dataTags`. */
function decide(tenancy: Tenancy, ctx: RequestContext, callerAgent: AgentRuntime | undefined): Decision {
  return tenancy.policy.decide(tenancy.caller(ctx.identity, callerAgent?.tags ?? NO_TAGS), tenancy.target(ctx.agent!), {
    method: ctx.req.method ?? 'GET',
    path: pathOnly(ctx.target!.rest),
    dataTags: ctx.dataTags,
  });
}

/**
 * For capability routing, before the target is chosen: for one request, `check` says why the policy
 * would refuse it to `agent` at `path` (its decision's message), or undefined when it would allow
 * it. The caller and its data tags are resolved once per request, not once per candidate.
 * `context` holds every fact of the request the decision reads (the caller's identity and labels,
 * the method, the data tags), so requests of one context get one answer per agent and path, as
 * long as the policies of the target's tenant and of `callerTenant` (PolicySet.versionFor) hold.
 */
export function candidatePolicyCheck(options: Pick<TenancyStageOptions, 'tenancy' | 'registry'>): (ctx: RequestContext) => {
  check: (agent: AgentRuntime, path: string) => string | undefined;
  context: string;
  callerTenant: string | undefined;
} {
  const { tenancy, registry } = options;
  return (ctx) => {
    const callerAgent = callerAgentOf(registry, ctx);
    const caller = tenancy.caller(ctx.identity, callerAgent?.tags ?? NO_TAGS);
    const method = ctx.req.method ?? 'GET';
    const dataTags = requestDataTags(ctx, callerAgent?.dataTags ?? NO_TAGS);
    return {
      check: (agent, path) => {
        const decision = tenancy.policy.decide(caller, tenancy.target(agent), { method, path, dataTags });
        return decision.allow ? undefined : `policy: ${reasonOf(decision)}`;
      },
      context: JSON.stringify([caller.tenant ?? null, caller.agent ?? null, caller.spiffeId ?? null, caller.labels, method, dataTags]),
      callerTenant: caller.tenant,
    };
  };
}

/** Deny-by-default policy: who may call whom, with which methods and paths, carrying which data tags. */
export function authorizeStage(options: TenancyStageOptions): Stage {
  const { tenancy, registry, audit } = options;
  return {
    name: 'authorize',
    run(ctx) {
      const callerAgent = callerAgentOf(registry, ctx);
      const dataTags = requestDataTags(ctx, callerAgent?.dataTags ?? NO_TAGS);
      ctx.dataTags = dataTags;
      const decision = decide(tenancy, ctx, callerAgent);
      if (decision.allow) {
        tenancy.track(ctx, tenantsOf(ctx));
        // Recorded by the rate-limit stage once the limits pass too: one record per request, so a
        // refused flood costs one record per refusal, not two.
        if (options.auditAllowed()) ctx.allowReason = reasonOf(decision);
        return undefined;
      }
      const committed = recordDecision(
        audit,
        ctx,
        'policy.decision',
        'deny',
        reasonOf(decision),
        { method: ctx.req.method, ...(dataTags.length > 0 ? { dataTags } : {}), ...(ctx.routeReason ? { route: ctx.routeReason } : {}) },
        tenancy.keys,
      );
      return refuseAfterCommit(committed, forbidden(decision));
    },
    finish(ctx) {
      if (ctx.agent) tenancy.untrack(ctx, tenantsOf(ctx));
    },
  };
}

function tenantsOf(ctx: RequestContext): readonly string[] {
  const target = ctx.agent!.tenant;
  const source = ctx.identity?.tenant;
  return source === undefined || source === target ? [target] : [target, source];
}

/**
 * Token buckets per tenant, agent and pair; 429 with Retry-After and RateLimit-* headers. A limit with
 * `maxDelayMs` shapes instead: the request waits for a token up to that long (its HTTP/1.1 connection
 * with it), and is refused only if none comes in time.
 */
export function rateLimitStage(options: TenancyStageOptions): Stage {
  const { tenancy, audit } = options;
  /** Requests waiting for a token (shaping), per bucket key. */
  const waiting = new Map<string, number>();

  const check = (ctx: RequestContext, deadline: number): void | Promise<void> => {
    const agent = ctx.agent!;
    const outcome = tenancy.rates.check(ctx.identity ?? ANONYMOUS_SOURCE, { tenant: agent.tenant, agent: agent.name });
    let committed: Promise<void> | undefined;
    if (outcome.shadowDenied) {
      for (const hit of outcome.shadowDenied) {
        committed = recordDecision(audit, ctx, 'ratelimit.shadow', 'allow', `${hit.scope} limit ${hit.key} exceeded (shadow mode: not enforced)`);
      }
    }
    const denied = outcome.denied;
    if (!denied) {
      const reason = ctx.allowReason;
      if (reason !== undefined) committed = recordDecision(audit, ctx, 'policy.decision', 'allow', reason, ctx.routeReason && { route: ctx.routeReason });
      return committed && afterCommit(committed);
    }
    if (denied.maxDelayMs > 0) {
      const now = performance.now();
      if (deadline === 0) deadline = now + denied.maxDelayMs;
      // Each waiter aims at its own token: the next one plus one interval per request already waiting
      // for this bucket, so a queue of waiters wakes about once per token, not all at every token.
      const key = denied.key;
      const ahead = waiting.get(key) ?? 0;
      const wait = Math.max(1, Math.ceil(denied.waitMs + (ahead * 1000) / denied.requestsPerSecond));
      if (now + wait <= deadline) {
        waiting.set(key, ahead + 1);
        return new Promise<void>((resolve) => setTimeout(resolve, wait)).then(() => {
          const left = waiting.get(key)! - 1;
          if (left > 0) waiting.set(key, left);
          else waiting.delete(key);
          if (ctx.finished) throw new GatewayError(499, 'client_closed', 'the caller went away while waiting for its rate limit');
          return check(ctx, deadline);
        });
      }
    }
    const refused = recordDecision(audit, ctx, 'ratelimit', 'deny', `${denied.scope} limit ${denied.key} exceeded`, {
      scope: denied.scope,
      limit: denied.limit,
      ...(ctx.allowReason !== undefined ? { policy: ctx.allowReason } : {}),
    });
    return refuseAfterCommit(
      refused,
      new GatewayError(
        429,
        'rate_limited',
        `rate limit exceeded (${denied.scope} ${denied.key}: ${denied.limit} per ${denied.windowSeconds} s, burst ${denied.burst}); retry in ${denied.retryAfterSeconds} s`,
        rateLimitHeaders(denied),
      ),
    );
  };

  return {
    name: 'rate-limit',
    run: (ctx) => check(ctx, 0),
  };
}

const slotKey = (agent: AgentRuntime, endpoint: EndpointState) => `${agent.key}|${endpoint.url}`;

/**
 * Per-endpoint concurrency limit with a bounded FIFO queue (after the endpoint is chosen). A retry
 * or failover moves the request's slot to its new endpoint when one is free there (never queues).
 */
export function concurrencyStage(options: TenancyStageOptions): Stage {
  const { tenancy, audit } = options;
  return {
    name: 'concurrency',
    run(ctx) {
      const agent = ctx.agent!;
      const limit = tenancy.concurrencyFor(agent.tenant);
      if (!limit) return undefined;
      const key = slotKey(agent, ctx.endpoint!);
      ctx.claimEndpoint = (next, endpoint) => {
        ctx.releaseSlot?.();
        ctx.releaseSlot = undefined;
        const nextLimit = tenancy.concurrencyFor(next.tenant);
        if (!nextLimit) return true;
        const nextKey = slotKey(next, endpoint);
        const free = tenancy.concurrency.stats(nextKey);
        if (free.active >= nextLimit.perEndpoint || free.queued > 0) return false;
        ctx.releaseSlot = tenancy.concurrency.acquire(nextKey, nextLimit) as () => void;
        return true;
      };
      const now = tenancy.concurrency.stats(key);
      if (now.active < limit.perEndpoint && now.queued === 0) {
        ctx.releaseSlot = tenancy.concurrency.acquire(key, limit) as () => void;
        return undefined;
      }
      // Queued: a caller that goes away leaves the queue at once (finish aborts the wait).
      const waiting = new AbortController();
      ctx.releaseSlot = () => waiting.abort();
      return Promise.resolve(tenancy.concurrency.acquire(key, limit, waiting.signal)).then(
        (release) => {
          if (ctx.finished) release();
          else ctx.releaseSlot = release;
        },
        (err: Error) =>
          refuseAfterCommit(
            recordDecision(audit, ctx, 'concurrency', 'deny', err.message),
            new GatewayError(503, 'endpoint_busy', `agent ${agent.key}: ${err.message}`, { 'retry-after': '1' }),
          ),
      );
    },
    finish(ctx) {
      const release = ctx.releaseSlot;
      if (release) {
        ctx.releaseSlot = undefined;
        release();
      }
    },
  };
}

/**
 * Masking: reads JSON and text bodies up to the tenant's limit, detects PII, and masks, tags or
 * blocks. Tags it adds go through the policy again (clearance). Larger bodies are passed or refused
 * per the tenant's `oversize` setting, never truncated.
 */
export function maskStage(options: TenancyStageOptions): Stage {
  const { tenancy, registry, audit } = options;
  return {
    name: 'mask',
    run(ctx) {
      const agent = ctx.agent!;
      const masker = tenancy.masker(agent.tenant);
      if (!masker) return undefined;
      const method = ctx.req.method;
      if (method === 'GET' || method === 'HEAD' || method === 'OPTIONS') return undefined;
      const contentType = ctx.req.headers['content-type'];
      if (!masker.inspects(contentType)) return undefined;
      const config = masker.config;
      const encoding = ctx.req.headers['content-encoding'];
      if (encoding !== undefined && encoding !== 'identity') return notInspected(`content-encoding ${encoding}`);
      return readBody(ctx, config.maxBytes).then((body) => {
        if (!body.complete) return notInspected(`body larger than ${config.maxBytes} bytes`);
        const result = masker.transform(Buffer.concat(body.chunks, body.length), contentType);
        // A body the detector cannot read (UTF-16, untyped binary) is handled like an oversize one.
        if (result.notInspected) return notInspected(result.notInspected);
        const kinds = Object.keys(result.counts);
        if (kinds.length === 0) return;
        if (result.blocked) {
          return refuseAfterCommit(
            recordDecision(audit, ctx, 'mask', 'deny', `blocked: found ${kinds.join(', ')}`, { counts: result.counts }),
            new GatewayError(403, 'sensitive_data', `the request carries data the tenant's policy blocks (${kinds.join(', ')})`),
          );
        }
        if (result.body) ctx.body = { chunks: [result.body], length: result.body.length, complete: true };
        const masked = recordDecision(audit, ctx, 'mask', 'allow', result.body ? 'masked' : 'tagged', { counts: result.counts, dataTags: result.dataTags });
        const added = result.dataTags.filter((tag) => !ctx.dataTags.includes(tag));
        if (added.length === 0) return afterCommit(masked);
        ctx.dataTags = [...ctx.dataTags, ...added];
        const decision = decide(tenancy, ctx, callerAgentOf(registry, ctx));
        if (decision.allow) return afterCommit(masked);
        return refuseAfterCommit(
          recordDecision(audit, ctx, 'policy.decision', 'deny', reasonOf(decision), { dataTags: ctx.dataTags }, tenancy.keys),
          forbidden(decision),
        );
      });

      function notInspected(why: string): Promise<void> {
        if (config.oversize === 'block') {
          return refuseAfterCommit(
            recordDecision(audit, ctx, 'mask', 'deny', `not inspected: ${why}`),
            new GatewayError(413, 'body_not_inspected', `the body cannot be inspected for sensitive data (${why}) and the tenant's policy refuses uninspected bodies`),
          );
        }
        return afterCommit(recordDecision(audit, ctx, 'mask', 'allow', `not inspected: ${why} (passed per policy)`));
      }
    },
  };
}
