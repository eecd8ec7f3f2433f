import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { EndpointHealthSample } from '../registry/types.js';
import { loadPollCounters, loadReportCounters, outlierCounters, retryCounters, routeDecisionCounters, scorerCounters } from '../routing/index.js';
import type { DataplaneTelemetry, UpstreamErrorKind } from './telemetry.js';

/** Distinct (tenant, agent) label pairs kept per GatewayMetrics; later pairs are reported as OTHER_LABEL. */
export const MAX_TENANT_AGENT_PAIRS = 2000;
export const OTHER_LABEL = '_other';
/** Label value for requests that never resolved to a tenant/agent (e.g. a path that addresses no agent). */
export const UNRESOLVED_LABEL = '';

const DURATION_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

interface RequestSeries {
  count: { inc(): void };
  duration: { observe(value: number): void };
}

/** One admitted (tenant, agent) pair with its cached child metrics, so the hot path does map lookups only. */
interface PairSeries {
  readonly tenant: string;
  readonly agent: string;
  /** by `${listener} ${status}` */
  readonly requests: Map<string, RequestSeries>;
  readonly upstreamErrors: Map<UpstreamErrorKind, { inc(): void }>;
}

interface ListenerSeries {
  active: { inc(): void; dec(): void };
  total: { inc(): void };
}

/**
 * The gateway's Prometheus metrics, on a registry of its own (several gateways can live in one
 * process, as in tests). `dmsc_requests_total` is labelled with the exact status code; the duration
 * histogram leaves the status out to keep its series count (buckets x labels) down.
 */
export class GatewayMetrics implements DataplaneTelemetry {
  readonly registry = new Registry();
  private readonly requestsTotal: Counter<'listener' | 'tenant' | 'agent' | 'status'>;
  private readonly requestDuration: Histogram<'listener' | 'tenant' | 'agent'>;
  private readonly upstreamErrorsTotal: Counter<'tenant' | 'agent' | 'kind'>;
  private readonly connectionsActive: Gauge<'listener'>;
  private readonly connectionsTotal: Counter<'listener'>;

  private readonly maxPairs: number;
  private readonly pairs = new Map<string, PairSeries>();
  private readonly unresolvedPair: PairSeries = newPair(UNRESOLVED_LABEL, UNRESOLVED_LABEL);
  private readonly otherPair: PairSeries = newPair(OTHER_LABEL, OTHER_LABEL);
  private readonly listeners = new Map<string, ListenerSeries>();
  private readInflight: () => number = () => 0;
  private readEndpointHealth: () => EndpointHealthSample[] = () => [];

