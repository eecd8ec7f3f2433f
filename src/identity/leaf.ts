// @peculiar/x509 resolves its algorithms through tsyringe, which needs the Reflect metadata API.
import 'reflect-metadata';
import { createHash, createPublicKey, type KeyObject, verify as nodeVerify, webcrypto } from 'node:crypto';
import { CertificationRequest } from '@peculiar/asn1-csr';
import { ECParameters } from '@peculiar/asn1-ecc';
import { AsnConvert, AsnSerializer, type IAsnConvertible, OctetString } from '@peculiar/asn1-schema';
import * as asn1X509 from '@peculiar/asn1-x509';
import * as x509 from '@peculiar/x509';
import { PkiError } from './types.js';

/**
 * The per-certificate work of the built-in CA (parsing and checking a CSR, assembling and signing a
 * leaf), shared by the CA itself (src/identity/pki.ts) and its signing workers (signer-worker.ts).
 * Everything is encoded with @peculiar/asn1-* structures; signatures go through WebCrypto.
 */

type CryptoKey = webcrypto.CryptoKey;

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

export type SignAlgorithm = { name: string; hash?: string };

/** What a CA contributes to each leaf it signs (pre-encoded parts + its non-extractable key). */
export interface LeafSigner {
  signingKey: CryptoKey;
  signingAlgorithm: SignAlgorithm;
  asnSubject: asn1X509.Name;
  asnSignatureAlgorithm: asn1X509.AlgorithmIdentifier;
  asnAki: asn1X509.Extension;
  notAfterMs: number;
}

export interface LeafParams {
  subject: asn1X509.Name;
  spki: asn1X509.SubjectPublicKeyInfo;
  sans: x509.JsonGeneralName[];
  keyUsage: asn1X509.Extension;
  eku: asn1X509.Extension;
  ttlMs: number;
}

export interface SignedLeaf {
  certPem: string;
  serial: string;
  notBeforeMs: number;
  notAfterMs: number;
}

export const ecSignatureFormatter = new x509.AsnEcSignatureFormatter();

export function asnExtension(ext: x509.Extension): asn1X509.Extension {
  return AsnConvert.parse(ext.rawData, asn1X509.Extension);
}

/** Leaf extensions that never change, encoded once. */
export const leafExtensions = (() => {
  let cache: Record<'bc' | 'kuSign' | 'kuSignEncipher' | 'ekuBoth' | 'ekuServer' | 'ekuClient', asn1X509.Extension> | undefined;
  return () =>
    (cache ??= {
      bc: asnExtension(new x509.BasicConstraintsExtension(false, undefined, true)),
      kuSign: asnExtension(new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true)),
      kuSignEncipher: asnExtension(new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment, true)),
      ekuBoth: asnExtension(new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth])),
      ekuServer: asnExtension(new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth])),
      ekuClient: asnExtension(new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.clientAuth])),
    });
})();

/** CSR signature algorithms checked with node:crypto directly (others go through @peculiar/x509). */
const CSR_SIGNATURE_HASHES: Record<string, { hash: string; keyType: string }> = {
  '1.2.840.10045.4.3.2': { hash: 'sha256', keyType: 'ec' },
  '1.2.840.10045.4.3.3': { hash: 'sha384', keyType: 'ec' },
  '1.2.840.10045.4.3.4': { hash: 'sha512', keyType: 'ec' },
  '1.2.840.113549.1.1.11': { hash: 'sha256', keyType: 'rsa' },
  '1.2.840.113549.1.1.12': { hash: 'sha384', keyType: 'rsa' },
  '1.2.840.113549.1.1.13': { hash: 'sha512', keyType: 'rsa' },
};

function verifyAsync(hash: string, data: Buffer, key: KeyObject, signature: Buffer): Promise<boolean> {
  return new Promise((resolve) => {
    try {
      nodeVerify(hash, data, key, signature, (error, ok) => resolve(!error && ok));
    } catch {
      resolve(false);
    }
  });
}

/** CN=<name> as a UTF8String. */
export function commonName(name: string): asn1X509.Name {
  return new asn1X509.Name([
    new asn1X509.RelativeDistinguishedName([
      new asn1X509.AttributeTypeAndValue({ type: '2.5.4.3', value: new asn1X509.AttributeValue({ utf8String: name }) }),
    ]),
  ]);
}

export function sanExtension(sans: x509.JsonGeneralName[]): asn1X509.Extension {
  if (sans.length === 1 && sans[0]!.type === 'url') {
    // The X.509-SVID case, built directly (the general case goes through @peculiar/x509's JSON form).
    const value = new asn1X509.SubjectAlternativeName([new asn1X509.GeneralName({ uniformResourceIdentifier: sans[0]!.value })]);
    return new asn1X509.Extension({ extnID: asn1X509.id_ce_subjectAltName, critical: false, extnValue: new OctetString(AsnConvert.serialize(value)) });
  }
  return asnExtension(new x509.SubjectAlternativeNameExtension(sans));
}

