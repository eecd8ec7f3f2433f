import { createWriteStream, existsSync } from 'node:fs';
import { once } from 'node:events';
import path from 'node:path';
import { finished } from 'node:stream/promises';
import type { VerifyResult } from '../audit/index.js';
import type { GatewayConfig } from '../config/index.js';
import { AdminApi, adminTokenOf, adminUrlOf, API_OPTIONS as ADMIN_API_OPTIONS } from './admin-api.js';
import { CONFIG_FILE_OPTION, stringValue, type Command, type CommandContext, type OptionSpec } from './command.js';
import { configFileFrom, effectiveConfig } from './config-commands.js';
import { CliError, UsageError } from './io.js';
import { formatTable } from './table.js';

// Without --json: each audit command words its own.
const { json: _json, ...API_OPTIONS } = ADMIN_API_OPTIONS;

const STATE_OPTIONS: Record<string, OptionSpec> = {
  home: { type: 'string', placeholder: 'DIR', help: 'read the database in this state directory (DMSC_HOME; default ./.dmsc)' },
  'state-dir': { type: 'string', placeholder: 'DIR', help: 'same as --home' },
  ...CONFIG_FILE_OPTION,
};

const FILTER_OPTIONS: Record<string, OptionSpec> = {
  tenant: { type: 'string', placeholder: 'TENANT', help: 'only this tenant' },
  action: { type: 'string', placeholder: 'ACTION', help: 'only this action, e.g. authn, enroll.token, cert.revoke, admin.write' },
  since: { type: 'string', placeholder: 'TIME', help: 'only records at or after this ISO-8601 time, e.g. 2025-01-31T00:00:00Z' },
  until: { type: 'string', placeholder: 'TIME', help: 'only records before this ISO-8601 time' },
  after: { type: 'string', placeholder: 'SEQ', help: 'only records after this sequence number' },
};

interface AuditRecordView {
  seq: number;
  time: string;
  tenant?: string;
  actor?: string;
  action: string;
  target?: string;
  decision: string;
  reason?: string;
}

interface FilterQuery {
  [name: string]: string | undefined;
  tenant?: string | undefined;
  action?: string | undefined;
  since?: string | undefined;
  until?: string | undefined;
  after?: string | undefined;
  limit?: string | undefined;
}

function filterQuery(context: CommandContext, command: string): FilterQuery {
  const value = (name: string) => stringValue(context.values, name);
  for (const name of ['since', 'until']) {
    const time = value(name);
    if (time !== undefined && (!/^\d{4}-\d{2}-\d{2}/.test(time) || Number.isNaN(Date.parse(time)))) {
      throw new UsageError(`--${name}: "${time}" is not an ISO-8601 time (e.g. 2025-01-31 or 2025-01-31T12:00:00Z)`, command);
    }
  }
  const after = value('after');
  if (after !== undefined && !/^\d+$/.test(after)) throw new UsageError(`--after: "${after}" is not a sequence number`, command);
  return { tenant: value('tenant'), action: value('action'), since: value('since'), until: value('until'), after };
}

function wantsLocal(context: CommandContext): boolean {
  return stringValue(context.values, 'home') !== undefined || stringValue(context.values, 'state-dir') !== undefined;
}

/** The state directory and its opened store, for commands that read the database directly. */
async function openLocalStore(context: CommandContext) {
  const { values, io } = context;
  const home = stringValue(values, 'home') ?? stringValue(values, 'state-dir');
  const { config, stateDir } = await effectiveConfig(configFileFrom(values, io), { home }, io.env);
  // The store pulls in the native SQLite binding: load it only for the commands that need it.
  const { openStore, STORE_FILE } = await import('../store/index.js');
  if (!existsSync(path.join(stateDir, STORE_FILE))) {
    throw new CliError(`no gateway database in ${path.resolve(stateDir)}: point at the gateway's state with --home DIR or DMSC_HOME`);
  }
  return { config, stateDir, store: await openStore(stateDir) };
}

