import assert from 'node:assert/strict';
import http from 'node:http';
import { EventEmitter, once } from 'node:events';
import { after, before, describe, test } from 'node:test';
import { request } from 'undici';
import { configSchema } from '../src/config/schema.js';
import { TenantKeyUnavailable } from '../src/tenancy/keys.js';
import { dmsc } from './support/cli.js';
import { startTestGateway, TEST_ADMIN_TOKEN, type TestGateway } from './support/gateway.js';
import { agentClient } from './support/identity.js';
import { startUpstream, type Upstream } from './support/upstream.js';

const noHealth = { enabled: false };

/** An agent that echoes what it received: method, path, the body as text and the data-tag header. */
async function startEcho(): Promise<Upstream> {
  return startUpstream('echo', (req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const body = JSON.stringify({ url: req.url, body: Buffer.concat(chunks).toString('utf8'), length: req.headers['content-length'] ?? null });
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(body);
    });
  });
}

/**
 * An agent that holds every call until the test answers it (`startResponse`: after sending the head
 * and a first line); Agent Card fetches get a 404 so they are never held.
 */
async function startHolding(options: { startResponse?: boolean } = {}) {
  const held: http.ServerResponse[] = [];
  const arrivals = new EventEmitter();
  const upstream = await startUpstream('hold', (req, res) => {
    if (req.url!.startsWith('/.well-known/')) return void res.writeHead(404).end();
    if (options.startResponse) {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.write('started\n');
    }
    held.push(res);
    arrivals.emit('held');
  });
  return {
    upstream,
    held,
    /** Resolves once `count` calls are being held. */
    async reached(count: number): Promise<void> {
      while (held.length < count) await once(arrivals, 'held');
    },
    async close(): Promise<void> {
      for (const res of held) res.destroy();
      await upstream.close();
    },
  };
}

