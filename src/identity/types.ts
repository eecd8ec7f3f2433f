import type { CaRecord, IssuedCertRecord } from '../store/types.js';
import type { Identity } from './spiffe.js';

/** Why a client certificate or token was refused; shown to the caller (no secrets) and audited. */
export type AuthFailureReason =
  | 'expired'
  | 'not_yet_valid'
  | 'revoked'
  | 'unknown_ca'
  | 'wrong_tenant'
  | 'bad_spiffe_id'
  | 'bad_token'
  | 'no_credentials';

export type AuthResult = { ok: true; identity: Identity } | { ok: false; reason: AuthFailureReason; detail: string };

export interface IssuedCertificate {
  serial: string;
  /** The leaf certificate (PEM). */
  certPem: string;
  /** Leaf followed by the issuing intermediate (PEM): what a TLS peer should present. */
  chainPem: string;
  notAfter: string;
  spiffeId: string;
}

export type PkiErrorCode = 'bad_csr' | 'unknown_tenant' | 'not_found' | 'invalid';

export class PkiError extends Error {
  constructor(
    readonly code: PkiErrorCode,
    message: string,
  ) {
    super(message);
    this.name = 'PkiError';
  }
}

/**
 * The built-in CA: one root per trust domain, one intermediate per tenant. What the listeners, the
 * authenticate stage, the enrollment endpoints, the Admin API and the CLI use.
 */
export interface Pki {
  readonly trustDomain: string;

  /** Creates the tenant's intermediate CA if it has none (idempotent). */
  ensureTenant(tenant: string): Promise<void>;
  /**
   * Issues an X.509-SVID for tenant/agent from a PKCS#10 CSR (PEM or DER): the CSR's signature is
   * verified and only its public key is used; subject/SANs are set by the CA. Audited.
   */
  issueFromCsr(tenant: string, agent: string, csr: string | Uint8Array, options?: { ttlMs?: number; requestId?: string }): Promise<IssuedCertificate>;
  /** A serving certificate for the gateway's TLS listener (DNS names + IPs), from the root. */
  issueServerCertificate(dnsNames: string[], ipAddresses: string[]): Promise<{ certPem: string; chainPem: string; keyPem: string; notAfter: string }>;
  /** The gateway's client certificate for upstream mTLS to a tenant's agents, from that tenant's CA. */
  issueGatewayClientCertificate(tenant: string): Promise<{ certPem: string; chainPem: string; keyPem: string; notAfter: string }>;

  /** Revokes one certificate; regenerates its CA's CRL; notifies onRevoked listeners. Audited. */
  revoke(serial: string, reason: string, actor?: string): Promise<IssuedCertRecord>;
  /** Revokes every unexpired certificate of the agent. Returns the serials revoked. */
  revokeAgent(tenant: string, agent: string, reason: string, actor?: string): Promise<string[]>;
  /** Revokes all of the tenant's certificates and retires its CAs (offboarding). Audited. */
  offboardTenant(tenant: string, actor?: string): Promise<{ revoked: string[]; retiredCas: string[] }>;
  isRevoked(serial: string): boolean;
  onRevoked(listener: (serials: ReadonlySet<string>) => void): void;

  /**
   * Authenticates a TLS client from its verified chain (leaf first, as DER or PEM). Checks: issued
   * by a (active or retiring) intermediate of the tenant named in its SPIFFE ID, exactly one URI SAN
   * in this trust domain, validity with clock skew, not revoked.
   */
  authenticateCertificate(chain: Uint8Array[]): AuthResult;

  /** PEM of every root that is trusted (active + retiring). */
  rootBundle(): string;
  /** PEM of what a verifier of this tenant's agents needs: intermediates (active + retiring) + roots. */
  tenantBundle(tenant: string): string;
  /** Every CA certificate that may issue client certificates (for the TLS listener's `ca` option). */
  clientCaBundle(): string;
  /** The tenant's CRL, DER, signed by its active intermediate; regenerated on each revocation. */
  crl(tenant: string): Promise<Uint8Array>;

  /** New active intermediate for the tenant; the old one keeps being trusted (retiring). */
  rotateIntermediate(tenant: string): Promise<CaRecord>;
  /** Called when the trusted CA set changes (rotation, new tenant): listeners rebuild TLS contexts. */
  onTrustChanged(listener: () => void): void;
}
