import { request, type Dispatcher } from 'undici';
import { CARD_PATHS, cardProblem } from './card.js';
import type { Endpoint } from './endpoint.js';

export type CardFetchResult =
  | { kind: 'card'; card: Record<string, unknown>; sourceUrl: string; etag?: string }
  | { kind: 'not-modified' }
  /** The agent answered and serves no card at either well-known path. */
  | { kind: 'none' }
  /** The agent could not be asked (unreachable, timeout, oversized or invalid document). */
  | { kind: 'error'; message: string };

export interface CardFetchOptions {
  timeoutMs: number;
  maxBytes: number;
  /** The ETag of the card we hold, for a conditional GET. */
  etag?: string;
}

async function readLimited(body: AsyncIterable<Buffer>, maxBytes: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body) {
    size += chunk.length;
    if (size > maxBytes) throw new Error(`card larger than ${maxBytes} bytes`);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

async function fetchOne(dispatcher: Dispatcher, url: string, options: CardFetchOptions, a2aVersion?: string): Promise<CardFetchResult> {
  const response = await request(url, {
    method: 'GET',
    dispatcher,
    headers: {
      accept: 'application/json',
      ...(options.etag ? { 'if-none-match': options.etag } : {}),
      ...(a2aVersion ? { 'a2a-version': a2aVersion } : {}),
    },
    headersTimeout: options.timeoutMs,
    bodyTimeout: options.timeoutMs,
    signal: AbortSignal.timeout(options.timeoutMs),
  });
  if (response.statusCode === 304) {
    await response.body.dump();
    return { kind: 'not-modified' };
  }
  if (response.statusCode === 400 && !a2aVersion) {
    // A request without A2A-Version means v0.3 (A2A §3.6); an agent that speaks only v1.0 refuses it.
    await response.body.dump({ limit: 64 * 1024 }).catch(() => undefined);
    return fetchOne(dispatcher, url, options, '1.0');
  }
  if (response.statusCode !== 200) {
    await response.body.dump({ limit: 64 * 1024 }).catch(() => undefined);
    return response.statusCode === 404 || response.statusCode === 405 || response.statusCode === 410
      ? { kind: 'none' }
      : { kind: 'error', message: `${url} answered ${response.statusCode}` };
  }
  const declared = Number(response.headers['content-length']);
  if (declared > options.maxBytes) {
    response.body.destroy();
    return { kind: 'error', message: `${url}: card larger than ${options.maxBytes} bytes` };
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse((await readLimited(response.body, options.maxBytes)).toString('utf8'));
  } catch (err) {
    return { kind: 'error', message: `${url}: ${(err as Error).message}` };
  }
  const problem = cardProblem(parsed);
  if (problem) return { kind: 'error', message: `${url} is not an Agent Card: ${problem}` };
  const etag = response.headers.etag;
  return {
    kind: 'card',
    card: parsed as Record<string, unknown>,
    sourceUrl: url,
    ...(typeof etag === 'string' ? { etag } : {}),
  };
}

/**
 * Fetches an agent's A2A Agent Card from its first endpoint that answers: `/.well-known/agent-card.json`
 * (A2A >= 0.3), falling back to `/.well-known/agent.json` (older agents).
 */
export async function fetchAgentCard(
  dispatcherFor: (endpoint: Endpoint) => Dispatcher | Promise<Dispatcher>,
  endpoints: readonly Endpoint[],
  options: CardFetchOptions,
): Promise<CardFetchResult> {
  const ordered = [...endpoints].sort((a, b) => Number(b.healthy) - Number(a.healthy));
  let lastError: CardFetchResult = { kind: 'error', message: 'agent has no endpoint' };
  for (const endpoint of ordered) {
    try {
      const dispatcher = await dispatcherFor(endpoint);
      for (const path of CARD_PATHS) {
        const result = await fetchOne(dispatcher, endpoint.url + path, options);
        if (result.kind !== 'none') return result;
      }
      return { kind: 'none' };
    } catch (err) {
      const e = err as { code?: string; cause?: { code?: string }; message?: string };
      lastError = { kind: 'error', message: `${endpoint.url}: ${e.cause?.code ?? e.code ?? e.message}` };
    }
  }
  return lastError;
}
