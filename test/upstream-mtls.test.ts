import assert from 'node:assert/strict';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { after, before, describe, it } from 'node:test';
import { request } from 'undici';
import { generateKeyAndCsr } from '../src/identity/keygen.js';
import { startTestGateway, eventually, type TestGateway } from './support/gateway.js';

interface HttpsAgent {
  url: string;
  /** URI SANs of the client certificates the agent saw. */
  callers: string[];
  close(): Promise<void>;
}

/** An agent serving HTTPS with a certificate from the tenant's CA, requiring a client certificate. */
async function startHttpsAgent(gw: TestGateway, tenant: string, certifiedAs: string): Promise<HttpsAgent> {
  const pki = gw.gateway.identity.pki;
  const { keyPem, csrPem } = await generateKeyAndCsr(certifiedAs);
  const issued = await pki.issueFromCsr(tenant, certifiedAs, csrPem);
  const callers: string[] = [];
  const server = https.createServer(
    { cert: issued.chainPem, key: keyPem, ca: pki.tenantBundle(tenant), requestCert: true, rejectUnauthorized: true, minVersion: 'TLSv1.3' },
    (req, res) => {
      const peer = (req.socket as TLSSocket).getPeerCertificate();
      callers.push(peer.subjectaltname ?? '');
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ agent: certifiedAs, url: req.url }));
    },
  );
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `https://127.0.0.1:${(server.address() as AddressInfo).port}`,
    callers,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

describe('upstream mutual TLS to https:// endpoints', () => {
  let gw: TestGateway;
  let genuine: HttpsAgent;
  let impostor: HttpsAgent;

  before(async () => {
    gw = await startTestGateway({ healthCheck: { intervalMs: 100 }, tenants: [{ name: 'acme', agents: [] }] });
    genuine = await startHttpsAgent(gw, 'acme', 'secure');
    impostor = await startHttpsAgent(gw, 'acme', 'someone-else');
    assert.equal((await gw.admin('POST', '/admin/v1/tenants', { name: 'beta' })).status, 201);
    assert.equal((await gw.admin('POST', '/admin/v1/tenants/beta/agents', { name: 'secure', endpoints: [genuine.url] })).status, 201);
    assert.equal((await gw.admin('POST', '/admin/v1/tenants/beta/agents', { name: 'fake', endpoints: [impostor.url] })).status, 201);
  });
  after(async () => {
    await gw.close();
    await genuine.close();
    await impostor.close();
  });

  it('presents the gateway certificate from the tenant CA and verifies the agent SPIFFE ID', async () => {
    // Registered under tenant beta, the acme-certified agent cannot prove beta's identity.
    let res = await request(`${gw.plainUrl}/agents/beta/secure/hello`);
    assert.equal(res.statusCode, 502, 'an agent certified by another tenant is refused');
    await res.body.dump();

    assert.equal((await gw.admin('POST', '/admin/v1/tenants/acme/agents', { name: 'secure', endpoints: [genuine.url] })).status, 201);
    res = await request(`${gw.plainUrl}/agents/acme/secure/hello`);
    assert.equal(res.statusCode, 200);
    assert.deepEqual(await res.body.json(), { agent: 'secure', url: '/hello' });
    assert.match(genuine.callers.at(-1)!, new RegExp(`URI:spiffe://${gw.gateway.identity.pki.trustDomain}/gateway`));
  });

  it('refuses an agent whose certificate names another agent, and health checks use the same mTLS', async () => {
    assert.equal((await gw.admin('POST', '/admin/v1/tenants/acme/agents', { name: 'fake', endpoints: [impostor.url] })).status, 201);
    const res = await request(`${gw.plainUrl}/agents/acme/fake/x`);
    assert.ok([502, 503].includes(res.statusCode), `got ${res.statusCode}`);
    const body = (await res.body.json()) as { error: { code: string } };
    assert.ok(['upstream_unavailable', 'no_healthy_endpoint'].includes(body.error.code));
    // The genuine agent passes the active health check over mTLS; the impostor does not.
    await eventually(async () => {
      const view = (await gw.admin('GET', '/admin/v1/tenants/acme/agents/secure')).body;
      return view.endpointStatus[0].lastCheckedAt !== undefined && view.endpointStatus[0].healthy === true;
    });
    await eventually(async () => (await gw.admin('GET', '/admin/v1/tenants/acme/agents/fake')).body.endpointStatus[0].healthy === false);
  });
});
