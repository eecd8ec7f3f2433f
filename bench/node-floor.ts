// The floor for a single-process Node.js proxy: the same listener type as the gateway
// (http2.createSecureServer, TLS 1.3, allowHTTP1) and the same upstream client (an undici Pool,
// dispatch API, streaming), with no pipeline at all: no routing, ids, headers policy or metrics.
// The gap between this and the gateway is what the gateway's own code costs; the gap between this
// and nginx is what Node's HTTP + TLS stack costs.
// Usage: node --import tsx bench/node-floor.ts <port> <upstream-url> <cert.pem> <key.pem> <prefix>
import { readFileSync } from 'node:fs';
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import { Pool, type Dispatcher } from 'undici';

const [portArg, upstream, certFile, keyFile, prefix] = process.argv.slice(2);
if (!portArg || !upstream || !certFile || !keyFile || !prefix) {
  console.error('usage: node-floor.ts <port> <upstream-url> <cert.pem> <key.pem> <prefix>');
  process.exit(2);
}
const base = prefix.replace(/\/$/, '');
const pool = new Pool(upstream, { connections: 256, keepAliveTimeout: 120_000 });
const HOP = new Set(['connection', 'keep-alive', 'transfer-encoding', 'upgrade', 'proxy-connection', 'te', 'trailer']);

const server = http2.createSecureServer(
  { cert: readFileSync(certFile), key: readFileSync(keyFile), minVersion: 'TLSv1.3', allowHTTP1: true },
  (req, res) => {
    const url = req.url ?? '/';
    const path = url.startsWith(base) ? url.slice(base.length) || '/' : url;
    const headers: string[] = [];
    for (const [name, value] of Object.entries(req.headers)) {
      if (name.startsWith(':') || HOP.has(name) || value === undefined) continue;
      headers.push(name, Array.isArray(value) ? value.join(', ') : value);
    }
    const handler: Dispatcher.DispatchHandler = {
      onConnect() {},
      onHeaders(status, raw) {
        const out: Record<string, string> = {};
        for (let i = 0; i < raw.length; i += 2) {
          const name = raw[i]!.toString('latin1').toLowerCase();
          if (!HOP.has(name)) out[name] = raw[i + 1]!.toString('latin1');
        }
        res.writeHead(status, out);
        return true;
      },
      onData(chunk) {
        res.write(chunk);
        return true;
      },
      onComplete() {
        res.end();
      },
      onError(err) {
        if (!res.headersSent) res.writeHead(502, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ error: { code: 'bad_gateway', message: err.message } }));
      },
    };
    pool.dispatch({ path, method: req.method as Dispatcher.HttpMethod, headers, body: req.method === 'GET' || req.method === 'HEAD' ? null : req }, handler);
  },
);
server.listen(Number(portArg), '127.0.0.1', () => {
  process.stdout.write(`listening ${(server.address() as AddressInfo).port}\n`);
});

process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
process.on('SIGTERM', () => process.exit(0));
process.on('SIGINT', () => process.exit(0));