/** The master key as the gateway finds it (config identity.masterKey, else <state>/master.key); never created here. */
async function localKeyring(config: GatewayConfig, stateDir: string, env: NodeJS.ProcessEnv) {
  const [{ Keyring }, { masterKeyProvider }] = await Promise.all([import('../identity/keyring.js'), import('../identity/master-key.js')]);
  const provider = masterKeyProvider(config, stateDir, env, { createDefault: false });
  try {
    return { keyring: await Keyring.open(provider) };
  } catch (err) {
    return { unavailable: (err as Error).message };
  }
}

function describeVerdict(result: VerifyResult): string[] {
  const keys = result.keysAuthenticated
    ? []
    : ['note: checkpoint keys were not authenticated against the master key (a key added to the database would be trusted)'];
  if (result.ok) {
    const range = result.records ? ` (seq 1-${result.lastSeq})` : '';
    return [`audit trail intact: ${result.records} records${range}, ${result.checkpoints} signed checkpoints; last hash ${result.lastHash}`, ...keys];
  }
  return [`audit trail NOT intact: first bad record seq ${result.seq} (${result.problem}): ${result.message}`, ...keys];
}

/** Streams a response body line by line to `write` (no trailing newline per line); returns the line count. */
async function streamLines(response: Response, write: (line: string) => void | Promise<void>): Promise<number> {
  const decoder = new TextDecoder();
  let pending = '';
  let lines = 0;
  for await (const chunk of response.body as unknown as AsyncIterable<Uint8Array>) {
    pending += decoder.decode(chunk, { stream: true });
    let newline: number;
    while ((newline = pending.indexOf('\n')) >= 0) {
      await write(pending.slice(0, newline));
      pending = pending.slice(newline + 1);
      lines++;
    }
  }
  pending += decoder.decode();
  if (pending) throw new Error('the export ended in the middle of a record');
  return lines;
}

