// @peculiar/x509 resolves its algorithms through tsyringe, which needs the Reflect metadata API.
import 'reflect-metadata';
import { webcrypto } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';
import * as x509 from '@peculiar/x509';

type CryptoKey = webcrypto.CryptoKey;
type CryptoKeyPair = webcrypto.CryptoKeyPair;

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

const ALGORITHM = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
const DAY_MS = 24 * 60 * 60 * 1000;

export interface DevPki {
  dir: string;
  caCertFile: string;
  serverCertFile: string;
  serverKeyFile: string;
  clientCertFile: string;
  clientKeyFile: string;
  caCert: string;
  serverCert: string;
  serverKey: string;
  /** Whether this call created the files (first start). */
  created: boolean;
  /** Issues a server certificate for extra DNS names (e.g. `*.acme.dmsc.localhost`), signed by the dev CA. */
  issueServerCert(dnsNames: string[]): Promise<{ cert: string; key: string }>;
}

function serial(): string {
  const bytes = webcrypto.getRandomValues(new Uint8Array(16));
  bytes[0] = bytes[0]! & 0x7f; // positive INTEGER
  return Buffer.from(bytes).toString('hex');
}

async function keyPem(key: CryptoKey): Promise<string> {
  return x509.PemConverter.encode(await webcrypto.subtle.exportKey('pkcs8', key), 'PRIVATE KEY');
}

async function importKey(pem: string): Promise<CryptoKey> {
  const der = x509.PemConverter.decode(pem)[0]!;
  return webcrypto.subtle.importKey('pkcs8', der, ALGORITHM, false, ['sign']);
}

async function writeAtomic(file: string, contents: string, mode: number): Promise<void> {
  const temp = `${file}.${process.pid}.tmp`;
  await writeFile(temp, contents, { mode });
  await chmod(temp, mode);
  await rename(temp, file);
}

async function leaf(
  ca: { cert: x509.X509Certificate; key: CryptoKey },
  subject: string,
  sans: x509.JsonGeneralName[],
  usages: string[],
  days: number,
): Promise<{ cert: string; key: string }> {
  const keys = (await webcrypto.subtle.generateKey(ALGORITHM, true, ['sign', 'verify'])) as CryptoKeyPair;
  const now = Date.now();
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serial(),
    subject,
    issuer: ca.cert.subject,
    notBefore: new Date(now - 5 * 60 * 1000),
    notAfter: new Date(now + days * DAY_MS),
    signingAlgorithm: ALGORITHM,
    publicKey: keys.publicKey,
    signingKey: ca.key,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension(usages),
      new x509.SubjectAlternativeNameExtension(sans),
      await x509.AuthorityKeyIdentifierExtension.create(ca.cert),
    ],
  });
  return { cert: cert.toString('pem'), key: await keyPem(keys.privateKey) };
}

/**
 * A development PKI in `<stateDir>/tls/`: an ECDSA P-256 CA, a server certificate for localhost
 * and `*.<domain>`, and a client certificate for trying mutual TLS. Created once, reused after.
 * Not for production: the CA key is stored unencrypted (the identity subsystem replaces this).
 */
export async function ensureDevPki(stateDir: string, domain: string): Promise<DevPki> {
  const dir = path.join(stateDir, 'tls');
  const files = {
    caCertFile: path.join(dir, 'ca.crt'),
    caKeyFile: path.join(dir, 'ca.key'),
    serverCertFile: path.join(dir, 'server.crt'),
    serverKeyFile: path.join(dir, 'server.key'),
    clientCertFile: path.join(dir, 'client.crt'),
    clientKeyFile: path.join(dir, 'client.key'),
  };
  await mkdir(dir, { recursive: true, mode: 0o700 });
  let created = false;
  if (!existsSync(files.caCertFile) || !existsSync(files.caKeyFile)) {
    created = true;
    const keys = (await webcrypto.subtle.generateKey(ALGORITHM, true, ['sign', 'verify'])) as CryptoKeyPair;
    const now = Date.now();
    const cert = await x509.X509CertificateGenerator.createSelfSigned({
      serialNumber: serial(),
      name: 'CN=DMSC development CA, O=DMSC',
      notBefore: new Date(now - 5 * 60 * 1000),
      notAfter: new Date(now + 3650 * DAY_MS),
      keys,
      signingAlgorithm: ALGORITHM,
      extensions: [
        new x509.BasicConstraintsExtension(true, 0, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      ],
    });
    await writeAtomic(files.caKeyFile, await keyPem(keys.privateKey), 0o600);
    await writeAtomic(files.caCertFile, cert.toString('pem'), 0o644);
  }
  const caCertPem = await readFile(files.caCertFile, 'utf8');
  const ca = { cert: new x509.X509Certificate(caCertPem), key: await importKey(await readFile(files.caKeyFile, 'utf8')) };

  const issueServerCert = (dnsNames: string[]) =>
    leaf(
      ca,
      `CN=${dnsNames[0] ?? 'localhost'}`,
      [
        ...dnsNames.map((value) => ({ type: 'dns' as const, value })),
        { type: 'ip', value: '127.0.0.1' },
        { type: 'ip', value: '::1' },
      ],
      [x509.ExtendedKeyUsage.serverAuth],
      365,
    );

  if (created || !existsSync(files.serverCertFile) || !existsSync(files.serverKeyFile)) {
    const server = await issueServerCert(['localhost', `*.${domain}`]);
    await writeAtomic(files.serverKeyFile, server.key, 0o600);
    await writeAtomic(files.serverCertFile, server.cert, 0o644);
  }
  if (created || !existsSync(files.clientCertFile) || !existsSync(files.clientKeyFile)) {
    const client = await leaf(
      ca,
      'CN=dev-client',
      [{ type: 'url', value: `spiffe://${domain}/tenant/default/agent/dev-client` }],
      [x509.ExtendedKeyUsage.clientAuth],
      365,
    );
    await writeAtomic(files.clientKeyFile, client.key, 0o600);
    await writeAtomic(files.clientCertFile, client.cert, 0o644);
  }
  return {
    dir,
    caCertFile: files.caCertFile,
    serverCertFile: files.serverCertFile,
    serverKeyFile: files.serverKeyFile,
    clientCertFile: files.clientCertFile,
    clientKeyFile: files.clientKeyFile,
    caCert: caCertPem,
    serverCert: await readFile(files.serverCertFile, 'utf8'),
    serverKey: await readFile(files.serverKeyFile, 'utf8'),
    created,
    issueServerCert,
  };
}
