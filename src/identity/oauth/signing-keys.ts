import {
  calculateJwkThumbprint,
  createLocalJWKSet,
  errors,
  exportJWK,
  exportPKCS8,
  generateKeyPair,
  importPKCS8,
  type CryptoKey,
  type JSONWebKeySet,
  type JWK,
  type JWTVerifyGetKey,
} from 'jose';
import type { IdentityStore, SigningKeyRecord } from '../../store/types.js';
import type { Keyring } from '../keyring.js';

/**
 * The per-tenant token signing keys of the built-in authorization server.
 *
 * ES256 (P-256), generated on a tenant's first token; the private key (PKCS#8 PEM) is sealed by the
 * keyring ('signing-key', context = kid) before it is stored. The kid is the key's RFC 7638 JWK
 * thumbprint. `rotate` makes a new active key and retires the old one; a retired key stays in the
 * JWKS (and verifies) until every token it signed has expired: its retirement time is taken as the
 * creation time of the next key, so it is dropped at that + token TTL + clock skew.
 *
 * Several replicas sharing a store may each create a first key at once; both are valid and both are
 * published, and the newest active one signs. An unknown kid re-reads the store (at most once per
 * `reloadCooldownMs`) so a key created by another replica verifies here too.
 */

const ALG = 'ES256';
const REBUILD_MS = 60_000;

interface TenantKeys {
  records: SigningKeyRecord[];
  published: JSONWebKeySet;
  getKey: JWTVerifyGetKey;
  loadedAt: number;
}

export interface SigningKeysOptions {
  store: IdentityStore;
  keyring: Keyring;
  /** Current token lifetime and clock skew: how long retired keys stay published. */
  retention: () => number;
  /** An active key older than this is rotated on the next signature. Default 30 days. */
  maxKeyAgeMs?: number;
  reloadCooldownMs?: number;
  now?: () => number;
}

export class SigningKeys {
  private readonly tenants = new Map<string, TenantKeys>();
  private readonly loading = new Map<string, Promise<TenantKeys>>();
  private readonly creating = new Map<string, Promise<SigningKeyRecord>>();
  private readonly privateKeys = new Map<string, Promise<CryptoKey>>();
  private readonly now: () => number;

  constructor(private readonly options: SigningKeysOptions) {
    this.now = options.now ?? Date.now;
  }

  private async load(tenant: string, force: boolean): Promise<TenantKeys> {
    const cached = this.tenants.get(tenant);
    // Rebuilt now and then so retired keys leave the published set once their tokens have expired.
    if (cached && !force && this.now() - cached.loadedAt < REBUILD_MS) return cached;
    let pending = this.loading.get(tenant);
    if (!pending) {
      pending = (async () => {
        const records = await this.options.store.listSigningKeys(tenant);
        const keys = this.build(tenant, records);
        this.tenants.set(tenant, keys);
        return keys;
      })().finally(() => this.loading.delete(tenant));
      this.loading.set(tenant, pending);
    }
    return pending;
  }

  private build(tenant: string, all: SigningKeyRecord[]): TenantKeys {
    const records = all.filter((record) => record.tenant === tenant && record.alg === ALG).sort((a, b) => a.createdAt.localeCompare(b.createdAt));
    const now = this.now();
    const retention = this.options.retention();
    const published: JWK[] = [];
    records.forEach((record, index) => {
      if (record.status === 'retired') {
        const next = records[index + 1];
        const retiredAt = next ? Date.parse(next.createdAt) : 0;
        if (retiredAt + retention <= now) return;
      }
      published.push({ ...(record.publicJwk as JWK), kid: record.kid, alg: ALG, use: 'sig' });
    });
    const jwks: JSONWebKeySet = { keys: published };
    const local = createLocalJWKSet(jwks);
    const keys: TenantKeys = { records, published: jwks, getKey: local, loadedAt: now };
    return keys;
  }

  /** Public keys to publish (active + retired-but-still-needed). Creates the first key if none. */
  async jwks(tenant: string): Promise<JSONWebKeySet> {
    await this.activeRecord(tenant);
    const keys = await this.load(tenant, false);
    return structuredClone(keys.published);
  }

  /** A key resolver for jwtVerify over this tenant's published keys; an unknown kid re-reads the store. */
  verifier(tenant: string): JWTVerifyGetKey {
    const cooldown = this.options.reloadCooldownMs ?? 2000;
    return async (header, token) => {
      let keys = await this.load(tenant, false);
      try {
        return await keys.getKey(header, token);
      } catch (error) {
        if (error instanceof errors.JWKSNoMatchingKey && this.now() - keys.loadedAt >= cooldown) {
          keys = await this.load(tenant, true);
          return keys.getKey(header, token);
        }
        throw error;
      }
    };
  }

  private async activeRecord(tenant: string): Promise<SigningKeyRecord> {
    const keys = await this.load(tenant, false);
    const active = keys.records.filter((record) => record.status === 'active').at(-1);
    const maxAge = this.options.maxKeyAgeMs ?? 30 * 24 * 3600_000;
    if (active && Date.parse(active.createdAt) + maxAge > this.now()) return active;
    return this.create(tenant, active ? 'rotate' : 'first');
  }

  /** The key to sign with now: kid + private key. */
  async signingKey(tenant: string): Promise<{ kid: string; key: CryptoKey }> {
    const record = await this.activeRecord(tenant);
    let key = this.privateKeys.get(record.kid);
    if (!key) {
      key = (async () => {
        const pem = this.options.keyring.open('signing-key', record.kid, record.sealedPrivateKey).toString('utf8');
        return importPKCS8(pem, ALG);
      })();
      key.catch(() => this.privateKeys.delete(record.kid));
      this.privateKeys.set(record.kid, key);
    }
    return { kid: record.kid, key: await key };
  }

  /** Makes a new active key and retires the previous ones. Returns the new kid. */
  async rotate(tenant: string): Promise<string> {
    return (await this.create(tenant, 'rotate')).kid;
  }

  private create(tenant: string, why: 'first' | 'rotate'): Promise<SigningKeyRecord> {
    let pending = this.creating.get(tenant);
    if (pending) return pending;
    pending = (async () => {
      const current = await this.load(tenant, true);
      if (why === 'first') {
        const active = current.records.filter((record) => record.status === 'active').at(-1);
        if (active) return active; // another replica (or call) made one meanwhile
      }
      const { publicKey, privateKey } = await generateKeyPair(ALG, { extractable: true });
      const publicJwk = await exportJWK(publicKey);
      const kid = await calculateJwkThumbprint(publicJwk);
      const pem = await exportPKCS8(privateKey);
      const createdAt = new Date(Math.max(this.now(), ...current.records.map((record) => Date.parse(record.createdAt) + 1))).toISOString();
      const record: SigningKeyRecord = {
        kid,
        tenant,
        alg: ALG,
        publicJwk: { kty: publicJwk.kty, crv: publicJwk.crv, x: publicJwk.x, y: publicJwk.y },
        sealedPrivateKey: this.options.keyring.seal('signing-key', kid, pem),
        status: 'active',
        createdAt,
      };
      await this.options.store.putSigningKey(record);
      for (const old of current.records) {
        if (old.status === 'active') await this.options.store.putSigningKey({ ...old, status: 'retired' });
      }
      await this.load(tenant, true);
      return record;
    })().finally(() => this.creating.delete(tenant));
    this.creating.set(tenant, pending);
    return pending;
  }
}
