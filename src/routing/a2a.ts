import { createParser, type EventSourceMessage } from 'eventsource-parser';

/**
 * What the gateway needs to know about an A2A JSON-RPC call made to a tenant's endpoint: which
 * method (A2A v1.0 names and the v0.3 ones), the text to infer the intent from, and the task or
 * context it continues. Parsed with JSON.parse; nothing here rewrites the call.
 */

export type A2aVersion = '1.0' | '0.3';

interface MethodInfo {
  version: A2aVersion;
  /** message: a (possibly new) message to delegate; task: a call about an existing task. */
  kind: 'message' | 'task';
  stream: boolean;
}

const METHODS: Readonly<Record<string, MethodInfo>> = {
  SendMessage: { version: '1.0', kind: 'message', stream: false },
  SendStreamingMessage: { version: '1.0', kind: 'message', stream: true },
  GetTask: { version: '1.0', kind: 'task', stream: false },
  CancelTask: { version: '1.0', kind: 'task', stream: false },
  SubscribeToTask: { version: '1.0', kind: 'task', stream: true },
  'message/send': { version: '0.3', kind: 'message', stream: false },
  'message/stream': { version: '0.3', kind: 'message', stream: true },
  'tasks/get': { version: '0.3', kind: 'task', stream: false },
  'tasks/cancel': { version: '0.3', kind: 'task', stream: false },
  'tasks/resubscribe': { version: '0.3', kind: 'task', stream: true },
};

export const TENANT_A2A_METHODS = Object.keys(METHODS);

export type A2aCall =
  | {
      kind: 'message';
      method: string;
      id: unknown;
      version: A2aVersion;
      stream: boolean;
      /** The text parts of the message, joined, at most maxTextChars. */
      text: string;
      /** The task or conversation the message continues (absent or empty: a new one). */
      taskId?: string;
      contextId?: string;
    }
  | { kind: 'task'; method: string; id: unknown; version: A2aVersion; stream: boolean; taskId: string };

/** A JSON-RPC error to answer with (the call cannot be routed). */
export class A2aCallError extends Error {
  constructor(
    readonly rpcCode: number,
    message: string,
    readonly id: unknown = null,
  ) {
    super(message);
  }
}

const PARSE_ERROR = -32700;
const INVALID_REQUEST = -32600;
const METHOD_NOT_FOUND = -32601;
const INVALID_PARAMS = -32602;

type Json = Record<string, unknown>;
const isObject = (value: unknown): value is Json => typeof value === 'object' && value !== null && !Array.isArray(value);
const nonEmptyString = (value: unknown): string | undefined => (typeof value === 'string' && value.length > 0 ? value : undefined);

/** Reads one JSON-RPC request (batches are not part of A2A). Throws A2aCallError. */
export function inspectA2aCall(body: Buffer, maxTextChars: number): A2aCall {
  let request: unknown;
  try {
    request = JSON.parse(body.toString('utf8'));
  } catch {
    throw new A2aCallError(PARSE_ERROR, 'the body is not JSON');
  }
  if (!isObject(request) || request.jsonrpc !== '2.0' || typeof request.method !== 'string') {
    throw new A2aCallError(INVALID_REQUEST, 'not a JSON-RPC 2.0 request', isObject(request) ? (request.id ?? null) : null);
  }
  const id = request.id ?? null;
  const info = Object.hasOwn(METHODS, request.method) ? METHODS[request.method] : undefined;
  if (!info) {
    throw new A2aCallError(METHOD_NOT_FOUND, `a tenant's endpoint serves ${TENANT_A2A_METHODS.join(', ')}; "${request.method}" is not one of them`, id);
  }
  const params = request.params;
  if (!isObject(params)) throw new A2aCallError(INVALID_PARAMS, `${request.method}: "params" must be an object`, id);
  if (info.kind === 'task') {
    const taskId = nonEmptyString(params.id);
    if (!taskId) throw new A2aCallError(INVALID_PARAMS, `${request.method}: "params.id" (the task id) is required`, id);
    return { kind: 'task', method: request.method, id, version: info.version, stream: info.stream, taskId };
  }
  const message = params.message;
  if (!isObject(message) || !Array.isArray(message.parts)) {
    throw new A2aCallError(INVALID_PARAMS, `${request.method}: "params.message" with "parts" is required`, id);
  }
  const taskId = nonEmptyString(message.taskId);
  const contextId = nonEmptyString(message.contextId);
  return {
    kind: 'message',
    method: request.method,
    id,
    version: info.version,
    stream: info.stream,
    text: textOf(message.parts, maxTextChars),
    ...(taskId ? { taskId } : {}),
    ...(contextId ? { contextId } : {}),
  };
}

