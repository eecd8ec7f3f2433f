// What the A2A version bridge costs a call: v0.3 `message/send` calls to a tenant through a real
// gateway (in-process, test/support/gateway.ts), answered by an @a2a-js/sdk agent
// (test/support/a2a-agent.ts) that speaks v0.3 itself (tenant `native`: relayed as is) or only
// v1.0 (tenant `bridged`: translated by the bridge, src/bridges/a2a-version.ts). Sequential calls
// on one keep-alive connection per tenant, the two kinds alternating call by call so that both
// see the same machine; after a warm-up.
//
//   node --import tsx bench/a2a-bridge.ts [--calls 3000]
import os from 'node:os';
import { parseArgs } from 'node:util';
import { Pool } from 'undici';
import { startTestGateway, waitForSkills } from '../test/support/gateway.js';
import { startA2aAgent } from '../test/support/a2a-agent.js';
import { percentile } from './skill-corpus.js';

const { values: options } = parseArgs({ options: { calls: { type: 'string', default: '3000' } } });
const CALLS = Number(options.calls);
const skills = [{ id: 'erasure', name: 'GDPR erasure requests', description: 'Erase or export the personal data held about a person under GDPR', tags: ['privacy'] }];

const compat = await startA2aAgent('native', 'v1+compat', { skills });
const v1Only = await startA2aAgent('bridged', 'v1', { skills });
const gw = await startTestGateway(
  {
    healthCheck: { enabled: false },
    tenants: [
      { name: 'native', agents: [{ name: 'privacy', endpoints: [compat.url] }] },
      { name: 'bridged', agents: [{ name: 'privacy', endpoints: [v1Only.url] }] },
    ],
  },
  { logLevel: 'warn' },
);
await waitForSkills(gw, 'native', 1);
await waitForSkills(gw, 'bridged', 1);

const pools = { native: new Pool(gw.plainUrl, { connections: 1 }), bridged: new Pool(gw.plainUrl, { connections: 1 }) };
let id = 0;
async function call(tenant: 'native' | 'bridged'): Promise<number> {
  const body = JSON.stringify({
    jsonrpc: '2.0',
    id: ++id,
    method: 'message/send',
    params: { message: { kind: 'message', messageId: `m-${id}`, role: 'user', parts: [{ kind: 'text', text: 'Please erase my personal data under GDPR' }] } },
  });
  const t0 = process.hrtime.bigint();
  const res = await pools[tenant].request({ path: `/tenants/${tenant}/a2a`, method: 'POST', headers: { 'content-type': 'application/json' }, body });
  const answer = (await res.body.json()) as { result?: { kind?: string } };
  const us = Number(process.hrtime.bigint() - t0) / 1000;
  if (res.statusCode !== 200 || answer.result?.kind !== 'message') throw new Error(`${tenant}: ${res.statusCode} ${JSON.stringify(answer)}`);
  return us;
}

for (let i = 0; i < 500; i++) {
  await call('native');
  await call('bridged');
}
const native = new Float64Array(CALLS);
const bridged = new Float64Array(CALLS);
for (let i = 0; i < CALLS; i++) {
  if (i % 2 === 0) {
    native[i] = await call('native');
    bridged[i] = await call('bridged');
  } else {
    bridged[i] = await call('bridged');
    native[i] = await call('native');
  }
}
native.sort();
bridged.sort();

console.log(`# node --import tsx bench/a2a-bridge.ts${process.argv.length > 2 ? ' ' + process.argv.slice(2).join(' ') : ''}`);
console.log(`# node ${process.version}, ${os.cpus()[0]?.model ?? 'unknown CPU'} x${os.cpus().length}; ${CALLS.toLocaleString('en-US')} sequential v0.3 message/send calls of each kind, alternating\n`);
console.log('| agent | p50 | p90 | p99 |');
console.log('| --- | ---: | ---: | ---: |');
for (const [label, samples] of [
  ['speaks v0.3 (relayed as is)', native],
  ['speaks only v1.0 (bridged)', bridged],
] as const) {
  console.log(`| ${label} | ${(percentile(samples, 50) / 1000).toFixed(2)} ms | ${(percentile(samples, 90) / 1000).toFixed(2)} ms | ${(percentile(samples, 99) / 1000).toFixed(2)} ms |`);
}
console.log(`\nbridged / relayed: p50 x${(percentile(bridged, 50) / percentile(native, 50)).toFixed(2)}, p99 x${(percentile(bridged, 99) / percentile(native, 99)).toFixed(2)}`);

await Promise.all([pools.native.close(), pools.bridged.close()]);
await gw.close();
await compat.close();
await v1Only.close();
