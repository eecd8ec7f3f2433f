import { createHash } from 'node:crypto';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from 'pino';
import type { AuditLog } from '../audit/index.js';
import type { GatewayConfig } from '../config/schema.js';
import type { UpstreamTls } from '../dataplane/forwarder.js';
import { Agent as UndiciAgent, type Dispatcher } from 'undici';
import type { DurableStore, IdentityStore } from '../store/types.js';
import { ClientCertificates } from './authn.js';
import { Keyring } from './keyring.js';
import { checkMasterKey, masterKeyProvider } from './master-key.js';
import { generateKeyAndCsr } from './keygen.js';
import { createPki } from './pki.js';
import { spiffeIdFor } from './spiffe.js';
import type { Pki } from './types.js';

export const DEV_TENANT = 'default';
export const DEV_AGENT = 'dev-client';

/** Files in <stateDir>/tls for people and tools: the root to trust, and a development client identity. */
export interface TlsFiles {
  dir: string;
  caCertFile: string;
  serverCertFile: string;
  serverKeyFile: string;
  clientCertFile: string;
  clientKeyFile: string;
}

export interface ServingTls {
  cert: string;
  key: string;
  clientCa: string;
  certificateFor?: (serverName: string) => Promise<{ cert: string; key: string } | undefined>;
}

export interface IdentityRuntime {
  keyring: Keyring;
  pki: Pki;
  certificates: ClientCertificates;
  files: TlsFiles;
  /** The gateway's serving certificate and the client CA bundle, for the TLS listener. */
  servingTls(): Promise<ServingTls>;
  /**
   * Keeps the listener's certificate and trusted client CAs current: re-issues the serving certificate
   * at half-life and applies CA rotations. Old and new are trusted together, so no handshake fails.
   */
  keepCurrent(apply: (tls: { cert: string; key: string; ca: string }) => void): void;
  /** mTLS material for forwarding to an agent's https:// endpoints (see Forwarder's upstreamTls). */
  upstreamTls(agent: { tenant: string; name: string }): UpstreamTls | Promise<UpstreamTls>;
  /** An HTTP client with that material, for the registry's health checks and card fetches. */
  upstreamDispatcher(tenant: string, agent: string): Promise<Dispatcher>;
  /** Re-issues the serving certificate now (what the half-life timer does). */
  rotateServingCertificate(): Promise<void>;
  /** Stops timers, upstream clients and the CA's signing workers. */
  stop(): Promise<void>;
}


async function writeAtomic(file: string, contents: string, mode: number): Promise<void> {
  const temp = `${file}.${process.pid}.tmp`;
  await writeFile(temp, contents, { mode });
  await rename(temp, file);
}

/** True when the PEM certificate is missing or past half of its lifetime. */
async function needsRenewal(certFile: string): Promise<boolean> {
  try {
    const { X509Certificate } = await import('node:crypto');
    const cert = new X509Certificate(await readFile(certFile));
    const from = Date.parse(cert.validFrom);
    const to = Date.parse(cert.validTo);
    return Date.now() > from + (to - from) / 2;
  } catch {
    return true;
  }
}

