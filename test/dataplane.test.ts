import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { execFile } from 'node:child_process';
import http from 'node:http';
import http2 from 'node:http2';
import path from 'node:path';
import tls from 'node:tls';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { Agent, request } from 'undici';
import { startTestGateway, eventually, type TestGateway } from './support/gateway.js';
import { startUpstream, type Upstream } from './support/upstream.js';

const run = promisify(execFile);

/** A GET with node:http: the path goes out exactly as written and any header may be sent. */
function rawRequest(
  url: string,
  options: { headers?: Record<string, string> } = {},
): Promise<{ statusCode: number; headers: http.IncomingHttpHeaders; body: { json(): Promise<unknown> } }> {
  const { origin } = new URL(url);
  const path = url.slice(origin.length);
  return new Promise((resolve, reject) => {
    const req = http.request(origin, { path, headers: options.headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () =>
        resolve({
          statusCode: res.statusCode ?? 0,
          headers: res.headers,
          body: { json: async () => JSON.parse(Buffer.concat(chunks).toString('utf8')) as unknown },
        }),
      );
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

async function curl(args: string[]): Promise<{ status: number; body: string; stderr: string; code: number }> {
  try {
    const { stdout, stderr } = await run('curl', ['-sS', '-o', '-', '-w', '\n%{http_code}', ...args], { timeout: 20_000 });
    const at = stdout.lastIndexOf('\n');
    return { status: Number(stdout.slice(at + 1)), body: stdout.slice(0, at), stderr, code: 0 };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { status: 0, body: e.stdout ?? '', stderr: e.stderr ?? '', code: e.code };
  }
}

describe('forwarding over the plaintext listener', () => {
  let gw: TestGateway;
  let billing: Upstream;
  let based: Upstream;

  before(async () => {
    billing = await startUpstream('billing');
    based = await startUpstream('based');
    gw = await startTestGateway({
      tenants: [
        {
          name: 'acme',
          agents: [
            { name: 'billing', endpoints: [billing.url], tags: ['finance'] },
            { name: 'based', endpoints: [`${based.url}/base`] },
          ],
        },
      ],
    });
  });
  after(async () => {
    await gw.close();
    await billing.close();
    await based.close();
  });

  it('forwards by path with query, adds trace context and request id, strips hop-by-hop headers', async () => {
    // node:http rather than undici: undici refuses to send hop-by-hop headers, and this test needs them sent.
    const res = await rawRequest(`${gw.plainUrl}/agents/acme/billing/invoices/7?full=1`, {
      headers: {
        connection: 'keep-alive, x-secret-hop',
        'x-secret-hop': 'must-not-pass',
        'keep-alive': 'timeout=5',
        'x-custom': 'kept',
        traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',
      },
    });
    assert.equal(res.statusCode, 200);
    const body = (await res.body.json()) as { url: string };
    assert.equal(body.url, '/invoices/7?full=1');
    const seen = billing.seen.at(-1)!;
    assert.equal(seen.headers['x-custom'], 'kept');
    assert.equal(seen.headers['x-secret-hop'], undefined);
    assert.equal(seen.headers['keep-alive'], undefined);
    assert.match(String(seen.headers.traceparent), /^00-0af7651916cd43dd8448eb211c80319c-[0-9a-f]{16}-01$/);
    assert.notEqual(String(seen.headers.traceparent).split('-')[2], 'b7ad6b7169203331', 'the gateway is a new span');
    assert.match(String(seen.headers['x-dmsc-request-id']), /^[0-9a-f]{32}$/);
    assert.equal(res.headers['x-dmsc-request-id'], seen.headers['x-dmsc-request-id']);
    assert.equal(seen.headers['x-forwarded-proto'], 'http');
    assert.equal(seen.headers['x-forwarded-for'], '127.0.0.1');
    assert.equal(res.headers['x-dmsc-routed-to'], undefined, 'the caller chose the target');
  });

  it('starts a new trace when the caller sends none, and keeps a well-formed caller request id', async () => {
    const res = await request(`${gw.plainUrl}/agents/acme/billing/`, { headers: { 'x-dmsc-request-id': 'caller-id-1' } });
    await res.body.dump();
    const seen = billing.seen.at(-1)!;
    assert.match(String(seen.headers.traceparent), /^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
    assert.equal(seen.headers['x-dmsc-request-id'], 'caller-id-1');
  });

  it('forwards by host name <agent>.<tenant>.<domain> with the whole path', async () => {
    const res = await request(`${gw.plainUrl}/v1/ping`, { headers: { host: 'billing.acme.dmsc.localhost' } });
    assert.equal(res.statusCode, 200);
    assert.equal(((await res.body.json()) as { url: string }).url, '/v1/ping');
  });

  it('prefixes the endpoint base path and cannot be escaped with dot segments', async () => {
    let res = await rawRequest(`${gw.plainUrl}/agents/acme/based/x`);
    assert.equal(((await res.body.json()) as { url: string }).url, '/base/x');
    // Sent verbatim (a WHATWG URL would resolve the dot segments on the client side).
    res = await rawRequest(`${gw.plainUrl}/agents/acme/based/a/../../../etc/%2e%2e/passwd`);
    assert.equal(((await res.body.json()) as { url: string }).url, '/base/passwd');
  });

  it('answers 404 JSON for an unknown agent, tenant or no address', async () => {
    for (const [url, pattern] of [
      ['/agents/acme/nobody/x', /unknown agent "nobody"/],
      ['/agents/nope/billing/x', /unknown tenant "nope"/],
      ['/hello', /no agent addressed/],
    ] as const) {
      const res = await request(gw.plainUrl + url);
      assert.equal(res.statusCode, 404);
      assert.match(String(res.headers['content-type']), /application\/json/);
      const body = (await res.body.json()) as { error: { code: string; message: string } };
      assert.equal(body.error.code, 'not_found');
      assert.match(body.error.message, pattern);
      assert.ok(res.headers['x-dmsc-request-id']);
    }
  });

  it('answers 431 JSON for oversized headers and 413 JSON for oversized bodies', async () => {
    const big = 'a'.repeat(20 * 1024);
    const headersRes = await request(`${gw.plainUrl}/agents/acme/billing/`, { headers: { 'x-big': big } });
    assert.equal(headersRes.statusCode, 431);
    assert.equal(((await headersRes.body.json()) as { error: { code: string } }).error.code, 'headers_too_large');
  });

  it('streams a POST body through and reports its size', async () => {
    const payload = Buffer.alloc(3 * 1024 * 1024, 7);
    const res = await request(`${gw.plainUrl}/agents/acme/billing/upload`, { method: 'POST', body: payload });
    assert.equal(res.statusCode, 200);
    assert.equal(((await res.body.json()) as { bodyBytes: number }).bodyBytes, payload.length);
  });
});

describe('limits', () => {
  let gw: TestGateway;
  let agent: Upstream;
  before(async () => {
    agent = await startUpstream('limited');
    gw = await startTestGateway({
      limits: { maxBodyBytes: 1024, maxHeaderBytes: 4096 },
      tenants: [{ name: 'acme', agents: [{ name: 'a', endpoints: [agent.url] }] }],
    });
  });
  after(async () => {
    await gw.close();
    await agent.close();
  });

  it('refuses a declared body over the limit with 413 before contacting the agent', async () => {
    const before = agent.seen.length;
    const res = await request(`${gw.plainUrl}/agents/acme/a/`, { method: 'POST', body: Buffer.alloc(2048) });
    assert.equal(res.statusCode, 413);
    assert.equal(((await res.body.json()) as { error: { code: string } }).error.code, 'body_too_large');
    assert.equal(agent.seen.length, before);
  });

  it('refuses a chunked body that grows past the limit with 413', async () => {
    async function* chunks() {
      for (let i = 0; i < 8; i++) yield Buffer.alloc(512, 1);
    }
    const res = await request(`${gw.plainUrl}/agents/acme/a/`, { method: 'POST', body: Readable.from(chunks()) });
    assert.equal(res.statusCode, 413);
    await res.body.dump();
  });

  it('answers 431 over HTTP/2 as well', async () => {
    const client = http2.connect(gw.tlsUrl, { ca: gw.caCert });
    try {
      const stream = client.request({ ':path': '/agents/acme/a/', 'x-big': 'b'.repeat(6000) });
      const status = await new Promise<number>((resolve, reject) => {
        stream.on('response', (headers) => resolve(Number(headers[':status'])));
        stream.on('error', reject);
      });
      stream.resume();
      assert.equal(status, 431);
    } finally {
      client.close();
    }
  });
});

describe('TLS listener', () => {
  let gw: TestGateway;
  let agent: Upstream;
  let tlsDir: string;
  before(async () => {
    agent = await startUpstream('secure');
    gw = await startTestGateway({
      listeners: { tls: { mtls: { enabled: true } } },
      tenants: [{ name: 'acme', agents: [{ name: 'secure', endpoints: [agent.url] }] }],
    }, { devClientMayCall: true });
    tlsDir = path.join(gw.stateDir, 'tls');
  });
  after(async () => {
    await gw.close();
    await agent.close();
  });

  for (const version of ['--http1.1', '--http2']) {
    it(`curl ${version} with a client certificate reaches the agent`, async () => {
      const result = await curl([
        version,
        '--cacert',
        path.join(tlsDir, 'ca.crt'),
        '--cert',
        path.join(tlsDir, 'client.crt'),
        '--key',
        path.join(tlsDir, 'client.key'),
        '-H',
        'x-probe: 1',
        `${gw.tlsUrl}/agents/acme/secure/hello`,
      ]);
      assert.equal(result.status, 200, result.stderr);
      assert.equal(JSON.parse(result.body).url, '/hello');
      assert.equal(agent.seen.at(-1)!.headers['x-forwarded-proto'], 'https');
    });
  }

  it('refuses a client without a certificate when mTLS is on: 401 JSON that says why, audited', async () => {
    const before = agent.seen.length;
    const result = await curl(['--http1.1', '--cacert', path.join(tlsDir, 'ca.crt'), `${gw.tlsUrl}/agents/acme/secure/`]);
    assert.equal(result.status, 401, result.stderr);
    const body = JSON.parse(result.body) as { error: { code: string; message: string } };
    assert.equal(body.error.code, 'unauthenticated');
    assert.match(body.error.message, /client certificate/);
    assert.equal(agent.seen.length, before, 'the agent never sees the request');
    const records = await gw.gateway.audit.list({ action: 'authn' });
    const refusal = records.find((r) => r.decision === 'deny' && /no_credentials/.test(r.reason ?? ''));
    assert.equal(refusal?.tenant, 'acme', "the refusal is in the addressed tenant's trail");
  });

  it('refuses a client limited to TLS 1.2', async () => {
    const result = await curl([
      '--tls-max',
      '1.2',
      '--cacert',
      path.join(tlsDir, 'ca.crt'),
      '--cert',
      path.join(tlsDir, 'client.crt'),
      '--key',
      path.join(tlsDir, 'client.key'),
      `${gw.tlsUrl}/agents/acme/secure/`,
    ]);
    assert.equal(result.status, 0);
    assert.notEqual(result.code, 0);
    const error = await new Promise<Error>((resolve) => {
      const socket = tls.connect({ host: '127.0.0.1', port: Number(new URL(gw.tlsUrl).port), maxVersion: 'TLSv1.2', ca: gw.caCert });
      socket.on('error', resolve);
      socket.on('secureConnect', () => resolve(new Error('connected')));
    });
    assert.notEqual(error.message, 'connected');
    assert.match(error.message, /version|protocol|alert/i);
  });
});

describe('HTTP/2 and gRPC-style passthrough', () => {
  let gw: TestGateway;
  let h2Server: http2.Http2Server;
  let h2Port: number;
  before(async () => {
    h2Server = http2.createServer();
    h2Server.on('stream', (stream, headers) => {
      const chunks: Buffer[] = [];
      stream.on('data', (chunk: Buffer) => chunks.push(chunk));
      stream.on('end', () => {
        stream.respond({ ':status': 200, 'content-type': 'application/grpc', 'x-path': String(headers[':path']) }, { waitForTrailers: true });
        stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0', 'grpc-message': 'ok', 'x-te': String(headers.te) }));
        stream.write(Buffer.concat(chunks));
        stream.end();
      });
    });
    await new Promise<void>((resolve) => h2Server.listen(0, '127.0.0.1', resolve));
    h2Port = (h2Server.address() as { port: number }).port;
    gw = await startTestGateway({
      tenants: [{ name: 'acme', agents: [{ name: 'rpc', endpoints: [`http://127.0.0.1:${h2Port}`] }] }],
    }, { devClientMayCall: true });
  });
  after(async () => {
    await gw.close();
    await new Promise((resolve) => h2Server.close(resolve));
  });

  it('relays gRPC over h2c to the agent with trailers, addressed by host name', async () => {
    const client = http2.connect(gw.tlsUrl, { ca: gw.caCert, cert: gw.clientCert, key: gw.clientKey, servername: 'rpc.acme.dmsc.localhost' });
    try {
      const stream = client.request({
        ':method': 'POST',
        ':path': '/echo.Echo/Say',
        ':authority': 'rpc.acme.dmsc.localhost',
        'content-type': 'application/grpc',
        te: 'trailers',
      });
      const frame = Buffer.from([0, 0, 0, 0, 3, 1, 2, 3]);
      stream.end(frame);
      const headers = await new Promise<http2.IncomingHttpHeaders>((resolve) => stream.on('response', resolve));
      const trailers = new Promise<http2.IncomingHttpHeaders>((resolve) => stream.on('trailers', resolve));
      const chunks: Buffer[] = [];
      for await (const chunk of stream) chunks.push(chunk as Buffer);
      assert.equal(headers[':status'], 200);
      assert.equal(headers['x-path'], '/echo.Echo/Say');
      assert.ok(headers['x-dmsc-request-id']);
      assert.deepEqual(Buffer.concat(chunks), frame);
      const received = await trailers;
      assert.equal(received['grpc-status'], '0');
      assert.equal(received['x-te'], 'trailers');
    } finally {
      client.close();
    }
  });

  it('answers a gRPC call for an unknown agent with a gRPC status, not JSON', async () => {
    const client = http2.connect(gw.tlsUrl, { ca: gw.caCert, cert: gw.clientCert, key: gw.clientKey });
    try {
      const stream = client.request({ ':method': 'POST', ':path': '/agents/acme/missing/x.Y/Z', 'content-type': 'application/grpc' });
      stream.end();
      const headers = await new Promise<http2.IncomingHttpHeaders>((resolve) => stream.on('response', resolve));
      stream.resume();
      assert.equal(headers[':status'], 200);
      assert.equal(headers['grpc-status'], '5');
    } finally {
      client.close();
    }
  });
});

describe('upstream failures and failover', () => {
  it('answers 502 JSON when the only endpoint refuses connections and 504 on a first-byte timeout', async () => {
    const dead = await startUpstream('dead');
    const deadUrl = dead.url;
    await dead.close();
    const slow = await startUpstream('slow', () => {
      /* never answers */
    });
    const gw = await startTestGateway({
      timeouts: { firstByteMs: 300 },
      healthCheck: { enabled: false },
      tenants: [
        {
          name: 'acme',
          agents: [
            { name: 'dead', endpoints: [deadUrl] },
            { name: 'slow', endpoints: [slow.url] },
          ],
        },
      ],
    });
    try {
      let res = await request(`${gw.plainUrl}/agents/acme/dead/x`);
      assert.equal(res.statusCode, 502);
      assert.equal(((await res.body.json()) as { error: { code: string } }).error.code, 'upstream_unavailable');
      res = await request(`${gw.plainUrl}/agents/acme/slow/x`);
      assert.equal(res.statusCode, 504);
      assert.equal(((await res.body.json()) as { error: { code: string } }).error.code, 'upstream_timeout');
    } finally {
      await gw.close();
      await slow.close();
    }
  });

  it('cuts an exchange over timeouts.totalMs: 504 before the answer starts, a reset once it streams', async () => {
    const silent = await startUpstream('silent', () => {
      /* never answers */
    });
    const trickle = await startUpstream('trickle', (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.write('started');
      /* then never finishes */
    });
    const gw = await startTestGateway({
      timeouts: { totalMs: 300 },
      healthCheck: { enabled: false },
      tenants: [{ name: 'acme', agents: [{ name: 'silent', endpoints: [silent.url] }, { name: 'trickle', endpoints: [trickle.url] }] }],
    });
    try {
      const started = Date.now();
      const res = await request(`${gw.plainUrl}/agents/acme/silent/x`);
      assert.equal(res.statusCode, 504);
      assert.match(((await res.body.json()) as { error: { message: string } }).error.message, /total/);
      assert.ok(Date.now() - started < 2000, 'cut near the deadline, not at firstByteMs');
      const streaming = await request(`${gw.plainUrl}/agents/acme/trickle/x`);
      assert.equal(streaming.statusCode, 200);
      await assert.rejects(streaming.body.text(), 'a cut stream is never passed off as complete');
    } finally {
      await gw.close();
      await silent.close();
      await trickle.close();
    }
  });

  it('moves all traffic to the surviving endpoint with no failed idempotent request', async () => {
    const one = await startUpstream('one');
    const two = await startUpstream('two');
    const gw = await startTestGateway({
      healthCheck: { intervalMs: 200, timeoutMs: 100, unhealthyThreshold: 1, healthyThreshold: 1 },
      tenants: [{ name: 'acme', agents: [{ name: 'pair', endpoints: [one.url, two.url] }] }],
    });
    try {
      const seenBy = new Set<string>();
      for (let i = 0; i < 10; i++) {
        const res = await request(`${gw.plainUrl}/agents/acme/pair/`);
        assert.equal(res.statusCode, 200);
        seenBy.add(((await res.body.json()) as { name: string }).name);
      }
      assert.deepEqual([...seenBy].sort(), ['one', 'two']);

      await one.close();
      const killedAt = Date.now();
      while (Date.now() - killedAt < 500) {
        const res = await request(`${gw.plainUrl}/agents/acme/pair/`);
        assert.equal(res.statusCode, 200, 'no failed request for idempotent calls');
        assert.equal(((await res.body.json()) as { name: string }).name, 'two');
      }
      const status = await gw.admin('GET', '/admin/v1/tenants/acme/agents/pair');
      const endpoints = status.body.endpointStatus as Array<{ url: string; healthy: boolean }>;
      assert.equal(endpoints.find((e) => e.url === one.url)?.healthy, false);
    } finally {
      await gw.close();
      await two.close();
    }
  });
});

describe('state and lifecycle', () => {
  it('keeps every tenant and agent created through the Admin API across a restart', async () => {
    const agent = await startUpstream('persisted');
    const first = await startTestGateway();
    const stateDir = first.stateDir;
    try {
      assert.equal((await first.admin('POST', '/admin/v1/tenants', { name: 'globex' })).status, 201);
      const created = await first.admin('POST', '/admin/v1/tenants/globex/agents', {
        name: 'search',
        endpoints: [agent.url],
        tags: ['search'],
      });
      assert.equal(created.status, 201, JSON.stringify(created.body));
      await first.close(false);

      const second = await startTestGateway({}, { stateDir });
      try {
        const tenants = await second.admin('GET', '/admin/v1/tenants');
        const names = (tenants.body.tenants ?? tenants.body).map((t: { name: string }) => t.name);
        assert.ok(names.includes('globex'));
        const res = await request(`${second.plainUrl}/agents/globex/search/q`);
        assert.equal(res.statusCode, 200);
        assert.equal(((await res.body.json()) as { name: string }).name, 'persisted');
      } finally {
        await second.close(false);
      }
    } finally {
      await agent.close();
      const { rm } = await import('node:fs/promises');
      await rm(stateDir, { recursive: true, force: true });
    }
  });

  it('drains an in-flight request on shutdown and refuses new connections', async () => {
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    let arrived!: () => void;
    const arrivedPromise = new Promise<void>((resolve) => (arrived = resolve));
    const slow = await startUpstream('slow', (req, res) => {
      // Only proxied requests carry a request id; health checks and card fetches must not count.
      if (!req.headers['x-dmsc-request-id']) return void res.writeHead(404).end();
      arrived();
      void released.then(() => res.end('done'));
    });
    const gw = await startTestGateway({ tenants: [{ name: 'acme', agents: [{ name: 'slow', endpoints: [slow.url] }] }] });
    const dispatcher = new Agent();
    try {
      const pending = request(`${gw.plainUrl}/agents/acme/slow/`, { dispatcher });
      await arrivedPromise;
      const closing = gw.gateway.close();
      await eventually(async () => {
        try {
          await request(`${gw.plainUrl}/agents/acme/slow/`, { dispatcher: new Agent() });
          return false;
        } catch {
          return true;
        }
      });
      release();
      const res = await pending;
      assert.equal(res.statusCode, 200);
      assert.equal(await res.body.text(), 'done');
      await closing;
    } finally {
      await dispatcher.close();
      await slow.close();
    }
  });
});

describe('server-sent events', () => {
  it('flushes each event to the caller as the agent writes it', async () => {
    let next!: () => void;
    const sse = await startUpstream('sse', (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
      res.write('data: first\n\n');
      next = () => {
        res.write('data: second\n\n');
        res.end();
      };
    });
    const gw = await startTestGateway({ tenants: [{ name: 'acme', agents: [{ name: 'sse', endpoints: [sse.url] }] }] });
    try {
      const res = await request(`${gw.plainUrl}/agents/acme/sse/events`);
      assert.equal(res.statusCode, 200);
      const received: string[] = [];
      for await (const chunk of res.body) {
        received.push(String(chunk));
        // The agent only writes the second event after we saw the first: proof nothing is buffered.
        if (received.length === 1) next();
      }
      assert.equal(received.join(''), 'data: first\n\ndata: second\n\n');
    } finally {
      await gw.close();
      await sse.close();
    }
  });
});
