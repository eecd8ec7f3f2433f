// @peculiar/x509 resolves its algorithms through tsyringe, which needs the Reflect metadata API.
import 'reflect-metadata';
import { webcrypto } from 'node:crypto';
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http';
import type { Http2ServerRequest, Http2ServerResponse } from 'node:http2';
import * as x509 from '@peculiar/x509';
import type { Logger } from 'pino';
import type { AuditLog } from '../audit/index.js';
import { NAME_PATTERN } from '../config/schema.js';
import { GatewayError } from '../dataplane/errors.js';
import type { BootstrapTokens } from './bootstrap.js';
import { BOOTSTRAP_TOKEN_PREFIX } from './bootstrap.js';
import type { TokenService } from './oauth.js';
import type { Identity } from './spiffe.js';
import { PkiError, type Pki } from './types.js';

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

/** Largest CSR (or token-endpoint) body accepted. */
export const MAX_ENDPOINT_BODY_BYTES = 64 * 1024;

export const PEM_CHAIN_TYPE = 'application/pem-certificate-chain';
export const CRL_TYPE = 'application/pkix-crl';

/** The OAuth token service as the endpoints need it (src/identity/oauth). */
export type TokenEndpointService = Pick<TokenService, 'handle'> & {
  /** Optional: which paths are the token service's; default: /tenants/<t>/oauth/..., the RFC 8414 metadata paths. */
  matches?(path: string): boolean;
};

export interface IdentityEndpointsDeps {
  pki: Pki;
  bootstrap: BootstrapTokens;
  tokens?: TokenEndpointService;
  audit: AuditLog;
  logger: Logger;
}

export interface PeerInfo {
  /** Set by the authenticate stage when the caller proved an identity (mTLS or JWT). */
  identity?: Identity;
  /** DER of the verified client certificate, when the caller presented one. */
  certDer?: Uint8Array;
  requestId: string;
}

type AnyRequest = IncomingMessage | Http2ServerRequest;
type AnyResponse = ServerResponse | Http2ServerResponse;

export interface IdentityEndpoints {
  /**
   * Answers /enroll, /renew, /trust-bundle[/<tenant>], /crl/<tenant>.crl (and the token service's
   * paths when one is given). Returns false, touching nothing, for any other path; else answers
   * (asynchronously) and returns true.
   */
  handle(req: AnyRequest, res: AnyResponse, peer: PeerInfo): boolean;
}

/** The token service's paths (see src/identity/oauth/token-service.ts). */
const DEFAULT_TOKEN_PATHS = /^\/(?:\.well-known\/oauth-authorization-server\/tenants\/[^/]+|tenants\/[^/]+\/(?:oauth(?:\/.*)?|\.well-known\/oauth-authorization-server))$/;

type Route =
  | { kind: 'enroll' }
  | { kind: 'renew' }
  | { kind: 'root-bundle' }
  | { kind: 'tenant-bundle'; tenant: string }
  | { kind: 'crl'; tenant: string }
  | { kind: 'tokens' };

function parseRoute(pathname: string, tokens: TokenEndpointService | undefined): Route | undefined {
  if (pathname === '/enroll') return { kind: 'enroll' };
  if (pathname === '/renew') return { kind: 'renew' };
  if (pathname === '/trust-bundle') return { kind: 'root-bundle' };
  let found = /^\/trust-bundle\/([^/]+)$/.exec(pathname);
  if (found) return { kind: 'tenant-bundle', tenant: found[1]! };
  found = /^\/crl\/([^/]+)\.crl$/.exec(pathname);
  if (found) return { kind: 'crl', tenant: found[1]! };
  if (tokens && (tokens.matches ? tokens.matches(pathname) : DEFAULT_TOKEN_PATHS.test(pathname))) return { kind: 'tokens' };
  return undefined;
}

const METHODS: Record<Route['kind'], readonly string[]> = {
  enroll: ['POST'],
  renew: ['POST'],
  'root-bundle': ['GET', 'HEAD'],
  'tenant-bundle': ['GET', 'HEAD'],
  crl: ['GET', 'HEAD'],
  tokens: ['GET', 'HEAD', 'POST'],
};

function isHttp2(req: AnyRequest): boolean {
  return req.httpVersionMajor === 2;
}

function send(req: AnyRequest, res: AnyResponse, status: number, headers: Record<string, string>, body?: string | Uint8Array): void {
  if (res.headersSent || res.destroyed) return;
  const all: Record<string, string> = { 'cache-control': 'no-store', ...headers };
  if (isHttp2(req)) delete all.connection;
  if (body !== undefined) all['content-length'] = String(typeof body === 'string' ? Buffer.byteLength(body) : body.byteLength);
  (res as ServerResponse).writeHead(status, all);
  if (req.method === 'HEAD' || body === undefined) (res as ServerResponse).end();
  else (res as ServerResponse).end(body);
}

