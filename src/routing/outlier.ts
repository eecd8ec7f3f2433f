import type { AgentRuntime, EndpointState } from '../registry/types.js';
import type { OutlierDetectionConfig } from './balancing-config.js';

/**
 * Outlier detection and circuit breaking per endpoint, after Envoy's: an endpoint with
 * `consecutiveFailures` failed attempts in a row (5xx answers, connect/reset/timeout failures), or a
 * failure rate over `failureRateThreshold` in one `intervalMs` window with at least `minRequests`,
 * is ejected for baseEjectionMs x (number of recent ejections), up to maxEjectionMs. When that time
 * is up the endpoint is half-open: the balancer lets one request through at a time; an answer below
 * 500 closes the circuit, a failure ejects it again for longer. Each quiet interval after a return
 * to service takes one step off the back-off. At most maxEjectionPercent of an agent's endpoints are
 * out at once (at least one may be), and never the last endpoint still in service.
 */

/** Counters for metrics (not yet exported to /metrics; see outlierCounters()). */
const counters = {
  ejections: 0,
  /** Ejections not done because the endpoint was the agent's last one in service. */
  ejectionsRefusedLast: 0,
  /** Ejections not done because maxEjectionPercent of the agent's endpoints were already out. */
  ejectionsRefusedCap: 0,
  probes: 0,
  probeSuccesses: 0,
  probeFailures: 0,
};

export type OutlierCounters = Readonly<typeof counters>;

export function outlierCounters(): OutlierCounters {
  return { ...counters };
}

/** unhealthy, ejected, or a probe is already in flight */
export const UNAVAILABLE = 0;
export const AVAILABLE = 1;
/** half-open: may take one probe request */
export const PROBE = 2;
export type Availability = typeof UNAVAILABLE | typeof AVAILABLE | typeof PROBE;

/**
 * Whether the balancer may send a request to `endpoint` now (health, ejection, half-open probe). A
 * probe whose result never came (its caller went away, a later stage refused it) stops blocking the
 * next one after `settings.intervalMs`. With detection off, ejections are ignored.
 */
export function availability(endpoint: EndpointState, now: number, settings: Pick<OutlierDetectionConfig, 'enabled' | 'intervalMs'>): Availability {
  if (!endpoint.healthy) return UNAVAILABLE;
  const outlier = endpoint.outlier;
  if (outlier.ejectedUntil === 0 || !settings.enabled) return AVAILABLE;
  if (now < outlier.ejectedUntil) return UNAVAILABLE;
  if (outlier.probeStartedAt !== 0 && now - outlier.probeStartedAt < settings.intervalMs) return UNAVAILABLE;
  return PROBE;
}

/** The balancer chose a half-open endpoint: this request is its probe. */
export function probeStarted(endpoint: EndpointState, now: number): void {
  endpoint.outlier.probeStartedAt = now;
  counters.probes++;
}

/** A probe's attempt ended without an answer or failure to judge by (caller gone): let another probe go. */
export function probeAbandoned(endpoint: EndpointState): void {
  endpoint.outlier.probeStartedAt = 0;
}

/** One finished attempt. Returns true when it ejected the endpoint. */
export function recordAttempt(agent: AgentRuntime, endpoint: EndpointState, failed: boolean, now: number, settings: OutlierDetectionConfig): boolean {
  const outlier = endpoint.outlier;
  if (outlier.ejectedUntil !== 0) {
    // Answers from requests sent before the ejection are ignored; once half-open, the probe decides.
    if (now < outlier.ejectedUntil) return false;
    if (!failed) {
      counters.probeSuccesses++;
      restore(endpoint, now);
      return false;
    }
    counters.probeFailures++;
    outlier.probeStartedAt = 0;
    return eject(agent, endpoint, now, settings);
  }
  if (now - outlier.windowStart >= settings.intervalMs) {
    outlier.windowStart = now;
    outlier.windowRequests = 0;
    outlier.windowFailures = 0;
  }
  outlier.windowRequests++;
  if (!failed) {
    outlier.consecutiveFailures = 0;
    return false;
  }
  outlier.windowFailures++;
  outlier.consecutiveFailures++;
  if (
    outlier.consecutiveFailures >= settings.consecutiveFailures ||
    (outlier.windowRequests >= settings.minRequests && outlier.windowFailures / outlier.windowRequests >= settings.failureRateThreshold)
  ) {
    return eject(agent, endpoint, now, settings);
  }
  return false;
}

function restore(endpoint: EndpointState, now: number): void {
  const outlier = endpoint.outlier;
  outlier.ejectedUntil = 0;
  outlier.probeStartedAt = 0;
  outlier.restoredAt = now;
  outlier.consecutiveFailures = 0;
  outlier.windowStart = now;
  outlier.windowRequests = 0;
  outlier.windowFailures = 0;
  // The failures that got it ejected no longer count against it in the load score.
  endpoint.load.failures = 0;
}

function eject(agent: AgentRuntime, endpoint: EndpointState, now: number, settings: OutlierDetectionConfig): boolean {
  const outlier = endpoint.outlier;
  const endpoints = agent.endpoints;
  let out = 0;
  let inService = 0;
  for (const other of endpoints) {
    if (other === endpoint) continue;
    if (other.outlier.ejectedUntil !== 0) out++;
    else if (other.healthy) inService++;
  }
  if (inService === 0) {
    counters.ejectionsRefusedLast++;
    if (outlier.ejectedUntil !== 0) restore(endpoint, now); // a failed probe of the last endpoint: back in service
    return false;
  }
  const cap = Math.max(1, Math.floor((endpoints.length * settings.maxEjectionPercent) / 100));
  if (outlier.ejectedUntil === 0 && out + 1 > cap) {
    counters.ejectionsRefusedCap++;
    return false;
  }
  if (outlier.ejectedUntil === 0 && outlier.restoredAt !== 0) {
    const quietIntervals = Math.floor((now - outlier.restoredAt) / settings.intervalMs);
    outlier.ejections = Math.max(0, outlier.ejections - quietIntervals);
  }
  outlier.ejections++;
  const duration = Math.min(settings.baseEjectionMs * outlier.ejections, Math.max(settings.baseEjectionMs, settings.maxEjectionMs));
  outlier.ejectedUntil = now + duration;
  outlier.probeStartedAt = 0;
  outlier.consecutiveFailures = 0;
  counters.ejections++;
  return true;
}
