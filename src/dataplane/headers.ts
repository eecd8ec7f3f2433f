import type { RequestContext } from './context.js';

/**
 * Hop-by-hop headers (RFC 9110 §7.6.1) plus the ones the gateway sets itself. `expect` is answered
 * by the listener (100-continue) and never forwarded; `host` is set from the endpoint.
 */
const DROP_REQUEST = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'transfer-encoding',
  'upgrade',
  'te',
  'trailer',
  'proxy-authorization',
  'proxy-authenticate',
  'http2-settings',
  'expect',
  'host',
  'traceparent',
  'x-dmsc-request-id',
  'x-dmsc-routed-to',
  'x-dmsc-caller', // set by the gateway from the authenticated identity; never trusted from the caller
  'x-forwarded-proto',
  'x-forwarded-host',
]);

const DROP_RESPONSE = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'transfer-encoding',
  'upgrade',
  'trailer',
  'proxy-authenticate',
  'x-dmsc-request-id',
  'x-dmsc-routed-to',
  // The agent's load report is for the gateway's balancer (routing/load.ts), not for the caller.
  'x-dmsc-load',
  'endpoint-load-metrics',
  'endpoint-load-metrics-bin',
]);

function connectionTokens(value: string | string[] | undefined): Set<string> | undefined {
  if (typeof value !== 'string' || value.length === 0) return undefined;
  const tokens = new Set<string>();
  for (const token of value.split(',')) {
    const name = token.trim().toLowerCase();
    if (name && name !== 'close' && name !== 'keep-alive') tokens.add(name);
  }
  return tokens.size > 0 ? tokens : undefined;
}

/** Flat [name, value, ...] list for undici / http2, built from the caller's raw headers. */
export function upstreamRequestHeaders(ctx: RequestContext, forGrpc: boolean): string[] {
  const req = ctx.req;
  const raw = req.rawHeaders;
  const listed = ctx.http2 ? undefined : connectionTokens(req.headers.connection);
  const out: string[] = [];
  let forwardedFor: string | undefined;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    if (name.charCodeAt(0) === 58) continue; // HTTP/2 pseudo-header
    const lower = name.toLowerCase();
    if (DROP_REQUEST.has(lower)) continue;
    if (listed?.has(lower)) continue;
    // A bearer token the gateway consumed to authenticate the caller is not passed on to the agent.
    if (lower === 'authorization' && ctx.identity?.via === 'jwt') continue;
    // A stage replaced the body (masking): its length is set below.
    if (lower === 'content-length' && ctx.body?.complete) continue;
    if (lower === 'x-forwarded-for') {
      forwardedFor = forwardedFor ? `${forwardedFor}, ${raw[i + 1]}` : raw[i + 1];
      continue;
    }
    out.push(lower, raw[i + 1]!);
  }
  const peer = req.socket?.remoteAddress;
  if (peer) forwardedFor = forwardedFor ? `${forwardedFor}, ${peer}` : peer;
  if (forwardedFor) out.push('x-forwarded-for', forwardedFor);
  out.push(
    'x-forwarded-proto',
    ctx.listener.scheme,
    'x-forwarded-host',
    ctx.authority,
    'x-dmsc-request-id',
    ctx.id,
    'traceparent',
    ctx.traceparent,
  );
  if (ctx.identity) out.push('x-dmsc-caller', ctx.identity.spiffeId);
  if (ctx.body?.complete && ctx.body.length > 0) out.push('content-length', String(ctx.body.length));
  if (forGrpc) out.push('te', 'trailers');
  return out;
}

/**
 * Response headers for the caller from undici's raw header buffers, as a flat list (accepted by
 * both http1 and http2 writeHead). Returns undefined for nothing to send.
 */
export function downstreamResponseHeaders(ctx: RequestContext, raw: Buffer[] | string[]): string[] {
  let out: string[] = [];
  let listed: Set<string> | undefined;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!.toString('latin1').toLowerCase();
    if (DROP_RESPONSE.has(name)) {
      if (name === 'connection') listed = connectionTokens(raw[i + 1]!.toString('latin1'));
      continue;
    }
    out.push(name, raw[i + 1]!.toString('latin1'));
  }
  if (listed) out = out.filter((_, i, all) => !listed.has(i % 2 === 0 ? all[i]! : all[i - 1]!));
  out.push('x-dmsc-request-id', ctx.id);
  if (ctx.routedByGateway && ctx.agent) out.push('x-dmsc-routed-to', ctx.agent.key);
  return out;
}

/** The same for HTTP/2 upstream responses (header objects rather than raw lists). */
export function downstreamFromHttp2(ctx: RequestContext, headers: Record<string, string | string[] | undefined>): string[] {
  const out: string[] = [];
  for (const name in headers) {
    if (name.charCodeAt(0) === 58) continue;
    if (DROP_RESPONSE.has(name)) continue;
    const value = headers[name];
    if (value === undefined) continue;
    if (Array.isArray(value)) {
      for (const v of value) out.push(name, v);
    } else {
      out.push(name, value);
    }
  }
  out.push('x-dmsc-request-id', ctx.id);
  if (ctx.routedByGateway && ctx.agent) out.push('x-dmsc-routed-to', ctx.agent.key);
  return out;
}
