/**
 * Routing decisions counted per process for /metrics: per tenant and outcome (how the agent was
 * chosen: intent, tags, default-agent, task, context; or why none: no_match, low_confidence,
 * not_eligible), and failovers to the next-best agent.
 */

/** Distinct tenants counted; decisions of later ones are counted under OTHER_TENANT. */
const MAX_TENANTS = 2000;
const OTHER_TENANT = '_other';

const decisions = new Map<string, Map<string, number>>();
let failovers = 0;

export function countRouteDecision(tenant: string, outcome: string): void {
  let byOutcome = decisions.get(tenant);
  if (byOutcome === undefined) {
    if (decisions.size >= MAX_TENANTS) return countRouteDecision(OTHER_TENANT, outcome);
    decisions.set(tenant, (byOutcome = new Map()));
  }
  byOutcome.set(outcome, (byOutcome.get(outcome) ?? 0) + 1);
}

export function countFailover(): void {
  failovers++;
}

export function routeDecisionCounters(): { decisions: Array<{ tenant: string; outcome: string; count: number }>; failovers: number } {
  const rows: Array<{ tenant: string; outcome: string; count: number }> = [];
  for (const [tenant, byOutcome] of decisions) for (const [outcome, count] of byOutcome) rows.push({ tenant, outcome, count });
  return { decisions: rows, failovers };
}
