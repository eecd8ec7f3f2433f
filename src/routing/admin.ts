import type { AgentRuntime } from '../registry/types.js';
import type { CapabilityRouter, Eligibility, RouteExplanation } from './router.js';

export interface RoutingAdminDeps {
  router: CapabilityRouter;
  tenants: () => string[];
  /** Why `from` (`<tenant>/<agent>` or "anonymous") may not call `agent` at `path`, or undefined (the policy's explain). */
  policyAs: (from: string, agent: AgentRuntime, path: string) => string | undefined;
}

/** The Admin API's view of capability routing: registry search and route explanations. */
export function routingAdmin(deps: RoutingAdminDeps) {
  const { router } = deps;
  return {
    search(tenants: readonly string[] | undefined, query: { q?: string; tags?: string[] }, limit: number) {
      return router.index.search(tenants ?? deps.tenants(), { ...(query.q ? { text: query.q } : {}), ...(query.tags ? { tags: query.tags } : {}) }, { limit }).map((match) => ({
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
