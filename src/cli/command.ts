import { OVERRIDABLE_SETTINGS } from '../config/index.js';
import type { CliIO } from './io.js';

export interface OptionSpec {
  type: 'string' | 'boolean';
  multiple?: boolean;
  /** Shown in help after the flag, e.g. URL. */
  placeholder?: string;
  help: string;
}

export type OptionValues = Record<string, string | boolean | Array<string | boolean> | undefined>;

export interface CommandContext {
  positionals: string[];
  values: OptionValues;
  io: CliIO;
}

export interface Command {
  /** One or two words: "start", "tenant create". */
  name: string;
  /** Positional arguments as shown in help, e.g. "NAME". */
  args?: string;
  /** Allowed positional count. */
  positionals: { min: number; max: number };
  summary: string;
  options: Record<string, OptionSpec>;
  run(context: CommandContext): Promise<number>;
}

/** The flags that override config settings (README "Configuration"), shared by start and config print. */
export const CONFIG_OVERRIDE_OPTIONS: Record<string, OptionSpec> = Object.fromEntries(
  OVERRIDABLE_SETTINGS.map((setting) => [
    setting.flag,
    {
      type: setting.flagValue === undefined ? 'string' : 'boolean',
      placeholder: setting.placeholder,
      help: `${setting.help} (${setting.env})`,
    } satisfies OptionSpec,
  ]),
);

export const CONFIG_FILE_OPTION: Record<string, OptionSpec> = {
  config: { type: 'string', placeholder: 'FILE', help: 'YAML config file (DMSC_CONFIG)' },
};

export function stringValue(values: OptionValues, name: string): string | undefined {
  const value = values[name];
  return typeof value === 'string' ? value : undefined;
}

export function stringValues(values: OptionValues, name: string): string[] {
  const value = values[name];
  return Array.isArray(value) ? value.filter((item): item is string => typeof item === 'string') : [];
}
