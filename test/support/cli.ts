import { main } from '../../src/cli/index.js';

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the dmsc CLI in-process (same code as bin/dmsc.js) and collects its output. */
export async function dmsc(argv: string[], env: NodeJS.ProcessEnv = {}): Promise<RunResult> {
  const out: string[] = [];
  const err: string[] = [];
  const code = await main(argv, { out: (line) => out.push(line), err: (line) => err.push(line), env });
  return { code, stdout: out.join('\n'), stderr: err.join('\n') };
}
