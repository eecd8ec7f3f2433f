import type { Readable } from 'node:stream';
import { request } from 'undici';

/** Why a scorer gave no scores: it decides which counter goes up. */
export type ScorerFailureReason = 'timeout' | 'http' | 'network' | 'invalid' | 'config';

export class ScorerError extends Error {
  constructor(
    readonly reason: ScorerFailureReason,
    message: string,
  ) {
    super(message);
    this.name = 'ScorerError';
  }
}

export interface PostJsonOptions {
  /** Aborts the call (the router's per-scorer deadline). */
  signal: AbortSignal;
  /** A larger answer is refused (it is never buffered whole). */
  maxBytes: number;
  apiKey?: string;
}

/**
 * POSTs a JSON body and returns the parsed JSON answer of a 2xx response. One attempt, no retry:
 * this runs on the request path. Every failure is a ScorerError.
 */
export async function postJson(url: string, body: unknown, options: PostJsonOptions): Promise<unknown> {
  const { signal, maxBytes } = options;
  let response: Awaited<ReturnType<typeof request>>;
  try {
    response = await request(url, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        accept: 'application/json',
        ...(options.apiKey ? { authorization: `Bearer ${options.apiKey}` } : {}),
      },
      body: JSON.stringify(body),
      signal,
    });
  } catch (err) {
    throw failure(err, signal, url);
  }
  if (response.statusCode < 200 || response.statusCode >= 300) {
    discard(response.body);
    throw new ScorerError('http', `${url} answered ${response.statusCode}`);
  }
  const declared = Number(response.headers['content-length']);
  if (declared > maxBytes) {
    discard(response.body);
    throw new ScorerError('invalid', `${url}: answer larger than ${maxBytes} bytes`);
  }
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of response.body as AsyncIterable<Buffer>) {
      size += chunk.length;
      if (size > maxBytes) {
        discard(response.body);
        throw new ScorerError('invalid', `${url}: answer larger than ${maxBytes} bytes`);
      }
      chunks.push(chunk);
    }
  } catch (err) {
    throw failure(err, signal, url);
  }
  try {
    return JSON.parse(Buffer.concat(chunks, size).toString('utf8'));
  } catch {
    throw new ScorerError('invalid', `${url}: the answer is not JSON`);
  }
}

/** Drops an answer's body (the connection with it); the abort this raises is expected. */
function discard(body: Readable): void {
  body.on('error', () => {});
  body.destroy();
}

function failure(err: unknown, signal: AbortSignal, url: string): ScorerError {
  if (err instanceof ScorerError) return err;
  if (signal.aborted) return signal.reason instanceof ScorerError ? signal.reason : new ScorerError('timeout', `${url}: aborted`);
  const e = err as { code?: string; cause?: { code?: string }; message?: string };
  return new ScorerError('network', `${url}: ${e.cause?.code ?? e.code ?? e.message ?? String(err)}`);
}
