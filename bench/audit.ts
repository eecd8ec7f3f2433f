// Cost of the audit trail on this machine: a synchronous append (one SQLite commit per record), group
// commit (records of one event-loop turn in one transaction) at several batch sizes, in both
// durability modes and with both writers (`thread`: commits on the writer thread, the default;
// `inline`: on the event loop), and verification speed. Two figures per case: wall-clock µs per
// record (one writer, each batch awaited) and the event loop's busy µs per record (what the
// request path pays; with the thread writer, commits and fsyncs happen while the loop is idle).
//
// Usage: node --import tsx bench/audit.ts [--records 20000]
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { pino } from 'pino';
import { AuditLog, type AuditEvent } from '../src/audit/index.js';
import { openStore } from '../src/store/index.js';

const { values } = parseArgs({ options: { records: { type: 'string', default: '20000' } } });
const records = Number(values.records);
const dirs: string[] = [];

function event(i: number): AuditEvent {
  return {
    tenant: 'acme',
    actor: 'spiffe://dmsc.localhost/tenant/acme/agent/planner',
    action: 'policy.decision',
    target: 'acme/ledger',
    decision: 'allow',
    reason: 'allowed_by_rule: acme/planner-to-ledger',
    requestId: `req-${i.toString(16).padStart(12, '0')}`,
  };
}

async function freshLog(durability: 'process' | 'power', writer: 'thread' | 'inline') {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'dmsc-bench-audit-'));
  dirs.push(dir);
  const store = await openStore(dir);
  return { store, log: new AuditLog(store, pino({ level: 'silent' }), { durability, writer }) };
}

/** Wall-clock and event-loop-busy µs per record since `start`. */
function perRecord(start: { wall: bigint; elu: ReturnType<typeof performance.eventLoopUtilization> }, n: number): string {
  const wall = Number(process.hrtime.bigint() - start.wall) / 1e3 / n;
  const busy = (performance.eventLoopUtilization(start.elu).active * 1e3) / n;
  return `${wall.toFixed(1)} / ${busy.toFixed(1)}`;
}
const mark = () => ({ wall: process.hrtime.bigint(), elu: performance.eventLoopUtilization() });

console.log(`# node --import tsx bench/audit.ts --records ${records}`);
console.log(`# node ${process.version}; µs per record: wall clock / event loop busy`);
for (const [durability, writer] of [['process', 'thread'], ['process', 'inline'], ['power', 'thread'], ['power', 'inline']] as const) {
  const n = durability === 'power' ? Math.min(records, 2000) : records;
  const { store, log } = await freshLog(durability, writer);
  for (let i = 0; i < 1000; i++) log.append(event(i)); // warm-up
  let start = mark();
  for (let i = 0; i < n; i++) log.append(event(i));
  const sync = perRecord(start, n);
  const batches: string[] = [];
  for (const size of [1, 5, 20, 100]) {
    start = mark();
    for (let i = 0; i < n; i += size) {
      let committed: Promise<void> | undefined;
      for (let j = 0; j < size; j++) committed = log.commit(event(i + j));
      await committed;
    }
    batches.push(`batch ${size}: ${perRecord(start, n)}`);
  }
  console.log(`${durability.padEnd(8)} ${writer.padEnd(7)} append (1 commit each): ${sync}   group commit, ${batches.join('   ')}`);
  if (durability === 'process' && writer === 'thread') {
    const began = process.hrtime.bigint();
    const verdict = await log.verify();
    const seconds = Number(process.hrtime.bigint() - began) / 1e9;
    if (!verdict.ok) throw new Error('the benchmark trail does not verify');
    console.log(`verify: ${verdict.records} records in ${seconds.toFixed(2)} s = ${Math.round(verdict.records / seconds).toLocaleString('en-US')} records/s`);
  }
  await log.close();
  await store.close();
}
for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