describe('tenant lifecycle: onboarding and offboarding in one call each', () => {
  let gw: TestGateway;
  let echo: Upstream;
  let hold: Awaited<ReturnType<typeof startHolding>>;

  before(async () => {
    echo = await startEcho();
    hold = await startHolding({ startResponse: true });
    gw = await startTestGateway({ listeners: { tls: { mtls: { enabled: true } } }, tenants: [{ name: 'fixed', agents: [{ name: 'x', endpoints: [echo.url], healthCheck: noHealth }] }] });
  });
  after(async () => {
    await gw?.close();
    await echo?.close();
    await hold?.close();
  });

  test('onboard creates CA, data key and policy; offboard revokes, cuts traffic and crypto-shreds', async () => {
    const onboarded = await gw.admin('POST', '/admin/v1/tenants', {
      name: 'acme',
      policy: { intraTenant: 'allow', rules: [{ name: 'no-admin-paths', effect: 'deny', paths: ['/admin*'] }] },
      limits: { tenant: { requestsPerSecond: 1000, burst: 1000 } },
    });
    assert.equal(onboarded.status, 201, JSON.stringify(onboarded.body));
    assert.equal(onboarded.body.spec.policy.rules[0].name, 'no-admin-paths');
    assert.ok(gw.gateway.tenancy.keys.has('acme'), 'data key created');
    assert.equal((gw.gateway.identity.pki.tenantBundle('acme').match(/BEGIN CERTIFICATE/g) ?? []).length, 2, 'intermediate CA + root');
    const audited = await gw.gateway.audit.list({ tenant: 'acme', action: 'tenant.onboard' });
    assert.equal(audited.length, 1);

    for (const [name, url] of [
      ['a1', echo.url],
      ['a2', echo.url],
      ['slow', hold.upstream.url],
    ]) {
      const created = await gw.admin('POST', '/admin/v1/tenants/acme/agents', { name, endpoints: [url], healthCheck: noHealth });
      assert.equal(created.status, 201);
    }
    const a1 = await agentClient(gw, 'acme', 'a1');
    const ok = await request(`${gw.tlsUrl}/agents/acme/a2/hello`, { dispatcher: a1.dispatcher });
    assert.equal(ok.statusCode, 200);
    await ok.body.text();
    const denied = await request(`${gw.tlsUrl}/agents/acme/a2/admin/x`, { dispatcher: a1.dispatcher, headers: { 'x-dmsc-request-id': 'denied-before-offboard' } });
    assert.equal(denied.statusCode, 403);
    assert.equal(((await denied.body.json()) as { error: { code: string } }).error.code, 'forbidden');
    const [denial] = await gw.gateway.audit.list({ tenant: 'acme', action: 'policy.decision' }).then((records) => records.filter((r) => r.requestId === 'denied-before-offboard'));
    assert.ok(denial?.excerpt, 'the denial keeps a sealed excerpt');
    assert.match(gw.gateway.tenancy.keys.open('acme', 'audit/denied-before-offboard', denial.excerpt).toString(), /"path":"\/admin\/x"/);

    // A request in flight when the tenant is offboarded.
    const inflight = request(`${gw.tlsUrl}/agents/acme/slow/stream`, { dispatcher: a1.dispatcher }).then(async (response) => {
      assert.equal(response.statusCode, 200);
      await response.body.text();
    });
    await hold.reached(1);

    const offboarded = await gw.admin('DELETE', '/admin/v1/tenants/acme');
    assert.equal(offboarded.status, 200, JSON.stringify(offboarded.body));
    assert.equal(offboarded.body.agentsRemoved, 3);
    assert.ok(offboarded.body.certificatesRevoked >= 1);
    assert.equal(offboarded.body.requestsCut, 1);
    assert.equal(offboarded.body.dataKeysDestroyed, 1);
    await assert.rejects(inflight, 'the in-flight request is cut');

    // The revoked certificate no longer gets in; the tenant is gone for everyone else too.
    const after = await request(`${gw.tlsUrl}/agents/acme/a2/hello`, { dispatcher: a1.dispatcher }).then(
      async (r) => ({ status: r.statusCode, text: await r.body.text() }),
      (err: Error) => ({ status: 0, text: err.message }),
    );
    assert.ok(after.status === 0 || after.status === 401, `refused, got ${after.status} ${after.text}`);
    const fixedClient = await agentClient(gw, 'fixed', 'x');
    const gone = await request(`${gw.tlsUrl}/agents/acme/a2/hello`, { dispatcher: fixedClient.dispatcher });
    assert.equal(gone.statusCode, 404);
    await gone.body.text();

    // Crypto-shredding: the record is still in the (hash-chained) trail, its excerpt is unreadable.
    const [still] = await gw.gateway.audit.list({ tenant: 'acme', action: 'policy.decision' }).then((records) => records.filter((r) => r.requestId === 'denied-before-offboard'));
    assert.equal(still?.excerpt, denial.excerpt);
    assert.throws(() => gw.gateway.tenancy.keys.open('acme', 'audit/denied-before-offboard', denial.excerpt!), TenantKeyUnavailable);
    assert.deepEqual(await gw.gateway.identity.pki.offboardTenant('acme').then((r) => r.revoked), [], 'nothing left to revoke');
    await a1.dispatcher.close();
    await fixedClient.dispatcher.close();
  });

  test('a tenant from the config file is offboarded by removing it there', async () => {
    const refused = await gw.admin('DELETE', '/admin/v1/tenants/fixed');
    assert.equal(refused.status, 409);
    assert.equal(refused.body.error.code, 'managed_by_config');
  });
});

