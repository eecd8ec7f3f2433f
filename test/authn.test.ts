// End-to-end authentication over the TLS listener (issue 3, "Done means"): bad client certificates
// are refused with the right reason and audited, revocation cuts live connections, rotation under
// load fails no request, and bearer tokens from the built-in token endpoint work (and cert-bound
// ones only over their certificate's connection). Real handshakes: node:https, undici, http2, curl.
// @peculiar/x509 resolves its algorithms through tsyringe, which needs the Reflect metadata API.
import 'reflect-metadata';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { webcrypto, X509Certificate as NodeX509Certificate } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import http2 from 'node:http2';
import https from 'node:https';
import type { IncomingHttpHeaders } from 'node:http';
import os from 'node:os';
import path from 'node:path';
import type { TLSSocket } from 'node:tls';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import * as x509 from '@peculiar/x509';
import Database from 'better-sqlite3';
import { Agent, request as undiciRequest } from 'undici';
import { generateKeyAndCsr } from '../src/identity/keygen.js';
import { startTestGateway, type TestGateway } from './support/gateway.js';
import { startUpstream, type Upstream } from './support/upstream.js';

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

type CryptoKey = webcrypto.CryptoKey;
type CryptoKeyPair = webcrypto.CryptoKeyPair;
const EC = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
const run = promisify(execFile);
const HOUR = 3600_000;

/** What a TLS client presents: chain (leaf first) and key, PEM. */
interface Creds {
  cert: string;
  key: string;
  serial?: string;
}

interface Answer {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
}

// ---- certificates ---------------------------------------------------------------------------------

async function newKeyPair(): Promise<{ keys: CryptoKeyPair; keyPem: string }> {
  const keys = (await webcrypto.subtle.generateKey(EC, true, ['sign', 'verify'])) as CryptoKeyPair;
  const keyPem = x509.PemConverter.encode(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey), 'PRIVATE KEY');
  return { keys, keyPem };
}

interface Signer {
  cert: x509.X509Certificate;
  key: CryptoKey;
  pem: string;
}

/** A leaf certificate shaped like an X.509-SVID, signed by `issuer` (or self-signed). */
async function buildLeaf(options: {
  issuer: Signer | 'self';
  uris: string[];
  notBefore?: Date;
  notAfter?: Date;
}): Promise<Creds> {
  const { keys, keyPem } = await newKeyPair();
  const notBefore = options.notBefore ?? new Date(Date.now() - 60_000);
  const notAfter = options.notAfter ?? new Date(Date.now() + HOUR);
  const extensions: x509.Extension[] = [
    new x509.BasicConstraintsExtension(false, undefined, true),
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
    new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
    new x509.SubjectAlternativeNameExtension(options.uris.map((value) => ({ type: 'url' as const, value }))),
    await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
  ];
  const serialNumber = Buffer.from(webcrypto.getRandomValues(new Uint8Array(12))).toString('hex').replace(/^./, '4');
  if (options.issuer === 'self') {
    const cert = await x509.X509CertificateGenerator.createSelfSigned({
      serialNumber,
      name: 'CN=billing',
      notBefore,
      notAfter,
      keys,
      signingAlgorithm: EC,
      extensions,
    });
    return { cert: cert.toString('pem') + '\n', key: keyPem, serial: cert.serialNumber.toLowerCase() };
  }
  const issuer = options.issuer;
  extensions.push(await x509.AuthorityKeyIdentifierExtension.create(issuer.cert.publicKey));
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber,
    subject: 'CN=billing',
    issuer: issuer.cert.subjectName,
    notBefore,
    notAfter,
    publicKey: keys.publicKey,
    signingKey: issuer.key,
    signingAlgorithm: EC,
    extensions,
  });
  return { cert: `${cert.toString('pem')}\n${issuer.pem.trim()}\n`, key: keyPem, serial: cert.serialNumber.toLowerCase() };
}

/** A throwaway CA nobody trusts. */
async function throwawayCa(): Promise<Signer> {
  const { keys } = await newKeyPair();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: '01',
    name: 'CN=DMSC tenant acme CA, O=DMSC',
    notBefore: new Date(Date.now() - HOUR),
    notAfter: new Date(Date.now() + 24 * HOUR),
    keys,
    signingAlgorithm: EC,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return { cert, key: keys.privateKey, pem: cert.toString('pem') };
}

/**
 * The active intermediate of a tenant with its private key, opened the way the gateway does (the
 * sealed record in the store, the gateway's keyring). The PKI has no clock or signing hook for a
 * running gateway, and "expired" / "wrong SPIFFE ID from the right CA" need the real CA's key.
 */
