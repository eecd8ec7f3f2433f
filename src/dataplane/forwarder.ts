import http2, { type ClientHttp2Session, type Http2ServerRequest, type IncomingHttpHeaders } from 'node:http2';
import { Readable, Transform } from 'node:stream';
import type { ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import { fetch as undiciFetch, Pool, type Dispatcher } from 'undici';
import type { DataplaneTelemetry, UpstreamErrorKind } from '../admin/telemetry.js';
import type { LimitsConfig, TimeoutsConfig } from '../config/schema.js';
import type { PeerCertificate } from 'node:tls';
import type { AgentRuntime, EndpointState, RegistryView } from '../registry/types.js';
import { bridgeA2aCall } from '../bridges/index.js';
import type { EndpointBalancer } from '../routing/balancer.js';
import type { RetriesConfig } from '../routing/balancing-config.js';
import { LOAD_HEADER, ORCA_HEADER } from '../routing/load.js';
import { RetryBudgets, type RetryReason } from '../routing/retry-budget.js';
import type { RequestContext } from './context.js';
import { GatewayError, errors } from './errors.js';
import { downstreamFromHttp2, downstreamResponseHeaders, upstreamRequestHeaders } from './headers.js';
import { sendError } from './respond.js';
import { pathOnly } from './stages.js';

export interface ForwarderOptions {
  registry: RegistryView;
  telemetry: DataplaneTelemetry;
  logger: Logger;
  limits: () => LimitsConfig;
  timeouts: () => TimeoutsConfig;
  /** Picks endpoints for retries (skipping ctx.tried) and learns from every attempt's outcome. */
  balancer: EndpointBalancer;
  /** Retry settings (`balancing.retries`), read per request so a reload applies at once. */
  retries: () => RetriesConfig;
  /** True while the gateway drains for shutdown (HTTP/1.1 responses then close their connection). */
  isDraining: () => boolean;
  /**
   * Mutual TLS to `https://` endpoints: the gateway's client certificate for the agent's tenant and
   * how to verify the agent (its tenant's CA, its SPIFFE ID). Synchronous when cached.
   */
  upstreamTls?: (agent: AgentRuntime) => UpstreamTls | Promise<UpstreamTls>;
}

export interface UpstreamTls {
  /** Changes when the material does (certificate rotation): connections are then re-established. */
  version: string;
  cert: string;
  key: string;
  ca: string;
  /** Returns an Error when the agent's certificate does not prove the expected identity. */
  checkServerIdentity: (host: string, cert: PeerCertificate) => Error | undefined;
}

const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE', 'TRACE']);

/** Errors that mean the request never reached the agent's application. */
const NOT_DELIVERED = new Set(['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN', 'ENOTFOUND', 'UND_ERR_CONNECT_TIMEOUT']);
/** Errors where the agent may have seen the request: retry only if replaying is harmless. */
const CONNECTION_LOST = new Set(['ECONNRESET', 'EPIPE', 'UND_ERR_SOCKET', 'UND_ERR_CLOSED']);

class UpstreamTimeout extends Error {
  constructor(readonly what: 'total' | 'per try' | 'first byte' | 'idle') {
    super(`upstream ${what} timeout`);
  }
}

function errorCode(err: unknown): string {
  const e = err as { code?: string; cause?: { code?: string } };
  return e?.cause?.code ?? e?.code ?? '';
}

function classify(err: unknown): UpstreamErrorKind {
  const code = errorCode(err);
  if (err instanceof UpstreamTimeout || code.endsWith('TIMEOUT')) return 'timeout';
  if (NOT_DELIVERED.has(code)) return 'connect';
  if (CONNECTION_LOST.has(code)) return 'reset';
  if (code.startsWith('ERR_HTTP2') || code === 'HPE_INVALID_CONSTANT' || code.startsWith('UND_ERR_RES')) return 'protocol';
  return 'other';
}

/**
 * Sends a request to one of the agent's endpoints and relays the answer, streaming both bodies with
 * backpressure. HTTP/1.1 upstreams go through pooled keep-alive undici connections; gRPC goes over
 * HTTP/2 (h2c or h2) with its trailers.
 */
export class Forwarder {
  /** Keyed by origin (plain) or origin + agent + TLS material version (mTLS: identities differ per agent). */
  private readonly pools = new Map<string, { origin: string; pool: Pool }>();
  private readonly deadlines = new DeadlineSweeper((ctx) => ctx.abortUpstream?.(new UpstreamTimeout('total')));
  private readonly sessions = new Map<string, { origin: string; session: ClientHttp2Session }>();
  private readonly opts: ForwarderOptions;
  private readonly budgets: RetryBudgets;

  constructor(opts: ForwarderOptions) {
    this.opts = opts;
    this.budgets = new RetryBudgets(opts.retries);
  }

  /** Sends the request to ctx.endpoint (chosen by the balance stage); retries and fails over from there. */
  forward(ctx: RequestContext): void {
    const timeouts = this.opts.timeouts();
    if (ctx.deadlineAt === 0) this.deadlines.add(ctx, timeouts.totalMs);
    this.budgets.request(ctx.agent!.key);
    this.attempt(ctx, timeouts);
  }

  private attempt(ctx: RequestContext, timeouts: TimeoutsConfig): void {
    const endpoint = ctx.endpoint!;
    const agent = ctx.agent!;
    endpoint.inflight++;
    if (endpoint.tls && this.opts.upstreamTls) {
      const material = this.opts.upstreamTls(agent);
      if (material instanceof Promise) {
        material.then(
          (tls) => this.dispatch(ctx, agent, endpoint, timeouts, tls),
          (err: unknown) => this.failed(ctx, agent, endpoint, performance.now(), err),
        );
        return;
      }
      this.dispatch(ctx, agent, endpoint, timeouts, material);
      return;
    }
    this.dispatch(ctx, agent, endpoint, timeouts, undefined);
  }

  private dispatch(ctx: RequestContext, agent: AgentRuntime, endpoint: EndpointState, timeouts: TimeoutsConfig, tls: UpstreamTls | undefined): void {
    if (ctx.finished) {
      endpoint.inflight--;
      this.opts.balancer.abandoned(endpoint);
      return;
    }
    if (ctx.grpc) this.forwardHttp2(ctx, agent, endpoint, timeouts, tls);
    else if (ctx.a2aVersion !== undefined && bridged(ctx, agent)) this.forwardBridged(ctx, agent, endpoint, timeouts, tls);
    else this.forwardHttp1(ctx, agent, endpoint, timeouts, tls);
  }

  /**
   * An A2A JSON-RPC call to an agent whose interface speaks the other version: the SDK's handler of
   * the caller's version and client of the agent's (src/bridges/a2a-version.ts) translate it, over
   * this endpoint's pool. The answer is JSON, or SSE for a stream. A failure to reach the agent is
   * a failed attempt like any other (retried, failed over); the agent's own errors are answers.
   */
  private forwardBridged(ctx: RequestContext, agent: AgentRuntime, endpoint: EndpointState, timeouts: TimeoutsConfig, tls: UpstreamTls | undefined): void {
    const attempt = new BridgedAttempt(ctx, agent, endpoint, this, this.poolFor(agent, endpoint, timeouts, tls), timeouts, this.opts.limits().maxBodyBytes);
    void attempt.run();
  }

  /** The request has finished (the pipeline's finish hook): forget its deadline. */
  finished(ctx: RequestContext): void {
    if (ctx.deadlineAt !== 0) this.deadlines.delete(ctx);
  }

  private body(ctx: RequestContext): Readable | Buffer | null {
    const req = ctx.req;
    const buffered = ctx.body;
    if (buffered) {
      if (buffered.complete) return buffered.length === 0 ? null : Buffer.concat(buffered.chunks, buffered.length);
      // Larger than the stage's limit and passed on: what was read, then the rest as it arrives.
      const rest = req.headers['content-length'] === undefined ? req.pipe(byteLimit(this.opts.limits().maxBodyBytes - buffered.length)) : req;
      return Readable.from(prefixed(buffered.chunks, rest), { objectMode: false });
    }
    const length = req.headers['content-length'];
    if (length !== undefined) {
      // Node's parser enforces the declared length; the limit stage has already compared it.
      return length === '0' ? null : req;
    }
    const hasBody = ctx.http2
      ? !(req as Http2ServerRequest).stream.endAfterHeaders
      : req.headers['transfer-encoding'] !== undefined;
    if (!hasBody) return null;
    return req.pipe(byteLimit(this.opts.limits().maxBodyBytes));
  }

  private forwardHttp1(ctx: RequestContext, agent: AgentRuntime, endpoint: EndpointState, timeouts: TimeoutsConfig, tls: UpstreamTls | undefined): void {
    const pool = this.poolFor(agent, endpoint, timeouts, tls);
    const options: Dispatcher.DispatchOptions = {
      origin: endpoint.origin,
      path: endpoint.basePath + ctx.target!.rest,
      method: ctx.req.method as Dispatcher.HttpMethod,
      headers: upstreamRequestHeaders(ctx, false),
      body: this.body(ctx),
      headersTimeout: timeouts.firstByteMs,
      bodyTimeout: timeouts.idleMs,
    };
    pool.dispatch(options, new Http1Relay(ctx, agent, endpoint, this, perTryMs(timeouts)));
  }

  private forwardHttp2(ctx: RequestContext, agent: AgentRuntime, endpoint: EndpointState, timeouts: TimeoutsConfig, tls: UpstreamTls | undefined): void {
    const startedAt = performance.now();
    let session: ClientHttp2Session;
    try {
      session = this.sessionFor(agent, endpoint, timeouts, tls);
    } catch (err) {
      this.failed(ctx, agent, endpoint, startedAt, err);
      return;
    }
    const flat = upstreamRequestHeaders(ctx, true);
    const headers: Record<string, string> = {
      ':method': ctx.req.method ?? 'POST',
      ':path': endpoint.basePath + ctx.target!.rest,
      ':scheme': endpoint.tls ? 'https' : 'http',
      ':authority': new URL(endpoint.origin).host,
    };
    for (let i = 0; i < flat.length; i += 2) headers[flat[i]!] = flat[i + 1]!;
    const stream = session.request(headers);
    let responded = false;
    let settled = false;
    const settle = (err?: unknown) => {
      if (settled) return;
      settled = true;
      if (err === undefined) {
        endpoint.inflight--;
        ctx.res.end();
      } else if (responded) {
        endpoint.inflight--;
        ctx.res.destroy(err as Error);
      } else {
        this.failed(ctx, agent, endpoint, startedAt, err);
      }
    };
    ctx.abortUpstream = (reason) => {
      stream.close(http2.constants.NGHTTP2_CANCEL);
      settle(reason);
    };
    const perTry = perTryMs(timeouts);
    stream.setTimeout(perTry || timeouts.firstByteMs, () => {
      if (!responded) ctx.abortUpstream!(new UpstreamTimeout(perTry ? 'per try' : 'first byte'));
    });
    stream.on('response', (upstreamHeaders: IncomingHttpHeaders) => {
      responded = true;
      stream.setTimeout(timeouts.idleMs, () => ctx.abortUpstream!(new UpstreamTimeout('idle')));
      this.opts.registry.reportSuccess(endpoint);
      const status = Number(upstreamHeaders[':status']);
      const load = upstreamHeaders[LOAD_HEADER] ?? upstreamHeaders[ORCA_HEADER];
      this.opts.balancer.answered(agent, endpoint, status, performance.now() - startedAt, typeof load === 'string' ? load : undefined);
      ctx.status = status;
      const headers = downstreamFromHttp2(ctx, upstreamHeaders);
      ctx.res.writeHead(status, headers as unknown as Record<string, string>);
    });
    stream.on('trailers', (trailers: IncomingHttpHeaders) => {
      const clean: Record<string, string | string[]> = {};
      for (const name in trailers) {
        const value = trailers[name];
        if (value !== undefined && name.charCodeAt(0) !== 58) clean[name] = value;
      }
      ctx.res.addTrailers(clean);
    });
    stream.on('data', (chunk: Buffer) => {
      if (!(ctx.res as ServerResponse).write(chunk)) {
        stream.pause();
        ctx.res.once('drain', () => stream.resume());
      }
    });
    stream.on('end', () => settle(responded ? undefined : new Error('upstream closed the stream without a response')));
    stream.on('error', (err) => settle(err));
    stream.on('close', () => settle(new Error(`upstream stream closed (code ${stream.rstCode})`)));
    const body = this.body(ctx);
    if (body === null) stream.end();
    else if (Buffer.isBuffer(body)) stream.end(body);
    else body.pipe(stream);
  }

  /** Called once per failed attempt that produced no response: retry elsewhere when safe, else answer. */
  failed(ctx: RequestContext, agent: AgentRuntime, endpoint: EndpointState, startedAt: number, err: unknown): void {
    endpoint.inflight--;
    const balancer = this.opts.balancer;
    if (ctx.finished) {
      balancer.abandoned(endpoint); // the caller went away: says nothing about the endpoint
      return;
    }
    if (err instanceof GatewayError) {
      balancer.abandoned(endpoint);
      sendError(ctx, err);
      return;
    }
    const kind = classify(err);
    this.opts.telemetry.upstreamError(agent.tenant, agent.name, kind);
    if (kind === 'connect' || kind === 'reset' || kind === 'timeout') {
      this.opts.registry.reportFailure(endpoint, `${kind}: ${errorCode(err) || (err as Error).message}`);
    }
    if (kind === 'timeout') balancer.failed(agent, endpoint, performance.now() - startedAt, true);
    else if (kind === 'other') balancer.abandoned(endpoint);
    else balancer.failed(agent, endpoint, -1, false);
    if (!ctx.res.headersSent && !(err instanceof UpstreamTimeout && err.what === 'total') && kind !== 'protocol' && kind !== 'other') {
      const next = this.nextEndpoint(ctx, agent, endpoint, kind);
      if (next) {
        this.opts.logger.debug({ requestId: ctx.id, from: endpoint.url, to: next.url, reason: kind }, 'retrying on another endpoint');
        ctx.endpoint = next;
        this.attempt(ctx, this.opts.timeouts());
        return;
      }
    }
    if (ctx.res.headersSent) {
      ctx.res.destroy(err as Error);
      return;
    }
    const agentKey = ctx.agent!.key;
    const detail = errorCode(err) || (err as Error).message;
    if (err instanceof UpstreamTimeout) sendError(ctx, errors.upstreamTimeout(agentKey, err.what));
    else if (kind === 'timeout') sendError(ctx, errors.upstreamTimeout(agentKey, detail));
    else sendError(ctx, errors.upstreamUnavailable(agentKey, detail));
  }

  /**
   * The endpoint for one more attempt, or undefined when retrying is not safe or not allowed. Safe:
   * a connect failure (the request never left: any method, A2A JSON-RPC calls included); a reset, a
   * per-try timeout or a retryable status only for idempotent methods. Always: a body that can be
   * sent again, attempts left, time left before the overall deadline, and room in the agent's retry
   * budget. The next endpoint comes from the balancer (tried ones excluded); with none left, a
   * request that never reached the agent may move to the next-best agent (ctx.failover).
   */
  nextEndpoint(ctx: RequestContext, agent: AgentRuntime, failed: EndpointState, reason: RetryReason): EndpointState | undefined {
    const settings = this.opts.retries();
    const tried = (ctx.tried ??= []);
    if (!tried.includes(failed)) tried.push(failed);
    const current = ctx.agent!;
    const attemptsLeft = triedOf(current, tried) < settings.maxAttempts;
    const mayFailOver = reason === 'connect' && ctx.failover !== undefined && ctx.failovers < settings.maxFailovers;
    if (!attemptsLeft && !mayFailOver) return undefined;
    const now = performance.now();
    if (ctx.deadlineAt !== 0 && ctx.deadlineAt <= now) return undefined;
    // A body that was (partly) sent cannot be replayed: the stream is consumed.
    const req = ctx.req as Readable & { readableDidRead?: boolean };
    if (ctx.body ? !ctx.body.complete : req.readableDidRead) return undefined;
    if (reason !== 'connect' && (ctx.jsonRpc || !IDEMPOTENT.has(ctx.req.method ?? ''))) return undefined;
    if (!this.budgets.allows(agent.key, now)) return undefined;
    let next = attemptsLeft ? this.pickClaimed(ctx, current, tried) : undefined;
    // The request never reached any endpoint of this agent: the next-best agent may take it.
    if (!next && mayFailOver) next = this.failoverClaimed(ctx);
    if (next) this.budgets.spend(agent.key, reason, now);
    return next;
  }

  /** The balancer's pick among the agent's untried endpoints whose concurrency slot the request can take now. */
  private pickClaimed(ctx: RequestContext, agent: AgentRuntime, tried: readonly EndpointState[]): EndpointState | undefined {
    let excluded = tried;
    for (;;) {
      const next = this.opts.balancer.pick(agent, excluded);
      if (!next || !ctx.claimEndpoint || ctx.claimEndpoint(agent, next)) return next;
      excluded = [...excluded, next]; // at its limit: not for this request, and not an attempt
    }
  }

  /** The next-best agent's endpoint (ctx.failover) that can take the request now; agents whose pick is at its limit are passed over. */
  private failoverClaimed(ctx: RequestContext): EndpointState | undefined {
    for (;;) {
      const next = ctx.failover!();
      if (next && ctx.claimEndpoint && !ctx.claimEndpoint(ctx.agent!, next)) continue;
      if (next) ctx.failovers++;
      return next;
    }
  }

  /** A retryable status (balancing.retries.retryOnStatus) from an HTTP/1.1 upstream: the endpoint to try instead, if any. */
  retryOnStatus(ctx: RequestContext, agent: AgentRuntime, endpoint: EndpointState, status: number): EndpointState | undefined {
    if (ctx.grpc || !this.opts.retries().retryOnStatus.includes(status)) return undefined;
    return this.nextEndpoint(ctx, agent, endpoint, 'status');
  }

  /** The attempt's answer was dropped for a retry (retryOnStatus): send the request to `next`. */
  retryDropped(ctx: RequestContext, endpoint: EndpointState, next: EndpointState, completed: boolean): void {
    endpoint.inflight--;
    if (completed) this.opts.registry.reportSuccess(endpoint);
    this.opts.logger.debug({ requestId: ctx.id, from: endpoint.url, to: next.url, reason: 'status' }, 'retrying on another endpoint');
    ctx.endpoint = next;
    this.attempt(ctx, this.opts.timeouts());
  }

  answered(agent: AgentRuntime, endpoint: EndpointState, status: number, latencyMs: number, loadHeader: string | undefined): void {
    this.opts.balancer.answered(agent, endpoint, status, latencyMs, loadHeader);
  }

  private connectionKey(agent: AgentRuntime, endpoint: EndpointState, tls: UpstreamTls | undefined): string {
    return tls ? `${endpoint.origin}|${agent.key}|${tls.version}` : endpoint.origin;
  }

  /** A new TLS material version replaces the agent's older pools for that origin (they close when idle). */
  private retireOlder<T>(map: Map<string, { origin: string } & T>, key: string, close: (entry: T) => void): void {
    const prefix = key.slice(0, key.lastIndexOf('|') + 1);
    for (const [other, entry] of map) {
      if (other !== key && other.startsWith(prefix)) {
        map.delete(other);
        close(entry);
      }
    }
  }

  private poolFor(agent: AgentRuntime, endpoint: EndpointState, timeouts: TimeoutsConfig, tls: UpstreamTls | undefined): Pool {
    const key = this.connectionKey(agent, endpoint, tls);
    let entry = this.pools.get(key);
    if (!entry) {
      const pool = new Pool(endpoint.origin, {
        connections: this.opts.limits().maxConnectionsPerEndpoint,
        pipelining: 1,
        connectTimeout: timeouts.connectMs,
        keepAliveTimeout: 30_000,
        keepAliveMaxTimeout: 600_000,
        ...(tls
          ? { connect: { cert: tls.cert, key: tls.key, ca: tls.ca, checkServerIdentity: tls.checkServerIdentity, minVersion: 'TLSv1.2' as const } }
          : {}),
      });
      entry = { origin: endpoint.origin, pool };
      this.pools.set(key, entry);
      if (tls) this.retireOlder(this.pools, key, (old) => void old.pool.close());
    }
    return entry.pool;
  }

  private sessionFor(agent: AgentRuntime, endpoint: EndpointState, timeouts: TimeoutsConfig, tls: UpstreamTls | undefined): ClientHttp2Session {
    const key = this.connectionKey(agent, endpoint, tls);
    const existing = this.sessions.get(key)?.session;
    if (existing && !existing.closed && !existing.destroyed) return existing;
    const session = http2.connect(
      endpoint.origin,
      tls ? { cert: tls.cert, key: tls.key, ca: tls.ca, checkServerIdentity: tls.checkServerIdentity, minVersion: 'TLSv1.2' } : {},
    );
    const forget = () => {
      if (this.sessions.get(key)?.session === session) this.sessions.delete(key);
    };
    session.on('close', forget);
    session.on('goaway', forget);
    session.on('error', (err) => {
      forget();
      this.opts.logger.debug({ err, endpoint: endpoint.url }, 'upstream HTTP/2 session error');
    });
    session.setTimeout(Math.max(timeouts.idleMs, 30_000), () => session.close());
    session.unref();
    this.sessions.set(key, { origin: endpoint.origin, session });
    if (tls) this.retireOlder(this.sessions, key, (old) => old.session.close());
    return session;
  }

  /** Forgets connections to endpoints that are no longer registered. */
  prune(liveOrigins: Set<string>): void {
    for (const [key, entry] of this.pools) {
      if (!liveOrigins.has(entry.origin)) {
        this.pools.delete(key);
        void entry.pool.close();
      }
    }
    for (const [key, entry] of this.sessions) {
      if (!liveOrigins.has(entry.origin)) {
        this.sessions.delete(key);
        entry.session.close();
      }
    }
  }

  async close(): Promise<void> {
    this.deadlines.stop();
    const pools = [...this.pools.values()].map((entry) => entry.pool);
    this.pools.clear();
    for (const entry of this.sessions.values()) entry.session.destroy();
    this.sessions.clear();
    await Promise.all(pools.map((pool) => pool.destroy()));
  }

  succeeded(endpoint: EndpointState): void {
    this.opts.registry.reportSuccess(endpoint);
  }

  get draining(): boolean {
    return this.opts.isDraining();
  }
}

/** Headers of a bridged call that the SDK's client sets itself (the body is its own). */
const BRIDGE_SETS = new Set(['content-length', 'content-type', 'accept', 'a2a-version', 'x-a2a-extensions', 'a2a-extensions', 'transfer-encoding', 'host']);

/**
 * Passes bytes through, failing once more than `max` came (in all, or since the last line feed for
 * an event stream, whose events are lines); `progress` is called per chunk.
 */
function byteCap(max: number, perLine: boolean, progress: () => void): TransformStream<Uint8Array, Uint8Array> {
  let count = 0;
  return new TransformStream({
    transform(chunk, controller) {
      progress();
      const firstBreak = perLine ? chunk.indexOf(0x0a) : -1;
      if (firstBreak < 0) count += chunk.length;
      else if (count + firstBreak <= max) count = chunk.length - chunk.lastIndexOf(0x0a) - 1;
      else count = max + 1;
      if (count > max) controller.error(new Error(`the agent's answer exceeds ${max} bytes${perLine ? ' in one event' : ''}`));
      else controller.enqueue(chunk);
    },
  });
}

/** Whether the agent's interfaces at the call's path speak only the other A2A version (one URL may serve both). */
function bridged(ctx: RequestContext, agent: AgentRuntime): boolean {
  const path = pathOnly(ctx.target!.rest);
  let other = false;
  for (const spoken of agent.a2aInterfaces) {
    if (spoken.path !== path) continue;
    if (spoken.version === ctx.a2aVersion) return false;
    other = true;
  }
  return other;
}

/** timeouts.perTryMs when set and shorter than firstByteMs, else 0 (firstByteMs bounds each try). */
function perTryMs(timeouts: TimeoutsConfig): number {
  return timeouts.perTryMs !== undefined && timeouts.perTryMs < timeouts.firstByteMs ? timeouts.perTryMs : 0;
}

/**
 * The agent's load report in undici's raw response headers: `x-dmsc-load`, else ORCA's
 * `endpoint-load-metrics`, if any (names compared by length and a byte before allocating).
 */
function loadHeaderIn(raw: Buffer[]): string | undefined {
  let orca: string | undefined;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    if (name.length === LOAD_HEADER.length && (name[0]! | 0x20) === 0x78 && (name[2]! | 0x20) === 0x64 && name.toString('latin1').toLowerCase() === LOAD_HEADER) {
      return raw[i + 1]!.toString('latin1');
    }
    if (name.length === ORCA_HEADER.length && (name[0]! | 0x20) === 0x65 && name.toString('latin1').toLowerCase() === ORCA_HEADER) orca = raw[i + 1]!.toString('latin1');
  }
  return orca;
}

