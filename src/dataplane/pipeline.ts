import type { Logger } from 'pino';
import type { DataplaneTelemetry } from '../admin/telemetry.js';
import { RequestContext, type DownstreamRequest, type DownstreamResponse, type ListenerInfo } from './context.js';
import { GatewayError, errors } from './errors.js';
import { sendError } from './respond.js';

/**
 * One step of the request path (authenticate, authorize, limit, route, balance, forward, ...).
 * `run` returns nothing to continue at once, or a promise to continue when it settles; it throws a
 * GatewayError to refuse. A stage that answers the request itself (the forwarder, a cached Agent
 * Card) sets `ctx.status` via the response and returns `STOP`.
 */
export interface Stage {
  readonly name: string;
  run(ctx: RequestContext): void | typeof STOP | Promise<void | typeof STOP>;
  /** Called exactly once per request after the response has finished or failed (audit, metrics, limits). */
  finish?(ctx: RequestContext): void;
}

export const STOP = Symbol('stop');

export interface PipelineOptions {
  stages: Stage[];
  telemetry: DataplaneTelemetry;
  logger: Logger;
}

export class Pipeline {
  private readonly stages: Stage[];
  private readonly finishers: Stage[];
  private readonly telemetry: DataplaneTelemetry;
  private readonly logger: Logger;
  /** Requests between arrival and response close; graceful shutdown waits for this to reach 0. */
  active = 0;
  private idleWaiters: Array<() => void> = [];

  constructor(options: PipelineOptions) {
    this.stages = options.stages;
    this.finishers = options.stages.filter((stage) => stage.finish);
    this.telemetry = options.telemetry;
    this.logger = options.logger;
  }

  readonly handle = (req: DownstreamRequest, res: DownstreamResponse, listener: ListenerInfo): void => {
    const ctx = new RequestContext(req, res, listener);
    this.active++;
    res.once('close', () => this.complete(ctx));
    this.runFrom(0, ctx);
  };

  private runFrom(index: number, ctx: RequestContext): void {
    const stages = this.stages;
    for (let i = index; i < stages.length; i++) {
      let result;
      try {
        result = stages[i]!.run(ctx);
      } catch (err) {
        this.fail(ctx, err);
        return;
      }
      if (result === STOP) return;
      if (result !== undefined) {
        result.then(
          (value) => {
            if (value !== STOP) this.runFrom(i + 1, ctx);
          },
          (err: unknown) => this.fail(ctx, err),
        );
        return;
      }
    }
    // Every pipeline ends in a stage that answers; reaching here is a wiring bug.
    this.fail(ctx, new Error('pipeline ended without a response'));
  }

  private fail(ctx: RequestContext, err: unknown): void {
    if (!(err instanceof GatewayError)) {
      this.logger.error({ err, requestId: ctx.id }, 'stage failed');
    }
    sendError(ctx, err instanceof GatewayError ? err : errors.internal());
  }

  private complete(ctx: RequestContext): void {
    if (ctx.finished) return;
    ctx.finished = true;
    const res = ctx.res;
    if (!res.writableFinished) {
      // The caller went away (or the stream was reset) before we finished: stop the upstream exchange.
      ctx.abortUpstream?.(new Error('downstream closed'));
      if (ctx.status === 0 || res.headersSent) ctx.status = 499;
    } else if (ctx.status === 0) {
      ctx.status = res.statusCode;
    }
    for (const stage of this.finishers) {
      try {
        stage.finish!(ctx);
      } catch (err) {
        this.logger.error({ err, stage: stage.name, requestId: ctx.id }, 'finish hook failed');
      }
    }
    this.telemetry.requestFinished(
      ctx.listener.name,
      // Only resolved names: labels from unknown names a caller typed would let it exhaust the label cap.
      ctx.agent?.tenant,
      ctx.agent?.name,
      ctx.status,
      ctx.elapsedSeconds(),
    );
    if (--this.active === 0 && this.idleWaiters.length > 0) {
      const waiters = this.idleWaiters;
      this.idleWaiters = [];
      for (const wake of waiters) wake();
    }
  }

  /** Resolves when no request is in flight. */
  idle(): Promise<void> {
    if (this.active === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }
}