export async function startIdentity(deps: {
  config: GatewayConfig;
  stateDir: string;
  env: NodeJS.ProcessEnv;
  store: IdentityStore & Pick<DurableStore, 'getMeta' | 'setMeta'>;
  audit: AuditLog;
  logger: Logger;
}): Promise<IdentityRuntime> {
  const { config, stateDir, logger, audit } = deps;
  const keyring = await Keyring.open(masterKeyProvider(config, stateDir, deps.env));
  await checkMasterKey(deps.store, keyring);
  const trustDomain = config.identity.trustDomain ?? config.domain;
  const pki = await createPki({ store: deps.store, keyring, trustDomain, config: config.identity, logger, audit: (event) => audit.record(event) });
  const certificates = new ClientCertificates(pki, audit, logger, Boolean(config.listeners.tls.mtls.caFile), config.identity.clockSkewMs);

  const dir = path.join(stateDir, 'tls');
  const files: TlsFiles = {
    dir,
    caCertFile: path.join(dir, 'ca.crt'),
    serverCertFile: path.join(dir, 'server.crt'),
    serverKeyFile: path.join(dir, 'server.key'),
    clientCertFile: path.join(dir, 'client.crt'),
    clientKeyFile: path.join(dir, 'client.key'),
  };
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await writeAtomic(files.caCertFile, pki.rootBundle(), 0o644);
  // A development client identity (default/dev-client) for trying mutual TLS with curl.
  if (await needsRenewal(files.clientCertFile)) {
    await pki.ensureTenant(DEV_TENANT);
    const { keyPem, csrPem } = await generateKeyAndCsr(DEV_AGENT);
    const issued = await pki.issueFromCsr(DEV_TENANT, DEV_AGENT, csrPem);
    await writeAtomic(files.clientKeyFile, keyPem, 0o600);
    await writeAtomic(files.clientCertFile, issued.chainPem, 0o644);
  }

  const tlsConfig = config.listeners.tls;
  const extraClientCa = tlsConfig.mtls.caFile ? await readFile(tlsConfig.mtls.caFile, 'utf8') : '';
  const clientCa = () => pki.clientCaBundle() + (extraClientCa ? '\n' + extraClientCa : '');
  const suffix = '.' + config.domain;
  let timer: NodeJS.Timeout | undefined;
  let serving: { cert: string; key: string; notAfter: string } | undefined;

  const issueServing = async () => {
    const issued = await pki.issueServerCertificate(['localhost', `*${suffix}`], ['127.0.0.1', '::1']);
    serving = { cert: issued.chainPem, key: issued.keyPem, notAfter: issued.notAfter };
    await writeAtomic(files.serverKeyFile, issued.keyPem, 0o600);
    await writeAtomic(files.serverCertFile, issued.chainPem, 0o644);
    return serving;
  };

  const servingTls = async (): Promise<ServingTls> => {
    if (tlsConfig.certFile && tlsConfig.keyFile) {
      return { cert: await readFile(tlsConfig.certFile, 'utf8'), key: await readFile(tlsConfig.keyFile, 'utf8'), clientCa: clientCa() };
    }
    const current = serving ?? (await issueServing());
    return {
      cert: current.cert,
      key: current.key,
      clientCa: clientCa(),
      // Host-form names (<agent>.<tenant>.<domain>) get a per-tenant wildcard certificate on first use.
      certificateFor: async (serverName) => {
        const name = serverName.toLowerCase();
        if (!name.endsWith(suffix)) return undefined;
        const labels = name.slice(0, -suffix.length).split('.');
        if (labels.length !== 2 || !/^[a-z0-9-]{1,63}$/.test(labels[1]!)) return undefined;
        const issued = await pki.issueServerCertificate([`*.${labels[1]}${suffix}`], []);
        return { cert: issued.chainPem, key: issued.keyPem };
      },
    };
  };

  // Per agent: the gateway's client certificate for the agent's tenant, and the agent's expected SPIFFE ID.
  const upstream = new Map<string, { value: UpstreamTls; refreshAt: number }>();
  const pendingUpstream = new Map<string, Promise<UpstreamTls>>();
  const loadUpstream = async (tenant: string, agent: string): Promise<UpstreamTls> => {
    const client = await pki.issueGatewayClientCertificate(tenant);
    const ca = pki.tenantBundle(tenant);
    const expected = spiffeIdFor(pki.trustDomain, tenant, agent);
    const value: UpstreamTls = {
      version: `${client.notAfter}/${createHash('sha256').update(ca).digest('hex').slice(0, 12)}`,
      cert: client.chainPem,
      key: client.keyPem,
      ca,
      // SPIFFE authentication: the agent proves its ID, not a DNS name.
      checkServerIdentity: (_host, cert) => {
        const uris = (cert.subjectaltname ?? '')
          .split(', ')
          .filter((entry) => entry.startsWith('URI:'))
          .map((entry) => entry.slice(4));
        if (uris.length === 1 && uris[0] === expected) return undefined;
        return new Error(`the agent's certificate does not prove ${expected} (it names ${uris.join(', ') || 'no SPIFFE ID'})`);
      },
    };
    const issued = Date.now();
    upstream.set(`${tenant}/${agent}`, { value, refreshAt: issued + (Date.parse(client.notAfter) - issued) / 2 });
    return value;
  };
  pki.onTrustChanged(() => upstream.clear());
  const clients = new Map<string, { version: string; client: UndiciAgent }>();

  const upstreamTls = ({ tenant, name }: { tenant: string; name: string }): UpstreamTls | Promise<UpstreamTls> => {
    const key = `${tenant}/${name}`;
    const cached = upstream.get(key);
    if (cached && Date.now() < cached.refreshAt) return cached.value;
    let pending = pendingUpstream.get(key);
    if (!pending) {
      pending = loadUpstream(tenant, name).finally(() => pendingUpstream.delete(key));
      pendingUpstream.set(key, pending);
    }
    return pending;
  };

  let apply: ((tls: { cert: string; key: string; ca: string }) => void) | undefined;
  const push = () => {
    if (serving && apply) apply({ cert: serving.cert, key: serving.key, ca: clientCa() });
  };

  return {
    keyring,
    pki,
    certificates,
    files,
    servingTls,
    upstreamTls,
    async upstreamDispatcher(tenant, agent) {
      const tls = await upstreamTls({ tenant, name: agent });
      const key = `${tenant}/${agent}`;
      const cached = clients.get(key);
      if (cached?.version === tls.version) return cached.client;
      void cached?.client.close();
      const client = new UndiciAgent({
        connections: 2,
        connect: { cert: tls.cert, key: tls.key, ca: tls.ca, checkServerIdentity: tls.checkServerIdentity },
      });
      clients.set(key, { version: tls.version, client });
      return client;
    },
    async rotateServingCertificate() {
      await issueServing();
      push();
    },
    keepCurrent(applyTls) {
      apply = applyTls;
      pki.onTrustChanged(() => {
        void writeAtomic(files.caCertFile, pki.rootBundle(), 0o644).catch(() => undefined);
        push();
      });
      if (tlsConfig.certFile) return; // the operator's certificate: rotated by the operator (restart)
      const schedule = () => {
        if (!serving) return;
        const remaining = Date.parse(serving.notAfter) - Date.now();
        timer = setTimeout(
          () => {
            issueServing().then(
              () => {
                logger.info({ notAfter: serving?.notAfter }, 'serving certificate rotated');
                push();
                schedule();
              },
              (err: unknown) => {
                logger.error({ err }, 'serving certificate rotation failed; retrying in a minute');
                timer = setTimeout(schedule, 60_000).unref();
              },
            );
          },
          Math.max(1000, Math.min(remaining / 2, 2 ** 31 - 1)),
        );
        timer.unref();
      };
      schedule();
    },
    async stop() {
      clearTimeout(timer);
      for (const { client } of clients.values()) void client.close();
      clients.clear();
      await pki.close();
    },
  };
}
