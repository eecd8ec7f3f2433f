import { createHash, randomBytes } from 'node:crypto';
import type { AuditLog } from '../audit/index.js';
import type { BootstrapTokenRecord, ConsumeTokenResult, IdentityStore } from '../store/types.js';

/** Prefix of every bootstrap token (recognisable by secret scanners and in logs that mask it). */
export const BOOTSTRAP_TOKEN_PREFIX = 'dmsc_bt_';
export const MIN_BOOTSTRAP_TTL_MS = 60_000;
export const MAX_BOOTSTRAP_TTL_MS = 7 * 24 * 60 * 60 * 1000;
export const DEFAULT_BOOTSTRAP_TTL_MS = 60 * 60 * 1000;

/** A token as lists show it: never the token, never its hash. */
export interface BootstrapTokenView {
  id: string;
  tenant: string;
  agent: string;
  createdAt: string;
  expiresAt: string;
  usedAt?: string;
  status: 'unused' | 'used' | 'expired';
}

export interface CreatedBootstrapToken {
  /** The secret; shown once, stored only as a SHA-256 hash. */
  token: string;
  id: string;
  expiresAt: string;
}

/** SHA-256 hex of a token: tokens carry 256 random bits, so a fast hash is enough (nothing to brute-force). */
export function hashBootstrapToken(token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('hex');
}

/**
 * One-time, expiring enrollment tokens bound to one tenant/agent. Every use and failed use is
 * audited as action `enroll.token` (decision allow/deny; reason valid/used/expired/unknown).
 */
export class BootstrapTokens {
  private readonly now: () => number;

  constructor(
    private readonly store: Pick<IdentityStore, 'putBootstrapToken' | 'consumeBootstrapToken' | 'listBootstrapTokens'>,
    private readonly audit: Pick<AuditLog, 'record'>,
    options: { now?: () => number } = {},
  ) {
    this.now = options.now ?? Date.now;
  }

  async create(tenant: string, agent: string, ttlMs: number = DEFAULT_BOOTSTRAP_TTL_MS, actor = 'admin-token'): Promise<CreatedBootstrapToken> {
    if (!Number.isInteger(ttlMs) || ttlMs < MIN_BOOTSTRAP_TTL_MS || ttlMs > MAX_BOOTSTRAP_TTL_MS) {
      throw new RangeError(`ttlMs must be an integer from ${MIN_BOOTSTRAP_TTL_MS} (1 min) to ${MAX_BOOTSTRAP_TTL_MS} (7 days)`);
    }
    const token = BOOTSTRAP_TOKEN_PREFIX + randomBytes(32).toString('base64url');
    const id = 'bt_' + randomBytes(6).toString('hex');
    const now = this.now();
    const record: BootstrapTokenRecord = {
      id,
      tokenHash: hashBootstrapToken(token),
      tenant,
      agent,
      createdAt: new Date(now).toISOString(),
      expiresAt: new Date(now + ttlMs).toISOString(),
    };
    await this.store.putBootstrapToken(record);
    this.audit.record({
      tenant,
      actor,
      action: 'enroll.token.create',
      target: `${tenant}/${agent}`,
      decision: 'allow',
      reason: `token ${id}, expires ${record.expiresAt}`,
    });
    return { token, id, expiresAt: record.expiresAt };
  }

  /**
   * Single use: atomically marks the token used if it exists, is unused and unexpired (at `now`,
   * default the clock). Audited either way; the token itself never reaches the audit trail.
   */
  async consume(token: string, requestId?: string, now: number = this.now()): Promise<ConsumeTokenResult> {
    const result: ConsumeTokenResult = token.startsWith(BOOTSTRAP_TOKEN_PREFIX)
      ? await this.store.consumeBootstrapToken(hashBootstrapToken(token), new Date(now).toISOString())
      : { ok: false, reason: 'unknown' };
    const record = result.token;
    this.audit.record({
      ...(record ? { tenant: record.tenant } : {}),
      actor: record ? `bootstrap-token:${record.id}` : 'anonymous',
      action: 'enroll.token',
      ...(record ? { target: `${record.tenant}/${record.agent}` } : {}),
      decision: result.ok ? 'allow' : 'deny',
      reason: result.ok ? 'valid' : result.reason,
      ...(requestId ? { requestId } : {}),
    });
    return result;
  }

  async list(tenant?: string): Promise<BootstrapTokenView[]> {
    const now = this.now();
    return (await this.store.listBootstrapTokens(tenant)).map((record) => ({
      id: record.id,
      tenant: record.tenant,
      agent: record.agent,
      createdAt: record.createdAt,
      expiresAt: record.expiresAt,
      ...(record.usedAt ? { usedAt: record.usedAt } : {}),
      status: record.usedAt ? 'used' : Date.parse(record.expiresAt) <= now ? 'expired' : 'unused',
    }));
  }
}