describe('policy through the Admin API and the CLI', () => {
  let gw: TestGateway;
  let echo: Upstream;
  before(async () => {
    echo = await startEcho();
    gw = await startTestGateway({
      listeners: { plain: { allowAnonymous: false } },
      tenants: [
        { name: 'fin', agents: [{ name: 'ledger', endpoints: [echo.url], healthCheck: noHealth, clearances: ['finance'] }] },
      ],
    });
    await gw.admin('POST', '/admin/v1/tenants', { name: 'shop' });
    await gw.admin('POST', '/admin/v1/tenants/shop/agents', { name: 'cart', endpoints: [echo.url], healthCheck: noHealth });
  });
  after(async () => {
    await gw?.close();
    await echo?.close();
  });

  const cli = (args: string[]) => dmsc([...args, '--admin-url', gw.adminUrl, '--token', TEST_ADMIN_TOKEN]);

  test('a bad policy is refused with the path of the problem; a good one is applied at once', async () => {
    const bad = await gw.admin('PUT', '/admin/v1/tenants/shop/policy', { rules: [{ name: 'Bad Name' }, { name: 'x', from: { tenant: 'fin' }, to: { tenant: 'fin' } }] });
    assert.equal(bad.status, 400);
    assert.match(bad.body.error.message, /rules\[0\]\.name/);
    const foreign = await gw.admin('PUT', '/admin/v1/tenants/shop/policy', { rules: [{ name: 'x', from: { tenant: 'fin' }, to: { tenant: 'fin' } }] });
    assert.equal(foreign.status, 400);
    assert.match(foreign.body.error.message, /rules\[0\].*shop/);

    const before = await cli(['policy', 'explain', '--from', 'shop/cart', '--to', 'fin/ledger']);
    assert.equal(before.code, 3, before.stderr);
    assert.match(before.stdout, /^DENY shop\/cart -> fin\/ledger \(cross-tenant\)/m);

    const put = await gw.admin('PUT', '/admin/v1/tenants/shop/policy', { rules: [{ name: 'to-ledger', from: { agents: ['cart'] }, to: { tenant: 'fin', agents: ['ledger'] } }] });
    assert.equal(put.status, 200, JSON.stringify(put.body));
    const oneSide = await gw.admin('GET', '/admin/v1/policy/explain?from=shop/cart&to=fin/ledger');
    assert.equal(oneSide.status, 200);
    assert.equal(oneSide.body.decision.allow, false);
    assert.equal(oneSide.body.decision.code, 'no_inbound_consent');

    const configTenant = await gw.admin('PUT', '/admin/v1/tenants/fin/policy', { rules: [] });
    assert.equal(configTenant.status, 409, 'config tenants are changed in the file');
    const reloaded = configSchema.parse({
      ...gw.gateway.config(),
      tenants: [
        {
          name: 'fin',
          agents: [{ name: 'ledger', endpoints: [echo.url], healthCheck: noHealth, clearances: ['finance'] }],
          policy: { rules: [{ name: 'from-shop', from: { tenant: 'shop', agents: ['cart'] }, to: { agents: ['ledger'] } }] },
        },
      ],
    });
    await gw.gateway.reload(reloaded);
    const allowed = await cli(['policy', 'explain', '--from', 'shop/cart', '--to', 'fin/ledger', '--data-tags', 'finance']);
    assert.equal(allowed.code, 0, allowed.stdout + allowed.stderr);
    assert.match(allowed.stdout, /^ALLOW shop\/cart -> fin\/ledger/m);
    assert.match(allowed.stdout, /fin\/from-shop \+ shop\/to-ledger/);

    const notCleared = await gw.admin('GET', '/admin/v1/policy/explain?from=shop/cart&to=fin/ledger&dataTags=phi');
    assert.equal(notCleared.body.decision.code, 'not_cleared');
    const unknown = await gw.admin('GET', '/admin/v1/policy/explain?from=shop/cart&to=fin/nobody');
    assert.equal(unknown.status, 404);
  });

  test('data tags from the header are checked against the target’s clearances', async () => {
    const ledger = await agentClient(gw, 'fin', 'ledger');
    const call = (tags?: string) =>
      request(`${gw.tlsUrl}/agents/fin/ledger/x`, { dispatcher: ledger.dispatcher, method: 'POST', body: '{}', headers: { 'content-type': 'application/json', ...(tags ? { 'x-dmsc-data-tags': tags } : {}) } });
    const cleared = await call('finance, public');
    assert.equal(cleared.statusCode, 200);
    await cleared.body.text();
    const phi = await call('phi');
    assert.equal(phi.statusCode, 403);
    assert.equal(phi.headers['x-dmsc-policy-decision'], 'not_cleared');
    await phi.body.text();
    const invalid = await call('Not A Tag');
    assert.equal(invalid.statusCode, 400);
    await invalid.body.text();
    await ledger.dispatcher.close();
  });
});

