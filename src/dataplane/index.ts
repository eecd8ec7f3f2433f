import type { Logger } from 'pino';
import type { DataplaneTelemetry } from '../admin/telemetry.js';
import type { GatewayConfig } from '../config/schema.js';
import type { RegistryView } from '../registry/types.js';
import { Balancer } from '../routing/balancer.js';
import { Forwarder, type ForwarderOptions } from './forwarder.js';
import { startPlainListener, startTlsListener, type ListenerHandle } from './listeners.js';
import { Pipeline, type Stage } from './pipeline.js';
import type { TLSSocket } from 'node:tls';
import {
  accessLogStage,
  agentCardStage,
  authenticateStage,
  balanceStage,
  forwardStage,
  gatewayEndpointsStage,
  limitStage,
  routeStage,
  type GatewayEndpoints,
  type RequestAuthenticator,
} from './stages.js';

export { GatewayError, errors } from './errors.js';
export type { RequestContext, ListenerInfo } from './context.js';
export { STOP, type Stage } from './pipeline.js';
export { formatUrl, type ListenerHandle } from './listeners.js';
export type { AuthOutcome, GatewayEndpoints, RequestAuthenticator } from './stages.js';

export interface DataplaneOptions {
  /** Read on every request, so a reload takes effect at once. */
  config: () => GatewayConfig;
  registry: RegistryView;
  refreshCard: (tenant: string, agent: string) => Promise<{ cardError?: string }>;
  telemetry: DataplaneTelemetry;
  logger: Logger;
  /** Who is calling (client certificate or bearer token); see authenticateStage. */
  authenticator: RequestAuthenticator;
  /** mTLS to https:// endpoints (see Forwarder). */
  upstreamTls?: ForwarderOptions['upstreamTls'];
  /**
   * Stages of other parts, at their places in the pipeline: after the target agent is known
   * (authorize, rate limits), before the endpoint is chosen (masking), after it is (concurrency).
   */
  stages?: { beforeRoute?: Stage[]; afterRoute?: Stage[]; beforeBalance?: Stage[]; afterBalance?: Stage[] };
  /** The endpoint balancer (shared with capability routing, which weighs agents by its load); default: a new one. */
  balancer?: Balancer;
  /** Enrollment, trust bundles, CRLs, OAuth: answered by the gateway before authentication. */
  gatewayEndpoints?: GatewayEndpoints;
  tls?: {
    cert: string;
    key: string;
    /** CAs client certificates may chain to; with it every handshake asks for a certificate. */
    clientCa?: string;
    certificateFor?: (serverName: string) => Promise<{ cert: string; key: string } | undefined>;
    onSecureConnection?: (socket: TLSSocket) => boolean;
  };
}

export interface Dataplane {
  readonly listeners: ListenerHandle[];
  readonly pipeline: Pipeline;
  readonly forwarder: Forwarder;
  /** Requests currently inside the pipeline. */
  inflight(): number;
  /** Stops accepting, lets in-flight requests finish until the deadline, then cuts what is left. */
  shutdown(deadlineMs: number): Promise<{ drained: boolean }>;
}

export async function startDataplane(options: DataplaneOptions): Promise<Dataplane> {
  const { config, registry, telemetry, logger } = options;
  let draining = false;
  const balancer = options.balancer ?? new Balancer(() => config().balancing);
  const forwarder = new Forwarder({
    registry,
    telemetry,
    logger,
    limits: () => config().limits,
    timeouts: () => config().timeouts,
    balancer,
    retries: () => config().balancing.retries,
    isDraining: () => draining,
    ...(options.upstreamTls ? { upstreamTls: options.upstreamTls } : {}),
  });
  const limits = limitStage(() => config().limits);
  const allowAnonymous = (listener: string) => {
    const listeners = config().listeners;
    return listener === 'plain' ? listeners.plain.allowAnonymous : listener === 'tls' && listeners.tls.allowAnonymous;
  };
  const pipeline = new Pipeline({
    stages: [
      limits,
      ...(options.gatewayEndpoints ? [gatewayEndpointsStage(options.gatewayEndpoints, () => config().domain)] : []),
      authenticateStage(options.authenticator, allowAnonymous),
      ...(options.stages?.beforeRoute ?? []),
      routeStage(registry, () => config().domain),
      ...(options.stages?.afterRoute ?? []),
      agentCardStage(registry, options.refreshCard),
      ...(options.stages?.beforeBalance ?? []),
      balanceStage(balancer),
      ...(options.stages?.afterBalance ?? []),
      accessLogStage(logger, () => config().logging.access),
      forwardStage(forwarder),
    ],
    telemetry,
    logger,
  });
  telemetry.setInflightSource(() => pipeline.active);

  const current = config();
  const listeners: ListenerHandle[] = [];
  try {
    if (current.listeners.tls.enabled) {
      if (!options.tls) throw new Error('TLS listener enabled but no certificate given');
      const tlsConfig = current.listeners.tls;
      listeners.push(
        await startTlsListener({
          name: 'tls',
          host: tlsConfig.host,
          port: tlsConfig.port,
          cert: options.tls.cert,
          key: options.tls.key,
          clientCa: options.tls.clientCa,
          certificateFor: options.tls.certificateFor,
          onSecureConnection: options.tls.onSecureConnection,
          maxHeaderBytes: current.limits.maxHeaderBytes,
          handle: pipeline.handle,
          telemetry,
          logger,
        }),
      );
    }
    if (current.listeners.plain.enabled) {
      listeners.push(
        await startPlainListener({
          name: 'plain',
          host: current.listeners.plain.host,
          port: current.listeners.plain.port,
          maxHeaderBytes: current.limits.maxHeaderBytes,
          handle: pipeline.handle,
          telemetry,
          logger,
        }),
      );
    }
  } catch (err) {
    for (const listener of listeners) {
      listener.stopAccepting();
      listener.destroyAll();
    }
    throw err;
  }

  return {
    listeners,
    pipeline,
    forwarder,
    inflight: () => pipeline.active,
    async shutdown(deadlineMs) {
      draining = true;
      for (const listener of listeners) listener.stopAccepting();
      let timer: NodeJS.Timeout | undefined;
      const drained = await Promise.race([
        pipeline.idle().then(() => true),
        new Promise<boolean>((resolve) => {
          timer = setTimeout(() => resolve(false), deadlineMs);
        }),
      ]);
      clearTimeout(timer);
      for (const listener of listeners) listener.destroyAll();
      await forwarder.close();
      return { drained };
    },
  };
}
