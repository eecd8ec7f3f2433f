import assert from 'node:assert/strict';
import type http from 'node:http';
import { after, before, describe, it } from 'node:test';
import { Agent, Pool, request as undiciRequest } from 'undici';
import { eventually, startTestGateway, type TestGateway } from './support/gateway.js';
import { startUpstream, type Upstream } from './support/upstream.js';

/*
 * The router keeps each caller context's eligibility verdicts (policy, health, registration) across
 * decisions. They are security decisions: every change they depend on must reach the next request.
 * primary matches "tax returns" best; backup matches less well and is cleared for pii data.
 */
describe('kept routing verdicts follow every change they depend on', () => {
  let gw: TestGateway;
  let pool: Pool;
  const upstreams: Upstream[] = [];
  /** The status primary's health path answers. */
  let primaryHealth = 200;

  /** An upstream answering `{ name }`, and its /health path with the status `health()` gives. */
  const agent = async (name: string, health: () => number) => {
    const handler = (req: http.IncomingMessage, res: http.ServerResponse) => {
      const status = req.url === '/health' ? health() : 200;
      req.resume();
      req.on('end', () => res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify({ name })));
    };
    const upstream = await startUpstream(name, handler);
    upstreams.push(upstream);
    return upstream;
  };

  const ask = async (dataTags?: string): Promise<{ status: number; routedTo: unknown; body: string }> => {
    const res = await pool.request({
      path: '/tenants/acme/ask',
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(dataTags ? { 'x-dmsc-data-tags': dataTags } : {}) },
      body: JSON.stringify({ q: 'please file my tax returns' }),
    });
    return { status: res.statusCode, routedTo: res.headers['x-dmsc-routed-to'], body: await res.body.text() };
  };

  const primarySpec = (extra: Record<string, unknown> = {}) => ({
    endpoints: [upstreams[0]!.url],
    skills: [{ id: 'tax', name: 'Tax returns', description: 'Files tax returns and computes tax owed' }],
    healthCheck: { enabled: true, path: '/health', intervalMs: 50, timeoutMs: 1000, healthyThreshold: 1, unhealthyThreshold: 1 },
    ...extra,
  });

  before(async () => {
    await agent('primary', () => primaryHealth);
    await agent('backup', () => 200);
    gw = await startTestGateway({ routing: { intent: { jsonField: '/q' } } });
    pool = new Pool(gw.plainUrl, { connections: 4 });
    assert.equal((await gw.admin('POST', '/admin/v1/tenants', { name: 'acme' })).status, 201);
    assert.equal((await gw.admin('PUT', '/admin/v1/tenants/acme/agents/primary', primarySpec())).status, 201);
    const backup = await gw.admin('PUT', '/admin/v1/tenants/acme/agents/backup', {
      endpoints: [upstreams[1]!.url],
      skills: [{ id: 'books', name: 'Bookkeeping', description: 'Keeps the books and helps with tax returns' }],
      clearances: ['pii'],
      healthCheck: { enabled: false },
    });
    assert.equal(backup.status, 201, JSON.stringify(backup.body));
    await eventually(async () => (await ask()).routedTo === 'acme/primary');
  });
  after(async () => {
    await pool?.close();
    await gw?.close();
    await Promise.all(upstreams.map((upstream) => upstream.close()));
  });

  it('a context of its own per caller facts: data tags are not answered from a context without them', async () => {
    assert.equal((await ask()).routedTo, 'acme/primary');
    // primary is not cleared for pii: a request carrying it goes to backup, then the plain one to primary again.
    assert.equal((await ask('pii')).routedTo, 'acme/backup');
    assert.equal((await ask()).routedTo, 'acme/primary');
    assert.equal((await ask('pii')).routedTo, 'acme/backup');
  });

  it('a policy change applies to the next request', async () => {
    assert.equal((await ask()).routedTo, 'acme/primary');
    const deny = await gw.admin('PUT', '/admin/v1/tenants/acme/policy', { rules: [{ name: 'not-primary', effect: 'deny', from: { anonymous: true }, to: { agents: ['primary'] } }] });
    assert.equal(deny.status, 200, JSON.stringify(deny.body));
    assert.equal((await ask()).routedTo, 'acme/backup');
    assert.equal((await gw.admin('PUT', '/admin/v1/tenants/acme/policy', { rules: [] })).status, 200);
    assert.equal((await ask()).routedTo, 'acme/primary');
  });

  it('a registry change applies to the next request', async () => {
    assert.equal((await ask('pii')).routedTo, 'acme/backup');
    const cleared = await gw.admin('PUT', '/admin/v1/tenants/acme/agents/primary', primarySpec({ clearances: ['pii'] }));
    assert.equal(cleared.status, 200, JSON.stringify(cleared.body));
    assert.equal((await ask('pii')).routedTo, 'acme/primary');
    assert.equal((await gw.admin('PUT', '/admin/v1/tenants/acme/agents/primary', primarySpec())).status, 200);
    assert.equal((await ask('pii')).routedTo, 'acme/backup');
  });

  it('an endpoint turning unhealthy is left out by the next decision, and taken back when it recovers', async () => {
    const status = async () => (await gw.admin('GET', '/admin/v1/tenants/acme/agents/primary')).body.endpointStatus[0].healthy as boolean;
    await eventually(status);
    assert.equal((await ask()).routedTo, 'acme/primary');
    primaryHealth = 503;
    await eventually(async () => !(await status()));
    const requests = upstreams[0]!.seen.filter((seen) => seen.url !== '/health').length;
    const answer = await ask();
    assert.equal(answer.routedTo, 'acme/backup');
    assert.equal(upstreams[0]!.seen.filter((seen) => seen.url !== '/health').length, requests, 'primary was not tried');
    primaryHealth = 200;
    await eventually(status);
    assert.equal((await ask()).routedTo, 'acme/primary');
  });
});

