import 'reflect-metadata';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { X509Certificate, randomBytes, webcrypto } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import * as x509 from '@peculiar/x509';
import { pino } from 'pino';
import { configSchema, type IdentityConfig } from '../src/config/schema.js';
import { Keyring } from '../src/identity/keyring.js';
import { createPki, type BuiltinPki } from '../src/identity/pki.js';
import { PkiError } from '../src/identity/types.js';
import { openStore, type AuditRecord, type DurableStore } from '../src/store/index.js';

const logger = pino({ level: 'silent' });
const TD = 'dmsc.test';
const identityDefaults: IdentityConfig = configSchema.parse({}).identity;

type CryptoKeyPair = webcrypto.CryptoKeyPair;
type CryptoKey = webcrypto.CryptoKey;

function openssl(args: string[], input?: string | Buffer): { status: number; stdout: string; stderr: string } {
  const result = spawnSync('openssl', args, { input, encoding: 'utf8' });
  return { status: result.status ?? -1, stdout: result.stdout, stderr: result.stderr };
}

function der(pem: string): Uint8Array {
  return new Uint8Array(x509.PemConverter.decode(pem)[0]!);
}

/** A mutable clock for the PKI under test. */
class Clock {
  offset = 0;
  now = () => Date.now() + this.offset;
}

interface Harness {
  store: DurableStore;
  pki: BuiltinPki;
  audits: Array<Omit<AuditRecord, 'seq' | 'time'>>;
  clock: Clock;
  keyring: Keyring;
}

async function open(dir: string, masterKey: Buffer, config: Partial<IdentityConfig> = {}): Promise<Harness> {
  const store = await openStore(dir);
  const audits: Harness['audits'] = [];
  const clock = new Clock();
  const keyring = Keyring.fromKey(masterKey);
  try {
    const pki = await createPki({
      store,
      keyring,
      trustDomain: TD,
      config: { ...identityDefaults, ...config },
      logger,
      audit: (event) => audits.push(event),
      now: clock.now,
    });
    return { store, pki, audits, clock, keyring };
  } catch (error) {
    await store.close();
    throw error;
  }
}

