import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';

/**
 * The gateway's master key and the keys derived from it. Everything secret the gateway stores (CA
 * private keys, token signing keys, later tenant data keys) is sealed with AES-256-GCM under a
 * key-encryption key derived from the master key with HKDF-SHA256, one per purpose, so the master
 * key itself never encrypts data and can be rotated by re-wrapping.
 */

const MASTER_KEY_BYTES = 32;
const SEALED_VERSION = 1;
const IV_BYTES = 12;
const TAG_BYTES = 16;

/** Where the master key comes from. A custom provider (KMS, HSM, vault) implements `load`. */
export interface MasterKeyProvider {
  readonly description: string;
  load(): Promise<Buffer>;
}

function decodeKey(text: string, source: string): Buffer {
  const trimmed = text.trim();
  const key = /^[0-9a-fA-F]{64}$/.test(trimmed) ? Buffer.from(trimmed, 'hex') : Buffer.from(trimmed, 'base64');
  if (key.length !== MASTER_KEY_BYTES) {
    throw new Error(`${source}: the master key must be ${MASTER_KEY_BYTES} bytes, as 64 hex digits or base64 (got ${key.length} bytes)`);
  }
  return key;
}

/** A key in an environment variable (hex or base64). */
export function envMasterKey(variable: string, env: NodeJS.ProcessEnv): MasterKeyProvider {
  return {
    description: `environment variable ${variable}`,
    async load() {
      const value = env[variable];
      if (!value) throw new Error(`environment variable ${variable} is not set`);
      return decodeKey(value, variable);
    },
  };
}

/**
 * A key in a file (hex or base64). With `create`, a missing file is generated (mode 0600): the
 * embedded default, so `npm start` works with no setup.
 */
export function fileMasterKey(file: string, options: { create: boolean }): MasterKeyProvider {
  return {
    description: `file ${file}`,
    async load() {
      if (!existsSync(file)) {
        if (!options.create) throw new Error(`master key file ${file} does not exist`);
        await mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
        const temp = `${file}.${process.pid}.tmp`;
        await writeFile(temp, randomBytes(MASTER_KEY_BYTES).toString('hex') + '\n', { mode: 0o600 });
        await chmod(temp, 0o600);
        await rename(temp, file);
      }
      return decodeKey(await readFile(file, 'utf8'), file);
    },
  };
}

/** Seals and opens secrets under keys derived from the master key. Never exposes a key. */
export class Keyring {
  private readonly keks = new Map<string, Buffer>();

  private constructor(private readonly master: Buffer) {}

  static async open(provider: MasterKeyProvider): Promise<Keyring> {
    return new Keyring(await provider.load());
  }

  /** For tests and tools that hold the key bytes already. */
  static fromKey(key: Buffer): Keyring {
    if (key.length !== MASTER_KEY_BYTES) throw new Error(`master key must be ${MASTER_KEY_BYTES} bytes`);
    return new Keyring(Buffer.from(key));
  }

  /** A non-secret id of the master key (HKDF-derived): tells which key sealed a state directory. */
  fingerprint(): string {
    return Buffer.from(hkdfSync('sha256', this.master, Buffer.alloc(0), 'dmsc/master-key-id', 16)).toString('hex');
  }

  private kek(purpose: string): Buffer {
    let key = this.keks.get(purpose);
    if (!key) {
      key = Buffer.from(hkdfSync('sha256', this.master, Buffer.alloc(0), `dmsc/kek/${purpose}`, 32));
      this.keks.set(purpose, key);
    }
    return key;
  }

  /**
   * Encrypts `plaintext` for `purpose` (e.g. 'ca-key'); `context` (e.g. the CA's id) is bound as
   * associated data, so a sealed value cannot be moved to another record and still open.
   */
  seal(purpose: string, context: string, plaintext: Buffer | string): string {
    const iv = randomBytes(IV_BYTES);
    const cipher = createCipheriv('aes-256-gcm', this.kek(purpose), iv);
    cipher.setAAD(Buffer.from(context, 'utf8'));
    const body = Buffer.concat([cipher.update(plaintext), cipher.final()]);
    return Buffer.concat([Buffer.from([SEALED_VERSION]), iv, cipher.getAuthTag(), body]).toString('base64');
  }

  open(purpose: string, context: string, sealed: string): Buffer {
    const raw = Buffer.from(sealed, 'base64');
    if (raw.length < 1 + IV_BYTES + TAG_BYTES || raw[0] !== SEALED_VERSION) throw new Error('sealed value is malformed');
    const iv = raw.subarray(1, 1 + IV_BYTES);
    const tag = raw.subarray(1 + IV_BYTES, 1 + IV_BYTES + TAG_BYTES);
    const decipher = createDecipheriv('aes-256-gcm', this.kek(purpose), iv);
    decipher.setAAD(Buffer.from(context, 'utf8'));
    decipher.setAuthTag(tag);
    try {
      return Buffer.concat([decipher.update(raw.subarray(1 + IV_BYTES + TAG_BYTES)), decipher.final()]);
    } catch {
      throw new Error(`cannot open sealed ${purpose} for ${context}: wrong master key or tampered record`);
    }
  }
}
