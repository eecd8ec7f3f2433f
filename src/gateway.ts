import { randomBytes } from 'node:crypto';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { pino, type Logger } from 'pino';
import { GatewayMetrics, generateAdminToken, hashToken, startAdminServer } from './admin/index.js';
import { watchConfig, type GatewayConfig } from './config/index.js';
import { startDataplane, type Dataplane } from './dataplane/index.js';
import { AuditLog } from './audit/index.js';
import { createRequestAuthenticator, tlsSocketOf } from './identity/authn.js';
import { BootstrapTokens } from './identity/bootstrap.js';
import { createIdentityEndpoints } from './identity/endpoints.js';
import { createTokenService, JwtAuthenticator } from './identity/oauth.js';
import { startIdentity, type IdentityRuntime, type TlsFiles } from './identity/runtime.js';
import { Registry } from './registry/index.js';
import { Balancer, CapabilityRouter, capabilityRouteStage, LoadPoller, routingAdmin, TaskRoutes } from './routing/index.js';
import { spiffeIdFor } from './identity/spiffe.js';
import { promotePendingMasterKey, writePidFile } from './identity/master-key.js';
import { openStore, type DurableStore } from './store/index.js';
import {
  authorizeStage,
  candidatePolicyCheck,
  concurrencyStage,
  maskStage,
  offboardTenant,
  onboardTenant,
  rateLimitStage,
  Tenancy,
  TenantKeys,
  tenantSpecProblems,
  type TenancyStageOptions,
} from './tenancy/index.js';

export const ADMIN_TOKEN_META_KEY = 'admin_token_hash';
export const DEFAULT_TENANT = 'default';
const DEV_IDENTITY = 'tenant default, agent dev-client';

export interface StartOptions {
  config: GatewayConfig;
  stateDir: string;
  configFile?: string;
  /** Re-reads the config file (with the same flag/env overrides) for reloads; needed with configFile. */
  loadConfig?: () => Promise<GatewayConfig>;
  env: NodeJS.ProcessEnv;
  /** Defaults to a pino logger on stdout at the configured level. */
  logger?: Logger;
  /** Where the start-up banner goes (stdout by default); tests pass a no-op. */
  print?: (line: string) => void;
  /** Install SIGTERM/SIGINT (graceful shutdown) and SIGHUP (reload) handlers: the CLI does; tests don't. */
  handleSignals?: boolean;
}

export interface Gateway {
  readonly urls: { tls?: string; plain?: string; admin: string };
  readonly stateDir: string;
  readonly registry: Registry;
  readonly dataplane: Dataplane;
  /** Keyring, PKI, client-certificate tracking, serving certificate rotation. */
  readonly identity: IdentityRuntime;
  readonly audit: AuditLog;
  /** Policy, limits, masking and data keys, per tenant. */
  readonly tenancy: Tenancy;
  /** The admin token generated at first start (only then; it is stored hashed). */
  readonly generatedAdminToken?: string;
  /** The current effective config. */
  config(): GatewayConfig;
  /** Applies a new config the way a SIGHUP would. */
  reload(next: GatewayConfig): Promise<void>;
  close(): Promise<void>;
}

/** The accepted admin token hashes: DMSC_ADMIN_TOKEN's and the stored one (`dmsc admin reset-token` replaces it). */
async function currentAdminTokenHashes(store: DurableStore, env: NodeJS.ProcessEnv): Promise<string[]> {
  const hashes: string[] = [];
  if (env.DMSC_ADMIN_TOKEN) hashes.push(hashToken(env.DMSC_ADMIN_TOKEN));
  const stored = await store.getMeta(ADMIN_TOKEN_META_KEY);
  if (stored) hashes.push(stored);
  return hashes;
}

/** At first start with no DMSC_ADMIN_TOKEN, generates a token and stores its hash. */
async function adminTokenHashes(store: DurableStore, env: NodeJS.ProcessEnv): Promise<{ hashes: string[]; generated?: string }> {
  const hashes = await currentAdminTokenHashes(store, env);
  if (hashes.length > 0) return { hashes };
  const generated = generateAdminToken();
  await store.setMeta(ADMIN_TOKEN_META_KEY, hashToken(generated));
  hashes.push(hashToken(generated));
  return { hashes, generated };
}