async function ecCsr(cn = 'x', curve = 'P-256'): Promise<{ csrPem: string; keys: CryptoKeyPair }> {
  const alg = { name: 'ECDSA', namedCurve: curve, hash: curve === 'P-384' ? 'SHA-384' : 'SHA-256' };
  const keys = (await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify'])) as CryptoKeyPair;
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({ name: `CN=${cn}`, keys, signingAlgorithm: alg });
  return { csrPem: csr.toString('pem'), keys };
}

/** Opens a CA's private key from the store, as only a test (holding the master key) can. */
async function caKey(h: Harness, caId: string): Promise<CryptoKey> {
  const record = (await h.store.listCas()).find((ca) => ca.id === caId)!;
  const pem = h.keyring.open('ca-key', caId, record.sealedKey).toString('utf8');
  return webcrypto.subtle.importKey('pkcs8', x509.PemConverter.decode(pem)[0]!, { name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign']);
}

async function forgeLeaf(
  issuer: { certPem: string; key: CryptoKey } | 'self',
  sans: x509.JsonGeneralName[],
  issuerName?: string,
): Promise<Uint8Array> {
  const alg = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };
  const keys = (await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify'])) as CryptoKeyPair;
  const now = Date.now();
  const extensions = [
    new x509.BasicConstraintsExtension(false, undefined, true),
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
    new x509.SubjectAlternativeNameExtension(sans),
  ];
  if (issuer === 'self') {
    const cert = await x509.X509CertificateGenerator.createSelfSigned({
      name: issuerName ?? 'CN=selfie',
      keys,
      notBefore: new Date(now - 60_000),
      notAfter: new Date(now + 3600_000),
      signingAlgorithm: alg,
      extensions,
    });
    return new Uint8Array(cert.rawData);
  }
  const ca = new x509.X509Certificate(issuer.certPem);
  const cert = await x509.X509CertificateGenerator.create({
    subject: 'CN=forged',
    issuer: ca.subjectName,
    publicKey: keys.publicKey,
    signingKey: issuer.key,
    notBefore: new Date(now - 60_000),
    notAfter: new Date(now + 3600_000),
    signingAlgorithm: alg,
    extensions: [...extensions, await x509.AuthorityKeyIdentifierExtension.create(ca)],
  });
  return new Uint8Array(cert.rawData);
}

describe('built-in PKI', () => {
  let dir: string;
  let tmp: string;
  const masterKey = randomBytes(32);
  let h: Harness;

  const file = async (name: string, contents: string | Uint8Array) => {
    const p = path.join(tmp, name);
    await writeFile(p, contents);
    return p;
  };

  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'dmsc-pki-'));
    tmp = await mkdtemp(path.join(os.tmpdir(), 'dmsc-pki-files-'));
    h = await open(dir, masterKey);
    await Promise.all([h.pki.ensureTenant('acme'), h.pki.ensureTenant('acme'), h.pki.ensureTenant('globex'), h.pki.ensureTenant('acme')]);
  });

  after(async () => {
    await h.store.close();
    await rm(dir, { recursive: true, force: true });
    await rm(tmp, { recursive: true, force: true });
  });

  it('creates one root and one intermediate per tenant, even under concurrent ensureTenant', async () => {
    const cas = await h.store.listCas();
    assert.equal(cas.filter((ca) => ca.kind === 'root').length, 1);
    assert.equal(cas.filter((ca) => ca.tenant === 'acme').length, 1);
    assert.equal(cas.filter((ca) => ca.tenant === 'globex').length, 1);
    const root = new X509Certificate(cas.find((ca) => ca.kind === 'root')!.certPem);
    const acme = new X509Certificate(cas.find((ca) => ca.tenant === 'acme')!.certPem);
    assert.ok(root.ca && acme.ca);
    assert.ok(acme.checkIssued(root));
    assert.ok(acme.verify(root.publicKey));
    assert.match(acme.subject, /CN=DMSC tenant acme CA/);
    const rootX = new x509.X509Certificate(root.raw);
    assert.equal(rootX.getExtension(x509.BasicConstraintsExtension)?.critical, true);
    assert.ok(rootX.getExtension(x509.SubjectKeyIdentifierExtension));
    assert.equal(new x509.X509Certificate(acme.raw).getExtension(x509.BasicConstraintsExtension)?.pathLength, 0);
    assert.equal(h.pki.tenantBundle('acme').match(/BEGIN CERTIFICATE/g)?.length, 2);
    assert.equal(h.pki.clientCaBundle().match(/BEGIN CERTIFICATE/g)?.length, 3);
  });

  it('stores CA keys sealed, never as PEM', async () => {
    for (const ca of await h.store.listCas()) {
      assert.doesNotMatch(ca.sealedKey, /PRIVATE KEY/);
      assert.doesNotMatch(Buffer.from(ca.sealedKey, 'base64').toString('latin1'), /PRIVATE KEY/);
    }
  });

  it('issues an X.509-SVID from an openssl CSR that openssl and node verify', async () => {
    const keyFile = path.join(tmp, 'agent.key');
    const csrFile = path.join(tmp, 'agent.csr');
    execFileSync('openssl', ['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', keyFile, '-out', csrFile, '-subj', '/CN=x'], {
      stdio: 'pipe',
    });
    const issued = await h.pki.issueFromCsr('acme', 'billing', await readFile(csrFile, 'utf8'), { requestId: 'r1' });
    assert.equal(issued.spiffeId, `spiffe://${TD}/tenant/acme/agent/billing`);

    const leaf = new X509Certificate(issued.certPem);
    const cas = await h.store.listCas();
    const root = new X509Certificate(cas.find((ca) => ca.kind === 'root')!.certPem);
    const inter = new X509Certificate(cas.find((ca) => ca.tenant === 'acme')!.certPem);
    assert.ok(leaf.checkIssued(inter) && leaf.verify(inter.publicKey));
    assert.equal(leaf.subjectAltName, `URI:spiffe://${TD}/tenant/acme/agent/billing`);
    assert.equal(leaf.ca, false);
    assert.deepEqual(leaf.keyUsage?.sort(), ['1.3.6.1.5.5.7.3.1', '1.3.6.1.5.5.7.3.2']);
    assert.match(leaf.subject, /CN=billing/);
    assert.equal(leaf.serialNumber.toLowerCase(), issued.serial);
    assert.match(issued.serial, /^[0-9a-f]{32}$/);
    // The certificate carries the CSR's key, nothing else from it.
    assert.equal(leaf.checkPrivateKey((await import('node:crypto')).createPrivateKey(await readFile(keyFile))), true);
    const validity = Date.parse(leaf.validTo) - Date.parse(leaf.validFrom);
    assert.ok(Math.abs(validity - (identityDefaults.certTtlMs + identityDefaults.clockSkewMs)) < 2000, `validity ${validity}`);

    const parsed = new x509.X509Certificate(issued.certPem);
    assert.equal(parsed.getExtension(x509.BasicConstraintsExtension)?.critical, true);
    assert.equal(parsed.getExtension(x509.KeyUsagesExtension)?.critical, true);
    assert.equal(parsed.getExtension(x509.KeyUsagesExtension)?.usages, x509.KeyUsageFlags.digitalSignature);
    assert.equal(
      parsed.getExtension(x509.AuthorityKeyIdentifierExtension)?.keyId,
      new x509.X509Certificate(inter.raw).getExtension(x509.SubjectKeyIdentifierExtension)?.keyId,
    );
    assert.ok(parsed.getExtension(x509.SubjectKeyIdentifierExtension));

    const rootFile = await file('root.pem', h.pki.rootBundle());
    const interFile = await file('acme-int.pem', inter.toString());
    const leafFile = await file('leaf.pem', issued.certPem);
    const verified = openssl(['verify', '-CAfile', rootFile, '-untrusted', interFile, '-purpose', 'sslclient', leafFile]);
    assert.equal(verified.status, 0, verified.stderr + verified.stdout);
    // chainPem = leaf + intermediate: what a TLS client presents.
    const chainFile = await file('chain.pem', issued.chainPem);
    const viaChain = openssl(['verify', '-CAfile', rootFile, '-untrusted', chainFile, leafFile]);
    assert.equal(viaChain.status, 0, viaChain.stderr);

    const record = await h.store.getIssuedCert(issued.serial);
    assert.equal(record?.tenant, 'acme');
    assert.equal(record?.kind, 'agent');
    const audit = h.audits.find((a) => a.action === 'cert.issue' && a.target === issued.serial);
    assert.deepEqual(audit, { tenant: 'acme', actor: issued.spiffeId, action: 'cert.issue', target: issued.serial, decision: 'info', requestId: 'r1' });

    const auth = h.pki.authenticateCertificate([der(issued.certPem), der(inter.toString())]);
    assert.deepEqual(auth, {
      ok: true,
      identity: { tenant: 'acme', agent: 'billing', spiffeId: issued.spiffeId, via: 'mtls', certSerial: issued.serial },
    });
    // PEM bytes work too.
    assert.equal(h.pki.authenticateCertificate([Buffer.from(issued.certPem)]).ok, true);
  });

  it('accepts RSA >= 2048 and P-384 keys; refuses bad signatures, weak and unsupported keys', async () => {
    const rsaCsr = openssl(['req', '-new', '-newkey', 'rsa:2048', '-nodes', '-keyout', path.join(tmp, 'rsa.key'), '-subj', '/CN=r']);
    assert.equal(rsaCsr.status, 0, rsaCsr.stderr);
    const rsa = await h.pki.issueFromCsr('acme', 'rsa-agent', rsaCsr.stdout);
    assert.equal(
      new x509.X509Certificate(rsa.certPem).getExtension(x509.KeyUsagesExtension)?.usages,
      x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment,
    );
    const p384 = await h.pki.issueFromCsr('acme', 'p384', der((await ecCsr('y', 'P-384')).csrPem));
    assert.equal(h.pki.authenticateCertificate([der(p384.certPem)]).ok, true);

    const expectBadCsr = async (csr: string | Uint8Array, pattern: RegExp) => {
      await assert.rejects(h.pki.issueFromCsr('acme', 'z', csr), (error: unknown) => {
        assert.ok(error instanceof PkiError);
        assert.equal(error.code, 'bad_csr');
        assert.match(error.message, pattern);
        return true;
      });
    };
    const weak = openssl(['req', '-new', '-newkey', 'rsa:1024', '-nodes', '-keyout', path.join(tmp, 'weak.key'), '-subj', '/CN=w']);
    assert.equal(weak.status, 0, weak.stderr);
    await expectBadCsr(weak.stdout, /at least 2048/);
    const ed = openssl(['req', '-new', '-newkey', 'ed25519', '-nodes', '-keyout', path.join(tmp, 'ed.key'), '-subj', '/CN=e']);
    assert.equal(ed.status, 0, ed.stderr);
    await expectBadCsr(ed.stdout, /ed25519 keys are not accepted/);
    await expectBadCsr('not a csr', /PKCS#10/);

    // Tamper with the signed subject: the signature no longer verifies.
    const { csrPem } = await ecCsr('x');
    const bytes = Buffer.from(der(csrPem));
    const at = bytes.indexOf(Buffer.from([0x01, 0x78])); // length 1, "x"
    assert.ok(at > 0);
    bytes[at + 1] = 0x79;
    await expectBadCsr(bytes, /signature does not verify/);

    await assert.rejects(h.pki.issueFromCsr('nobody', 'a', csrPem), { code: 'unknown_tenant' });
    await assert.rejects(h.pki.issueFromCsr('acme', 'Bad_Name', csrPem), { code: 'invalid' });
  });

  it('refuses certificates from another tenant, unknown CAs and bad SPIFFE IDs', async () => {
    const cas = await h.store.listCas();
    const globex = cas.find((ca) => ca.tenant === 'globex' && ca.status === 'active')!;
    const acme = cas.find((ca) => ca.tenant === 'acme' && ca.status === 'active')!;
    const globexSigner = { certPem: globex.certPem, key: await caKey(h, globex.id) };
    const acmeSigner = { certPem: acme.certPem, key: await caKey(h, acme.id) };

    const crossTenant = await forgeLeaf(globexSigner, [{ type: 'url', value: `spiffe://${TD}/tenant/acme/agent/billing` }]);
    const r1 = h.pki.authenticateCertificate([crossTenant]);
    assert.equal(r1.ok, false);
    assert.equal(!r1.ok && r1.reason, 'wrong_tenant');

    const self = await forgeLeaf('self', [{ type: 'url', value: `spiffe://${TD}/tenant/acme/agent/billing` }]);
    const r2 = h.pki.authenticateCertificate([self]);
    assert.equal(!r2.ok && r2.reason, 'unknown_ca');

    // Same issuer name as acme's CA, different key: the signature check catches it.
    const impostorCa = (await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify'])) as CryptoKeyPair;
    const impostor = await forgeLeaf({ certPem: acme.certPem, key: impostorCa.privateKey }, [
      { type: 'url', value: `spiffe://${TD}/tenant/acme/agent/billing` },
    ]);
    const r3 = h.pki.authenticateCertificate([impostor]);
    assert.equal(!r3.ok && r3.reason, 'unknown_ca');

    for (const sans of [
      [{ type: 'url', value: `spiffe://other.domain/tenant/acme/agent/billing` }],
      [{ type: 'url', value: `spiffe://${TD}/tenant/acme/billing` }],
      [
        { type: 'url', value: `spiffe://${TD}/tenant/acme/agent/a` },
        { type: 'url', value: `spiffe://${TD}/tenant/acme/agent/b` },
      ],
      [{ type: 'dns', value: 'billing.acme' }],
      // A SAN crafted to look like two entries in node's subjectAltName text.
      [{ type: 'url', value: `spiffe://${TD}/tenant/acme/agent/a, URI:spiffe://${TD}/tenant/acme/agent/b` }],
    ] as x509.JsonGeneralName[][]) {
      const r = h.pki.authenticateCertificate([await forgeLeaf(acmeSigner, sans)]);
      assert.equal(!r.ok && r.reason, 'bad_spiffe_id', JSON.stringify(sans));
    }
    // The acme CA itself signing a proper identity is fine (sanity check of the forging helper).
    const good = h.pki.authenticateCertificate([await forgeLeaf(acmeSigner, [{ type: 'url', value: `spiffe://${TD}/tenant/acme/agent/ok` }])]);
    assert.equal(good.ok, true);
    assert.equal(h.pki.authenticateCertificate([]).ok, false);
    const garbage = h.pki.authenticateCertificate([new Uint8Array([1, 2, 3])]);
    assert.equal(!garbage.ok && garbage.reason, 'unknown_ca');
  });

  it('applies validity with clock skew (expired, not yet valid)', async () => {
    const skew = identityDefaults.clockSkewMs;
    const { csrPem } = await ecCsr();
    const issued = await h.pki.issueFromCsr('acme', 'short', csrPem, { ttlMs: 60_000 });
    const leaf = der(issued.certPem);
    assert.equal(h.pki.authenticateCertificate([leaf]).ok, true);
    h.clock.offset = 60_000 + skew - 5_000; // past notAfter, within the skew
    assert.equal(h.pki.authenticateCertificate([leaf]).ok, true);
    h.clock.offset = 60_000 + skew + 5_000;
    const expired = h.pki.authenticateCertificate([leaf]);
    assert.equal(!expired.ok && expired.reason, 'expired');
    // notBefore is now - skew; a clock running behind by more than 2x skew sees it as not yet valid.
    h.clock.offset = -(2 * skew + 5_000);
    const early = h.pki.authenticateCertificate([leaf]);
    assert.equal(!early.ok && early.reason, 'not_yet_valid');
    h.clock.offset = 0;
    assert.equal(h.pki.authenticateCertificate([leaf]).ok, true);
  });

  it('revokes by serial and by agent: refused at once, listeners told, CRL regenerated', async () => {
    const seen: string[][] = [];
    h.pki.onRevoked((serials) => seen.push([...serials]));
    const a = await h.pki.issueFromCsr('acme', 'victim', (await ecCsr()).csrPem);
    const b = await h.pki.issueFromCsr('acme', 'victim', (await ecCsr()).csrPem);
    const c = await h.pki.issueFromCsr('acme', 'victim', (await ecCsr()).csrPem);
    assert.equal(h.pki.authenticateCertificate([der(a.certPem)]).ok, true); // now cached

    const record = await h.pki.revoke(a.serial.toUpperCase(), 'keyCompromise', 'admin-token');
    assert.equal(record.serial, a.serial);
    assert.ok(h.pki.isRevoked(a.serial));
    const refused = h.pki.authenticateCertificate([der(a.certPem)]);
    assert.equal(!refused.ok && refused.reason, 'revoked');
    assert.deepEqual(seen, [[a.serial]]);
    assert.ok(h.audits.some((e) => e.action === 'cert.revoke' && e.target === a.serial && e.actor === 'admin-token' && e.reason === 'keyCompromise'));

    const crl = await h.pki.crl('acme');
    const text = openssl(['crl', '-inform', 'DER', '-noout', '-text'], Buffer.from(crl));
    assert.equal(text.status, 0, text.stderr);
    assert.match(text.stdout, new RegExp(a.serial.toUpperCase()));
    assert.match(text.stdout, /Key Compromise/);
    assert.match(text.stdout, /X509v3 CRL Number/);
    assert.match(text.stdout, /Next Update/);
    assert.match(text.stdout, /Issuer: .*DMSC tenant acme CA/);

    // openssl with CRL checking refuses the revoked certificate and accepts a live one.
    const cas = await h.store.listCas();
    const inter = cas.find((ca) => ca.tenant === 'acme' && ca.status === 'active')!.certPem;
    const crlPem = x509.PemConverter.encode(crl.slice().buffer, 'X509 CRL');
    const trust = await file('trust-crl.pem', h.pki.rootBundle() + inter);
    const crlFile = await file('acme.crl.pem', crlPem);
    const revokedCheck = openssl(['verify', '-crl_check', '-CAfile', trust, '-CRLfile', crlFile, await file('a.pem', a.certPem)]);
    assert.notEqual(revokedCheck.status, 0);
    assert.match(revokedCheck.stderr + revokedCheck.stdout, /revoked/);
    const liveCheck = openssl(['verify', '-crl_check', '-CAfile', trust, '-CRLfile', crlFile, await file('b.pem', b.certPem)]);
    assert.equal(liveCheck.status, 0, liveCheck.stderr);
    const parsedCrl = new x509.X509Crl(crl);
    assert.ok(await parsedCrl.verify({ publicKey: new x509.X509Certificate(inter) }));

    const serials = await h.pki.revokeAgent('acme', 'victim', 'cessationOfOperation');
    assert.deepEqual(serials.sort(), [b.serial, c.serial].sort());
    assert.deepEqual(seen[1]?.sort(), [b.serial, c.serial].sort());
    assert.equal(new x509.X509Crl(await h.pki.crl('acme')).entries.length >= 3, true);
    const r = h.pki.authenticateCertificate([der(c.certPem)]);
    assert.equal(!r.ok && r.reason, 'revoked');

    await assert.rejects(h.pki.revoke('00ff', 'x'), { code: 'not_found' });
  });

  it('issues server and gateway client certificates', async () => {
    const server = await h.pki.issueServerCertificate(['localhost', 'gw.example'], ['127.0.0.1']);
    const root = await file('root2.pem', h.pki.rootBundle());
    const v = openssl(['verify', '-CAfile', root, '-purpose', 'sslserver', await file('server.pem', server.certPem)]);
    assert.equal(v.status, 0, v.stderr);
    assert.match(new X509Certificate(server.certPem).subjectAltName ?? '', /DNS:localhost, DNS:gw.example, IP Address:127.0.0.1/);
    assert.ok(new X509Certificate(server.certPem).checkPrivateKey((await import('node:crypto')).createPrivateKey(server.keyPem)));

    const client = await h.pki.issueGatewayClientCertificate('globex');
    assert.equal(await h.pki.issueGatewayClientCertificate('globex'), client); // cached until half-life
    const leaf = new X509Certificate(client.certPem);
    assert.equal(leaf.subjectAltName, `URI:spiffe://${TD}/gateway`);
    const trust = await file('globex-chain.pem', client.chainPem);
    const vc = openssl(['verify', '-CAfile', root, '-untrusted', trust, '-purpose', 'sslclient', await file('gwc.pem', client.certPem)]);
    assert.equal(vc.status, 0, vc.stderr);
    const vs = openssl(['verify', '-CAfile', root, '-untrusted', trust, '-purpose', 'sslserver', await file('gwc.pem', client.certPem)]);
    assert.notEqual(vs.status, 0, 'clientAuth only');
    // It is not an agent identity.
    const auth = h.pki.authenticateCertificate([der(client.certPem)]);
    assert.equal(!auth.ok && auth.reason, 'bad_spiffe_id');
  });

  it('rotates a tenant intermediate with overlap', async () => {
    let changed = 0;
    h.pki.onTrustChanged(() => changed++);
    const before = await h.pki.issueFromCsr('globex', 'worker', (await ecCsr()).csrPem);
    const oldCa = (await h.store.listCas()).find((ca) => ca.tenant === 'globex' && ca.status === 'active')!;
    const fresh = await h.pki.rotateIntermediate('globex');
    assert.equal(changed, 1);
    assert.notEqual(fresh.id, oldCa.id);
    const stored = await h.store.listCas();
    assert.equal(stored.find((ca) => ca.id === oldCa.id)?.status, 'retiring');
    assert.equal(stored.find((ca) => ca.id === fresh.id)?.status, 'active');

    const afterCert = await h.pki.issueFromCsr('globex', 'worker', (await ecCsr()).csrPem);
    assert.ok(new X509Certificate(afterCert.certPem).checkIssued(new X509Certificate(fresh.certPem)));
    assert.equal(h.pki.authenticateCertificate([der(before.certPem)]).ok, true);
    assert.equal(h.pki.authenticateCertificate([der(afterCert.certPem)]).ok, true);
    const bundle = h.pki.tenantBundle('globex');
    assert.equal(bundle.match(/BEGIN CERTIFICATE/g)?.length, 3);
    const rootFile = await file('root3.pem', h.pki.rootBundle());
    const untrusted = await file('globex-bundle.pem', bundle);
    for (const cert of [before, afterCert]) {
      const v = openssl(['verify', '-CAfile', rootFile, '-untrusted', untrusted, await file('rot.pem', cert.certPem)]);
      assert.equal(v.status, 0, v.stderr);
    }
    // The CRL comes from the new CA; the retiring CA's CRL is still available.
    const crls = await h.pki.crls('globex');
    assert.equal(crls.length, 2);
    assert.match(new x509.X509Crl(crls[0]!).issuer, /globex/);
    // The gateway's client certificate is re-issued from the new CA.
    const client = await h.pki.issueGatewayClientCertificate('globex');
    assert.ok(new X509Certificate(client.certPem).checkIssued(new X509Certificate(fresh.certPem)));
  });

  it('reopens with the same master key; refuses a different one clearly', async () => {
    const issued = await h.pki.issueFromCsr('acme', 'persist', (await ecCsr()).csrPem);
    await h.pki.revoke(issued.serial, 'superseded');
    const roots = h.pki.rootBundle();
    await h.store.close();

    h = await open(dir, masterKey);
    assert.equal(h.pki.rootBundle(), roots);
    assert.ok(h.pki.isRevoked(issued.serial));
    const r = h.pki.authenticateCertificate([der(issued.certPem)]);
    assert.equal(!r.ok && r.reason, 'revoked');
    const next = await h.pki.issueFromCsr('acme', 'persist', (await ecCsr()).csrPem);
    assert.equal(h.pki.authenticateCertificate([der(next.certPem)]).ok, true);
    assert.equal((await h.store.listCas()).filter((ca) => ca.kind === 'root').length, 1);

    await assert.rejects(open(dir, randomBytes(32)), /master key/);
  });

  it('imports an operator root (SEC1 key) and refuses a non-CA certificate or a mismatched key', async () => {
    const importDir = await mkdtemp(path.join(os.tmpdir(), 'dmsc-pki-import-'));
    try {
      const keyFile = path.join(tmp, 'op-root.key');
      const certFile = path.join(tmp, 'op-root.pem');
      execFileSync('openssl', ['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', keyFile], { stdio: 'pipe' });
      assert.match(await readFile(keyFile, 'utf8'), /BEGIN EC PRIVATE KEY/);
      execFileSync(
        'openssl',
        ['req', '-x509', '-new', '-key', keyFile, '-out', certFile, '-days', '30', '-subj', '/CN=Operator Root/O=Example',
          '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'],
        { stdio: 'pipe' },
      );
      const key = randomBytes(32);
      const imported = await open(importDir, key, { rootCa: { certFile, keyFile } });
      try {
        assert.equal(new X509Certificate(imported.pki.rootBundle()).fingerprint256, new X509Certificate(await readFile(certFile)).fingerprint256);
        await imported.pki.ensureTenant('acme');
        const issued = await imported.pki.issueFromCsr('acme', 'a1', (await ecCsr()).csrPem);
        const v = openssl(['verify', '-CAfile', certFile, '-untrusted', await file('imp-chain.pem', issued.chainPem), await file('imp.pem', issued.certPem)]);
        assert.equal(v.status, 0, v.stderr);
        assert.equal(imported.pki.authenticateCertificate([der(issued.certPem)]).ok, true);
        for (const ca of await imported.store.listCas()) assert.doesNotMatch(ca.sealedKey, /PRIVATE KEY/);
      } finally {
        await imported.store.close();
      }
      // Reopening with the same configuration reuses the imported root.
      const again = await open(importDir, key, { rootCa: { certFile, keyFile } });
      assert.equal((await again.store.listCas()).filter((ca) => ca.kind === 'root').length, 1);
      await again.store.close();

      const leafKey = path.join(tmp, 'leafonly.key');
      const leafCert = path.join(tmp, 'leafonly.pem');
      execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', leafKey, '-out', leafCert, '-days', '1',
        '-subj', '/CN=leaf', '-addext', 'basicConstraints=critical,CA:FALSE'], { stdio: 'pipe' });
      const other = await mkdtemp(path.join(os.tmpdir(), 'dmsc-pki-bad-'));
      try {
        await assert.rejects(open(other, key, { rootCa: { certFile: leafCert, keyFile: leafKey } }), /identity\.rootCa: .*not a CA certificate/);
        await assert.rejects(open(other, key, { rootCa: { certFile, keyFile: leafKey } }), /identity\.rootCa: the key in .* does not match/);
        await assert.rejects(open(other, key, { rootCa: { certFile, keyFile: path.join(tmp, 'missing.key') } }), /identity\.rootCa: cannot read keyFile/);
      } finally {
        await rm(other, { recursive: true, force: true });
      }
    } finally {
      await rm(importDir, { recursive: true, force: true });
    }
  });
});
