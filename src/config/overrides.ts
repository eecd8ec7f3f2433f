import { configSchema } from './schema.js';
import { ConfigError, configIssueMessages, formatConfigPath, type ConfigOverrides } from './load.js';

type Kind = 'string' | 'port' | 'boolean';

interface OverridableSetting {
  /** Where the value goes in the config. */
  path: readonly string[];
  /** The command-line flag, without `--`. Boolean flags set `flagValue`. */
  flag: string;
  flagValue?: boolean;
  env: string;
  kind: Kind;
  /** For help output, e.g. `--tls-port PORT`. */
  placeholder?: string;
  help: string;
}

/** Every config setting that a flag or environment variable can override (README "Configuration"). */
export const OVERRIDABLE_SETTINGS: readonly OverridableSetting[] = [
  { path: ['stateDir'], flag: 'home', placeholder: 'DIR', env: 'DMSC_HOME', kind: 'string', help: 'state directory (default ./.dmsc)' },
  { path: ['domain'], flag: 'domain', placeholder: 'DOMAIN', env: 'DMSC_DOMAIN', kind: 'string', help: 'host-form addressing domain' },
  { path: ['logging', 'level'], flag: 'log-level', placeholder: 'LEVEL', env: 'DMSC_LOG_LEVEL', kind: 'string', help: 'fatal|error|warn|info|debug|trace|silent' },
  { path: ['listeners', 'tls', 'enabled'], flag: 'no-tls', flagValue: false, env: 'DMSC_TLS', kind: 'boolean', help: 'disable the TLS agent ingress' },
  { path: ['listeners', 'tls', 'host'], flag: 'tls-host', placeholder: 'HOST', env: 'DMSC_TLS_HOST', kind: 'string', help: 'TLS ingress host' },
  { path: ['listeners', 'tls', 'port'], flag: 'tls-port', placeholder: 'PORT', env: 'DMSC_TLS_PORT', kind: 'port', help: 'TLS ingress port' },
  { path: ['listeners', 'tls', 'mtls', 'enabled'], flag: 'mtls', flagValue: true, env: 'DMSC_MTLS', kind: 'boolean', help: 'require client certificates' },
  { path: ['listeners', 'plain', 'enabled'], flag: 'no-plain', flagValue: false, env: 'DMSC_PLAIN', kind: 'boolean', help: 'disable the plaintext local ingress' },
  { path: ['listeners', 'plain', 'host'], flag: 'plain-host', placeholder: 'HOST', env: 'DMSC_PLAIN_HOST', kind: 'string', help: 'plaintext ingress host' },
  { path: ['listeners', 'plain', 'port'], flag: 'plain-port', placeholder: 'PORT', env: 'DMSC_PLAIN_PORT', kind: 'port', help: 'plaintext ingress port' },
  { path: ['listeners', 'plain', 'allowAnonymous'], flag: 'allow-anonymous', flagValue: true, env: 'DMSC_PLAIN_ALLOW_ANONYMOUS', kind: 'boolean', help: 'let requests without credentials through the plaintext local ingress' },
  { path: ['listeners', 'admin', 'host'], flag: 'admin-host', placeholder: 'HOST', env: 'DMSC_ADMIN_HOST', kind: 'string', help: 'Admin API host' },
  { path: ['listeners', 'admin', 'port'], flag: 'admin-port', placeholder: 'PORT', env: 'DMSC_ADMIN_PORT', kind: 'port', help: 'Admin API port' },
];

/** Values of the flags above as node:util parseArgs returns them. */
export type OverrideFlags = Record<string, string | boolean | undefined | (string | boolean)[]>;

const BOOLEAN_WORDS: Record<string, boolean> = { '1': true, true: true, '0': false, false: false };

function convert(raw: string, kind: Kind, source: string): string | number | boolean {
  if (kind === 'boolean') {
    const value = BOOLEAN_WORDS[raw.trim().toLowerCase()];
    if (value === undefined) throw new ConfigError([`${source}: must be 0, 1, false or true, got "${raw}"`]);
    return value;
  }
  if (kind === 'port') {
    const value = /^\d+$/.test(raw.trim()) ? Number(raw) : NaN;
    if (!Number.isInteger(value) || value > 65535) throw new ConfigError([`${source}: must be a port number 0-65535, got "${raw}"`]);
    return value;
  }
  return raw;
}

function setIn(target: ConfigOverrides, path: readonly string[], value: string | number | boolean): void {
  let node = target;
  for (const key of path.slice(0, -1)) node = (node[key] ??= {}) as ConfigOverrides;
  node[path[path.length - 1]!] = value;
}

/**
 * The overrides that flags and environment impose on the config file (flag > env > file > default).
 * Computed once at start and re-applied on every reload; bad values throw a ConfigError naming the flag or variable.
 */
export function configOverrides(flags: OverrideFlags, env: NodeJS.ProcessEnv): ConfigOverrides {
  const overrides: ConfigOverrides = {};
  const sources = new Map<string, string>();
  for (const setting of OVERRIDABLE_SETTINGS) {
    const flag = flags[setting.flag];
    const envValue = env[setting.env];
    let value: string | number | boolean | undefined;
    let source: string | undefined;
    if (flag !== undefined && flag !== false) {
      source = setting.flagValue === undefined ? `--${setting.flag}=${String(flag)}` : `--${setting.flag}`;
      value = setting.flagValue ?? convert(String(flag), setting.kind, `--${setting.flag}`);
    } else if (envValue !== undefined && envValue !== '') {
      source = `${setting.env}=${envValue}`;
      value = convert(envValue, setting.kind, setting.env);
    }
    if (value === undefined || source === undefined) continue;
    setIn(overrides, setting.path, value);
    sources.set(formatConfigPath(setting.path), source);
  }
  // The schema is the one source of rules (log levels, port range, ...): check the overrides alone against it.
  const result = configSchema.safeParse(overrides, { error: configIssueMessages });
  if (!result.success) {
    throw new ConfigError(
      result.error.issues.map((issue) => {
        const path = formatConfigPath(issue.path);
        return `${sources.get(path) ?? path}: ${issue.message}`;
      }),
    );
  }
  return overrides;
}
