import type { Http2ServerRequest } from 'node:http2';
import type { TLSSocket, DetailedPeerCertificate } from 'node:tls';
import type { Logger } from 'pino';
import type { AuditLog } from '../audit/index.js';
import type { RequestAuthenticator } from '../dataplane/stages.js';
import { parseAgentSpiffeId, spiffeIdFor, type Identity } from './spiffe.js';
import type { AuthFailureReason, AuthResult, Pki } from './types.js';

/** What a TLS client proved with its certificate; `result` is absent when it presented none. */
export interface PeerCredentials {
  result?: AuthResult;
  certDer?: Uint8Array;
  /** Epoch ms after which the certificate no longer authenticates (notAfter + clock skew). */
  validUntil?: number;
}

const NONE: PeerCredentials = Object.freeze({});
/**
 * Kept on the socket itself rather than in a WeakMap: an HTTP/2 request reaches its TLS socket only
 * through the session's proxy object, which forwards property reads (this symbol too) to the socket.
 */
const CREDENTIALS = Symbol('dmsc.peerCredentials');
type WithCredentials = TLSSocket & { [CREDENTIALS]?: PeerCredentials };

/** Node's verification errors, in the words the caller and the audit trail get. */
function reasonFromTlsError(code: string | undefined): AuthFailureReason {
  if (code === 'CERT_HAS_EXPIRED') return 'expired';
  if (code === 'CERT_NOT_YET_VALID') return 'not_yet_valid';
  if (code === 'CERT_REVOKED') return 'revoked';
  return 'unknown_ca';
}

/** The TLS socket a request arrived on (HTTP/2 requests share their session's socket). */
export function tlsSocketOf(req: { socket: unknown; httpVersionMajor: number }): TLSSocket | undefined {
  const socket = (req.httpVersionMajor === 2 ? (req as unknown as Http2ServerRequest).stream.session?.socket : req.socket) as
    | TLSSocket
    | undefined;
  return socket && (socket as TLSSocket).encrypted ? socket : undefined;
}

/**
 * Client certificates of live TLS connections, authenticated once per connection against the PKI.
 * Revoking a certificate closes every live connection that authenticated with it, on every listener.
 */
export class ClientCertificates {
  private readonly bySerial = new Map<string, Set<TLSSocket>>();

  constructor(
    private readonly pki: Pki,
    private readonly audit: AuditLog,
    private readonly logger: Logger,
    /** Certificates from an extra CA bundle (listeners.tls.mtls.caFile) map to identities by their SPIFFE ID alone. */
    private readonly trustExternalCa: boolean,
    private readonly clockSkewMs: number,
  ) {
    pki.onRevoked((serials) => this.cut(serials));
  }

  /** Called once per completed handshake. Returns false when the connection must be closed at once. */
  accept(socket: TLSSocket): boolean {
    const peer = socket.getPeerCertificate(true) as DetailedPeerCertificate | null;
    if (!peer || !peer.raw) {
      (socket as WithCredentials)[CREDENTIALS] = NONE;
      return true;
    }
    const result = this.authenticate(socket, peer);
    (socket as WithCredentials)[CREDENTIALS] = { result, certDer: peer.raw, validUntil: Date.parse(peer.valid_to) + this.clockSkewMs };
    if (result.ok) {
      const serial = result.identity.certSerial;
      if (serial) this.track(serial, socket);
      return true;
    }
    // Group commit (no answer waits for it): a flood of bad handshakes does not block the event loop.
    this.audit
      .commit({
        actor: socket.remoteAddress ?? 'unknown',
        action: 'authn',
        target: 'tls',
        decision: 'deny',
        reason: `${result.reason}: ${result.detail}`,
      })
      .catch((err: unknown) => this.logger.error({ err }, 'authentication failure could not be audited'));
    // A revoked certificate is refused on the handshake itself; other failures get a 401 that says why.
    return result.reason !== 'revoked';
  }

  /** The connection's credentials as of now: a certificate that expired since the handshake no longer authenticates. */
  forSocket(socket: TLSSocket): PeerCredentials | undefined {
    const credentials = (socket as WithCredentials)[CREDENTIALS];
    if (credentials?.result?.ok && credentials.validUntil !== undefined && Date.now() > credentials.validUntil) {
      return { ...credentials, result: { ok: false, reason: 'expired', detail: 'the client certificate expired during this connection' } };
    }
    return credentials;
  }