function listenersChanged(a: GatewayConfig, b: GatewayConfig): boolean {
  return JSON.stringify(a.listeners) !== JSON.stringify(b.listeners) || a.limits.maxHeaderBytes !== b.limits.maxHeaderBytes;
}

export async function startGateway(options: StartOptions): Promise<Gateway> {
  let current = options.config;
  const stateDir = path.resolve(options.stateDir);
  const print = options.print ?? ((line: string) => process.stdout.write(line + '\n'));
  const logger = options.logger ?? pino({ level: current.logging.level, base: { service: 'dmsc-gateway' } });
  await mkdir(stateDir, { recursive: true, mode: 0o700 });

  const store = await openStore(stateDir);
  const cleanup: Array<() => Promise<void> | void> = [() => store.close()];
  try {
    const token = await adminTokenHashes(store, options.env);

    const audit = new AuditLog(store, logger, { durability: current.audit.durability });
    cleanup.push(() => audit.close());
    cleanup.push(await writePidFile(stateDir));
    await promotePendingMasterKey(stateDir, store);
    const identity = await startIdentity({ config: current, stateDir, env: options.env, store, audit, logger });
    cleanup.push(() => identity.stop());
    await audit.enableCheckpoints(identity.keyring, {
      everyRecords: current.audit.checkpointEveryRecords,
      everyMs: current.audit.checkpointIntervalMs,
    });

    const keys = new TenantKeys(store, identity.keyring);
    await keys.load();

    const registry = new Registry({
      store,
      logger,
      validateTenantSpec: (tenant, spec) => tenantSpecProblems(tenant, spec),
      healthDefaults: current.healthCheck,
      cards: current.cards,
      tlsDispatcher: (tenant, agent) => identity.upstreamDispatcher(tenant, agent),
    });
    // Every tenant gets its own intermediate CA before it is stored.
    // Every tenant gets its own data key too.
    registry.onTenantAdded(async (tenant) => {
      await identity.pki.ensureTenant(tenant);
      await keys.ensure(tenant);
    });
    const tenancy = new Tenancy({
      policyDefaults: current.policy.defaults,
      tenantDefaults: current.tenantDefaults,
      keys,
      logger,
      agentLimitsOf: (tenant) => registry.agentRateLimits(tenant),
      findAgent: (tenant, agent) => registry.findAgent(tenant, agent),
      spiffeIdOf: (tenant, agent) => spiffeIdFor(identity.pki.trustDomain, tenant, agent),
    });
    // Tenant-scoped: a change to one tenant's spec rebuilds that tenant's policy and limits only.
    registry.onTenantChanged((tenant, record) => tenancy.applyTenant(tenant, record));
    registry.onAgentChanged((tenant) => tenancy.refreshLimits(tenant));
    // Capability routing: the index follows the registry (agents, their cards' skills, tenants).
    const balancer = new Balancer(() => current.balancing);
    const loadPoller = new LoadPoller({
      balancing: () => current.balancing,
      agentOverride: (tenant, agent) => registry.findAgent(tenant, agent)?.loadPoll,
      findAgent: (tenant, agent) => registry.findAgent(tenant, agent),
      tlsDispatcher: (tenant, agent) => identity.upstreamDispatcher(tenant, agent),
      logger: logger.child({ component: 'load-poll' }),
    });
    cleanup.push(() => loadPoller.stop());
    registry.onAgentChanged((tenant, agent) => loadPoller.sync(tenant, agent));
    const syncLoadPolls = () => loadPoller.syncAll(registry.runtimes());
    const router = new CapabilityRouter({
      registry,
      config: () => current.routing,
      loadOf: (agent) => balancer.loadOf(agent) ?? Number.POSITIVE_INFINITY,
      // Everything a candidate's eligibility reads besides the request: both tenants' policies, each agent's runtime and health.
      eligibilityEpoch: (tenant, callerTenant) => tenancy.policy.versionFor(tenant, callerTenant),
      agentChanges: registry.agentChanges,
      logger: logger.child({ component: 'routing' }),
      env: options.env,
    });
    const taskRoutes = new TaskRoutes(store, () => current.routing.taskRoutes.ttlMs);
    cleanup.push(() => taskRoutes.close());
    registry.onAgentChanged((tenant, agent) => {
      router.syncAgent(tenant, agent);
      if (!registry.findAgent(tenant, agent)) taskRoutes.forget(tenant, agent);
    });
    registry.onTenantChanged((tenant, record) => {
      if (record) return;
      router.removeTenant(tenant);
      taskRoutes.forget(tenant);
    });
    await registry.load();
    for (const tenant of registry.listTenants()) {
      await identity.pki.ensureTenant(tenant.name);
      await keys.ensure(tenant.name);
      tenancy.applyTenant(tenant.name, tenant);
    }
    await registry.applyConfig(current.tenants);
    if (registry.listTenants().length === 0 && !(await store.getMeta('default_tenant_created'))) {
      await registry.createTenant(DEFAULT_TENANT);
      await store.setMeta('default_tenant_created', new Date().toISOString());
    }
    cleanup.push(() => registry.stop());
    router.syncAll();
    syncLoadPolls();

    const metrics = new GatewayMetrics();
    metrics.setEndpointHealthSource(() => registry.endpointHealth());

    // The built-in authorization server's issuer is the gateway's own URL (known once it listens).
    let publicBaseUrl = '';
    const tokenService = createTokenService({
      store,
      keyring: identity.keyring,
      trustDomain: identity.pki.trustDomain,
      issuerBaseUrl: (tenant) => `${publicBaseUrl}/tenants/${tenant}`,
      config: current,
      audit: ({ time: _time, ...event }) => audit.record(event),
      tenantExists: (tenant) => registry.hasTenant(tenant),
    });
    const bearer = new JwtAuthenticator({
      trustDomain: identity.pki.trustDomain,
      clockSkewMs: current.identity.clockSkewMs,
      tenants: current.tenants,
      builtIn: tokenService.builtInIssuers,
    });
    const bootstrap = new BootstrapTokens(store, audit);
    const identityEndpoints = createIdentityEndpoints({ pki: identity.pki, bootstrap, tokens: tokenService, audit, logger });
    const serving = current.listeners.tls.enabled ? await identity.servingTls() : undefined;
    const tenancyStages: TenancyStageOptions = {
      tenancy,
      registry,
      audit,
      auditAllowed: () => current.audit.decisions === 'all',
    };
    const dataplane = await startDataplane({
      config: () => current,
      registry,
      refreshCard: (tenant, agent) => registry.refreshCard(tenant, agent),
      telemetry: metrics,
      logger,
      authenticator: createRequestAuthenticator({
        certificates: identity.certificates,
        bearer,
        audit,
        requireCertificate: (listener) => listener === 'tls' && current.listeners.tls.mtls.enabled,
      }),
      upstreamTls: (agent) => identity.upstreamTls(agent),
      balancer,
      stages: {
        beforeRoute: [
          capabilityRouteStage({
            router,
            registry,
            taskRoutes,
            config: () => current.routing,
            policyFor: candidatePolicyCheck(tenancyStages),
            pickEndpoint: (agent, tried) => balancer.pick(agent, tried),
            logger,
          }),
        ],
        afterRoute: [authorizeStage(tenancyStages), rateLimitStage(tenancyStages)],
        beforeBalance: [maskStage(tenancyStages)],
        afterBalance: [concurrencyStage(tenancyStages)],
      },
      gatewayEndpoints: {
        handle(ctx) {
          const socket = tlsSocketOf(ctx.req);
          const peer = socket ? identity.certificates.forSocket(socket) : undefined;
          return identityEndpoints.handle(ctx.req, ctx.res, {
            ...(peer?.result?.ok ? { identity: peer.result.identity } : {}),
            ...(peer?.certDer ? { certDer: peer.certDer } : {}),
            requestId: ctx.id,
          });
        },
      },
      tls: serving && { ...serving, onSecureConnection: (socket) => identity.certificates.accept(socket) },
    });
    const tlsListener = dataplane.listeners.find((listener) => listener.info.name === 'tls');
    if (tlsListener) identity.keepCurrent((tls) => tlsListener.setSecureContext?.(tls));
    publicBaseUrl = (tlsListener?.url ?? dataplane.listeners[0]?.url ?? '').replace(/\/\/(0\.0\.0\.0|\[::\]):/, '//localhost:');
    const drainDataplane = () => dataplane.shutdown(current.timeouts.shutdownDrainMs).then(() => undefined);
    cleanup.push(drainDataplane);
    registry.onEndpointsChanged(() => dataplane.forwarder.prune(registry.liveOrigins()));

    const lifecycle = {
      registry,
      pki: identity.pki,
      keys,
      tenancy,
      audit,
      adminTokens: { list: (tenant: string) => store.listAdminTokens(tenant), remove: (id: string) => store.deleteAdminToken(id) },
    };
    let ready = true;
    const urlOf = (name: string) => dataplane.listeners.find((l) => l.info.name === name)?.url;
    const admin = await startAdminServer({
      host: current.listeners.admin.host,
      port: current.listeners.admin.port,
      registry,
      metrics,
      logger,
      identity: { pki: identity.pki, bootstrap, tokens: tokenService, audit, store },
      audit: (event) => audit.record(event),
      tenancy: {
        onboard: (name, spec, actor) => onboardTenant(lifecycle, name, spec, actor),
        offboard: (name, actor) => offboardTenant(lifecycle, name, actor),
        explain: (from, to, facts) => tenancy.explain(from, to, facts),
        spec: (tenant) => tenancy.spec(tenant),
        defaults: () => current.policy.defaults,
        async createAdminToken(tenant, description) {
          const token = generateAdminToken();
          const record = { id: `tok-${randomBytes(6).toString('hex')}`, tokenHash: hashToken(token), tenant, ...(description ? { description } : {}), createdAt: new Date().toISOString() };
          await store.putAdminToken(record);
          audit.record({ tenant, actor: 'admin-token', action: 'admin-token.create', target: record.id, decision: 'info' });
          return { id: record.id, token, tenant, ...(description ? { description } : {}), createdAt: record.createdAt };
        },
        listAdminTokens: async (tenant) => (await store.listAdminTokens(tenant)).map(({ tokenHash: _hash, ...view }) => view),
        deleteAdminToken: (id) => store.deleteAdminToken(id),
      },
      routing: routingAdmin({
        router,
        tenants: () => registry.listTenants().map((tenant) => tenant.name),
        findAgent: (tenant, agent) => registry.findAgent(tenant, agent),
        reachableBy: (viewer, agent) =>
          tenancy.policy.decide({ tenant: viewer, labels: [] }, tenancy.target(agent), { method: 'POST', path: agent.a2aInterfaces[0]?.path ?? '/', dataTags: [] }).allow,
        policyAs: (from, agent, path) => {
          const decision = tenancy.explain(from, agent.key, { method: 'POST', path }).decision;
          return decision.allow ? undefined : `policy: ${decision.code}${decision.rule ? ` (${decision.rule})` : ''}`;
        },
      }),
      scopedToken: async (hash) => {
        const found = await store.findAdminToken(hash);
        // A token outlives nothing: once its tenant is offboarded it stops working.
        return found && registry.hasTenant(found.tenant) ? { id: found.id, tenant: found.tenant } : undefined;
      },
      // Read per admin call (a sub-millisecond SQLite read), so a reset token works without a restart.
      adminTokenHashes: () => currentAdminTokenHashes(store, options.env),
      isReady: () => ready,
      status: () => ({
        listeners: Object.fromEntries(dataplane.listeners.map((l) => [l.info.name, l.url])),
        inflight: dataplane.inflight(),
        tenants: registry.listTenants().length,
        stateDir,
      }),
    });
    // Steps run in reverse: the admin listener closes after the drain, so /readyz answers 503 meanwhile.
    cleanup.splice(cleanup.indexOf(drainDataplane), 0, () => admin.close());
    registry.start();

    const reload = async (next: GatewayConfig) => {
      if (listenersChanged(current, next)) {
        logger.warn('listener addresses, ports or certificates changed: they take effect on restart');
      }
      current = { ...next, listeners: current.listeners };
      logger.level = next.logging.level;
      registry.updateDefaults(next.healthCheck, next.cards);
      bearer.update(next.tenants, next.identity.clockSkewMs);
      tenancy.setDefaults(next.policy.defaults);
      tenancy.setTenantDefaults(next.tenantDefaults);
      if (router.reconfigure()) logger.info('routing synonyms changed');
      tokenService.update(next);
      await registry.applyConfig(next.tenants);
      syncLoadPolls();
      logger.info({ tenants: next.tenants.length }, 'configuration reloaded');
    };

    let watcher: ReturnType<typeof watchConfig> | undefined;
    if (options.configFile && options.loadConfig) {
      watcher = watchConfig(
        options.configFile,
        options.loadConfig,
        (next) => reload(next),
        (err) => logger.error({ err: err.message }, 'configuration reload refused; keeping the running config'),
      );
      cleanup.push(() => watcher!.close());
    }

    let closing: Promise<void> | undefined;
    const close = () => {
      closing ??= (async () => {
        ready = false;
        logger.info('shutting down: draining in-flight requests');
        for (const step of cleanup.reverse()) {
          try {
            await step();
          } catch (err) {
            logger.error({ err }, 'shutdown step failed');
          }
        }
      })();
      return closing;
    };

    if (options.handleSignals) {
      const onSignal = (signal: NodeJS.Signals) => {
        logger.info({ signal }, 'signal received');
        void close().then(() => process.exit(0));
      };
      process.once('SIGTERM', onSignal);
      process.once('SIGINT', onSignal);
      process.on('SIGHUP', () => {
        logger.info({ signal: 'SIGHUP' }, 'signal received: reloading configuration');
        if (watcher) watcher.trigger();
        else logger.warn('no config file to reload (start with --config FILE)');
      });
    }

    const urls = { tls: urlOf('tls'), plain: urlOf('plain'), admin: admin.url };
    printBanner(print, { urls, stateDir, tlsFiles: identity.files, trustDomain: identity.pki.trustDomain, generatedToken: token.generated, fromEnv: Boolean(options.env.DMSC_ADMIN_TOKEN), config: current });

    return {
      urls,
      stateDir,
      registry,
      dataplane,
      identity,
      audit,
      tenancy,
      generatedAdminToken: token.generated,
      config: () => current,
      reload,
      close,
    };
  } catch (err) {
    for (const step of cleanup.reverse()) await Promise.resolve(step()).catch(() => undefined);
    throw err;
  }
}

