import type { RouterRegistry } from '../../src/routing/router.js';
import type { AgentRuntime, AgentView, EndpointState, SkillSummary } from '../../src/registry/types.js';
import type { TenantRecord } from '../../src/store/types.js';

/** An endpoint as the data plane sees it (no socket behind it: the router only reads its state). */
export function endpoint(healthy = true, inflight = 0): EndpointState {
  return { url: 'http://127.0.0.1:1', origin: 'http://127.0.0.1:1', basePath: '', tls: false, healthy, inflight, consecutiveFailures: 0, consecutiveSuccesses: 0 } as EndpointState;
}

export const skill = (id: string, description: string, tags: string[] = []): SkillSummary => ({ id, name: id, description, tags });

/** An agent as the data plane sees it: its endpoints, tags and skills, one A2A v1.0 interface at /a2a. */
export function agentRuntime(tenant: string, name: string, skills: readonly SkillSummary[], endpoints: EndpointState[], tags: string[]): AgentRuntime {
  return {
    tenant,
    name,
    key: `${tenant}/${name}`,
    endpoints,
    tags,
    clearances: [],
    dataTags: [],
    skills: skills.map((s) => ({ id: s.id, tags: s.tags })),
    jsonRpcPaths: new Set(['/a2a']),
    a2aInterfaces: [{ path: '/a2a', version: '1.0' }],
    loadPoll: undefined,
    rrCursor: 0,
  };
}

/** The registry's read side the capability router uses, held in memory (tests of the router alone). */
export class MemoryRegistry implements RouterRegistry {
  readonly agents = new Map<string, { runtime: AgentRuntime; skills: SkillSummary[] }>();
  readonly tenants = new Map<string, TenantRecord>();

  add(tenant: string, name: string, skills: SkillSummary[], endpoints: EndpointState[] = [endpoint()], tags: string[] = []): AgentRuntime {
    if (!this.tenants.has(tenant)) this.tenants.set(tenant, { name: tenant, source: 'api', createdAt: '', updatedAt: '' } as TenantRecord);
    const runtime = agentRuntime(tenant, name, skills, endpoints, tags);
    this.agents.set(runtime.key, { runtime, skills });
    return runtime;
  }
  findAgent(tenant: string, agent: string) {
    return this.agents.get(`${tenant}/${agent}`)?.runtime;
  }
  findAgentByKey(key: string) {
    return this.agents.get(key)?.runtime;
  }
  getAgent(tenant: string, agent: string) {
    const entry = this.agents.get(`${tenant}/${agent}`);
    return entry && ({ tenant, name: agent, tags: entry.runtime.tags, skills: entry.skills } as unknown as AgentView);
  }
  getTenant(name: string) {
    return this.tenants.get(name);
  }
  listTenants() {
    return [...this.tenants.values()];
  }
  listAgents(tenant: string) {
    return [...this.agents.values()].filter((e) => e.runtime.tenant === tenant).map((e) => this.getAgent(tenant, e.runtime.name)!);
  }
}
