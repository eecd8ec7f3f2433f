import { randomBytes, X509Certificate } from 'node:crypto';
import { lstat, mkdir, readdir, readFile, readlink, realpath, rename, rm, symlink, writeFile, chmod } from 'node:fs/promises';
import path from 'node:path';

/**
 * An agent's credential directory, swapped atomically:
 *
 *   DIR/versions/<version>/key.pem   private key (0600)
 *   DIR/versions/<version>/cert.pem  leaf + intermediate (what the agent presents)
 *   DIR/versions/<version>/ca.pem    trust bundle (roots; verifies the gateway and peers)
 *   DIR/current  -> versions/<version>   (symlink, replaced with one rename(2))
 *   DIR/key.pem, DIR/cert.pem, DIR/ca.pem -> current/...  (convenience symlinks, created once)
 *
 * A new pair is written completely (files fsync'd by writeFile+rename into a fresh directory)
 * before `current` is switched by renaming a new symlink over it, which is atomic: every path
 * resolution sees either the old or the new directory, never a mix or a half-written file. A
 * reader that opens key.pem and cert.pem separately could straddle one swap; readers that must
 * never pair a key with another certificate resolve DIR/current once (realpath) and read both
 * files from that directory, which is never modified after it is published. The previous version
 * is kept (for readers still in it); older ones are removed.
 */
export interface CredentialSet {
  keyPem: string;
  certPem: string;
  caPem: string;
}

export interface CertificateInfo {
  serial: string;
  notBefore: Date;
  notAfter: Date;
  spiffeId?: string;
}

const KEEP_VERSIONS = 2;

export function certificateInfo(certPem: string): CertificateInfo {
  const cert = new X509Certificate(certPem);
  const uri = /URI:(spiffe:\/\/[^,\s]+)/.exec(cert.subjectAltName ?? '');
  return {
    serial: cert.serialNumber.toLowerCase(),
    notBefore: new Date(cert.validFrom),
    notAfter: new Date(cert.validTo),
    ...(uri ? { spiffeId: uri[1] } : {}),
  };
}

async function exists(file: string): Promise<boolean> {
  try {
    await lstat(file);
    return true;
  } catch {
    return false;
  }
}

/** Writes `content` to `file` by way of a temp file and a rename (never a half-written file). */
async function writeAtomic(file: string, content: string, mode: number): Promise<void> {
  const temp = `${file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  await writeFile(temp, content, { mode, flush: true });
  await chmod(temp, mode);
  await rename(temp, file);
}

/** Points `link` at `target`, replacing any existing link in one rename. */
async function swapSymlink(target: string, link: string): Promise<void> {
  const temp = `${link}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  await symlink(target, temp);
  await rename(temp, link);
}

/** Stores a new credential set in DIR and makes it current. Returns the version directory. */
export async function writeCredentials(dir: string, set: CredentialSet): Promise<string> {
  await mkdir(path.join(dir, 'versions'), { recursive: true, mode: 0o700 });
  const info = certificateInfo(set.certPem);
  const version = `${new Date().toISOString().replace(/[-:.]/g, '')}-${info.serial.slice(0, 16)}`;
  const versionDir = path.join(dir, 'versions', version);
  const staging = `${versionDir}.${randomBytes(4).toString('hex')}.partial`;
  await mkdir(staging, { mode: 0o700 });
  await writeAtomic(path.join(staging, 'key.pem'), set.keyPem, 0o600);
  await writeAtomic(path.join(staging, 'cert.pem'), set.certPem, 0o644);
  await writeAtomic(path.join(staging, 'ca.pem'), set.caPem, 0o644);
  await rename(staging, versionDir);
  await swapSymlink(path.join('versions', version), path.join(dir, 'current'));
  for (const name of ['key.pem', 'cert.pem', 'ca.pem']) {
    const link = path.join(dir, name);
    const target = path.join('current', name);
    if (!(await exists(link)) || (await readlink(link).catch(() => undefined)) !== target) await swapSymlink(target, link);
  }
  await pruneVersions(dir, version);
  return versionDir;
}

async function pruneVersions(dir: string, keep: string): Promise<void> {
  const root = path.join(dir, 'versions');
  const entries = (await readdir(root)).filter((name) => !name.endsWith('.partial')).sort();
  const old = entries.filter((name) => name !== keep).slice(0, Math.max(0, entries.length - KEEP_VERSIONS));
  for (const name of old) await rm(path.join(root, name), { recursive: true, force: true });
}

/** Reads the current set from one resolved version directory (a consistent pair). */
export async function readCredentials(dir: string): Promise<CredentialSet & { versionDir: string }> {
  let versionDir: string;
  try {
    versionDir = await realpath(path.join(dir, 'current'));
  } catch {
    throw new Error(`${dir} holds no credentials (no "current"; run "dmsc cert enroll --out ${dir}" first)`);
  }
  const [keyPem, certPem, caPem] = await Promise.all(
    ['key.pem', 'cert.pem', 'ca.pem'].map((name) => readFile(path.join(versionDir, name), 'utf8')),
  );
  return { keyPem: keyPem!, certPem: certPem!, caPem: caPem!, versionDir };
}

/** Splits a PEM bundle into its certificates (normalised, for de-duplication). */
export function pemCertificates(bundle: string): string[] {
  return [...bundle.matchAll(/-----BEGIN CERTIFICATE-----[A-Za-z0-9+/=\s]+?-----END CERTIFICATE-----/g)].map(
    (match) => match[0].replace(/\r\n/g, '\n').trim() + '\n',
  );
}

/** The certificates of both bundles, each once, in order. */
export function mergeBundles(...bundles: string[]): string {
  const seen = new Set<string>();
  const out: string[] = [];
  for (const bundle of bundles) {
    for (const cert of pemCertificates(bundle)) {
      const key = cert.replace(/\s+/g, '');
      if (!seen.has(key)) (seen.add(key), out.push(cert));
    }
  }
  return out.join('');
}
