import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Agent, request } from 'undici';
import { configSchema } from '../src/config/schema.js';
import { startTestGateway, type TestGateway } from './support/gateway.js';
import { startUpstream, type Upstream } from './support/upstream.js';

describe('configuration reload', () => {
  let gw: TestGateway;
  let slowAgent: Upstream;
  let fastAgent: Upstream;
  let release!: () => void;
  let arrived!: () => void;
  const arrivedOnce = new Promise<void>((resolve) => (arrived = resolve));

  before(async () => {
    const released = new Promise<void>((resolve) => (release = resolve));
    slowAgent = await startUpstream('slow', (req, res) => {
      // Only proxied requests carry a request id; health checks and card fetches must not count.
      if (!req.headers['x-dmsc-request-id']) return void res.writeHead(404).end();
      arrived();
      void released.then(() => res.end('slow done'));
    });
    fastAgent = await startUpstream('fast');
    gw = await startTestGateway({
      tenants: [
        { name: 'tenant-a', agents: [{ name: 'slow', endpoints: [slowAgent.url] }] },
        { name: 'tenant-b', agents: [{ name: 'stays', endpoints: [fastAgent.url] }] },
      ],
    });
  });
  after(async () => {
    await gw.close();
    await slowAgent.close();
    await fastAgent.close();
  });

  it('applies new tenants, agents and limits at once without dropping in-flight requests or touching other tenants', async () => {
    const dispatcher = new Agent();
    try {
      const inflight = request(`${gw.plainUrl}/agents/tenant-a/slow/`, { dispatcher });
      await arrivedOnce;
      const untouched = gw.gateway.registry.findAgent('tenant-b', 'stays');

      const next = configSchema.parse({
        ...gw.gateway.config(),
        limits: { ...gw.gateway.config().limits, maxBodyBytes: 10 },
        tenants: [
          { name: 'tenant-a', agents: [{ name: 'slow', endpoints: [slowAgent.url] }, { name: 'added', endpoints: [fastAgent.url] }] },
          { name: 'tenant-b', agents: [{ name: 'stays', endpoints: [fastAgent.url] }] },
        ],
      });
      await gw.gateway.reload(next);

      const added = await request(`${gw.plainUrl}/agents/tenant-a/added/x`, { dispatcher });
      assert.equal(added.statusCode, 200);
      assert.equal(((await added.body.json()) as { name: string }).name, 'fast');
      const big = await request(`${gw.plainUrl}/agents/tenant-b/stays/`, { method: 'POST', body: 'more than ten bytes', dispatcher });
      assert.equal(big.statusCode, 413, 'the new body limit applies at once');
      await big.body.dump();
      assert.equal(gw.gateway.registry.findAgent('tenant-b', 'stays'), untouched, "tenant B's agent runtime is untouched");

      release();
      const res = await inflight;
      assert.equal(res.statusCode, 200);
      assert.equal(await res.body.text(), 'slow done');
    } finally {
      await dispatcher.close();
    }
  });
});