describe('kept routing verdicts follow a refreshed Agent Card', () => {
  let gw: TestGateway;
  let pool: Pool;
  const upstreams: Upstream[] = [];
  /** The binding of the one interface each agent's card declares. */
  const bindings: Record<string, 'JSONRPC' | 'HTTP+JSON'> = { primary: 'JSONRPC', backup: 'JSONRPC' };
  const skills: Record<string, unknown[]> = {
    primary: [{ id: 'tax', name: 'Tax returns', description: 'Files tax returns and computes tax owed', tags: [] }],
    backup: [{ id: 'books', name: 'Bookkeeping', description: 'Keeps the books and helps with tax returns', tags: [] }],
  };

  /** An A2A agent whose card declares one interface at /a2a, of the binding the test sets. */
  const a2aAgent = async (name: string) => {
    let url = '';
    const upstream = await startUpstream(name, (req, res) => {
      req.resume();
      req.on('end', () => {
        const json = (value: unknown) => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(value));
        if (req.url === '/.well-known/agent-card.json') {
          const base = { name, description: `${name} agent`, version: '1.0.0', capabilities: {}, defaultInputModes: ['text/plain'], defaultOutputModes: ['text/plain'], skills: skills[name] };
          json({ ...base, supportedInterfaces: [{ url: `${url}/a2a`, protocolBinding: bindings[name], protocolVersion: '1.0' }] });
          return;
        }
        json({ jsonrpc: '2.0', id: 1, result: { message: { messageId: `${name}-answer`, role: 'ROLE_AGENT', parts: [{ text: name }] } } });
      });
    });
    url = upstream.url;
    upstreams.push(upstream);
    return upstream;
  };

  const send = async (): Promise<unknown> => {
    const message = { messageId: `m-${Math.random()}`, role: 'ROLE_USER', parts: [{ text: 'please file my tax returns' }] };
    const res = await pool.request({
      path: '/tenants/acme/a2a',
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'SendMessage', params: { message } }),
    });
    const body = await res.body.text();
    assert.equal(res.statusCode, 200, body);
    return res.headers['x-dmsc-routed-to'];
  };

  before(async () => {
    await a2aAgent('primary');
    await a2aAgent('backup');
    gw = await startTestGateway({ healthCheck: { enabled: false } });
    pool = new Pool(gw.plainUrl, { connections: 2 });
    assert.equal((await gw.admin('POST', '/admin/v1/tenants', { name: 'acme' })).status, 201);
    for (const [i, name] of ['primary', 'backup'].entries()) {
      assert.equal((await gw.admin('PUT', `/admin/v1/tenants/acme/agents/${name}`, { endpoints: [upstreams[i]!.url] })).status, 201);
    }
    await eventually(async () => (await gw.admin('GET', '/admin/v1/capabilities?tenant=acme')).body.skills.length === 2);
  });
  after(async () => {
    await pool?.close();
    await gw?.close();
    await Promise.all(upstreams.map((upstream) => upstream.close()));
  });

  it('a JSON-RPC call no longer goes to an agent whose refreshed card has no JSON-RPC interface, and does again when it has', async () => {
    assert.equal(await send(), 'acme/primary');
    // Same skills (the index does not change): only the registry's runtime of primary does.
    bindings.primary = 'HTTP+JSON';
    const refreshed = await gw.admin('POST', '/admin/v1/tenants/acme/agents/primary/refresh-card');
    assert.equal(refreshed.status, 200, JSON.stringify(refreshed.body));
    assert.equal(await send(), 'acme/backup');
    bindings.primary = 'JSONRPC';
    assert.equal((await gw.admin('POST', '/admin/v1/tenants/acme/agents/primary/refresh-card')).status, 200);
    assert.equal(await send(), 'acme/primary');
  });
});

