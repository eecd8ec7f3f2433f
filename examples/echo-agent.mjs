#!/usr/bin/env node
// A tiny HTTP "agent" for trying the gateway: echoes requests as JSON and serves an A2A Agent Card.
// Usage: node examples/echo-agent.mjs <port> [name]
import http from 'node:http';

const port = Number(process.argv[2] ?? 7001);
const name = process.argv[3] ?? `echo-${port}`;
const card = {
  name,
  description: 'Echoes whatever it is sent (an example agent for the DMSC gateway walkthrough).',
  version: '1.0.0',
  protocolVersion: '0.3.0',
  url: `http://127.0.0.1:${port}/a2a/jsonrpc`,
  preferredTransport: 'JSONRPC',
  capabilities: { streaming: false },
  defaultInputModes: ['text/plain'],
  defaultOutputModes: ['application/json'],
  skills: [{ id: 'echo', name: 'Echo', description: 'Repeats the request back', tags: ['demo', 'echo'] }],
};

http
  .createServer((req, res) => {
    if (req.url === '/.well-known/agent-card.json' || req.url === '/.well-known/agent.json') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(card));
      return;
    }
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (chunk) => (body += chunk));
    req.on('end', () => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ agent: name, method: req.method, path: req.url, body, requestId: req.headers['x-dmsc-request-id'] }, null, 2) + '\n');
    });
  })
  .listen(port, '127.0.0.1', () => console.log(`${name} listening on http://127.0.0.1:${port}`));
