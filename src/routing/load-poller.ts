import type { Logger } from 'pino';
import { Agent as UndiciAgent, request, type Dispatcher } from 'undici';
import type { AgentRuntime, EndpointState } from '../registry/types.js';
import type { AgentLoadPoll, BalancingConfig, LoadPollConfig } from './balancing-config.js';
import { LOAD_HEADER, ORCA_HEADER, clearReport, parseLoadReport, recordReport, type LoadReport } from './load.js';

/** A polled report stops counting once no poll of its endpoint has succeeded for this many intervals. */
const STALE_AFTER_INTERVALS = 3;

export type LoadPollFailure = 'status' | 'timeout' | 'too_large' | 'malformed' | 'error';

const counters = { ok: 0, failed: { status: 0, timeout: 0, too_large: 0, malformed: 0, error: 0 } as Record<LoadPollFailure, number> };

/** Polls that gave a report, and failed ones by reason (status: not 2xx; error: connect/reset/TLS). */
export function loadPollCounters(): { ok: number; failed: Record<LoadPollFailure, number> } {
  return { ok: counters.ok, failed: { ...counters.failed } };
}

class PollFailed extends Error {
  constructor(readonly reason: LoadPollFailure) {
    super(reason);
  }
}

export interface LoadPollerOptions {
  /** The `balancing` section, read live (reloads apply at each endpoint's next poll). */
  balancing: () => BalancingConfig;
  /** An agent's own `loadPoll` (agents[].loadPoll), if any. */
  agentOverride: (tenant: string, agent: string) => AgentLoadPoll | undefined;
  findAgent: (tenant: string, agent: string) => AgentRuntime | undefined;
  /** The client for an agent's https:// endpoints (mutual TLS with the gateway's certificate), as health checks use. */
  tlsDispatcher?: (tenant: string, agent: string) => Dispatcher | Promise<Dispatcher>;
  logger: Logger;
}

interface Poll {
  readonly tenant: string;
  readonly agent: string;
  readonly key: string;
  readonly endpoint: EndpointState;
  timer: NodeJS.Timeout | undefined;
  /** performance.now() of the last successful poll; 0: none yet. */
  okAt: number;
  /** The `reportedAt` this poll last wrote: a report from a response header since then is not ours to expire. */
  reportedAt: number;
}

type Effective = Pick<LoadPollConfig, 'path' | 'intervalMs' | 'timeoutMs' | 'maxBodyBytes'>;

/**
 * Polls `GET <endpoint URL><path>` on each endpoint of the agents it applies to, and feeds the answer
 * to the balancer as a load report, as if the agent had sent it in a response header. Each endpoint
 * has its own timer, first fired at a random point of the interval and then every interval ±10 %,
 * so thousands of endpoints are polled spread out, never in one burst; at most `maxConcurrent`
 * polls run at once, the others wait in line. Follows the registry: `sync` when an agent changes,
 * `syncAll` after a reload.
 */
export class LoadPoller {
  private readonly polls = new Map<EndpointState, Poll>();
  private readonly byAgent = new Map<string, Set<Poll>>();
  /** Due but over the concurrency limit, oldest first. */
  private readonly waiting = new Set<Poll>();
  private running = 0;
  private stopped = false;
  // One connection per origin is plenty for one small request an interval.
  private readonly dispatcher = new UndiciAgent({ connections: 1, pipelining: 1 });

  constructor(private readonly opts: LoadPollerOptions) {}

  /** Starts and stops polls to match the agent's endpoints and settings (it may be gone). */
  sync(tenant: string, agent: string): void {
    const runtime = this.stopped ? undefined : this.opts.findAgent(tenant, agent);
    const wanted = runtime && this.settingsFor(tenant, agent) ? runtime.endpoints : [];
    const key = `${tenant}/${agent}`;
    const current = this.byAgent.get(key);
    if (current) for (const poll of current) if (!wanted.includes(poll.endpoint)) this.drop(poll);
    for (const endpoint of wanted) if (!this.polls.has(endpoint)) this.add(tenant, agent, key, endpoint);
  }

  /** `sync` for every agent listed; polls of agents not listed stop. */
  syncAll(agents: Iterable<Pick<AgentRuntime, 'tenant' | 'name' | 'key'>>): void {
    const seen = new Set<string>();
    for (const { tenant, name, key } of agents) {
      seen.add(key);
      this.sync(tenant, name);
    }
    for (const [key, polls] of [...this.byAgent]) if (!seen.has(key)) for (const poll of [...polls]) this.drop(poll);
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    for (const poll of this.polls.values()) clearTimeout(poll.timer);
    this.polls.clear();
    this.byAgent.clear();
    this.waiting.clear();
    // Aborts the polls in flight on plain endpoints; those on https:// ones end within their timeout, unheeded.
    await this.dispatcher.destroy();
  }

  private settingsFor(tenant: string, agent: string): Effective | undefined {
    const balancing = this.opts.balancing();
    if (!balancing.reportedLoad) return undefined;
    const own = this.opts.agentOverride(tenant, agent);
    if (own === false || (own === undefined && !balancing.loadPoll.enabled)) return undefined;
    return own ? { ...balancing.loadPoll, ...own } : balancing.loadPoll;
  }

