// @peculiar/x509 (used for the test's client certificates) needs the Reflect metadata API.
import 'reflect-metadata';
import assert from 'node:assert/strict';
import { randomBytes, webcrypto } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import * as x509 from '@peculiar/x509';
import fc from 'fast-check';
import {
  SignJWT,
  UnsecuredJWT,
  base64url,
  decodeJwt,
  decodeProtectedHeader,
  exportJWK,
  exportSPKI,
  generateKeyPair,
  type CryptoKey,
  type JWK,
  type JWTPayload,
} from 'jose';
import type { JwtIssuerConfig, TenantConfig } from '../src/config/schema.js';
import { Keyring } from '../src/identity/keyring.js';
import {
  CLIENT_SECRET_PREFIX,
  JwtAuthenticator,
  certificateThumbprint,
  createTokenService,
  type OAuthRequest,
  type TokenService,
} from '../src/identity/oauth.js';
import type { Identity } from '../src/identity/spiffe.js';
import type { AuthResult } from '../src/identity/types.js';
import { openStore, type DurableStore } from '../src/store/index.js';

const TRUST_DOMAIN = 'dmsc.test';
const ISSUER = 'https://idp.example.test';
const AUDIENCE = 'dmsc-gateway';
const COOLDOWN_MS = 1000;

interface TestKey {
  kid: string;
  alg: 'RS256' | 'ES256';
  privateKey: CryptoKey;
  publicKey: CryptoKey;
  jwk: JWK;
}

async function makeKey(alg: 'RS256' | 'ES256', kid: string): Promise<TestKey> {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
  const jwk = { ...(await exportJWK(publicKey)), kid, alg, use: 'sig' };
  return { kid, alg, privateKey, publicKey, jwk };
}

function sign(key: TestKey, claims: JWTPayload = {}, header: Record<string, unknown> = {}): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ sub: 'billing', ...claims })
    .setProtectedHeader({ alg: key.alg, kid: key.kid, typ: 'JWT', ...header })
    .setIssuer((claims.iss as string | undefined) ?? ISSUER)
    .setAudience((claims.aud as string | undefined) ?? AUDIENCE)
    .setIssuedAt((claims.iat as number | undefined) ?? now)
    .setExpirationTime((claims.exp as number | undefined) ?? now + 300)
    .sign(key.privateKey);
}

/** Two self-signed certificates standing in for client certificates A and B (their DER is all that matters here). */
async function makeCertDer(name: string): Promise<Uint8Array> {
  const alg = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };
  const keys = await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify']);
  const cert = await x509.X509CertificateGenerator.createSelfSigned(
    { serialNumber: '01', name: `CN=${name}`, notBefore: new Date(Date.now() - 60_000), notAfter: new Date(Date.now() + 3600_000), keys, signingAlgorithm: alg },
    webcrypto as unknown as Parameters<typeof x509.X509CertificateGenerator.createSelfSigned>[1],
  );
  return new Uint8Array(cert.rawData);
}

function assertRefused(result: AuthResult, reason: string, detailPattern?: RegExp): void {
  assert.equal(result.ok, false, `expected a refusal (${reason}), got ${JSON.stringify(result)}`);
  if (result.ok) return;
  assert.equal(result.reason, reason, result.detail);
  if (detailPattern) assert.match(result.detail, detailPattern);
}

// ---- external issuer: a real JWKS over HTTP ----------------------------------------------------

