import 'reflect-metadata';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { X509Certificate, randomBytes } from 'node:crypto';
import { lstat, mkdtemp, readFile, readlink, realpath, rm, stat, writeFile } from 'node:fs/promises';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { TLSSocket } from 'node:tls';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { AuditLog } from '../src/audit/index.js';
import { enroll, halfLife, parseDuration, renew, watchRenewals } from '../src/cli/cert-commands.js';
import { main } from '../src/cli/index.js';
import { configSchema } from '../src/config/schema.js';
import { BootstrapTokens, hashBootstrapToken } from '../src/identity/bootstrap.js';
import { createIdentityEndpoints, MAX_ENDPOINT_BODY_BYTES } from '../src/identity/endpoints.js';
import { Keyring } from '../src/identity/keyring.js';
import { createPki, type BuiltinPki } from '../src/identity/pki.js';
import type { Identity } from '../src/identity/spiffe.js';
import { openStore, type DurableStore } from '../src/store/index.js';
import { startTestGateway, TEST_ADMIN_TOKEN, type TestGateway } from './support/gateway.js';
import { startUpstream, type Upstream } from './support/upstream.js';

const logger = pino({ level: 'silent' });
const TD = 'dmsc.test';

function run(command: string, args: string[], input?: string | Buffer): { status: number; stdout: string; stderr: string } {
  const result = spawnSync(command, args, { input, encoding: 'utf8', timeout: 30_000 });
  return { status: result.status ?? -1, stdout: result.stdout, stderr: result.stderr };
}

/** curl in a child process (async, so an in-process server can answer it). */
function curl(args: string[]): Promise<{ status: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn('curl', ['-sS', ...args]);
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString('latin1')));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.once('error', reject);
    child.once('close', (code) => resolve({ status: code ?? -1, stdout, stderr }));
  });
}

/** `curl -w` trailer: the status code after the body. */
function splitStatus(out: string): { code: number; body: string } {
  const at = out.lastIndexOf('\n@@');
  return { code: Number(out.slice(at + 3)), body: out.slice(0, at) };
}

/** `openssl req`, exactly as documented for agents with no SDK. */
function opensslCsr(dir: string, name = 'agent'): { keyFile: string; csrFile: string } {
  const keyFile = path.join(dir, `${name}.key`);
  const csrFile = path.join(dir, `${name}.csr`);
  const made = run('openssl', [
    'req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', keyFile, '-subj', '/CN=billing', '-out', csrFile,
  ]);
  assert.equal(made.status, 0, made.stderr);
  return { keyFile, csrFile };
}

function spiffeOf(pem: string): string | undefined {
  return /URI:(spiffe:\/\/\S+?)(?:,|$)/.exec(new X509Certificate(pem).subjectAltName ?? '')?.[1];
}

function crlText(der: Buffer): string {
  const parsed = run('openssl', ['crl', '-inform', 'DER', '-noout', '-text'], der);
  assert.equal(parsed.status, 0, parsed.stderr);
  return parsed.stdout;
}

// ---- the parts on their own: a real PKI and store, the endpoints on a node:https server of this test --