  private authenticate(socket: TLSSocket, peer: DetailedPeerCertificate): AuthResult {
    if (!socket.authorized) {
      const error = socket.authorizationError as unknown as string | Error | undefined;
      const code = typeof error === 'string' ? error : (error as { code?: string } | undefined)?.code ?? String(error);
      // OpenSSL checks validity with no clock skew; the PKI checks issuer, signature and validity with it.
      const timing = code === 'CERT_HAS_EXPIRED' || code === 'CERT_NOT_YET_VALID';
      if (!timing) return { ok: false, reason: reasonFromTlsError(code), detail: `certificate not accepted (${code})` };
    }
    const result = this.pki.authenticateCertificate(chainOf(peer));
    if (result.ok || result.reason !== 'unknown_ca' || !this.trustExternalCa || !socket.authorized) return result;
    // Chained to the operator's extra CA bundle (Node verified it): the SPIFFE ID is the identity.
    const uris = (peer.subjectaltname ?? '')
      .split(', ')
      .filter((entry) => entry.startsWith('URI:'))
      .map((entry) => entry.slice(4));
    const parsed = uris.length === 1 ? parseAgentSpiffeId(uris[0]!, this.pki.trustDomain) : undefined;
    if (!parsed) return { ok: false, reason: 'bad_spiffe_id', detail: 'the certificate needs exactly one agent SPIFFE ID of this trust domain' };
    const identity: Identity = {
      ...parsed,
      spiffeId: spiffeIdFor(this.pki.trustDomain, parsed.tenant, parsed.agent),
      via: 'mtls',
      certSerial: peer.serialNumber.toLowerCase(),
    };
    return { ok: true, identity };
  }

  private track(serial: string, socket: TLSSocket): void {
    let sockets = this.bySerial.get(serial);
    if (!sockets) this.bySerial.set(serial, (sockets = new Set()));
    sockets.add(socket);
    socket.once('close', () => {
      sockets.delete(socket);
      if (sockets.size === 0 && this.bySerial.get(serial) === sockets) this.bySerial.delete(serial);
    });
  }

  private cut(serials: ReadonlySet<string>): void {
    for (const serial of serials) {
      const sockets = this.bySerial.get(serial);
      if (!sockets) continue;
      this.logger.info({ serial, connections: sockets.size }, 'closing connections of a revoked certificate');
      for (const socket of sockets) socket.destroy();
    }
  }
}

/** Leaf first, up to the root, as DER; stops at a self-signed certificate or a loop. */
function chainOf(peer: DetailedPeerCertificate): Uint8Array[] {
  const chain: Uint8Array[] = [];
  const seen = new Set<DetailedPeerCertificate>();
  let current: DetailedPeerCertificate | undefined = peer;
  while (current?.raw && !seen.has(current) && chain.length < 8) {
    seen.add(current);
    chain.push(current.raw);
    current = current.issuerCertificate;
  }
  return chain;
}

/** Validates bearer tokens (external issuers' JWTs and the built-in token service's). */
export interface BearerAuthenticator {
  authenticate(token: string, tenantHint?: string, clientCertDer?: Uint8Array): Promise<AuthResult>;
}

const BEARER = /^bearer\s+(\S+)\s*$/i;

/** `/agents/<t>/...`, `/tenants/<t>/...`, `/capabilities/<t>/...`: the tenant a refused request was addressed to, so its operators see it. */
const ADDRESSED_TENANT = /^\/(?:agents|tenants|capabilities)\/([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)(?:[/?]|$)/;

function addressedTenant(url: string): string | undefined {
  return ADDRESSED_TENANT.exec(url)?.[1];
}

/**
 * The authenticate stage's view of identity: a bearer token when the request carries one (bound to
 * the connection's certificate when the token says so), else the connection's client certificate.
 */
export function createRequestAuthenticator(deps: {
  certificates: ClientCertificates;
  bearer?: BearerAuthenticator;
  audit: AuditLog;
  /** Listeners where a client certificate is required (mTLS on): a token alone is not enough. */
  requireCertificate: (listener: string) => boolean;
}): RequestAuthenticator {
  const { certificates, bearer, audit } = deps;
  return {
    authenticate(ctx) {
      const socket = tlsSocketOf(ctx.req);
      const peer = socket ? certificates.forSocket(socket) : undefined;
      if (!peer?.result && deps.requireCertificate(ctx.listener.name)) {
        return { ok: false, reason: 'no_credentials', detail: 'this listener requires a client certificate (mutual TLS)' };
      }
      const authorization = ctx.req.headers.authorization;
      const token = typeof authorization === 'string' ? BEARER.exec(authorization)?.[1] : undefined;
      if (token === undefined) return peer?.result;
      // A client that presents a bad certificate is refused even with a token: it is misconfigured or lying.
      if (peer?.result && !peer.result.ok) return peer.result;
      if (!bearer) return { ok: false, reason: 'bad_token', detail: 'bearer tokens are not accepted by this gateway' };
      return bearer.authenticate(token, undefined, peer?.certDer).then((result): AuthResult => {
        const byCert = peer?.result;
        if (result.ok && byCert?.ok && byCert.identity.spiffeId !== result.identity.spiffeId) {
          return { ok: false, reason: 'bad_token', detail: 'the token and the client certificate name different agents' };
        }
        return result;
      });
    },
    refused(ctx, reason, detail) {
      const tenant = ctx.target?.tenant ?? addressedTenant(ctx.req.url ?? '');
      return audit.commit({
        ...(tenant ? { tenant } : {}),
        actor: ctx.req.socket?.remoteAddress ?? 'unknown',
        action: 'authn',
        target: `${ctx.listener.name} ${ctx.req.method} ${(ctx.req.url ?? '').split('?')[0]}`,
        decision: 'deny',
        reason: `${reason}: ${detail}`,
        requestId: ctx.id,
      });
    },
  };
}