/** undici's dispatch handler that writes the upstream response straight to the caller. */
class Http1Relay implements Dispatcher.DispatchHandler {
  private resume: (() => void) | undefined;
  private responded = false;
  private settled = false;
  /** Set when the answer is a retryable status: its body is dropped and the request goes here next. */
  private retryOn: EndpointState | undefined;
  private readonly startedAt = performance.now();
  private abort: ((err?: Error) => void) | undefined;
  /** An abort asked for before undici handed over its abort function (queued for a connection). */
  private pendingAbort: Error | undefined;
  /**
   * timeouts.perTryMs, timed here: undici's headersTimeout ticks in half-seconds, too coarse for it.
   * Counted from dispatch, so time queued for a connection counts too.
   */
  private perTryTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly ctx: RequestContext,
    private readonly agent: AgentRuntime,
    private readonly endpoint: EndpointState,
    private readonly forwarder: Forwarder,
    perTryMs: number,
  ) {
    // Replaces the previous attempt's: the deadline and a caller going away must reach this one.
    ctx.abortUpstream = (reason) => this.cancel(reason);
    if (perTryMs > 0) {
      this.perTryTimer = setTimeout(() => this.cancel(new UpstreamTimeout('per try')), perTryMs);
      this.perTryTimer.unref();
    }
  }

  private cancel(reason: Error): void {
    if (this.abort) this.abort(reason);
    else this.pendingAbort ??= reason;
  }

  onConnect(abort: (err?: Error) => void): void {
    this.abort = abort;
    if (this.pendingAbort) abort(this.pendingAbort);
  }

  onHeaders(statusCode: number, rawHeaders: Buffer[], resume: () => void): boolean {
    if (statusCode < 200) return true; // 1xx: the listener answers Expect itself
    const ctx = this.ctx;
    if (this.perTryTimer) clearTimeout(this.perTryTimer);
    this.responded = true;
    this.resume = resume;
    const load = loadHeaderIn(rawHeaders);
    this.forwarder.answered(this.agent, this.endpoint, statusCode, performance.now() - this.startedAt, load);
    if (statusCode >= 500 && !ctx.finished) {
      this.retryOn = this.forwarder.retryOnStatus(ctx, this.agent, this.endpoint, statusCode);
      if (this.retryOn) return true;
    }
    ctx.status = statusCode;
    const headers = downstreamResponseHeaders(ctx, rawHeaders);
    if (!ctx.http2 && this.forwarder.draining) headers.push('connection', 'close');
    ctx.res.writeHead(statusCode, headers as unknown as Record<string, string>);
    return true;
  }

  onData(chunk: Buffer): boolean {
    if (this.retryOn) return true; // the dropped answer's body
    const res = this.ctx.res as ServerResponse;
    if (res.write(chunk)) return true;
    res.once('drain', this.resume!);
    return false;
  }

  onComplete(rawTrailers: string[] | null): void {
    if (this.settled) return;
    this.settled = true;
    if (this.retryOn) {
      this.forwarder.retryDropped(this.ctx, this.endpoint, this.retryOn, true);
      return;
    }
    this.endpoint.inflight--;
    // Success is recorded once the exchange completed, so a half-answered request never counts as healthy.
    this.forwarder.succeeded(this.endpoint);
    const res = this.ctx.res;
    if (rawTrailers && rawTrailers.length > 0) {
      const trailers: Record<string, string> = {};
      for (let i = 0; i < rawTrailers.length; i += 2) trailers[String(rawTrailers[i]).toLowerCase()] = String(rawTrailers[i + 1]);
      res.addTrailers(trailers);
    }
    res.end();
  }

  onError(err: Error): void {
    if (this.settled) return;
    this.settled = true;
    if (this.perTryTimer) clearTimeout(this.perTryTimer);
    if (this.retryOn) {
      this.forwarder.retryDropped(this.ctx, this.endpoint, this.retryOn, false);
      return;
    }
    if (this.responded) {
      this.endpoint.inflight--;
      this.ctx.res.destroy(err);
      return;
    }
    this.forwarder.failed(this.ctx, this.agent, this.endpoint, this.startedAt, err);
  }
}

