import type { RouteCandidate } from '../routing/router.js';
import { API_OPTIONS, apiFor, show } from './admin-api.js';
import { stringValue, type Command } from './command.js';
import { UsageError } from './io.js';
import { formatTable } from './table.js';

interface SkillMatchView {
  tenant: string;
  agent: string;
  skillId: string;
  confidence: number;
  skill: { name?: string; tags?: string[]; description?: string };
}

interface RouteExplanationView {
  tenant: string;
  decision: { agent: string | null; via?: string; skill?: string; confidence?: number; alternatives?: string[]; reason?: string };
  candidates: RouteCandidate[];
  policyEvaluated: boolean;
}

const QUERY_OPTIONS = {
  tags: { type: 'string', placeholder: 'TAGS', help: 'comma-separated tags every skill (with its agent\'s tags) must have' },
} as const;

export const routingCommands: Command[] = [
  {
    name: 'capabilities search',
    args: '[TEXT]',
    positionals: { min: 0, max: 1 },
    summary: 'search the capability registry: skills of every agent (Agent Cards and config), best match first',
    options: {
      tenant: { type: 'string', placeholder: 'TENANT', help: 'only this tenant' },
      'reachable-by': { type: 'string', placeholder: 'TENANT', help: "what this tenant's agents may reach: its own skills and other tenants' where both policies allow" },
      limit: { type: 'string', placeholder: 'N', help: 'at most N skills (default 20)' },
      ...QUERY_OPTIONS,
      ...API_OPTIONS,
    },
    async run(context) {
      const viewer = stringValue(context.values, 'reachable-by');
      if (viewer && stringValue(context.values, 'tenant')) throw new UsageError('give --tenant or --reachable-by, not both', 'capabilities search');
      const query = { q: context.positionals[0], tags: stringValue(context.values, 'tags'), limit: stringValue(context.values, 'limit') };
      const body = (await (viewer
        ? apiFor(context).call('GET', ['tenants', viewer, 'capabilities'], undefined, query)
        : apiFor(context).call('GET', ['capabilities'], undefined, { ...query, tenant: stringValue(context.values, 'tenant') }))) as { skills: SkillMatchView[] };
      return show(context, body, () =>
        formatTable(
          ['TENANT', 'AGENT', 'SKILL', 'NAME', 'TAGS', 'CONFIDENCE'],
          body.skills.map((s) => [s.tenant, s.agent, s.skillId, s.skill.name ?? '', (s.skill.tags ?? []).join(','), s.confidence.toFixed(3)]),
        ),
      );
    },
  },
  {
    name: 'route explain',
    args: 'TEXT',
    positionals: { min: 0, max: 1 },
    summary: "which agent of --tenant would get this message (or --tags), and why: candidates, scores, load, health, exclusions",
    options: {
      tenant: { type: 'string', placeholder: 'TENANT', help: 'the tenant whose agents are candidates (required)' },
      from: { type: 'string', placeholder: 'TENANT/AGENT', help: 'evaluate the policy as this caller, or "anonymous"' },
      ...QUERY_OPTIONS,
      ...API_OPTIONS,
    },
    async run(context) {
      const tenant = stringValue(context.values, 'tenant');
      const text = context.positionals[0];
      const tags = stringValue(context.values, 'tags');
      if (!tenant) throw new UsageError('--tenant is required', 'route explain');
      if (!text && !tags) throw new UsageError('give the message TEXT, --tags, or both', 'route explain');
      const body = (await apiFor(context).call('GET', ['route', 'explain'], undefined, { tenant, q: text, tags, from: stringValue(context.values, 'from') })) as RouteExplanationView;
      show(context, body, () => {
        const d = body.decision;
        return [
          d.agent
            ? `-> ${d.agent} (${d.via}${d.skill ? `, skill ${d.skill}` : ''}, confidence ${d.confidence})${d.alternatives?.length ? `; failover: ${d.alternatives.join(', ')}` : ''}`
            : `no agent: ${d.reason}`,
          body.policyEvaluated ? '' : '(policy not evaluated: give --from to see what a caller may reach)',
          ...formatTable(
            ['AGENT', 'SKILL', 'SCORE', 'CONFIDENCE', 'LOAD', 'HEALTHY', 'EXCLUDED'],
            body.candidates.map((c) => [c.agent, c.skill ?? '', String(c.score), String(c.confidence), String(c.load), String(c.healthyEndpoints), c.excluded ?? '']),
          ),
        ].filter((line, i) => i !== 1 || line !== '');
      });
      return body.decision.agent ? 0 : 3;
    },
  },
];
