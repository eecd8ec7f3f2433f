import { createHash, randomBytes, randomUUID, timingSafeEqual } from 'node:crypto';
import { SignJWT } from 'jose';
import { NAME_PATTERN, type GatewayConfig } from '../../config/schema.js';
import type { AuditRecord, IdentityStore } from '../../store/types.js';
import type { Keyring } from '../keyring.js';
import { parseAgentSpiffeId, spiffeIdFor, type Identity } from '../spiffe.js';
import { certificateThumbprint, type BuiltInIssuer, type BuiltInIssuers } from './authenticator.js';
import { SigningKeys } from './signing-keys.js';

/**
 * The built-in OAuth 2.0 authorization server, one issuer per tenant (issue 3, point 5).
 *
 *   POST /tenants/<t>/oauth/token                        client_credentials grant (RFC 6749 §4.4)
 *   GET  /tenants/<t>/oauth/jwks.json                    the tenant's public signing keys
 *   GET  /.well-known/oauth-authorization-server/tenants/<t>   RFC 8414 metadata (and the same at
 *   GET  /tenants/<t>/.well-known/oauth-authorization-server   for clients that append the suffix)
 *
 * Client authentication:
 *   - tls_client_auth (RFC 8705 §2.1): the connection's client certificate, already verified by the
 *     gateway's TLS listener + CA for this tenant. Tokens are then certificate-bound
 *     (`cnf.x5t#S256`, RFC 8705 §3) and only accepted on a connection presenting that certificate.
 *   - client_secret_basic / client_secret_post (RFC 6749 §2.3.1): client_id is the agent name (or
 *     its SPIFFE ID). Secrets are generated here: 32 random bytes (256 bits), so a single SHA-256 is
 *     a sufficient hash (no password-stretching needed: there is nothing to brute-force), compared
 *     with timingSafeEqual. Only the hash is stored; the secret is shown once.
 *
 * Tokens (RFC 9068 profile): ES256 JWT, `typ: at+jwt`, iss = issuerBaseUrl(t), sub = SPIFFE ID, aud =
 * the requested audience or the issuer, iat/nbf/exp, jti, client_id, tenant, agent, scope, cnf. The
 * gateway itself accepts only tokens whose audience is its issuer (a token minted for another agent
 * cannot be replayed to the gateway by that agent). Every issue and every refusal is audited.
 */

export const CLIENT_SECRET_PREFIX = 'dmsc_cs_';
const SECRET_HASH_PREFIX = 'sha256:';
const MAX_FORM_BYTES = 16 * 1024;
const SCOPE_TOKEN = /^[\x21\x23-\x5B\x5D-\x7E]+$/;
const AUDIENCE_MAX = 512;

export interface OAuthRequest {
  method: string;
  /** Path, optionally with a query string. */
  path: string;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
  /** The mTLS-verified identity of the connection, when it has a client certificate. */
  clientIdentity?: Identity;
  /** DER of the connection's client certificate (leaf). */
  clientCertDer?: Uint8Array;
  requestId?: string;
  remoteAddress?: string;
}

export interface OAuthResponse {
  status: number;
  headers: Record<string, string>;
  body: string;
}

export type AuditSink = (record: Omit<AuditRecord, 'seq'>) => unknown;

export interface TokenServiceOptions {
  store: IdentityStore;
  keyring: Keyring;
  trustDomain: string;
  /** The issuer identifier of a tenant, e.g. `https://gw.example:8443/tenants/<t>`. */
  issuerBaseUrl: (tenant: string) => string;
  config: Pick<GatewayConfig, 'identity' | 'tenants'>;
  /** Defaults to store.appendAudit. */
  audit?: AuditSink;
  /** Whether a tenant exists; default: it is in config.tenants. */
  tenantExists?: (tenant: string) => boolean | Promise<boolean>;
  /**
   * Audiences a client may request besides the issuer itself and SPIFFE IDs of the tenant's agents
   * (default: none). Unknown audiences are refused with invalid_target (RFC 8707).
   */
  extraAudiences?: (tenant: string) => readonly string[];
  /** Scopes a client may request; undefined: any well-formed scope is granted as asked. */
  scopesSupported?: readonly string[];
  /** Rotate a tenant's signing key when older than this. Default 30 days. */
  maxSigningKeyAgeMs?: number;
}

