import { createHash, timingSafeEqual } from 'node:crypto';
import {
  createRemoteJWKSet,
  customFetch,
  decodeJwt,
  decodeProtectedHeader,
  errors,
  jwtVerify,
  type FetchImplementation,
  type JWTPayload,
  type JWTVerifyGetKey,
} from 'jose';
import { NAME_PATTERN, type JwtIssuerConfig, type TenantConfig } from '../../config/schema.js';
import { parseAgentSpiffeId, spiffeIdFor, type Identity } from '../spiffe.js';
import type { AuthFailureReason, AuthResult } from '../types.js';

/**
 * Bearer JWT authentication (issue 3, point 5).
 *
 * Every configured issuer belongs to one tenant. A token is routed to its issuer by its unverified
 * `iss` claim; only then is it verified, with that issuer's JWKS, audiences and `alg` allow-list, so
 * an unknown issuer costs one base64 decode. Symmetric algorithms and `none` are never on an
 * allow-list: a JWKS holds public keys, and "HS256 keyed with the RSA public key" cannot verify.
 *
 * Remote JWKS (jose `createRemoteJWKSet`): cached for `cacheMaxAgeMs`, re-fetched on an unknown
 * `kid` at most once per `cooldownMs` (so tokens with random kids cannot make us hammer the
 * issuer), each fetch bounded by `timeoutMs` and `maxBytes`; a failed fetch also waits out the
 * cooldown before the next attempt.
 */

/** Algorithms that can never be accepted from a (public-key) JWKS. */
const FORBIDDEN_ALGS = /^(none|HS\d+)$/i;
const MAX_TOKEN_CHARS = 16 * 1024;

export interface JwksOptions {
  /** Per-fetch timeout. Default 5 s. */
  timeoutMs?: number;
  /** Minimum time between two fetches of one JWKS triggered by unknown kids or failures. Default 30 s. */
  cooldownMs?: number;
  /** Keys are re-fetched when older than this. Default 10 min. */
  cacheMaxAgeMs?: number;
  /** A larger JWKS document is refused. Default 512 KiB. */
  maxBytes?: number;
}

/** One tenant's view of the gateway's own authorization server (see token-service.ts). */
export interface BuiltInIssuer {
  tenant: string;
  issuer: string;
  /** Audiences the gateway accepts for its own tokens (the issuer itself). */
  audiences: string[];
  getKey: JWTVerifyGetKey;
  /** Required `typ` header ('at+jwt', RFC 9068). */
  typ?: string;
}

export interface BuiltInIssuers {
  /** The built-in issuer whose identifier is exactly `iss`, if any. */
  resolve(iss: string): BuiltInIssuer | undefined | Promise<BuiltInIssuer | undefined>;
}

export interface JwtAuthenticatorOptions {
  trustDomain: string;
  clockSkewMs: number;
  tenants: readonly Pick<TenantConfig, 'name' | 'oauth'>[];
  builtIn?: BuiltInIssuers;
  jwks?: JwksOptions;
  /**
   * How many verified tokens to remember (until they expire) so an agent's repeated bearer token is
   * not re-verified on every request, like Envoy's jwt_authn cache. 0 disables. Default 4096. The
   * tenant hint and, for bound tokens, the certificate are checked on every hit; a reload clears it.
   */
  verifiedCacheSize?: number;
}

interface Verification {
  result: AuthResult;
  /** The verified claims, on success. */
  payload?: JWTPayload;
}

interface VerifiedToken {
  identity: Identity;
  /** exp + clock skew, in ms. */
  goodUntil: number;
  payload: JWTPayload;
}

interface IssuerEntry {
  tenant: string;
  issuer: string;
  audiences: string[];
  algorithms: string[];
  agentClaim: string;
  getKey: JWTVerifyGetKey;
  typ?: string;
  builtIn: boolean;
}

class JwksUnavailable extends Error {}

/** base64url(SHA-256(DER)): the RFC 8705 `x5t#S256` certificate thumbprint. */
export function certificateThumbprint(der: Uint8Array): string {
  return createHash('sha256').update(der).digest('base64url');
}

