import { readFile } from 'node:fs/promises';
import { Agent, fetch as undiciFetch } from 'undici';
import { generateKeyAndCsr } from '../identity/keygen.js';
import { API_OPTIONS, apiFor, show } from './admin-api.js';
import { certificateInfo, mergeBundles, readCredentials, writeCredentials } from './cert-files.js';
import { stringValue, type Command, type CommandContext, type OptionSpec } from './command.js';
import { CliError, UsageError } from './io.js';
import { formatTable } from './table.js';

const PEM_CHAIN = 'application/pem-certificate-chain';

function required(context: CommandContext, name: string, command: string): string {
  const value = stringValue(context.values, name);
  if (!value) throw new UsageError(`--${name} is required`, command);
  return value;
}

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** `90s`, `10m`, `24h`, `7d`, `1500ms`; a bare number is seconds. */
export function parseDuration(text: string): number {
  const found = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?$/.exec(text.trim());
  if (!found) throw new Error(`"${text}" is not a duration (e.g. 90s, 10m, 24h)`);
  return Math.round(Number(found[1]) * UNITS[found[2] ?? 's']!);
}

// ---- the agent side: enrollment and renewal against the agent listener ----------------------------

export interface GatewayTls {
  /** PEM of CAs to verify the gateway's serving certificate with (default: the system's). */
  ca?: string;
  /** Client certificate chain and key (mTLS), for /renew. */
  cert?: string;
  key?: string;
  /** Skip verification of the gateway's certificate (first contact only). */
  insecure?: boolean;
}

function describeFetchError(err: unknown, url: string): CliError {
  const cause = (err as { cause?: { code?: string; message?: string } }).cause;
  const reason = cause?.code ?? cause?.message ?? (err as Error).message;
  const hint = /CERT|SELF_SIGNED|UNABLE_TO_VERIFY/.test(String(cause?.code))
    ? ' (pass the gateway CA with --ca FILE, or --insecure-first-use on first contact)'
    : '';
  return new CliError(`cannot reach ${url} (${reason})${hint}`);
}

async function gatewayRequest(
  gateway: string,
  pathname: string,
  tls: GatewayTls,
  init: { method: string; headers?: Record<string, string>; body?: string },
): Promise<{ status: number; headers: Headers; text: string }> {
  const url = gateway.replace(/\/+$/, '') + pathname;
  const dispatcher = new Agent({
    connect: {
      ...(tls.ca ? { ca: tls.ca } : {}),
      ...(tls.cert ? { cert: tls.cert } : {}),
      ...(tls.key ? { key: tls.key } : {}),
      rejectUnauthorized: !tls.insecure,
    },
  });
  try {
    const response = await undiciFetch(url, { ...init, dispatcher });
    return { status: response.status, headers: response.headers as unknown as Headers, text: await response.text() };
  } catch (err) {
    throw describeFetchError(err, url);
  } finally {
    await dispatcher.close().catch(() => {});
  }
}

/** A gateway error answer as a sentence. */
function gatewayProblem(status: number, text: string, what: string): string {
  let message = text.trim().slice(0, 300);
  try {
    const parsed = JSON.parse(text) as { error?: { code?: string; message?: string } };
    if (parsed.error?.message) message = `${parsed.error.message} (${parsed.error.code ?? status})`;
  } catch {
    // not JSON
  }
  return `${what} failed: HTTP ${status}${message ? `: ${message}` : ''}`;
}

export interface EnrollResult {
  dir: string;
  serial: string;
  spiffeId?: string;
  notAfter: Date;
}

async function fetchTrustBundle(gateway: string, tls: GatewayTls): Promise<string> {
  const answer = await gatewayRequest(gateway, '/trust-bundle', tls, { method: 'GET' });
  if (answer.status !== 200) throw new CliError(gatewayProblem(answer.status, answer.text, 'fetching /trust-bundle'));
  return answer.text;
}

