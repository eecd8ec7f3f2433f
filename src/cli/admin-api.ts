import { stringValue, type CommandContext, type OptionSpec } from './command.js';
import { CliError } from './io.js';

export const DEFAULT_ADMIN_URL = 'http://127.0.0.1:9400';

/** The options of every command that talks to the Admin API. */
export const API_OPTIONS: Record<string, OptionSpec> = {
  'admin-url': { type: 'string', placeholder: 'URL', help: `Admin API base URL (DMSC_ADMIN_URL; default ${DEFAULT_ADMIN_URL})` },
  token: { type: 'string', placeholder: 'TOKEN', help: 'admin token (DMSC_ADMIN_TOKEN)' },
  json: { type: 'boolean', help: 'print the raw JSON response' },
};

export function adminUrlOf({ values, io }: CommandContext): string {
  return stringValue(values, 'admin-url') ?? (io.env.DMSC_ADMIN_URL || DEFAULT_ADMIN_URL);
}

export function adminTokenOf({ values, io }: CommandContext): string | undefined {
  return stringValue(values, 'token') ?? (io.env.DMSC_ADMIN_TOKEN || undefined);
}

/** The Admin API client for a command's --admin-url / --token (or DMSC_ADMIN_URL / DMSC_ADMIN_TOKEN). */
export function apiFor(context: CommandContext): AdminApi {
  return new AdminApi(adminUrlOf(context), adminTokenOf(context));
}

/** Prints the response as JSON with --json, else as `human` lines. */
export function show(context: CommandContext, body: unknown, human: () => string[]): number {
  const lines = context.values.json ? (body === undefined ? [] : [JSON.stringify(body, null, 2)]) : human();
  for (const line of lines) context.io.out(line);
  return 0;
}

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
