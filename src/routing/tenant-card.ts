import type { Skill } from './capabilities/index.js';

export interface TenantCardInput {
  tenant: string;
  /** The gateway URL of the tenant's A2A endpoint, as the caller addressed the gateway. */
  url: string;
  /** The tenant's routable agents (a JSON-RPC interface and a healthy endpoint) with their skills. */
  agents: readonly { name: string; skills: readonly Skill[] }[];
}

interface CardSkill {
  id: string;
  name: string;
  description: string;
  tags: string[];
  examples?: string[];
  inputModes?: string[];
  outputModes?: string[];
}

/** Skill ids are unique in one card: an agent's skill is `<agent>.<skill id>`. */
function cardSkills(input: TenantCardInput): CardSkill[] {
  const skills: CardSkill[] = [];
  for (const agent of input.agents) {
    for (const skill of agent.skills) {
      skills.push({
        id: `${agent.name}.${skill.id}`,
        name: skill.name,
        description: skill.description ?? skill.name,
        tags: [...(skill.tags ?? [])],
        ...(skill.examples?.length ? { examples: [...skill.examples] } : {}),
        ...(skill.inputModes?.length ? { inputModes: [...skill.inputModes] } : {}),
        ...(skill.outputModes?.length ? { outputModes: [...skill.outputModes] } : {}),
      });
    }
  }
  return skills;
}

const description = (tenant: string) =>
  `Tenant "${tenant}" as one agent: the DMSC gateway delegates each message to the agent whose skills match it best.`;

/**
 * The tenant's Agent Card, A2A v1.0 shape (`/.well-known/agent-card.json`): one JSON-RPC interface
 * (the tenant's endpoint) declared for v1.0 and v0.3, the routable skills of all its agents.
 */
export function tenantAgentCard(input: TenantCardInput): Record<string, unknown> {
  return {
    name: input.tenant,
    description: description(input.tenant),
    version: '1.0.0',
    supportedInterfaces: [
      { url: input.url, protocolBinding: 'JSONRPC', protocolVersion: '1.0' },
      { url: input.url, protocolBinding: 'JSONRPC', protocolVersion: '0.3' },
    ],
    provider: { organization: 'DMSC gateway', url: new URL(input.url).origin },
    capabilities: { streaming: true, pushNotifications: false },
    defaultInputModes: ['text/plain'],
    defaultOutputModes: ['text/plain'],
    skills: cardSkills(input),
  };
}

/** The same card in the A2A v0.3 shape (`/.well-known/agent.json`). */
export function tenantAgentCardV03(input: TenantCardInput): Record<string, unknown> {
  return {
    protocolVersion: '0.3.0',
    name: input.tenant,
    description: description(input.tenant),
    url: input.url,
    preferredTransport: 'JSONRPC',
    version: '1.0.0',
    capabilities: { streaming: true, pushNotifications: false },
    defaultInputModes: ['text/plain'],
    defaultOutputModes: ['text/plain'],
    skills: cardSkills(input),
  };
}
