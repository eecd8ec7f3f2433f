import { z } from 'zod';
import type { EndpointLoad, EndpointState } from '../registry/types.js';

/**
 * Per-endpoint load: what the gateway observes (time to response headers as a peak EWMA, a decaying
 * error rate, requests in flight) and what the agent reports (`x-dmsc-load` or ORCA, on its answers
 * or from a polled endpoint), folded into one cost (lower is better) that the power-of-two-choices
 * balancer compares.
 */

export const LOAD_HEADER = 'x-dmsc-load';
/** Reported queue depths are capped here; utilisation at 1. */
export const MAX_REPORTED_QUEUE = 10_000;
/** The utilisation factor 1 / (1 - u) is capped at u = 0.95 (x20). */
const MAX_UTILIZATION_IN_SCORE = 0.95;
const MAX_HEADER_CHARS = 256;
const MAX_MEMBERS = 16;

export interface LoadReport {
  /** 0..1 */
  utilization: number;
  /** requests waiting at the agent, 0..MAX_REPORTED_QUEUE */
  queue: number;
}

const DECIMAL = /^(?:0|[1-9][0-9]{0,8})(?:\.[0-9]{1,9})?$/;
const INTEGER = /^(?:0|[1-9][0-9]{0,8})$/;
const KEY = /^[a-z][a-z0-9_-]{0,31}$/;

/**
 * Parses `x-dmsc-load`: either one decimal in [0, 1] (utilisation, like `0.73`), or comma-separated
 * `key=value` members (`cpu=0.73, queue=12`; RFC 8941 dictionary syntax with plain decimal and
 * integer values): `cpu` is utilisation 0..1, `queue` the number of requests waiting. Unknown keys
 * are skipped. Anything malformed (signs, exponents, duplicate keys, empty members, over 256
 * characters) makes the whole header ignored (undefined); values are capped, never rejected for size.
 */
export function parseLoadHeader(value: string): LoadReport | undefined {
  if (value.length === 0 || value.length > MAX_HEADER_CHARS) return undefined;
  const text = value.trim();
  if (DECIMAL.test(text)) return { utilization: Math.min(1, Number(text)), queue: 0 };
  const members = text.split(',');
  if (members.length > MAX_MEMBERS) return undefined;
  let utilization: number | undefined;
  let queue: number | undefined;
  for (const member of members) {
    const eq = member.indexOf('=');
    if (eq < 0) return undefined;
    const key = member.slice(0, eq).trim();
    const raw = member.slice(eq + 1).trim();
    if (!KEY.test(key)) return undefined;
    if (key === 'cpu') {
      if (utilization !== undefined || !DECIMAL.test(raw)) return undefined;
      utilization = Math.min(1, Number(raw));
    } else if (key === 'queue') {
      if (queue !== undefined || !INTEGER.test(raw)) return undefined;
      queue = Math.min(MAX_REPORTED_QUEUE, Number(raw));
    } else if (!DECIMAL.test(raw) && !/^[a-z0-9._-]{1,64}$/i.test(raw)) {
      return undefined;
    }
  }
  if (utilization === undefined && queue === undefined) return undefined;
  return { utilization: utilization ?? 0, queue: queue ?? 0 };
}

/** ORCA's per-response load report (Envoy, gRPC: xds.data.orca.v3.OrcaLoadReport), as a header or a polled body. */
export const ORCA_HEADER = 'endpoint-load-metrics';
/** The ORCA named metric read as the queue depth. */
export const ORCA_QUEUE_METRIC = 'queue';

