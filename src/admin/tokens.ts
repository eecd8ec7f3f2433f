import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';

export const ADMIN_TOKEN_PREFIX = 'dmsc_adm_';

/** A new admin token: a recognisable prefix (for secret scanners) and 256 random bits. */
export function generateAdminToken(): string {
  return ADMIN_TOKEN_PREFIX + randomBytes(32).toString('base64url');
}

/**
 * SHA-256 hex of a token. A plain fast hash is enough because tokens are high-entropy random
 * strings, not passwords: there is nothing to brute-force.
 */
export function hashToken(token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('hex');
}

/** Whether `token` hashes to one of `hashes`, compared in constant time. */
export function tokenMatches(token: string, hashes: readonly string[]): boolean {
  const presented = Buffer.from(hashToken(token), 'hex');
  let match = false;
  for (const hash of hashes) {
    const stored = Buffer.from(hash, 'hex');
    if (stored.length === presented.length && timingSafeEqual(stored, presented)) match = true;
  }
  return match;
}