function printBanner(
  print: (line: string) => void,
  info: {
    urls: Gateway['urls'];
    stateDir: string;
    tlsFiles: TlsFiles;
    trustDomain: string;
    generatedToken?: string;
    fromEnv: boolean;
    config: GatewayConfig;
  },
): void {
  const { urls } = info;
  // A wildcard bind address is not something to type into a client: show localhost and say so.
  const reachable = (url: string) => url.replace(/\/\/(0\.0\.0\.0|\[::\]):/, '//localhost:');
  const wildcard = (url: string) => (reachable(url) === url ? '' : '  (all interfaces)');
  print('DMSC gateway is running');
  if (urls.tls) {
    const mtls = info.config.listeners.tls.mtls.enabled ? ', mTLS' : '';
    print(`  agent ingress (HTTPS, TLS 1.3, h2+http/1.1${mtls}): ${reachable(urls.tls)}${wildcard(urls.tls)}`);
  }
  if (urls.plain) print(`  local ingress (HTTP):  ${reachable(urls.plain)}${wildcard(urls.plain)}`);
  print(`  admin API:             ${urls.admin}/admin/v1   (OpenAPI: ${urls.admin}/admin/v1/openapi.json)`);
  print(`  metrics / health:      ${urls.admin}/metrics  ${urls.admin}/healthz  ${urls.admin}/readyz`);
  print(`  state:                 ${info.stateDir}`);
  print(`  trust (root CA):       ${info.tlsFiles.caCertFile}   (trust domain ${info.trustDomain})`);
  print(`  dev client cert/key:   ${info.tlsFiles.clientCertFile} ${info.tlsFiles.clientKeyFile}   (${DEV_IDENTITY})`);
  print(`  address an agent as:   ${urls.plain ?? urls.tls}/agents/<tenant>/<agent>/...  or  <agent>.<tenant>.${info.config.domain}`);
  print(`  or let it choose:      ${urls.plain ?? urls.tls}/tenants/<tenant>/a2a (A2A; card: /tenants/<tenant>/.well-known/agent-card.json)  or  /capabilities/<tenant>/<tag,tag>/...`);
  if (info.generatedToken) {
    print('');
    print(`  Admin token (shown once, stored hashed): ${info.generatedToken}`);
    print('  Use it as: curl -H "authorization: Bearer <token>" ' + `${urls.admin}/admin/v1/tenants`);
  } else if (info.fromEnv) {
    print('  admin credential:      the token in DMSC_ADMIN_TOKEN');
  } else {
    print('  admin credential:      the token printed at first start; `npx dmsc admin reset-token` makes a new one');
  }
}