function fail(reason: AuthFailureReason, detail: string): AuthResult {
  return { ok: false, reason, detail };
}

/** A header value from the token, fit to quote in a message: short and plain, or not at all. */
function quoteable(value: unknown): string {
  return typeof value === 'string' && /^[A-Za-z0-9+._-]{1,32}$/.test(value) ? `"${value}"` : '(unprintable)';
}

const B64URL = /^[A-Za-z0-9_-]*$/;
const B64URL_ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';

/**
 * True when every segment is canonical unpadded base64url: no foreign characters and no stray bits in
 * the last character. Lenient decoders map several strings to the same bytes; refusing the variants
 * means one signed token has exactly one accepted spelling (no malleable token strings).
 */
function canonicalCompact(token: string): boolean {
  const segments = token.split('.');
  if (segments.length !== 3) return false;
  for (const [index, segment] of segments.entries()) {
    // An empty signature is let through here so that `alg: none` is refused by name below.
    if ((segment.length === 0 && index < 2) || !B64URL.test(segment)) return false;
    const rem = segment.length % 4;
    if (rem === 1) return false;
    if (rem !== 0) {
      const last = B64URL_ALPHABET.indexOf(segment[segment.length - 1]!);
      if ((last & (rem === 2 ? 0x0f : 0x03)) !== 0) return false;
    }
  }
  return true;
}