async function tenantCa(gw: TestGateway, tenant: string): Promise<Signer> {
  const db = new Database(path.join(gw.stateDir, 'dmsc.db'), { readonly: true, fileMustExist: true });
  try {
    const row = db
      .prepare("SELECT id, cert_pem, sealed_key FROM cas WHERE kind = 'intermediate' AND tenant = ? AND status = 'active'")
      .get(tenant) as { id: string; cert_pem: string; sealed_key: string } | undefined;
    assert.ok(row, `tenant ${tenant} has an active intermediate`);
    const pem = gw.gateway.identity.keyring.open('ca-key', row.id, row.sealed_key).toString('utf8');
    const der = x509.PemConverter.decode(pem)[0]!;
    const key = await webcrypto.subtle.importKey('pkcs8', der, { name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign']);
    return { cert: new x509.X509Certificate(row.cert_pem), key, pem: row.cert_pem };
  } finally {
    db.close();
  }
}

/** A certificate from the gateway's own CA for tenant/agent (what /enroll hands out). */
async function enrolled(gw: TestGateway, tenant: string, agent: string, ttlMs?: number): Promise<Creds & { notAfter: string }> {
  const { keyPem, csrPem } = await generateKeyAndCsr(agent);
  const issued = await gw.gateway.identity.pki.issueFromCsr(tenant, agent, csrPem, ttlMs ? { ttlMs } : {});
  return { cert: issued.chainPem, key: keyPem, serial: issued.serial, notAfter: issued.notAfter };
}

// ---- clients --------------------------------------------------------------------------------------

/** One request on a fresh TLS connection (node:https, HTTP/1.1). */
function tlsRequest(
  gw: TestGateway,
  pathname: string,
  options: { creds?: Creds; headers?: Record<string, string>; method?: string; body?: string; agent?: https.Agent } = {},
): Promise<Answer> {
  const url = new URL(pathname, gw.tlsUrl);
  return new Promise((resolve, reject) => {
    const req = https.request(
      url,
      {
        method: options.method ?? 'GET',
        headers: options.headers,
        ...(options.agent
          ? { agent: options.agent }
          : { agent: false, ca: gw.caCert, ...(options.creds ? { cert: options.creds.cert, key: options.creds.key } : {}) }),
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
        res.on('error', reject);
      },
    );
    req.setTimeout(15_000, () => req.destroy(new Error(`no answer to ${pathname} within 15 s`)));
    req.on('error', reject);
    req.end(options.body);
  });
}

let scratch: string;
let fileCounter = 0;

async function curl(gw: TestGateway, pathname: string, creds?: Creds): Promise<{ status: number; headers: string; body: string; code: number; stderr: string }> {
  const n = ++fileCounter;
  const caFile = path.join(scratch, 'ca.pem');
  await writeFile(caFile, gw.caCert);
  const args = ['-sS', '--cacert', caFile, '-D', path.join(scratch, `h${n}`), '-o', '-', '-w', '\n@@%{http_code}'];
  if (creds) {
    const certFile = path.join(scratch, `c${n}.pem`);
    const keyFile = path.join(scratch, `k${n}.pem`);
    await writeFile(certFile, creds.cert);
    await writeFile(keyFile, creds.key, { mode: 0o600 });
    args.push('--cert', certFile, '--key', keyFile);
  }
  args.push(new URL(pathname, gw.tlsUrl).href);
  const { readFile } = await import('node:fs/promises');
  try {
    const { stdout, stderr } = await run('curl', args, { timeout: 20_000 });
    const at = stdout.lastIndexOf('\n@@');
    const headers = await readFile(path.join(scratch, `h${n}`), 'utf8').catch(() => '');
    return { status: Number(stdout.slice(at + 3)), body: stdout.slice(0, at), headers, code: 0, stderr };
  } catch (err) {
    const e = err as { code: number; stdout?: string; stderr?: string };
    return { status: 0, body: e.stdout ?? '', headers: '', code: e.code, stderr: e.stderr ?? '' };
  }
}

function headerOf(raw: string, name: string): string | undefined {
  const line = raw.split(/\r?\n/).find((l) => l.toLowerCase().startsWith(name.toLowerCase() + ':'));
  return line?.slice(name.length + 1).trim();
}

async function auditMark(gw: TestGateway): Promise<number> {
  const records = await gw.gateway.audit.list({ action: 'authn' });
  return records.at(-1)?.seq ?? 0;
}

async function assertAudited(gw: TestGateway, since: number, reason: string): Promise<void> {
  const records = (await gw.gateway.audit.list({ action: 'authn', afterSeq: since })).filter((r) => r.seq > since);
  const hit = records.find((r) => r.decision === 'deny' && (r.reason ?? '').startsWith(`${reason}:`));
  assert.ok(hit, `an authn deny record with reason ${reason}; got ${JSON.stringify(records.map((r) => [r.decision, r.reason]))}`);
}

/** 401 with the reason in the header and the body, audited; over node:https, undici and curl. */
async function assertRefused(gw: TestGateway, creds: Creds | undefined, reason: string, pathname = '/agents/acme/billing/secret'): Promise<void> {
  let mark = await auditMark(gw);
  const viaHttps = await tlsRequest(gw, pathname, { ...(creds ? { creds } : {}) });
  assert.equal(viaHttps.status, 401, `node:https: ${viaHttps.body}`);
  assert.equal(viaHttps.headers['x-dmsc-auth-failure'], reason);
  const error = (JSON.parse(viaHttps.body) as { error: { code: string; message: string } }).error;
  assert.equal(error.code, 'unauthenticated');
  if (reason !== 'no_credentials') assert.match(error.message, new RegExp(`^authentication failed \\(${reason}\\): `));
  assert.doesNotMatch(viaHttps.body, /PRIVATE KEY|BEGIN CERTIFICATE/);
  await assertAudited(gw, mark, reason);

  mark = await auditMark(gw);
  const dispatcher = new Agent({ connect: { ca: gw.caCert, ...(creds ? { cert: creds.cert, key: creds.key } : {}) } });
  try {
    const viaUndici = await undiciRequest(new URL(pathname, gw.tlsUrl), { dispatcher });
    const text = await viaUndici.body.text();
    assert.equal(viaUndici.statusCode, 401, `undici: ${text}`);
    assert.equal(viaUndici.headers['x-dmsc-auth-failure'], reason);
  } finally {
    await dispatcher.close();
  }
  await assertAudited(gw, mark, reason);

  mark = await auditMark(gw);
  const viaCurl = await curl(gw, pathname, creds);
  assert.equal(viaCurl.status, 401, `curl: ${viaCurl.stderr}${viaCurl.body}`);
  assert.equal(headerOf(viaCurl.headers, 'x-dmsc-auth-failure'), reason);
  assert.equal(JSON.parse(viaCurl.body).error.code, 'unauthenticated');
  await assertAudited(gw, mark, reason);
}

/** Runs `worker` in `concurrency` loops until `stop` resolves; counts outcomes. */
function loadLoops(concurrency: number, worker: () => Promise<void>) {
  let stopped = false;
  const stats = { ok: 0, failed: 0, errors: [] as string[] };
  const waiters: Array<{ at: number; resolve: () => void }> = [];
  const loops = Array.from({ length: concurrency }, async () => {
    while (!stopped) {
      try {
        await worker();
        stats.ok++;
      } catch (err) {
        stats.failed++;
        if (stats.errors.length < 10) stats.errors.push((err as Error).message);
      }
      for (let i = waiters.length - 1; i >= 0; i--) {
        if (stats.ok + stats.failed >= waiters[i]!.at) waiters.splice(i, 1)[0]!.resolve();
      }
    }
  });
  return {
    stats,
    /** Resolves once `n` more requests have completed. */
    more(n: number): Promise<void> {
      const at = stats.ok + stats.failed + n;
      return new Promise((resolve) => waiters.push({ at, resolve }));
    },
    async stop(): Promise<typeof stats> {
      stopped = true;
      await Promise.all(loops);
      return stats;
    },
  };
}

async function expectOk(answer: Promise<Answer>): Promise<Answer> {
  const value = await answer;
  if (value.status !== 200) throw new Error(`status ${value.status}: ${value.body.slice(0, 200)}`);
  return value;
}

// ---- tests ----------------------------------------------------------------------------------------

describe('authentication over the TLS listener (end to end)', () => {
  let gw: TestGateway;
  let billing: Upstream;
  let globexAgent: Upstream;
  let td: string;

  before(async () => {
    scratch = await mkdtemp(path.join(os.tmpdir(), 'dmsc-authn-'));
    billing = await startUpstream('billing');
    globexAgent = await startUpstream('globex-billing');
    gw = await startTestGateway({
      // A short skew so that short-lived certificates in these tests expire within the run.
      identity: { clockSkewMs: 500 },
      tenants: [
        {
          name: 'acme',
          agents: [
            { name: 'billing', endpoints: [billing.url] },
            { name: 'renewer', endpoints: [billing.url] },
            { name: 'loader', endpoints: [billing.url] },
          ],
        },
        { name: 'globex', agents: [{ name: 'billing', endpoints: [globexAgent.url] }] },
      ],
    });
    td = gw.gateway.identity.pki.trustDomain;
  });
  after(async () => {
    await gw?.close();
    await billing?.close();
    await globexAgent?.close();
    await rm(scratch, { recursive: true, force: true });
  });

  describe('bad client certificates are refused with the reason, and audited', () => {
    it('a valid enrolled certificate gets through as exactly that agent; a caller-supplied x-dmsc-caller never reaches the agent', async () => {
      const creds = await enrolled(gw, 'acme', 'billing');
      const before = billing.seen.length;
      const viaHttps = await tlsRequest(gw, '/agents/acme/billing/hello', { creds, headers: { 'x-dmsc-caller': `spiffe://${td}/tenant/acme/agent/admin` } });
      assert.equal(viaHttps.status, 200, viaHttps.body);
      const seen = billing.seen.at(-1)!;
      assert.equal(billing.seen.length, before + 1);
      assert.equal(seen.headers['x-dmsc-caller'], `spiffe://${td}/tenant/acme/agent/billing`);

      const viaCurl = await curl(gw, '/agents/acme/billing/hello-curl', creds);
      assert.equal(viaCurl.status, 200, viaCurl.stderr + viaCurl.body);
      assert.equal(billing.seen.at(-1)!.headers['x-dmsc-caller'], `spiffe://${td}/tenant/acme/agent/billing`);
    });

    it('expired (signed by the tenant CA, expired an hour ago) -> 401 expired', async () => {
      const ca = await tenantCa(gw, 'acme');
      const creds = await buildLeaf({
        issuer: ca,
        uris: [`spiffe://${td}/tenant/acme/agent/billing`],
        notBefore: new Date(Date.now() - 3 * HOUR),
        notAfter: new Date(Date.now() - HOUR),
      });
      await assertRefused(gw, creds, 'expired');
    });

    it('a certificate that expires during a keep-alive connection stops authenticating on that connection', async () => {
      const creds = await enrolled(gw, 'acme', 'billing', 2000);
      const agent = new https.Agent({ keepAlive: true, maxSockets: 1, ca: gw.caCert, cert: creds.cert, key: creds.key });
      try {
        const sockets = new Set<unknown>();
        const first = await tlsRequest(gw, '/agents/acme/billing/live', { agent });
        assert.equal(first.status, 200);
        for (const list of Object.values(agent.freeSockets)) for (const socket of list ?? []) sockets.add(socket);
        await new Promise((resolve) => setTimeout(resolve, Math.max(0, Date.parse(creds.notAfter) + 500 + 200 - Date.now())));
        const later = await tlsRequest(gw, '/agents/acme/billing/live', { agent });
        let reused = false;
        for (const list of Object.values(agent.freeSockets)) for (const socket of list ?? []) reused ||= sockets.has(socket);
        assert.ok(reused, 'the same connection was used');
        assert.equal(later.status, 401);
        assert.equal(later.headers['x-dmsc-auth-failure'], 'expired');
      } finally {
        agent.destroy();
      }
    });

    it('not yet valid (signed by the tenant CA, valid from tomorrow) -> 401 not_yet_valid', async () => {
      const ca = await tenantCa(gw, 'acme');
      const creds = await buildLeaf({
        issuer: ca,
        uris: [`spiffe://${td}/tenant/acme/agent/billing`],
        notBefore: new Date(Date.now() + 24 * HOUR),
        notAfter: new Date(Date.now() + 48 * HOUR),
      });
      await assertRefused(gw, creds, 'not_yet_valid');
    });

    it("signed by another tenant's CA while claiming this tenant -> 401 wrong_tenant", async () => {
      const globexCa = await tenantCa(gw, 'globex');
      const creds = await buildLeaf({ issuer: globexCa, uris: [`spiffe://${td}/tenant/acme/agent/billing`] });
      await assertRefused(gw, creds, 'wrong_tenant');
    });

    it("a genuine certificate of another tenant authenticates only as that tenant's agent", async () => {
      const creds = await enrolled(gw, 'globex', 'billing');
      const answer = await tlsRequest(gw, '/agents/globex/billing/own', { creds });
      assert.equal(answer.status, 200, answer.body);
      assert.equal(globexAgent.seen.at(-1)!.headers['x-dmsc-caller'], `spiffe://${td}/tenant/globex/agent/billing`);
      // Calling acme's agent with it: whatever policy decides, the caller is never an acme identity.
      const before = billing.seen.length;
      const cross = await tlsRequest(gw, '/agents/acme/billing/cross', { creds });
      if (billing.seen.length > before) {
        assert.equal(billing.seen.at(-1)!.headers['x-dmsc-caller'], `spiffe://${td}/tenant/globex/agent/billing`);
      } else {
        assert.ok(cross.status === 403 || cross.status === 401, `cross-tenant call answered ${cross.status}`);
      }
    });

    it('self-signed with a valid-looking SPIFFE ID -> 401 unknown_ca', async () => {
      const creds = await buildLeaf({ issuer: 'self', uris: [`spiffe://${td}/tenant/acme/agent/billing`] });
      await assertRefused(gw, creds, 'unknown_ca');
    });

    it('signed by a throwaway CA named like the tenant CA -> 401 unknown_ca', async () => {
      const creds = await buildLeaf({ issuer: await throwawayCa(), uris: [`spiffe://${td}/tenant/acme/agent/billing`] });
      await assertRefused(gw, creds, 'unknown_ca');
    });

    it('wrong SPIFFE ID from the right CA (two URI SANs; another trust domain; not an agent path) -> 401 bad_spiffe_id', async () => {
      const ca = await tenantCa(gw, 'acme');
      const two = await buildLeaf({ issuer: ca, uris: [`spiffe://${td}/tenant/acme/agent/billing`, `spiffe://${td}/tenant/acme/agent/loader`] });
      await assertRefused(gw, two, 'bad_spiffe_id');
      const otherDomain = await buildLeaf({ issuer: ca, uris: ['spiffe://evil.example/tenant/acme/agent/billing'] });
      await assertRefused(gw, otherDomain, 'bad_spiffe_id');
      const notAgent = await buildLeaf({ issuer: ca, uris: [`spiffe://${td}/tenant/acme/service/billing`] });
      await assertRefused(gw, notAgent, 'bad_spiffe_id');
    });

    it('revoked (pki.revoke): the handshake is closed at once, the refusal is audited, curl fails too', async () => {
      const creds = await enrolled(gw, 'acme', 'billing');
      assert.equal((await tlsRequest(gw, '/agents/acme/billing/before-revoke', { creds })).status, 200);
      await gw.gateway.identity.pki.revoke(creds.serial!, 'keyCompromise');
      const mark = await auditMark(gw);
      await assert.rejects(tlsRequest(gw, '/agents/acme/billing/after-revoke', { creds }), /ECONNRESET|socket hang up|EPIPE|disconnected/i);
      await assertAudited(gw, mark, 'revoked');
      const viaCurl = await curl(gw, '/agents/acme/billing/after-revoke', creds);
      assert.notEqual(viaCurl.status, 200);
      assert.notEqual(viaCurl.code, 0, 'curl fails');
      const dispatcher = new Agent({ connect: { ca: gw.caCert, cert: creds.cert, key: creds.key } });
      try {
        await assert.rejects(undiciRequest(new URL('/agents/acme/billing/after-revoke', gw.tlsUrl), { dispatcher }).then((r) => r.body.text()));
      } finally {
        await dispatcher.close();
      }
    });

    it('no credentials at all -> 401 no_credentials', async () => {
      await assertRefused(gw, undefined, 'no_credentials');
    });
  });

  describe('with openssl s_client', () => {
    /** One HTTP/1.1 request over `openssl s_client` (TLS 1.3, the gateway's chain verified against the root). */
    async function sClient(creds: Creds | undefined, pathname: string): Promise<string> {
      const n = ++fileCounter;
      const caFile = path.join(scratch, `s-ca${n}.pem`);
      await writeFile(caFile, gw.caCert);
      const args = ['s_client', '-connect', new URL(gw.tlsUrl).host, '-servername', 'localhost', '-tls1_3', '-CAfile', caFile];
      args.push('-verify_return_error', '-quiet', '-ign_eof');
      if (creds) {
        const certFile = path.join(scratch, `s-c${n}.pem`);
        const keyFile = path.join(scratch, `s-k${n}.pem`);
        await writeFile(certFile, creds.cert);
        await writeFile(keyFile, creds.key, { mode: 0o600 });
        args.push('-cert', certFile, '-key', keyFile);
      }
      const child = execFile('openssl', args, { timeout: 15_000 });
      child.stdin!.end(`GET ${pathname} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n`);
      let out = '';
      child.stdout!.on('data', (chunk: Buffer) => (out += chunk.toString()));
      await new Promise((resolve) => child.once('close', resolve));
      return out;
    }

    it('an enrolled certificate gets through; none gets 401 no_credentials; a revoked one gets no answer', async () => {
      const creds = await enrolled(gw, 'acme', 'billing');
      assert.match(await sClient(creds, '/agents/acme/billing/s-client'), /^HTTP\/1\.1 200/);
      const anonymous = await sClient(undefined, '/agents/acme/billing/s-client');
      assert.match(anonymous, /^HTTP\/1\.1 401/);
      assert.match(anonymous, /x-dmsc-auth-failure: no_credentials/i);
      await gw.gateway.identity.pki.revoke(creds.serial!, 'keyCompromise');
      assert.doesNotMatch(await sClient(creds, '/agents/acme/billing/s-client'), /HTTP\/1\.1/);
    });
  });

  describe('revocation cuts live connections', () => {
    it('revoking closes a live HTTP/1.1 keep-alive connection and an HTTP/2 session within 1 s; a new handshake with the cert fails', async () => {
      const creds = await enrolled(gw, 'acme', 'loader');
      // HTTP/1.1 keep-alive: the socket stays pooled in the agent after the response.
      const agent = new https.Agent({ keepAlive: true, maxSockets: 1, ca: gw.caCert, cert: creds.cert, key: creds.key });
      let h1Socket: TLSSocket | undefined;
      const h1 = await new Promise<Answer>((resolve, reject) => {
        const req = https.request(new URL('/agents/acme/loader/h1', gw.tlsUrl), { agent }, (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString() }));
        });
        req.on('socket', (socket) => (h1Socket = socket as TLSSocket));
        req.on('error', reject);
        req.end();
      });
      assert.equal(h1.status, 200, h1.body);
      assert.ok(h1Socket && !h1Socket.destroyed, 'the keep-alive socket is still open');
      const h1Closed = new Promise<number>((resolve) => h1Socket!.once('close', () => resolve(performance.now())));

      // HTTP/2 session with one completed stream.
      const session = http2.connect(gw.tlsUrl, { ca: gw.caCert, cert: creds.cert, key: creds.key });
      session.on('error', () => {});
      const h2Status = await new Promise<number>((resolve, reject) => {
        const stream = session.request({ ':path': '/agents/acme/loader/h2' });
        stream.on('response', (headers) => resolve(Number(headers[':status'])));
        stream.on('error', reject);
        stream.resume();
        stream.end();
      });
      assert.equal(h2Status, 200);
      assert.equal(session.closed || session.destroyed, false);
      const h2Closed = new Promise<number>((resolve) => session.once('close', () => resolve(performance.now())));

      const revokedAt = performance.now();
      await gw.gateway.identity.pki.revoke(creds.serial!, 'keyCompromise');
      const [h1At, h2At] = await Promise.all([h1Closed, h2Closed]);
      assert.ok(h1At - revokedAt < 1000, `HTTP/1.1 connection closed ${Math.round(h1At - revokedAt)} ms after revoke()`);
      assert.ok(h2At - revokedAt < 1000, `HTTP/2 session closed ${Math.round(h2At - revokedAt)} ms after revoke()`);
      agent.destroy();

      await assert.rejects(tlsRequest(gw, '/agents/acme/loader/again', { creds }));
      const again = http2.connect(gw.tlsUrl, { ca: gw.caCert, cert: creds.cert, key: creds.key });
      await new Promise<void>((resolve, reject) => {
        again.on('error', () => {});
        const stream = again.request({ ':path': '/agents/acme/loader/h2-again' });
        stream.on('response', (headers) => reject(new Error(`HTTP/2 answered ${headers[':status']} with a revoked certificate`)));
        stream.on('error', () => {});
        stream.on('close', () => resolve());
        stream.end();
      });
      again.destroy();
    });

    it('revokeAgent cuts every live connection of the agent (HTTP/2)', async () => {
      const one = await enrolled(gw, 'acme', 'renewer');
      const two = await enrolled(gw, 'acme', 'renewer');
      const sessions = [one, two].map((creds) => http2.connect(gw.tlsUrl, { ca: gw.caCert, cert: creds.cert, key: creds.key }));
      for (const session of sessions) {
        session.on('error', () => {});
        const status = await new Promise<number>((resolve, reject) => {
          const stream = session.request({ ':path': '/agents/acme/renewer/x' });
          stream.on('response', (headers) => resolve(Number(headers[':status'])));
          stream.on('error', reject);
          stream.resume();
          stream.end();
        });
        assert.equal(status, 200);
      }
      const closed = sessions.map((session) => new Promise<number>((resolve) => session.once('close', () => resolve(performance.now()))));
      const at = performance.now();
      const serials = await gw.gateway.identity.pki.revokeAgent('acme', 'renewer', 'decommissioned');
      assert.ok(serials.includes(one.serial!) && serials.includes(two.serial!));
      for (const when of await Promise.all(closed)) assert.ok(when - at < 1000, `closed ${Math.round(when - at)} ms after revokeAgent()`);
    });
  });

  describe('rotation under load', () => {
    it('a client renewing its certificate at half-life (POST /renew over mTLS) keeps sending requests with no failure', async () => {
      // A 4 s certificate: it must be renewed (at half-life) and the old one expires during the run.
      let current: Creds & { notAfter: string } = await enrolled(gw, 'acme', 'billing', 4000);
      const first = current;
      const issuedAt = Date.now();
      const halfLife = issuedAt + (Date.parse(first.notAfter) - issuedAt) / 2;
      const load = loadLoops(3, async () => {
        await expectOk(tlsRequest(gw, '/agents/acme/billing/steady', { creds: current }));
      });
      await load.more(5);
      // The renewal timer, as `dmsc cert renew --watch` does it: at half-life.
      await new Promise((resolve) => setTimeout(resolve, Math.max(0, halfLife - Date.now())));
      const { keyPem, csrPem } = await generateKeyAndCsr('billing');
      const renewed = await tlsRequest(gw, '/renew', { creds: current, method: 'POST', headers: { 'content-type': 'application/pkcs10' }, body: csrPem });
      assert.equal(renewed.status, 201, renewed.body);
      assert.equal(renewed.headers['x-dmsc-spiffe-id'], `spiffe://${td}/tenant/acme/agent/billing`);
      current = { cert: renewed.body, key: keyPem, serial: String(renewed.headers['x-dmsc-serial']), notAfter: String(renewed.headers['x-dmsc-not-after']) };
      // Keep going until the first certificate has expired (second resolution, so +1 s), then some more.
      await new Promise((resolve) => setTimeout(resolve, Math.max(0, Date.parse(first.notAfter) + 1000 - Date.now())));
      await load.more(10);
      const stats = await load.stop();
      assert.equal(stats.failed, 0, `failed requests: ${stats.errors.join('; ')}`);
      assert.ok(stats.ok >= 15, `requests sent: ${stats.ok}`);
      // The old certificate is now refused as expired (Node's verification against the real tenant CA).
      const stale = await tlsRequest(gw, '/agents/acme/billing/stale', { creds: first });
      assert.equal(stale.status, 401);
      assert.equal(stale.headers['x-dmsc-auth-failure'], 'expired');
    });

    it('rotating the serving certificate and the tenant intermediate under load fails no request; old- and new-intermediate certificates both authenticate', async () => {
      const pki = gw.gateway.identity.pki;
      const oldCert = await enrolled(gw, 'acme', 'loader');
      const servingSerial = async (): Promise<string> => {
        const socket = await new Promise<TLSSocket>((resolve, reject) => {
          const req = https.request(new URL('/trust-bundle', gw.tlsUrl), { agent: false, ca: gw.caCert }, (res) => {
            res.resume();
            resolve(res.socket as TLSSocket);
          });
          req.on('error', reject);
          req.end();
        });
        return socket.getPeerCertificate().serialNumber.toLowerCase();
      };
      const servingBefore = await servingSerial();

      // Several clients: fresh connections per request (node:https), short keep-alive (undici) and HTTP/2.
      const undiciAgent = new Agent({ keepAliveTimeout: 20, connect: { ca: gw.caCert, cert: oldCert.cert, key: oldCert.key } });
      const fresh = loadLoops(3, async () => {
        await expectOk(tlsRequest(gw, '/agents/acme/loader/fresh', { creds: oldCert, headers: { connection: 'close' } }));
      });
      const pooled = loadLoops(2, async () => {
        const res = await undiciRequest(new URL('/agents/acme/loader/pooled', gw.tlsUrl), { dispatcher: undiciAgent });
        const text = await res.body.text();
        if (res.statusCode !== 200) throw new Error(`status ${res.statusCode}: ${text}`);
      });
      const h2 = loadLoops(1, async () => {
        const session = http2.connect(gw.tlsUrl, { ca: gw.caCert, cert: oldCert.cert, key: oldCert.key });
        session.on('error', () => {});
        try {
          for (let i = 0; i < 3; i++) {
            const status = await new Promise<number>((resolve, reject) => {
              const timer = setTimeout(() => reject(new Error('HTTP/2 request timed out')), 10_000);
              const stream = session.request({ ':path': '/agents/acme/loader/h2' });
              stream.on('close', () => clearTimeout(timer));
              stream.on('response', (headers) => resolve(Number(headers[':status'])));
              stream.on('error', reject);
              stream.resume();
              stream.end();
            });
            if (status !== 200) throw new Error(`HTTP/2 status ${status}`);
          }
        } finally {
          session.close();
        }
      });
      const all = [fresh, pooled, h2];
      const settle = () => Promise.all(all.map((load) => load.more(4)));
      let results: Array<Awaited<ReturnType<(typeof fresh)['stop']>>>;
      try {
        await settle();
        await gw.gateway.identity.rotateServingCertificate();
        await settle();
        await pki.rotateIntermediate('acme');
        await settle();
        await gw.gateway.identity.rotateServingCertificate();
        await pki.rotateIntermediate('acme');
        await settle();
      } finally {
        results = await Promise.all(all.map((load) => load.stop()));
        await undiciAgent.close();
      }
      const failed = results.reduce((n, s) => n + s.failed, 0);
      const ok = results.reduce((n, s) => n + s.ok, 0);
      assert.equal(failed, 0, `failed requests: ${results.flatMap((s) => s.errors).join('; ')}`);
      assert.ok(ok >= 40, `requests sent: ${ok}`);
      assert.notEqual(await servingSerial(), servingBefore, 'the serving certificate changed');

      // After rotation: a certificate from the old intermediate and one from the new both get through.
      const newCert = await enrolled(gw, 'acme', 'loader');
      const issuerOf = (pem: string) => new NodeX509Certificate(pem).issuer;
      const akiOf = (pem: string) => new x509.X509Certificate(pem).getExtension(x509.AuthorityKeyIdentifierExtension)?.keyId;
      assert.equal(issuerOf(newCert.cert), issuerOf(oldCert.cert), 'same subject name, different key');
      assert.notEqual(akiOf(newCert.cert), akiOf(oldCert.cert), 'issued by a different intermediate');
      for (const creds of [oldCert, newCert]) {
        const answer = await tlsRequest(gw, '/agents/acme/loader/after-rotation', { creds });
        assert.equal(answer.status, 200, answer.body);
        assert.equal(billing.seen.at(-1)!.headers['x-dmsc-caller'], `spiffe://${td}/tenant/acme/agent/loader`);
        const viaCurl = await curl(gw, '/agents/acme/loader/after-rotation-curl', creds);
        assert.equal(viaCurl.status, 200, viaCurl.stderr + viaCurl.body);
      }
    });
  });

  describe('bearer tokens through the gateway', () => {
    const tokenRequest = (options: { creds?: Creds; basic?: { id: string; secret: string } }) =>
      tlsRequest(gw, '/tenants/acme/oauth/token', {
        method: 'POST',
        ...(options.creds ? { creds: options.creds } : {}),
        headers: {
          'content-type': 'application/x-www-form-urlencoded',
          ...(options.basic ? { authorization: `Basic ${Buffer.from(`${options.basic.id}:${options.basic.secret}`).toString('base64')}` } : {}),
        },
        body: 'grant_type=client_credentials',
      });

    it('a token from the built-in endpoint (client secret) reaches the agent as that agent; the agent never sees the Authorization header', async () => {
      const created = await gw.admin('POST', '/admin/v1/tenants/acme/agents/billing/client-secret');
      assert.equal(created.status, 201, JSON.stringify(created.body));
      const issued = await tokenRequest({ basic: { id: 'billing', secret: created.body.clientSecret as string } });
      assert.equal(issued.status, 200, issued.body);
      const { access_token: token, token_type: type } = JSON.parse(issued.body) as { access_token: string; token_type: string };
      assert.match(type, /^bearer$/i);

      const answer = await tlsRequest(gw, '/agents/acme/billing/with-token', { headers: { authorization: `Bearer ${token}`, 'x-dmsc-caller': 'spiffe://forged' } });
      assert.equal(answer.status, 200, answer.body);
      const seen = billing.seen.at(-1)!;
      assert.match(seen.url, /with-token$/);
      assert.equal(seen.headers.authorization, undefined, 'the consumed bearer token is not passed on');
      assert.equal(seen.headers['x-dmsc-caller'], `spiffe://${td}/tenant/acme/agent/billing`);

      const viaCurl = await run('curl', ['-sS', '--cacert', path.join(scratch, 'ca.pem'), '-H', `authorization: Bearer ${token}`, '-o', '/dev/null', '-w', '%{http_code}', `${gw.tlsUrl}/agents/acme/billing/curl-token`]);
      assert.equal(viaCurl.stdout, '200');

      // A tampered token is refused.
      const tampered = token.slice(0, -4) + (token.endsWith('AAAA') ? 'BBBB' : 'AAAA');
      const bad = await tlsRequest(gw, '/agents/acme/billing/x', { headers: { authorization: `Bearer ${tampered}` } });
      assert.equal(bad.status, 401);
      assert.equal(bad.headers['x-dmsc-auth-failure'], 'bad_token');
    });

    it('a certificate-bound token (obtained over mTLS with cert A) is refused over a connection with cert B or no cert: 401 bad_token', async () => {
      const certA = await enrolled(gw, 'acme', 'loader');
      const certB = await enrolled(gw, 'acme', 'loader');
      const issued = await tokenRequest({ creds: certA });
      assert.equal(issued.status, 200, issued.body);
      const token = (JSON.parse(issued.body) as { access_token: string }).access_token;
      const claims = JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString('utf8')) as { cnf?: Record<string, string> };
      assert.ok(claims.cnf?.['x5t#S256'], 'the token is bound to the certificate');

      const withA = await tlsRequest(gw, '/agents/acme/loader/bound', { creds: certA, headers: { authorization: `Bearer ${token}` } });
      assert.equal(withA.status, 200, withA.body);

      for (const creds of [certB, undefined]) {
        const mark = await auditMark(gw);
        const answer = await tlsRequest(gw, '/agents/acme/loader/bound', { ...(creds ? { creds } : {}), headers: { authorization: `Bearer ${token}` } });
        assert.equal(answer.status, 401, answer.body);
        assert.equal(answer.headers['x-dmsc-auth-failure'], 'bad_token');
        await assertAudited(gw, mark, 'bad_token');
      }
      // Another tenant's certificate does not make it valid either.
      const other = await enrolled(gw, 'globex', 'billing');
      const cross = await tlsRequest(gw, '/agents/acme/loader/bound', { creds: other, headers: { authorization: `Bearer ${token}` } });
      assert.equal(cross.status, 401);
      assert.equal(cross.headers['x-dmsc-auth-failure'], 'bad_token');
    });
  });
});