describe("kept routing verdicts follow the caller's own tenant policy (a cross-tenant caller)", () => {
  let gw: TestGateway;
  let dispatcher: Agent;
  const upstreams: Upstream[] = [];
  const skills = {
    primary: [{ id: 'tax', name: 'Tax returns', description: 'Files tax returns and computes tax owed' }],
    backup: [{ id: 'books', name: 'Bookkeeping', description: 'Keeps the books and helps with tax returns' }],
  };
  /** default's outbound rule: the acme agents its dev-client may call (acme lets it in). */
  const outbound = (agents: string[]) => ({ rules: [{ name: 'to-acme', effect: 'allow', from: { agents: ['dev-client'] }, to: { tenant: 'acme', agents } }] });

  before(async () => {
    for (const name of ['primary', 'backup']) upstreams.push(await startUpstream(name));
    gw = await startTestGateway({
      healthCheck: { enabled: false },
      routing: { intent: { jsonField: '/q' } },
      tenants: [
        {
          name: 'acme',
          policy: { rules: [{ name: 'from-default', from: { tenant: 'default', agents: ['dev-client'] } }] },
          agents: (['primary', 'backup'] as const).map((name, i) => ({ name, endpoints: [upstreams[i]!.url], skills: skills[name] })),
        },
      ],
    });
    // The caller's tenant, made through the Admin API (its policy can then change alone, without a reload touching acme's).
    assert.equal((await gw.admin('POST', '/admin/v1/tenants', { name: 'default' })).status, 201);
    const put = await gw.admin('PUT', '/admin/v1/tenants/default/policy', outbound(['primary', 'backup']));
    assert.equal(put.status, 200, JSON.stringify(put.body));
    dispatcher = new Agent({ connect: { ca: gw.caCert, cert: gw.clientCert, key: gw.clientKey } });
  });
  after(async () => {
    await dispatcher?.close();
    await gw?.close();
    await Promise.all(upstreams.map((upstream) => upstream.close()));
  });

  /** As default/dev-client, over mTLS. */
  const ask = async () => {
    const res = await undiciRequest(new URL('/tenants/acme/ask', gw.tlsUrl), {
      dispatcher,
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ q: 'please file my tax returns' }),
    });
    await res.body.text();
    return res.headers['x-dmsc-routed-to'];
  };

  it("a change of the caller's tenant policy (not the target's) applies to the next request", async () => {
    assert.equal(await ask(), 'acme/primary');
    assert.equal(await ask(), 'acme/primary');
    assert.equal((await gw.admin('PUT', '/admin/v1/tenants/default/policy', outbound(['backup']))).status, 200);
    assert.equal(await ask(), 'acme/backup');
    assert.equal((await gw.admin('PUT', '/admin/v1/tenants/default/policy', outbound(['primary', 'backup']))).status, 200);
    assert.equal(await ask(), 'acme/primary');
  });
});