function sendError(req: AnyRequest, res: AnyResponse, requestId: string, error: GatewayError): void {
  const body = JSON.stringify({ error: { code: error.code, message: error.message } });
  send(req, res, error.status, { 'content-type': 'application/json', 'x-dmsc-request-id': requestId, ...error.headers }, body);
}

/** Reads the body up to MAX_ENDPOINT_BODY_BYTES; over that, 413 (the rest is drained, not buffered). */
function readBody(req: AnyRequest): Promise<Buffer> {
  const tooLarge = () =>
    new GatewayError(413, 'body_too_large', `the request body is over ${MAX_ENDPOINT_BODY_BYTES} bytes`, { connection: 'close' });
  const declared = Number(req.headers['content-length'] ?? 0);
  if (declared > MAX_ENDPOINT_BODY_BYTES) {
    req.resume();
    return Promise.reject(tooLarge());
  }
  return new Promise<Buffer>((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size <= MAX_ENDPOINT_BODY_BYTES) return void chunks.push(chunk);
      req.off('data', onData);
      req.off('end', onEnd);
      req.resume();
      reject(tooLarge());
    };
    const onEnd = () => resolve(Buffer.concat(chunks));
    req.on('data', onData);
    req.once('end', onEnd);
    req.once('error', reject);
  });
}

function bearer(headers: IncomingHttpHeaders): string | undefined {
  const found = headers.authorization && /^Bearer\s+(\S+)\s*$/i.exec(headers.authorization);
  return found ? found[1] : undefined;
}

/**
 * A PKCS#10 CSR from a request body: PEM (any content type: curl's default form type included),
 * base64 DER, or raw DER with `application/pkcs10`. Its self-signature must verify. Returns DER.
 */
export async function parseCsrBody(body: Buffer): Promise<Uint8Array> {
  if (body.length === 0) throw new GatewayError(400, 'bad_csr', 'the request body must be a PKCS#10 certificate signing request (PEM or DER)');
  let der: Uint8Array;
  const text = body.toString('latin1');
  if (text.includes('-----BEGIN')) {
    const found = /-----BEGIN (?:NEW )?CERTIFICATE REQUEST-----([A-Za-z0-9+/=\s]+)-----END (?:NEW )?CERTIFICATE REQUEST-----/.exec(text);
    if (!found) throw new GatewayError(400, 'bad_csr', 'expected a "CERTIFICATE REQUEST" PEM block');
    der = Buffer.from(found[1]!.replace(/\s+/g, ''), 'base64');
  } else if (body[0] === 0x30) {
    der = body;
  } else if (/^[A-Za-z0-9+/=_\-\s]+$/.test(text)) {
    der = Buffer.from(text.replace(/\s+/g, ''), text.includes('-') || text.includes('_') ? 'base64url' : 'base64');
  } else {
    throw new GatewayError(400, 'bad_csr', 'the request body is neither PEM, base64 nor DER');
  }
  let csr: x509.Pkcs10CertificateRequest;
  try {
    csr = new x509.Pkcs10CertificateRequest(der);
  } catch (err) {
    throw new GatewayError(400, 'bad_csr', `the CSR does not parse: ${(err as Error).message}`);
  }
  let valid = false;
  try {
    valid = await csr.verify();
  } catch (err) {
    throw new GatewayError(400, 'bad_csr', `the CSR signature cannot be checked: ${(err as Error).message}`);
  }
  if (!valid) throw new GatewayError(400, 'bad_csr', 'the CSR signature does not verify');
  return new Uint8Array(der);
}

function checkTenantName(tenant: string): void {
  if (!NAME_PATTERN.test(tenant)) throw new GatewayError(404, 'not_found', `no such tenant: ${tenant}`);
}

function fromPkiError(err: unknown): GatewayError | undefined {
  if (err instanceof GatewayError) return err;
  if (err instanceof PkiError) {
    switch (err.code) {
      case 'bad_csr':
        return new GatewayError(400, 'bad_csr', err.message);
      case 'unknown_tenant':
      case 'not_found':
        return new GatewayError(404, 'not_found', err.message);
      case 'invalid':
        return new GatewayError(400, 'invalid', err.message);
    }
  }
  return undefined;
}

/**
 * The identity endpoints on the agent-facing listeners: enrollment with a bootstrap token, renewal
 * over mTLS, trust bundles and CRLs (public), and the OAuth token service when given.
 */
