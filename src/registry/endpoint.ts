import type { HealthCheckConfig } from '../config/schema.js';
import type { EndpointState, EndpointStatus } from './types.js';

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
  healthy = true;
  inflight = 0;
  consecutiveFailures = 0;
  consecutiveSuccesses = 0;
  lastCheckedAt: string | undefined = undefined;
  lastError: string | undefined = undefined;

  constructor(
    url: string,
    /** The agent's effective health-check settings, read live so a reload applies at once. */
    readonly settings: () => HealthCheckConfig,
  ) {
    const parsed = new URL(url);
    this.origin = parsed.origin;
    this.basePath = parsed.pathname.replace(/\/+$/, '');
    this.url = this.origin + this.basePath;
    this.tls = parsed.protocol === 'https:';
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
    };
  }
}

/** Normalised form used to compare endpoint lists: origin + base path, no trailing slash. */
export function normalizeEndpointUrl(url: string): string {
  const parsed = new URL(url);
  return parsed.origin + parsed.pathname.replace(/\/+$/, '');
}
