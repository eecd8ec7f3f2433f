import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { pino } from 'pino';
import {
  adminRoutes,
  GatewayMetrics,
  generateAdminToken,
  hashToken,
  MAX_TENANT_AGENT_PAIRS,
  OTHER_LABEL,
  startAdminServer,
} from '../src/admin/index.js';
import { startTestGateway, TEST_ADMIN_TOKEN, type TestGateway } from './support/gateway.js';
import { startUpstream, type Upstream } from './support/upstream.js';

/** `name{labels} value` lines of one metric family in a Prometheus text exposition. */
function samples(text: string, name: string): Array<{ labels: Record<string, string>; value: number }> {
  const out: Array<{ labels: Record<string, string>; value: number }> = [];
  for (const line of text.split('\n')) {
    if (!line.startsWith(name + '{') && !line.startsWith(name + ' ')) continue;
    const labels: Record<string, string> = {};
    const braces = /\{(.*)\}/.exec(line);
    if (braces) for (const m of braces[1]!.matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[m[1]!] = m[2]!;
    out.push({ labels, value: Number(line.slice(line.lastIndexOf(' ') + 1)) });
  }
  return out;
}

/** A request with full control over method, headers and body (fetch would add its own). */
function raw(
  url: string,
  options: { method: string; headers?: Record<string, string>; body?: Buffer | string },
): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: options.method, headers: options.headers }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end(options.body);
  });
}

describe('GatewayMetrics', () => {
  it(`caps tenant/agent labels at ${MAX_TENANT_AGENT_PAIRS} pairs, then reports ${OTHER_LABEL}`, async () => {
    const metrics = new GatewayMetrics();
    for (let i = 0; i < 2100; i++) {
      metrics.requestFinished('plain', `t${i % 7}`, `agent-${i}`, 200, 0.002);
      metrics.upstreamError(`t${i % 7}`, `agent-${i}`, 'connect');
    }
    // A pair admitted before the cap keeps its own series afterwards.
    metrics.requestFinished('plain', 't0', 'agent-0', 200, 0.002);
    const { body } = await metrics.scrape();

    const requests = samples(body, 'dmsc_requests_total');
    const pairs = new Set(requests.map((s) => `${s.labels.tenant}/${s.labels.agent}`));
    assert.equal(pairs.size, MAX_TENANT_AGENT_PAIRS + 1);
    const other = requests.find((s) => s.labels.tenant === OTHER_LABEL && s.labels.agent === OTHER_LABEL);
    assert.equal(other?.value, 100);
    assert.equal(requests.find((s) => s.labels.agent === 'agent-0')?.value, 2);
    assert.equal(requests.find((s) => s.labels.agent === 'agent-2099'), undefined);

    const errors = samples(body, 'dmsc_upstream_errors_total');
    assert.equal(errors.length, MAX_TENANT_AGENT_PAIRS + 1);
    assert.equal(errors.find((s) => s.labels.tenant === OTHER_LABEL)?.value, 100);

    const histogramPairs = new Set(
      samples(body, 'dmsc_request_duration_seconds_count').map((s) => `${s.labels.tenant}/${s.labels.agent}`),
    );
    assert.equal(histogramPairs.size, MAX_TENANT_AGENT_PAIRS + 1);
  });

  it('labels unresolved requests with empty tenant/agent and reads in-flight and endpoint health at scrape time', async () => {
    const metrics = new GatewayMetrics();
    metrics.requestFinished('tls', undefined, undefined, 404, 0.0001);
    metrics.connectionOpened('tls');
    metrics.connectionOpened('tls');
    metrics.connectionClosed('tls');
    let inflight = 3;
    metrics.setInflightSource(() => inflight);
    let health = [
      { tenant: 'acme', agent: 'billing', endpoint: 'http://127.0.0.1:1', healthy: true },
      { tenant: 'acme', agent: 'billing', endpoint: 'http://127.0.0.1:2', healthy: false },
    ];
    metrics.setEndpointHealthSource(() => health);

    let text = (await metrics.scrape()).body;
    assert.deepEqual(samples(text, 'dmsc_requests_total'), [
      { labels: { listener: 'tls', tenant: '', agent: '', status: '404' }, value: 1 },
    ]);
    assert.deepEqual(samples(text, 'dmsc_connections_active'), [{ labels: { listener: 'tls' }, value: 1 }]);
    assert.deepEqual(samples(text, 'dmsc_connections_total'), [{ labels: { listener: 'tls' }, value: 2 }]);
    assert.deepEqual(samples(text, 'dmsc_inflight_requests'), [{ labels: {}, value: 3 }]);
    assert.deepEqual(
      samples(text, 'dmsc_endpoint_healthy').map((s) => [s.labels.endpoint, s.value]),
      [
        ['http://127.0.0.1:1', 1],
        ['http://127.0.0.1:2', 0],
      ],
    );
    const bucketBounds = samples(text, 'dmsc_request_duration_seconds_bucket').map((s) => s.labels.le);
    assert.equal(bucketBounds[0], '0.001');
    assert.ok(bucketBounds.includes('60'));

    inflight = 0;
    health = [health[0]!];
    text = (await metrics.scrape()).body;
    assert.deepEqual(samples(text, 'dmsc_inflight_requests'), [{ labels: {}, value: 0 }]);
    assert.equal(samples(text, 'dmsc_endpoint_healthy').length, 1, 'a removed endpoint leaves the scrape');
  });
});

