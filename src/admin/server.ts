import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import { adminWriteEvent, type AuditEvent } from '../audit/index.js';
import { nameSchema } from '../config/schema.js';
import type { RegistryAdmin } from '../registry/types.js';
import { formatUrl } from '../dataplane/listeners.js';
import { AdminError, errorReply, readJsonBody, send, toAdminError, validate, type Reply } from './http.js';
import type { GatewayMetrics } from './metrics.js';
import { buildOpenApiDocument } from './openapi.js';
import { adminRoutes, type AdminContext, type AdminIdentity, type Route, type StatusSnapshot } from './routes.js';
import type { AdminTenancy } from './routes-tenancy.js';
import type { AdminRouting } from './routes-routing.js';
import { serialSchema } from './schemas.js';
import { hashToken, tokenMatches } from './tokens.js';

interface Caller {
  authenticated: boolean;
  /** Set for a tenant-scoped token. */
  tenant?: string;
  actor: string;
}
import { GATEWAY_VERSION } from './version.js';

export interface AdminServerOptions {
  host: string;
  /** 0 picks a free port; the returned url names the bound one. */
  port: number;
  registry: RegistryAdmin;
  metrics: GatewayMetrics;
  logger: Logger;
  /** SHA-256 hex hashes of the accepted admin tokens (see hashToken); read per request so a reload applies at once. */
  adminTokenHashes: () => readonly string[] | Promise<readonly string[]>;
  isReady: () => boolean;
  status: () => StatusSnapshot;
  /** The built-in identity (CA, enrollment tokens, OAuth client secrets, audit); without it those routes answer 501. */
  identity?: AdminIdentity;
  /** Policy, onboarding and offboarding; without it those routes answer 501. */
  tenancy?: AdminTenancy;
  routing?: AdminRouting;
  /** Tenant-scoped, read-only admin tokens by hash (see routes' `tenantReadable`). */
  scopedToken?: (tokenHash: string) => Promise<{ id: string; tenant: string } | undefined>;
  /** Appends to the audit trail: every write attempt (method, path, status, actor), before it is answered. */
  audit?: (event: AuditEvent) => void;
}

export interface AdminServer {
  url: string;
  close(): Promise<void>;
}

interface CompiledPath {
  pattern: RegExp;
  params: string[];
  routes: Map<string, Route>;
}

function compile(routes: readonly Route[]): CompiledPath[] {
  const byPath = new Map<string, CompiledPath>();
  for (const r of routes) {
    let compiled = byPath.get(r.path);
    if (!compiled) {
      const params = [...r.path.matchAll(/\{(\w+)\}/g)].map((m) => m[1]!);
      const source = r.path.replace(/[.*+?^$()|[\]\\]/g, '\\$&').replace(/\{\w+\}/g, '([^/]+)');
      compiled = { pattern: new RegExp(`^${source}$`), params, routes: new Map() };
      byPath.set(r.path, compiled);
    }
    compiled.routes.set(r.method, r);
  }
  return [...byPath.values()];
}

function match(paths: CompiledPath[], pathname: string): { path: CompiledPath; values: string[] } | undefined {
  for (const path of paths) {
    const found = path.pattern.exec(pathname);
    if (found) return { path, values: found.slice(1) };
  }
  return undefined;
}

function bearerToken(req: http.IncomingMessage): string | undefined {
  const header = req.headers.authorization;
  const found = header && /^Bearer\s+(\S+)\s*$/i.exec(header);
  return found ? found[1] : undefined;
}

function decodeParam(name: string, raw: string): string {
  let value: string;
  try {
    value = decodeURIComponent(raw);
  } catch {
    throw new AdminError(400, 'bad_request', `${name}: malformed percent-encoding in the path`);
  }
  return validate(name === 'serial' ? serialSchema : nameSchema, value, name);
}

/** Query parameters as a plain object (the last of repeated names wins). */
function queryOf(url: string | undefined): Record<string, string> {
  const at = (url ?? '').indexOf('?');
  if (at < 0) return {};
  return Object.fromEntries(new URLSearchParams(url!.slice(at + 1)));
}

/** Whether the request carries no body at all (no content-type, no length, not chunked). */
function hasNoBody(req: http.IncomingMessage): boolean {
  return !req.headers['content-type'] && !req.headers['transfer-encoding'] && Number(req.headers['content-length'] ?? 0) === 0;
}

