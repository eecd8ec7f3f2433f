import { watch, readFileSync, type FSWatcher } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import type { GatewayConfig } from './schema.js';

export interface ConfigWatcher {
  /** Reloads now, even when the file is unchanged (SIGHUP). */
  trigger(): void;
  close(): void;
}

const DEBOUNCE_MS = 100;

function readOrUndefined(file: string): string | undefined {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
}

/**
 * Reloads the config when `file` changes: load() then onChange(). A failing load or onChange goes to onError and
 * the running config stays. Reloads never overlap; requests arriving during one are coalesced into one more.
 */
export function watchConfig(
  file: string,
  load: () => Promise<GatewayConfig>,
  onChange: (next: GatewayConfig) => Promise<void>,
  onError: (err: Error) => void,
): ConfigWatcher {
  const name = path.basename(file);
  let lastContent = readOrUndefined(file);
  let closed = false;
  let debounce: NodeJS.Timeout | undefined;
  let running = false;
  let queued: 'none' | 'if-changed' | 'always' = 'none';

  const reloadOnce = async (force: boolean) => {
    if (!force) {
      let content: string;
      try {
        content = await readFile(file, 'utf8');
      } catch (err) {
        // An editor's rename-replace can leave a moment without the file; its next event retries.
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
        throw err;
      }
      if (content === lastContent) return;
      lastContent = content;
    } else {
      lastContent = readOrUndefined(file);
    }
    const next = await load();
    if (!closed) await onChange(next);
  };

  const run = async (force: boolean) => {
    if (running) {
      if (queued !== 'always') queued = force ? 'always' : 'if-changed';
      return;
    }
    running = true;
    try {
      for (let next: boolean | undefined = force; next !== undefined && !closed; ) {
        try {
          await reloadOnce(next);
        } catch (err) {
          onError(err instanceof Error ? err : new Error(String(err)));
        }
        next = queued === 'none' ? undefined : queued === 'always';
        queued = 'none';
      }
    } finally {
      running = false;
    }
  };

  // Watching the directory, not the file: editors replace the file (new inode) and a file watch would go deaf.
  const watcher: FSWatcher = watch(path.dirname(file), (_event, changed) => {
    if (changed !== null && changed.toString() !== name) return;
    clearTimeout(debounce);
    debounce = setTimeout(() => void run(false), DEBOUNCE_MS);
  });
  watcher.on('error', (err) => onError(err));

  return {
    trigger() {
      if (!closed) void run(true);
    },
    close() {
      closed = true;
      clearTimeout(debounce);
      watcher.close();
    },
  };
}
