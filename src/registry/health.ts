import type { Logger } from 'pino';
import { request, type Dispatcher } from 'undici';
import type { Endpoint } from './endpoint.js';

/**
 * Active health checks: `GET <endpoint><path>` every interval; healthy when the status is < 500.
 * Each endpoint has its own timer (jittered so replicas registered together are not probed in
 * lock-step). When active checks are disabled, an endpoint that passive failures took out is
 * re-admitted after one interval, so it can prove itself with real traffic.
 */
export class HealthChecker {
  private readonly loops = new Map<Endpoint, NodeJS.Timeout | undefined>();
  private stopped = false;

  constructor(
    /** The client for an endpoint (https:// endpoints need the gateway's mTLS client certificate). */
    private readonly dispatcher: (endpoint: Endpoint) => Dispatcher | Promise<Dispatcher>,
    private readonly logger: Logger,
    private readonly onChange: (endpoint: Endpoint) => void,
  ) {}

  watch(endpoint: Endpoint): void {
    if (this.loops.has(endpoint) || this.stopped) return;
    this.loops.set(endpoint, undefined);
    if (endpoint.settings().enabled) void this.check(endpoint);
  }

  unwatch(endpoint: Endpoint): void {
    clearTimeout(this.loops.get(endpoint));
    this.loops.delete(endpoint);
  }

  /** A passive failure (from the forwarder) made the endpoint unhealthy. */
  passivelyEjected(endpoint: Endpoint): void {
    if (endpoint.settings().enabled || !this.loops.has(endpoint)) return; // the active check re-admits it
    this.schedule(endpoint, () => {
      endpoint.healthy = true;
      endpoint.consecutiveFailures = 0;
      this.onChange(endpoint);
    });
  }

  /** Settings changed (reload): restart the loop so a new interval applies now. */
  restart(endpoint: Endpoint): void {
    if (!this.loops.has(endpoint)) return;
    this.unwatch(endpoint);
    this.watch(endpoint);
  }

  stop(): void {
    this.stopped = true;
    for (const timer of this.loops.values()) clearTimeout(timer);
    this.loops.clear();
  }

  private schedule(endpoint: Endpoint, run: () => void): void {
    clearTimeout(this.loops.get(endpoint));
    const interval = endpoint.settings().intervalMs;
    const timer = setTimeout(() => {
      if (this.loops.has(endpoint)) run();
    }, interval * (0.9 + Math.random() * 0.2));
    timer.unref();
    this.loops.set(endpoint, timer);
  }

  private async check(endpoint: Endpoint): Promise<void> {
    const settings = endpoint.settings();
    if (!settings.enabled) return;
    let failure: string | undefined;
    try {
      const response = await request(endpoint.url + settings.path, {
        method: 'GET',
        dispatcher: await this.dispatcher(endpoint),
        headers: { 'user-agent': 'dmsc-gateway-health-check', 'x-dmsc-health-check': '1' },
        headersTimeout: settings.timeoutMs,
        bodyTimeout: settings.timeoutMs,
        signal: AbortSignal.timeout(settings.timeoutMs),
      });
      await response.body.dump({ limit: 64 * 1024 }).catch(() => undefined);
      if (response.statusCode >= 500) failure = `health check answered ${response.statusCode}`;
    } catch (err) {
      const e = err as { code?: string; cause?: { code?: string }; name?: string; message?: string };
      failure = `health check failed: ${e.cause?.code ?? e.code ?? e.name ?? e.message}`;
    }
    if (!this.loops.has(endpoint)) return;
    endpoint.lastCheckedAt = new Date().toISOString();
    const changed = failure === undefined ? endpoint.recordSuccess() : endpoint.recordFailure(failure);
    if (changed) {
      this.logger.info({ endpoint: endpoint.url, healthy: endpoint.healthy, reason: failure }, 'endpoint health changed');
      this.onChange(endpoint);
    }
    this.schedule(endpoint, () => void this.check(endpoint));
  }
}
