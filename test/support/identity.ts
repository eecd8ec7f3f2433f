import { Agent } from 'undici';
import { generateKeyAndCsr } from '../../src/identity/keygen.js';
import type { TestGateway } from './gateway.js';

/** An undici dispatcher that presents a fresh certificate for tenant/agent issued by the gateway's CA. */
export async function agentClient(gw: TestGateway, tenant: string, agent: string, options: Agent.Options = {}): Promise<{ dispatcher: Agent; serial: string }> {
  const { keyPem, csrPem } = await generateKeyAndCsr(agent);
  const issued = await gw.gateway.identity.pki.issueFromCsr(tenant, agent, csrPem);
  return { dispatcher: new Agent({ ...options, connect: { ca: gw.caCert, cert: issued.chainPem, key: keyPem } }), serial: issued.serial };
}