describe('bootstrap tokens', () => {
  let dir: string;
  let store: DurableStore;
  let audit: AuditLog;
  let clock = Date.now();
  let tokens: BootstrapTokens;

  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'dmsc-bt-'));
    store = await openStore(dir);
    audit = new AuditLog(store, logger);
    tokens = new BootstrapTokens(store, audit, { now: () => clock });
  });
  after(async () => {
    await audit.flush();
    await store.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('are random, prefixed, stored only as a hash, single use, bound to one agent, and every use is audited', async () => {
    const created = await tokens.create('acme', 'billing', 600_000, 'admin-token');
    assert.match(created.token, /^dmsc_bt_[A-Za-z0-9_-]{43}$/);
    assert.match(created.id, /^bt_[0-9a-f]{12}$/);
    assert.equal(Date.parse(created.expiresAt), clock + 600_000);
    const stored = await store.listBootstrapTokens('acme');
    assert.equal(stored.length, 1);
    assert.equal(stored[0]!.tokenHash, hashBootstrapToken(created.token));
    assert.ok(!JSON.stringify(stored).includes(created.token), 'the token itself is not stored');
    const listed = await tokens.list('acme');
    assert.deepEqual(Object.keys(listed[0]!).sort(), ['agent', 'createdAt', 'expiresAt', 'id', 'status', 'tenant']);
    assert.equal(listed[0]!.status, 'unused');

    const first = await tokens.consume(created.token, 'req-1');
    assert.ok(first.ok);
    assert.equal(first.token.tenant, 'acme');
    assert.equal(first.token.agent, 'billing');
    const second = await tokens.consume(created.token, 'req-2');
    assert.deepEqual([second.ok, !second.ok && second.reason], [false, 'used']);
    assert.equal((await tokens.list('acme'))[0]!.status, 'used');

    const unknown = await tokens.consume('dmsc_bt_' + randomBytes(32).toString('base64url'), 'req-3');
    assert.deepEqual([unknown.ok, !unknown.ok && unknown.reason], [false, 'unknown']);
    const garbage = await tokens.consume('not-a-token', 'req-4');
    assert.equal(garbage.ok, false);

    const records = await audit.list({ action: 'enroll.token' });
    assert.deepEqual(
      records.map((r) => [r.decision, r.reason, r.requestId]),
      [
        ['allow', 'valid', 'req-1'],
        ['deny', 'used', 'req-2'],
        ['deny', 'unknown', 'req-3'],
        ['deny', 'unknown', 'req-4'],
      ],
    );
    assert.equal(records[0]!.tenant, 'acme');
    assert.equal(records[0]!.target, 'acme/billing');
    assert.ok(!JSON.stringify(await audit.list()).includes(created.token), 'no token in the audit trail');
    assert.equal((await audit.list({ action: 'enroll.token.create' })).length, 1);
  });

  it('expire: a token consumed after its ttl is refused (and stays unused)', async () => {
    const created = await tokens.create('acme', 'expiring', 60_000);
    const late = await tokens.consume(created.token, 'req-late', clock + 60_001);
    assert.deepEqual([late.ok, !late.ok && late.reason], [false, 'expired']);
    clock += 120_000;
    assert.equal((await tokens.list('acme')).find((t) => t.agent === 'expiring')!.status, 'expired');
    const records = await audit.list({ action: 'enroll.token' });
    assert.deepEqual([records.at(-1)!.decision, records.at(-1)!.reason], ['deny', 'expired']);
  });

  it('refuse lifetimes under a minute or over a week', async () => {
    await assert.rejects(tokens.create('acme', 'billing', 59_999), RangeError);
    await assert.rejects(tokens.create('acme', 'billing', 8 * 24 * 3600_000), RangeError);
  });

  it('durations for --ttl', () => {
    assert.equal(parseDuration('90s'), 90_000);
    assert.equal(parseDuration('10m'), 600_000);
    assert.equal(parseDuration('24h'), 86_400_000);
    assert.equal(parseDuration('120'), 120_000);
    assert.throws(() => parseDuration('10 minutes'));
  });
});

