// @peculiar/x509 resolves its algorithms through tsyringe, which needs the Reflect metadata API.
import 'reflect-metadata';
import { createHash, createPrivateKey, createPublicKey, type KeyObject, X509Certificate as NodeX509Certificate, webcrypto } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { AsnConvert } from '@peculiar/asn1-schema';
import * as asn1X509 from '@peculiar/asn1-x509';
import { CRLNumber, id_ce_cRLNumber } from '@peculiar/asn1-x509';
import * as x509 from '@peculiar/x509';
import type { Logger } from 'pino';
import { NAME_PATTERN, type IdentityConfig } from '../config/schema.js';
import type { AuditRecord, CaRecord, IdentityStore, IssuedCertKind, IssuedCertRecord } from '../store/types.js';
import type { Keyring } from './keyring.js';
import {
  asnExtension,
  issueAgentLeaf,
  leafExtensions,
  randomSerial,
  signLeaf,
  type LeafParams,
  type SignAlgorithm,
  type SignedLeaf,
  toBuffer,
} from './leaf.js';
import { defaultPoolSize, type PoolCa, SignerPool, SignerUnavailable } from './signer-pool.js';
import { parseAgentSpiffeId, spiffeIdFor } from './spiffe.js';
import { type AuthResult, type IssuedCertificate, type Pki, PkiError } from './types.js';

/**
 * The built-in CA (issue 3): one root per trust domain (generated, or an operator's CA imported
 * from files), one intermediate per tenant, X.509-SVIDs for agents, CRLs, rotation with overlap.
 *
 * CA private keys live in the store sealed by the keyring ('ca-key', context = CA id) and, once
 * opened, only in memory as non-extractable WebCrypto keys. Issuing signs with those cached keys;
 * authenticating a client certificate is synchronous (node:crypto verification) and cached per
 * certificate, with the revocation check done on every call.
 */

type CryptoKey = webcrypto.CryptoKey;
type CryptoKeyPair = webcrypto.CryptoKeyPair;

const DAY_MS = 24 * 3600_000;
const ROOT_TTL_MS = 3650 * DAY_MS;
const DEFAULT_SERVER_CERT_TTL_MS = 30 * DAY_MS;
const CRL_VALIDITY_MS = DAY_MS;
const AUTH_CACHE_MAX = 10_000;
const EC_P256 = { name: 'ECDSA', namedCurve: 'P-256' } as const;

export type AuditSink = (event: Omit<AuditRecord, 'seq' | 'time'>) => void;

export interface PkiOptions {
  store: IdentityStore;
  keyring: Keyring;
  trustDomain: string;
  config: IdentityConfig;
  logger: Logger;
  audit: AuditSink;
  /** Clock (ms since the epoch); for tests. */
  now?: () => number;
  /** Lifetime of gateway serving certificates (default 30 days, never past the root's). */
  serverCertTtlMs?: number;
  /**
   * Worker threads that sign certificates issued from CSRs (default: available parallelism, at
   * most 4); 0 signs on the main thread. Until the workers are up, issuing signs in-process.
   */
  signerThreads?: number;
}

/** The Pki plus what only the gateway's wiring needs. */
export interface BuiltinPki extends Pki {
  /** DER CRLs of every trusted intermediate of the tenant (active first, then retiring). */
  crls(tenant: string): Promise<Uint8Array[]>;
  /** Stops the signing workers (gateway shutdown); issuing afterwards signs in-process. */
  close(): Promise<void>;
}

interface LoadedCa {
  record: CaRecord;
  cert: x509.X509Certificate;
  /** Private key, non-extractable; undefined for retired CAs (kept only to recognise their certificates). */
  signingKey?: CryptoKey;
  signingAlgorithm: SignAlgorithm;
  /** For synchronous issuer and signature checks of presented certificates. */
  publicKey: KeyObject;
  nodeCert: NodeX509Certificate;
  /** Subject key identifier, lowercase hex. */
  ski: string;
  notAfterMs: number;
  /** Pre-encoded parts of what this CA signs (issuer name, signature algorithm, AKI). */
  asnSubject: asn1X509.Name;
  asnSignatureAlgorithm: asn1X509.AlgorithmIdentifier;
  asnAki: asn1X509.Extension;
  /** What the signing workers need of this CA (undefined without a signing key). */
  poolCa?: PoolCa;
}

const algorithmProvider = new x509.AlgorithmProvider();

/**
 * The URIs of node's `subjectAltName` text ("DNS:a, URI:b"); values with separators or quotes are
 * JSON-quoted by node, so they are decoded rather than split.
 */
function uriSans(text: string | undefined): string[] {
  if (!text) return [];
  const out: string[] = [];
  const pattern = /(?:^|, )([A-Za-z][A-Za-z ]*):("(?:[^"\\]|\\.)*"|[^,]*)/g;
  for (const match of text.matchAll(pattern)) {
    if (match[1] !== 'URI') continue;
    const value = match[2]!;
    try {
      out.push(value.startsWith('"') ? (JSON.parse(value) as string) : value);
    } catch {
      out.push(value);
    }
  }
  return out;
}

type CachedAuth =
  | { ok: true; tenant: string; agent: string; spiffeId: string; serial: string; caId: string; notBeforeMs: number; notAfterMs: number }
  | { ok: false; reason: 'unknown_ca' | 'wrong_tenant' | 'bad_spiffe_id'; detail: string };

function randomId(): string {
  return Buffer.from(webcrypto.getRandomValues(new Uint8Array(6))).toString('hex');
}

function iso(ms: number): string {
  return new Date(ms).toISOString();
}

