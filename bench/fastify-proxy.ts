// @fastify/http-proxy over HTTPS (TLS 1.3, HTTP/1.1) as a peer for the benchmark, in its own process.
// Usage: node --import tsx bench/fastify-proxy.ts <port> <upstream-url> <cert.pem> <key.pem> <prefix>
// Prints "listening <port>" once ready; exits when its parent closes stdin.
import { readFileSync } from 'node:fs';
import proxy from '@fastify/http-proxy';
import Fastify from 'fastify';

const [portArg, upstream, certFile, keyFile, prefix] = process.argv.slice(2);
if (!portArg || !upstream || !certFile || !keyFile || !prefix) {
  console.error('usage: fastify-proxy.ts <port> <upstream-url> <cert.pem> <key.pem> <prefix>');
  process.exit(2);
}

const app = Fastify({
  logger: false,
  https: { cert: readFileSync(certFile), key: readFileSync(keyFile), minVersion: 'TLSv1.3' },
  keepAliveTimeout: 120_000,
});
await app.register(proxy, { upstream, prefix: prefix.replace(/\/$/, ''), rewritePrefix: '' });
await app.listen({ port: Number(portArg), host: '127.0.0.1' });
const address = app.server.address();
process.stdout.write(`listening ${typeof address === 'object' && address ? address.port : portArg}\n`);

process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
process.on('SIGTERM', () => void app.close().finally(() => process.exit(0)));
process.on('SIGINT', () => process.exit(0));