describe('identity endpoints (own TLS server, real PKI)', () => {
  let dir: string;
  let store: DurableStore;
  let audit: AuditLog;
  let pki: BuiltinPki;
  let bootstrap: BootstrapTokens;
  let server: https.Server;
  let url: string;
  let caFile: string;
  let seen: Array<Identity | undefined>;

  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'dmsc-enroll-'));
    store = await openStore(dir);
    audit = new AuditLog(store, logger);
    const identity = configSchema.parse({}).identity;
    pki = await createPki({ store, keyring: Keyring.fromKey(randomBytes(32)), trustDomain: TD, config: identity, logger, audit: (e) => audit.record(e) });
    await pki.ensureTenant('acme');
    bootstrap = new BootstrapTokens(store, audit);
    const endpoints = createIdentityEndpoints({ pki, bootstrap, audit, logger });
    const serving = await pki.issueServerCertificate(['localhost'], ['127.0.0.1']);
    caFile = path.join(dir, 'ca.crt');
    await writeFile(caFile, pki.rootBundle());
    seen = [];
    server = https.createServer(
      { cert: serving.chainPem, key: serving.keyPem, ca: pki.clientCaBundle(), requestCert: true, rejectUnauthorized: false, minVersion: 'TLSv1.3' },
      (req, res) => {
        const socket = req.socket as TLSSocket;
        const peerCert = socket.getPeerCertificate(true);
        let identity: Identity | undefined;
        let certDer: Uint8Array | undefined;
        if (peerCert && peerCert.raw) {
          certDer = new Uint8Array(peerCert.raw);
          const chain = [certDer];
          if (peerCert.issuerCertificate && peerCert.issuerCertificate !== peerCert) chain.push(new Uint8Array(peerCert.issuerCertificate.raw));
          const result = pki.authenticateCertificate(chain);
          if (result.ok) identity = result.identity;
        }
        seen.push(identity);
        const handled = endpoints.handle(req, res, { ...(identity ? { identity } : {}), ...(certDer ? { certDer } : {}), requestId: `r-${seen.length}` });
        if (!handled) {
          res.writeHead(404, { 'content-type': 'text/plain' });
          res.end('not an identity path');
        }
      },
    );
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    url = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(async () => {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
    await audit.flush();
    await store.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('enrolls with openssl req + curl; the token then fails; a bad CSR does not burn a token', async () => {
    const { keyFile, csrFile } = opensslCsr(dir);
    const { token } = await bootstrap.create('acme', 'billing', 600_000);

    const bad = await curl(['--cacert', caFile, '-H', `authorization: Bearer ${token}`, '--data-binary', 'not a csr', '-H', 'content-type: application/pkcs10', `${url}/enroll`, '-w', '\n@@%{http_code}']);
    const badAnswer = splitStatus(bad.stdout);
    assert.equal(badAnswer.code, 400, bad.stderr);
    assert.equal(JSON.parse(badAnswer.body).error.code, 'bad_csr');

    const certFile = path.join(dir, 'agent.crt');
    const ok = await curl(['--cacert', caFile, '-H', `authorization: Bearer ${token}`, '--data-binary', `@${csrFile}`, '-H', 'content-type: application/pkcs10', `${url}/enroll`, '-o', certFile, '-D', '-']);
    assert.equal(ok.status, 0, ok.stderr);
    assert.match(ok.stdout, /^HTTP\/\S+ 201/);
    assert.match(ok.stdout, /content-type: application\/pem-certificate-chain/i);
    assert.match(ok.stdout, new RegExp(`x-dmsc-spiffe-id: spiffe://${TD}/tenant/acme/agent/billing`, 'i'));
    assert.match(ok.stdout, /x-dmsc-not-after: \d{4}-/i);
    const chain = await readFile(certFile, 'utf8');
    assert.equal(chain.match(/BEGIN CERTIFICATE/g)?.length, 2, 'leaf + intermediate');
    assert.equal(spiffeOf(chain), `spiffe://${TD}/tenant/acme/agent/billing`);
    // The key made by openssl matches the certificate.
    const keyPub = run('openssl', ['pkey', '-in', keyFile, '-pubout']).stdout;
    const certPub = run('openssl', ['x509', '-in', certFile, '-noout', '-pubkey']).stdout;
    assert.equal(certPub, keyPub);
    // It verifies against the tenant bundle.
    const bundleFile = path.join(dir, 'acme-bundle.pem');
    const bundle = await curl(['--cacert', caFile, `${url}/trust-bundle/acme`, '-o', bundleFile]);
    assert.equal(bundle.status, 0, bundle.stderr);
    const verified = run('openssl', ['verify', '-CAfile', bundleFile, certFile]);
    assert.equal(verified.status, 0, verified.stderr + verified.stdout);

    // The certificate authenticates as exactly that agent (here: to /renew, which needs mTLS).
    seen = [];
    const renewCsr = opensslCsr(dir, 'renewed');
    const renewed = await curl(['--cacert', caFile, '--cert', certFile, '--key', keyFile, '--data-binary', `@${renewCsr.csrFile}`, '-H', 'content-type: application/pkcs10', `${url}/renew`, '-w', '\n@@%{http_code}']);
    const renewedAnswer = splitStatus(renewed.stdout);
    assert.equal(renewedAnswer.code, 201, renewedAnswer.body);
    assert.equal(seen[0]?.tenant, 'acme');
    assert.equal(seen[0]?.agent, 'billing');
    assert.equal(spiffeOf(renewedAnswer.body), `spiffe://${TD}/tenant/acme/agent/billing`);
    assert.notEqual(new X509Certificate(renewedAnswer.body).serialNumber, new X509Certificate(chain).serialNumber);

    // Second use of the token.
    const again = await curl(['--cacert', caFile, '-H', `authorization: Bearer ${token}`, '--data-binary', `@${csrFile}`, '-H', 'content-type: application/pkcs10', `${url}/enroll`, '-w', '\n@@%{http_code}']);
    const againAnswer = splitStatus(again.stdout);
    assert.equal(againAnswer.code, 401);
    assert.equal(JSON.parse(againAnswer.body).error.code, 'bad_token');
    assert.match(JSON.parse(againAnswer.body).error.message, /already been used/);
    const uses = await audit.list({ action: 'enroll.token' });
    assert.deepEqual(uses.slice(-2).map((r) => [r.decision, r.reason]), [['allow', 'valid'], ['deny', 'used']]);
  });

  it('accepts base64 DER and raw DER CSRs, refuses missing/unknown tokens (401), oversize bodies (413), wrong methods (405)', async () => {
    const { csrFile } = opensslCsr(dir, 'der');
    const derCsr = run('openssl', ['req', '-in', csrFile, '-outform', 'DER']);
    const derBytes = spawnSync('openssl', ['req', '-in', csrFile, '-outform', 'DER']).stdout;
    assert.equal(derCsr.status, 0);
    const post = (headers: Record<string, string>, body: string | Buffer) =>
      fetchInsecure(`${url}/enroll`, { method: 'POST', headers, body });

    const t1 = await bootstrap.create('acme', 'b64', 600_000);
    const b64 = await post({ authorization: `Bearer ${t1.token}`, 'content-type': 'application/pkcs10' }, derBytes.toString('base64'));
    assert.equal(b64.status, 201, b64.body);
    assert.equal(spiffeOf(b64.body), `spiffe://${TD}/tenant/acme/agent/b64`);
    const t2 = await bootstrap.create('acme', 'raw', 600_000);
    const raw = await post({ authorization: `Bearer ${t2.token}`, 'content-type': 'application/pkcs10' }, derBytes);
    assert.equal(raw.status, 201, raw.body);

    const missing = await post({ 'content-type': 'application/pkcs10' }, derBytes);
    assert.equal(missing.status, 401);
    assert.equal(JSON.parse(missing.body).error.code, 'unauthorized');
    const unknown = await post({ authorization: `Bearer dmsc_bt_${randomBytes(32).toString('base64url')}`, 'content-type': 'application/pkcs10' }, derBytes);
    assert.equal(unknown.status, 401);
    assert.match(JSON.parse(unknown.body).error.message, /not known/);

    const t3 = await bootstrap.create('acme', 'big', 600_000);
    const big = await post({ authorization: `Bearer ${t3.token}`, 'content-type': 'application/pkcs10' }, Buffer.alloc(MAX_ENDPOINT_BODY_BYTES + 1, 0x41));
    assert.equal(big.status, 413);
    assert.equal((await bootstrap.list('acme')).find((t) => t.agent === 'big')!.status, 'unused', 'a refused body does not burn the token');

    const get = await fetchInsecure(`${url}/enroll`, { method: 'GET' });
    assert.equal(get.status, 405);
    const renewAnon = await fetchInsecure(`${url}/renew`, { method: 'POST', headers: { 'content-type': 'application/pkcs10' }, body: derBytes });
    assert.equal(renewAnon.status, 401);
    assert.equal((await fetchInsecure(`${url}/elsewhere`, { method: 'GET' })).body, 'not an identity path');
  });

  it('publishes trust bundles and CRLs; unknown tenants are 404', async () => {
    const root = await fetchInsecure(`${url}/trust-bundle`, { method: 'GET' });
    assert.equal(root.status, 200);
    assert.equal(root.headers['content-type'], 'application/pem-certificate-chain');
    assert.equal(root.body, pki.rootBundle());
    const tenant = await fetchInsecure(`${url}/trust-bundle/acme`, { method: 'GET' });
    assert.equal(tenant.status, 200);
    assert.equal(tenant.body.match(/BEGIN CERTIFICATE/g)?.length, 2);
    assert.equal((await fetchInsecure(`${url}/trust-bundle/nobody`, { method: 'GET' })).status, 404);
    assert.equal((await fetchInsecure(`${url}/trust-bundle/NOT_A_NAME`, { method: 'GET' })).status, 404);
    assert.equal((await fetchInsecure(`${url}/crl/nobody.crl`, { method: 'GET' })).status, 404);

    const crl = await fetchInsecure(`${url}/crl/acme.crl`, { method: 'GET' });
    assert.equal(crl.status, 200);
    assert.equal(crl.headers['content-type'], 'application/pkix-crl');
    assert.match(crlText(crl.raw), /Certificate Revocation List/);
  });

  it('dmsc cert enroll / renew (library calls): key made locally, atomic versioned files, renewal over mTLS, revocation in the CRL', async () => {
    const out = path.join(dir, 'creds');
    const { token } = await bootstrap.create('acme', 'worker', 600_000);
    const first = await enroll({ token, gateway: url, out, ca: pki.rootBundle() });
    assert.equal(first.spiffeId, `spiffe://${TD}/tenant/acme/agent/worker`);
    const key = await readFile(path.join(out, 'key.pem'), 'utf8');
    const cert = await readFile(path.join(out, 'cert.pem'), 'utf8');
    assert.equal((await stat(await realpath(path.join(out, 'key.pem')))).mode & 0o777, 0o600);
    assert.equal(cert.match(/BEGIN CERTIFICATE/g)?.length, 2);
    assert.ok((await readFile(path.join(out, 'ca.pem'), 'utf8')).includes(pki.rootBundle().trim()));
    assert.ok((await lstat(path.join(out, 'current'))).isSymbolicLink());
    assert.equal(await readlink(path.join(out, 'cert.pem')), path.join('current', 'cert.pem'));
    assert.equal(new X509Certificate(cert).checkPrivateKey((await import('node:crypto')).createPrivateKey(key)), true);
    const firstVersion = await realpath(path.join(out, 'current'));

    const second = await renew({ dir: out, gateway: url });
    assert.notEqual(second.serial, first.serial);
    assert.equal(second.spiffeId, first.spiffeId);
    const secondVersion = await realpath(path.join(out, 'current'));
    assert.notEqual(secondVersion, firstVersion);
    const key2 = await readFile(path.join(secondVersion, 'key.pem'), 'utf8');
    const cert2 = await readFile(path.join(secondVersion, 'cert.pem'), 'utf8');
    assert.notEqual(key2, key, 'a new key on renewal');
    assert.equal(new X509Certificate(cert2).checkPrivateKey((await import('node:crypto')).createPrivateKey(key2)), true);
    // The previous version stays readable for a reader that resolved it before the swap.
    assert.equal(await readFile(path.join(firstVersion, 'cert.pem'), 'utf8'), cert);

    // Half-life: a watcher renews at once when the half-life has passed, then waits for the next.
    const lines: string[] = [];
    const stop = new AbortController();
    const watching = watchRenewals({ dir: out, gateway: url, log: (line) => { lines.push(line); if (line.startsWith('next renewal') && lines.some((l) => l.startsWith('renewed'))) stop.abort(); }, now: () => halfLife(cert2).getTime() + 1 }, stop.signal);
    await watching;
    assert.ok(lines.some((line) => line.startsWith('renewed: serial')), lines.join('\n'));
    const third = await realpath(path.join(out, 'current'));
    assert.notEqual(third, secondVersion);

    // Revocation shows in the CRL; the revoked certificate can no longer renew.
    const current = await readFile(path.join(out, 'cert.pem'), 'utf8');
    const serial = new X509Certificate(current).serialNumber.toLowerCase();
    await pki.revoke(serial, 'keyCompromise', 'test');
    const crl = await fetchInsecure(`${url}/crl/acme.crl`, { method: 'GET' });
    assert.match(crlText(crl.raw).toLowerCase(), new RegExp(`serial number: ${serial}`));
    await assert.rejects(renew({ dir: out, gateway: url }), /renewal failed: HTTP 401/);
  });
});