/** `dmsc cert enroll`: key made here, CSR to POST /enroll with the bootstrap token, files swapped in. */
export async function enroll(options: { token: string; gateway: string; out: string; ca?: string; insecure?: boolean }): Promise<EnrollResult> {
  const tls: GatewayTls = { ...(options.ca ? { ca: options.ca } : {}), ...(options.insecure ? { insecure: true } : {}) };
  const { keyPem, csrPem } = await generateKeyAndCsr('dmsc-agent');
  const answer = await gatewayRequest(options.gateway, '/enroll', tls, {
    method: 'POST',
    headers: { authorization: `Bearer ${options.token}`, 'content-type': 'application/pkcs10', accept: PEM_CHAIN },
    body: csrPem,
  });
  if (answer.status !== 201) throw new CliError(gatewayProblem(answer.status, answer.text, 'enrollment'));
  const bundle = await fetchTrustBundle(options.gateway, tls);
  // ca.pem must also verify the gateway itself on renewal: keep the CA given with --ca next to the roots.
  const caPem = mergeBundles(bundle, options.ca ?? '');
  await writeCredentials(options.out, { keyPem, certPem: answer.text, caPem });
  const info = certificateInfo(answer.text);
  return { dir: options.out, serial: info.serial, notAfter: info.notAfter, ...(info.spiffeId ? { spiffeId: info.spiffeId } : {}) };
}

export class RenewalRefused extends CliError {}

/** `dmsc cert renew`: mTLS with the current pair, a new key + CSR to POST /renew, files swapped in. */
export async function renew(options: { dir: string; gateway: string; ca?: string }): Promise<EnrollResult> {
  const current = await readCredentials(options.dir);
  const tls: GatewayTls = { ca: options.ca ?? current.caPem, cert: current.certPem, key: current.keyPem };
  const { keyPem, csrPem } = await generateKeyAndCsr('dmsc-agent');
  const answer = await gatewayRequest(options.gateway, '/renew', tls, {
    method: 'POST',
    headers: { 'content-type': 'application/pkcs10', accept: PEM_CHAIN },
    body: csrPem,
  });
  if (answer.status !== 201) {
    const problem = gatewayProblem(answer.status, answer.text, 'renewal');
    // 4xx: the gateway refuses this certificate (revoked, expired, unknown CA): retrying cannot help.
    throw answer.status >= 400 && answer.status < 500 && answer.status !== 408 && answer.status !== 429 ? new RenewalRefused(problem) : new CliError(problem);
  }
  let caPem = current.caPem;
  try {
    caPem = mergeBundles(await fetchTrustBundle(options.gateway, tls), current.caPem);
  } catch {
    // keep the bundle we have; the certificate is what matters
  }
  await writeCredentials(options.dir, { keyPem, certPem: answer.text, caPem });
  const info = certificateInfo(answer.text);
  return { dir: options.dir, serial: info.serial, notAfter: info.notAfter, ...(info.spiffeId ? { spiffeId: info.spiffeId } : {}) };
}

/** When the current certificate reaches half of its lifetime. */
export function halfLife(certPem: string): Date {
  const { notBefore, notAfter } = certificateInfo(certPem);
  return new Date(notBefore.getTime() + (notAfter.getTime() - notBefore.getTime()) / 2);
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const timer = setTimeout(done, Math.min(ms, 2 ** 31 - 1));
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}

/**
 * `dmsc cert renew --watch`: renews at half-life, forever (until `signal`). Transient failures are
 * retried with backoff while the certificate is still valid; a refusal (4xx) or an expired
 * certificate is unrecoverable and rejects.
 */
export async function watchRenewals(
  options: { dir: string; gateway: string; ca?: string; log: (line: string) => void; now?: () => number },
  signal?: AbortSignal,
): Promise<void> {
  const now = options.now ?? Date.now;
  let backoffMs = 1000;
  while (!signal?.aborted) {
    const current = await readCredentials(options.dir);
    const due = halfLife(current.certPem).getTime();
    if (due > now()) {
      options.log(`next renewal at ${new Date(due).toISOString()} (half-life of ${certificateInfo(current.certPem).serial})`);
      await sleep(due - now(), signal);
      if (signal?.aborted) return;
    }
    try {
      const result = await renew(options);
      options.log(`renewed: serial ${result.serial}, valid until ${result.notAfter.toISOString()}`);
      backoffMs = 1000;
    } catch (err) {
      if (err instanceof RenewalRefused) throw err;
      const expiry = certificateInfo(current.certPem).notAfter.getTime();
      if (expiry <= now()) throw new CliError(`renewal failed and the certificate expired at ${new Date(expiry).toISOString()}: ${(err as Error).message}`);
      const wait = Math.min(backoffMs, Math.max(1000, (expiry - now()) / 4));
      options.log(`renewal failed (${(err as Error).message}); retrying in ${Math.round(wait / 1000)}s`);
      await sleep(wait, signal);
      backoffMs = Math.min(backoffMs * 2, 5 * 60_000);
    }
  }
}

