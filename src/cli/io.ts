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

/** Reads a YAML or JSON file (JSON is YAML) that must hold a mapping, e.g. a tenant spec or policy. */
export async function readMapping(file: string): Promise<Record<string, unknown>> {
  const [{ readFile }, { parse }] = await Promise.all([import('node:fs/promises'), import('yaml')]);
  let value: unknown;
  try {
    value = parse(await readFile(file, 'utf8'));
  } catch (err) {
    const missing = (err as NodeJS.ErrnoException).code === 'ENOENT';
    throw new CliError(`${file}: ${missing ? 'no such file' : `not valid YAML/JSON: ${(err as Error).message}`}`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new CliError(`${file}: must hold a mapping (an object)`);
  return value as Record<string, unknown>;
}

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
