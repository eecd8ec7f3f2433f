import type { IncomingMessage, ServerResponse } from 'node:http';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { z } from 'zod';
import { configIssueMessages, formatConfigPath } from '../config/index.js';
import { RegistryError, type RegistryAdmin, type RegistryErrorCode } from '../registry/types.js';
import type { TenantRecord } from '../store/types.js';

export const MAX_ADMIN_BODY_BYTES = 1024 * 1024;

/** An error the Admin API answers with `{"error":{"code","message"}}`. */
export class AdminError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
    this.name = 'AdminError';
  }
}

const REGISTRY_STATUS: Record<RegistryErrorCode, number> = {
  not_found: 404,
  conflict: 409,
  managed_by_config: 409,
  invalid: 400,
};

/** Normalises anything a handler throws; undefined means an unexpected failure (500). */
/** The tenant, or a 404 naming it. */
export function tenantOrThrow(registry: Pick<RegistryAdmin, 'getTenant'>, name: string): TenantRecord {
  const tenant = registry.getTenant(name);
  if (!tenant) throw new AdminError(404, 'not_found', `tenant "${name}" does not exist`);
  return tenant;
}

export function toAdminError(err: unknown): AdminError | undefined {
  if (err instanceof AdminError) return err;
  if (err instanceof RegistryError) return new AdminError(REGISTRY_STATUS[err.code], err.code, err.message);
  return undefined;
}

/** `endpoints[0]: must be ...; tags: ...`: the same notation and wording the config loader uses for YAML. */
function describeIssues(error: z.ZodError, root: string): string {
  return error.issues.map((issue) => `${issue.path.length ? formatConfigPath(issue.path) : root}: ${issue.message}`).join('; ');
}

/** Validates like the config loader does, so the API and the YAML file word their errors alike. */
export function validate<T>(schema: z.ZodType<T>, value: unknown, root: string): T {
  const parsed = schema.safeParse(value, { error: configIssueMessages });
  if (!parsed.success) throw new AdminError(400, 'invalid', describeIssues(parsed.error, root));
  return parsed.data;
}

function isJsonContentType(header: string | undefined): boolean {
  if (!header) return false;
  const type = header.split(';', 1)[0]!.trim().toLowerCase();
  return type === 'application/json' || (type.startsWith('application/') && type.endsWith('+json'));
}

/** Reads and parses a JSON request body of at most MAX_ADMIN_BODY_BYTES. */
export async function readJsonBody(req: IncomingMessage): Promise<unknown> {
  if (!isJsonContentType(req.headers['content-type'])) {
    throw new AdminError(415, 'unsupported_media_type', 'the request body must be JSON (content-type: application/json)');
  }
  const tooLarge = () =>
    new AdminError(413, 'body_too_large', `the request body is over ${MAX_ADMIN_BODY_BYTES} bytes`, { connection: 'close' });
  const declared = Number(req.headers['content-length'] ?? 0);
  if (declared > MAX_ADMIN_BODY_BYTES) throw tooLarge();
  // Listeners rather than for-await: leaving a for-await early would destroy the request, and with it
  // the socket the 413 must still be written to.
  const chunks = await new Promise<Buffer[]>((resolve, reject) => {
    const received: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size <= MAX_ADMIN_BODY_BYTES) return void received.push(chunk);
      req.off('data', onData);
      req.off('end', onEnd);
      reject(tooLarge());
    };
    const onEnd = () => resolve(received);
    req.on('data', onData);
    req.once('end', onEnd);
    req.once('error', reject);
  });
  const text = Buffer.concat(chunks).toString('utf8');
  if (!text.trim()) throw new AdminError(400, 'bad_request', 'a JSON request body is required');
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new AdminError(400, 'bad_request', `the request body is not valid JSON: ${(err as Error).message}`);
  }
}

export interface Reply {
  status: number;
  /** Serialised as JSON unless `text` is given. */
  json?: unknown;
  text?: string;
  /** A body produced piece by piece (e.g. JSON Lines), written with backpressure; an error mid-way aborts the response. */
  stream?: AsyncIterable<string>;
  contentType?: string;
  headers?: Record<string, string>;
}

export function send(res: ServerResponse, reply: Reply): void {
  const headers: Record<string, string> = { 'cache-control': 'no-store', ...reply.headers };
  if (reply.stream) {
    res.writeHead(reply.status, { ...headers, 'content-type': reply.contentType ?? 'application/octet-stream' });
    pipeline(Readable.from(reply.stream), res).catch(() => res.destroy());
    return;
  }
  let body: string | undefined;
  if (reply.text !== undefined) {
    body = reply.text;
    headers['content-type'] = reply.contentType ?? 'text/plain; charset=utf-8';
  } else if (reply.json !== undefined) {
    body = JSON.stringify(reply.json);
    headers['content-type'] = reply.contentType ?? 'application/json';
  }
  if (body !== undefined) headers['content-length'] = String(Buffer.byteLength(body));
  res.writeHead(reply.status, headers);
  res.end(body);
}

export function errorReply(error: AdminError): Reply {
  return { status: error.status, json: { error: { code: error.code, message: error.message } }, headers: error.headers };
}