describe('tenant-scoped admin tokens', () => {
  let gw: TestGateway;
  before(async () => {
    gw = await startTestGateway({ tenants: [{ name: 'one' }, { name: 'two' }] });
    // Records for both tenants: each onboarding-time CA creation, plus a denial each.
    await gw.gateway.audit.flush();
  });
  after(async () => gw?.close());

  test("a tenant's operator reads only its own tenant, and nothing else", async () => {
    const created = await dmsc(['admin', 'token', 'create', '--tenant', 'one', '--admin-url', gw.adminUrl, '--token', TEST_ADMIN_TOKEN]);
    assert.equal(created.code, 0, created.stderr);
    const token = created.stdout.trim();
    const as = async (path: string, init: RequestInit = {}) => {
      const response = await fetch(gw.adminUrl + path, { ...init, headers: { authorization: `Bearer ${token}`, ...(init.headers ?? {}) } });
      const text = await response.text();
      return { status: response.status, body: text && response.headers.get('content-type')?.startsWith('application/json') ? JSON.parse(text) : text };
    };
    const own = await as('/admin/v1/audit?limit=1000');
    assert.equal(own.status, 200);
    assert.ok(own.body.records.length > 0);
    assert.ok(own.body.records.every((r: { tenant?: string }) => r.tenant === 'one'), 'only its tenant');
    assert.equal((await as('/admin/v1/audit?tenant=two')).status, 403);
    const exported = await as('/admin/v1/audit/export');
    assert.equal(exported.status, 200);
    const lines = String(exported.body).trim().split('\n').map((line) => JSON.parse(line) as { tenant?: string });
    assert.ok(lines.length > 0 && lines.every((r) => r.tenant === 'one'));
    assert.equal((await as('/admin/v1/tenants/one')).status, 200);
    assert.equal((await as('/admin/v1/tenants/two')).status, 403);
    assert.equal((await as('/admin/v1/tenants')).status, 403, 'the tenant list is for operators');
    const write = await as('/admin/v1/tenants', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ name: 'three' }) });
    assert.equal(write.status, 403);
    const [listed] = (await gw.admin('GET', '/admin/v1/admin-tokens?tenant=one')).body.tokens;
    assert.equal((await gw.admin('DELETE', `/admin/v1/admin-tokens/${listed.id}`)).status, 204);
    assert.equal((await as('/admin/v1/tenants/one')).status, 401, 'revoked at once');
  });
});

