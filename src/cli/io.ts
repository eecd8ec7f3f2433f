/** Where a command writes and what it reads from its environment; tests pass their own. */
export interface CliIO {
  out(line: string): void;
  err(line: string): void;
  env: NodeJS.ProcessEnv;
}

export const processIO: CliIO = {
  out: (line) => process.stdout.write(line + '\n'),
  err: (line) => process.stderr.write(line + '\n'),
  env: process.env,
};

/** A failure to report as `error: <message>` with exit code 1. */
export class CliError extends Error {
  override name = 'CliError';
}

/** Wrong command line: reported with a pointer to --help, exit code 2. */
export class UsageError extends Error {
  override name = 'UsageError';
  constructor(
    message: string,
    /** The command whose --help to point at, e.g. "agent create". */
    readonly command?: string,
  ) {
    super(message);
  }
}
