import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { configSchema, type GatewayConfig } from '../../src/config/schema.js';
import { startGateway, type Gateway } from '../../src/gateway.js';

export const TEST_ADMIN_TOKEN = 'dmsc_adm_test-token-0123456789';

export interface TestGateway {
  gateway: Gateway;
  /** http://127.0.0.1:<port> of the plaintext listener */
  plainUrl: string;
  /** https://127.0.0.1:<port> of the TLS listener */
  tlsUrl: string;
  adminUrl: string;
  stateDir: string;
  /** PEM of the root CA that signed the gateway's serving certificate. */
  caCert: string;
  /** The development client identity (tenant default, agent dev-client): chain and key PEM, and their files. */
  clientCert: string;
  clientKey: string;
  clientCertFile: string;
  clientKeyFile: string;
  admin(method: string, pathname: string, body?: unknown): Promise<{ status: number; body: any }>;
  /** Stops the gateway; keeps the state dir unless `removeState` (default true). */
  close(removeState?: boolean): Promise<void>;
}

type Raw = Record<string, unknown>;

/**
 * Starts a real gateway in-process on ephemeral loopback ports with its state in a temp dir.
 * `raw` is config as it would appear in YAML (validated by the real schema).
 */
export async function startTestGateway(
  raw: Raw = {},
  opts: { stateDir?: string; logLevel?: string; devClientMayCall?: boolean } = {},
): Promise<TestGateway> {
  if (opts.devClientMayCall) raw = withDevClientPolicy(raw);
  const stateDir = opts.stateDir ?? (await mkdtemp(path.join(os.tmpdir(), 'dmsc-test-')));
  const listeners = (raw.listeners ?? {}) as Raw;
  const config: GatewayConfig = configSchema.parse({
    ...raw,
    listeners: {
      ...listeners,
      tls: { host: '127.0.0.1', port: 0, ...(listeners.tls as Raw) },
      // Most tests are about forwarding, not authentication: local plaintext traffic is anonymous here.
      plain: { host: '127.0.0.1', port: 0, allowAnonymous: true, ...(listeners.plain as Raw) },
      admin: { host: '127.0.0.1', port: 0, ...(listeners.admin as Raw) },
    },
    logging: { level: opts.logLevel ?? 'silent', ...(raw.logging as Raw) },
    // Anonymous plaintext callers (above) pass policy too, unless a test says otherwise.
    policy: { ...(raw.policy as Raw), defaults: { anonymous: 'allow', ...((raw.policy as Raw | undefined)?.defaults as Raw) } },
  });
  const gateway = await startGateway({
    config,
    stateDir,
    env: { DMSC_ADMIN_TOKEN: TEST_ADMIN_TOKEN },
    print: () => {},
    logger: pino({ level: opts.logLevel ?? 'silent' }),
  });
  const { readFile } = await import('node:fs/promises');
  const caCert = await readFile(path.join(stateDir, 'tls', 'ca.crt'), 'utf8').catch(() => '');
  const clientCertFile = path.join(stateDir, 'tls', 'client.crt');
  const clientKeyFile = path.join(stateDir, 'tls', 'client.key');
  const clientCert = await readFile(clientCertFile, 'utf8');
  const clientKey = await readFile(clientKeyFile, 'utf8');
  const adminUrl = gateway.urls.admin;
  return {
    gateway,
    plainUrl: gateway.urls.plain ?? '',
    tlsUrl: gateway.urls.tls ?? '',
    adminUrl,
    stateDir,
    caCert,
    clientCert,
    clientKey,
    clientCertFile,
    clientKeyFile,
    async admin(method, pathname, body) {
      const response = await fetch(adminUrl + pathname, {
        method,
        headers: {
          authorization: `Bearer ${TEST_ADMIN_TOKEN}`,
          ...(body === undefined ? {} : { 'content-type': 'application/json' }),
        },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      const text = await response.text();
      let parsed: unknown = text;
      try {
        parsed = text ? JSON.parse(text) : undefined;
      } catch {
        // not JSON: keep the text
      }
      return { status: response.status, body: parsed };
    },
    async close(removeState = true) {
      await gateway.close();
      if (removeState && !opts.stateDir) await rm(stateDir, { recursive: true, force: true });
    },
  };
}

/**
 * Policy that lets the development client (default/dev-client) call every configured tenant's
 * agents: an outbound rule in tenant `default` and an inbound rule in each tenant (both sides consent).
 * For tests about forwarding over mTLS, not about authorization.
 */
function withDevClientPolicy(raw: Raw): Raw {
  const tenants = ((raw.tenants ?? []) as Raw[]).map((tenant) => {
    if (tenant.name === 'default') return tenant;
    const policy = (tenant.policy ?? {}) as Raw;
    const rules = [...((policy.rules ?? []) as Raw[]), { name: 'test-dev-client-in', from: { tenant: 'default', agents: ['dev-client'] } }];
    return { ...tenant, policy: { ...policy, rules } };
  });
  const devRule = { name: 'test-dev-client-out', from: { agents: ['dev-client'] }, to: { tenant: '*' } };
  const own = tenants.find((tenant) => tenant.name === 'default');
  if (own) {
    const policy = (own.policy ?? {}) as Raw;
    own.policy = { ...policy, rules: [...((policy.rules ?? []) as Raw[]), devRule] };
  } else {
    tenants.push({ name: 'default', policy: { rules: [devRule] } });
  }
  return { ...raw, tenants };
}

/** Polls `check` until it returns true or the deadline passes (for state with no event to await). */
export async function eventually(check: () => boolean | Promise<boolean>, timeoutMs = 5000, everyMs = 20): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, everyMs));
  }
}

/**
 * Resolves once the capability index holds `count` skills of `tenant` (agents' cards are fetched
 * after they register, by the registry on its own: there is no event to await from outside).
 */
export async function waitForSkills(gw: TestGateway, tenant: string, count: number): Promise<void> {
  for (;;) {
    const res = await gw.admin('GET', `/admin/v1/capabilities?tenant=${tenant}&limit=200`);
    if (res.status === 200 && res.body.skills.length >= count) return;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
