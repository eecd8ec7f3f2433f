import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, afterEach, before, beforeEach, describe, it } from 'node:test';
import { pino } from 'pino';
import { configSchema, type GatewayConfig } from '../src/config/schema.js';
import { Registry, RegistryError, rewriteAgentCard } from '../src/registry/index.js';
import { openStore, type DurableStore } from '../src/store/index.js';
import { eventually } from './support/gateway.js';
import { startUpstream, type Upstream } from './support/upstream.js';

const defaults: GatewayConfig = configSchema.parse({});
const logger = pino({ level: 'silent' });

function v1Card(url: string) {
  return {
    name: 'Billing agent',
    description: 'invoices',
    version: '1.0.0',
    supportedInterfaces: [
      { url: `${url}/a2a/jsonrpc`, protocolBinding: 'JSONRPC', protocolVersion: '1.0' },
      { url: `${url}/a2a/rest`, protocolBinding: 'HTTP+JSON', protocolVersion: '1.0' },
    ],
    skills: [{ id: 'invoice', name: 'Invoices', description: 'Creates invoices', tags: ['finance'], examples: ['bill acme'] }],
    signatures: [{ protected: 'x', signature: 'y' }],
  };
}

describe('registry', () => {
  let dir: string;
  let store: DurableStore;
  let registry: Registry;

  const open = async (health: Partial<GatewayConfig['healthCheck']> = {}) => {
    store = await openStore(dir);
    registry = new Registry({ store, logger, healthDefaults: { ...defaults.healthCheck, ...health }, cards: defaults.cards });
    await registry.load();
    registry.start();
  };

  beforeEach(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'dmsc-registry-'));
  });
  afterEach(async () => {
    await registry.stop();
    await store.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('persists tenants and agents and refuses duplicates, bad names and bad endpoints with clear errors', async () => {
    await open({ enabled: false });
    await registry.createTenant('acme');
    await assert.rejects(registry.createTenant('acme'), (err: RegistryError) => err.code === 'conflict');
    await assert.rejects(registry.createTenant('Not_A_Label'), (err: RegistryError) => err.code === 'invalid' && /DNS label/.test(err.message));
    await assert.rejects(
      registry.createAgent('acme', 'x', { endpoints: ['ftp://nope'] }),
      (err: RegistryError) => err.code === 'invalid' && /endpoints\.0/.test(err.message),
    );
    await assert.rejects(registry.createAgent('ghost', 'x', { endpoints: ['http://127.0.0.1:1'] }), (err: RegistryError) => err.code === 'not_found');
    await registry.createAgent('acme', 'billing', { endpoints: ['http://127.0.0.1:7001/', 'http://127.0.0.1:7001'], tags: ['finance'] });
    await registry.stop();
    await store.close();

    await open({ enabled: false });
    const agent = registry.getAgent('acme', 'billing')!;
    assert.deepEqual(agent.endpoints, ['http://127.0.0.1:7001'], 'normalised and de-duplicated');
    assert.deepEqual(agent.tags, ['finance']);
    assert.equal(registry.findAgent('acme', 'billing')!.endpoints.length, 1);
  });

  it('config-managed records cannot be changed through the API, and a reload touches only what changed', async () => {
    await open({ enabled: false });
    const tenants = configSchema.parse({
      tenants: [
        { name: 'acme', agents: [{ name: 'a', endpoints: ['http://127.0.0.1:7101'] }, { name: 'b', endpoints: ['http://127.0.0.1:7102'] }] },
        { name: 'beta', agents: [{ name: 'c', endpoints: ['http://127.0.0.1:7103'] }] },
      ],
    }).tenants;
    await registry.applyConfig(tenants);
    await assert.rejects(registry.deleteTenant('acme'), (err: RegistryError) => err.code === 'managed_by_config');
    await assert.rejects(registry.putAgent('acme', 'a', { endpoints: ['http://127.0.0.1:1'] }), (err: RegistryError) => err.code === 'managed_by_config');
    await registry.createAgent('beta', 'api-made', { endpoints: ['http://127.0.0.1:7104'] });

    const untouched = registry.findAgent('beta', 'c')!;
    untouched.endpoints[0]!.inflight = 3; // stands for requests in flight during the reload
    const changed = registry.findAgent('acme', 'a')!;
    const next = configSchema.parse({
      tenants: [{ name: 'acme', agents: [{ name: 'a', endpoints: ['http://127.0.0.1:7101', 'http://127.0.0.1:7105'] }] }],
    }).tenants;
    await registry.applyConfig(next);
    assert.equal(registry.findAgent('acme', 'b'), undefined, 'removed from the file');
    assert.notEqual(registry.findAgent('acme', 'a'), changed);
    assert.equal(registry.findAgent('acme', 'a')!.endpoints[0], changed.endpoints[0], 'a kept endpoint keeps its state');
    assert.equal(registry.getTenant('beta')!.source, 'api', 'a tenant with API agents is handed to the API, not deleted');
    assert.equal(registry.findAgent('beta', 'c'), undefined);
    assert.ok(registry.findAgent('beta', 'api-made'));
  });

  describe('agent cards', () => {
    let agent: Upstream;
    let cardRequests: Array<{ url: string; ifNoneMatch?: string }>;
    let serveAt: '/.well-known/agent-card.json' | '/.well-known/agent.json';
    before(async () => {
      agent = await startUpstream('carded', (req, res) => {
        if (req.url?.startsWith('/.well-known/')) {
          cardRequests.push({ url: req.url, ifNoneMatch: req.headers['if-none-match'] as string | undefined });
          if (req.url !== serveAt) {
            res.writeHead(404).end();
            return;
          }
          if (req.headers['if-none-match'] === '"v1"') {
            res.writeHead(304).end();
            return;
          }
          res.writeHead(200, { 'content-type': 'application/json', etag: '"v1"' });
          res.end(JSON.stringify(v1Card(agent.url)));
          return;
        }
        res.writeHead(200).end('ok');
      });
    });
    after(() => agent.close());

    it('fetches the card on registration (with the agent.json fallback), keeps skills, and revalidates with ETag', async () => {
      cardRequests = [];
      serveAt = '/.well-known/agent.json';
      await open({ enabled: false });
      await registry.createTenant('acme');
      await registry.createAgent('acme', 'billing', { endpoints: [agent.url] });
      await eventually(() => registry.findAgent('acme', 'billing')?.card !== undefined);
      assert.deepEqual(
        cardRequests.map((r) => r.url),
        ['/.well-known/agent-card.json', '/.well-known/agent.json'],
      );
      const view = registry.getAgent('acme', 'billing')!;
      assert.equal(view.card!.name, 'Billing agent');
      assert.deepEqual(view.card!.skills, [{ id: 'invoice', name: 'Invoices', description: 'Creates invoices', tags: ['finance'], examples: ['bill acme'] }]);
      assert.deepEqual([...registry.findAgent('acme', 'billing')!.jsonRpcPaths], ['/a2a/jsonrpc']);

      const before = registry.findAgent('acme', 'billing')!.card;
      await registry.refreshCard('acme', 'billing');
      assert.equal(cardRequests.at(-1)!.ifNoneMatch, '"v1"');
      assert.equal(registry.findAgent('acme', 'billing')!.card, before, '304 keeps the stored card');
    });

    it('rewrites every interface URL to the gateway and drops signatures that no longer match', () => {
      const card = v1Card('http://127.0.0.1:7001/base');
      const rewritten = rewriteAgentCard(card, {
        agentBaseUrl: 'https://gw.example:8443/agents/acme/billing',
        endpointUrls: ['http://127.0.0.1:7001/base'],
      });
      assert.deepEqual(
        (rewritten.supportedInterfaces as Array<{ url: string }>).map((i) => i.url),
        ['https://gw.example:8443/agents/acme/billing/a2a/jsonrpc', 'https://gw.example:8443/agents/acme/billing/a2a/rest'],
      );
      assert.equal(rewritten.signatures, undefined);
      assert.equal(card.supportedInterfaces[0]!.url, 'http://127.0.0.1:7001/base/a2a/jsonrpc', 'the stored card is not mutated');
      const v03 = rewriteAgentCard(
        { name: 'old', url: 'http://agent.internal:9000/rpc', additionalInterfaces: [{ url: 'http://agent.internal:9000/rest', transport: 'HTTP+JSON' }] },
        { agentBaseUrl: 'http://127.0.0.1:8080/agents/acme/old', endpointUrls: ['http://10.0.0.5:9000'] },
      );
      assert.equal(v03.url, 'http://127.0.0.1:8080/agents/acme/old/rpc');
      assert.equal((v03.additionalInterfaces as Array<{ url: string }>)[0]!.url, 'http://127.0.0.1:8080/agents/acme/old/rest');
    });
  });

  describe('health', () => {
    it('active checks take an endpoint out after the unhealthy threshold and bring it back after the healthy threshold', async () => {
      let failing = false;
      const agent = await startUpstream('flaky', (req, res) => {
        res.writeHead(failing && req.url === '/healthz' ? 503 : 200).end();
      });
      try {
        await open({ intervalMs: 50, timeoutMs: 500, unhealthyThreshold: 2, healthyThreshold: 2, path: '/healthz' });
        await registry.createTenant('acme');
        await registry.createAgent('acme', 'flaky', { endpoints: [agent.url] });
        const endpoint = registry.findAgent('acme', 'flaky')!.endpoints[0]!;
        await eventually(() => endpoint.lastCheckedAt !== undefined);
        assert.equal(endpoint.healthy, true);
        failing = true;
        await eventually(() => !endpoint.healthy);
        assert.match(endpoint.lastError ?? '', /503/);
        assert.ok(endpoint.consecutiveFailures >= 2);
        failing = false;
        await eventually(() => endpoint.healthy);
        assert.deepEqual(registry.endpointHealth(), [{ tenant: 'acme', agent: 'flaky', endpoint: agent.url, healthy: true }]);
      } finally {
        await agent.close();
      }
    });

    it('passive failures eject an endpoint; with active checks off it is re-admitted after one interval', async () => {
      await open({ enabled: false, intervalMs: 100, unhealthyThreshold: 2 });
      await registry.createTenant('acme');
      await registry.createAgent('acme', 'p', { endpoints: ['http://127.0.0.1:9'] });
      const endpoint = registry.findAgent('acme', 'p')!.endpoints[0]!;
      registry.reportFailure(endpoint, 'connect: ECONNREFUSED');
      assert.equal(endpoint.healthy, true, 'one failure is under the threshold');
      registry.reportFailure(endpoint, 'connect: ECONNREFUSED');
      assert.equal(endpoint.healthy, false);
      await eventually(() => endpoint.healthy, 2000);
    });
  });
});
