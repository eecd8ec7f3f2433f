/** A refusal or failure the gateway reports to the caller, as JSON (or JSON-RPC / gRPC status). */
export class GatewayError extends Error {
  readonly status: number;
  readonly code: string;
  readonly headers: Record<string, string> | undefined;
  /** More to tell the caller (e.g. the closest skills when no agent matched): `error.details` in JSON, `error.data` in JSON-RPC. */
  details: Record<string, unknown> | undefined = undefined;
  /** The JSON-RPC error code when the default for the status does not fit. */
  rpcCode: number | undefined = undefined;

  constructor(status: number, code: string, message: string, headers?: Record<string, string>) {
    // A refusal is an answer, not a bug: no stack trace (capturing one costs ~10 µs per refusal,
    // which adds up when a tenant floods the gateway with requests it refuses).
    const limit = Error.stackTraceLimit;
    Error.stackTraceLimit = 0;
    super(message);
    Error.stackTraceLimit = limit;
    this.status = status;
    this.code = code;
    this.headers = headers;
    this.name = 'GatewayError';
  }
}

export const errors = {
  notFound: (message: string) => new GatewayError(404, 'not_found', message),
  /** `reason` is machine-readable (expired, revoked, unknown_ca, wrong_tenant, bad_spiffe_id, bad_token, no_credentials). */
  unauthenticated: (reason: string, message: string) =>
    new GatewayError(401, 'unauthenticated', message, { 'www-authenticate': 'Bearer realm="dmsc"', 'x-dmsc-auth-failure': reason }),
  noHealthyEndpoint: (agent: string) =>
    new GatewayError(503, 'no_healthy_endpoint', `agent ${agent} has no healthy endpoint`, { 'retry-after': '1' }),
  overloaded: () =>
    new GatewayError(503, 'overloaded', 'the gateway is at its concurrent request limit', { 'retry-after': '1' }),
  headersTooLarge: (limit: number) =>
    new GatewayError(431, 'headers_too_large', `request headers exceed the limit of ${limit} bytes`),
  bodyTooLarge: (limit: number) =>
    new GatewayError(413, 'body_too_large', `request body exceeds the limit of ${limit} bytes`),
  badRequest: (message: string) => new GatewayError(400, 'bad_request', message),
  upstreamUnavailable: (agent: string, detail: string) =>
    new GatewayError(502, 'upstream_unavailable', `agent ${agent} could not be reached: ${detail}`),
  upstreamTimeout: (agent: string, what: string) =>
    new GatewayError(504, 'upstream_timeout', `agent ${agent} did not answer in time (${what})`),
  cardUnavailable: (agent: string, detail: string) =>
    new GatewayError(502, 'card_unavailable', `the Agent Card of ${agent} could not be fetched: ${detail}`),
  internal: () => new GatewayError(500, 'internal', 'internal gateway error'),
};

/** JSON-RPC 2.0 error codes for refusals on A2A JSON-RPC calls (server errors are -32000..-32099). */
export function jsonRpcCodeFor(status: number): number {
  if (status === 400) return -32600;
  if (status === 404) return -32001;
  if (status === 413 || status === 431) return -32600;
  return -32000;
}

/** gRPC status codes for the same refusals (https://grpc.github.io/grpc/core/md_doc_statuscodes.html). */
export function grpcStatusFor(status: number): number {
  switch (status) {
    case 400:
      return 3; // INVALID_ARGUMENT
    case 401:
      return 16; // UNAUTHENTICATED
    case 403:
      return 7; // PERMISSION_DENIED
    case 404:
      return 5; // NOT_FOUND
    case 413:
    case 429:
    case 431:
      return 8; // RESOURCE_EXHAUSTED
    case 504:
      return 4; // DEADLINE_EXCEEDED
    case 502:
    case 503:
      return 14; // UNAVAILABLE
    default:
      return 13; // INTERNAL
  }
}