/** The text parts (v1.0 `{ text }`, v0.3 `{ kind: 'text', text }`), joined by newlines, cut at maxChars. */
function textOf(parts: unknown[], maxChars: number): string {
  let text = '';
  for (const part of parts) {
    if (!isObject(part) || typeof part.text !== 'string') continue;
    text += (text ? '\n' : '') + part.text;
    if (text.length >= maxChars) return text.slice(0, maxChars);
  }
  return text;
}

export interface LearnedIds {
  taskId?: string;
  contextId?: string;
}

/**
 * The task and context ids an agent's answer names: a v1.0 result (`{ task }`, `{ message }`,
 * `{ statusUpdate }`, `{ artifactUpdate }`) or a v0.3 one (`kind: 'task' | 'message' |
 * 'status-update' | 'artifact-update'`).
 */
export function idsOfResult(result: unknown): LearnedIds {
  if (!isObject(result)) return {};
  let item: Json = result;
  for (const key of ['task', 'message', 'statusUpdate', 'artifactUpdate']) {
    if (isObject(result[key])) {
      item = result[key] as Json;
      const taskId = nonEmptyString(key === 'task' ? item.id : item.taskId);
      const contextId = nonEmptyString(item.contextId);
      return { ...(taskId ? { taskId } : {}), ...(contextId ? { contextId } : {}) };
    }
  }
  const taskId = nonEmptyString(item.kind === 'task' ? item.id : item.taskId);
  const contextId = nonEmptyString(item.contextId);
  return { ...(taskId ? { taskId } : {}), ...(contextId ? { contextId } : {}) };
}

/**
 * Watches the bytes of an agent's answer (a JSON-RPC response or an SSE stream of them) for the
 * first task and context ids, within `limit` bytes; calls `found` once when it has both or the
 * answer ends. It only reads: the answer goes to the caller unchanged and unbuffered.
 */
export class ResultIdWatcher {
  private seen = 0;
  private done = false;
  private readonly ids: LearnedIds = {};
  private readonly json: Buffer[] = [];
  private readonly sse;

  constructor(
    private readonly stream: boolean,
    private readonly limit: number,
    private readonly found: (ids: LearnedIds) => void,
  ) {
    this.sse = stream ? createParser({ onEvent: (event: EventSourceMessage) => this.onEvent(event.data) }) : undefined;
  }

  write(chunk: Buffer | string): void {
    if (this.done) return;
    const bytes = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
    this.seen += bytes.length;
    if (this.sse) this.sse.feed(bytes.toString('utf8'));
    else this.json.push(bytes);
    if (this.seen > this.limit) this.finish();
  }

  end(): void {
    if (this.done) return;
    if (!this.sse) this.onEvent(Buffer.concat(this.json).toString('utf8'));
    this.finish();
  }

  private onEvent(data: string): void {
    if (this.done) return;
    let response: unknown;
    try {
      response = JSON.parse(data);
    } catch {
      return;
    }
    if (!isObject(response)) return;
    const ids = idsOfResult(response.result);
    this.ids.taskId ??= ids.taskId;
    this.ids.contextId ??= ids.contextId;
    if (this.ids.taskId && this.ids.contextId) this.finish();
  }

  private finish(): void {
    if (this.done) return;
    this.done = true;
    this.json.length = 0;
    if (this.ids.taskId || this.ids.contextId) this.found(this.ids);
  }
}
