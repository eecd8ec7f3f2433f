import type { AgentRuntime, EndpointState } from '../registry/types.js';
import type { BalancingConfig, OutlierDetectionConfig } from './balancing-config.js';
import { LOAD_HEADER, endpointCost, parseLoadReport, prefer, recordOutcome, recordReport, type Outcome } from './load.js';
import { AVAILABLE, PROBE, UNAVAILABLE, availability, probeAbandoned, probeStarted, recordAttempt, type Availability } from './outlier.js';

export { LOAD_HEADER };

/** Outlier settings for callers of pickRoundRobin that pass none. */
const DEFAULT_OUTLIER = { enabled: true, intervalMs: 10_000 };

/**
 * What the forwarder needs from the balancer: a choice of endpoint, and every attempt's outcome
 * (load, error rate, outlier detection). Observations are recorded whatever the policy.
 */
export interface EndpointBalancer {
  /** An endpoint of `agent` for the next attempt, skipping `tried`; undefined when none is available. */
  pick(agent: AgentRuntime, tried?: readonly EndpointState[]): EndpointState | undefined;
  /**
   * The endpoint answered (response headers) after `latencyMs`; `loadHeader` is its load report: the
   * `x-dmsc-load` value, or else the ORCA `endpoint-load-metrics` one (`TEXT …`, `JSON …`).
   */
  answered(agent: AgentRuntime, endpoint: EndpointState, status: number, latencyMs: number, loadHeader: string | undefined): void;
  /** The attempt failed without an answer: connect/reset (`latencyMs` -1) or a timeout (its duration). */
  failed(agent: AgentRuntime, endpoint: EndpointState, latencyMs: number, timedOut: boolean): void;
  /** The attempt ended with nothing to judge the endpoint by (the caller went away, a local error). */
  abandoned(endpoint: EndpointState): void;
}

const loadReports = { accepted: 0, rejected: 0 };

/** How many load report headers (`x-dmsc-load`, ORCA) were used and how many were ignored as malformed. */
export function loadReportCounters(): { accepted: number; rejected: number } {
  return { ...loadReports };
}

/**
 * Round-robin over the agent's endpoints that are healthy and not ejected, skipping ones already
 * tried for this request (a half-open endpoint takes its one probe when its turn comes).
 */
export function pickRoundRobin(
  agent: AgentRuntime,
  tried?: readonly EndpointState[],
  outlier: Pick<OutlierDetectionConfig, 'enabled' | 'intervalMs'> = DEFAULT_OUTLIER,
): EndpointState | undefined {
  const endpoints = agent.endpoints;
  const count = endpoints.length;
  const now = performance.now();
  for (let step = 0; step < count; step++) {
    const index = agent.rrCursor % count;
    agent.rrCursor = index + 1;
    const endpoint = endpoints[index]!;
    if (tried && tried.includes(endpoint)) continue;
    const state = availability(endpoint, now, outlier);
    if (state === UNAVAILABLE) continue;
    if (state === PROBE) probeStarted(endpoint, now);
    return endpoint;
  }
  return lastResort(agent, tried);
}

// Reused by every pick (the data plane is single-threaded): no allocation per request.
const candidates: EndpointState[] = [];
const candidateStates: Availability[] = [];

/**
 * Power of two choices (Mitzenmacher; Finagle's and Linkerd's P2C): two distinct endpoints drawn at
 * random among the available ones, the one with the lower load cost wins (src/routing/load.ts). A
 * half-open endpoint drawn takes its probe. O(1) when both draws are available, else one pass.
 */
export function pickLoadAware(
  agent: AgentRuntime,
  tried: readonly EndpointState[] | undefined,
  settings: BalancingConfig,
  now = performance.now(),
): EndpointState | undefined {
  const endpoints = agent.endpoints;
  const count = endpoints.length;
  const outlier = settings.outlierDetection;
  if (count >= 2) {
    const i = (Math.random() * count) | 0;
    let j = (Math.random() * (count - 1)) | 0;
    if (j >= i) j++;
    const a = endpoints[i]!;
    const b = endpoints[j]!;
    const stateA = tried && tried.includes(a) ? UNAVAILABLE : availability(a, now, outlier);
    const stateB = tried && tried.includes(b) ? UNAVAILABLE : availability(b, now, outlier);
    if (stateA !== UNAVAILABLE && stateB !== UNAVAILABLE) return choose(a, stateA, b, stateB, now, settings);
  }
  for (const endpoint of endpoints) {
    if (tried && tried.includes(endpoint)) continue;
    const state = availability(endpoint, now, outlier);
    if (state === UNAVAILABLE) continue;
    candidates.push(endpoint);
    candidateStates.push(state);
  }
  const found = candidates.length;
  let chosen: EndpointState | undefined;
  if (found === 1) {
    chosen = candidates[0]!;
    if (candidateStates[0] === PROBE) probeStarted(chosen, now);
  } else if (found > 1) {
    const i = (Math.random() * found) | 0;
    let j = (Math.random() * (found - 1)) | 0;
    if (j >= i) j++;
    chosen = choose(candidates[i]!, candidateStates[i]!, candidates[j]!, candidateStates[j]!, now, settings);
  }
  candidates.length = 0;
  candidateStates.length = 0;
  return chosen ?? lastResort(agent, tried);
}