/** GET/POST over TLS without verifying the server (tests of answers, not of trust). */
function fetchInsecure(
  target: string,
  init: { method: string; headers?: Record<string, string>; body?: string | Buffer },
): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: string; raw: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = https.request(target, { method: init.method, headers: init.headers, rejectUnauthorized: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => {
        const raw = Buffer.concat(chunks);
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: raw.toString('utf8'), raw });
      });
    });
    req.on('error', reject);
    req.end(init.body);
  });
}

// ---- the whole gateway: Admin API, CLI, agent listener ------------------------------------------

describe('enrollment through the gateway', () => {
  let gw: TestGateway;
  let upstream: Upstream;
  let dir: string;
  let caFile: string;
  const cli = async (args: string[]) => {
    const out: string[] = [];
    const err: string[] = [];
    const code = await main(args, { out: (l) => out.push(l), err: (l) => err.push(l), env: { DMSC_ADMIN_URL: gw.adminUrl, DMSC_ADMIN_TOKEN: TEST_ADMIN_TOKEN } });
    return { code, stdout: out.join('\n'), stderr: err.join('\n') };
  };

  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'dmsc-enroll-gw-'));
    upstream = await startUpstream('agent');
    gw = await startTestGateway({ listeners: { tls: { mtls: { enabled: true } } } });
    caFile = path.join(dir, 'ca.crt');
    await writeFile(caFile, gw.caCert);
    assert.equal((await gw.admin('POST', '/admin/v1/tenants', { name: 'acme' })).status, 201);
    for (const name of ['billing', 'worker']) {
      const created = await gw.admin('POST', '/admin/v1/tenants/acme/agents', { name, endpoints: [upstream.url] });
      assert.equal(created.status, 201, JSON.stringify(created.body));
    }
  });
  after(async () => {
    await gw?.close();
    await upstream?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('creates tokens only for registered agents, through the Admin API and the CLI', async () => {
    const api = await gw.admin('POST', '/admin/v1/tenants/acme/agents/billing/bootstrap-tokens', { ttlMs: 600_000 });
    assert.equal(api.status, 201, JSON.stringify(api.body));
    assert.match(api.body.token, /^dmsc_bt_/);
    assert.deepEqual([api.body.tenant, api.body.agent], ['acme', 'billing']);
    assert.equal((await gw.admin('POST', '/admin/v1/tenants/acme/agents/ghost/bootstrap-tokens', {})).status, 404);
    assert.equal((await gw.admin('POST', '/admin/v1/tenants/acme/agents/billing/bootstrap-tokens', { ttlMs: 1000 })).status, 400);

    const created = await cli(['token', 'create', '--tenant', 'acme', '--agent', 'billing', '--ttl', '10m']);
    assert.equal(created.code, 0, created.stderr);
    assert.match(created.stdout, /^dmsc_bt_[A-Za-z0-9_-]+$/);
    assert.match(created.stderr, /single use/);
  });

  it('enrolls with openssl + curl; the certificate reaches exactly that agent; the token is single-use (401, audited)', async () => {
    const token = (await gw.admin('POST', '/admin/v1/tenants/acme/agents/billing/bootstrap-tokens', {})).body.token as string;
    const { keyFile, csrFile } = opensslCsr(dir);
    const certFile = path.join(dir, 'agent.crt');
    const enrolled = await curl(['--cacert', caFile, '-H', `authorization: Bearer ${token}`, '--data-binary', `@${csrFile}`, '-H', 'content-type: application/pkcs10', `${gw.tlsUrl}/enroll`, '-o', certFile, '-w', '%{http_code}']);
    assert.equal(enrolled.stdout, '201', enrolled.stderr);
    const chain = await readFile(certFile, 'utf8');
    assert.match(spiffeOf(chain) ?? '', /^spiffe:\/\/[^/]+\/tenant\/acme\/agent\/billing$/);

    const before = upstream.seen.length;
    const called = await curl(['--cacert', caFile, '--cert', certFile, '--key', keyFile, `${gw.tlsUrl}/agents/acme/billing/hello`, '-w', '\n@@%{http_code}']);
    assert.equal(splitStatus(called.stdout).code, 200, called.stdout + called.stderr);
    assert.equal(upstream.seen.length, before + 1, 'the agent saw the request');
    assert.match(upstream.seen.at(-1)!.url, /\/hello$/);

    const again = await curl(['--cacert', caFile, '-H', `authorization: Bearer ${token}`, '--data-binary', `@${csrFile}`, '-H', 'content-type: application/pkcs10', `${gw.tlsUrl}/enroll`, '-w', '\n@@%{http_code}']);
    const answer = splitStatus(again.stdout);
    assert.equal(answer.code, 401);
    assert.equal(JSON.parse(answer.body).error.code, 'bad_token');
    const audit = await gw.admin('GET', '/admin/v1/audit?tenant=acme&action=enroll.token');
    assert.equal(audit.status, 200);
    assert.deepEqual(audit.body.records.slice(-2).map((r: { decision: string; reason: string }) => [r.decision, r.reason]), [['allow', 'valid'], ['deny', 'used']]);
    const listed = await cli(['audit', 'list', '--tenant', 'acme', '--action', 'enroll.token']);
    assert.equal(listed.code, 0, listed.stderr);
    assert.match(listed.stdout, /enroll\.token.*deny\s+used/);
  });

  it('dmsc cert enroll then dmsc cert renew write working files; dmsc cert revoke shows in the CRL', async () => {
    const token = (await cli(['token', 'create', '--tenant', 'acme', '--agent', 'worker'])).stdout.trim();
    const out = path.join(dir, 'worker');
    const enrolled = await cli(['cert', 'enroll', '--token', token, '--gateway', gw.tlsUrl, '--out', out, '--ca', caFile]);
    assert.equal(enrolled.code, 0, enrolled.stderr);
    assert.match(enrolled.stdout, /tenant\/acme\/agent\/worker/);
    const reach = async () =>
      splitStatus((await curl(['--cacert', path.join(out, 'ca.pem'), '--cert', path.join(out, 'cert.pem'), '--key', path.join(out, 'key.pem'), `${gw.tlsUrl}/agents/acme/worker/x`, '-w', '\n@@%{http_code}'])).stdout).code;
    assert.equal(await reach(), 200);

    const renewed = await cli(['cert', 'renew', '--dir', out, '--gateway', gw.tlsUrl]);
    assert.equal(renewed.code, 0, renewed.stderr);
    assert.equal(await reach(), 200);

    const serial = new X509Certificate(await readFile(path.join(out, 'cert.pem'), 'utf8')).serialNumber.toLowerCase();
    const listed = await cli(['cert', 'list', '--tenant', 'acme', '--agent', 'worker']);
    assert.equal(listed.code, 0, listed.stderr);
    assert.ok(listed.stdout.includes(serial), listed.stdout);

    const revoked = await cli(['cert', 'revoke', '--serial', serial, '--reason', 'keyCompromise']);
    assert.equal(revoked.code, 0, revoked.stderr);
    const crlFile = path.join(dir, 'acme.crl');
    const fetched = await curl(['--cacert', caFile, `${gw.tlsUrl}/crl/acme.crl`, '-o', crlFile]);
    assert.equal(fetched.status, 0, fetched.stderr);
    assert.match(crlText(await readFile(crlFile)).toLowerCase(), new RegExp(`serial number: ${serial}`));
    assert.notEqual(await reach(), 200, 'a revoked certificate no longer gets through');

    const byAgent = await cli(['cert', 'revoke', '--tenant', 'acme', '--agent', 'worker', '--reason', 'decommissioned', '--json']);
    assert.equal(byAgent.code, 0, byAgent.stderr);
    assert.ok(!JSON.parse(byAgent.stdout).revoked.includes(serial), 'already revoked');
    const revokedList = await gw.admin('GET', '/admin/v1/tenants/acme/certificates?agent=worker&revoked=false');
    assert.deepEqual(revokedList.body.certificates, []);
  });
});