const ORCA_FIELDS = new Set(['cpu_utilization', 'mem_utilization', 'application_utilization', 'rps_fractional', 'eps', 'rps']);
const ORCA_MAPS = ['named_metrics.', 'utilization.', 'request_cost.'];
const ORCA_NUMBER = /^[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$/;
const MAX_ORCA_CHARS = 4096;

const utilizationField = z.number().min(0).optional();
const metricsMap = z.record(z.string().min(1), z.number()).optional();
/** The OrcaLoadReport fields the cost uses, in proto3 JSON (original or lowerCamelCase names; unknown fields skipped). */
const orcaJsonSchema = z.object({
  cpu_utilization: utilizationField,
  cpuUtilization: utilizationField,
  application_utilization: utilizationField,
  applicationUtilization: utilizationField,
  named_metrics: metricsMap,
  namedMetrics: metricsMap,
});

/**
 * Parses an ORCA load report: `TEXT cpu_utilization=0.3, named_metrics.queue=4` (comma-separated
 * `name=value` or `name:value`, Envoy's native HTTP encoding) or `JSON {"cpu_utilization":0.3,
 * "named_metrics":{"queue":4}}` (proto3 JSON). Utilisation is application_utilization when set (> 0),
 * else cpu_utilization (capped at 1, as gRPC's weighted round-robin does); the queue depth is the named
 * metric `queue`. Unset fields are 0, as in proto3. `BIN` (base64 protobuf), unknown metric names,
 * duplicates, non-finite or negative values make the whole report ignored (undefined).
 */
export function parseOrcaReport(value: string): LoadReport | undefined {
  const text = value.trim();
  if (text.length > MAX_ORCA_CHARS) return undefined;
  let cpu = 0;
  let application = 0;
  let queue = 0;
  if (text === 'TEXT' || text.startsWith('TEXT ')) {
    const seen = new Set<string>();
    const body = text.slice(4).trim();
    for (const member of body === '' ? [] : body.split(',')) {
      const at = member.search(/[=:]/);
      if (at < 0) return undefined;
      const name = member.slice(0, at).trim();
      const raw = member.slice(at + 1).trim();
      if (seen.has(name) || !ORCA_NUMBER.test(raw)) return undefined;
      seen.add(name);
      const number = Number(raw);
      if (!Number.isFinite(number)) return undefined;
      if (name === 'cpu_utilization') cpu = number;
      else if (name === 'application_utilization') application = number;
      else if (name === `named_metrics.${ORCA_QUEUE_METRIC}`) queue = number;
      else if (!ORCA_FIELDS.has(name) && !ORCA_MAPS.some((prefix) => name.length > prefix.length && name.startsWith(prefix))) return undefined;
    }
  } else if (text.startsWith('JSON ') || text.startsWith('{')) {
    let json: unknown;
    try {
      json = JSON.parse(text.startsWith('{') ? text : text.slice(5));
    } catch {
      return undefined;
    }
    const parsed = orcaJsonSchema.safeParse(json);
    if (!parsed.success) return undefined;
    const report = parsed.data;
    cpu = report.cpu_utilization ?? report.cpuUtilization ?? 0;
    application = report.application_utilization ?? report.applicationUtilization ?? 0;
    queue = (report.named_metrics ?? report.namedMetrics)?.[ORCA_QUEUE_METRIC] ?? 0;
  } else {
    return undefined;
  }
  if (cpu < 0 || application < 0 || queue < 0) return undefined;
  return { utilization: Math.min(1, application > 0 ? application : cpu), queue: Math.min(MAX_REPORTED_QUEUE, queue) };
}

/** A report in either syntax: ORCA (`TEXT …`, `JSON …`, a JSON object) or `x-dmsc-load`. */
export function parseLoadReport(value: string): LoadReport | undefined {
  const first = value.trimStart().charCodeAt(0);
  // 'T', 'J', 'B', '{': no x-dmsc-load value starts with an upper-case letter or a brace.
  return first === 0x54 || first === 0x4a || first === 0x42 || first === 0x7b ? parseOrcaReport(value) : parseLoadHeader(value);
}

export type Outcome = 'ok' | 'error' | 'timeout';

/**
 * One finished attempt. `latencyMs` is the time to response headers (or to the failure). The latency
 * estimate is a peak EWMA (Finagle/Linkerd): a slower sample replaces it at once, a faster one is
 * blended in with weight 1 - e^(-dt/decay). Failures never make an endpoint look faster: an error
 * answer or a timeout may only raise it, a connect failure leaves it alone (pass -1).
 */
export function recordOutcome(load: EndpointLoad, now: number, decayMs: number, latencyMs: number, outcome: Outcome): void {
  const keep = load.at === 0 ? 0 : Math.exp((load.at - now) / decayMs);
  if (latencyMs >= 0) {
    if (outcome === 'ok') {
      load.latencyMs = load.latencyMs < 0 || latencyMs > load.latencyMs ? latencyMs : load.latencyMs * keep + latencyMs * (1 - keep);
    } else if (latencyMs > load.latencyMs && (load.latencyMs >= 0 || outcome === 'timeout')) {
      load.latencyMs = latencyMs;
    }
  }
  load.attempts = load.attempts * keep + 1;
  load.failures = load.failures * keep + (outcome === 'ok' ? 0 : 1);
  load.at = now;
}

export function recordReport(load: EndpointLoad, now: number, report: LoadReport): void {
  load.utilization = report.utilization;
  load.queue = report.queue;
  load.reportedAt = now;
}

/** Forgets the agent's report (its source went quiet): the endpoint is judged by what the gateway observes. */
export function clearReport(load: EndpointLoad): void {
  load.utilization = 0;
  load.queue = 0;
  load.reportedAt = 0;
}

export interface ScoreSettings {
  decayMs: number;
  errorPenalty: number;
  reportedLoad: boolean;
}

/**
 * The cost of sending one more request to `endpoint`, given the latency estimate to use:
 *   latency x (pending + 1) x (1 + errorPenalty x errorRate) / (1 - utilisation)
 * pending is the larger of the gateway's in-flight count and the agent's reported queue; reported
 * values fade with the same time constant, so a report that is not renewed stops counting.
 * `keep` is e^(-(now - load.at)/decay), computed by the caller (it also shapes the latency).
 */
export function costWith(endpoint: EndpointState, latencyMs: number, keep: number, now: number, settings: ScoreSettings): number {
  const load = endpoint.load;
  let pending = endpoint.inflight;
  let divisor = 1;
  if (load.reportedAt !== 0 && settings.reportedLoad) {
    const fresh = Math.exp((load.reportedAt - now) / settings.decayMs);
    const queue = load.queue * fresh;
    if (queue > pending) pending = queue;
    const utilization = load.utilization * fresh;
    divisor = 1 - (utilization < MAX_UTILIZATION_IN_SCORE ? utilization : MAX_UTILIZATION_IN_SCORE);
  }
  let cost = latencyMs * (pending + 1);
  if (load.failures > 0) cost *= 1 + (settings.errorPenalty * load.failures * keep) / (load.attempts * keep + 1);
  return cost / divisor;
}

/** The cost of one endpoint on its own (for explanations and agent-level load): its latency estimate as last observed. */
export function endpointCost(endpoint: EndpointState, now: number, settings: ScoreSettings, fallbackLatencyMs = 1): number {
  const load = endpoint.load;
  const keep = load.at === 0 ? 0 : Math.exp((load.at - now) / settings.decayMs);
  return costWith(endpoint, load.latencyMs < 0 ? fallbackLatencyMs : load.latencyMs, keep, now, settings);
}

/**
 * Compares two candidates; true when `a` is the better (cheaper) one. An estimate not renewed
 * drifts toward the better of the two (not toward zero as in Finagle and tower), so an endpoint
 * left alone is probed again but never looks better than its peers and is not flooded on return;
 * an endpoint without answers yet borrows the other's estimate, so in-flight counts decide.
 */
export function prefer(a: EndpointState, b: EndpointState, now: number, settings: ScoreSettings): boolean {
  const la = a.load;
  const lb = b.load;
  let latencyA = la.latencyMs;
  let latencyB = lb.latencyMs;
  if (latencyA < 0) latencyA = latencyB < 0 ? 1 : latencyB;
  if (latencyB < 0) latencyB = latencyA;
  const keepA = la.at === 0 ? 0 : Math.exp((la.at - now) / settings.decayMs);
  const keepB = lb.at === 0 ? 0 : Math.exp((lb.at - now) / settings.decayMs);
  const floor = latencyA < latencyB ? latencyA : latencyB;
  latencyA = floor + (latencyA - floor) * keepA;
  latencyB = floor + (latencyB - floor) * keepB;
  return costWith(a, latencyA, keepA, now, settings) <= costWith(b, latencyB, keepB, now, settings);
}