export const auditCommands: Command[] = [
  {
    name: 'audit list',
    positionals: { min: 0, max: 0 },
    summary: 'list audit records (oldest first)',
    options: {
      ...FILTER_OPTIONS,
      limit: { type: 'string', placeholder: 'N', help: 'at most N records (default 100, max 1000)' },
      ...API_OPTIONS,
      json: { type: 'boolean', help: 'print the raw JSON response' },
    },
    async run(context) {
      const body = (await new AdminApi(adminUrlOf(context), adminTokenOf(context)).call('GET', ['audit'], undefined, {
        ...filterQuery(context, 'audit list'),
        limit: stringValue(context.values, 'limit'),
      })) as { records: AuditRecordView[] };
      const lines = context.values.json
        ? [JSON.stringify(body, null, 2)]
        : formatTable(
            ['SEQ', 'TIME', 'TENANT', 'ACTOR', 'ACTION', 'TARGET', 'DECISION', 'REASON'],
            body.records.map((r) => [String(r.seq), r.time, r.tenant ?? '', r.actor ?? '', r.action, r.target ?? '', r.decision, r.reason ?? '']),
          );
      for (const line of lines) context.io.out(line);
      return 0;
    },
  },
  {
    name: 'audit verify',
    positionals: { min: 0, max: 0 },
    summary: 'verify the audit trail (hash chain, signed checkpoints); exit 1 naming the first bad record',
    options: {
      ...STATE_OPTIONS,
      'admin-url': { type: 'string', placeholder: 'URL', help: 'ask the running gateway at this Admin API URL instead of reading the database' },
      token: API_OPTIONS.token!,
      json: { type: 'boolean', help: 'print the verdict as JSON' },
    },
    async run(context) {
      const { values, io } = context;
      let result: VerifyResult;
      if (stringValue(values, 'admin-url') !== undefined) {
        result = (await new AdminApi(adminUrlOf(context), adminTokenOf(context)).call('GET', ['audit', 'verify'])) as VerifyResult;
      } else {
        const { config, stateDir, store } = await openLocalStore(context);
        try {
          const { verifyAudit } = await import('../audit/index.js');
          const { keyring, unavailable } = await localKeyring(config, stateDir, io.env);
          if (unavailable) io.err(`warning: master key not available (${unavailable}); checkpoint keys are trusted as stored`);
          result = await verifyAudit(store, keyring ? { keyring } : {});
        } finally {
          await store.close();
        }
      }
      for (const line of values.json ? [JSON.stringify(result, null, 2)] : describeVerdict(result)) io.out(line);
      return result.ok ? 0 : 1;
    },
  },
  {
    name: 'audit export',
    positionals: { min: 0, max: 0 },
    summary: 'write audit records as JSON Lines (one record per line, with hashes) for a SIEM',
    options: {
      ...FILTER_OPTIONS,
      limit: { type: 'string', placeholder: 'N', help: 'at most N records (default: all)' },
      out: { type: 'string', placeholder: 'FILE', help: 'write to FILE instead of standard output' },
      ...API_OPTIONS,
      home: { type: 'string', placeholder: 'DIR', help: 'read the database in this state directory instead of asking the gateway' },
      'state-dir': { type: 'string', placeholder: 'DIR', help: 'same as --home' },
      ...CONFIG_FILE_OPTION,
    },
    async run(context) {
      const { values, io } = context;
      const limit = stringValue(values, 'limit');
      if (limit !== undefined && !/^\d+$/.test(limit)) throw new UsageError(`--limit: "${limit}" is not a number`, 'audit export');
      const query: FilterQuery = { ...filterQuery(context, 'audit export'), limit };
      const outFile = stringValue(values, 'out');
      const file = outFile ? createWriteStream(outFile, { flags: 'w', mode: 0o600 }) : undefined;
      if (file) await once(file, 'open');
      const write = async (line: string) => {
        if (!file) return io.out(line);
        if (!file.write(line + '\n')) await once(file, 'drain');
      };
      let count = 0;
      try {
        if (wantsLocal(context)) {
          const { store } = await openLocalStore(context);
          try {
            const { exportAudit, normalizeTime } = await import('../audit/index.js');
            const filter = {
              ...(query.tenant ? { tenant: query.tenant } : {}),
              ...(query.action ? { action: query.action } : {}),
              ...(query.since ? { since: normalizeTime(query.since, '--since') } : {}),
              ...(query.until ? { until: normalizeTime(query.until, '--until') } : {}),
              ...(query.after ? { afterSeq: Number(query.after) } : {}),
              ...(limit ? { limit: Number(limit) } : {}),
            };
            for await (const batch of exportAudit(store, filter)) {
              for (const line of batch.split('\n')) if (line) (await write(line), count++);
            }
          } finally {
            await store.close();
          }
        } else {
          const response = await openExport(adminUrlOf(context), adminTokenOf(context), query);
          try {
            count = await streamLines(response, write);
          } catch (err) {
            throw new CliError(`the export was interrupted after ${count} records (${(err as Error).message}); the output is incomplete`);
          }
        }
      } finally {
        if (file) {
          file.end();
          await finished(file);
        }
      }
      io.err(`exported ${count} records${outFile ? ` to ${outFile}` : ''}`);
      return 0;
    },
  },
];

/** GET /admin/v1/audit/export, with the Admin API's errors in CLI words. */
async function openExport(baseUrl: string, token: string | undefined, query: Record<string, string | undefined>): Promise<Response> {
  const base = baseUrl.replace(/\/+$/, '');
  const search = new URLSearchParams(Object.entries(query).filter((entry): entry is [string, string] => entry[1] !== undefined)).toString();
  const url = `${base}/admin/v1/audit/export${search ? `?${search}` : ''}`;
  let response: Response;
  try {
    response = await fetch(url, { headers: { accept: 'application/x-ndjson', ...(token ? { authorization: `Bearer ${token}` } : {}) } });
  } catch (err) {
    const code = (err as { cause?: { code?: string } }).cause?.code;
    throw new CliError(`cannot reach the Admin API at ${base} (${code === 'ECONNREFUSED' ? 'connection refused' : (code ?? (err as Error).message)}); is the gateway running? Point at it with --admin-url or DMSC_ADMIN_URL`);
  }
  if (response.ok) return response;
  const text = await response.text();
  let message: string | undefined;
  try {
    message = (JSON.parse(text) as { error?: { message?: string } }).error?.message;
  } catch {
    // not an Admin API error body
  }
  let problem = message ?? `HTTP ${response.status} from ${url}`;
  if (response.status === 401 && !token) problem += ' (no admin token given: use --token or DMSC_ADMIN_TOKEN)';
  throw new CliError(problem);
}
