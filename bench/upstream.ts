// The benchmark's upstream agent: a plain node:http server answering every request with the same
// 1 KiB JSON body (keep-alive). Run as its own process: `node --import tsx bench/upstream.ts <port>`.
// Prints "listening <port>" once ready; exits when its parent closes stdin (no orphan on a crash).
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export const BODY_BYTES = 1024;

export function fixedBody(bytes = BODY_BYTES): Buffer {
  const head = '{"agent":"echo","ok":true,"pad":"';
  const tail = '"}';
  const body = head + 'x'.repeat(bytes - head.length - tail.length) + tail;
  return Buffer.from(body);
}

const body = fixedBody();
const headers = { 'content-type': 'application/json', 'content-length': String(body.length) };

const server = http.createServer((req, res) => {
  // Drain any request body, then answer; GETs have none.
  req.resume();
  res.writeHead(200, headers);
  res.end(body);
});
server.keepAliveTimeout = 120_000;
server.headersTimeout = 125_000;
server.requestTimeout = 0;
server.maxRequestsPerSocket = 0;

const port = Number(process.argv[2] ?? 0);
server.listen(port, '127.0.0.1', () => {
  process.stdout.write(`listening ${(server.address() as AddressInfo).port}\n`);
});

process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
process.on('SIGTERM', () => process.exit(0));
process.on('SIGINT', () => process.exit(0));
