import { API_OPTIONS, apiFor, show } from './admin-api.js';
import { stringValue, stringValues, type Command, type CommandContext, type OptionSpec } from './command.js';
import { readMapping, UsageError } from './io.js';
import { formatFields, formatTable } from './table.js';

const TENANT_OPTION: Record<string, OptionSpec> = {
  tenant: { type: 'string', placeholder: 'TENANT', help: 'the tenant the agent belongs to (required)' },
};

// The shapes the Admin API answers with (see src/registry/types.ts); only what is printed.
interface Tenant {
  name: string;
  source?: string;
  createdAt?: string;
}
interface EndpointStatus {
  url: string;
  healthy: boolean;
  lastError?: string;
}
interface Agent {
  tenant: string;
  name: string;
  endpoints: string[];
  tags?: string[];
  source?: string;
  healthCheck?: Record<string, unknown>;
  endpointStatus?: EndpointStatus[];
  card?: { sourceUrl: string; fetchedAt: string; name?: string; skills?: Array<{ id: string; name: string; tags?: string[] }> };
}

function requiredTenant(context: CommandContext, command: string): string {
  const tenant = stringValue(context.values, 'tenant');
  if (!tenant) throw new UsageError('--tenant is required', command);
  return tenant;
}

function tenantFields(tenant: Tenant): string[] {
  return formatFields([
    ['name', tenant.name],
    ['source', tenant.source ?? ''],
    ['created', tenant.createdAt ?? ''],
  ]);
}

function healthSummary(agent: Agent): string {
  const status = agent.endpointStatus ?? [];
  return `${status.filter((endpoint) => endpoint.healthy).length}/${agent.endpoints.length}`;
}

function agentFields(agent: Agent): string[] {
  const lines = formatFields([
    ['name', agent.name],
    ['tenant', agent.tenant],
    ['source', agent.source ?? ''],
    ['tags', (agent.tags ?? []).join(', ')],
    ['healthy', healthSummary(agent)],
    ...(agent.healthCheck && Object.keys(agent.healthCheck).length > 0 ? [['health check', JSON.stringify(agent.healthCheck)] as const] : []),
    ['card', agent.card ? `${agent.card.name ?? '(unnamed)'} from ${agent.card.sourceUrl} at ${agent.card.fetchedAt}` : 'none'],
  ]);
  lines.push('endpoints:');
  const status = agent.endpointStatus ?? agent.endpoints.map((url) => ({ url, healthy: undefined, lastError: undefined }));
  for (const endpoint of status) {
    const problem = endpoint.lastError ? ` (${endpoint.lastError})` : '';
    const state = endpoint.healthy === undefined ? '' : endpoint.healthy ? 'healthy' : `unhealthy${problem}`;
    lines.push(`  ${endpoint.url}  ${state}`.trimEnd());
  }
  const skills = agent.card?.skills ?? [];
  if (skills.length > 0) {
    lines.push('skills:');
    for (const skill of skills) lines.push(`  ${skill.id}  ${skill.name}${skill.tags?.length ? `  [${skill.tags.join(', ')}]` : ''}`);
  }
  return lines;
}

export const tenantCommands: Command[] = [
  {
    name: 'tenant list',
    positionals: { min: 0, max: 0 },
    summary: 'list tenants',
    options: API_OPTIONS,
    async run(context) {
      const body = (await apiFor(context).call('GET', ['tenants'])) as { tenants: Tenant[] };
      return show(context, body, () =>
        formatTable(['NAME', 'SOURCE', 'CREATED'], body.tenants.map((tenant) => [tenant.name, tenant.source ?? '', tenant.createdAt ?? ''])),
      );
    },
  },
  {
    name: 'tenant create',
    args: 'NAME',
    positionals: { min: 1, max: 1 },
    summary: 'onboard a tenant: its CA, data key, policy and limits (from --spec, else the defaults)',
    options: {
      spec: { type: 'string', placeholder: 'FILE', help: 'YAML or JSON with the tenant\'s policy, limits and masking' },
      ...API_OPTIONS,
    },
    async run(context) {
      const specFile = stringValue(context.values, 'spec');
      const spec = specFile ? await readMapping(specFile) : {};
      const body = (await apiFor(context).call('POST', ['tenants'], { ...spec, name: context.positionals[0] })) as Tenant;
      return show(context, body, () => [`tenant ${body.name} created`]);
    },
  },
  {
    name: 'tenant get',
    args: 'NAME',
    positionals: { min: 1, max: 1 },
    summary: 'show one tenant',
    options: API_OPTIONS,
    async run(context) {
      const body = (await apiFor(context).call('GET', ['tenants', context.positionals[0]!])) as Tenant;
      return show(context, body, () => tenantFields(body));
    },
  },
];

