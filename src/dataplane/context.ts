import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Http2ServerRequest, Http2ServerResponse } from 'node:http2';
import type { Identity } from '../identity/spiffe.js';
import type { AgentRuntime, EndpointState } from '../registry/types.js';
import type { A2aVersion } from '../routing/a2a.js';
import { nextTraceparent, requestIdFrom } from './ids.js';

export type DownstreamRequest = IncomingMessage | Http2ServerRequest;
export type DownstreamResponse = ServerResponse | Http2ServerResponse;

export interface ListenerInfo {
  readonly name: string; // 'tls' | 'plain' | ...
  readonly scheme: 'http' | 'https';
}

/** How the caller named its target. */
export interface TargetAddress {
  readonly tenant: string;
  readonly agent: string;
  /** Path and query to send to the agent, relative to the endpoint's base path; always starts with '/'. */
  readonly rest: string;
  /** The gateway URL that stands for this agent, as the caller sees it (for Agent Card rewriting). */
  readonly baseUrl: string;
}

export interface BufferedBody {
  chunks: Buffer[];
  length: number;
  complete: boolean;
}

const NO_TAGS: readonly string[] = Object.freeze([]);

/** Per-request state, shared by the stages. A class so every request has the same shape (fast property access). */
export class RequestContext {
  readonly startedAt = performance.now();
  readonly id: string;
  readonly traceparent: string;
  readonly http2: boolean;
  /** gRPC over HTTP/2: errors become grpc-status trailers-only responses. */
  readonly grpc: boolean;
  /** Who is calling, once the authenticate stage has run (undefined: anonymous on a listener that allows it). */
  identity: Identity | undefined = undefined;
  target: TargetAddress | undefined = undefined;
  agent: AgentRuntime | undefined = undefined;
  endpoint: EndpointState | undefined = undefined;
  /** Endpoints already tried (failover excludes them). */
  tried: EndpointState[] | undefined = undefined;
  /** Set when the gateway, not the caller, picked the agent (capability/intent routing). */
  routedByGateway = false;
  /** Whether errors should be JSON-RPC shaped (an A2A JSON-RPC call). */
  jsonRpc = false;
  /**
   * The A2A version of a JSON-RPC call routed by the gateway: the forwarder bridges it (see
   * src/bridges/a2a-version.ts) when the agent's interface at the target path speaks the other one.
   */
  a2aVersion: A2aVersion | undefined = undefined;
  /** The JSON-RPC request id, when a stage read it (errors echo it). */
  jsonRpcId: unknown = undefined;
  /** Why the gateway chose ctx.agent (capability/intent routing), for the audit record and logs. */
  routeReason: Record<string, unknown> | undefined = undefined;
  /**
   * Set by capability routing: moves the request to the next-best agent when every endpoint of the
   * chosen one failed before the request reached it; returns that agent's endpoint, or undefined.
   */
  failover: (() => EndpointState | undefined) | undefined = undefined;
  /** How many times the request moved to another agent (balancing.retries.maxFailovers). */
  failovers = 0;
  status = 0;
  errorCode: string | undefined = undefined;
  /** Aborts the in-flight upstream exchange, if any. */
  abortUpstream: ((reason: Error) => void) | undefined = undefined;
  /** performance.now() after which the whole exchange is cut (timeouts.totalMs); 0 before forwarding. */
  deadlineAt = 0;
  /**
   * Set by a stage that had to read the body (masking, intent routing): the forwarder sends these
   * bytes instead of reading `req`. With `complete` false the body was larger than the stage's limit
   * and the rest still streams from `req` after the chunks.
   */
  body: BufferedBody | undefined = undefined;
  /** Classification tags the request carries (config, `x-dmsc-data-tags`, the masking detector). */
  dataTags: readonly string[] = NO_TAGS;
  /** The policy's allow decision, recorded in the audit trail once the rate limits pass too. */
  allowReason: string | undefined = undefined;
  /** Frees the endpoint concurrency slot this request holds (concurrency stage). */
  releaseSlot: (() => void) | undefined = undefined;
  /**
   * Set by the concurrency stage: moves the request's slot to the endpoint a retry or failover is
   * about to use, without waiting; false when that endpoint is at its limit (the retry skips it).
   */
  claimEndpoint: ((agent: AgentRuntime, endpoint: EndpointState) => boolean) | undefined = undefined;
  /** Stages that counted this request in a limit set this, so their finish hook can release it. */
  admitted = false;
  finished = false;

  constructor(
    readonly req: DownstreamRequest,
    readonly res: DownstreamResponse,
    readonly listener: ListenerInfo,
  ) {
    const headers = req.headers;
    this.id = requestIdFrom(headers['x-dmsc-request-id']);
    this.traceparent = nextTraceparent(headers.traceparent);
    this.http2 = req.httpVersionMajor === 2;
    const contentType = headers['content-type'];
    this.grpc = this.http2 && typeof contentType === 'string' && contentType.startsWith('application/grpc');
  }

  /** The Host (HTTP/1.1) or :authority (HTTP/2) the caller used. */
  get authority(): string {
    const headers = this.req.headers;
    return (headers.host ?? (headers[':authority'] as string | undefined) ?? '').toLowerCase();
  }

  elapsedSeconds(): number {
    return (performance.now() - this.startedAt) / 1000;
  }
}
