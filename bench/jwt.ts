// The cost of bearer-token validation per request: JwtAuthenticator.authenticate() with a warm JWKS
// cache (keys fetched once from a local node:http JWKS server, then cached), for ES256 and RS256
// (RSA-2048) tokens from an external issuer, an ES256 token of the built-in authorization server
// (local keys, no HTTP), and a certificate-bound token; beside it the floor: jose jwtVerify with the
// imported key, no issuer lookup or JWKS resolution; and the verified-token cache (an agent sending
// the same token again: the usual case, one token for many requests). Single thread, sequential (the latency one
// validation adds to a request), after a warm-up.
// Usage: node --import tsx bench/jwt.ts [--iterations N]
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { SignJWT, exportJWK, generateKeyPair, jwtVerify, type CryptoKey } from 'jose';
import type { GatewayConfig } from '../src/config/schema.js';
import { Keyring } from '../src/identity/keyring.js';
import { JwtAuthenticator, certificateThumbprint, createTokenService } from '../src/identity/oauth.js';
import { openStore } from '../src/store/index.js';

const iterationsArg = process.argv.indexOf('--iterations');
const ITERATIONS = iterationsArg > 0 ? Number(process.argv[iterationsArg + 1]) : 10_000;
const WARMUP = Math.min(2_000, ITERATIONS);
const ISSUER = 'https://idp.bench.test';
const AUDIENCE = 'dmsc-gateway';

const ROUNDS = 3;

/** Best of ROUNDS rounds (the machine may be shared: the least-disturbed round is the cost). */
async function measure(name: string, fn: () => Promise<unknown>): Promise<{ name: string; us: number; perSec: number }> {
  for (let i = 0; i < WARMUP; i++) await fn();
  let us = Infinity;
  for (let round = 0; round < ROUNDS; round++) {
    const started = process.hrtime.bigint();
    for (let i = 0; i < ITERATIONS; i++) await fn();
    us = Math.min(us, Number(process.hrtime.bigint() - started) / 1000 / ITERATIONS);
    await new Promise((resolve) => setImmediate(resolve));
  }
  return { name, us, perSec: 1e6 / us };
}

const keys: Record<string, { privateKey: CryptoKey; publicKey: CryptoKey; kid: string }> = {};
const jwks: unknown[] = [];
for (const alg of ['ES256', 'RS256'] as const) {
  const pair = await generateKeyPair(alg, { extractable: true, ...(alg === 'RS256' ? { modulusLength: 2048 } : {}) });
  keys[alg] = { ...pair, kid: `${alg.toLowerCase()}-1` };
  jwks.push({ ...(await exportJWK(pair.publicKey)), kid: keys[alg]!.kid, alg, use: 'sig' });
}
let fetches = 0;
const server = http.createServer((_req, res) => {
  fetches += 1;
  res.writeHead(200, { 'content-type': 'application/json' });
  res.end(JSON.stringify({ keys: jwks }));
});
await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
const jwksUri = `http://127.0.0.1:${(server.address() as AddressInfo).port}/jwks.json`;

const dir = await mkdtemp(path.join(os.tmpdir(), 'dmsc-bench-jwt-'));
const store = await openStore(dir);
const config = {
  identity: { accessTokenTtlMs: 3600_000, clockSkewMs: 60_000 },
  tenants: [{ name: 'acme', agents: [], oauth: { issuers: [{ issuer: ISSUER, jwksUri, audiences: [AUDIENCE], algorithms: ['ES256', 'RS256'], agentClaim: 'sub' }] } }],
} as unknown as Pick<GatewayConfig, 'identity' | 'tenants'>;
const service = createTokenService({
  store,
  keyring: Keyring.fromKey(randomBytes(32)),
  trustDomain: 'dmsc.bench',
  issuerBaseUrl: (tenant) => `https://gw.bench.test/tenants/${tenant}`,
  config,
});
// Full verification on every call (cache off), and with the verified-token cache (the default).
const auth = new JwtAuthenticator({ trustDomain: 'dmsc.bench', clockSkewMs: 60_000, tenants: config.tenants, builtIn: service.builtInIssuers, verifiedCacheSize: 0 });
const cached = new JwtAuthenticator({ trustDomain: 'dmsc.bench', clockSkewMs: 60_000, tenants: config.tenants, builtIn: service.builtInIssuers });