async function readLimited(response: Response, maxBytes: number): Promise<Uint8Array> {
  const declared = Number(response.headers.get('content-length'));
  if (Number.isFinite(declared) && declared > maxBytes) throw new JwksUnavailable(`JWKS document larger than ${maxBytes} bytes`);
  if (!response.body) return new Uint8Array();
  const chunks: Uint8Array[] = [];
  let total = 0;
  for await (const chunk of response.body as AsyncIterable<Uint8Array>) {
    total += chunk.byteLength;
    if (total > maxBytes) throw new JwksUnavailable(`JWKS document larger than ${maxBytes} bytes`);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

interface RemoteJwks {
  getKey: JWTVerifyGetKey;
}

function remoteJwks(uri: string, options: Required<JwksOptions>): RemoteJwks {
  let failedAt = -Infinity;
  const fetchImpl: FetchImplementation = async (url, init) => {
    if (Date.now() - failedAt < options.cooldownMs) throw new JwksUnavailable('the last JWKS fetch failed; waiting out the cooldown');
    try {
      const response = await fetch(url, init);
      if (response.status !== 200) {
        await response.body?.cancel().catch(() => undefined);
        throw new JwksUnavailable(`JWKS answered HTTP ${response.status}`);
      }
      const body = await readLimited(response, options.maxBytes);
      return new Response(body, { status: 200, headers: { 'content-type': 'application/json' } });
    } catch (error) {
      failedAt = Date.now();
      throw error;
    }
  };
  const set = createRemoteJWKSet(new URL(uri), {
    timeoutDuration: options.timeoutMs,
    cooldownDuration: options.cooldownMs,
    cacheMaxAge: options.cacheMaxAgeMs,
    [customFetch]: fetchImpl,
  });
  return { getKey: set };
}

function agentFromClaim(value: unknown, tenant: string, trustDomain: string, claim: string): { ok: true; agent: string } | AuthResult {
  if (typeof value !== 'string' || value.length === 0) return fail('bad_token', `the token has no "${claim}" claim naming the agent`);
  if (value.startsWith('spiffe://')) {
    const parsed = parseAgentSpiffeId(value, trustDomain);
    if (!parsed) return fail('bad_token', `the "${claim}" claim is not an agent SPIFFE ID of trust domain ${trustDomain}`);
    if (parsed.tenant !== tenant) return fail('wrong_tenant', `the "${claim}" claim names an agent of tenant "${parsed.tenant}", but the issuer belongs to tenant "${tenant}"`);
    return { ok: true, agent: parsed.agent };
  }
  if (!NAME_PATTERN.test(value)) return fail('bad_token', `the "${claim}" claim is neither an agent name nor an agent SPIFFE ID`);
  return { ok: true, agent: value };
}

/** RFC 8705 §3: a certificate-bound token is only good on a connection with that certificate. */
function checkBinding(payload: JWTPayload, clientCertDer: Uint8Array | undefined): AuthResult | undefined {
  const cnf = payload['cnf'];
  if (cnf === undefined) return undefined;
  if (typeof cnf !== 'object' || cnf === null || Array.isArray(cnf)) return fail('bad_token', 'the "cnf" claim is malformed');
  const keys = Object.keys(cnf);
  const bound = (cnf as Record<string, unknown>)['x5t#S256'];
  if (keys.length !== 1 || typeof bound !== 'string') {
    return fail('bad_token', 'the token is bound by a confirmation method the gateway cannot check (only "x5t#S256" is supported)');
  }
  if (!clientCertDer) return fail('bad_token', 'the token is bound to a client certificate, but the connection presented none');
  const expected = Buffer.from(bound, 'utf8');
  const actual = Buffer.from(certificateThumbprint(clientCertDer), 'utf8');
  if (expected.length !== actual.length || !timingSafeEqual(expected, actual)) {
    return fail('bad_token', "the token is bound to another client certificate than the connection's");
  }
  return undefined;
}

function describeJoseError(error: unknown, payload: JWTPayload, header: Record<string, unknown>): AuthResult {
  if (error instanceof errors.JWTExpired) {
    const at = typeof payload.exp === 'number' ? ` at ${new Date(payload.exp * 1000).toISOString()}` : '';
    return fail('expired', `the token expired${at}`);
  }
  if (error instanceof errors.JWTClaimValidationFailed) {
    switch (error.claim) {
      case 'nbf': {
        const at = typeof payload.nbf === 'number' ? ` until ${new Date(payload.nbf * 1000).toISOString()}` : '';
        return fail('not_yet_valid', `the token is not valid${at}`);
      }
      case 'iat':
        return fail('not_yet_valid', 'the token is issued in the future');
      case 'aud':
        return fail('bad_token', 'the token audience is not accepted for this issuer');
      case 'iss':
        return fail('bad_token', 'the token issuer does not match');
      case 'typ':
        return fail('bad_token', 'the token type ("typ" header) is not accepted');
      default:
        return fail('bad_token', `the token's "${error.claim}" claim is missing or invalid`);
    }
  }
  if (error instanceof errors.JOSEAlgNotAllowed) return fail('bad_token', `the token algorithm ${quoteable(header['alg'])} is not allowed for this issuer`);
  if (error instanceof errors.JOSENotSupported) return fail('bad_token', `the token algorithm ${quoteable(header['alg'])} is not supported`);
  if (error instanceof errors.JWKSNoMatchingKey) return fail('bad_token', `no key of the issuer matches the token's key id ${quoteable(header['kid'])}`);
  if (error instanceof errors.JWKSMultipleMatchingKeys) return fail('bad_token', 'the signature does not verify with any matching key of the issuer');
  if (error instanceof errors.JWSSignatureVerificationFailed) return fail('bad_token', 'the token signature does not verify');
  if (error instanceof errors.JWKSTimeout) return fail('bad_token', "the issuer's key set could not be fetched in time");
  if (error instanceof errors.JWKSInvalid) return fail('bad_token', "the issuer's key set is malformed");
  if (error instanceof JwksUnavailable) return fail('bad_token', `the issuer's key set is unavailable: ${error.message}`);
  if (error instanceof errors.JWSInvalid || error instanceof errors.JWTInvalid) return fail('bad_token', 'the token is malformed');
  if (error instanceof errors.JOSEError) return fail('bad_token', 'the token could not be verified');
  return fail('bad_token', "the token could not be verified (the issuer's key set is unavailable)");
}

export class JwtAuthenticator {
  private readonly trustDomain: string;
  private clockSkewMs: number;
  private readonly builtIn: BuiltInIssuers | undefined;
  private readonly jwksOptions: Required<JwksOptions>;
  /** issuer identifier -> the tenants' entries for it (one issuer may serve several tenants). */
  private issuers = new Map<string, IssuerEntry[]>();
  /** jwksUri -> cached key set, kept across updates. */
  private jwks = new Map<string, RemoteJwks>();
  private readonly verified = new Map<string, VerifiedToken>();
  private readonly verifiedCacheSize: number;

  constructor(options: JwtAuthenticatorOptions) {
    this.trustDomain = options.trustDomain;
    this.clockSkewMs = options.clockSkewMs;
    this.builtIn = options.builtIn;
    this.jwksOptions = {
      timeoutMs: options.jwks?.timeoutMs ?? 5000,
      cooldownMs: options.jwks?.cooldownMs ?? 30_000,
      cacheMaxAgeMs: options.jwks?.cacheMaxAgeMs ?? 600_000,
      maxBytes: options.jwks?.maxBytes ?? 512 * 1024,
    };
    this.verifiedCacheSize = options.verifiedCacheSize ?? 4096;
    this.update(options.tenants, options.clockSkewMs);
  }

  /** Replaces the issuer configuration (config reload); JWKS caches of unchanged `jwksUri`s are kept. */
  update(tenants: readonly Pick<TenantConfig, 'name' | 'oauth'>[], clockSkewMs: number = this.clockSkewMs): void {
    this.clockSkewMs = clockSkewMs;
    const issuers = new Map<string, IssuerEntry[]>();
    const jwks = new Map<string, RemoteJwks>();
    for (const tenant of tenants) {
      for (const config of tenant.oauth?.issuers ?? []) {
        const set = jwks.get(config.jwksUri) ?? this.jwks.get(config.jwksUri) ?? remoteJwks(config.jwksUri, this.jwksOptions);
        jwks.set(config.jwksUri, set);
        const entry = this.entryFor(tenant.name, config, set);
        const list = issuers.get(config.issuer) ?? [];
        list.push(entry);
        issuers.set(config.issuer, list);
      }
    }
    this.issuers = issuers;
    this.jwks = jwks;
    this.verified.clear();
  }

  /** Forgets every verified token (e.g. after a tenant or agent is deleted); the next use re-verifies. */
  clearCache(): void {
    this.verified.clear();
  }

  private entryFor(tenant: string, config: JwtIssuerConfig, set: RemoteJwks): IssuerEntry {
    return {
      tenant,
      issuer: config.issuer,
      audiences: [...config.audiences],
      algorithms: config.algorithms.filter((alg) => !FORBIDDEN_ALGS.test(alg)),
      agentClaim: config.agentClaim,
      getKey: set.getKey,
      builtIn: false,
    };
  }

  /**
   * Verifies a bearer token. `tenantHint`: the tenant the request addresses (a token of another
   * tenant is refused as wrong_tenant). `clientCertDer`: the TLS client certificate of the
   * connection, needed for certificate-bound tokens.
   */
  async authenticate(token: string, tenantHint?: string, clientCertDer?: Uint8Array): Promise<AuthResult> {
    if (typeof token !== 'string' || token.length === 0) return fail('bad_token', 'the bearer token is empty');
    if (token.length > MAX_TOKEN_CHARS) return fail('bad_token', `the bearer token is longer than ${MAX_TOKEN_CHARS} characters`);
    const cacheKey = `${tenantHint ?? ''} ${token}`;
    const hit = this.verified.get(cacheKey);
    if (hit) {
      if (Date.now() < hit.goodUntil) return checkBinding(hit.payload, clientCertDer) ?? { ok: true, identity: { ...hit.identity } };
      this.verified.delete(cacheKey);
    }
    const { result, payload } = await this.verify(token, tenantHint, clientCertDer);
    if (result.ok && payload) this.remember(cacheKey, result.identity, payload);
    return result;
  }

  private remember(cacheKey: string, identity: Identity, payload: JWTPayload): void {
    if (this.verifiedCacheSize <= 0 || typeof payload.exp !== 'number') return;
    if (this.verified.size >= this.verifiedCacheSize) {
      const oldest = this.verified.keys().next();
      if (!oldest.done) this.verified.delete(oldest.value);
    }
    this.verified.set(cacheKey, { identity, goodUntil: payload.exp * 1000 + this.clockSkewMs, payload: { cnf: payload['cnf'] } });
  }

  private async verify(token: string, tenantHint: string | undefined, clientCertDer: Uint8Array | undefined): Promise<Verification> {
    if (!canonicalCompact(token)) return { result: fail('bad_token', 'the bearer token is not a well-formed signed JWT (three canonical base64url segments)') };
    let claims: JWTPayload;
    let header: Record<string, unknown>;
    try {
      header = decodeProtectedHeader(token) as Record<string, unknown>;
      claims = decodeJwt(token);
    } catch {
      return { result: fail('bad_token', 'the bearer token is not a well-formed signed JWT') };
    }
    if (typeof header['alg'] !== 'string' || FORBIDDEN_ALGS.test(header['alg'])) {
      return { result: fail('bad_token', `the token algorithm ${quoteable(header['alg'])} is never accepted`) };
    }
    const iss = claims.iss;
    if (typeof iss !== 'string' || iss.length === 0) return { result: fail('bad_token', 'the token has no "iss" claim') };

    let candidates: IssuerEntry[] = [];
    const builtIn = await this.builtIn?.resolve(iss);
    if (builtIn) {
      candidates = [
        {
          tenant: builtIn.tenant,
          issuer: builtIn.issuer,
          audiences: builtIn.audiences,
          algorithms: ['ES256'],
          agentClaim: 'sub',
          getKey: builtIn.getKey,
          ...(builtIn.typ ? { typ: builtIn.typ } : {}),
          builtIn: true,
        },
      ];
    } else {
      candidates = this.issuers.get(iss) ?? [];
    }
    if (candidates.length === 0) return { result: fail('bad_token', 'the token issuer is not trusted by any tenant') };
    if (tenantHint !== undefined) {
      const forTenant = candidates.filter((entry) => entry.tenant === tenantHint);
      if (forTenant.length === 0) return { result: fail('wrong_tenant', `the token issuer is not trusted by tenant "${tenantHint}"`) };
      candidates = forTenant;
    }

    let firstFailure: Verification | undefined;
    const successes: Verification[] = [];
    for (const entry of candidates) {
      const verification = await this.verifyWith(entry, token, header, claims, clientCertDer);
      if (verification.result.ok) successes.push(verification);
      else firstFailure ??= verification;
    }
    if (successes.length === 1) return successes[0]!;
    if (successes.length > 1) {
      return { result: fail('bad_token', 'the token is valid for several tenants that trust this issuer: address one tenant') };
    }
    return firstFailure ?? { result: fail('bad_token', 'the token could not be verified') };
  }

  private async verifyWith(
    entry: IssuerEntry,
    token: string,
    header: Record<string, unknown>,
    unverified: JWTPayload,
    clientCertDer: Uint8Array | undefined,
  ): Promise<Verification> {
    let payload: JWTPayload;
    try {
      const verified = await jwtVerify(token, entry.getKey, {
        issuer: entry.issuer,
        audience: entry.audiences,
        algorithms: entry.algorithms,
        clockTolerance: Math.floor(this.clockSkewMs / 1000),
        requiredClaims: ['exp'],
        ...(entry.typ ? { typ: entry.typ } : {}),
      });
      payload = verified.payload;
    } catch (error) {
      return { result: describeJoseError(error, unverified, header) };
    }
    const agent = agentFromClaim(payload[entry.agentClaim], entry.tenant, this.trustDomain, entry.agentClaim);
    if (!('agent' in agent)) return { result: agent };
    if (entry.builtIn && (payload['tenant'] !== entry.tenant || payload['agent'] !== agent.agent)) {
      return { result: fail('bad_token', 'the token\'s "tenant"/"agent" claims do not match its subject') };
    }
    const binding = checkBinding(payload, clientCertDer);
    if (binding) return { result: binding };
    const identity: Identity = {
      tenant: entry.tenant,
      agent: agent.agent,
      spiffeId: spiffeIdFor(this.trustDomain, entry.tenant, agent.agent),
      via: 'jwt',
      tokenIssuer: entry.issuer,
    };
    return { result: { ok: true, identity }, payload };
  }
}
