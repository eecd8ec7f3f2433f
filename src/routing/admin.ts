import type { AgentRuntime } from '../registry/types.js';
import type { CapabilityRouter, Eligibility, RouteExplanation } from './router.js';

export interface RoutingAdminDeps {
  router: CapabilityRouter;
  tenants: () => string[];
  /** Why `from` (`<tenant>/<agent>` or "anonymous") may not call `agent` at `path`, or undefined (the policy's explain). */
  policyAs: (from: string, agent: AgentRuntime, path: string) => string | undefined;
  /** Whether the policy lets callers of tenant `viewer` (as a tenant: rules that need a particular agent or label do not count) reach `agent`. */
  reachableBy: (viewer: string, agent: AgentRuntime) => boolean;
  findAgent: (tenant: string, agent: string) => AgentRuntime | undefined;
}

/** The Admin API's view of capability routing: registry search and route explanations. */
export function routingAdmin(deps: RoutingAdminDeps) {
  const { router } = deps;
  return {
    /** With `viewer`: every tenant's skills that tenant may reach (its own, and others' where both policies allow). */
    search(tenants: readonly string[] | undefined, query: { q?: string; tags?: string[] }, limit: number, viewer?: string) {
      const q = { ...(query.q ? { text: query.q } : {}), ...(query.tags ? { tags: query.tags } : {}) };
      let matches = router.index.search(tenants ?? deps.tenants(), q, { limit: viewer === undefined ? limit : Math.max(limit * 5, 100) });
      if (viewer !== undefined) {
        matches = matches
          .filter((match) => {
            if (match.tenant === viewer) return true;
            const agent = deps.findAgent(match.tenant, match.agent);
            return agent !== undefined && deps.reachableBy(viewer, agent);
          })
          .slice(0, limit);
      }
      return matches.map((match) => ({
        tenant: match.tenant,
        agent: match.agent,
        skillId: match.skillId,
        score: Math.round(match.score * 1000) / 1000,
        confidence: Math.round(match.confidence * 1000) / 1000,
        skill: match.skill,
        explanation: match.explanation,
      }));
    },
    explain(tenant: string, query: { q?: string; tags?: string[] }, from: string | undefined) {
      const eligible: Eligibility = from === undefined ? () => undefined : (agent) => deps.policyAs(from, agent, agent.a2aInterfaces[0]?.path ?? '/');
      const present = ({ decision, considered }: RouteExplanation) => ({
        tenant,
        query,
        decision: decision.agent
          ? {
              agent: decision.agent.key,
              via: decision.via,
              ...(decision.skill ? { skill: decision.skill } : {}),
              score: Math.round(decision.score * 1000) / 1000,
              confidence: Math.round(decision.confidence * 1000) / 1000,
              alternatives: decision.alternatives.map((agent) => agent.key),
            }
          : { agent: null, reason: decision.reason, closest: decision.closest },
        ...(decision.scorers ? { scorers: decision.scorers } : {}),
        candidates: considered,
        policyEvaluated: from !== undefined,
      });
      const explanation = router.explainScored(tenant, { ...(query.q ? { text: query.q } : {}), ...(query.tags ? { tags: query.tags } : {}) }, eligible);
      // A promise only when semantic scorers are configured.
      return explanation instanceof Promise ? explanation.then(present) : present(explanation);
    },
  };
}
