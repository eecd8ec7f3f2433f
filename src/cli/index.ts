import { parseArgs, type ParseArgsConfig } from 'node:util';
import { ConfigError } from '../config/index.js';
import { adminCommands } from './admin-commands.js';
import { auditCommands } from './audit-commands.js';
import { certCommands, tokenCommands } from './cert-commands.js';
import { adminTokenCommands, tenancyCommands } from './tenancy-commands.js';
import { routingCommands } from './routing-commands.js';
import type { Command, OptionValues } from './command.js';
import { configCommands } from './config-commands.js';
import { processIO, UsageError, type CliIO } from './io.js';
import { agentCommands, tenantCommands } from './registry-commands.js';
import { startCommand } from './start.js';

export type { CliIO } from './io.js';

const COMMANDS: readonly Command[] = [startCommand, ...configCommands, ...tenantCommands, ...agentCommands, ...tokenCommands, ...certCommands, ...auditCommands, ...tenancyCommands, ...routingCommands, ...adminCommands, ...adminTokenCommands];
const HELP_FLAGS = new Set(['--help', '-h']);

function commandLine(command: Command): string {
  return `dmsc ${command.name}${command.args ? ' ' + command.args : ''}`;
}

function overview(commands: readonly Command[] = COMMANDS): string[] {
  const width = Math.max(...commands.map((command) => commandLine(command).length));
  return [
    'Usage: dmsc <command> [options]     (dmsc <command> --help for its options)',
    '',
    'Commands:',
    ...commands.map((command) => `  ${commandLine(command).padEnd(width)}  ${command.summary}`),
    '',
    'Options: --help, --version',
  ];
}

function commandHelp(command: Command): string[] {
  const flags = Object.entries(command.options).map(([name, spec]) => [
    `--${name}${spec.placeholder ? ' ' + spec.placeholder : ''}`,
    spec.help + (spec.multiple ? ' (repeatable)' : ''),
  ]);
  flags.push(['--help', 'show this help']);
  const width = Math.max(...flags.map(([flag]) => flag!.length));
  return [
    `Usage: ${commandLine(command)}${flags.length > 1 ? ' [options]' : ''}`,
    '',
    command.summary,
    '',
    'Options:',
    ...flags.map(([flag, help]) => `  ${flag!.padEnd(width)}  ${help}`),
  ];
}

/** The command named by the first one, two or three words of argv, and the arguments after them. */
function findCommand(argv: readonly string[]): { command?: Command; rest: string[]; group?: string } {
  const [first] = argv;
  for (let words = 1; words <= 3; words++) {
    const name = argv.slice(0, words).join(' ');
    const found = COMMANDS.find((command) => command.name === name);
    if (found) return { command: found, rest: argv.slice(words) };
  }
  const isGroup = COMMANDS.some((command) => command.name.startsWith(`${first} `));
  return { rest: argv.slice(1), group: isGroup ? first : undefined };
}

function parseCommandArgs(command: Command, args: string[]): { values: OptionValues; positionals: string[] } {
  const options: ParseArgsConfig['options'] = { help: { type: 'boolean', short: 'h' } };
  for (const [name, spec] of Object.entries(command.options)) options[name] = { type: spec.type, multiple: spec.multiple ?? false };
  let parsed;
  try {
    parsed = parseArgs({ args, options, strict: true, allowPositionals: true });
  } catch (err) {
    if (!String((err as NodeJS.ErrnoException).code).startsWith('ERR_PARSE_ARGS')) throw err;
    throw new UsageError((err as Error).message, command.name);
  }
  const { values, positionals } = parsed;
  if (!values.help && (positionals.length < command.positionals.min || positionals.length > command.positionals.max)) {
    const expected = command.args ? `expected ${command.args}` : 'expected no arguments';
    throw new UsageError(`${expected}, got ${positionals.length ? positionals.map((p) => JSON.stringify(p)).join(' ') : 'none'}`, command.name);
  }
  return { values: values as OptionValues, positionals };
}

async function dispatch(argv: string[], io: CliIO): Promise<number> {
  const [first] = argv;
  if (first === undefined) {
    for (const line of overview()) io.err(line);
    return 2;
  }
  if (HELP_FLAGS.has(first) || first === 'help') {
    for (const line of overview()) io.out(line);
    return 0;
  }
  if (first === '--version' || first === '-v') {
    const { GATEWAY_VERSION } = await import('../admin/index.js');
    io.out(GATEWAY_VERSION);
    return 0;
  }
  const { command, rest, group } = findCommand(argv);
  if (!command) {
    if (!group) throw new UsageError(`unknown command "${first}"`);
    const groupCommands = COMMANDS.filter((candidate) => candidate.name.startsWith(`${group} `));
    if (rest[0] !== undefined && HELP_FLAGS.has(rest[0])) {
      for (const line of overview(groupCommands)) io.out(line);
      return 0;
    }
    const names = groupCommands.map((candidate) => candidate.name.slice(group.length + 1)).join('|');
    const problem = rest[0] === undefined ? `"${group}" needs a subcommand: ${names}` : `unknown ${group} command "${rest[0]}" (expected ${names})`;
    throw new UsageError(problem, group);
  }
  const { values, positionals } = parseCommandArgs(command, rest);
  if (values.help) {
    for (const line of commandHelp(command)) io.out(line);
    return 0;
  }
  return command.run({ values, positionals, io });
}

/**
 * The `dmsc` command. Exit codes: 0 done, 1 failed (bad config, API error, unreachable gateway), 2 usage error.
 * `start` returns once the gateway listens; its listeners keep the process alive until a signal.
 */
export async function main(argv: string[], io: CliIO = processIO): Promise<number> {
  try {
    return await dispatch(argv, io);
  } catch (err) {
    if (err instanceof UsageError) {
      io.err(`dmsc: ${err.message}`);
      io.err(`Run "dmsc ${err.command ?? ''}${err.command ? ' ' : ''}--help" for usage.`);
      return 2;
    }
    if (err instanceof ConfigError) {
      io.err(err.message);
      return 1;
    }
    io.err(`error: ${err instanceof Error ? err.message : String(err)}`);
    return 1;
  }
}
