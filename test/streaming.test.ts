import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { request } from 'undici';
import { startUpstream, type Upstream } from './support/upstream.js';

const MB = 1024 * 1024;
const TOTAL = 100 * MB;
const CHUNK = Buffer.alloc(64 * 1024, 0x61);

async function rssBytes(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const match = /VmRSS:\s+(\d+) kB/.exec(status);
  return Number(match![1]) * 1024;
}

/** Samples a process's RSS every 50 ms while `work` runs; returns the peak. */
async function peakRssDuring(pid: number, work: () => Promise<void>): Promise<number> {
  let peak = await rssBytes(pid);
  const timer = setInterval(() => {
    rssBytes(pid).then(
      (rss) => (peak = Math.max(peak, rss)),
      () => undefined,
    );
  }, 50);
  try {
    await work();
  } finally {
    clearInterval(timer);
  }
  return Math.max(peak, await rssBytes(pid));
}

async function* generate(total: number): AsyncGenerator<Buffer> {
  for (let sent = 0; sent < total; sent += CHUNK.length) yield CHUNK;
}

/** The gateway as a user runs it: the built CLI in its own process, so its RSS is its own. */
async function startGatewayProcess(configFile: string, home: string): Promise<{ child: ChildProcess; plainUrl: string }> {
  const child = spawn(process.execPath, ['bin/dmsc.js', 'start', '--config', configFile, '--home', home], {
    cwd: path.resolve(import.meta.dirname, '..'),
    env: { ...process.env, DMSC_ADMIN_TOKEN: 'stream-test-token' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  const plainUrl = await new Promise<string>((resolve, reject) => {
    const onData = (chunk: Buffer) => {
      output += chunk.toString();
      const match = /local ingress \(HTTP\):\s+(http:\/\/\S+)/.exec(output);
      if (match) resolve(match[1]!);
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.once('exit', (code) => reject(new Error(`gateway exited with ${code}: ${output}`)));
  });
  return { child, plainUrl };
}

describe('100 MB bodies stream through with flat gateway memory', () => {
  let upstream: Upstream;
  let home: string;
  let gateway: { child: ChildProcess; plainUrl: string };
  /** The highest RSS of the warm-up transfers: the plateau a transfer may use, measured once. */
  let warmPeak = 0;

  before(async () => {
    upstream = await startUpstream('bulk', (req, res) => {
      if (req.method === 'GET') {
        res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': TOTAL });
        let sent = 0;
        const pump = () => {
          while (sent < TOTAL) {
            sent += CHUNK.length;
            if (!res.write(CHUNK)) {
              res.once('drain', pump);
              return;
            }
          }
          res.end();
        };
        pump();
        return;
      }
      let received = 0;
      req.on('data', (chunk: Buffer) => (received += chunk.length));
      req.on('end', () => res.end(JSON.stringify({ received })));
    });
    home = await mkdtemp(path.join(os.tmpdir(), 'dmsc-stream-'));
    const configFile = path.join(home, 'dmsc.yaml');
    await writeFile(
      configFile,
      [
        'listeners:',
        '  tls: { enabled: false }',
        '  plain: { host: 127.0.0.1, port: 0, allowAnonymous: true }',
        '  admin: { host: 127.0.0.1, port: 0 }',
        'logging: { level: warn }',
        'tenants:',
        '  - name: acme',
        '    policy: { anonymous: allow }',
        '    agents:',
        '      - name: bulk',
        `        endpoints: ["${upstream.url}"]`,
        '',
      ].join('\n'),
    );
    gateway = await startGatewayProcess(configFile, home);
    // Warm up: load code, open pools, and let V8 size its heap once. The first large transfer grows
    // RSS by a fixed ~40 MB (young-generation pages that V8 keeps); what matters is that a transfer
    // then costs no memory in proportion to its size.
    for (let i = 0; i < 20; i++) await (await request(`${gateway.plainUrl}/agents/acme/bulk/`, { method: 'POST', body: 'x' })).body.dump();
    warmPeak = await peakRssDuring(gateway.child.pid!, async () => {
      const warm = await request(`${gateway.plainUrl}/agents/acme/bulk/upload`, { method: 'POST', body: Readable.from(generate(TOTAL)) });
      await warm.body.dump();
      for await (const _chunk of (await request(`${gateway.plainUrl}/agents/acme/bulk/download`)).body) {
        // drain
      }
    });
  });

  after(async () => {
    gateway.child.kill('SIGTERM');
    await new Promise((resolve) => gateway.child.once('exit', resolve));
    await upstream.close();
    await rm(home, { recursive: true, force: true });
  });

  it('uploads 100 MB (chunked) with RSS growth under 16 MB', async (t) => {
    const pid = gateway.child.pid!;
    // RSS can dip below the warm plateau (pages returned to the OS) and climb back to it: measure
    // growth beyond what one transfer already needed, not the refilling of that plateau.
    const baseline = Math.max(await rssBytes(pid), warmPeak);
    const peak = await peakRssDuring(pid, async () => {
      const res = await request(`${gateway.plainUrl}/agents/acme/bulk/upload`, { method: 'POST', body: Readable.from(generate(TOTAL)) });
      assert.equal(res.statusCode, 200);
      assert.deepEqual(await res.body.json(), { received: TOTAL });
    });
    t.diagnostic(`upload: baseline RSS ${(baseline / MB).toFixed(1)} MB, peak ${(peak / MB).toFixed(1)} MB`);
    assert.ok(peak - baseline < 16 * MB, `RSS grew by ${((peak - baseline) / MB).toFixed(1)} MB`);
  });

  it('downloads 100 MB with RSS growth under 16 MB', async (t) => {
    const pid = gateway.child.pid!;
    // RSS can dip below the warm plateau (pages returned to the OS) and climb back to it: measure
    // growth beyond what one transfer already needed, not the refilling of that plateau.
    const baseline = Math.max(await rssBytes(pid), warmPeak);
    let received = 0;
    const peak = await peakRssDuring(pid, async () => {
      const res = await request(`${gateway.plainUrl}/agents/acme/bulk/download`);
      assert.equal(res.statusCode, 200);
      for await (const chunk of res.body) received += (chunk as Buffer).length;
    });
    assert.equal(received, TOTAL);
    t.diagnostic(`download: baseline RSS ${(baseline / MB).toFixed(1)} MB, peak ${(peak / MB).toFixed(1)} MB`);
    assert.ok(peak - baseline < 16 * MB, `RSS grew by ${((peak - baseline) / MB).toFixed(1)} MB`);
  });
});