describe('tenant-scoped reload', () => {
  let gw: TestGateway;
  let echo: Upstream;
  let stream: Upstream;
  const raw = (aPolicy: Record<string, unknown>) => ({
    tenants: [
      { name: 'ta', policy: aPolicy, agents: [{ name: 'x', endpoints: [echo.url], healthCheck: noHealth }] },
      { name: 'tb', limits: { tenant: { requestsPerSecond: 1000, burst: 1000 } }, agents: [{ name: 'y', endpoints: [stream.url], healthCheck: noHealth }] },
    ],
  });

  before(async () => {
    echo = await startEcho();
    // Streams 10 chunks, one per 'next' call, so the test decides when the response moves on.
    stream = await startUpstream('stream', (req, res) => {
      if (req.url !== '/slow') {
        res.end('quick');
        return;
      }
      res.writeHead(200, { 'content-type': 'text/plain' });
      let sent = 0;
      const next = () => {
        res.write(`chunk ${sent++}\n`);
        if (sent === 10) res.end();
        else setTimeout(next, 30);
      };
      next();
    });
    gw = await startTestGateway(raw({ anonymous: 'allow' }));
  });
  after(async () => {
    await gw?.close();
    await echo?.close();
    await stream?.close();
  });

  test("reloading tenant A's policy touches only A; B's in-flight request and connection carry on", async () => {
    const policyOfB = gw.gateway.tenancy.policy.tenant('tb');
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const base = new URL(gw.plainUrl);
    const get = (path: string) =>
      new Promise<http.IncomingMessage>((resolve, reject) => {
        http.get({ host: base.hostname, port: base.port, path, agent }, resolve).on('error', reject);
      });

    const slow = await get('/agents/tb/y/slow');
    const socket = slow.socket;
    const chunks: string[] = [];
    slow.setEncoding('utf8');
    slow.on('data', (chunk: string) => chunks.push(chunk));
    const ended = once(slow, 'end');

    await gw.gateway.reload(configSchema.parse({ ...gw.gateway.config(), ...raw({ anonymous: 'deny' }) }));
    const refused = await request(`${gw.plainUrl}/agents/ta/x/ping`);
    assert.equal(refused.statusCode, 401, 'the new policy of A applies at once: anonymous callers must authenticate');
    assert.equal(refused.headers['x-dmsc-policy-decision'], 'anonymous_denied');
    await refused.body.text();

    await ended;
    assert.equal(chunks.join('').split('\n').filter(Boolean).length, 10, "B's in-flight response completed");
    const again = await get('/agents/tb/y/quick');
    assert.equal(again.statusCode, 200);
    assert.equal(again.socket, socket, "B's connection was kept");
    again.resume();
    assert.equal(gw.gateway.tenancy.policy.tenant('tb'), policyOfB, "B's compiled policy is the same object");
    agent.destroy();
  });
});