describe('JwtAuthenticator with a remote JWKS', () => {
  let server: http.Server;
  let jwksUrl: string;
  let fetches = 0;
  let published: JWK[] = [];
  let rsa: TestKey;
  let ec: TestKey;
  let auth: JwtAuthenticator;
  let tenants: TenantConfig[];

  const issuerConfig = (overrides: Partial<JwtIssuerConfig> = {}): JwtIssuerConfig => ({
    issuer: ISSUER,
    jwksUri: jwksUrl,
    audiences: [AUDIENCE],
    algorithms: ['RS256', 'ES256'],
    agentClaim: 'sub',
    ...overrides,
  });

  before(async () => {
    rsa = await makeKey('RS256', 'rsa-1');
    ec = await makeKey('ES256', 'ec-1');
    published = [rsa.jwk, ec.jwk];
    server = http.createServer((req, res) => {
      fetches += 1;
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ keys: published }));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    jwksUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}/jwks.json`;
    tenants = [
      { name: 'acme', agents: [], oauth: { issuers: [issuerConfig()] } },
      { name: 'globex', agents: [], oauth: { issuers: [] } },
    ];
    auth = new JwtAuthenticator({ trustDomain: TRUST_DOMAIN, clockSkewMs: 30_000, tenants, jwks: { cooldownMs: COOLDOWN_MS, timeoutMs: 2000 } });
  });

  after(() => new Promise<void>((resolve) => server.close(() => resolve())));

  test('valid RS256 and ES256 tokens are accepted as the agent of the issuer\'s tenant', async () => {
    for (const key of [rsa, ec]) {
      const result = await auth.authenticate(await sign(key));
      assert.ok(result.ok, JSON.stringify(result));
      assert.deepEqual(result.identity, {
        tenant: 'acme',
        agent: 'billing',
        spiffeId: `spiffe://${TRUST_DOMAIN}/tenant/acme/agent/billing`,
        via: 'jwt',
        tokenIssuer: ISSUER,
      });
    }
    const bySpiffe = await auth.authenticate(await sign(ec, { sub: `spiffe://${TRUST_DOMAIN}/tenant/acme/agent/ledger` }), 'acme');
    assert.ok(bySpiffe.ok && bySpiffe.identity.agent === 'ledger');
  });

  test('another tenant: SPIFFE ID of another tenant, or a request addressed to another tenant', async () => {
    assertRefused(await auth.authenticate(await sign(ec, { sub: `spiffe://${TRUST_DOMAIN}/tenant/globex/agent/x` })), 'wrong_tenant');
    assertRefused(await auth.authenticate(await sign(ec), 'globex'), 'wrong_tenant');
    assertRefused(await auth.authenticate(await sign(ec, { sub: 'spiffe://other.domain/tenant/acme/agent/x' })), 'bad_token', /trust domain/);
    assertRefused(await auth.authenticate(await sign(ec, { sub: 'Not A Name' })), 'bad_token', /agent name/);
  });

  test('expired and not-yet-valid tokens (beyond the clock skew) are refused; within it they pass', async () => {
    const now = Math.floor(Date.now() / 1000);
    assertRefused(await auth.authenticate(await sign(ec, { iat: now - 600, exp: now - 60 })), 'expired', /expired at/);
    assertRefused(await auth.authenticate(await sign(ec, { nbf: now + 120 })), 'not_yet_valid');
    assert.ok((await auth.authenticate(await sign(ec, { iat: now - 600, exp: now - 10 }))).ok, 'expired 10 s ago is within a 30 s skew');
    assert.ok((await auth.authenticate(await sign(ec, { nbf: now + 10 }))).ok, 'valid in 10 s is within a 30 s skew');
    const noExp = await new SignJWT({ sub: 'billing' }).setProtectedHeader({ alg: 'ES256', kid: ec.kid }).setIssuer(ISSUER).setAudience(AUDIENCE).sign(ec.privateKey);
    assertRefused(await auth.authenticate(noExp), 'bad_token', /"exp"/);
  });

  test('wrong audience and wrong issuer are refused', async () => {
    assertRefused(await auth.authenticate(await sign(ec, { aud: 'someone-else' })), 'bad_token', /audience/);
    assertRefused(await auth.authenticate(await sign(ec, { iss: 'https://evil.example.test' })), 'bad_token', /issuer/);
    const noIss = await new SignJWT({ sub: 'billing' }).setProtectedHeader({ alg: 'ES256', kid: ec.kid }).setAudience(AUDIENCE).setExpirationTime('5m').sign(ec.privateKey);
    assertRefused(await auth.authenticate(noIss), 'bad_token', /"iss"/);
  });

  test('alg none is refused', async () => {
    const unsecured = new UnsecuredJWT({ sub: 'billing' }).setIssuer(ISSUER).setAudience(AUDIENCE).setExpirationTime('5m').encode();
    assertRefused(await auth.authenticate(unsecured), 'bad_token', /"none" is never accepted/);
    // Same with a (bogus) signature segment present.
    assertRefused(await auth.authenticate(unsecured + 'AAAA'), 'bad_token');
  });

  test('HS256 keyed with the RSA public key (PEM and JWK bytes) is refused, even if config listed HS256', async () => {
    const pem = await exportSPKI(rsa.publicKey);
    const tokens = [];
    for (const secret of [new TextEncoder().encode(pem), new TextEncoder().encode(JSON.stringify(rsa.jwk))]) {
      tokens.push(
        await new SignJWT({ sub: 'billing' })
          .setProtectedHeader({ alg: 'HS256', kid: rsa.kid })
          .setIssuer(ISSUER)
          .setAudience(AUDIENCE)
          .setExpirationTime('5m')
          .sign(secret),
      );
    }
    for (const token of tokens) assertRefused(await auth.authenticate(token), 'bad_token', /"HS256" is never accepted/);
    // An allow-list that somehow contains HS256 (it cannot pass the config schema) changes nothing.
    const careless = new JwtAuthenticator({
      trustDomain: TRUST_DOMAIN,
      clockSkewMs: 0,
      tenants: [{ name: 'acme', oauth: { issuers: [issuerConfig({ algorithms: ['HS256', 'RS256'] as unknown as JwtIssuerConfig['algorithms'] })] } }],
    });
    for (const token of tokens) assertRefused(await careless.authenticate(token), 'bad_token');
  });

  test('tampered payload and tampered signature are refused', async () => {
    const token = await sign(rsa);
    const [h, p, s] = token.split('.') as [string, string, string];
    const forged = base64url.encode(JSON.stringify({ ...decodeJwt(token), sub: 'admin' }));
    assertRefused(await auth.authenticate(`${h}.${forged}.${s}`), 'bad_token', /signature/);
    const sig = base64url.decode(s);
    sig[10] = sig[10]! ^ 0x01;
    assertRefused(await auth.authenticate(`${h}.${p}.${base64url.encode(sig)}`), 'bad_token', /signature/);
    // Base64url malleability: the last signature character carries stray bits that lenient decoders
    // ignore (jose alone accepts 15 respellings of an ES256 signature); every respelling is refused.
    const ecToken = await sign(ec);
    const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
    for (const c of alphabet) {
      const variant = ecToken.slice(0, -1) + c;
      if (variant !== ecToken) assertRefused(await auth.authenticate(variant), 'bad_token');
    }
    // A signature from another key with the same kid.
    const impostor = await makeKey('RS256', rsa.kid);
    assertRefused(await auth.authenticate(await sign(impostor)), 'bad_token', /signature/);
  });

  test('unknown kid: refused; JWKS re-fetched at most once per cooldown; a rotated-in key is accepted after refresh', async () => {
    const rotated = await makeKey('ES256', 'ec-2');
    const randomKeys = await Promise.all(Array.from({ length: 25 }, (_, i) => makeKey('ES256', `random-${i}`)));
    const randomTokens = await Promise.all(randomKeys.map((key) => sign(key)));
    const rotatedToken = await sign(rotated);
    assert.ok((await auth.authenticate(await sign(ec))).ok);
    await new Promise((resolve) => setTimeout(resolve, COOLDOWN_MS + 50));
    const before = fetches;
    assertRefused(await auth.authenticate(rotatedToken), 'bad_token', /"ec-2"/);
    assert.equal(fetches, before + 1, 'an unknown kid after the cooldown re-fetches the JWKS once');
    // Many unknown kids within the cooldown: no more fetches.
    for (const token of randomTokens) assertRefused(await auth.authenticate(token), 'bad_token');
    assert.equal(fetches, before + 1, 'unknown kids within the cooldown do not hit the JWKS');
    // The issuer rotates: the new key appears in its JWKS.
    published = [rsa.jwk, ec.jwk, rotated.jwk];
    assertRefused(await auth.authenticate(rotatedToken), 'bad_token');
    assert.equal(fetches, before + 1, 'still cooling down');
    await new Promise((resolve) => setTimeout(resolve, COOLDOWN_MS + 50));
    const result = await auth.authenticate(await sign(rotated));
    assert.ok(result.ok, JSON.stringify(result));
    assert.equal(fetches, before + 2);
    // Known keys verify from the cache with no fetch.
    for (let i = 0; i < 10; i++) assert.ok((await auth.authenticate(await sign(rsa))).ok);
    assert.equal(fetches, before + 2);
  });

  test('an unreachable JWKS is refused quickly and not retried within the cooldown', async () => {
    const dead = new JwtAuthenticator({
      trustDomain: TRUST_DOMAIN,
      clockSkewMs: 0,
      tenants: [{ name: 'acme', oauth: { issuers: [issuerConfig({ jwksUri: 'http://127.0.0.1:9/jwks.json' })] } }],
      jwks: { cooldownMs: 60_000, timeoutMs: 1000 },
    });
    assertRefused(await dead.authenticate(await sign(ec)), 'bad_token', /key set/);
    const started = performance.now();
    assertRefused(await dead.authenticate(await sign(ec)), 'bad_token', /cooldown/);
    assert.ok(performance.now() - started < 500, 'no network wait');
  });

  test('update() replaces issuers and keeps the JWKS cache of unchanged ones', async () => {
    assert.ok((await auth.authenticate(await sign(ec))).ok);
    const before = fetches;
    auth.update([
      { name: 'acme', oauth: { issuers: [issuerConfig({ audiences: ['new-audience'] })] } },
      { name: 'globex', oauth: { issuers: [] } },
    ]);
    assertRefused(await auth.authenticate(await sign(ec)), 'bad_token', /audience/);
    assert.ok((await auth.authenticate(await sign(ec, { aud: 'new-audience' }))).ok);
    assert.equal(fetches, before, 'no re-fetch after a reload that kept the jwksUri');
    auth.update([{ name: 'globex', oauth: { issuers: [] } }]);
    assertRefused(await auth.authenticate(await sign(ec, { aud: 'new-audience' })), 'bad_token', /not trusted/);
    auth.update(tenants);
  });

  test('verified-token cache: a repeated token is served from it until it expires, then refused as expired', async () => {
    const strict = new JwtAuthenticator({ trustDomain: TRUST_DOMAIN, clockSkewMs: 0, tenants, jwks: { cooldownMs: COOLDOWN_MS } });
    const now = Math.floor(Date.now() / 1000);
    const token = await sign(ec, { iat: now, exp: now + 2 });
    assert.ok((await strict.authenticate(token)).ok);
    const before = fetches;
    assert.ok((await strict.authenticate(token)).ok);
    assert.ok((await strict.authenticate(token, 'acme')).ok);
    assertRefused(await strict.authenticate(token, 'globex'), 'wrong_tenant', /not trusted by tenant "globex"/);
    assert.equal(fetches, before);
    await new Promise((resolve) => setTimeout(resolve, (now + 2) * 1000 - Date.now() + 50));
    assertRefused(await strict.authenticate(token), 'expired');
    assertRefused(await strict.authenticate(token, 'acme'), 'expired');
  });

  test('an issuer trusted by two tenants: the audience picks the tenant; both matching needs a hint', async () => {
    const shared = new JwtAuthenticator({
      trustDomain: TRUST_DOMAIN,
      clockSkewMs: 0,
      tenants: [
        { name: 'acme', oauth: { issuers: [issuerConfig({ audiences: ['aud-acme', 'aud-both'] })] } },
        { name: 'globex', oauth: { issuers: [issuerConfig({ audiences: ['aud-globex', 'aud-both'] })] } },
      ],
    });
    const acme = await shared.authenticate(await sign(ec, { aud: 'aud-acme' }));
    assert.ok(acme.ok && acme.identity.tenant === 'acme');
    const globex = await shared.authenticate(await sign(ec, { aud: 'aud-globex' }));
    assert.ok(globex.ok && globex.identity.tenant === 'globex');
    const both = await sign(ec, { aud: 'aud-both' });
    assertRefused(await shared.authenticate(both), 'bad_token', /several tenants/);
    const hinted = await shared.authenticate(both, 'globex');
    assert.ok(hinted.ok && hinted.identity.tenant === 'globex');
  });

  test('certificate-bound external token: right certificate only', async () => {
    const [certA, certB] = [await makeCertDer('a'), await makeCertDer('b')];
    const token = await sign(ec, { cnf: { 'x5t#S256': certificateThumbprint(certA) } });
    assert.ok((await auth.authenticate(token, 'acme', certA)).ok);
    assertRefused(await auth.authenticate(token, 'acme', certB), 'bad_token', /another client certificate/);
    assertRefused(await auth.authenticate(token, 'acme'), 'bad_token', /presented none/);
    assertRefused(await auth.authenticate(await sign(ec, { cnf: { jkt: 'abc' } }), 'acme', certA), 'bad_token', /confirmation method/);
  });

  test('details never echo the token', async () => {
    const token = await sign(ec, { aud: 'x' });
    const result = await auth.authenticate(token);
    assert.ok(!result.ok && !result.detail.includes(token.split('.')[1]!));
    assertRefused(await auth.authenticate('garbage'), 'bad_token', /well-formed/);
    assertRefused(await auth.authenticate('a'.repeat(20_000)), 'bad_token', /longer/);
  });

  test('property: every mutation of a valid token is refused; the original is accepted', async () => {
    const original = await sign(rsa, { sub: `spiffe://${TRUST_DOMAIN}/tenant/acme/agent/billing`, scope: 'read write' });
    assert.ok((await auth.authenticate(original)).ok);
    const segments = original.split('.') as [string, string, string];
    const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
    const flip = fc
      .record({ segment: fc.integer({ min: 0, max: 2 }), at: fc.nat(), char: fc.constantFrom(...alphabet.split('')) })
      .map(({ segment, at, char }) => {
        const parts = [...segments];
        const text = parts[segment]!;
        const i = at % text.length;
        parts[segment] = text.slice(0, i) + char + text.slice(i + 1);
        return parts.join('.');
      });
    const byteFlip = fc
      .record({ segment: fc.integer({ min: 0, max: 2 }), at: fc.nat(), mask: fc.integer({ min: 1, max: 255 }) })
      .map(({ segment, at, mask }) => {
        const parts = [...segments];
        const bytes = base64url.decode(parts[segment]!);
        const i = at % bytes.length;
        bytes[i] = bytes[i]! ^ mask;
        parts[segment] = base64url.encode(bytes);
        return parts.join('.');
      });
    const swap = fc
      .tuple(fc.integer({ min: 0, max: 2 }), fc.integer({ min: 0, max: 2 }))
      .filter(([a, b]) => a !== b)
      .map(([a, b]) => {
        const parts = [...segments];
        [parts[a], parts[b]] = [parts[b]!, parts[a]!];
        return parts.join('.');
      });
    const truncate = fc.integer({ min: 1, max: original.length - 1 }).map((n) => original.slice(0, original.length - n));
    const anyChar = fc
      .record({ at: fc.nat(), char: fc.string({ minLength: 1, maxLength: 1, unit: 'binary' }) })
      .map(({ at, char }) => {
        const i = at % original.length;
        return original.slice(0, i) + char + original.slice(i + 1);
      });
    const lastChar = fc.constantFrom(...alphabet.split('')).map((char) => original.slice(0, -1) + char);
    const mutated = fc.oneof(flip, byteFlip, swap, truncate, anyChar, lastChar).filter((token) => token !== original);
    await fc.assert(
      fc.asyncProperty(mutated, async (token) => {
        const result = await auth.authenticate(token);
        assert.equal(result.ok, false, `mutation accepted: ${token}`);
      }),
      { numRuns: 400 },
    );
    assert.ok((await auth.authenticate(original)).ok);
  });
});

