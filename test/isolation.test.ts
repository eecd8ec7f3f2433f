import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Agent, request } from 'undici';
import { generateKeyAndCsr } from '../src/identity/keygen.js';
import { startTestGateway, type TestGateway } from './support/gateway.js';
import { startUpstream, type Upstream } from './support/upstream.js';
import { mulberry32 } from './support/prng.js';

// Tenant isolation, end to end: 5 tenants x 4 agents, every ordered pair of agents calls over mTLS
// with its own certificate, under a random set of intra- and cross-tenant allow rules (some
// cross-tenant pairs get consent from one side only). Exactly the pairs allowed by both sides
// succeed; every other call is a 403 with an audit record.

const TENANTS = ['t0', 't1', 't2', 't3', 't4'];
const AGENTS = ['a0', 'a1', 'a2', 'a3'];
const SEED = Number(process.env.ISOLATION_SEED ?? Date.now() % 1_000_000);

/** Seeded so a failure can be replayed with ISOLATION_SEED. */
const prng = mulberry32;

interface Rule {
  name: string;
  from?: Record<string, unknown>;
  to?: Record<string, unknown>;
}

function randomPolicy(random: () => number) {
  const rules = new Map<string, Rule[]>(TENANTS.map((t) => [t, []]));
  const allowed = new Set<string>();
  let n = 0;
  for (const st of TENANTS) {
    for (const sa of AGENTS) {
      for (const tt of TENANTS) {
        for (const ta of AGENTS) {
          const pair = `${st}/${sa}->${tt}/${ta}`;
          if (st === tt) {
            if (random() < 0.3) {
              rules.get(tt)!.push({ name: `r${n++}`, from: { agents: [sa] }, to: { agents: [ta] } });
              allowed.add(pair);
            }
            continue;
          }
          const roll = random();
          const inbound = roll < 0.2 || (roll >= 0.2 && roll < 0.3);
          const outbound = roll < 0.2 || (roll >= 0.3 && roll < 0.4);
          if (inbound) rules.get(tt)!.push({ name: `r${n++}`, from: { tenant: st, agents: [sa] }, to: { agents: [ta] } });
          if (outbound) rules.get(st)!.push({ name: `r${n++}`, from: { agents: [sa] }, to: { tenant: tt, agents: [ta] } });
          if (inbound && outbound) allowed.add(pair);
        }
      }
    }
  }
  return { rules, allowed };
}

describe(`tenant isolation (seed ${SEED})`, () => {
  let gw: TestGateway;
  let upstream: Upstream;
  const clients = new Map<string, Agent>();
  const { rules, allowed } = randomPolicy(prng(SEED));

  before(async () => {
    upstream = await startUpstream('agent');
    gw = await startTestGateway({
      listeners: { tls: { mtls: { enabled: true } } },
      tenants: TENANTS.map((tenant) => ({
        name: tenant,
        policy: { intraTenant: 'deny', rules: rules.get(tenant) },
        agents: AGENTS.map((agent) => ({ name: agent, endpoints: [`${upstream.url}/${tenant}/${agent}`], healthCheck: { enabled: false } })),
      })),
    });
    for (const tenant of TENANTS) {
      for (const agent of AGENTS) {
        const { keyPem, csrPem } = await generateKeyAndCsr(agent);
        const issued = await gw.gateway.identity.pki.issueFromCsr(tenant, agent, csrPem);
        clients.set(`${tenant}/${agent}`, new Agent({ connect: { ca: gw.caCert, cert: issued.chainPem, key: keyPem } }));
      }
    }
  });

  after(async () => {
    for (const client of clients.values()) await client.close();
    await gw?.close();
    await upstream?.close();
  });

  test('exactly the allowed pairs succeed; every other call is 403 and audited', async () => {
    const denied: string[] = [];
    let succeeded = 0;
    const calls: Array<Promise<void>> = [];
    for (const [caller, dispatcher] of clients) {
      for (const tenant of TENANTS) {
        for (const agent of AGENTS) {
          const pair = `${caller}->${tenant}/${agent}`;
          const requestId = `iso-${pair.replace(/[^a-z0-9]/g, '-')}`;
          calls.push(
            (async () => {
              const response = await request(`${gw.tlsUrl}/agents/${tenant}/${agent}/ping`, {
                dispatcher,
                headers: { 'x-dmsc-request-id': requestId },
              });
              const body = (await response.body.json()) as { url?: string; error?: { code: string } };
              if (allowed.has(pair)) {
                assert.equal(response.statusCode, 200, `${pair} is allowed by both sides but got ${response.statusCode} ${JSON.stringify(body)}`);
                assert.equal(body.url, `/${tenant}/${agent}/ping`);
                succeeded++;
              } else {
                assert.equal(response.statusCode, 403, `${pair} must be denied but got ${response.statusCode}`);
                assert.equal(body.error?.code, 'forbidden');
                denied.push(requestId);
              }
            })(),
          );
        }
      }
    }
    await Promise.all(calls);
    assert.equal(succeeded, allowed.size);
    assert.equal(succeeded + denied.length, clients.size * TENANTS.length * AGENTS.length);
    assert.ok(denied.length > 0 && succeeded > 0, 'the random policy allows some pairs and denies others');

    const records = await gw.gateway.audit.list({ action: 'policy.decision', limit: 10000 });
    const deniedIds = new Set(records.filter((r) => r.decision === 'deny').map((r) => r.requestId));
    for (const id of denied) assert.ok(deniedIds.has(id), `no audit record for denied request ${id}`);
    const allowedIds = new Set(records.filter((r) => r.decision === 'allow').map((r) => r.requestId));
    assert.equal(allowedIds.size, allowed.size, 'every allowed delegation is audited too');
    // A cross-tenant decision is recorded for both tenants, each reading its own side of the trail.
    for (const record of records.filter((r) => r.requestId?.startsWith('iso-'))) {
      const [callerTenant] = record.actor!.replace(/^spiffe:\/\/[^/]+\/tenant\//, '').split('/');
      const targetTenant = record.target!.split('/')[0];
      assert.ok(record.tenant === targetTenant || record.tenant === callerTenant);
    }
  });
});