describe('rate limits and concurrency', () => {
  let gw: TestGateway;
  let echo: Upstream;
  let hold: Awaited<ReturnType<typeof startHolding>>;
  before(async () => {
    echo = await startEcho();
    hold = await startHolding();
    gw = await startTestGateway({
      tenants: [
        {
          name: 'busy',
          limits: { agent: { requestsPerSecond: 0.5, burst: 3 } },
          agents: [
            { name: 'limited', endpoints: [echo.url], healthCheck: noHealth },
            { name: 'own', endpoints: [echo.url], healthCheck: noHealth, limits: { requestsPerSecond: 0.5, burst: 1 } },
          ],
        },
        { name: 'calm', agents: [{ name: 'free', endpoints: [echo.url], healthCheck: noHealth }] },
        { name: 'trial', limits: { agent: { requestsPerSecond: 0.5, burst: 1, shadow: true } }, agents: [{ name: 'z', endpoints: [echo.url], healthCheck: noHealth }] },
        {
          name: 'shaped',
          limits: { agent: { requestsPerSecond: 20, burst: 1, maxDelayMs: 1000 } },
          agents: [
            { name: 's', endpoints: [echo.url], healthCheck: noHealth },
            { name: 'slow', endpoints: [echo.url], healthCheck: noHealth, limits: { requestsPerSecond: 0.5, burst: 1, maxDelayMs: 200 } },
          ],
        },
        { name: 'narrow', limits: { concurrency: { perEndpoint: 1, queue: 1, queueTimeoutMs: 10_000 } }, agents: [{ name: 'one', endpoints: [hold.upstream.url], healthCheck: noHealth }] },
      ],
    });
  });
  after(async () => {
    await gw?.close();
    await echo?.close();
    await hold?.close();
  });

  const get = async (path: string, headers: Record<string, string> = {}) => {
    const response = await request(`${gw.plainUrl}${path}`, { headers });
    const text = await response.body.text();
    return { status: response.statusCode, headers: response.headers, text };
  };

  test('a burst passes, then 429 with Retry-After and RateLimit headers; other tenants are untouched', async () => {
    for (let i = 0; i < 3; i++) assert.equal((await get('/agents/busy/limited/x')).status, 200);
    const limited = await get('/agents/busy/limited/x', { 'x-dmsc-request-id': 'rl-1' });
    assert.equal(limited.status, 429);
    assert.equal(JSON.parse(limited.text).error.code, 'rate_limited');
    assert.ok(Number(limited.headers['retry-after']) >= 1);
    assert.ok(Number(limited.headers['ratelimit-limit']) >= 1);
    assert.match(String(limited.headers['ratelimit-policy']), /burst=3/);
    assert.equal(limited.headers['ratelimit-remaining'], '0');
    assert.ok(limited.headers['ratelimit-reset'] !== undefined);
    const [record] = (await gw.gateway.audit.list({ action: 'ratelimit' })).filter((r) => r.requestId === 'rl-1');
    assert.equal(record?.decision, 'deny');
    for (let i = 0; i < 5; i++) assert.equal((await get('/agents/calm/free/x')).status, 200, 'another tenant has its own buckets');
  });

  test("an agent's own limit overrides the tenant default; shadow mode counts but lets through", async () => {
    assert.equal((await get('/agents/busy/own/x')).status, 200);
    assert.equal((await get('/agents/busy/own/x')).status, 429);
    for (let i = 0; i < 3; i++) assert.equal((await get('/agents/trial/z/x')).status, 200);
    const shadow = await gw.gateway.audit.list({ tenant: 'trial', action: 'ratelimit.shadow' });
    assert.ok(shadow.length >= 2, 'shadow hits are recorded');
  });

  test('shaping: over the limit, a request waits for its token instead of a 429, up to maxDelayMs', async () => {
    const started = performance.now();
    const statuses = await Promise.all([0, 1, 2, 3].map(() => get('/agents/shaped/s/x').then((r) => r.status)));
    const elapsed = performance.now() - started;
    assert.deepEqual(statuses, [200, 200, 200, 200], 'all served, none refused');
    assert.ok(elapsed >= 120, `paced at 20/s: three waits of ~50 ms, took ${elapsed.toFixed(0)} ms`);
    assert.equal((await get('/agents/shaped/slow/x')).status, 200);
    const refused = await get('/agents/shaped/slow/x');
    assert.equal(refused.status, 429, 'the next token is 2 s away, beyond maxDelayMs: refused at once');
  });

  test('concurrency per endpoint: one in flight, one queued, the next refused at once', async () => {
    const first = get('/agents/narrow/one/a');
    await hold.reached(1);
    const second = get('/agents/narrow/one/b');
    const third = await get('/agents/narrow/one/c');
    assert.equal(third.status, 503);
    assert.equal(JSON.parse(third.text).error.code, 'endpoint_busy');
    assert.equal(hold.held.length, 1, 'the queued request has not reached the agent');
    hold.held[0]!.end('done a');
    await hold.reached(2);
    hold.held[1]!.end('done b');
    assert.equal((await first).status, 200);
    assert.equal((await second).status, 200);
  });
});

describe('tenant defaults', () => {
  let gw: TestGateway;
  let echo: Upstream;
  before(async () => {
    echo = await startEcho();
    gw = await startTestGateway({ tenantDefaults: { limits: { agent: { requestsPerSecond: 0.5, burst: 1 } } } });
  });
  after(async () => {
    await gw?.close();
    await echo?.close();
  });

  test('a tenant onboarded without limits gets the default ones; its own limits replace them', async () => {
    for (const [name, limits] of [
      ['plain', undefined],
      ['own', { agent: { requestsPerSecond: 100, burst: 100 } }],
    ] as const) {
      assert.equal((await gw.admin('POST', '/admin/v1/tenants', { name, policy: { anonymous: 'allow' }, ...(limits ? { limits } : {}) })).status, 201);
      assert.equal((await gw.admin('POST', `/admin/v1/tenants/${name}/agents`, { name: 'a', endpoints: [echo.url], healthCheck: noHealth })).status, 201);
    }
    const call = async (tenant: string) => {
      const response = await request(`${gw.plainUrl}/agents/${tenant}/a/x`);
      await response.body.text();
      return response.statusCode;
    };
    assert.deepEqual([await call('plain'), await call('plain')], [200, 429]);
    assert.deepEqual([await call('own'), await call('own'), await call('own')], [200, 200, 200]);
  });
});

