import { randomFillSync } from 'node:crypto';

// Ids are drawn from a pooled random buffer: one getrandom() call per 256 ids instead of one per id.
const POOL_BYTES = 8192;
const pool = Buffer.allocUnsafe(POOL_BYTES);
let offset = POOL_BYTES;

function randomHex(bytes: number): string {
  if (offset + bytes > POOL_BYTES) {
    randomFillSync(pool);
    offset = 0;
  }
  const hex = pool.toString('hex', offset, offset + bytes);
  offset += bytes;
  return hex;
}

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;
const TRACEPARENT = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;

/** Keeps a caller-supplied id when it is well-formed, so agents can correlate across hops. */
export function requestIdFrom(incoming: string | string[] | undefined): string {
  if (typeof incoming === 'string' && REQUEST_ID.test(incoming)) return incoming;
  return randomHex(16);
}

/**
 * W3C trace context: continue the caller's trace with a new span id (the gateway is a hop), or
 * start a new sampled trace.
 */
export function nextTraceparent(incoming: string | string[] | undefined): string {
  if (typeof incoming === 'string') {
    const match = TRACEPARENT.exec(incoming);
    if (match && match[1] !== 'ff' && !/^0+$/.test(match[2]!) && !/^0+$/.test(match[3]!)) {
      return `00-${match[2]}-${randomHex(8)}-${match[4]}`;
    }
  }
  return `00-${randomHex(16)}-${randomHex(8)}-01`;
}
