import type { BufferedBody, RequestContext } from './context.js';
import { errors } from './errors.js';

/**
 * Reads the request body into memory up to `limit` bytes, for stages that must look at it (masking,
 * intent routing). A larger body stops being read once past the limit: `complete` is false, the
 * chunks read so far stay in order and the forwarder sends them followed by the rest of the stream.
 * The result is kept on the context, so a second stage reuses it.
 */
export function readBody(ctx: RequestContext, limit: number): Promise<BufferedBody> {
  if (ctx.body) return Promise.resolve(ctx.body);
  const req = ctx.req;
  const declared = req.headers['content-length'];
  const empty: BufferedBody = { chunks: [], length: 0, complete: true };
  if (declared === '0' || (declared === undefined && !hasStreamedBody(ctx))) {
    ctx.body = empty;
    return Promise.resolve(empty);
  }
  return new Promise<BufferedBody>((resolve, reject) => {
    const body: BufferedBody = { chunks: [], length: 0, complete: false };
    const cleanup = () => {
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onError);
      req.off('aborted', onAborted);
    };
    const onData = (chunk: Buffer) => {
      body.chunks.push(chunk);
      body.length += chunk.length;
      if (body.length > limit) {
        req.pause();
        cleanup();
        ctx.body = body;
        resolve(body);
      }
    };
    const onEnd = () => {
      cleanup();
      body.complete = true;
      ctx.body = body;
      resolve(body);
    };
    const onError = (err: Error) => {
      cleanup();
      reject(err);
    };
    const onAborted = () => {
      cleanup();
      reject(errors.badRequest('the client aborted the request body'));
    };
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('error', onError);
    req.on('aborted', onAborted);
  });
}

function hasStreamedBody(ctx: RequestContext): boolean {
  const req = ctx.req as RequestContext['req'] & { stream?: { endAfterHeaders?: boolean } };
  return ctx.http2 ? !req.stream?.endAfterHeaders : req.headers['transfer-encoding'] !== undefined;
}