export interface TokenService {
  handle(request: OAuthRequest): Promise<OAuthResponse | undefined>;
  /** Makes (or replaces) the agent's client secret; returns it once. Only its hash is stored. */
  createClientSecret(tenant: string, agent: string, options?: { actor?: string }): Promise<string>;
  deleteClientSecret(tenant: string, agent: string, options?: { actor?: string }): Promise<void>;
  /** New active signing key for the tenant; the old one stays published until its tokens expire. */
  rotateSigningKey(tenant: string): Promise<string>;
  /** The tenant's JWKS (public keys only). */
  jwks(tenant: string): Promise<{ keys: Record<string, unknown>[] }>;
  /** RFC 8414 metadata of the tenant's issuer. */
  metadata(tenant: string): Record<string, unknown>;
  /** For JwtAuthenticator: resolves `iss` to a tenant's built-in issuer (local keys, no HTTP). */
  readonly builtInIssuers: BuiltInIssuers;
  update(config: Pick<GatewayConfig, 'identity' | 'tenants'>): void;
}

class OAuthError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    readonly description: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(description);
  }
}

export function hashClientSecret(secret: string): string {
  return SECRET_HASH_PREFIX + createHash('sha256').update(secret, 'utf8').digest('hex');
}

function verifyClientSecret(secret: string, storedHash: string | undefined): boolean {
  const actual = Buffer.from(hashClientSecret(secret), 'utf8');
  // Compare against a dummy when the client is unknown so both cases take the same time.
  const expected = Buffer.from(storedHash ?? hashClientSecret(randomBytes(8).toString('hex')), 'utf8');
  const equal = expected.length === actual.length && timingSafeEqual(expected, actual);
  return equal && storedHash !== undefined;
}

function header(headers: OAuthRequest['headers'], name: string): string | undefined {
  const value = headers[name] ?? headers[name.toLowerCase()];
  return Array.isArray(value) ? value[0] : value;
}

/** application/x-www-form-urlencoded decoding of one Basic credential half (RFC 6749 §2.3.1). */
function formDecode(value: string): string {
  return decodeURIComponent(value.replace(/\+/g, ' '));
}

function json(status: number, body: unknown, headers: Record<string, string> = {}): OAuthResponse {
  return {
    status,
    headers: { 'content-type': 'application/json; charset=utf-8', ...headers },
    body: JSON.stringify(body),
  };
}

const NO_STORE = { 'cache-control': 'no-store', pragma: 'no-cache' };

type Route = { kind: 'token' | 'jwks' | 'metadata' | 'unknown'; tenant: string };

function route(rawPath: string): Route | undefined {
  const path = rawPath.split('?', 1)[0] ?? '';
  let match = /^\/\.well-known\/oauth-authorization-server\/tenants\/([^/]+)$/.exec(path);
  if (match) return NAME_PATTERN.test(match[1]!) ? { kind: 'metadata', tenant: match[1]! } : undefined;
  match = /^\/tenants\/([^/]+)\/(oauth(?:\/.*)?|\.well-known\/oauth-authorization-server)$/.exec(path);
  if (!match || !NAME_PATTERN.test(match[1]!)) return undefined;
  const tenant = match[1]!;
  switch (match[2]) {
    case 'oauth/token':
      return { kind: 'token', tenant };
    case 'oauth/jwks.json':
      return { kind: 'jwks', tenant };
    case '.well-known/oauth-authorization-server':
      return { kind: 'metadata', tenant };
    default:
      return { kind: 'unknown', tenant };
  }
}

interface Client {
  agent: string;
  method: 'tls_client_auth' | 'client_secret_basic' | 'client_secret_post';
  thumbprint?: string;
}