describe('admin tokens', () => {
  it('generates prefixed 256-bit tokens and hashes them with SHA-256', () => {
    const a = generateAdminToken();
    const b = generateAdminToken();
    assert.match(a, /^dmsc_adm_[A-Za-z0-9_-]{43}$/);
    assert.notEqual(a, b);
    assert.match(hashToken(a), /^[0-9a-f]{64}$/);
    assert.equal(hashToken(a), hashToken(a));
    assert.notEqual(hashToken(a), hashToken(b));
  });
});

describe('admin listener on a running gateway', () => {
  let gw: TestGateway;
  let agentUpstream: Upstream;
  let closedPort: number;

  before(async () => {
    agentUpstream = await startUpstream('billing');
    // A port nothing listens on, for an upstream error.
    const probe = http.createServer();
    await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
    closedPort = (probe.address() as AddressInfo).port;
    await new Promise<void>((resolve) => probe.close(() => resolve()));
    gw = await startTestGateway({
      tenants: [{ name: 'fromfile', agents: [{ name: 'pinned', endpoints: [agentUpstream.url] }] }],
    });
  });

  after(async () => {
    await gw?.close();
    await agentUpstream?.close();
  });

  const get = (path: string, headers: Record<string, string> = {}) => raw(gw.adminUrl + path, { method: 'GET', headers });
  const auth = { authorization: `Bearer ${TEST_ADMIN_TOKEN}` };

  it('answers /healthz and /readyz without a token', async () => {
    for (const path of ['/healthz', '/readyz']) {
      const res = await get(path);
      assert.equal(res.status, 200, path);
      assert.deepEqual(JSON.parse(res.body), { status: 'ok' });
    }
  });

  it('requires the admin token on the Admin API (but not for the OpenAPI document)', async () => {
    const missing = await get('/admin/v1/tenants');
    assert.equal(missing.status, 401);
    assert.match(String(missing.headers['www-authenticate']), /^Bearer/);
    assert.equal(JSON.parse(missing.body).error.code, 'unauthorized');

    const wrong = await get('/admin/v1/tenants', { authorization: `Bearer ${generateAdminToken()}` });
    assert.equal(wrong.status, 401);
    const notBearer = await get('/admin/v1/tenants', { authorization: `Basic ${Buffer.from('a:b').toString('base64')}` });
    assert.equal(notBearer.status, 401);

    const unauthWrite = await raw(gw.adminUrl + '/admin/v1/tenants', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{"name":"sneaky"}',
    });
    assert.equal(unauthWrite.status, 401);
    assert.equal((await gw.admin('GET', '/admin/v1/tenants/sneaky')).status, 404);

    assert.equal((await get('/admin/v1/tenants', auth)).status, 200);
    assert.equal((await get('/admin/v1/openapi.json')).status, 200);
  });

  it('serves an OpenAPI 3.1 document that matches the route table both ways', async () => {
    const res = await get('/admin/v1/openapi.json');
    const doc = JSON.parse(res.body);
    assert.equal(doc.openapi, '3.1.0');
    assert.equal(typeof doc.info.title, 'string');
    assert.equal(typeof doc.info.version, 'string');
    assert.deepEqual(doc.components.securitySchemes.bearer, {
      type: 'http',
      scheme: 'bearer',
      description: doc.components.securitySchemes.bearer.description,
    });

    const documented = new Set<string>();
    for (const [path, item] of Object.entries<Record<string, any>>(doc.paths)) {
      for (const [method, op] of Object.entries(item)) {
        documented.add(`${method.toUpperCase()} ${path}`);
        assert.ok(op.operationId && op.summary && op.responses, `${method} ${path} is a complete operation`);
        for (const param of path.matchAll(/\{(\w+)\}/g)) {
          assert.ok(op.parameters.some((p: any) => p.name === param[1] && p.in === 'path' && p.required), `${path} documents ${param[1]}`);
        }
      }
    }
    const served = new Set(adminRoutes.map((r) => `${r.method} ${r.path}`));
    assert.deepEqual([...documented].sort(), [...served].sort());
    for (const r of adminRoutes) {
      const op = doc.paths[r.path][r.method.toLowerCase()];
      assert.deepEqual(op.security, r.auth ? [{ bearer: [] }] : [], `${r.method} ${r.path} security`);
    }

    // Every $ref resolves inside the document.
    const refs = [...res.body.matchAll(/"\$ref":"#\/components\/schemas\/(\w+)"/g)].map((m) => m[1]!);
    assert.ok(refs.length > 0);
    for (const name of refs) assert.ok(doc.components.schemas[name], `components.schemas.${name} exists`);
  });

  it('answers every documented operation (none is 404 or 405) with a body matching its documented schema', async () => {
    const doc = JSON.parse((await get('/admin/v1/openapi.json')).body);
    const ajv = new Ajv2020({ strict: true, allErrors: true });
    ajv.addKeyword('components'); // where OpenAPI keeps the schemas its $refs point into
    // Compiling every component proves each is a valid JSON Schema 2020-12 (OpenAPI 3.1's dialect).
    ajv.addSchema({ $id: 'https://dmsc.test/components', components: doc.components }, undefined, undefined, false);
    const validatorFor = (ref: string) => ajv.getSchema(`https://dmsc.test/components${ref}`) ?? assert.fail(`no schema ${ref}`);
    for (const name of Object.keys(doc.components.schemas)) validatorFor(`#/components/schemas/${name}`);

    assert.equal((await gw.admin('POST', '/admin/v1/tenants', { name: 'doc' })).status, 201);
    assert.equal(
      (await gw.admin('POST', '/admin/v1/tenants/doc/agents', { name: 'doc-agent', endpoints: [agentUpstream.url] })).status,
      201,
    );
    const { generateKeyAndCsr } = await import('../src/identity/keygen.js');
    const issued = await gw.gateway.identity.pki.issueFromCsr('doc', 'doc-agent', (await generateKeyAndCsr('doc-agent')).csrPem);
    const bodies: Record<string, unknown> = {
      createBootstrapToken: { ttlMs: 600_000 },
      revokeCertificate: { reason: 'superseded' },
      revokeAgentCertificates: { reason: 'superseded' },
      createTenant: { name: 'doc-other' },
      createAgent: { name: 'doc-agent-2', endpoints: [agentUpstream.url] },
      putAgent: { endpoints: [agentUpstream.url], tags: ['replaced'] },
      putPolicy: { intraTenant: 'deny', rules: [{ name: 'doc-rule', from: { agents: ['doc-agent'] } }] },
      putLimits: { tenant: { requestsPerSecond: 100 } },
      putMasking: { enabled: true, action: 'tag' },
      createAdminToken: { tenant: 'doc', description: 'doc reader' },
    };
    let adminTokenId = '';
    const queries: Record<string, string> = { explainPolicy: '?from=doc/doc-agent&to=doc/doc-agent', explainRoute: '?tenant=doc&q=anything&from=doc/doc-agent' };
    const operations: Array<{ method: string; path: string; operationId: string }> = [];
    for (const [path, item] of Object.entries<Record<string, any>>(doc.paths)) {
      for (const [method, op] of Object.entries(item)) operations.push({ method: method.toUpperCase(), path, operationId: op.operationId });
    }
    // Deletes last (the agent before its tenant), so the other calls find what they address.
    const rank = (o: { method: string; path: string }) => (o.method !== 'DELETE' ? 0 : o.path.includes('{agent}') || o.path.includes('{id}') ? 1 : 2);
    operations.sort((a, b) => rank(a) - rank(b));
    for (const op of operations) {
      const path = op.path.replace('{tenant}', 'doc').replace('{agent}', 'doc-agent').replace('{serial}', issued.serial).replace('{id}', adminTokenId);
      const res = await raw(gw.adminUrl + path + (queries[op.operationId] ?? ''), {
        method: op.method,
        headers: { ...auth, ...(bodies[op.operationId] ? { 'content-type': 'application/json' } : {}) },
        body: bodies[op.operationId] ? JSON.stringify(bodies[op.operationId]) : undefined,
      });
      assert.ok(res.status < 400, `${op.method} ${path} answered ${res.status} ${res.body}`);
      if (op.operationId === 'createAdminToken') adminTokenId = JSON.parse(res.body).id;
      const documented = doc.paths[op.path][op.method.toLowerCase()].responses[String(res.status)];
      assert.ok(documented, `${op.method} ${path}: status ${res.status} is documented`);
      const schemaRef = documented.content?.['application/json']?.schema?.$ref;
      if (schemaRef) {
        const validate = validatorFor(schemaRef);
        assert.ok(validate(JSON.parse(res.body)), `${op.method} ${path}: ${ajv.errorsText(validate.errors)}`);
      } else if (!documented.content) {
        assert.equal(res.body, '', `${op.method} ${path} documents no body`);
      }
    }
  });

  it('creates, reads, replaces and deletes tenants and agents', async () => {
    const created = await gw.admin('POST', '/admin/v1/tenants', { name: 'acme' });
    assert.equal(created.status, 201);
    assert.equal(created.body.name, 'acme');
    assert.equal(created.body.source, 'api');
    assert.equal((await gw.admin('POST', '/admin/v1/tenants', { name: 'acme' })).body.error.code, 'conflict');
    assert.equal((await gw.admin('POST', '/admin/v1/tenants', { name: 'acme' })).status, 409);

    const one = await gw.admin('GET', '/admin/v1/tenants/acme');
    assert.equal(one.status, 200);
    assert.equal(one.body.name, 'acme');
    const list = await gw.admin('GET', '/admin/v1/tenants');
    assert.ok(list.body.tenants.some((t: { name: string }) => t.name === 'acme'));

    const agent = await gw.admin('POST', '/admin/v1/tenants/acme/agents', {
      name: 'billing',
      endpoints: [agentUpstream.url],
      tags: ['finance'],
      healthCheck: { path: '/healthz' },
    });
    assert.equal(agent.status, 201, JSON.stringify(agent.body));
    assert.equal(agent.body.tenant, 'acme');
    assert.deepEqual(agent.body.tags, ['finance']);
    assert.equal(agent.body.healthCheck.path, '/healthz');
    assert.equal((await gw.admin('POST', '/admin/v1/tenants/acme/agents', { name: 'billing', endpoints: [agentUpstream.url] })).status, 409);

    const fetched = await gw.admin('GET', '/admin/v1/tenants/acme/agents/billing');
    assert.equal(fetched.status, 200);
    assert.deepEqual(
      fetched.body.endpointStatus.map((e: { url: string }) => e.url),
      [agentUpstream.url],
    );
    const agents = await gw.admin('GET', '/admin/v1/tenants/acme/agents');
    assert.deepEqual(
      agents.body.agents.map((a: { name: string }) => a.name),
      ['billing'],
    );

    const replaced = await gw.admin('PUT', '/admin/v1/tenants/acme/agents/billing', { endpoints: [agentUpstream.url], tags: ['ledger'] });
    assert.equal(replaced.status, 200);
    assert.deepEqual(replaced.body.tags, ['ledger']);
    const put = await gw.admin('PUT', '/admin/v1/tenants/acme/agents/payroll', { name: 'payroll', endpoints: [agentUpstream.url] });
    assert.equal(put.status, 201);
    const mismatch = await gw.admin('PUT', '/admin/v1/tenants/acme/agents/payroll', { name: 'other', endpoints: [agentUpstream.url] });
    assert.equal(mismatch.status, 400);
    assert.match(mismatch.body.error.message, /^name:/);

    const status = await gw.admin('GET', '/admin/v1/status');
    assert.equal(status.status, 200);
    assert.equal(typeof status.body.version, 'string');
    assert.equal(typeof status.body.uptimeSeconds, 'number');
    assert.equal(status.body.ready, true);
    assert.equal(status.body.listeners.plain, gw.plainUrl);
    assert.ok(status.body.agents >= 3);

    assert.equal((await gw.admin('DELETE', '/admin/v1/tenants/acme/agents/payroll')).status, 204);
    assert.equal((await gw.admin('GET', '/admin/v1/tenants/acme/agents/payroll')).status, 404);
    assert.equal((await gw.admin('DELETE', '/admin/v1/tenants/acme/agents/payroll')).status, 404);
    assert.equal((await gw.admin('DELETE', '/admin/v1/tenants/acme')).status, 200, 'offboarded');
    const gone = await gw.admin('GET', '/admin/v1/tenants/acme');
    assert.equal(gone.status, 404);
    assert.equal(gone.body.error.code, 'not_found');
    assert.equal((await gw.admin('GET', '/admin/v1/tenants/acme/agents/billing')).status, 404, 'agents go with their tenant');
    assert.equal((await gw.admin('GET', '/admin/v1/tenants/acme/agents')).status, 404);
    assert.equal((await gw.admin('POST', '/admin/v1/tenants/acme/agents', { name: 'x', endpoints: [agentUpstream.url] })).status, 404);
  });

  it('refuses to change what the config file manages (409 managed_by_config)', async () => {
    const del = await gw.admin('DELETE', '/admin/v1/tenants/fromfile');
    assert.equal(del.status, 409);
    assert.equal(del.body.error.code, 'managed_by_config');
    const put = await gw.admin('PUT', '/admin/v1/tenants/fromfile/agents/pinned', { endpoints: [agentUpstream.url] });
    assert.equal(put.status, 409);
    assert.equal(put.body.error.code, 'managed_by_config');
    assert.equal((await gw.admin('DELETE', '/admin/v1/tenants/fromfile/agents/pinned')).body.error?.code, 'managed_by_config');
    assert.equal((await gw.admin('GET', '/admin/v1/tenants/fromfile/agents/pinned')).body.source, 'config');
  });

  it('validates bodies and path names with messages that name the field', async () => {
    const cases: Array<[string, string, unknown, RegExp]> = [
      ['POST', '/admin/v1/tenants', { name: 'Not_A_Label' }, /^name: must be a DNS label/],
      ['POST', '/admin/v1/tenants', { name: 'ok', extra: 1 }, /extra/],
      ['POST', '/admin/v1/tenants', [], /^body:/],
      ['POST', '/admin/v1/tenants/fromfile/agents', { name: 'a', endpoints: ['ftp://x'] }, /^endpoints\[0\]: must be an http/],
      ['POST', '/admin/v1/tenants/fromfile/agents', { name: 'a', endpoints: [] }, /^endpoints:/],
      ['POST', '/admin/v1/tenants/fromfile/agents', { name: 'a', endpoints: ['http://127.0.0.1:1'], healthCheck: { intervalMs: -1 } }, /^healthCheck\.intervalMs:/],
      ['PUT', '/admin/v1/tenants/fromfile/agents/a', { endpoints: ['http://127.0.0.1:1'], tags: [''] }, /^tags\[0\]:/],
    ];
    for (const [method, path, body, message] of cases) {
      const res = await gw.admin(method, path, body);
      assert.equal(res.status, 400, `${method} ${path} ${JSON.stringify(body)}`);
      assert.equal(res.body.error.code, 'invalid');
      assert.match(res.body.error.message, message);
    }

    const badPath = await gw.admin('GET', '/admin/v1/tenants/UPPER');
    assert.equal(badPath.status, 400);
    assert.match(badPath.body.error.message, /^tenant:/);

    const malformed = await raw(gw.adminUrl + '/admin/v1/tenants', {
      method: 'POST',
      headers: { ...auth, 'content-type': 'application/json' },
      body: '{"name":',
    });
    assert.equal(malformed.status, 400);
    assert.equal(JSON.parse(malformed.body).error.code, 'bad_request');

    const empty = await raw(gw.adminUrl + '/admin/v1/tenants', { method: 'POST', headers: { ...auth, 'content-type': 'application/json' } });
    assert.equal(empty.status, 400);

    const notJson = await raw(gw.adminUrl + '/admin/v1/tenants', {
      method: 'POST',
      headers: { ...auth, 'content-type': 'text/plain' },
      body: '{"name":"x"}',
    });
    assert.equal(notJson.status, 415);
    assert.equal(JSON.parse(notJson.body).error.code, 'unsupported_media_type');

    const huge = await raw(gw.adminUrl + '/admin/v1/tenants', {
      method: 'POST',
      headers: { ...auth, 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'x', pad: 'a'.repeat(1024 * 1024) }),
    });
    assert.equal(huge.status, 413);
    assert.equal(JSON.parse(huge.body).error.code, 'body_too_large');
    const hugeChunked = await raw(gw.adminUrl + '/admin/v1/tenants', {
      method: 'POST',
      headers: { ...auth, 'content-type': 'application/json', 'transfer-encoding': 'chunked' },
      body: JSON.stringify({ name: 'x', pad: 'a'.repeat(1024 * 1024) }),
    });
    assert.equal(hugeChunked.status, 413, 'a body without content-length is counted while it streams');
  });

  it('answers 405 with Allow for a known path and 404 for an unknown one', async () => {
    const res = await raw(gw.adminUrl + '/admin/v1/tenants', { method: 'DELETE', headers: auth });
    assert.equal(res.status, 405);
    assert.equal(res.headers.allow, 'GET, POST, HEAD');
    assert.equal(JSON.parse(res.body).error.code, 'method_not_allowed');
    const metricsPost = await raw(gw.adminUrl + '/metrics', { method: 'POST' });
    assert.equal(metricsPost.status, 405);

    const unknown = await get('/admin/v1/nothing-here', auth);
    assert.equal(unknown.status, 404);
    assert.equal(JSON.parse(unknown.body).error.code, 'not_found');
  });

  it('exposes every documented metric after proxied requests', async () => {
    assert.equal((await gw.admin('POST', '/admin/v1/tenants', { name: 'metered' })).status, 201);
    await gw.admin('POST', '/admin/v1/tenants/metered/agents', { name: 'ok', endpoints: [agentUpstream.url] });
    await gw.admin('POST', '/admin/v1/tenants/metered/agents', { name: 'down', endpoints: [`http://127.0.0.1:${closedPort}`] });
    const ok = await fetch(`${gw.plainUrl}/agents/metered/ok/hello`);
    assert.equal(ok.status, 200);
    await ok.text();
    const down = await fetch(`${gw.plainUrl}/agents/metered/down/hello`);
    assert.equal(down.status, 502);
    await down.text();

    const res = await get('/metrics');
    assert.equal(res.status, 200);
    assert.match(String(res.headers['content-type']), /^text\/plain/);
    const text = res.body;
    const okRequests = samples(text, 'dmsc_requests_total').find(
      (s) => s.labels.tenant === 'metered' && s.labels.agent === 'ok' && s.labels.status === '200' && s.labels.listener === 'plain',
    );
    assert.equal(okRequests?.value, 1);
    assert.ok(samples(text, 'dmsc_request_duration_seconds_count').some((s) => s.labels.agent === 'ok' && s.value === 1));
    assert.ok(samples(text, 'dmsc_upstream_errors_total').some((s) => s.labels.agent === 'down' && s.labels.kind === 'connect'));
    assert.ok(samples(text, 'dmsc_connections_total').some((s) => s.labels.listener === 'plain' && s.value >= 1));
    assert.ok(samples(text, 'dmsc_connections_active').some((s) => s.labels.listener === 'plain'));
    assert.equal(samples(text, 'dmsc_inflight_requests').length, 1);
    assert.ok(samples(text, 'dmsc_endpoint_healthy').some((s) => s.labels.tenant === 'metered' && s.labels.agent === 'ok' && s.labels.endpoint === agentUpstream.url));
    assert.ok(samples(text, 'process_cpu_user_seconds_total').length === 1, 'process metrics');
  });
});

