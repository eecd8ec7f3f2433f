import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import type { Keyring } from '../identity/keyring.js';
import type { DurableStore } from '../store/types.js';

/**
 * Per-tenant data-encryption keys: 256 random bits per tenant (and per rotation), wrapped by the
 * master key (`Keyring`, purpose 'tenant-data-key') and used with AES-256-GCM for what the gateway
 * stores for the tenant (audit excerpts, secrets). Rotating the master key re-wraps these keys only;
 * the data they sealed is untouched. Destroying a tenant's keys makes everything sealed with them
 * unreadable (crypto-shredding) without finding and deleting each record.
 */

const PURPOSE = 'tenant-data-key';
const PREFIX = 'dk1.';
const IV_BYTES = 12;
const TAG_BYTES = 16;

export class TenantKeyUnavailable extends Error {
  constructor(readonly tenant: string, detail: string) {
    super(`tenant ${tenant}: ${detail}`);
    this.name = 'TenantKeyUnavailable';
  }
}

type KeyStore = Pick<DurableStore, 'listTenantKeys' | 'putTenantKey' | 'deleteTenantKeys'>;

interface TenantKeySet {
  /** version -> key; the highest version seals new data. */
  keys: Map<number, Buffer>;
  active: number;
}

export class TenantKeys {
  private readonly tenants = new Map<string, TenantKeySet>();

  constructor(
    private readonly store: KeyStore,
    private readonly keyring: Keyring,
  ) {}

  /** Unwraps every stored key once, so sealing and opening stay synchronous on the request path. */
  async load(): Promise<void> {
    for (const record of await this.store.listTenantKeys()) {
      const key = this.keyring.open(PURPOSE, `${record.tenant}/${record.version}`, record.wrappedKey);
      this.install(record.tenant, record.version, key);
    }
  }

  has(tenant: string): boolean {
    return this.tenants.has(tenant);
  }

  /** Creates the tenant's first key if it has none (onboarding). */
  async ensure(tenant: string): Promise<void> {
    if (!this.tenants.has(tenant)) await this.rotate(tenant);
  }

  /** Adds a new key version that seals from now on; older versions keep opening what they sealed. */
  async rotate(tenant: string): Promise<number> {
    const version = (this.tenants.get(tenant)?.active ?? 0) + 1;
    const key = randomBytes(32);
    await this.store.putTenantKey({
      tenant,
      version,
      wrappedKey: this.keyring.seal(PURPOSE, `${tenant}/${version}`, key),
      createdAt: new Date().toISOString(),
    });
    this.install(tenant, version, key);
    return version;
  }

  /** Crypto-shredding: deletes every key of the tenant; what they sealed can no longer be opened. */
  async destroy(tenant: string): Promise<number> {
    const set = this.tenants.get(tenant);
    this.tenants.delete(tenant);
    if (set) for (const key of set.keys.values()) key.fill(0);
    return this.store.deleteTenantKeys(tenant);
  }

  /**
   * Encrypts for the tenant; `context` (e.g. 'audit/<request id>') is bound as associated data with
   * the tenant name, so a sealed value cannot be moved to another tenant or record.
   */
  seal(tenant: string, context: string, plaintext: Buffer | string): string {
    const set = this.tenants.get(tenant);
    if (!set) throw new TenantKeyUnavailable(tenant, 'has no data key (unknown or offboarded tenant)');
    const iv = randomBytes(IV_BYTES);
    const cipher = createCipheriv('aes-256-gcm', set.keys.get(set.active)!, iv);
    cipher.setAAD(aad(tenant, context));
    const body = Buffer.concat([cipher.update(plaintext), cipher.final()]);
    return `${PREFIX}${set.active}.${Buffer.concat([iv, cipher.getAuthTag(), body]).toString('base64url')}`;
  }

  open(tenant: string, context: string, sealed: string): Buffer {
    const match = /^dk1\.(\d+)\.([A-Za-z0-9_-]+)$/.exec(sealed);
    if (!match) throw new TenantKeyUnavailable(tenant, 'the value is not sealed with a tenant data key');
    const key = this.tenants.get(tenant)?.keys.get(Number(match[1]));
    if (!key) throw new TenantKeyUnavailable(tenant, `data key version ${match[1]} is gone (destroyed at offboarding?)`);
    const raw = Buffer.from(match[2]!, 'base64url');
    if (raw.length < IV_BYTES + TAG_BYTES) throw new TenantKeyUnavailable(tenant, 'sealed value is truncated');
    const decipher = createDecipheriv('aes-256-gcm', key, raw.subarray(0, IV_BYTES));
    decipher.setAAD(aad(tenant, context));
    decipher.setAuthTag(raw.subarray(IV_BYTES, IV_BYTES + TAG_BYTES));
    try {
      return Buffer.concat([decipher.update(raw.subarray(IV_BYTES + TAG_BYTES)), decipher.final()]);
    } catch {
      throw new TenantKeyUnavailable(tenant, `sealed value for ${context} does not open (tampered, or sealed for another record)`);
    }
  }

  private install(tenant: string, version: number, key: Buffer): void {
    let set = this.tenants.get(tenant);
    if (!set) {
      set = { keys: new Map(), active: 0 };
      this.tenants.set(tenant, set);
    }
    set.keys.set(version, key);
    if (version > set.active) set.active = version;
  }
}

function aad(tenant: string, context: string): Buffer {
  return Buffer.from(`${tenant}\n${context}`, 'utf8');
}