const EC_CURVES: Record<string, { crv: string; size: number }> = {
  '1.2.840.10045.3.1.7': { crv: 'P-256', size: 32 },
  '1.3.132.0.34': { crv: 'P-384', size: 48 },
};
const ID_EC_PUBLIC_KEY = '1.2.840.10045.2.1';

/** The JWK of an uncompressed EC public key on P-256/P-384; undefined for anything else (decoded as DER then). */
function ecJwkOf(spki: asn1X509.SubjectPublicKeyInfo): { kty: 'EC'; crv: string; x: string; y: string } | undefined {
  if (spki.algorithm.algorithm !== ID_EC_PUBLIC_KEY || !spki.algorithm.parameters) return undefined;
  let namedCurve: string | undefined;
  try {
    namedCurve = AsnConvert.parse(spki.algorithm.parameters, ECParameters).namedCurve;
  } catch {
    return undefined;
  }
  const curve = namedCurve === undefined ? undefined : EC_CURVES[namedCurve];
  const point = Buffer.from(spki.subjectPublicKey);
  if (!curve || point.length !== 1 + 2 * curve.size || point[0] !== 0x04) return undefined;
  return {
    kty: 'EC',
    crv: curve.crv,
    x: point.subarray(1, 1 + curve.size).toString('base64url'),
    y: point.subarray(1 + curve.size).toString('base64url'),
  };
}

export interface ParsedCsr {
  spki: asn1X509.SubjectPublicKeyInfo;
  key: KeyObject;
  der: Buffer;
  request: CertificationRequest;
}

export function randomSerial(): string {
  const bytes = webcrypto.getRandomValues(new Uint8Array(16));
  // Positive INTEGER whose first octet is never 0: the DER encoding is exactly these 16 bytes,
  // so `serialNumber` (hex) reads back as generated.
  bytes[0] = 0x40 | (bytes[0]! & 0x3f);
  return Buffer.from(bytes).toString('hex');
}

export function toBuffer(data: Uint8Array): Buffer {
  return Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
}

export function parseCsr(input: string | Uint8Array): ParsedCsr {
  let der: Buffer;
  let request: CertificationRequest;
  try {
    const text = typeof input === 'string' ? input : toBuffer(input).subarray(0, 10).toString('latin1') === '-----BEGIN' ? toBuffer(input).toString('latin1') : undefined;
    if (text !== undefined) {
      const blocks = x509.PemConverter.decodeWithHeaders(text.trim()).filter((block) => /CERTIFICATE REQUEST$/.test(block.type));
      if (blocks.length !== 1) throw new Error('expected one "CERTIFICATE REQUEST" PEM block');
      der = Buffer.from(blocks[0]!.rawData);
    } else {
      der = toBuffer(input as Uint8Array);
    }
    request = AsnConvert.parse(der, CertificationRequest);
  } catch (error) {
    throw new PkiError('bad_csr', `not a PKCS#10 certificate request (PEM or DER): ${(error as Error).message}`);
  }
  const spki = request.certificationRequestInfo.subjectPKInfo;
  let key: KeyObject;
  try {
    // An EC key is handed to OpenSSL as a JWK (its coordinates): half the cost of decoding the SPKI.
    const jwk = ecJwkOf(spki);
    key = jwk ? createPublicKey({ key: jwk, format: 'jwk' }) : createPublicKey({ key: Buffer.from(AsnConvert.serialize(spki)), format: 'der', type: 'spki' });
  } catch (error) {
    throw new PkiError('bad_csr', `the CSR's public key cannot be read: ${(error as Error).message}`);
  }
  return { spki, key, der, request };
}

/** Checks the CSR's key type; returns whether it is RSA (for keyEncipherment). */
export function checkCsrKey(key: KeyObject): { rsa: boolean } {
  const details = key.asymmetricKeyDetails ?? {};
  if (key.asymmetricKeyType === 'ec') {
    if (details.namedCurve === 'prime256v1' || details.namedCurve === 'secp384r1') return { rsa: false };
    throw new PkiError('bad_csr', `EC curve ${details.namedCurve ?? 'unknown'} is not accepted: use P-256 or P-384`);
  }
  if (key.asymmetricKeyType === 'rsa') {
    if ((details.modulusLength ?? 0) >= 2048) return { rsa: true };
    throw new PkiError('bad_csr', `RSA keys must be at least 2048 bits (the CSR has ${details.modulusLength ?? 'unknown'})`);
  }
  throw new PkiError('bad_csr', `${key.asymmetricKeyType ?? 'unknown'} keys are not accepted: use ECDSA P-256/P-384 or RSA >= 2048`);
}

/**
 * The CSR's self-signature. Common algorithms are checked with node:crypto over the exact signed
 * bytes (on libuv's thread pool, or synchronously when `sync` — in a signing worker, which is
 * itself off the main thread); anything else (RSA-PSS, ...) through @peculiar/x509's verify().
 */