async function readCaOption(context: CommandContext): Promise<string | undefined> {
  const file = stringValue(context.values, 'ca');
  if (!file) return undefined;
  try {
    return await readFile(file, 'utf8');
  } catch (err) {
    throw new CliError(`cannot read --ca ${file}: ${(err as Error).message}`);
  }
}

function gatewayUrl(context: CommandContext, command: string): string {
  const url = stringValue(context.values, 'gateway') ?? context.io.env.DMSC_GATEWAY_URL;
  if (!url) throw new UsageError('--gateway URL is required (or DMSC_GATEWAY_URL), e.g. https://localhost:8443', command);
  return url;
}

function enrolledLines(what: string, result: EnrollResult): string[] {
  return [
    `${what}: ${result.spiffeId ?? '(no SPIFFE ID)'}`,
    `  serial     ${result.serial}`,
    `  not after  ${result.notAfter.toISOString()}`,
    `  files      ${result.dir}/key.pem ${result.dir}/cert.pem ${result.dir}/ca.pem (-> ${result.dir}/current/)`,
  ];
}

interface CertificateRecord {
  serial: string;
  tenant: string;
  agent: string;
  kind: string;
  notAfter: string;
  revokedAt?: string;
  revocationReason?: string;
}

export const tokenCommands: Command[] = [
  {
    name: 'token create',
    positionals: { min: 0, max: 0 },
    summary: 'create a one-time enrollment (bootstrap) token for an agent; prints the token',
    options: {
      tenant: { type: 'string', placeholder: 'TENANT', help: 'the tenant (required)' },
      agent: { type: 'string', placeholder: 'AGENT', help: 'the agent the token enrolls (required)' },
      ttl: { type: 'string', placeholder: 'DURATION', help: 'lifetime, e.g. 90s, 10m, 24h (1 min to 7 days; default 1h)' },
      ...API_OPTIONS,
    },
    async run(context) {
      const tenant = required(context, 'tenant', 'token create');
      const agent = required(context, 'agent', 'token create');
      const ttl = stringValue(context.values, 'ttl');
      let ttlMs: number | undefined;
      try {
        ttlMs = ttl === undefined ? undefined : parseDuration(ttl);
      } catch (err) {
        throw new UsageError(`--ttl: ${(err as Error).message}`, 'token create');
      }
      const body = (await apiFor(context).call('POST', ['tenants', tenant, 'agents', agent, 'bootstrap-tokens'], ttlMs === undefined ? {} : { ttlMs })) as {
        token: string;
        id: string;
        expiresAt: string;
      };
      if (context.values.json) return show(context, body, () => []);
      context.io.out(body.token);
      context.io.err(`bootstrap token ${body.id} for ${tenant}/${agent}, single use, expires ${body.expiresAt}`);
      return 0;
    },
  },
];