function choose(a: EndpointState, stateA: Availability, b: EndpointState, stateB: Availability, now: number, settings: BalancingConfig): EndpointState {
  if (stateA === PROBE) {
    probeStarted(a, now);
    return a;
  }
  if (stateB === PROBE) {
    probeStarted(b, now);
    return b;
  }
  return prefer(a, b, now, settings) ? a : b;
}

/**
 * Nothing available: outlier ejection never takes the last endpoint in service, but health checks
 * may have taken the others since. Then an ejected endpoint that is healthy beats no answer at all.
 */
function lastResort(agent: AgentRuntime, tried: readonly EndpointState[] | undefined): EndpointState | undefined {
  for (const endpoint of agent.endpoints) {
    if (endpoint.healthy && endpoint.outlier.ejectedUntil !== 0 && !(tried && tried.includes(endpoint))) return endpoint;
  }
  return undefined;
}

/** The balancer of the data plane: the configured policy, and the observations both policies rely on. */
export class Balancer implements EndpointBalancer {
  constructor(private readonly settings: () => BalancingConfig) {}

  pick(agent: AgentRuntime, tried?: readonly EndpointState[]): EndpointState | undefined {
    const settings = this.settings();
    if (settings.policy === 'round-robin') return pickRoundRobin(agent, tried, settings.outlierDetection);
    return pickLoadAware(agent, tried, settings);
  }

  answered(agent: AgentRuntime, endpoint: EndpointState, status: number, latencyMs: number, loadHeader: string | undefined): void {
    const settings = this.settings();
    const now = performance.now();
    const failed = status >= 500;
    recordOutcome(endpoint.load, now, settings.decayMs, latencyMs, failed ? 'error' : 'ok');
    if (loadHeader !== undefined && settings.reportedLoad) {
      const report = parseLoadReport(loadHeader);
      if (report) {
        recordReport(endpoint.load, now, report);
        loadReports.accepted++;
      } else {
        loadReports.rejected++;
      }
    }
    this.judge(agent, endpoint, failed, now, settings);
  }

  failed(agent: AgentRuntime, endpoint: EndpointState, latencyMs: number, timedOut: boolean): void {
    const settings = this.settings();
    const now = performance.now();
    const outcome: Outcome = timedOut ? 'timeout' : 'error';
    recordOutcome(endpoint.load, now, settings.decayMs, latencyMs, outcome);
    this.judge(agent, endpoint, true, now, settings);
  }

  abandoned(endpoint: EndpointState): void {
    const outlier = endpoint.outlier;
    if (outlier.probeStartedAt !== 0 && outlier.ejectedUntil !== 0) probeAbandoned(endpoint);
  }

  /** The cheapest cost among the agent's available endpoints (agent-level load for routing); undefined when none is available. */
  loadOf(agent: AgentRuntime): number | undefined {
    const settings = this.settings();
    const now = performance.now();
    let best: number | undefined;
    for (const endpoint of agent.endpoints) {
      if (availability(endpoint, now, settings.outlierDetection) === UNAVAILABLE) continue;
      const cost = endpointCost(endpoint, now, settings);
      if (best === undefined || cost < best) best = cost;
    }
    return best;
  }

  /** Every endpoint's cost and whether it may be chosen now (for route explanations). */
  explain(agent: AgentRuntime): Array<{ url: string; cost: number; available: boolean; inflight: number }> {
    const settings = this.settings();
    const now = performance.now();
    return agent.endpoints.map((endpoint) => ({
      url: endpoint.url,
      cost: Math.round(endpointCost(endpoint, now, settings) * 1000) / 1000,
      available: availability(endpoint, now, settings.outlierDetection) !== UNAVAILABLE,
      inflight: endpoint.inflight,
    }));
  }

  private judge(agent: AgentRuntime, endpoint: EndpointState, failed: boolean, now: number, settings: BalancingConfig): void {
    if (!settings.outlierDetection.enabled) return;
    recordAttempt(agent, endpoint, failed, now, settings.outlierDetection);
  }
}