// ---- the built-in authorization server -----------------------------------------------------------

describe('built-in token endpoint', () => {
  let dir: string;
  let store: DurableStore;
  let service: TokenService;
  let auth: JwtAuthenticator;
  let certA: Uint8Array;
  let certB: Uint8Array;
  const keyring = Keyring.fromKey(randomBytes(32));
  const issuerOf = (tenant: string) => `https://gw.dmsc.test:8443/tenants/${tenant}`;
  const config = {
    identity: { accessTokenTtlMs: 300_000, clockSkewMs: 30_000 },
    tenants: [
      { name: 'acme', agents: [], oauth: { issuers: [] } },
      { name: 'globex', agents: [], oauth: { issuers: [] } },
    ],
  } as unknown as Parameters<typeof createTokenService>[0]['config'];

  const identityOf = (tenant: string, agent: string, certDer: Uint8Array): Identity => ({
    tenant,
    agent,
    spiffeId: `spiffe://${TRUST_DOMAIN}/tenant/${tenant}/agent/${agent}`,
    via: 'mtls',
    certSerial: Buffer.from(certDer.subarray(0, 4)).toString('hex'),
  });

  const post = (tenant: string, form: Record<string, string>, extra: Partial<OAuthRequest> = {}) =>
    service.handle({
      method: 'POST',
      path: `/tenants/${tenant}/oauth/token`,
      headers: { 'content-type': 'application/x-www-form-urlencoded', ...(extra.headers ?? {}) },
      body: Buffer.from(new URLSearchParams(form).toString()),
      ...Object.fromEntries(Object.entries(extra).filter(([k]) => k !== 'headers')),
    });
  const basic = (id: string, secret: string) => ({ authorization: `Basic ${Buffer.from(`${encodeURIComponent(id)}:${encodeURIComponent(secret)}`).toString('base64')}` });

  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'dmsc-oauth-'));
    store = await openStore(dir);
    service = createTokenService({ store, keyring, trustDomain: TRUST_DOMAIN, issuerBaseUrl: issuerOf, config });
    auth = new JwtAuthenticator({ trustDomain: TRUST_DOMAIN, clockSkewMs: 30_000, tenants: config.tenants, builtIn: service.builtInIssuers });
    [certA, certB] = [await makeCertDer('agent-a'), await makeCertDer('agent-b')];
  });

  after(async () => {
    await store.close();
    await rm(dir, { recursive: true, force: true });
  });

  test('client_secret_basic and client_secret_post: a token that authenticates through the JwtAuthenticator', async () => {
    const secret = await service.createClientSecret('acme', 'billing');
    assert.ok(secret.startsWith(CLIENT_SECRET_PREFIX) && secret.length >= 40);
    const stored = await store.getClientSecret('acme', 'billing');
    assert.ok(stored && !stored.secretHash.includes(secret.slice(CLIENT_SECRET_PREFIX.length)), 'only a hash is stored');

    const res = await post('acme', { grant_type: 'client_credentials' }, { headers: basic('billing', secret) });
    assert.ok(res);
    assert.equal(res.status, 200, res.body);
    assert.equal(res.headers['cache-control'], 'no-store');
    const body = JSON.parse(res.body) as { access_token: string; token_type: string; expires_in: number };
    assert.equal(body.token_type, 'Bearer');
    assert.equal(body.expires_in, 300);
    const header = decodeProtectedHeader(body.access_token);
    assert.equal(header.alg, 'ES256');
    assert.equal(header.typ, 'at+jwt');
    const claims = decodeJwt(body.access_token);
    assert.equal(claims.iss, issuerOf('acme'));
    assert.equal(claims.sub, `spiffe://${TRUST_DOMAIN}/tenant/acme/agent/billing`);
    assert.equal(claims.aud, issuerOf('acme'));
    assert.equal(claims['tenant'], 'acme');
    assert.equal(claims['agent'], 'billing');
    assert.equal(claims.exp! - claims.iat!, 300);
    assert.ok(typeof claims.jti === 'string' && claims.nbf === claims.iat);

    const result = await auth.authenticate(body.access_token, 'acme');
    assert.ok(result.ok, JSON.stringify(result));
    assert.deepEqual(result.identity, {
      tenant: 'acme',
      agent: 'billing',
      spiffeId: `spiffe://${TRUST_DOMAIN}/tenant/acme/agent/billing`,
      via: 'jwt',
      tokenIssuer: issuerOf('acme'),
    });
    assertRefused(await auth.authenticate(body.access_token, 'globex'), 'wrong_tenant');

    const viaPost = await post('acme', { grant_type: 'client_credentials', client_id: 'billing', client_secret: secret, scope: 'read write' });
    assert.equal(viaPost?.status, 200, viaPost?.body);
    assert.equal(JSON.parse(viaPost!.body).scope, 'read write');
  });

  test('wrong secret, unknown client, no credentials: 401 invalid_client (Basic challenge for Basic)', async () => {
    const secret = await service.createClientSecret('acme', 'ledger');
    const wrong = await post('acme', { grant_type: 'client_credentials' }, { headers: basic('ledger', secret + 'x') });
    assert.equal(wrong?.status, 401);
    assert.equal(JSON.parse(wrong!.body).error, 'invalid_client');
    assert.match(wrong!.headers['www-authenticate'] ?? '', /^Basic realm=/);
    const unknown = await post('acme', { grant_type: 'client_credentials' }, { headers: basic('nobody', secret) });
    assert.equal(unknown?.status, 401);
    assert.equal(JSON.parse(unknown!.body).error_description, JSON.parse(wrong!.body).error_description, 'no client-existence oracle');
    const otherTenant = await post('globex', { grant_type: 'client_credentials' }, { headers: basic('ledger', secret) });
    assert.equal(otherTenant?.status, 401, 'a secret is only good in its tenant');
    const none = await post('acme', { grant_type: 'client_credentials', client_id: 'ledger' });
    assert.equal(none?.status, 401);
    const postWrong = await post('acme', { grant_type: 'client_credentials', client_id: 'ledger', client_secret: 'nope' });
    assert.equal(postWrong?.status, 401);
    assert.equal(postWrong?.headers['www-authenticate'], undefined);
    await service.deleteClientSecret('acme', 'ledger');
    const deleted = await post('acme', { grant_type: 'client_credentials' }, { headers: basic('ledger', secret) });
    assert.equal(deleted?.status, 401);
  });

  test('grant and request errors (RFC 6749 §5.2)', async () => {
    const secret = await service.createClientSecret('acme', 'errs');
    const auth = { headers: basic('errs', secret) };
    const cases: Array<[Record<string, string>, Partial<OAuthRequest>, number, string]> = [
      [{ grant_type: 'password', username: 'a', password: 'b' }, auth, 400, 'unsupported_grant_type'],
      [{ grant_type: 'authorization_code', code: 'x' }, auth, 400, 'unsupported_grant_type'],
      [{}, auth, 400, 'invalid_request'],
      [{ grant_type: 'client_credentials', scope: 'bad"scope' }, auth, 400, 'invalid_scope'],
      [{ grant_type: 'client_credentials', audience: 'https://elsewhere.example' }, auth, 400, 'invalid_target'],
      [{ grant_type: 'client_credentials', client_secret: secret, client_id: 'errs' }, auth, 400, 'invalid_request'],
    ];
    for (const [form, extra, status, error] of cases) {
      const res = await post('acme', form, extra);
      assert.equal(res?.status, status, `${JSON.stringify(form)}: ${res?.body}`);
      assert.equal(JSON.parse(res!.body).error, error);
      assert.equal(res!.headers['cache-control'], 'no-store');
    }
    const json = await service.handle({ method: 'POST', path: '/tenants/acme/oauth/token', headers: { 'content-type': 'application/json', ...basic('errs', secret) }, body: Buffer.from('{}') });
    assert.equal(json?.status, 400);
    const get = await service.handle({ method: 'GET', path: '/tenants/acme/oauth/token', headers: {}, body: Buffer.alloc(0) });
    assert.equal(get?.status, 405);
    const dup = await service.handle({
      method: 'POST',
      path: '/tenants/acme/oauth/token',
      headers: { 'content-type': 'application/x-www-form-urlencoded', ...basic('errs', secret) },
      body: Buffer.from('grant_type=client_credentials&grant_type=client_credentials'),
    });
    assert.equal(JSON.parse(dup!.body).error, 'invalid_request');
    const noTenant = await post('initech', { grant_type: 'client_credentials' }, auth);
    assert.equal(noTenant?.status, 404);
  });

  test('tls_client_auth: certificate-bound token, refused with another certificate or none', async () => {
    const res = await post('acme', { grant_type: 'client_credentials', client_id: 'billing' }, { clientIdentity: identityOf('acme', 'billing', certA), clientCertDer: certA });
    assert.equal(res?.status, 200, res?.body);
    const token = JSON.parse(res!.body).access_token as string;
    assert.deepEqual(decodeJwt(token)['cnf'], { 'x5t#S256': certificateThumbprint(certA) });
    const ok = await auth.authenticate(token, 'acme', certA);
    assert.ok(ok.ok, JSON.stringify(ok));
    assertRefused(await auth.authenticate(token, 'acme', certB), 'bad_token', /another client certificate/);
    assertRefused(await auth.authenticate(token, 'acme'), 'bad_token', /presented none/);

    const mismatch = await post('acme', { grant_type: 'client_credentials', client_id: 'ledger' }, { clientIdentity: identityOf('acme', 'billing', certA), clientCertDer: certA });
    assert.equal(mismatch?.status, 401);
    const bySpiffe = await post('acme', { grant_type: 'client_credentials', client_id: `spiffe://${TRUST_DOMAIN}/tenant/acme/agent/billing` }, { clientIdentity: identityOf('acme', 'billing', certA), clientCertDer: certA });
    assert.equal(bySpiffe?.status, 200);
    const otherTenant = await post('globex', { grant_type: 'client_credentials' }, { clientIdentity: identityOf('acme', 'billing', certA), clientCertDer: certA });
    assert.equal(otherTenant?.status, 401);
    assert.match(JSON.parse(otherTenant!.body).error_description, /tenant "acme"/);
    const jwtIdentity = await post('acme', { grant_type: 'client_credentials' }, { clientIdentity: { ...identityOf('acme', 'billing', certA), via: 'jwt' }, clientCertDer: certA });
    assert.equal(jwtIdentity?.status, 401, 'a bearer token is not a client credential');
  });

  test('audiences: the issuer by default, an agent of the tenant on request; the gateway accepts only its own', async () => {
    const res = await post('acme', { grant_type: 'client_credentials', audience: `spiffe://${TRUST_DOMAIN}/tenant/acme/agent/ledger` }, { clientIdentity: identityOf('acme', 'billing', certA), clientCertDer: certA });
    assert.equal(res?.status, 200, res?.body);
    const token = JSON.parse(res!.body).access_token as string;
    assert.equal(decodeJwt(token).aud, `spiffe://${TRUST_DOMAIN}/tenant/acme/agent/ledger`);
    assertRefused(await auth.authenticate(token, 'acme', certA), 'bad_token', /audience/);
    const foreign = await post('acme', { grant_type: 'client_credentials', resource: `spiffe://${TRUST_DOMAIN}/tenant/globex/agent/x` }, { clientIdentity: identityOf('acme', 'billing', certA), clientCertDer: certA });
    assert.equal(JSON.parse(foreign!.body).error, 'invalid_target');
  });

  test('metadata (RFC 8414) at both paths and the JWKS', async () => {
    for (const p of ['/.well-known/oauth-authorization-server/tenants/acme', '/tenants/acme/.well-known/oauth-authorization-server']) {
      const res = await service.handle({ method: 'GET', path: p, headers: {}, body: Buffer.alloc(0) });
      assert.equal(res?.status, 200);
      const meta = JSON.parse(res!.body);
      assert.equal(meta.issuer, issuerOf('acme'));
      assert.equal(meta.token_endpoint, `${issuerOf('acme')}/oauth/token`);
      assert.equal(meta.jwks_uri, `${issuerOf('acme')}/oauth/jwks.json`);
      assert.deepEqual(meta.grant_types_supported, ['client_credentials']);
      assert.ok(meta.token_endpoint_auth_methods_supported.includes('tls_client_auth'));
      assert.ok(meta.token_endpoint_auth_methods_supported.includes('client_secret_basic'));
      assert.equal(meta.tls_client_certificate_bound_access_tokens, true);
    }
    const res = await service.handle({ method: 'GET', path: '/tenants/acme/oauth/jwks.json', headers: {}, body: Buffer.alloc(0) });
    assert.equal(res?.status, 200);
    const jwks = JSON.parse(res!.body) as { keys: JWK[] };
    assert.ok(jwks.keys.length >= 1);
    for (const key of jwks.keys) {
      assert.equal(key.kty, 'EC');
      assert.equal(key.crv, 'P-256');
      assert.equal(key.alg, 'ES256');
      assert.equal(key.use, 'sig');
      assert.ok(key.kid && key.x && key.y);
      assert.equal(key.d, undefined, 'no private part');
    }
    assert.equal(await service.handle({ method: 'GET', path: '/tenants/acme/agents', headers: {}, body: Buffer.alloc(0) }), undefined);
    assert.equal(await service.handle({ method: 'GET', path: '/healthz', headers: {}, body: Buffer.alloc(0) }), undefined);
    assert.equal((await service.handle({ method: 'GET', path: '/tenants/initech/oauth/jwks.json', headers: {}, body: Buffer.alloc(0) }))?.status, 404);
  });

  test('signing keys: sealed at rest, rotated with overlap, reused after a restart', async () => {
    const records = await store.listSigningKeys('acme');
    assert.ok(records.length >= 1);
    for (const record of records) assert.ok(!record.sealedPrivateKey.includes('PRIVATE KEY'));
    const secret = await service.createClientSecret('acme', 'rotor');
    const issue = async (svc: TokenService) => {
      const res = await svc.handle({
        method: 'POST',
        path: '/tenants/acme/oauth/token',
        headers: { 'content-type': 'application/x-www-form-urlencoded', ...basic('rotor', secret) },
        body: Buffer.from('grant_type=client_credentials'),
      });
      return JSON.parse(res!.body).access_token as string;
    };
    const before = await issue(service);
    const oldKid = decodeProtectedHeader(before).kid;
    const newKid = await service.rotateSigningKey('acme');
    assert.notEqual(newKid, oldKid);
    const afterRotation = await issue(service);
    assert.equal(decodeProtectedHeader(afterRotation).kid, newKid);
    const kids = (await service.jwks('acme')).keys.map((key) => key['kid']);
    assert.ok(kids.includes(oldKid) && kids.includes(newKid), 'old key stays published while its tokens live');
    assert.ok((await auth.authenticate(before)).ok, 'token signed before the rotation still verifies');
    assert.ok((await auth.authenticate(afterRotation)).ok);

    // A second service over the same store (a restart or another replica) signs with the same key
    // and verifies tokens of the first.
    const again = createTokenService({ store, keyring, trustDomain: TRUST_DOMAIN, issuerBaseUrl: issuerOf, config });
    const again2 = await issue(again);
    assert.equal(decodeProtectedHeader(again2).kid, newKid);
    const auth2 = new JwtAuthenticator({ trustDomain: TRUST_DOMAIN, clockSkewMs: 0, tenants: [], builtIn: again.builtInIssuers });
    assert.ok((await auth2.authenticate(afterRotation)).ok);
    // A token of a key this gateway never made (same kid, other key) is refused.
    const impostor = await generateKeyPair('ES256');
    const forged = await new SignJWT({ tenant: 'acme', agent: 'rotor', client_id: 'rotor' })
      .setProtectedHeader({ alg: 'ES256', kid: newKid, typ: 'at+jwt' })
      .setIssuer(issuerOf('acme'))
      .setSubject(`spiffe://${TRUST_DOMAIN}/tenant/acme/agent/rotor`)
      .setAudience(issuerOf('acme'))
      .setExpirationTime('5m')
      .sign(impostor.privateKey);
    assertRefused(await auth.authenticate(forged), 'bad_token', /signature/);
  });

  test('every issue and refusal is audited', async () => {
    const events = await store.listAudit({ action: 'token.issue' });
    const allows = events.filter((event) => event.decision === 'allow');
    const denies = events.filter((event) => event.decision === 'deny');
    assert.ok(allows.length >= 5 && denies.length >= 8, `${allows.length} allow, ${denies.length} deny`);
    assert.ok(allows.every((event) => event.tenant && event.actor?.startsWith('spiffe://') && /jti=/.test(event.reason ?? '')));
    assert.ok(denies.some((event) => /^invalid_client/.test(event.reason ?? '')));
    assert.ok(denies.some((event) => /^unsupported_grant_type/.test(event.reason ?? '')));
    assert.ok(allows.some((event) => /certificate-bound/.test(event.reason ?? '')));
    const all = JSON.stringify(await store.listAudit());
    assert.ok(!all.includes(CLIENT_SECRET_PREFIX), 'no secret in the audit trail');
  });
});