  private add(tenant: string, agent: string, key: string, endpoint: EndpointState): void {
    const poll: Poll = { tenant, agent, key, endpoint, timer: undefined, okAt: 0, reportedAt: 0 };
    this.polls.set(endpoint, poll);
    let polls = this.byAgent.get(key);
    if (!polls) this.byAgent.set(key, (polls = new Set()));
    polls.add(poll);
    const interval = this.settingsFor(tenant, agent)?.intervalMs ?? 0;
    this.schedule(poll, Math.random() * interval);
  }

  private drop(poll: Poll): void {
    clearTimeout(poll.timer);
    this.waiting.delete(poll);
    this.polls.delete(poll.endpoint);
    const polls = this.byAgent.get(poll.key);
    polls?.delete(poll);
    if (polls?.size === 0) this.byAgent.delete(poll.key);
    if (poll.reportedAt !== 0 && poll.endpoint.load.reportedAt === poll.reportedAt) clearReport(poll.endpoint.load);
  }

  private live(poll: Poll): boolean {
    return this.polls.get(poll.endpoint) === poll;
  }

  private schedule(poll: Poll, delayMs: number): void {
    if (!this.live(poll)) return;
    poll.timer = setTimeout(() => this.due(poll), delayMs);
    poll.timer.unref();
  }

  private due(poll: Poll): void {
    poll.timer = undefined;
    if (!this.live(poll)) return;
    const settings = this.settingsFor(poll.tenant, poll.agent);
    if (!settings) {
      this.drop(poll);
      return;
    }
    if (this.running >= this.opts.balancing().loadPoll.maxConcurrent) {
      this.waiting.add(poll);
      return;
    }
    this.running++;
    void this.run(poll, settings).finally(() => {
      this.running--;
      this.schedule(poll, settings.intervalMs * (0.9 + Math.random() * 0.2));
      this.next();
    });
  }

  private next(): void {
    const limit = this.opts.balancing().loadPoll.maxConcurrent;
    for (const poll of this.waiting) {
      if (this.running >= limit) return;
      this.waiting.delete(poll);
      this.due(poll);
    }
  }

  private async run(poll: Poll, settings: Effective): Promise<void> {
    let report: LoadReport | undefined;
    let failure: LoadPollFailure = 'error';
    try {
      report = await this.fetchReport(poll, settings);
    } catch (err) {
      if (this.stopped) return;
      failure = reasonOf(err);
    }
    if (report) counters.ok++;
    else counters.failed[failure]++;
    if (!this.live(poll)) return;
    const now = performance.now();
    const load = poll.endpoint.load;
    if (report) {
      recordReport(load, now, report);
      poll.okAt = now;
      poll.reportedAt = now;
      return;
    }
    this.opts.logger.debug({ endpoint: poll.endpoint.url, path: settings.path, reason: failure }, 'load poll failed');
    if (poll.reportedAt !== 0 && load.reportedAt === poll.reportedAt && now - poll.okAt > STALE_AFTER_INTERVALS * settings.intervalMs) {
      clearReport(load);
      poll.reportedAt = 0;
    }
  }

  /** One poll: the report in an `endpoint-load-metrics` or `x-dmsc-load` header, else in the body. */
  private async fetchReport(poll: Poll, settings: Effective): Promise<LoadReport> {
    const dispatcher = poll.endpoint.tls && this.opts.tlsDispatcher ? await this.opts.tlsDispatcher(poll.tenant, poll.agent) : this.dispatcher;
    const response = await request(poll.endpoint.url + settings.path, {
      method: 'GET',
      dispatcher,
      headers: { 'user-agent': 'dmsc-gateway-load-poll', accept: 'text/plain, application/json' },
      signal: AbortSignal.timeout(settings.timeoutMs),
    });
    const body = response.body;
    if (response.statusCode < 200 || response.statusCode > 299) {
      await body.dump({ limit: settings.maxBodyBytes }).catch(() => undefined);
      throw new PollFailed('status');
    }
    const header = response.headers[ORCA_HEADER] ?? response.headers[LOAD_HEADER];
    let text: string;
    if (header !== undefined) {
      await body.dump({ limit: settings.maxBodyBytes }).catch(() => undefined);
      if (typeof header !== 'string') throw new PollFailed('malformed');
      text = header;
    } else {
      text = await readLimited(body, settings.maxBodyBytes, response.headers['content-length']);
    }
    const report = parseLoadReport(text);
    if (!report) throw new PollFailed('malformed');
    return report;
  }
}

async function readLimited(body: Dispatcher.ResponseData['body'], maxBytes: number, declared: string | string[] | undefined): Promise<string> {
  // Destroying an unfinished body makes undici emit an abort error: ours to ignore, not an uncaught one.
  const tooLarge = () => {
    body.on('error', () => undefined).destroy();
    return new PollFailed('too_large');
  };
  if (typeof declared === 'string' && Number(declared) > maxBytes) throw tooLarge();
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body) {
    size += (chunk as Buffer).length;
    if (size > maxBytes) throw tooLarge();
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks, size).toString('utf8');
}

function reasonOf(err: unknown): LoadPollFailure {
  if (err instanceof PollFailed) return err.reason;
  const e = err as { name?: string; code?: string; cause?: { name?: string } };
  return e.name === 'TimeoutError' || e.cause?.name === 'TimeoutError' || e.code === 'UND_ERR_HEADERS_TIMEOUT' || e.code === 'UND_ERR_BODY_TIMEOUT'
    ? 'timeout'
    : 'error';
}
