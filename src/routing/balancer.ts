import type { AgentRuntime, EndpointState } from '../registry/types.js';

/**
 * Round-robin over the agent's healthy endpoints, skipping ones already tried for this request.
 * Load-aware choice (power of two choices on a load score) replaces this in the collaboration work.
 */
export function pickRoundRobin(agent: AgentRuntime, tried?: readonly EndpointState[]): EndpointState | undefined {
  const endpoints = agent.endpoints;
  const count = endpoints.length;
  for (let step = 0; step < count; step++) {
    const index = agent.rrCursor % count;
    agent.rrCursor = index + 1;
    const endpoint = endpoints[index]!;
    if (!endpoint.healthy) continue;
    if (tried && tried.includes(endpoint)) continue;
    return endpoint;
  }
  return undefined;
}
