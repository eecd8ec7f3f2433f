// Certificate issuance and client-certificate authentication throughput of the built-in CA.
// Usage: node --import tsx bench/pki.ts [--count N] [--concurrency C] [--rounds R]
// Issuing: CSRs (ECDSA P-256, made with WebCrypto) are generated before the clock starts; each
// issuance parses the CSR, checks its signature, signs the leaf with the tenant CA's cached key and
// records it in the embedded SQLite store, with the audit event appended to the same store.
import 'reflect-metadata';
import { randomBytes, webcrypto } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import * as x509 from '@peculiar/x509';
import { pino } from 'pino';
import { configSchema } from '../src/config/schema.js';
import { Keyring } from '../src/identity/keyring.js';
import { createPki } from '../src/identity/pki.js';
import { openStore } from '../src/store/index.js';

const { values } = parseArgs({
  options: {
    count: { type: 'string', default: '2000' },
    concurrency: { type: 'string', default: '16' },
    rounds: { type: 'string', default: '3' },
  },
});
const count = Number(values.count);
const concurrency = Number(values.concurrency);
const rounds = Number(values.rounds);

const dir = await mkdtemp(path.join(os.tmpdir(), 'dmsc-bench-pki-'));
const store = await openStore(dir);
const keyring = Keyring.fromKey(randomBytes(32));
const common = { keyring, trustDomain: 'bench.test', config: configSchema.parse({}).identity, logger: pino({ level: 'silent' }) };
const pki = await createPki({ ...common, store, audit: (event) => void store.appendAudit({ ...event, time: new Date().toISOString() }) });
await pki.ensureTenant('bench');
// The same CA with the issued-certificate record and the audit append left out: the CA's own cost.
const noWrites = Object.create(store, { putIssuedCert: { value: async () => {} } }) as typeof store;
const pkiNoStore = await createPki({ ...common, store: noWrites, audit: () => {} });

const alg = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };
async function makeCsrs(n: number): Promise<string[]> {
  const out: string[] = [];
  for (let i = 0; i < n; i++) {
    const keys = (await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
    out.push((await x509.Pkcs10CertificateRequestGenerator.create({ name: `CN=a${i}`, keys, signingAlgorithm: alg })).toString('pem'));
  }
  return out;
}

async function issueAll(csrs: string[], parallel: number, ca = pki): Promise<{ perSecond: number; ms: number; ders: Uint8Array[] }> {
  const ders: Uint8Array[] = [];
  let next = 0;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: parallel }, async () => {
      while (next < csrs.length) {
        const i = next++;
        const issued = await ca.issueFromCsr('bench', `agent-${i % 100}`, csrs[i]!);
        ders.push(new Uint8Array(x509.PemConverter.decode(issued.certPem)[0]!));
      }
    }),
  );
  const ms = performance.now() - started;
  return { perSecond: (csrs.length / ms) * 1000, ms, ders };
}

console.log(`node ${process.version}, ${os.cpus().length} CPUs (${os.cpus()[0]?.model ?? '?'})`);
console.log(`generating ${count * rounds * 3} CSRs...`);
const csrSets = await Promise.all([...Array(rounds * 3)].map(() => makeCsrs(count)));
// Warm-up (JIT, SQLite statement cache).
await issueAll(await makeCsrs(200), concurrency);

const rows: string[] = [];
const report = (label: string, figures: number[], unit: string) => {
  const sorted = [...figures].sort((a, b) => a - b);
  const median = sorted[Math.floor(sorted.length / 2)]!;
  rows.push(`| ${label} | ${median.toFixed(0)} ${unit} | ${sorted.map((f) => f.toFixed(0)).join(', ')} |`);
};

const sequential: number[] = [];
const parallel: number[] = [];
const caOnly: number[] = [];
let sample: Uint8Array[] = [];
for (let r = 0; r < rounds; r++) {
  sequential.push((await issueAll(csrSets[3 * r]!, 1)).perSecond);
  const result = await issueAll(csrSets[3 * r + 1]!, concurrency);
  parallel.push(result.perSecond);
  sample = result.ders;
  caOnly.push((await issueAll(csrSets[3 * r + 2]!, concurrency, pkiNoStore)).perSecond);
}
report('issue from CSR, 1 at a time', sequential, 'certs/s');
report(`issue from CSR, ${concurrency} concurrent`, parallel, 'certs/s');
report(`issue from CSR, ${concurrency} concurrent, no store writes (CA cost only)`, caOnly, 'certs/s');

// authenticateCertificate: first sight of each certificate (parse + signature check) and repeat
// calls (cache hit + revocation lookup), as on every request of an mTLS connection.
const misses: number[] = [];
const hits: number[] = [];
for (let r = 0; r < rounds; r++) {
  const fresh = (await issueAll(await makeCsrs(Math.min(count, 1000)), concurrency)).ders;
  let t = performance.now();
  for (const d of fresh) if (!pki.authenticateCertificate([d]).ok) throw new Error('authentication failed');
  misses.push((fresh.length / (performance.now() - t)) * 1000);
  const n = 200_000;
  t = performance.now();
  for (let i = 0; i < n; i++) if (!pki.authenticateCertificate([sample[i % sample.length]!]).ok) throw new Error('authentication failed');
  hits.push((n / (performance.now() - t)) * 1000);
}
report('authenticate, first sight (parse + verify)', misses, 'certs/s');
report('authenticate, cached (per request)', hits, 'calls/s');

let t = performance.now();
for (let i = 0; i < 20; i++) await pki.revoke(sample[i] ? new x509.X509Certificate(sample[i]!).serialNumber : '', 'superseded');
const revokeMs = (performance.now() - t) / 20;
rows.push(`| revoke (+ CRL re-signed, ${(await store.listIssuedCerts({ revoked: true })).length} entries) | ${revokeMs.toFixed(1)} ms each | |`);

console.log('');
console.log('| measure | median | rounds |');
console.log('| --- | --- | --- |');
for (const row of rows) console.log(row);
console.log(`\n(${count} certificates per round, ${rounds} rounds; CSRs pre-generated; audit appended to SQLite)`);

await store.close();
await rm(dir, { recursive: true, force: true });
