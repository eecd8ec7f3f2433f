import { CliError } from './io.js';

export const DEFAULT_ADMIN_URL = 'http://127.0.0.1:9400';

function errorCode(err: unknown): string | undefined {
  const cause = (err as { cause?: { code?: string; errors?: Array<{ code?: string }> } }).cause;
  return cause?.code ?? cause?.errors?.[0]?.code;
}

/** A thin client for the Admin API (`/admin/v1`): turns its JSON errors into CliErrors. */
export class AdminApi {
  readonly baseUrl: string;

  constructor(
    baseUrl: string,
    private readonly token: string | undefined,
  ) {
    this.baseUrl = baseUrl.replace(/\/+$/, '');
  }

  /** `segments` are path segments after /admin/v1, encoded here; `query` entries left undefined are omitted. */
  async call(method: string, segments: readonly string[], body?: unknown, query?: Record<string, string | undefined>): Promise<unknown> {
    const search = new URLSearchParams(Object.entries(query ?? {}).filter((entry): entry is [string, string] => entry[1] !== undefined)).toString();
    const url = `${this.baseUrl}/admin/v1/${segments.map(encodeURIComponent).join('/')}${search ? `?${search}` : ''}`;
    let response: Response;
    try {
      response = await fetch(url, {
        method,
        headers: {
          accept: 'application/json',
          ...(this.token ? { authorization: `Bearer ${this.token}` } : {}),
          ...(body === undefined ? {} : { 'content-type': 'application/json' }),
        },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (err) {
      const code = errorCode(err);
      const reason = code === 'ECONNREFUSED' ? 'connection refused' : (code ?? (err as Error).message);
      throw new CliError(
        `cannot reach the Admin API at ${this.baseUrl} (${reason}); is the gateway running? Point at it with --admin-url or DMSC_ADMIN_URL`,
      );
    }
    const text = await response.text();
    let parsed: unknown;
    try {
      parsed = text ? JSON.parse(text) : undefined;
    } catch {
      parsed = undefined;
    }
    if (response.ok) return parsed;
    const message = (parsed as { error?: { message?: unknown } } | undefined)?.error?.message;
    let problem = typeof message === 'string' ? message : `HTTP ${response.status} from ${url}`;
    if (response.status === 401 && !this.token) problem += ' (no admin token given: use --token or DMSC_ADMIN_TOKEN)';
    throw new CliError(problem);
  }
}