  constructor(options: { maxTenantAgentPairs?: number } = {}) {
    this.maxPairs = options.maxTenantAgentPairs ?? MAX_TENANT_AGENT_PAIRS;
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry });
    this.requestsTotal = new Counter({
      name: 'dmsc_requests_total',
      help: 'Requests finished, by listener, tenant, agent and HTTP status code (499: the caller went away).',
      labelNames: ['listener', 'tenant', 'agent', 'status'],
      registers,
    });
    this.requestDuration = new Histogram({
      name: 'dmsc_request_duration_seconds',
      help: 'Time from request start until the response finished, by listener, tenant and agent.',
      labelNames: ['listener', 'tenant', 'agent'],
      buckets: DURATION_BUCKETS,
      registers,
    });
    this.upstreamErrorsTotal = new Counter({
      name: 'dmsc_upstream_errors_total',
      help: 'Failures talking to an agent endpoint, by kind (connect, timeout, reset, protocol, other).',
      labelNames: ['tenant', 'agent', 'kind'],
      registers,
    });
    this.connectionsActive = new Gauge({
      name: 'dmsc_connections_active',
      help: 'Open downstream connections, by listener.',
      labelNames: ['listener'],
      registers,
    });
    this.connectionsTotal = new Counter({
      name: 'dmsc_connections_total',
      help: 'Downstream connections accepted, by listener.',
      labelNames: ['listener'],
      registers,
    });
    const metrics = this;
    new Gauge({
      name: 'dmsc_inflight_requests',
      help: 'Requests currently being handled by the data plane.',
      registers,
      collect() {
        this.set(metrics.readInflight());
      },
    });
    this.routingCounters(registers);
    new Gauge({
      name: 'dmsc_endpoint_healthy',
      help: '1 when the endpoint is considered healthy (active and passive checks), else 0.',
      labelNames: ['tenant', 'agent', 'endpoint'],
      registers,
      collect() {
        // Reset first so removed agents and endpoints disappear from the scrape.
        this.reset();
        for (const sample of metrics.readEndpointHealth()) {
          this.labels(sample.tenant, sample.agent, sample.endpoint).set(sample.healthy ? 1 : 0);
        }
      },
    });
  }

  /** Counters the routing part keeps per process (outlier ejection, retries, agents' load reports). */
  private routingCounters(registers: Registry[]): void {
    const counter = (name: string, help: string, labelNames: string[], read: () => Array<[string[], number]>) =>
      new Counter({
        name,
        help,
        labelNames,
        registers,
        collect() {
          this.reset();
          for (const [labels, value] of read()) if (value > 0) this.labels(...labels).inc(value);
        },
      });
    counter('dmsc_outlier_ejections_total', 'Endpoint ejections by outlier detection; refused_last / refused_cap: not ejected (last endpoint in service, or maxEjectionPercent reached).', ['result'], () => {
      const c = outlierCounters();
      return [[['ejected'], c.ejections], [['refused_last'], c.ejectionsRefusedLast], [['refused_cap'], c.ejectionsRefusedCap]];
    });
    counter('dmsc_outlier_probes_total', 'Half-open probe requests to ejected endpoints, by result.', ['result'], () => {
      const c = outlierCounters();
      return [[['success'], c.probeSuccesses], [['failure'], c.probeFailures]];
    });
    counter('dmsc_retries_total', 'Requests retried on another endpoint or agent, by reason.', ['reason'], () =>
      Object.entries(retryCounters().retries).map(([reason, value]) => [[reason], value]),
    );
    counter('dmsc_retry_budget_exhausted_total', 'Retries not made because the retry budget was spent.', [], () => [[[], retryCounters().budgetExhausted]]);
    counter('dmsc_scorer_calls_total', 'Calls to configured semantic scorers (routing.scorers), by scorer.', ['scorer'], () =>
      Object.entries(scorerCounters().scorers).map(([name, entry]) => [[name], entry.calls]),
    );
    counter('dmsc_scorer_failures_total', 'Semantic scorer calls that failed (the decision fell back to lexical), by scorer and reason.', ['scorer', 'reason'], () =>
      Object.entries(scorerCounters().scorers).flatMap(([name, entry]) => Object.entries(entry.failures).map(([reason, value]): [string[], number] => [[name, reason], value])),
    );
    counter(
      'dmsc_route_decisions_total',
      'Capability and intent routing decisions, by tenant and outcome (intent, tags, default-agent, task, context: how the agent was chosen; no_match, low_confidence, not_eligible: why none was).',
      ['tenant', 'outcome'],
      () => routeDecisionCounters().decisions.map(({ tenant, outcome, count }) => [[tenant, outcome], count]),
    );
    counter('dmsc_route_failovers_total', 'Requests moved to the next-best agent because the chosen one could not be reached.', [], () => [[[], routeDecisionCounters().failovers]]);
    counter("dmsc_load_polls_total", "Polls of agents' load endpoints (balancing.loadPoll), by result.", ['result'], () => {
      const c = loadPollCounters();
      return [[['ok'], c.ok], ...Object.entries(c.failed).map(([reason, value]): [string[], number] => [[reason], value])];
    });
    counter('dmsc_load_reports_total', "Load reports on agents' answers (x-dmsc-load, ORCA endpoint-load-metrics), by result (rejected: malformed, ignored).", ['result'], () => {
      const c = loadReportCounters();
      return [[['accepted'], c.accepted], [['rejected'], c.rejected]];
    });
  }

  setInflightSource(read: () => number): void {
    this.readInflight = read;
  }

  setEndpointHealthSource(read: () => EndpointHealthSample[]): void {
    this.readEndpointHealth = read;
  }

  connectionOpened(listener: string): void {
    const series = this.listenerSeries(listener);
    series.active.inc();
    series.total.inc();
  }

  connectionClosed(listener: string): void {
    this.listenerSeries(listener).active.dec();
  }

  requestFinished(listener: string, tenant: string | undefined, agent: string | undefined, status: number, seconds: number): void {
    const pair = this.pair(tenant, agent);
    const key = `${listener} ${status}`;
    let series = pair.requests.get(key);
    if (!series) {
      series = {
        count: this.requestsTotal.labels(listener, pair.tenant, pair.agent, String(status)),
        duration: this.requestDuration.labels(listener, pair.tenant, pair.agent),
      };
      pair.requests.set(key, series);
    }
    series.count.inc();
    series.duration.observe(seconds);
  }

  upstreamError(tenant: string, agent: string, kind: UpstreamErrorKind): void {
    const pair = this.pair(tenant, agent);
    let counter = pair.upstreamErrors.get(kind);
    if (!counter) {
      counter = this.upstreamErrorsTotal.labels(pair.tenant, pair.agent, kind);
      pair.upstreamErrors.set(kind, counter);
    }
    counter.inc();
  }

  /** The Prometheus text exposition of every metric (including process metrics). */
  async scrape(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }

  private pair(tenant: string | undefined, agent: string | undefined): PairSeries {
    if (tenant === undefined && agent === undefined) return this.unresolvedPair;
    const t = tenant ?? UNRESOLVED_LABEL;
    const a = agent ?? UNRESOLVED_LABEL;
    const key = `${t}\u0000${a}`;
    let pair = this.pairs.get(key);
    if (!pair) {
      // Past the cap new pairs share one series, so a caller inventing names cannot grow memory or the scrape.
      if (this.pairs.size >= this.maxPairs) return this.otherPair;
      pair = newPair(t, a);
      this.pairs.set(key, pair);
    }
    return pair;
  }

  private listenerSeries(listener: string): ListenerSeries {
    let series = this.listeners.get(listener);
    if (!series) {
      series = { active: this.connectionsActive.labels(listener), total: this.connectionsTotal.labels(listener) };
      this.listeners.set(listener, series);
    }
    return series;
  }
}

function newPair(tenant: string, agent: string): PairSeries {
  return { tenant, agent, requests: new Map(), upstreamErrors: new Map() };
}
