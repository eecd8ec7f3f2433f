import { stringify } from 'yaml';
import { configOverrides, loadConfigFile, parseConfigText, type GatewayConfig } from '../config/index.js';
import { CONFIG_OVERRIDE_OPTIONS, stringValue, type Command, type OptionValues } from './command.js';
import type { CliIO } from './io.js';

export const DEFAULT_STATE_DIR = './.dmsc';

export interface EffectiveConfig {
  config: GatewayConfig;
  configFile?: string;
  stateDir: string;
  /** Re-reads the file with the same flag/env overrides (for reloads). */
  load(): Promise<GatewayConfig>;
}

/** The config a command runs with: file (if any) + environment + flags; stateDir resolved. */
export async function effectiveConfig(configFile: string | undefined, values: OptionValues, env: NodeJS.ProcessEnv): Promise<EffectiveConfig> {
  const overrides = configOverrides(values, env);
  const load = configFile ? () => loadConfigFile(configFile, overrides) : async () => parseConfigText('', '(defaults)', overrides);
  const config = await load();
  return { config, configFile, stateDir: config.stateDir ?? DEFAULT_STATE_DIR, load };
}

export function configFileFrom(values: OptionValues, io: CliIO): string | undefined {
  return stringValue(values, 'config') ?? (io.env.DMSC_CONFIG || undefined);
}

export const configCommands: Command[] = [
  {
    name: 'config validate',
    args: 'FILE',
    positionals: { min: 1, max: 1 },
    summary: 'check a config file; prints "FILE: ok" or every problem as file:line:col',
    options: {},
    async run({ positionals, io }) {
      const file = positionals[0]!;
      await loadConfigFile(file);
      io.out(`${file}: ok`);
      return 0;
    },
  },
  {
    name: 'config print',
    args: '[FILE]',
    positionals: { min: 0, max: 1 },
    summary: 'print the effective config (file, environment and flags, with every default) as YAML',
    options: CONFIG_OVERRIDE_OPTIONS,
    async run({ positionals, values, io }) {
      const file = positionals[0] ?? (io.env.DMSC_CONFIG || undefined);
      const { config, stateDir } = await effectiveConfig(file, values, io.env);
      const { stateDir: _ignored, ...rest } = config;
      io.out(stringify({ stateDir, ...rest }).trimEnd());
      return 0;
    },
  },
];