export function createIdentityEndpoints(deps: IdentityEndpointsDeps): IdentityEndpoints {
  const { pki, bootstrap, tokens, audit, logger } = deps;

  const issue = async (tenant: string, agent: string, csr: Uint8Array, requestId: string) => {
    const issued = await pki.issueFromCsr(tenant, agent, csr, { requestId });
    return {
      status: 201,
      headers: {
        'content-type': PEM_CHAIN_TYPE,
        'x-dmsc-spiffe-id': issued.spiffeId,
        'x-dmsc-not-after': issued.notAfter,
        'x-dmsc-serial': issued.serial,
      },
      body: issued.chainPem.endsWith('\n') ? issued.chainPem : issued.chainPem + '\n',
    };
  };

  type Answer = { status: number; headers: Record<string, string>; body?: string | Uint8Array };

  const run = async (route: Route, req: AnyRequest, peer: PeerInfo): Promise<Answer> => {
    switch (route.kind) {
      case 'enroll': {
        const token = bearer(req.headers);
        if (!token) {
          req.resume();
          audit.record({ actor: 'anonymous', action: 'enroll.token', decision: 'deny', reason: 'missing', requestId: peer.requestId });
          throw new GatewayError(401, 'unauthorized', `send the bootstrap token as "Authorization: Bearer ${BOOTSTRAP_TOKEN_PREFIX}..."`, {
            'www-authenticate': 'Bearer realm="dmsc-enroll"',
          });
        }
        // The CSR first: a request with a bad CSR must not burn the token.
        const csr = await parseCsrBody(await readBody(req));
        const used = await bootstrap.consume(token, peer.requestId);
        if (!used.ok) {
          const why = used.reason === 'used' ? 'has already been used' : used.reason === 'expired' ? 'has expired' : 'is not known';
          throw new GatewayError(401, 'bad_token', `the bootstrap token ${why}`, { 'www-authenticate': 'Bearer realm="dmsc-enroll", error="invalid_token"' });
        }
        return issue(used.token.tenant, used.token.agent, csr, peer.requestId);
      }
      case 'renew': {
        const identity = peer.identity;
        if (!identity || identity.via !== 'mtls') {
          req.resume();
          audit.record({
            ...(identity ? { tenant: identity.tenant } : {}),
            actor: identity?.spiffeId ?? 'anonymous',
            action: 'cert.renew',
            decision: 'deny',
            reason: identity ? 'not_mtls' : 'no_credentials',
            requestId: peer.requestId,
          });
          if (identity) throw new GatewayError(403, 'forbidden', 'renewal needs the current client certificate (mutual TLS), not a bearer token');
          throw new GatewayError(401, 'unauthorized', 'renewal needs mutual TLS with the current, valid certificate');
        }
        const csr = await parseCsrBody(await readBody(req));
        const answer = await issue(identity.tenant, identity.agent, csr, peer.requestId);
        audit.record({
          tenant: identity.tenant,
          actor: identity.spiffeId,
          action: 'cert.renew',
          target: answer.headers['x-dmsc-serial'],
          decision: 'allow',
          reason: identity.certSerial ? `renews ${identity.certSerial}` : 'renewed',
          requestId: peer.requestId,
        });
        return answer;
      }
      case 'root-bundle':
        return { status: 200, headers: { 'content-type': PEM_CHAIN_TYPE }, body: pki.rootBundle() };
      case 'tenant-bundle':
      {
        checkTenantName(route.tenant);
        const bundle = pki.tenantBundle(route.tenant);
        // The PKI answers the roots alone for a tenant it has no CA for.
        if (!bundle.trim() || bundle === pki.rootBundle()) throw new GatewayError(404, 'not_found', `no such tenant: ${route.tenant}`);
        return { status: 200, headers: { 'content-type': PEM_CHAIN_TYPE }, body: bundle };
      }
      case 'crl':
        checkTenantName(route.tenant);
        return { status: 200, headers: { 'content-type': CRL_TYPE }, body: await pki.crl(route.tenant) };
      case 'tokens': {
        const body = req.method === 'GET' || req.method === 'HEAD' ? Buffer.alloc(0) : await readBody(req);
        const answer = await tokens!.handle({
          method: req.method ?? 'GET',
          path: req.url ?? '/',
          headers: req.headers,
          body,
          requestId: peer.requestId,
          ...(req.socket?.remoteAddress ? { remoteAddress: req.socket.remoteAddress } : {}),
          ...(peer.identity ? { clientIdentity: peer.identity } : {}),
          ...(peer.certDer ? { clientCertDer: peer.certDer } : {}),
        });
        if (!answer) throw new GatewayError(404, 'not_found', 'no such token endpoint');
        return answer;
      }
    }
  };

  return {
    handle(req, res, peer) {
      const pathname = (req.url ?? '/').split('?', 1)[0]!;
      const route = parseRoute(pathname, tokens);
      if (!route) return false;
      const allowed = METHODS[route.kind];
      if (!allowed.includes(req.method ?? '')) {
        req.resume();
        sendError(req, res, peer.requestId, new GatewayError(405, 'method_not_allowed', `${req.method} is not allowed on ${pathname}`, { allow: allowed.join(', ') }));
        return true;
      }
      run(route, req, peer).then(
        (answer) => send(req, res, answer.status, { 'x-dmsc-request-id': peer.requestId, ...answer.headers }, answer.body),
        (err: unknown) => {
          const known = fromPkiError(err);
          if (!known) logger.error({ err, path: pathname, requestId: peer.requestId }, 'identity endpoint failed');
          req.resume();
          sendError(req, res, peer.requestId, known ?? new GatewayError(500, 'internal_error', 'internal error (logged by the gateway)'));
        },
      );
      return true;
    },
  };
}
