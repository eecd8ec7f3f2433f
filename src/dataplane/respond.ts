import type { RequestContext } from './context.js';
import { GatewayError, grpcStatusFor, jsonRpcCodeFor } from './errors.js';

/**
 * Answers the caller with a gateway error: JSON by default, a JSON-RPC error object for A2A
 * JSON-RPC calls, a trailers-only gRPC status for gRPC. If the response already started, the only
 * honest signal left is to reset the stream.
 */
export function sendError(ctx: RequestContext, error: GatewayError): void {
  const res = ctx.res;
  ctx.errorCode = error.code;
  if (res.headersSent || res.destroyed) {
    ctx.status = ctx.status || error.status;
    res.destroy(error);
    return;
  }
  ctx.status = error.status;
  const headers: Record<string, string> = { 'x-dmsc-request-id': ctx.id, ...error.headers };
  if (ctx.http2) delete headers.connection; // connection-specific headers are illegal in HTTP/2
  if (ctx.grpc) {
    headers['content-type'] = 'application/grpc';
    headers['grpc-status'] = String(grpcStatusFor(error.status));
    headers['grpc-message'] = encodeURIComponent(error.message);
    headers['x-dmsc-error'] = error.code;
    res.writeHead(200, headers);
    res.end();
    return;
  }
  let body: string;
  if (ctx.jsonRpc) {
    body = JSON.stringify({
      jsonrpc: '2.0',
      id: ctx.jsonRpcId ?? null,
      error: { code: error.rpcCode ?? jsonRpcCodeFor(error.status), message: error.message, data: { code: error.code, status: error.status, ...error.details } },
    });
  } else {
    body = JSON.stringify({ error: { code: error.code, message: error.message, ...(error.details ? { details: error.details } : {}) } });
  }
  headers['content-type'] = 'application/json';
  headers['content-length'] = String(Buffer.byteLength(body));
  res.writeHead(error.status, headers);
  res.end(body);
}

/** Answers with a JSON document the gateway produced itself (e.g. a rewritten Agent Card). */
export function sendJson(ctx: RequestContext, status: number, value: unknown, extraHeaders?: Record<string, string>): void {
  const body = JSON.stringify(value);
  ctx.status = status;
  ctx.res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': String(Buffer.byteLength(body)),
    'x-dmsc-request-id': ctx.id,
    ...extraHeaders,
  });
  ctx.res.end(body);
}