export const agentCommands: Command[] = [
  {
    name: 'agent list',
    positionals: { min: 0, max: 0 },
    summary: 'list the agents of a tenant',
    options: { ...TENANT_OPTION, ...API_OPTIONS },
    async run(context) {
      const tenant = requiredTenant(context, 'agent list');
      const body = (await apiFor(context).call('GET', ['tenants', tenant, 'agents'])) as { agents: Agent[] };
      return show(context, body, () =>
        formatTable(
          ['NAME', 'HEALTHY', 'SOURCE', 'TAGS', 'ENDPOINTS'],
          body.agents.map((agent) => [agent.name, healthSummary(agent), agent.source ?? '', (agent.tags ?? []).join(','), agent.endpoints.join(' ')]),
        ),
      );
    },
  },
  {
    name: 'agent create',
    args: 'NAME',
    positionals: { min: 1, max: 1 },
    summary: 'register an agent with one or more endpoints',
    options: {
      ...TENANT_OPTION,
      endpoint: { type: 'string', multiple: true, placeholder: 'URL', help: 'an endpoint (replica) URL; at least one' },
      tag: { type: 'string', multiple: true, placeholder: 'TAG', help: 'a capability tag' },
      'health-path': { type: 'string', placeholder: 'PATH', help: 'health-check path for this agent (default from config)' },
      ...API_OPTIONS,
    },
    async run(context) {
      const tenant = requiredTenant(context, 'agent create');
      const endpoints = stringValues(context.values, 'endpoint');
      if (endpoints.length === 0) throw new UsageError('at least one --endpoint URL is required', 'agent create');
      const healthPath = stringValue(context.values, 'health-path');
      const body = (await apiFor(context).call('POST', ['tenants', tenant, 'agents'], {
        name: context.positionals[0],
        endpoints,
        tags: stringValues(context.values, 'tag'),
        ...(healthPath === undefined ? {} : { healthCheck: { path: healthPath } }),
      })) as Agent;
      return show(context, body, () => [`agent ${body.name} created in tenant ${body.tenant}`, ...agentFields(body)]);
    },
  },
  {
    name: 'agent get',
    args: 'NAME',
    positionals: { min: 1, max: 1 },
    summary: 'show one agent with endpoint health and card skills',
    options: { ...TENANT_OPTION, ...API_OPTIONS },
    async run(context) {
      const tenant = requiredTenant(context, 'agent get');
      const body = (await apiFor(context).call('GET', ['tenants', tenant, 'agents', context.positionals[0]!])) as Agent;
      return show(context, body, () => agentFields(body));
    },
  },
  {
    name: 'agent delete',
    args: 'NAME',
    positionals: { min: 1, max: 1 },
    summary: 'remove an agent',
    options: { ...TENANT_OPTION, ...API_OPTIONS },
    async run(context) {
      const tenant = requiredTenant(context, 'agent delete');
      const name = context.positionals[0]!;
      const body = await apiFor(context).call('DELETE', ['tenants', tenant, 'agents', name]);
      return show(context, body, () => [`agent ${name} deleted from tenant ${tenant}`]);
    },
  },
  {
    name: 'agent refresh-card',
    args: 'NAME',
    positionals: { min: 1, max: 1 },
    summary: "fetch the agent's A2A Agent Card now",
    options: { ...TENANT_OPTION, ...API_OPTIONS },
    async run(context) {
      const tenant = requiredTenant(context, 'agent refresh-card');
      const body = (await apiFor(context).call('POST', ['tenants', tenant, 'agents', context.positionals[0]!, 'refresh-card'])) as Agent;
      return show(context, body, () => agentFields(body));
    },
  },
];