export const certCommands: Command[] = [
  {
    name: 'cert enroll',
    positionals: { min: 0, max: 0 },
    summary: 'exchange a bootstrap token for a certificate (key made locally; writes DIR/key.pem, cert.pem, ca.pem)',
    options: {
      token: { type: 'string', placeholder: 'TOKEN', help: 'the bootstrap token (dmsc_bt_...; or DMSC_BOOTSTRAP_TOKEN)' },
      gateway: { type: 'string', placeholder: 'URL', help: 'the gateway agent listener, e.g. https://localhost:8443 (DMSC_GATEWAY_URL)' },
      out: { type: 'string', placeholder: 'DIR', help: 'directory for the credentials (required)' },
      ca: { type: 'string', placeholder: 'FILE', help: "CA certificate(s) to verify the gateway's TLS certificate" },
      'insecure-first-use': { type: 'boolean', help: "do not verify the gateway's certificate on this first contact (trust on first use)" },
    },
    async run(context) {
      const token = stringValue(context.values, 'token') ?? context.io.env.DMSC_BOOTSTRAP_TOKEN;
      if (!token) throw new UsageError('--token is required (or DMSC_BOOTSTRAP_TOKEN)', 'cert enroll');
      const out = required(context, 'out', 'cert enroll');
      const gateway = gatewayUrl(context, 'cert enroll');
      const ca = await readCaOption(context);
      const result = await enroll({ token, gateway, out, ...(ca ? { ca } : {}), insecure: Boolean(context.values['insecure-first-use']) });
      for (const line of enrolledLines('enrolled', result)) context.io.out(line);
      return 0;
    },
  },
  {
    name: 'cert renew',
    positionals: { min: 0, max: 0 },
    summary: 'renew the certificate in DIR over mTLS (new key); --watch renews at every half-life',
    options: {
      dir: { type: 'string', placeholder: 'DIR', help: 'the credentials directory (from cert enroll; required)' },
      gateway: { type: 'string', placeholder: 'URL', help: 'the gateway agent listener (DMSC_GATEWAY_URL)' },
      ca: { type: 'string', placeholder: 'FILE', help: "CA certificate(s) to verify the gateway (default DIR/ca.pem)" },
      watch: { type: 'boolean', help: 'keep running: renew at half-life of each certificate, forever' },
    },
    async run(context) {
      const dir = required(context, 'dir', 'cert renew');
      const gateway = gatewayUrl(context, 'cert renew');
      const ca = await readCaOption(context);
      if (!context.values.watch) {
        const result = await renew({ dir, gateway, ...(ca ? { ca } : {}) });
        for (const line of enrolledLines('renewed', result)) context.io.out(line);
        return 0;
      }
      const stop = new AbortController();
      const onSignal = () => stop.abort();
      process.once('SIGINT', onSignal);
      process.once('SIGTERM', onSignal);
      try {
        await watchRenewals({ dir, gateway, ...(ca ? { ca } : {}), log: (line) => context.io.out(`${new Date().toISOString()} ${line}`) }, stop.signal);
      } finally {
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
      }
      return 0;
    },
  },
  {
    name: 'cert revoke',
    positionals: { min: 0, max: 0 },
    summary: 'revoke one certificate (--serial) or every certificate of an agent (--tenant --agent)',
    options: {
      serial: { type: 'string', placeholder: 'SERIAL', help: 'certificate serial number (hex)' },
      tenant: { type: 'string', placeholder: 'TENANT', help: 'with --agent: revoke all of its certificates' },
      agent: { type: 'string', placeholder: 'AGENT', help: 'with --tenant' },
      reason: { type: 'string', placeholder: 'REASON', help: 'why (required), e.g. keyCompromise, decommissioned' },
      ...API_OPTIONS,
    },
    async run(context) {
      const reason = required(context, 'reason', 'cert revoke');
      const serial = stringValue(context.values, 'serial');
      const tenant = stringValue(context.values, 'tenant');
      const agent = stringValue(context.values, 'agent');
      if (serial && (tenant || agent)) throw new UsageError('give either --serial or --tenant with --agent, not both', 'cert revoke');
      if (serial) {
        const body = (await apiFor(context).call('POST', ['certificates', serial.replace(/:/g, ''), 'revoke'], { reason })) as CertificateRecord;
        return show(context, body, () => [`revoked ${body.serial} (${body.tenant}/${body.agent}): ${body.revocationReason ?? reason}`]);
      }
      if (!tenant || !agent) throw new UsageError('give --serial, or --tenant and --agent', 'cert revoke');
      const body = (await apiFor(context).call('POST', ['tenants', tenant, 'agents', agent, 'revoke'], { reason })) as { revoked: string[] };
      return show(context, body, () =>
        body.revoked.length === 0 ? [`${tenant}/${agent} has no unexpired certificate to revoke`] : body.revoked.map((s) => `revoked ${s}`),
      );
    },
  },
  {
    name: 'cert list',
    positionals: { min: 0, max: 0 },
    summary: "list certificates issued by a tenant's CA",
    options: {
      tenant: { type: 'string', placeholder: 'TENANT', help: 'the tenant (required)' },
      agent: { type: 'string', placeholder: 'AGENT', help: 'only this agent' },
      revoked: { type: 'boolean', help: 'only revoked certificates' },
      ...API_OPTIONS,
    },
    async run(context) {
      const tenant = required(context, 'tenant', 'cert list');
      const body = (await apiFor(context).call('GET', ['tenants', tenant, 'certificates'], undefined, {
        agent: stringValue(context.values, 'agent'),
        revoked: context.values.revoked ? 'true' : undefined,
      })) as { certificates: CertificateRecord[] };
      return show(context, body, () =>
        formatTable(
          ['SERIAL', 'AGENT', 'KIND', 'NOT AFTER', 'REVOKED'],
          body.certificates.map((cert) => [
            cert.serial,
            cert.agent,
            cert.kind,
            cert.notAfter,
            cert.revokedAt ? `${cert.revokedAt} (${cert.revocationReason ?? ''})` : '',
          ]),
        ),
      );
    },
  },
];