describe('masking', () => {
  let gw: TestGateway;
  let echo: Upstream;
  before(async () => {
    echo = await startEcho();
    const agents = [{ name: 'a', endpoints: [echo.url], healthCheck: noHealth, clearances: ['pii', 'finance'] }];
    gw = await startTestGateway({
      tenants: [
        { name: 'mask', masking: { enabled: true, maxBytes: 4096, oversize: 'pass' }, agents },
        { name: 'block', masking: { enabled: true, action: 'block', maxBytes: 4096, oversize: 'block' }, agents },
        { name: 'tag', masking: { enabled: true, action: 'tag' }, agents: [{ name: 'a', endpoints: [echo.url], healthCheck: noHealth }] },
      ],
    });
  });
  after(async () => {
    await gw?.close();
    await echo?.close();
  });

  const post = async (tenant: string, body: string, requestId: string) => {
    const response = await request(`${gw.plainUrl}/agents/${tenant}/a/in`, {
      method: 'POST',
      body,
      headers: { 'content-type': 'application/json', 'x-dmsc-request-id': requestId },
    });
    return { status: response.statusCode, json: (await response.body.json()) as any };
  };
  const pii = JSON.stringify({ note: 'mail jane.doe@example.com, card 4111 1111 1111 1111', n: 1 });

  test('PII is masked before it reaches the agent; the audit says what kinds, never the values', async () => {
    const { status, json } = await post('mask', pii, 'mask-1');
    assert.equal(status, 200);
    const seen = JSON.parse(json.body);
    assert.equal(seen.n, 1);
    assert.doesNotMatch(seen.note, /jane\.doe@example\.com|4111 1111 1111 1111/);
    assert.equal(Number(json.length), Buffer.byteLength(json.body), 'content-length matches the masked body');
    const [record] = (await gw.gateway.audit.list({ tenant: 'mask', action: 'mask' })).filter((r) => r.requestId === 'mask-1');
    assert.ok(record, 'masking is audited');
    assert.doesNotMatch(JSON.stringify(record), /jane|4111/);
    assert.match(JSON.stringify(record.detail), /email/);
  });

  test('block refuses; tag sends the body unchanged but an uncleared agent is refused by policy', async () => {
    const blocked = await post('block', pii, 'block-1');
    assert.equal(blocked.status, 403);
    assert.equal(blocked.json.error.code, 'sensitive_data');
    const tagged = await post('tag', pii, 'tag-1');
    assert.equal(tagged.status, 403, 'the detector tags the request pii; the agent is not cleared');
    assert.equal(tagged.json.error.code, 'forbidden');
    const clean = await post('tag', JSON.stringify({ note: 'nothing here' }), 'tag-2');
    assert.equal(clean.status, 200);
  });

  test('a body over the limit is passed whole or refused, never truncated', async () => {
    const large = JSON.stringify({ blob: 'x'.repeat(10_000), mail: 'jane.doe@example.com' });
    const passed = await post('mask', large, 'big-1');
    assert.equal(passed.status, 200);
    assert.equal(passed.json.body, large, 'passed unmodified and complete');
    const refused = await post('block', large, 'big-2');
    assert.equal(refused.status, 413);
    assert.equal(refused.json.error.code, 'body_not_inspected');
  });
});