export function createTokenService(options: TokenServiceOptions): TokenService {
  let config = options.config;
  const audit: AuditSink = options.audit ?? ((record) => options.store.appendAudit(record));
  const keys = new SigningKeys({
    store: options.store,
    keyring: options.keyring,
    retention: () => config.identity.accessTokenTtlMs + config.identity.clockSkewMs,
    ...(options.maxSigningKeyAgeMs !== undefined ? { maxKeyAgeMs: options.maxSigningKeyAgeMs } : {}),
  });
  const verifiers = new Map<string, BuiltInIssuer>();

  const tenantExists = async (tenant: string): Promise<boolean> =>
    options.tenantExists ? await options.tenantExists(tenant) : config.tenants.some((t) => t.name === tenant);

  const issuerOf = (tenant: string): string => options.issuerBaseUrl(tenant);

  function metadata(tenant: string): Record<string, unknown> {
    const issuer = issuerOf(tenant);
    return {
      issuer,
      token_endpoint: `${issuer}/oauth/token`,
      jwks_uri: `${issuer}/oauth/jwks.json`,
      grant_types_supported: ['client_credentials'],
      response_types_supported: [],
      token_endpoint_auth_methods_supported: ['tls_client_auth', 'client_secret_basic', 'client_secret_post'],
      tls_client_certificate_bound_access_tokens: true,
      ...(options.scopesSupported ? { scopes_supported: [...options.scopesSupported] } : {}),
    };
  }

  async function record(entry: Omit<AuditRecord, 'seq' | 'time'>): Promise<void> {
    await audit({ time: new Date().toISOString(), ...entry });
  }

  function parseForm(request: OAuthRequest): Map<string, string[]> {
    const type = (header(request.headers, 'content-type') ?? '').split(';', 1)[0]!.trim().toLowerCase();
    if (type !== 'application/x-www-form-urlencoded') {
      throw new OAuthError(400, 'invalid_request', 'the token request must be application/x-www-form-urlencoded');
    }
    if (request.body.length > MAX_FORM_BYTES) throw new OAuthError(400, 'invalid_request', `the token request body exceeds ${MAX_FORM_BYTES} bytes`);
    const form = new Map<string, string[]>();
    for (const [name, value] of new URLSearchParams(request.body.toString('utf8'))) {
      if (value === '') continue; // RFC 6749 §3.2: a parameter without a value is omitted
      const list = form.get(name) ?? [];
      list.push(value);
      form.set(name, list);
    }
    for (const [name, values] of form) {
      if (values.length > 1 && name !== 'resource') throw new OAuthError(400, 'invalid_request', `parameter "${name}" is repeated`);
    }
    return form;
  }

  const one = (form: Map<string, string[]>, name: string): string | undefined => form.get(name)?.[0];

  async function authenticateClient(tenant: string, request: OAuthRequest, form: Map<string, string[]>): Promise<Client> {
    const authorization = header(request.headers, 'authorization');
    const basicChallenge = { 'www-authenticate': `Basic realm="${issuerOf(tenant)}", charset="UTF-8"` };
    let basic: { id: string; secret: string } | undefined;
    if (authorization !== undefined) {
      const m = /^Basic[ ]+([A-Za-z0-9+/=]+)\s*$/i.exec(authorization);
      if (!m) throw new OAuthError(401, 'invalid_client', 'only HTTP Basic client authentication is supported in the Authorization header', basicChallenge);
      const decoded = Buffer.from(m[1]!, 'base64').toString('utf8');
      const colon = decoded.indexOf(':');
      if (colon < 0) throw new OAuthError(401, 'invalid_client', 'malformed Basic credentials', basicChallenge);
      try {
        basic = { id: formDecode(decoded.slice(0, colon)), secret: formDecode(decoded.slice(colon + 1)) };
      } catch {
        throw new OAuthError(401, 'invalid_client', 'malformed Basic credentials', basicChallenge);
      }
    }
    const postSecret = one(form, 'client_secret');
    const formClientId = one(form, 'client_id');
    const mtls = request.clientIdentity?.via === 'mtls' ? request.clientIdentity : undefined;
    const methods = [basic, postSecret, mtls].filter((value) => value !== undefined).length;
    if (methods > 1) {
      throw new OAuthError(400, 'invalid_request', 'the request uses more than one client authentication method (certificate, Basic, client_secret); use one');
    }

    const resolveClientId = (id: string): string | undefined => {
      if (id.startsWith('spiffe://')) {
        const parsed = parseAgentSpiffeId(id, options.trustDomain);
        return parsed && parsed.tenant === tenant ? parsed.agent : undefined;
      }
      return NAME_PATTERN.test(id) ? id : undefined;
    };

    if (basic || postSecret !== undefined) {
      const method = basic ? 'client_secret_basic' : 'client_secret_post';
      const challenge = basic ? basicChallenge : {};
      const id = basic ? basic.id : formClientId;
      const secret = basic ? basic.secret : postSecret!;
      if (basic && formClientId !== undefined && formClientId !== basic.id) {
        throw new OAuthError(400, 'invalid_request', 'client_id differs from the Basic credentials');
      }
      if (id === undefined) throw new OAuthError(401, 'invalid_client', 'client_id is missing', challenge);
      const agent = resolveClientId(id);
      const stored = agent ? await options.store.getClientSecret(tenant, agent) : undefined;
      if (!verifyClientSecret(secret, stored?.secretHash) || !agent) {
        throw new OAuthError(401, 'invalid_client', 'unknown client or wrong client secret', challenge);
      }
      return { agent, method };
    }

    if (mtls) {
      if (mtls.tenant !== tenant) throw new OAuthError(401, 'invalid_client', `the client certificate belongs to tenant "${mtls.tenant}", not "${tenant}"`);
      if (!request.clientCertDer) throw new OAuthError(401, 'invalid_client', 'the client certificate is not available to bind the token to');
      if (formClientId !== undefined && formClientId !== mtls.agent && formClientId !== mtls.spiffeId) {
        throw new OAuthError(401, 'invalid_client', 'client_id does not match the client certificate');
      }
      return { agent: mtls.agent, method: 'tls_client_auth', thumbprint: certificateThumbprint(request.clientCertDer) };
    }

    throw new OAuthError(401, 'invalid_client', 'no client authentication: present a client certificate or a client secret', basicChallenge);
  }

  function audienceFor(tenant: string, form: Map<string, string[]>): string {
    const issuer = issuerOf(tenant);
    const resources = form.get('resource') ?? [];
    if (resources.length > 1) throw new OAuthError(400, 'invalid_target', 'only one resource per token request is supported');
    const audience = one(form, 'audience');
    const resource = resources[0];
    if (audience !== undefined && resource !== undefined && audience !== resource) {
      throw new OAuthError(400, 'invalid_request', 'audience and resource name different targets');
    }
    const requested = audience ?? resource;
    if (requested === undefined || requested === issuer) return issuer;
    if (requested.length > AUDIENCE_MAX) throw new OAuthError(400, 'invalid_target', 'the requested audience is too long');
    const agent = parseAgentSpiffeId(requested, options.trustDomain);
    if (agent && agent.tenant === tenant) return requested;
    if (options.extraAudiences?.(tenant).includes(requested)) return requested;
    throw new OAuthError(400, 'invalid_target', 'the requested audience is not one this tenant issues tokens for');
  }

  function scopeFor(form: Map<string, string[]>): string | undefined {
    const scope = one(form, 'scope');
    if (scope === undefined) return undefined;
    const tokens = scope.split(' ');
    if (tokens.some((token) => !SCOPE_TOKEN.test(token))) throw new OAuthError(400, 'invalid_scope', 'the scope is malformed');
    if (options.scopesSupported) {
      const unknown = tokens.filter((token) => !options.scopesSupported!.includes(token));
      if (unknown.length > 0) throw new OAuthError(400, 'invalid_scope', 'the requested scope is not supported');
    }
    return [...new Set(tokens)].join(' ');
  }

  async function token(tenant: string, request: OAuthRequest): Promise<OAuthResponse> {
    let client: Client | undefined;
    const base = {
      tenant,
      action: 'token.issue',
      ...(request.requestId ? { requestId: request.requestId } : {}),
    };
    try {
      if (request.method !== 'POST') throw new OAuthError(405, 'invalid_request', 'the token endpoint accepts POST only', { allow: 'POST' });
      if (!(await tenantExists(tenant))) throw new OAuthError(404, 'invalid_request', `no tenant "${tenant}"`);
      const form = parseForm(request);
      client = await authenticateClient(tenant, request, form);
      const grant = one(form, 'grant_type');
      if (grant === undefined) throw new OAuthError(400, 'invalid_request', 'grant_type is missing');
      if (grant !== 'client_credentials') throw new OAuthError(400, 'unsupported_grant_type', 'only the client_credentials grant is supported');
      const audience = audienceFor(tenant, form);
      const scope = scopeFor(form);

      const issuer = issuerOf(tenant);
      const spiffeId = spiffeIdFor(options.trustDomain, tenant, client.agent);
      const ttlSeconds = Math.max(1, Math.floor(config.identity.accessTokenTtlMs / 1000));
      const now = Math.floor(Date.now() / 1000);
      const jti = randomUUID();
      const signing = await keys.signingKey(tenant);
      const claims: Record<string, unknown> = { client_id: client.agent, tenant, agent: client.agent };
      if (scope) claims['scope'] = scope;
      if (client.thumbprint) claims['cnf'] = { 'x5t#S256': client.thumbprint };
      const jwt = await new SignJWT(claims)
        .setProtectedHeader({ alg: 'ES256', kid: signing.kid, typ: 'at+jwt' })
        .setIssuer(issuer)
        .setSubject(spiffeId)
        .setAudience(audience)
        .setIssuedAt(now)
        .setNotBefore(now)
        .setExpirationTime(now + ttlSeconds)
        .setJti(jti)
        .sign(signing.key);
      // Fail closed: a credential whose issue cannot be audited is not handed out.
      await record({
        ...base,
        actor: spiffeId,
        target: audience,
        decision: 'allow',
        reason: `${client.method}; jti=${jti}; exp=${new Date((now + ttlSeconds) * 1000).toISOString()}${client.thumbprint ? '; certificate-bound' : ''}`,
      });
      return json(200, { access_token: jwt, token_type: 'Bearer', expires_in: ttlSeconds, ...(scope ? { scope } : {}) }, NO_STORE);
    } catch (error) {
      const failure =
        error instanceof OAuthError ? error : new OAuthError(500, 'server_error', 'the token could not be issued; see the gateway log');
      const actor = client
        ? spiffeIdFor(options.trustDomain, tenant, client.agent)
        : request.clientIdentity?.spiffeId ?? request.remoteAddress ?? 'anonymous';
      try {
        await record({ ...base, actor, decision: 'deny', reason: `${failure.code}: ${failure.description}` });
      } catch {
        // the refusal stands whether or not it could be audited
      }
      return json(failure.status, { error: failure.code, error_description: failure.description }, { ...NO_STORE, ...failure.headers });
    }
  }

  const builtInIssuers: BuiltInIssuers = {
    async resolve(iss: string) {
      const cached = verifiers.get(iss);
      if (cached) return cached;
      // The tenant name is one of the issuer URL's labels; find the one that maps back to `iss`.
      const candidates = new Set(iss.split(/[/.:]/).filter((part) => NAME_PATTERN.test(part)));
      for (const tenant of candidates) {
        if (issuerOf(tenant) !== iss || !(await tenantExists(tenant))) continue;
        const entry: BuiltInIssuer = { tenant, issuer: iss, audiences: [iss], getKey: keys.verifier(tenant), typ: 'at+jwt' };
        if (verifiers.size >= 4096) verifiers.clear();
        verifiers.set(iss, entry);
        return entry;
      }
      return undefined;
    },
  };

  return {
    builtInIssuers,

    update(next) {
      config = next;
      verifiers.clear();
    },

    metadata,

    jwks: (tenant) => keys.jwks(tenant) as Promise<{ keys: Record<string, unknown>[] }>,

    rotateSigningKey: (tenant) => keys.rotate(tenant),

    async createClientSecret(tenant, agent, opts) {
      if (!NAME_PATTERN.test(tenant) || !NAME_PATTERN.test(agent)) throw new Error('tenant and agent must be names');
      const secret = CLIENT_SECRET_PREFIX + randomBytes(32).toString('base64url');
      await options.store.putClientSecret({ tenant, agent, secretHash: hashClientSecret(secret), createdAt: new Date().toISOString() });
      await record({
        tenant,
        action: 'client-secret.create',
        actor: opts?.actor ?? 'admin',
        target: spiffeIdFor(options.trustDomain, tenant, agent),
        decision: 'allow',
      });
      return secret;
    },

    async deleteClientSecret(tenant, agent, opts) {
      await options.store.deleteClientSecret(tenant, agent);
      await record({
        tenant,
        action: 'client-secret.delete',
        actor: opts?.actor ?? 'admin',
        target: spiffeIdFor(options.trustDomain, tenant, agent),
        decision: 'allow',
      });
    },

    async handle(request) {
      const matched = route(request.path);
      if (!matched) return undefined;
      const { kind, tenant } = matched;
      if (kind === 'token') return token(tenant, request);
      if (kind === 'unknown') return json(404, { error: 'not_found', error_description: 'no such OAuth endpoint' });
      if (request.method !== 'GET' && request.method !== 'HEAD') {
        return json(405, { error: 'invalid_request', error_description: 'GET only' }, { allow: 'GET, HEAD' });
      }
      if (!(await tenantExists(tenant))) return json(404, { error: 'not_found', error_description: `no tenant "${tenant}"` });
      if (kind === 'jwks') {
        const body = await keys.jwks(tenant);
        return { status: 200, headers: { 'content-type': 'application/jwk-set+json', 'cache-control': 'public, max-age=60' }, body: JSON.stringify(body) };
      }
      return json(200, metadata(tenant), { 'cache-control': 'public, max-age=300' });
    },
  };
}
