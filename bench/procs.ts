// Child-process bookkeeping for the benchmark: every server runs in its own process group so that it
// and anything it forks (nginx workers) can be stopped together, and every group is stopped when the
// benchmark exits, fails or is interrupted.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createWriteStream, type WriteStream } from 'node:fs';
import { createServer } from 'node:net';

export interface Managed {
  name: string;
  child: ChildProcess;
  log: WriteStream;
  exited: Promise<number | null>;
  /** Resolves with the first match of `pattern` in stdout/stderr. */
  waitFor(pattern: RegExp, timeoutMs: number): Promise<RegExpMatchArray>;
  output(): string;
}

const running = new Set<Managed>();

export function hasBinary(name: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${name}`], { stdio: 'ignore' }).status === 0;
}

/** Prefixes `cmd` with `taskset -c <cpus>` when cpus is given. */
export function pinned(cpus: string | undefined, cmd: string, args: string[]): [string, string[]] {
  return cpus ? ['taskset', ['-c', cpus, cmd, ...args]] : [cmd, args];
}

export function startProcess(
  name: string,
  cmd: string,
  args: string[],
  options: { logFile: string; env?: NodeJS.ProcessEnv; cwd?: string },
): Managed {
  const child = spawn(cmd, args, {
    cwd: options.cwd,
    env: options.env ?? process.env,
    detached: true, // own process group: kill(-pid) reaches forked workers too
    stdio: ['pipe', 'pipe', 'pipe'], // our node children exit when this stdin closes
  });
  const log = createWriteStream(options.logFile);
  let text = '';
  const waiters: Array<() => void> = [];
  const onData = (chunk: Buffer) => {
    log.write(chunk);
    if (text.length < 1 << 20) text += chunk.toString('utf8');
    for (const w of waiters.splice(0)) w();
  };
  child.stdout!.on('data', onData);
  child.stderr!.on('data', onData);
  const exited = new Promise<number | null>((resolve) => {
    child.once('exit', (code, signal) => {
      running.delete(managed);
      log.write(`\n[exited code=${code} signal=${signal}]\n`);
      for (const w of waiters.splice(0)) w();
      resolve(code);
    });
    child.once('error', (err) => {
      running.delete(managed);
      text += `\n[spawn error: ${err.message}]`;
      for (const w of waiters.splice(0)) w();
      resolve(null);
    });
  });
  let done = false;
  void exited.then(() => (done = true));
  const managed: Managed = {
    name,
    child,
    log,
    exited,
    output: () => text,
    waitFor(pattern, timeoutMs) {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`${name}: no ${pattern} within ${timeoutMs} ms; output:\n${text.slice(-2000)}`)), timeoutMs);
        const check = () => {
          const m = text.match(pattern);
          if (m) {
            clearTimeout(timer);
            resolve(m);
          } else if (done) {
            clearTimeout(timer);
            reject(new Error(`${name} exited before ${pattern}; output:\n${text.slice(-2000)}`));
          } else waiters.push(check);
        };
        check();
      });
    },
  };
  running.add(managed);
  return managed;
}

function signalGroup(m: Managed, signal: NodeJS.Signals): void {
  if (m.child.pid === undefined) return;
  try {
    process.kill(-m.child.pid, signal);
  } catch {
    try {
      m.child.kill(signal);
    } catch {
      /* already gone */
    }
  }
}

/** SIGTERM the process group, SIGKILL it after `graceMs`. */
export async function stopProcess(m: Managed, graceMs = 5000): Promise<void> {
  if (!running.has(m)) return;
  signalGroup(m, 'SIGTERM');
  const timer = setTimeout(() => signalGroup(m, 'SIGKILL'), graceMs);
  await m.exited;
  clearTimeout(timer);
  // nginx workers or other grandchildren may outlive the leader: make sure the group is gone.
  signalGroup(m, 'SIGKILL');
  m.child.stdin?.destroy();
  m.log.end();
}

export async function stopAll(): Promise<void> {
  await Promise.all([...running].map((m) => stopProcess(m)));
}

let installed = false;
/** Stops every child on exit, Ctrl-C, SIGTERM, SIGHUP and uncaught errors. */
export function installCleanup(): void {
  if (installed) return;
  installed = true;
  process.on('exit', () => {
    for (const m of running) signalGroup(m, 'SIGKILL');
  });
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(signal, () => {
      process.stderr.write(`\nbench: ${signal}, stopping servers...\n`);
      void stopAll().finally(() => process.exit(signal === 'SIGINT' ? 130 : 143));
    });
  }
  process.on('uncaughtException', (err) => {
    process.stderr.write(`bench: ${err.stack ?? err.message}\n`);
    void stopAll().finally(() => process.exit(1));
  });
}

/** Runs a command to completion, capturing stdout+stderr. */
export function runCommand(cmd: string, args: string[], options: { env?: NodeJS.ProcessEnv } = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { env: options.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString('utf8')));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString('utf8')));
    child.on('error', (err) => resolve({ code: null, stdout, stderr: stderr + err.message }));
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/** A TCP port free on 127.0.0.1 right now (for a server the benchmark is about to start). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}