/**
 * One attempt of a bridged A2A call (Forwarder.forwardBridged). The SDK's client reaches the agent
 * through `fetch`, which notes whether the agent answered (a failure before that is a failed
 * attempt: retried or failed over), feeds the balancer, and bounds what the SDK buffers; `run`
 * writes the caller's answer.
 */
class BridgedAttempt {
  private readonly abort = new AbortController();
  private readonly startedAt = performance.now();
  /** The SDK's client sets the body, its type and length, Accept and A2A-Version; the rest is the gateway's. */
  private readonly passed: string[];
  private reached = false;
  private unreachable: unknown;
  // undici's fetch has no per-request header or idle timeouts: these timers abort it (the overall deadline too, through abortUpstream).
  private readonly firstByte: NodeJS.Timeout;
  private idle: NodeJS.Timeout | undefined;

  constructor(
    private readonly ctx: RequestContext,
    private readonly agent: AgentRuntime,
    private readonly endpoint: EndpointState,
    private readonly forwarder: Forwarder,
    private readonly pool: Pool,
    private readonly timeouts: TimeoutsConfig,
    private readonly maxBytes: number,
  ) {
    ctx.abortUpstream = (reason) => this.abort.abort(reason);
    this.passed = upstreamRequestHeaders(ctx, false);
    const perTry = perTryMs(timeouts);
    this.firstByte = setTimeout(() => this.abort.abort(new UpstreamTimeout(perTry ? 'per try' : 'first byte')), perTry || timeouts.firstByteMs).unref();
  }

