import type { DurableStore, TaskRouteRecord } from '../store/types.js';
import type { LearnedIds } from './a2a.js';

type RouteStore = Pick<DurableStore, 'putTaskRoute' | 'getTaskRoute' | 'pruneTaskRoutes' | 'deleteTaskRoutes'>;

const PRUNE_EVERY_MS = 3600_000;

/**
 * Which agent owns each A2A task and conversation context the gateway routed for a tenant's
 * endpoint, kept in the durable store (a follow-up after a gateway restart still reaches its
 * agent) for `ttlMs`; older entries are ignored and pruned hourly.
 */
export class TaskRoutes {
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly store: RouteStore,
    private readonly ttlMs: () => number,
    private readonly now: () => number = Date.now,
  ) {
    this.timer = setInterval(() => this.prune(), PRUNE_EVERY_MS);
    this.timer.unref();
  }

  remember(tenant: string, ids: LearnedIds, agent: string): void {
    const createdAt = new Date(this.now()).toISOString();
    if (ids.taskId) this.store.putTaskRoute({ tenant, kind: 'task', id: ids.taskId, agent, createdAt });
    if (ids.contextId) this.store.putTaskRoute({ tenant, kind: 'context', id: ids.contextId, agent, createdAt });
  }

  /** The agent that owns the task or context, if the gateway routed it within the TTL. */
  ownerOf(tenant: string, kind: TaskRouteRecord['kind'], id: string): string | undefined {
    const route = this.store.getTaskRoute(tenant, kind, id);
    if (!route || Date.parse(route.createdAt) < this.now() - this.ttlMs()) return undefined;
    return route.agent;
  }

  forget(tenant: string, agent?: string): void {
    this.store.deleteTaskRoutes(tenant, agent);
  }

  prune(): number {
    return this.store.pruneTaskRoutes(new Date(this.now() - this.ttlMs()).toISOString());
  }

  close(): void {
    clearInterval(this.timer);
  }
}
