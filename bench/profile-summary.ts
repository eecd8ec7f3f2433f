// Summarises a V8 .cpuprofile (from `node --cpu-prof`): self time per function and per area
// (node core module, npm package, gateway file, GC, idle).
// Usage: node --import tsx bench/profile-summary.ts FILE.cpuprofile [--top 30]
import { readFileSync } from 'node:fs';
import path from 'node:path';

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
  columnNumber: number;
}
interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  hitCount?: number;
  children?: number[];
}
interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples?: number[];
  timeDeltas?: number[];
}

export interface ProfileRow {
  name: string;
  selfMs: number;
  pct: number;
}
export interface ProfileSummary {
  file: string;
  totalMs: number;
  busyMs: number;
  byFunction: ProfileRow[];
  byArea: ProfileRow[];
}

function area(frame: CallFrame): string {
  const { url, functionName } = frame;
  if (!url) {
    if (functionName.startsWith('(')) return functionName; // (garbage collector), (idle), (program), (root)
    return '(native)';
  }
  if (url.startsWith('node:')) {
    const m = /^node:(?:internal\/)?([^/]+)(?:\/([^/]+))?/.exec(url);
    return `node:${m?.[1] ?? url}${m?.[2] && ['http2', 'streams', 'tls', 'http', 'util'].includes(m[1]!) ? '/' + m[2] : ''}`;
  }
  const nm = url.lastIndexOf('node_modules/');
  if (nm >= 0) {
    const rest = url.slice(nm + 'node_modules/'.length).split('/');
    return rest[0]!.startsWith('@') ? `${rest[0]}/${rest[1]}` : rest[0]!;
  }
  const dist = url.indexOf('/dist/');
  if (dist >= 0) return 'dmsc:' + url.slice(dist + '/dist/'.length);
  return path.basename(url);
}

function label(frame: CallFrame): string {
  const fn = frame.functionName || '(anonymous)';
  if (!frame.url) return fn;
  let where = frame.url;
  const nm = where.lastIndexOf('node_modules/');
  if (nm >= 0) where = where.slice(nm + 'node_modules/'.length);
  else if (where.includes('/dist/')) where = 'dist/' + where.slice(where.indexOf('/dist/') + 6);
  return `${fn} ${where}:${frame.lineNumber + 1}`;
}

/**
 * `window` (microseconds on the monotonic clock, i.e. `process.hrtime.bigint() / 1000n` of any
 * process on the machine — V8 profiles use the same clock) keeps only the samples taken during the
 * load run, leaving out start-up and shutdown.
 */
export function summarise(file: string, top = 30, window?: { fromUs: number; toUs: number }): ProfileSummary & { windowed: boolean } {
  const profile = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  let self = new Map<number, number>(); // node id -> microseconds
  let windowed = false;
  if (profile.samples && profile.timeDeltas) {
    const collect = (inWindow: (t: number) => boolean) => {
      const out = new Map<number, number>();
      let t = profile.startTime;
      // timeDeltas[i] is the time from sample i-1 to sample i; sample i is charged until sample i+1.
      for (let i = 0; i < profile.samples!.length; i++) {
        t += profile.timeDeltas![i] ?? 0;
        if (!inWindow(t)) continue;
        const id = profile.samples![i]!;
        out.set(id, (out.get(id) ?? 0) + Math.max(0, profile.timeDeltas![i + 1] ?? 0));
      }
      return out;
    };
    if (window) {
      self = collect((t) => t >= window.fromUs && t <= window.toUs);
      windowed = self.size > 0;
    }
    if (!windowed) self = collect(() => true);
  } else {
    const total = profile.endTime - profile.startTime;
    const hits = profile.nodes.reduce((s, n) => s + (n.hitCount ?? 0), 0) || 1;
    for (const n of profile.nodes) self.set(n.id, ((n.hitCount ?? 0) * total) / hits);
  }
  const fnTotals = new Map<string, number>();
  const areaTotals = new Map<string, number>();
  let totalUs = 0;
  let idleUs = 0;
  for (const [id, us] of self) {
    const node = byId.get(id);
    if (!node) continue;
    totalUs += us;
    if (node.callFrame.functionName === '(idle)') idleUs += us;
    const l = label(node.callFrame);
    fnTotals.set(l, (fnTotals.get(l) ?? 0) + us);
    const a = area(node.callFrame);
    areaTotals.set(a, (areaTotals.get(a) ?? 0) + us);
  }
  const busyUs = totalUs - idleUs || 1;
  const rows = (m: Map<string, number>, n: number) =>
    [...m.entries()]
      .filter(([name]) => name !== '(idle)' && !name.startsWith('(idle)'))
      .sort((a, b) => b[1] - a[1])
      .slice(0, n)
      .map(([name, us]) => ({ name, selfMs: Math.round(us / 100) / 10, pct: Math.round((us / busyUs) * 1000) / 10 }));
  return {
    file,
    windowed,
    totalMs: Math.round(totalUs / 1000),
    busyMs: Math.round(busyUs / 1000),
    byFunction: rows(fnTotals, top),
    byArea: rows(areaTotals, top),
  };
}

export function formatSummary(s: ProfileSummary & { windowed?: boolean }): string {
  const lines = [
    `CPU profile \`${path.basename(s.file)}\`${s.windowed ? ' (load run only)' : ' (whole process life)'}: ${s.totalMs} ms sampled, ${s.busyMs} ms busy; percentages are of busy time. "(native)" is C++ called from JS (TLS encryption and socket syscalls in writev/writeLatin1String, HTTP parsing in undici's wasm shows as wasm-function).`,
    '',
    '| self % | self ms | area |',
    '| ---: | ---: | --- |',
    ...s.byArea.map((r) => `| ${r.pct.toFixed(1)} | ${r.selfMs} | ${r.name} |`),
    '',
    '| self % | self ms | function |',
    '| ---: | ---: | --- |',
    ...s.byFunction.map((r) => `| ${r.pct.toFixed(1)} | ${r.selfMs} | \`${r.name}\` |`),
  ];
  return lines.join('\n');
}

const isMain = process.argv[1]?.endsWith('profile-summary.ts');
if (isMain) {
  const file = process.argv[2];
  if (!file) {
    console.error('usage: profile-summary.ts FILE.cpuprofile [--top N]');
    process.exit(2);
  }
  const topIdx = process.argv.indexOf('--top');
  const top = topIdx > 0 ? Number(process.argv[topIdx + 1]) : 30;
  console.log(formatSummary(summarise(file, top)));
}