export async function verifyCsr(csr: ParsedCsr, sync = false): Promise<void> {
  let valid: boolean;
  try {
    const known = CSR_SIGNATURE_HASHES[csr.request.signatureAlgorithm.algorithm];
    const raw = csr.request.certificationRequestInfoRaw;
    if (known && raw && known.keyType === csr.key.asymmetricKeyType) {
      const data = Buffer.from(raw);
      const signature = Buffer.from(csr.request.signature);
      valid = sync ? nodeVerify(known.hash, data, csr.key, signature) : await verifyAsync(known.hash, data, csr.key, signature);
    } else {
      valid = await new x509.Pkcs10CertificateRequest(csr.der).verify();
    }
  } catch (error) {
    throw new PkiError('bad_csr', `the CSR's signature cannot be checked: ${(error as Error).message}`);
  }
  if (!valid) throw new PkiError('bad_csr', "the CSR's signature does not verify with its public key");
}

/**
 * Signs a leaf certificate with the CA's key. The TBSCertificate is assembled from
 * @peculiar/asn1-x509 structures with the CA's issuer name, algorithm and AKI pre-encoded, so
 * the per-certificate work is one encoding and one signature.
 */
export async function signLeaf(ca: LeafSigner, params: LeafParams, now: number, clockSkewMs: number): Promise<SignedLeaf> {
  // X.509 times have a resolution of one second.
  const notBeforeMs = Math.floor((now - clockSkewMs) / 1000) * 1000;
  const notAfterMs = Math.floor(Math.min(now + params.ttlMs, ca.notAfterMs) / 1000) * 1000;
  const serial = randomSerial();
  const ski = createHash('sha1').update(Buffer.from(params.spki.subjectPublicKey)).digest();
  const tbs = new asn1X509.TBSCertificate({
    version: asn1X509.Version.v3,
    serialNumber: new Uint8Array(Buffer.from(serial, 'hex')).buffer,
    signature: ca.asnSignatureAlgorithm,
    issuer: ca.asnSubject,
    validity: new asn1X509.Validity({ notBefore: new Date(notBeforeMs), notAfter: new Date(notAfterMs) }),
    subject: params.subject,
    subjectPublicKeyInfo: params.spki,
    extensions: new asn1X509.Extensions([
      leafExtensions().bc,
      params.keyUsage,
      params.eku,
      sanExtension(params.sans),
      ca.asnAki,
      new asn1X509.Extension({
        extnID: asn1X509.id_ce_subjectKeyIdentifier,
        critical: false,
        extnValue: new OctetString(AsnConvert.serialize(new asn1X509.SubjectKeyIdentifier(new Uint8Array(ski).buffer))),
      }),
    ]),
  });
  // The TBSCertificate's ASN.1 tree is built once: encoded here for the signature, then embedded
  // as is in the Certificate (a convertible that hands the serializer the same tree).
  const tbsAsn = AsnSerializer.toASN(tbs);
  const signed = await webcrypto.subtle.sign({ ...ca.signingAlgorithm, ...ca.signingKey.algorithm } as never, ca.signingKey, tbsAsn.toBER(false));
  const signatureValue =
    ca.signingAlgorithm.name === 'ECDSA' ? ecSignatureFormatter.toAsnSignature(ca.signingKey.algorithm as never, signed) : signed;
  if (!signatureValue) throw new Error('cannot encode the ECDSA signature');
  const prebuilt: IAsnConvertible = {
    toASN: () => tbsAsn,
    toSchema: () => tbsAsn,
    fromASN: () => {
      throw new Error('not parsable');
    },
  };
  const der = AsnConvert.serialize(
    new asn1X509.Certificate({ tbsCertificate: prebuilt as unknown as asn1X509.TBSCertificate, signatureAlgorithm: ca.asnSignatureAlgorithm, signatureValue }),
  );
  return { certPem: x509.PemConverter.encode(der, 'CERTIFICATE'), serial, notBeforeMs, notAfterMs };
}

/** The whole agent-certificate path from a CSR: parse, key check, signature check, sign. */
export async function issueAgentLeaf(
  ca: LeafSigner,
  request: { csr: string | Uint8Array; agent: string; spiffeId: string; ttlMs: number; now: number; clockSkewMs: number },
  syncVerify = false,
): Promise<SignedLeaf> {
  const csr = parseCsr(request.csr);
  const { rsa } = checkCsrKey(csr.key);
  await verifyCsr(csr, syncVerify);
  return signLeaf(
    ca,
    {
      subject: commonName(request.agent),
      spki: csr.spki,
      sans: [{ type: 'url', value: request.spiffeId }],
      keyUsage: rsa ? leafExtensions().kuSignEncipher : leafExtensions().kuSign,
      eku: leafExtensions().ekuBoth,
      ttlMs: request.ttlMs,
    },
    request.now,
    request.clockSkewMs,
  );
}