/** Signing parameters for a private key, from its node:crypto description. */
function algorithmsFor(key: KeyObject): { importAlgorithm: Record<string, unknown>; signingAlgorithm: SignAlgorithm } {
  const details = key.asymmetricKeyDetails ?? {};
  if (key.asymmetricKeyType === 'ec') {
    const curve = details.namedCurve;
    if (curve === 'prime256v1' || curve === 'P-256') {
      return { importAlgorithm: EC_P256, signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' } };
    }
    if (curve === 'secp384r1' || curve === 'P-384') {
      return { importAlgorithm: { name: 'ECDSA', namedCurve: 'P-384' }, signingAlgorithm: { name: 'ECDSA', hash: 'SHA-384' } };
    }
    throw new Error(`EC curve ${curve ?? 'unknown'} is not supported for a CA key (use P-256 or P-384)`);
  }
  if (key.asymmetricKeyType === 'rsa') {
    if ((details.modulusLength ?? 0) < 2048) throw new Error(`RSA CA keys must be at least 2048 bits (got ${details.modulusLength})`);
    return {
      importAlgorithm: { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' },
      signingAlgorithm: { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' },
    };
  }
  throw new Error(`${key.asymmetricKeyType ?? 'unknown'} keys are not supported for a CA (use ECDSA P-256/P-384 or RSA)`);
}

async function importSigningKey(
  pkcs8Pem: string,
): Promise<{ key: CryptoKey; signingAlgorithm: SignAlgorithm; importAlgorithm: Record<string, unknown>; keyObject: KeyObject }> {
  const keyObject = createPrivateKey(pkcs8Pem);
  const { importAlgorithm, signingAlgorithm } = algorithmsFor(keyObject);
  const der = keyObject.export({ type: 'pkcs8', format: 'der' });
  const key = await webcrypto.subtle.importKey('pkcs8', der, importAlgorithm as never, false, ['sign']);
  return { key, signingAlgorithm, importAlgorithm, keyObject };
}

async function pkcs8Pem(key: CryptoKey): Promise<string> {
  return x509.PemConverter.encode(await webcrypto.subtle.exportKey('pkcs8', key), 'PRIVATE KEY');
}

async function keyIdentifierOf(cert: x509.X509Certificate): Promise<string> {
  const ext = cert.getExtension(x509.SubjectKeyIdentifierExtension);
  if (ext) return ext.keyId.toLowerCase();
  return (await x509.SubjectKeyIdentifierExtension.create(cert.publicKey)).keyId.toLowerCase();
}

/** Maps an operator's reason text ("key compromise", "superseded", ...) to a CRL reason code. */
function crlReason(reason: string | undefined): x509.X509CrlReason {
  const wanted = (reason ?? '').toLowerCase().replace(/[^a-z]/g, '');
  for (const [name, value] of Object.entries(x509.X509CrlReason)) {
    if (typeof value === 'number' && name.toLowerCase() === wanted) return value as x509.X509CrlReason;
  }
  return x509.X509CrlReason.unspecified;
}

/** DER of a certificate given as DER or PEM bytes. */
function certDer(data: Uint8Array): Buffer {
  const buf = toBuffer(data);
  if (buf.length > 10 && buf.subarray(0, 10).toString('latin1') === '-----BEGIN') {
    const first = x509.PemConverter.decode(buf.toString('latin1'))[0];
    if (!first) throw new Error('empty PEM');
    return Buffer.from(first);
  }
  return buf;
}

/** Serialises async work per key (one queue per tenant). */
class KeyedMutex {
  private readonly tails = new Map<string, Promise<unknown>>();
  run<T>(key: string, task: () => Promise<T>): Promise<T> {
    const previous = this.tails.get(key) ?? Promise.resolve();
    const result = previous.then(task, task);
    const tail = result.catch(() => undefined);
    this.tails.set(key, tail);
    void tail.then(() => {
      if (this.tails.get(key) === tail) this.tails.delete(key);
    });
    return result;
  }
}

export async function createPki(options: PkiOptions): Promise<BuiltinPki> {
  const pki = new BuiltinCa(options);
  try {
    await pki.open();
  } catch (error) {
    await pki.close();
    throw error;
  }
  return pki;
}

class BuiltinCa implements BuiltinPki {
  readonly trustDomain: string;
  private readonly store: IdentityStore;
  private readonly keyring: Keyring;
  private readonly config: IdentityConfig;
  private readonly logger: Logger;
  private readonly audit: AuditSink;
  private readonly now: () => number;
  private readonly serverCertTtlMs: number;

  private readonly cas = new Map<string, LoadedCa>();
  private readonly bySki = new Map<string, LoadedCa[]>();
  private root!: LoadedCa;
  private readonly revoked = new Set<string>();
  private readonly revokedListeners: Array<(serials: ReadonlySet<string>) => void> = [];
  private readonly trustListeners: Array<() => void> = [];
  private readonly tenantLock = new KeyedMutex();
  private readonly authCache = new Map<string, CachedAuth>();
  private readonly crlCache = new Map<string, { der: Uint8Array; nextUpdateMs: number; thisUpdateMs: number }>();
  private readonly crlNumbers = new Map<string, number>();
  private readonly gatewayClientCache = new Map<string, { value: { certPem: string; chainPem: string; keyPem: string; notAfter: string }; renewAtMs: number }>();
  private bundles?: { roots: string; client: string; tenants: Map<string, string> };
  private readonly gatewaySpiffeId: string;
  private pool?: SignerPool;

  constructor(options: PkiOptions) {
    this.store = options.store;
    this.keyring = options.keyring;
    this.trustDomain = options.trustDomain;
    this.config = options.config;
    this.logger = options.logger;
    this.audit = options.audit;
    this.now = options.now ?? Date.now;
    this.serverCertTtlMs = options.serverCertTtlMs ?? DEFAULT_SERVER_CERT_TTL_MS;
    this.gatewaySpiffeId = `spiffe://${this.trustDomain}/gateway`;
    const threads = options.signerThreads ?? defaultPoolSize();
    if (threads > 0) this.pool = new SignerPool(Math.min(4, threads));
  }

  async close(): Promise<void> {
    const pool = this.pool;
    this.pool = undefined;
    await pool?.close();
  }

  // ---- loading ----------------------------------------------------------------------------------

  async open(): Promise<void> {
    for (const record of await this.store.listCas()) await this.load(record);

    const activeRoots = [...this.cas.values()].filter((ca) => ca.record.kind === 'root' && ca.record.status === 'active');
    if (this.config.rootCa) {
      this.root = await this.importRoot(this.config.rootCa.certFile, this.config.rootCa.keyFile);
    } else if (activeRoots.length > 0) {
      this.root = activeRoots.sort((a, b) => b.record.createdAt.localeCompare(a.record.createdAt))[0]!;
    } else {
      this.root = await this.generateRoot();
    }
    // Any other root still marked active (an imported root replaced a generated one) keeps being
    // trusted while the intermediates it signed are rotated away.
    for (const ca of activeRoots) {
      if (ca !== this.root) await this.setStatus(ca, 'retiring');
    }
    // Tenants whose active intermediate was signed by another root get a fresh one.
    for (const ca of [...this.cas.values()]) {
      if (ca.record.kind === 'intermediate' && ca.record.status === 'active' && ca.record.tenant) {
        const aki = ca.cert.getExtension(x509.AuthorityKeyIdentifierExtension)?.keyId?.toLowerCase();
        if (aki !== this.root.ski) {
          this.logger.info({ tenant: ca.record.tenant, ca: ca.record.id }, 'tenant CA was signed by another root: rotating');
          await this.rotateIntermediate(ca.record.tenant);
        }
      }
    }

    for (const cert of await this.store.listIssuedCerts({ revoked: true })) this.revoked.add(cert.serial);
    this.logger.info(
      {
        root: this.root.record.id,
        intermediates: [...this.cas.values()].filter((ca) => ca.record.kind === 'intermediate' && ca.record.status !== 'retired').length,
        revoked: this.revoked.size,
      },
      'certificate authority ready',
    );
  }

  private async load(record: CaRecord): Promise<LoadedCa> {
    const cert = new x509.X509Certificate(record.certPem);
    const publicKey = createPublicKey({ key: Buffer.from(cert.publicKey.rawData), format: 'der', type: 'spki' });
    let signingKey: CryptoKey | undefined;
    let signingAlgorithm: SignAlgorithm = { name: 'ECDSA', hash: 'SHA-256' };
    let importAlgorithm: Record<string, unknown> | undefined;
    if (record.status !== 'retired') {
      let pem: string;
      try {
        pem = this.keyring.open('ca-key', record.id, record.sealedKey).toString('utf8');
      } catch (error) {
        throw new Error(
          `cannot open the private key of CA ${record.id}: ${(error as Error).message}. ` +
            'The store was created with another master key; start with the original master key (file or environment variable).',
        );
      }
      const imported = await importSigningKey(pem);
      signingKey = imported.key;
      signingAlgorithm = imported.signingAlgorithm;
      importAlgorithm = imported.importAlgorithm;
    }
    const ski = await keyIdentifierOf(cert);
    const ca: LoadedCa = {
      record,
      cert,
      nodeCert: new NodeX509Certificate(Buffer.from(cert.rawData)),
      signingKey,
      signingAlgorithm,
      publicKey,
      ski,
      notAfterMs: cert.notAfter.getTime(),
      asnSubject: AsnConvert.parse(cert.rawData, asn1X509.Certificate).tbsCertificate.subject,
      asnSignatureAlgorithm: algorithmProvider.toAsnAlgorithm({ ...signingAlgorithm, ...(signingKey?.algorithm ?? {}) } as Parameters<typeof algorithmProvider.toAsnAlgorithm>[0]),
      asnAki: asnExtension(new x509.AuthorityKeyIdentifierExtension(ski)),
    };
    if (signingKey && importAlgorithm && record.kind === 'intermediate') {
      // For the signing workers: the key is re-opened from its sealed form when a worker first
      // needs it (never kept in the clear here), then imported there as non-extractable.
      ca.poolCa = {
        caId: record.id,
        pkcs8: () => {
          const key = createPrivateKey(this.keyring.open('ca-key', ca.record.id, ca.record.sealedKey).toString('utf8'));
          return new Uint8Array(key.export({ type: 'pkcs8', format: 'der' }));
        },
        importAlgorithm,
        signingAlgorithm,
        subjectDer: new Uint8Array(AsnConvert.serialize(ca.asnSubject)),
        signatureAlgorithmDer: new Uint8Array(AsnConvert.serialize(ca.asnSignatureAlgorithm)),
        akiDer: new Uint8Array(AsnConvert.serialize(ca.asnAki)),
        notAfterMs: ca.notAfterMs,
      };
    }
    this.cas.set(record.id, ca);
    const list = this.bySki.get(ca.ski) ?? [];
    list.push(ca);
    this.bySki.set(ca.ski, list);
    return ca;
  }

  private async persistNew(
    id: string,
    kind: CaRecord['kind'],
    tenant: string | undefined,
    cert: x509.X509Certificate,
    keyPem: string,
  ): Promise<LoadedCa> {
    const record: CaRecord = {
      id,
      kind,
      ...(tenant ? { tenant } : {}),
      certPem: cert.toString('pem'),
      sealedKey: this.keyring.seal('ca-key', id, keyPem),
      notBefore: cert.notBefore.toISOString(),
      notAfter: cert.notAfter.toISOString(),
      status: 'active',
      createdAt: iso(this.now()),
    };
    await this.store.putCa(record);
    this.bundles = undefined;
    return this.load(record);
  }

  private async setStatus(ca: LoadedCa, status: CaRecord['status']): Promise<void> {
    ca.record = { ...ca.record, status };
    await this.store.putCa(ca.record);
    if (status === 'retired') {
      ca.signingKey = undefined;
      ca.poolCa = undefined;
      this.pool?.drop(ca.record.id);
    }
    this.bundles = undefined;
    this.authCache.clear();
  }

  private async generateRoot(): Promise<LoadedCa> {
    const keys = (await webcrypto.subtle.generateKey({ ...EC_P256 }, true, ['sign', 'verify'])) as CryptoKeyPair;
    const now = this.now();
    const cert = await x509.X509CertificateGenerator.createSelfSigned({
      serialNumber: randomSerial(),
      name: `CN=DMSC root CA ${this.trustDomain}, O=DMSC`,
      notBefore: new Date(now - this.config.clockSkewMs),
      notAfter: new Date(now + ROOT_TTL_MS),
      keys,
      signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
      extensions: [
        new x509.BasicConstraintsExtension(true, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      ],
    });
    const id = `root-${randomId()}`;
    const ca = await this.persistNew(id, 'root', undefined, cert, await pkcs8Pem(keys.privateKey));
    this.logger.info({ ca: id, trustDomain: this.trustDomain }, 'generated a root CA');
    this.audit({ action: 'ca.create', target: id, decision: 'info', actor: 'system', reason: 'generated root' });
    return ca;
  }

  /** Imports the operator's CA (certificate + PKCS#8/SEC1/PKCS#1 key PEM) as the active root. */
  private async importRoot(certFile: string, keyFile: string): Promise<LoadedCa> {
    const fail = (message: string): never => {
      throw new Error(`identity.rootCa: ${message}`);
    };
    let certText: string;
    let keyText: string;
    try {
      certText = await readFile(certFile, 'utf8');
    } catch (error) {
      return fail(`cannot read certFile ${certFile}: ${(error as Error).message}`);
    }
    try {
      keyText = await readFile(keyFile, 'utf8');
    } catch (error) {
      return fail(`cannot read keyFile ${keyFile}: ${(error as Error).message}`);
    }
    let cert: x509.X509Certificate;
    try {
      cert = new x509.X509Certificate(certText);
    } catch (error) {
      return fail(`${certFile} is not a PEM certificate: ${(error as Error).message}`);
    }
    const bc = cert.getExtension(x509.BasicConstraintsExtension);
    if (!bc?.ca) fail(`${certFile} is not a CA certificate (basicConstraints cA is not true)`);
    if (bc?.pathLength === 0) fail(`${certFile} has pathLen 0, so it cannot sign tenant intermediates`);
    const ku = cert.getExtension(x509.KeyUsagesExtension);
    if (ku && !(ku.usages & x509.KeyUsageFlags.keyCertSign)) fail(`${certFile} does not allow keyCertSign`);
    if (cert.notAfter.getTime() <= this.now()) fail(`${certFile} expired on ${cert.notAfter.toISOString()}`);
    let keyObject: KeyObject;
    try {
      keyObject = createPrivateKey(keyText);
    } catch (error) {
      return fail(`${keyFile} is not a PEM private key: ${(error as Error).message}`);
    }
    const keySpki = createPublicKey(keyObject).export({ type: 'spki', format: 'der' });
    if (!keySpki.equals(Buffer.from(cert.publicKey.rawData))) fail(`the key in ${keyFile} does not match the certificate in ${certFile}`);
    try {
      algorithmsFor(keyObject);
    } catch (error) {
      fail((error as Error).message);
    }
    const id = `root-${createHash('sha256').update(Buffer.from(cert.rawData)).digest('hex').slice(0, 16)}`;
    const existing = this.cas.get(id);
    if (existing) {
      if (existing.record.status !== 'active') await this.setStatus(existing, 'active');
      return existing;
    }
    const pem = keyObject.export({ type: 'pkcs8', format: 'pem' }).toString();
    const ca = await this.persistNew(id, 'root', undefined, cert, pem);
    this.logger.info({ ca: id, subject: cert.subject }, 'imported the root CA from identity.rootCa');
    this.audit({ action: 'ca.import', target: id, decision: 'info', actor: 'system', reason: `root from ${certFile}` });
    return ca;
  }

  // ---- tenants and rotation -------------------------------------------------------------------

  private checkName(kind: string, name: string): void {
    if (!NAME_PATTERN.test(name)) throw new PkiError('invalid', `${kind} name ${JSON.stringify(name)} is not a valid name`);
  }

  private tenantCas(tenant: string): { active?: LoadedCa; retiring: LoadedCa[] } {
    let active: LoadedCa | undefined;
    const retiring: LoadedCa[] = [];
    for (const ca of this.cas.values()) {
      if (ca.record.kind !== 'intermediate' || ca.record.tenant !== tenant) continue;
      if (ca.record.status === 'active') active = ca;
      else if (ca.record.status === 'retiring') retiring.push(ca);
    }
    return { active, retiring };
  }

  private activeIntermediate(tenant: string): LoadedCa {
    const { active } = this.tenantCas(tenant);
    if (!active?.signingKey) throw new PkiError('unknown_tenant', `tenant ${tenant} has no certificate authority`);
    return active;
  }

  private async createIntermediate(tenant: string): Promise<LoadedCa> {
    const root = this.root;
    if (!root.signingKey) throw new Error('the root CA has no key');
    const keys = (await webcrypto.subtle.generateKey({ ...EC_P256 }, true, ['sign', 'verify'])) as CryptoKeyPair;
    const now = this.now();
    const cert = await x509.X509CertificateGenerator.create({
      serialNumber: randomSerial(),
      subject: `CN=DMSC tenant ${tenant} CA, O=DMSC`,
      issuer: root.cert.subjectName,
      notBefore: new Date(now - this.config.clockSkewMs),
      notAfter: new Date(Math.min(now + this.config.intermediateTtlMs, root.notAfterMs)),
      publicKey: keys.publicKey,
      signingKey: root.signingKey,
      signingAlgorithm: root.signingAlgorithm,
      extensions: [
        new x509.BasicConstraintsExtension(true, 0, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
        new x509.AuthorityKeyIdentifierExtension(root.ski),
      ],
    });
    const id = `int-${tenant}-${randomId()}`;
    return this.persistNew(id, 'intermediate', tenant, cert, await pkcs8Pem(keys.privateKey));
  }

  private notifyTrustChanged(): void {
    this.bundles = undefined;
    this.authCache.clear();
    for (const listener of this.trustListeners) {
      try {
        listener();
      } catch (error) {
        this.logger.error({ err: error }, 'trust-changed listener failed');
      }
    }
  }

  ensureTenant(tenant: string): Promise<void> {
    this.checkName('tenant', tenant);
    if (this.tenantCas(tenant).active) return Promise.resolve();
    return this.tenantLock.run(tenant, async () => {
      if (this.tenantCas(tenant).active) return;
      const ca = await this.createIntermediate(tenant);
      this.logger.info({ tenant, ca: ca.record.id }, 'created tenant CA');
      this.audit({ tenant, action: 'ca.create', target: ca.record.id, decision: 'info', actor: 'system' });
      this.notifyTrustChanged();
    });
  }

  rotateIntermediate(tenant: string): Promise<CaRecord> {
    this.checkName('tenant', tenant);
    return this.tenantLock.run(tenant, async () => {
      const { active, retiring } = this.tenantCas(tenant);
      const fresh = await this.createIntermediate(tenant);
      if (active) await this.setStatus(active, 'retiring');
      // A retiring CA is retired once nothing it issued can still be valid.
      const now = this.now();
      for (const old of retiring) {
        const issued = await this.store.listIssuedCerts({ caId: old.record.id });
        const lastValid = Math.max(0, ...issued.map((cert) => Date.parse(cert.notAfter)));
        if (old.notAfterMs <= now || lastValid + this.config.clockSkewMs <= now) await this.setStatus(old, 'retired');
      }
      this.gatewayClientCache.delete(tenant);
      this.logger.info({ tenant, ca: fresh.record.id, previous: active?.record.id }, 'rotated tenant CA');
      this.audit({ tenant, action: 'ca.rotate', target: fresh.record.id, decision: 'info', actor: 'system', reason: active ? `replaces ${active.record.id}` : 'first CA' });
      this.notifyTrustChanged();
      return fresh.record;
    });
  }

  onTrustChanged(listener: () => void): void {
    this.trustListeners.push(listener);
  }

  // ---- issuing --------------------------------------------------------------------------------

  /** Signs a leaf in-process with the CA's cached key (see leaf.ts). */
  private async signLeaf(ca: LoadedCa, params: LeafParams): Promise<SignedLeaf> {
    if (!ca.signingKey) throw new Error(`CA ${ca.record.id} cannot sign`);
    return signLeaf({ ...ca, signingKey: ca.signingKey }, params, this.now(), this.config.clockSkewMs);
  }

  /** Parses, checks and signs a CSR for an agent: in a signing worker when one is up, else here. */
  private async signAgentLeaf(ca: LoadedCa, csrInput: string | Uint8Array, agent: string, spiffeId: string, ttlMs: number): Promise<SignedLeaf> {
    const pool = this.pool;
    if (pool?.available && ca.poolCa) {
      try {
        return await pool.issue(ca.poolCa, { csr: csrInput, agent, spiffeId, ttlMs, now: this.now(), clockSkewMs: this.config.clockSkewMs });
      } catch (error) {
        if (!(error instanceof SignerUnavailable)) throw error;
        this.logger.warn({ err: error }, 'signing worker unavailable: signing in-process');
      }
    }
    if (!ca.signingKey) throw new Error(`CA ${ca.record.id} cannot sign`);
    return issueAgentLeaf(
      { ...ca, signingKey: ca.signingKey },
      { csr: csrInput, agent, spiffeId, ttlMs, now: this.now(), clockSkewMs: this.config.clockSkewMs },
    );
  }

  private async record(
    ca: LoadedCa,
    issued: { serial: string; notBeforeMs: number; notAfterMs: number },
    fields: { tenant: string; agent: string; kind: IssuedCertKind; spiffeId?: string },
  ): Promise<void> {
    await this.store.putIssuedCert({
      serial: issued.serial,
      caId: ca.record.id,
      tenant: fields.tenant,
      agent: fields.agent,
      kind: fields.kind,
      ...(fields.spiffeId ? { spiffeId: fields.spiffeId } : {}),
      notBefore: iso(issued.notBeforeMs),
      notAfter: iso(issued.notAfterMs),
      createdAt: iso(this.now()),
    });
  }

  async issueFromCsr(
    tenant: string,
    agent: string,
    csrInput: string | Uint8Array,
    options: { ttlMs?: number; requestId?: string } = {},
  ): Promise<IssuedCertificate> {
    this.checkName('tenant', tenant);
    this.checkName('agent', agent);
    const ttlMs = options.ttlMs ?? this.config.certTtlMs;
    if (!Number.isFinite(ttlMs) || ttlMs <= 0) throw new PkiError('invalid', 'ttlMs must be a positive number of milliseconds');
    const ca = this.activeIntermediate(tenant);
    const spiffeId = spiffeIdFor(this.trustDomain, tenant, agent);
    const issued = await this.signAgentLeaf(ca, csrInput, agent, spiffeId, ttlMs);
    await this.record(ca, issued, { tenant, agent, kind: 'agent', spiffeId });
    this.audit({
      tenant,
      actor: spiffeId,
      action: 'cert.issue',
      target: issued.serial,
      decision: 'info',
      ...(options.requestId ? { requestId: options.requestId } : {}),
    });
    return {
      serial: issued.serial,
      certPem: issued.certPem,
      chainPem: `${issued.certPem.trim()}\n${ca.record.certPem.trim()}\n`,
      notAfter: iso(issued.notAfterMs),
      spiffeId,
    };
  }

  private async newKeyPair(): Promise<{ spki: asn1X509.SubjectPublicKeyInfo; keyPem: string }> {
    const keys = (await webcrypto.subtle.generateKey({ ...EC_P256 }, true, ['sign', 'verify'])) as CryptoKeyPair;
    return {
      spki: AsnConvert.parse(await webcrypto.subtle.exportKey('spki', keys.publicKey), asn1X509.SubjectPublicKeyInfo),
      keyPem: await pkcs8Pem(keys.privateKey),
    };
  }

  async issueServerCertificate(dnsNames: string[], ipAddresses: string[]): Promise<{ certPem: string; chainPem: string; keyPem: string; notAfter: string }> {
    if (dnsNames.length === 0 && ipAddresses.length === 0) throw new PkiError('invalid', 'a server certificate needs at least one DNS name or IP address');
    const { spki, keyPem } = await this.newKeyPair();
    const ca = this.root;
    const issued = await this.signLeaf(ca, {
      subject: AsnConvert.parse(new x509.Name([{ CN: [dnsNames[0] ?? ipAddresses[0]!] }, { O: ['DMSC'] }]).toArrayBuffer(), asn1X509.Name),
      spki,
      sans: [...dnsNames.map((value) => ({ type: 'dns' as const, value })), ...ipAddresses.map((value) => ({ type: 'ip' as const, value }))],
      keyUsage: leafExtensions().kuSign,
      eku: leafExtensions().ekuServer,
      ttlMs: this.serverCertTtlMs,
    });
    await this.record(ca, issued, { tenant: '', agent: 'gateway', kind: 'server' });
    this.audit({ action: 'cert.issue', actor: 'system', target: issued.serial, decision: 'info', reason: `server certificate for ${[...dnsNames, ...ipAddresses].join(', ')}` });
    return { certPem: issued.certPem, chainPem: issued.certPem, keyPem, notAfter: iso(issued.notAfterMs) };
  }

  async issueGatewayClientCertificate(tenant: string): Promise<{ certPem: string; chainPem: string; keyPem: string; notAfter: string }> {
    this.checkName('tenant', tenant);
    const cached = this.gatewayClientCache.get(tenant);
    if (cached && this.now() < cached.renewAtMs) return cached.value;
    const ca = this.activeIntermediate(tenant);
    const { spki, keyPem } = await this.newKeyPair();
    const issued = await this.signLeaf(ca, {
      subject: AsnConvert.parse(new x509.Name('CN=DMSC gateway, O=DMSC').toArrayBuffer(), asn1X509.Name),
      spki,
      sans: [{ type: 'url', value: this.gatewaySpiffeId }],
      keyUsage: leafExtensions().kuSign,
      eku: leafExtensions().ekuClient,
      ttlMs: this.config.certTtlMs,
    });
    await this.record(ca, issued, { tenant, agent: 'gateway', kind: 'gateway-client', spiffeId: this.gatewaySpiffeId });
    this.audit({ tenant, actor: this.gatewaySpiffeId, action: 'cert.issue', target: issued.serial, decision: 'info', reason: 'gateway client certificate' });
    const value = { certPem: issued.certPem, chainPem: `${issued.certPem.trim()}\n${ca.record.certPem.trim()}\n`, keyPem, notAfter: iso(issued.notAfterMs) };
    const now = this.now();
    this.gatewayClientCache.set(tenant, { value, renewAtMs: now + (issued.notAfterMs - now) / 2 });
    return value;
  }

  // ---- revocation -----------------------------------------------------------------------------

  isRevoked(serial: string): boolean {
    return this.revoked.has(serial.toLowerCase());
  }

  onRevoked(listener: (serials: ReadonlySet<string>) => void): void {
    this.revokedListeners.push(listener);
  }

  private notifyRevoked(serials: Set<string>): void {
    if (serials.size === 0) return;
    for (const listener of this.revokedListeners) {
      try {
        listener(serials);
      } catch (error) {
        this.logger.error({ err: error }, 'revocation listener failed');
      }
    }
  }

  private async revokeOne(serial: string, reason: string, actor: string, at: string): Promise<IssuedCertRecord> {
    const record = await this.store.revokeCert(serial, reason, at);
    if (!record) throw new PkiError('not_found', `no certificate with serial ${serial} was issued by this gateway`);
    this.revoked.add(record.serial);
    this.audit({
      ...(record.tenant ? { tenant: record.tenant } : {}),
      actor,
      action: 'cert.revoke',
      target: record.serial,
      decision: 'info',
      reason: record.revocationReason ?? reason,
    });
    return record;
  }

  async revoke(serial: string, reason: string, actor = 'system'): Promise<IssuedCertRecord> {
    const normalized = serial.trim().toLowerCase().replace(/:/g, '');
    if (!/^[0-9a-f]+$/.test(normalized)) throw new PkiError('invalid', `serial ${JSON.stringify(serial)} is not hexadecimal`);
    const record = await this.revokeOne(normalized, reason, actor, iso(this.now()));
    await this.regenerateCrl(record.caId);
    this.notifyRevoked(new Set([record.serial]));
    return record;
  }

  async revokeAgent(tenant: string, agent: string, reason: string, actor = 'system'): Promise<string[]> {
    this.checkName('tenant', tenant);
    this.checkName('agent', agent);
    const now = this.now();
    const at = iso(now);
    const live = (await this.store.listIssuedCerts({ tenant, agent, revoked: false })).filter(
      (cert) => cert.kind === 'agent' && Date.parse(cert.notAfter) + this.config.clockSkewMs > now,
    );
    const serials = new Set<string>();
    const caIds = new Set<string>();
    for (const cert of live) {
      const record = await this.revokeOne(cert.serial, reason, actor, at);
      serials.add(record.serial);
      caIds.add(record.caId);
    }
    for (const caId of caIds) await this.regenerateCrl(caId);
    this.notifyRevoked(serials);
    return [...serials];
  }

  /**
   * Offboarding: revokes every unexpired certificate issued for the tenant (agents and the gateway's
   * own client certificate), then retires the tenant's CAs so nothing they signed is trusted any
   * more; listeners close live connections and rebuild the TLS trust. A tenant of the same name
   * onboarded later gets a new CA.
   */
  async offboardTenant(tenant: string, actor = 'system'): Promise<{ revoked: string[]; retiredCas: string[] }> {
    this.checkName('tenant', tenant);
    return this.tenantLock.run(tenant, async () => {
      const now = this.now();
      const at = iso(now);
      const live = (await this.store.listIssuedCerts({ tenant, revoked: false })).filter(
        (cert) => Date.parse(cert.notAfter) + this.config.clockSkewMs > now,
      );
      const serials = new Set<string>();
      for (const cert of live) serials.add((await this.revokeOne(cert.serial, 'offboarded', actor, at)).serial);
      const { active, retiring } = this.tenantCas(tenant);
      const retiredCas: string[] = [];
      for (const ca of [...(active ? [active] : []), ...retiring]) {
        await this.setStatus(ca, 'retired');
        this.crlCache.delete(ca.record.id);
        retiredCas.push(ca.record.id);
      }
      this.gatewayClientCache.delete(tenant);
      this.audit({ tenant, action: 'ca.retire', target: retiredCas.join(','), decision: 'info', actor, reason: 'tenant offboarded' });
      this.notifyRevoked(serials);
      this.notifyTrustChanged();
      return { revoked: [...serials], retiredCas };
    });
  }

  // ---- CRLs -----------------------------------------------------------------------------------

  private async regenerateCrl(caId: string): Promise<Uint8Array | undefined> {
    const ca = this.cas.get(caId);
    if (!ca?.signingKey || ca.record.kind !== 'intermediate') {
      this.crlCache.delete(caId);
      return undefined;
    }
    const now = this.now();
    const revoked = (await this.store.listIssuedCerts({ caId, revoked: true })).filter(
      (cert) => Date.parse(cert.notAfter) + this.config.clockSkewMs > now,
    );
    const crlNumber = Math.max(now, (this.crlNumbers.get(caId) ?? 0) + 1);
    this.crlNumbers.set(caId, crlNumber);
    const nextUpdateMs = Math.min(now + CRL_VALIDITY_MS, Math.max(ca.notAfterMs, now + 60_000));
    const crl = await x509.X509CrlGenerator.create({
      issuer: ca.cert.subjectName,
      thisUpdate: new Date(now),
      nextUpdate: new Date(nextUpdateMs),
      signingKey: ca.signingKey,
      signingAlgorithm: ca.signingAlgorithm,
      extensions: [
        new x509.AuthorityKeyIdentifierExtension(ca.ski),
        new x509.Extension(id_ce_cRLNumber, false, AsnConvert.serialize(new CRLNumber(crlNumber))),
      ],
      entries: revoked.map((cert) => ({
        serialNumber: cert.serial,
        revocationDate: new Date(cert.revokedAt ?? now),
        reason: crlReason(cert.revocationReason),
      })),
    });
    const der = new Uint8Array(crl.rawData);
    this.crlCache.set(caId, { der, thisUpdateMs: now, nextUpdateMs });
    return der;
  }

  private async crlOf(ca: LoadedCa): Promise<Uint8Array> {
    const cached = this.crlCache.get(ca.record.id);
    // Re-signed at half of its validity so relying parties never hold an outdated one.
    if (cached && this.now() < cached.thisUpdateMs + (cached.nextUpdateMs - cached.thisUpdateMs) / 2) return cached.der;
    const der = await this.regenerateCrl(ca.record.id);
    if (!der) throw new PkiError('not_found', `CA ${ca.record.id} cannot sign a CRL`);
    return der;
  }

  async crl(tenant: string): Promise<Uint8Array> {
    this.checkName('tenant', tenant);
    return this.crlOf(this.activeIntermediate(tenant));
  }

  async crls(tenant: string): Promise<Uint8Array[]> {
    this.checkName('tenant', tenant);
    const { active, retiring } = this.tenantCas(tenant);
    if (!active) throw new PkiError('unknown_tenant', `tenant ${tenant} has no certificate authority`);
    const out = [await this.crlOf(active)];
    for (const ca of retiring) if (ca.signingKey) out.push(await this.crlOf(ca));
    return out;
  }

  // ---- authentication -------------------------------------------------------------------------

  authenticateCertificate(chain: Uint8Array[]): AuthResult {
    const first = chain[0];
    if (!first) return { ok: false, reason: 'no_credentials', detail: 'no client certificate was presented' };
    let der: Buffer;
    try {
      der = certDer(first);
    } catch {
      return { ok: false, reason: 'unknown_ca', detail: 'the client certificate cannot be parsed' };
    }
    const key = createHash('sha256').update(der).digest('base64');
    let entry = this.authCache.get(key);
    if (!entry) {
      entry = this.examine(der);
      if (this.authCache.size >= AUTH_CACHE_MAX) {
        const oldest = this.authCache.keys().next().value;
        if (oldest !== undefined) this.authCache.delete(oldest);
      }
      this.authCache.set(key, entry);
    }
    if (!entry.ok) return { ok: false, reason: entry.reason, detail: entry.detail };
    const ca = this.cas.get(entry.caId);
    if (!ca || ca.record.status === 'retired') {
      return { ok: false, reason: 'unknown_ca', detail: 'the issuing tenant CA is no longer trusted' };
    }
    const now = this.now();
    const skew = this.config.clockSkewMs;
    if (now + skew < entry.notBeforeMs) {
      return { ok: false, reason: 'not_yet_valid', detail: `the certificate is valid from ${iso(entry.notBeforeMs)}` };
    }
    if (now - skew > entry.notAfterMs) {
      return { ok: false, reason: 'expired', detail: `the certificate expired at ${iso(entry.notAfterMs)}` };
    }
    if (this.revoked.has(entry.serial)) {
      return { ok: false, reason: 'revoked', detail: `certificate ${entry.serial} is revoked` };
    }
    return {
      ok: true,
      identity: { tenant: entry.tenant, agent: entry.agent, spiffeId: entry.spiffeId, via: 'mtls', certSerial: entry.serial },
    };
  }

  /** The time-independent checks of a leaf certificate (cached per certificate); node:crypto only. */
  private examine(der: Buffer): CachedAuth {
    let cert: NodeX509Certificate;
    try {
      cert = new NodeX509Certificate(der);
    } catch {
      return { ok: false, reason: 'unknown_ca', detail: 'the client certificate cannot be parsed' };
    }
    const uris = uriSans(cert.subjectAltName);
    if (uris.length !== 1) {
      return { ok: false, reason: 'bad_spiffe_id', detail: `the certificate must carry exactly one URI SAN (it has ${uris.length})` };
    }
    const spiffeId = uris[0]!;
    const parsed = parseAgentSpiffeId(spiffeId, this.trustDomain);
    if (!parsed) {
      return {
        ok: false,
        reason: 'bad_spiffe_id',
        detail: `${spiffeId} is not an agent identity of trust domain ${this.trustDomain} (spiffe://${this.trustDomain}/tenant/<tenant>/agent/<agent>)`,
      };
    }
    if (cert.ca) return { ok: false, reason: 'bad_spiffe_id', detail: 'a CA certificate cannot be an agent identity' };

    // Name (and AKI/SKI) match first, then the signature with that CA's public key.
    const issuer = [...this.cas.values()].find(
      (ca) => ca.record.status !== 'retired' && cert.checkIssued(ca.nodeCert) && cert.verify(ca.publicKey),
    );
    if (!issuer) {
      return { ok: false, reason: 'unknown_ca', detail: `the certificate was not issued by a CA of this gateway (issuer: ${cert.issuer.replace(/\n/g, ', ')})` };
    }
    if (issuer.record.kind !== 'intermediate') {
      return { ok: false, reason: 'unknown_ca', detail: 'agent certificates must be issued by a tenant CA, not by the root' };
    }
    if (issuer.record.tenant !== parsed.tenant) {
      return {
        ok: false,
        reason: 'wrong_tenant',
        detail: `the certificate claims tenant ${parsed.tenant} but was issued by the CA of tenant ${issuer.record.tenant}`,
      };
    }
    return {
      ok: true,
      tenant: parsed.tenant,
      agent: parsed.agent,
      spiffeId,
      serial: cert.serialNumber.toLowerCase(),
      caId: issuer.record.id,
      notBeforeMs: Date.parse(cert.validFrom),
      notAfterMs: Date.parse(cert.validTo),
    };
  }

  // ---- trust bundles --------------------------------------------------------------------------

  private computeBundles(): { roots: string; client: string; tenants: Map<string, string> } {
    if (this.bundles) return this.bundles;
    const trusted = [...this.cas.values()].filter((ca) => ca.record.status === 'active' || ca.record.status === 'retiring');
    const pem = (list: LoadedCa[]) => list.map((ca) => ca.record.certPem.trim() + '\n').join('');
    const order = (list: LoadedCa[]) => [...list].sort((a, b) => (a.record.status === b.record.status ? 0 : a.record.status === 'active' ? -1 : 1));
    const roots = order(trusted.filter((ca) => ca.record.kind === 'root'));
    const intermediates = order(trusted.filter((ca) => ca.record.kind === 'intermediate'));
    const tenants = new Map<string, string>();
    for (const ca of intermediates) {
      const tenant = ca.record.tenant!;
      tenants.set(tenant, (tenants.get(tenant) ?? '') + pem([ca]));
    }
    for (const [tenant, text] of tenants) tenants.set(tenant, text + pem(roots));
    this.bundles = { roots: pem(roots), client: pem(intermediates) + pem(roots), tenants };
    return this.bundles;
  }

  rootBundle(): string {
    return this.computeBundles().roots;
  }

  tenantBundle(tenant: string): string {
    const bundles = this.computeBundles();
    return bundles.tenants.get(tenant) ?? bundles.roots;
  }

  clientCaBundle(): string {
    return this.computeBundles().client;
  }
}