describe('admin server readiness and write logging', () => {
  it('answers /readyz 503 while not ready and logs every write', async () => {
    const gw = await startTestGateway();
    const lines: Array<Record<string, unknown>> = [];
    const sink = new Writable({
      write(chunk: Buffer, _encoding, done) {
        for (const line of chunk.toString('utf8').split('\n')) if (line) lines.push(JSON.parse(line));
        done();
      },
    });
    let ready = true;
    const token = generateAdminToken();
    // A second admin server over the running gateway's real registry, so readiness can be switched.
    const admin = await startAdminServer({
      host: '127.0.0.1',
      port: 0,
      registry: gw.gateway.registry,
      metrics: new GatewayMetrics(),
      logger: pino({ level: 'info' }, sink),
      adminTokenHashes: async () => [hashToken(token)],
      isReady: () => ready,
      status: () => ({ listeners: {}, inflight: 0, tenants: gw.gateway.registry.listTenants().length, stateDir: gw.stateDir }),
    });
    try {
      assert.equal((await fetch(admin.url + '/readyz')).status, 200);
      ready = false;
      const draining = await fetch(admin.url + '/readyz');
      assert.equal(draining.status, 503);
      assert.deepEqual(await draining.json(), { status: 'draining' });
      assert.equal((await fetch(admin.url + '/healthz')).status, 200);

      const created = await fetch(admin.url + '/admin/v1/tenants', {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ name: 'logged' }),
      });
      assert.equal(created.status, 201);
      await created.text();
      const refused = await fetch(admin.url + '/admin/v1/tenants/logged', { method: 'DELETE' });
      assert.equal(refused.status, 401);
      await refused.text();
      await fetch(admin.url + '/admin/v1/tenants', { headers: { authorization: `Bearer ${token}` } }).then((r) => r.text());

      const writes = lines.filter((line) => line.msg === 'admin write');
      assert.deepEqual(
        writes.map(({ actor, method, path, status }) => ({ actor, method, path, status })),
        [
          { actor: 'admin-token', method: 'POST', path: '/admin/v1/tenants', status: 201 },
          { actor: 'anonymous', method: 'DELETE', path: '/admin/v1/tenants/logged', status: 401 },
        ],
      );
    } finally {
      await admin.close();
      await gw.close();
    }
  });
});