  async run(): Promise<void> {
    const { ctx, endpoint } = this;
    try {
      const body = ctx.body!;
      const bridged = await bridgeA2aCall({
        // Capability routing read and parsed it whole before choosing the agent.
        body: JSON.parse(Buffer.concat(body.chunks, body.length).toString('utf8')),
        callerVersion: ctx.a2aVersion!,
        agentUrl: endpoint.origin + endpoint.basePath + ctx.target!.rest,
        fetchImpl: this.fetch,
        signal: this.abort.signal,
        streaming: (this.agent.card?.card as { capabilities?: { streaming?: unknown } } | undefined)?.capabilities?.streaming === true,
      });
      const first = bridged.stream ? await bridged.events.next() : undefined;
      if (!this.reached && this.unreachable !== undefined) {
        this.forwarder.failed(ctx, this.agent, endpoint, this.startedAt, this.unreachable);
        return;
      }
      ctx.status = 200;
      const res = ctx.res as ServerResponse;
      if (!bridged.stream) {
        const json = JSON.stringify(bridged.body);
        res.writeHead(200, downstreamResponseHeaders(ctx, ['content-type', 'application/json', 'content-length', String(Buffer.byteLength(json))]) as unknown as Record<string, string>);
        res.end(json);
      } else {
        res.writeHead(200, downstreamResponseHeaders(ctx, ['content-type', 'text/event-stream', 'cache-control', 'no-cache']) as unknown as Record<string, string>);
        for (let event = first!; !event.done; event = await bridged.events.next()) {
          if (!res.write(`data: ${JSON.stringify(event.value)}\n\n`)) {
            await new Promise((resolve) => {
              res.once('drain', resolve);
              res.once('close', resolve);
            });
          }
          if (ctx.finished || res.destroyed) {
            // The caller went away: so does the agent's stream.
            this.abort.abort(new Error('the caller went away'));
            await bridged.events.return(undefined);
            break;
          }
        }
        res.end();
      }
      endpoint.inflight--;
      this.forwarder.succeeded(endpoint);
    } catch (err) {
      if (ctx.res.headersSent) {
        endpoint.inflight--;
        ctx.res.destroy(err as Error);
      } else this.forwarder.failed(ctx, this.agent, endpoint, this.startedAt, err);
    } finally {
      clearTimeout(this.firstByte);
      clearTimeout(this.idle);
    }
  }

