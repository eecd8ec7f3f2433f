import { NAME_PATTERN } from '../config/schema.js';

/** Who a verified certificate or token speaks for, as the pipeline sees it after authentication. */
export interface Identity {
  tenant: string;
  agent: string;
  /** spiffe://<trust-domain>/tenant/<tenant>/agent/<agent> */
  spiffeId: string;
  via: 'mtls' | 'jwt';
  /** Serial (hex) of the client certificate, when via mTLS. */
  certSerial?: string;
  /** Issuer of the token, when via JWT. */
  tokenIssuer?: string;
}

export function spiffeIdFor(trustDomain: string, tenant: string, agent: string): string {
  return `spiffe://${trustDomain}/tenant/${tenant}/agent/${agent}`;
}

/**
 * Parses an agent SPIFFE ID of this trust domain; undefined for anything else (another trust domain,
 * another path shape, names that are not DNS labels, query/fragment/percent-encoding).
 */
export function parseAgentSpiffeId(uri: string, trustDomain: string): { tenant: string; agent: string } | undefined {
  const prefix = `spiffe://${trustDomain}/tenant/`;
  if (!uri.startsWith(prefix)) return undefined;
  const parts = uri.slice(prefix.length).split('/');
  if (parts.length !== 3 || parts[1] !== 'agent') return undefined;
  const [tenant, , agent] = parts as [string, string, string];
  if (!NAME_PATTERN.test(tenant) || !NAME_PATTERN.test(agent)) return undefined;
  return { tenant, agent };
}
