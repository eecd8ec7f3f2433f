/**
 * How to start one of our worker threads: the compiled `<name>.js` next to the calling module
 * (dist/), or, when the caller runs from its TypeScript sources (tests, bench under tsx), an entry
 * that registers tsx's loader in the worker first (Node 20 does not apply the parent's `--import
 * tsx` to workers). Throws when the sources run without tsx installed.
 */
export function workerTarget(callerUrl: string, name: string): { entry: string | URL; eval: boolean } {
  if (!callerUrl.endsWith('.ts')) return { entry: new URL(`./${name}.js`, callerUrl), eval: false };
  const source = new URL(`./${name}.ts`, callerUrl).href;
  const tsx = import.meta.resolve('tsx/esm/api');
  return {
    entry: `import(${JSON.stringify(tsx)}).then((tsx) => { tsx.register(); return import(${JSON.stringify(source)}); })`,
    eval: true,
  };
}