  private readonly fetch = (async (url: string, init: RequestInit) => {
    const headers: [string, string][] = [];
    const passed = this.passed;
    for (let i = 0; i < passed.length; i += 2) if (!BRIDGE_SETS.has(passed[i]!)) headers.push([passed[i]!, passed[i + 1]!]);
    for (const [name, value] of new Headers(init.headers)) headers.push([name, value]);
    try {
      const res = await undiciFetch(url, { method: init.method ?? 'POST', headers, body: init.body as string, dispatcher: this.pool, signal: this.abort.signal });
      this.reached = true;
      clearTimeout(this.firstByte);
      this.touch();
      this.forwarder.answered(this.agent, this.endpoint, res.status, performance.now() - this.startedAt, res.headers.get(LOAD_HEADER) ?? res.headers.get(ORCA_HEADER) ?? undefined);
      // What the SDK buffers is bounded: a whole JSON answer, or each line of an event stream.
      const stream = (res.headers.get('content-type') ?? '').startsWith('text/event-stream');
      if (!res.body) return res;
      return new Response(res.body.pipeThrough(byteCap(this.maxBytes, stream, this.touch)) as ReadableStream, { status: res.status, headers: res.headers as unknown as Headers });
    } catch (err) {
      clearTimeout(this.firstByte);
      // undici's fetch wraps the socket's error (ECONNREFUSED, ...) as the cause of a TypeError.
      this.unreachable = this.abort.signal.aborted ? this.abort.signal.reason : ((err as { cause?: unknown }).cause ?? err);
      throw err;
    }
  }) as unknown as typeof fetch;