/** The admin listener: Admin API under /admin/v1 (OpenAPI at /admin/v1/openapi.json), /metrics, /healthz, /readyz. */
export async function startAdminServer(options: AdminServerOptions): Promise<AdminServer> {
  const { logger } = options;
  const paths = compile(adminRoutes);
  const ctx: AdminContext = {
    registry: options.registry,
    metrics: options.metrics,
    isReady: options.isReady,
    status: options.status,
    ...(options.identity ? { identity: options.identity } : {}),
    ...(options.tenancy ? { tenancy: options.tenancy } : {}),
    ...(options.routing ? { routing: options.routing } : {}),
    startedAt: new Date(),
    openApi: buildOpenApiDocument(adminRoutes, GATEWAY_VERSION),
  };

  /** The operator token, or a tenant-scoped one (sets caller.tenant). */
  const authenticate = async (req: http.IncomingMessage, caller: Caller): Promise<boolean> => {
    const token = bearerToken(req);
    if (token === undefined) return false;
    if (tokenMatches(token, await options.adminTokenHashes())) return true;
    const scoped = await options.scopedToken?.(hashToken(token));
    if (!scoped) return false;
    caller.tenant = scoped.tenant;
    caller.actor = `admin-token:${scoped.id}`;
    return true;
  };

  /** What a tenant-scoped token may see: its own tenant, read-only. */
  const confine = (route: Route, caller: Caller, params: Record<string, string>, query: Record<string, string | undefined>) => {
    const own = caller.tenant!;
    if (!route.tenantReadable) {
      throw new AdminError(403, 'forbidden', `this token is scoped to tenant "${own}" and may only read that tenant's records; ${route.operationId} needs the operator token`);
    }
    if (params.tenant !== undefined && params.tenant !== own) {
      throw new AdminError(403, 'forbidden', `this token is scoped to tenant "${own}"; it cannot read tenant "${params.tenant}"`);
    }
    if (route.query?.shape && 'tenant' in route.query.shape) {
      if (query.tenant !== undefined && query.tenant !== own) {
        throw new AdminError(403, 'forbidden', `this token is scoped to tenant "${own}"; it cannot read tenant "${query.tenant}"`);
      }
      query.tenant = own;
    }
  };

  const dispatch = async (req: http.IncomingMessage, pathname: string, caller: Caller): Promise<Reply> => {
    const found = match(paths, pathname);
    if (!found) throw new AdminError(404, 'not_found', `no such route: ${pathname}`);
    const method = req.method === 'HEAD' ? 'GET' : (req.method ?? '');
    const route = found.path.routes.get(method);
    if (!route) {
      const allowed = [...found.path.routes.keys()];
      if (allowed.includes('GET')) allowed.push('HEAD');
      throw new AdminError(405, 'method_not_allowed', `${req.method} is not allowed on ${pathname}`, { allow: allowed.join(', ') });
    }
    if (route.auth) {
      caller.authenticated = await authenticate(req, caller);
      if (!caller.authenticated) {
        throw new AdminError(401, 'unauthorized', 'send the admin token as "Authorization: Bearer <token>"', {
          'www-authenticate': 'Bearer realm="dmsc-admin"',
        });
      }
    }
    const params: Record<string, string> = {};
    found.path.params.forEach((name, i) => {
      params[name] = decodeParam(name, found.values[i]!);
    });
    const query = route.query ? (validate(route.query, queryOf(req.url), 'query') as Record<string, string | undefined>) : {};
    if (caller.tenant !== undefined) confine(route, caller, params, query);
    let body: unknown;
    if (route.body) {
      body = validate(route.body, route.bodyOptional && hasNoBody(req) ? {} : await readJsonBody(req), 'body');
    }
    return route.handle({ params, body, query }, ctx);
  };

  const server = http.createServer((req, res) => {
    const pathname = (req.url ?? '/').split('?', 1)[0]!;
    const caller: Caller = { authenticated: false, actor: 'anonymous' };
    const reply = (answer: Reply) => {
      req.resume(); // a body the route did not read must not stall the connection
      // Authenticated or not, a write attempt is audited (committed before the answer is sent) and logged.
      if (req.method !== 'GET' && req.method !== 'HEAD' && pathname.startsWith('/admin/')) {
        const actor = !caller.authenticated ? 'anonymous' : caller.tenant !== undefined ? caller.actor : 'admin-token';
        options.audit?.(adminWriteEvent({ method: req.method ?? '', path: pathname, status: answer.status, actor }));
        logger.info({ actor, method: req.method, path: pathname, status: answer.status }, 'admin write');
      }
      send(res, answer);
    };
    dispatch(req, pathname, caller).then(reply, (err: unknown) => {
      const known = toAdminError(err);
      if (!known) logger.error({ err, method: req.method, path: pathname }, 'admin request failed');
      reply(errorReply(known ?? new AdminError(500, 'internal_error', 'internal error (logged by the gateway)')));
    });
  });
  server.headersTimeout = 30_000;
  server.requestTimeout = 60_000;

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;
  return {
    url: formatUrl('http', options.host, port),
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
