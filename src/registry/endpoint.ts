import type { HealthCheckConfig } from '../config/schema.js';
import type { EndpointLoad, EndpointOutlier, EndpointState, EndpointStatus } from './types.js';

/**
 * One replica of an agent and its health. Active checks and passive observations (connect errors,
 * resets, timeouts seen by the forwarder) feed the same consecutive-failure counter, like Envoy's
 * outlier detection feeding the same host health as its active checker.
 */
export class Endpoint implements EndpointState {
  readonly url: string;
  readonly origin: string;
  readonly basePath: string;
  readonly tls: boolean;
  #healthy = true;
  inflight = 0;
  consecutiveFailures = 0;
  consecutiveSuccesses = 0;
  lastCheckedAt: string | undefined = undefined;
  lastError: string | undefined = undefined;
  readonly load: EndpointLoad = { latencyMs: -1, attempts: 0, failures: 0, at: 0, utilization: 0, queue: 0, reportedAt: 0 };
  readonly outlier: EndpointOutlier = {
    consecutiveFailures: 0,
    windowStart: 0,
    windowRequests: 0,
    windowFailures: 0,
    ejectedUntil: 0,
    ejections: 0,
    restoredAt: 0,
    probeStartedAt: 0,
  };

  constructor(
    url: string,
    /** The agent's effective health-check settings, read live so a reload applies at once. */
    readonly settings: () => HealthCheckConfig,
    /** Called when `healthy` changes (the registry notes its agent as changed). */
    private readonly onHealthChange?: () => void,
  ) {
    const parsed = new URL(url);
    this.origin = parsed.origin;
    this.basePath = parsed.pathname.replace(/\/+$/, '');
    this.url = this.origin + this.basePath;
    this.tls = parsed.protocol === 'https:';
  }

  get healthy(): boolean {
    return this.#healthy;
  }

  set healthy(healthy: boolean) {
    if (healthy === this.#healthy) return;
    this.#healthy = healthy;
    this.onHealthChange?.();
  }

  /** Returns true when this observation changed the endpoint's health. */
  recordSuccess(): boolean {
    this.consecutiveFailures = 0;
    this.consecutiveSuccesses++;
    this.lastError = undefined;
    if (!this.healthy && this.consecutiveSuccesses >= this.settings().healthyThreshold) {
      this.healthy = true;
      return true;
    }
    return false;
  }

  recordFailure(reason: string): boolean {
    this.consecutiveSuccesses = 0;
    this.consecutiveFailures++;
    this.lastError = reason;
    if (this.healthy && this.consecutiveFailures >= this.settings().unhealthyThreshold) {
      this.healthy = false;
      return true;
    }
    return false;
  }

  status(): EndpointStatus {
    return {
      url: this.url,
      healthy: this.healthy,
      inflight: this.inflight,
      consecutiveFailures: this.consecutiveFailures,
      ...(this.lastCheckedAt ? { lastCheckedAt: this.lastCheckedAt } : {}),
      ...(this.lastError ? { lastError: this.lastError } : {}),
      load: {
        ...(this.load.latencyMs >= 0 ? { latencyMs: Math.round(this.load.latencyMs * 1000) / 1000 } : {}),
        errorRate: Math.round((this.load.failures / (this.load.attempts + 1)) * 1000) / 1000,
        ...(this.load.reportedAt !== 0
          ? { reported: { utilization: this.load.utilization, queue: this.load.queue, at: wallClock(this.load.reportedAt) } }
          : {}),
      },
      outlier: {
        state: this.outlier.ejectedUntil === 0 ? 'in-service' : this.outlier.ejectedUntil > performance.now() ? 'ejected' : 'half-open',
        ejections: this.outlier.ejections,
        ...(this.outlier.ejectedUntil !== 0 ? { ejectedUntil: wallClock(this.outlier.ejectedUntil) } : {}),
      },
    };
  }
}

/** ISO time of a performance.now() timestamp. */
function wallClock(monotonicMs: number): string {
  return new Date(Date.now() + (monotonicMs - performance.now())).toISOString();
}

/** Normalised form used to compare endpoint lists: origin + base path, no trailing slash. */
export function normalizeEndpointUrl(url: string): string {
  const parsed = new URL(url);
  return parsed.origin + parsed.pathname.replace(/\/+$/, '');
}