  /** The agent sent something: the idle timer starts over. */
  private readonly touch = () => {
    if (this.idle) this.idle.refresh();
    else this.idle = setTimeout(() => this.abort.abort(new UpstreamTimeout('idle')), this.timeouts.idleMs).unref();
  };
}

async function* prefixed(chunks: Buffer[], rest: Readable): AsyncGenerator<Buffer> {
  yield* chunks;
  for await (const chunk of rest) yield chunk as Buffer;
}

/** Counts body bytes of requests without a declared length and fails the stream past the limit. */
function byteLimit(limit: number): Transform {
  let seen = 0;
  return new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      seen += chunk.length;
      if (seen > limit) callback(errors.bodyTooLarge(limit));
      else callback(null, chunk);
    },
  });
}

/**
 * Whole-exchange deadlines (timeouts.totalMs), checked by one coarse timer for all requests rather
 * than a timer and a 'close' listener per request: on the hot path that is a Set add and delete.
 * A deadline fires at most SWEEP_MS late, which is noise next to timeouts counted in seconds.
 */
class DeadlineSweeper {
  private static readonly SWEEP_MS = 100;
  private readonly active = new Set<RequestContext>();
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly expire: (ctx: RequestContext) => void) {}

  add(ctx: RequestContext, totalMs: number): void {
    ctx.deadlineAt = performance.now() + totalMs;
    this.active.add(ctx);
    if (!this.timer) {
      this.timer = setInterval(() => this.sweep(), DeadlineSweeper.SWEEP_MS);
      this.timer.unref();
    }
  }

  delete(ctx: RequestContext): void {
    this.active.delete(ctx);
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
    this.active.clear();
  }

  private sweep(): void {
    if (this.active.size === 0) {
      clearInterval(this.timer);
      this.timer = undefined;
      return;
    }
    const now = performance.now();
    for (const ctx of this.active) {
      if (ctx.deadlineAt <= now) {
        this.active.delete(ctx);
        this.expire(ctx);
      }
    }
  }
}

/** How many of the tried endpoints are the agent's (maxAttempts counts per agent: failover starts afresh). */
function triedOf(agent: AgentRuntime, tried: readonly EndpointState[]): number {
  let count = 0;
  for (const endpoint of tried) if (agent.endpoints.includes(endpoint)) count++;
  return count;
}