const sign = (alg: 'ES256' | 'RS256', extra: Record<string, unknown> = {}) =>
  new SignJWT({ sub: 'billing', ...extra })
    .setProtectedHeader({ alg, kid: keys[alg]!.kid })
    .setIssuer(ISSUER)
    .setAudience(AUDIENCE)
    .setIssuedAt()
    .setExpirationTime('1h')
    .sign(keys[alg]!.privateKey);

const secret = await service.createClientSecret('acme', 'billing');
const issued = await service.handle({
  method: 'POST',
  path: '/tenants/acme/oauth/token',
  headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Basic ${Buffer.from(`billing:${secret}`).toString('base64')}` },
  body: Buffer.from('grant_type=client_credentials'),
});
const builtInToken = (JSON.parse(issued!.body) as { access_token: string }).access_token;
const certDer = randomBytes(600);
const tokens = {
  ES256: await sign('ES256'),
  RS256: await sign('RS256'),
  bound: await sign('ES256', { cnf: { 'x5t#S256': certificateThumbprint(certDer) } }),
};

const expectOk = async (promise: Promise<{ ok: boolean }>) => {
  const result = await promise;
  if (!result.ok) throw new Error(`bench token refused: ${JSON.stringify(result)}`);
};

const rows = [
  await measure('jose jwtVerify, ES256, imported key (floor)', () => jwtVerify(tokens.ES256, keys['ES256']!.publicKey, { issuer: ISSUER, audience: AUDIENCE })),
  await measure('JwtAuthenticator, external ES256, warm JWKS', () => expectOk(auth.authenticate(tokens.ES256, 'acme'))),
  await measure('jose jwtVerify, RS256-2048, imported key (floor)', () => jwtVerify(tokens.RS256, keys['RS256']!.publicKey, { issuer: ISSUER, audience: AUDIENCE })),
  await measure('JwtAuthenticator, external RS256-2048, warm JWKS', () => expectOk(auth.authenticate(tokens.RS256, 'acme'))),
  await measure('JwtAuthenticator, external ES256, certificate-bound', () => expectOk(auth.authenticate(tokens.bound, 'acme', certDer))),
  await measure('JwtAuthenticator, built-in issuer ES256 (local keys)', () => expectOk(auth.authenticate(builtInToken, 'acme'))),
  await measure('verified-token cache hit, ES256 (same token again)', () => expectOk(cached.authenticate(tokens.ES256, 'acme'))),
  await measure('verified-token cache hit, RS256 (same token again)', () => expectOk(cached.authenticate(tokens.RS256, 'acme'))),
  await measure('verified-token cache hit, certificate-bound', () => expectOk(cached.authenticate(tokens.bound, 'acme', certDer))),
];

console.log(`JWT validation, best of ${ROUNDS} rounds of ${ITERATIONS} sequential validations after ${WARMUP} warm-up, node ${process.version}, ${os.cpus().length} CPUs (${os.cpus()[0]?.model ?? '?'})`);
console.log('');
console.log('| validation | µs / token | tokens / s (1 core) |');
console.log('| --- | ---: | ---: |');
for (const row of rows) console.log(`| ${row.name} | ${row.us.toFixed(1)} | ${Math.round(row.perSec).toLocaleString('en-US')} |`);
console.log('');
console.log(`JWKS fetches during the run: ${fetches} (2 expected: one per authenticator; the warm cache serves every validation)`);

server.close();
await store.close();
await rm(dir, { recursive: true, force: true });
