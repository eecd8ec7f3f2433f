import { z } from 'zod';
import { agentSchema, healthCheckSchema, nameSchema } from '../config/schema.js';

// Request bodies reuse the config schema, so the Admin API and the YAML file accept exactly the same things.

export const createTenantBody = z.object({ name: nameSchema }).strict();

export const createAgentBody = agentSchema;

/** PUT names the agent in the path; a `name` in the body is allowed only when it says the same. */
export const putAgentBody = agentSchema.omit({ name: true }).extend({ name: nameSchema.optional() }).strict();

const timestamp = z.string().describe('ISO-8601 timestamp');
const source = z.enum(['config', 'api']).describe('"config": managed by the config file (read-only here); "api": created through this API');

export const tenantRecord = z.object({
  name: z.string(),
  source,
  createdAt: timestamp,
  updatedAt: timestamp,
});

const endpointStatus = z.object({
  url: z.string(),
  healthy: z.boolean(),
  inflight: z.number().int(),
  consecutiveFailures: z.number().int(),
  lastCheckedAt: timestamp.optional(),
  lastError: z.string().optional(),
});

const skillSummary = z.object({
  id: z.string(),
  name: z.string(),
  description: z.string().optional(),
  tags: z.array(z.string()),
  examples: z.array(z.string()).optional(),
});

export const agentView = z.object({
  tenant: z.string(),
  name: z.string(),
  endpoints: z.array(z.string()),
  tags: z.array(z.string()),
  healthCheck: healthCheckSchema.partial().optional(),
  source,
  createdAt: timestamp,
  updatedAt: timestamp,
  endpointStatus: z.array(endpointStatus),
  card: z
    .object({ sourceUrl: z.string(), fetchedAt: timestamp, name: z.string().optional(), skills: z.array(skillSummary) })
    .optional()
    .describe('The last A2A Agent Card fetched from the agent, summarised'),
});

export const tenantList = z.object({ tenants: z.array(tenantRecord) });
export const agentList = z.object({ agents: z.array(agentView) });

export const gatewayStatus = z.object({
  version: z.string(),
  startedAt: timestamp,
  uptimeSeconds: z.number(),
  ready: z.boolean(),
  listeners: z.record(z.string(), z.string()).describe('listener name -> URL'),
  inflight: z.number().int().describe('requests being handled now'),
  tenants: z.number().int(),
  agents: z.number().int(),
  stateDir: z.string(),
});

export const probeStatus = z.object({ status: z.enum(['ok', 'draining']) });

export const errorBody = z.object({
  error: z.object({
    code: z.string().describe('stable machine-readable code, e.g. not_found, invalid, managed_by_config'),
    message: z.string(),
  }),
});

// ---- identity (issue 3): enrollment tokens, certificates, revocation, client secrets, audit ----------

const DAY_MS = 24 * 60 * 60 * 1000;

/** Certificate serial: hex, as in the certificate (case-insensitive here; answered lowercase). */
export const serialSchema = z.string().regex(/^[0-9a-fA-F]{1,128}$/, 'must be a certificate serial number in hex');

export const createBootstrapTokenBody = z
  .object({
    ttlMs: z
      .number()
      .int()
      .min(60_000)
      .max(7 * DAY_MS)
      .optional()
      .describe('lifetime in milliseconds, 60000 (1 min) to 604800000 (7 days); default 3600000 (1 h)'),
  })
  .strict();

export const bootstrapTokenCreated = z.object({
  token: z.string().describe('the one-time token (dmsc_bt_...); shown only here, stored hashed'),
  id: z.string().describe('public id of the token (in lists and the audit trail)'),
  expiresAt: timestamp,
  tenant: z.string(),
  agent: z.string(),
});

export const certificateRecord = z.object({
  serial: z.string().describe('lowercase hex'),
  caId: z.string(),
  tenant: z.string(),
  agent: z.string(),
  kind: z.enum(['agent', 'server', 'gateway-client']),
  spiffeId: z.string().optional(),
  notBefore: timestamp,
  notAfter: timestamp,
  revokedAt: timestamp.optional(),
  revocationReason: z.string().optional(),
  createdAt: timestamp,
});

export const certificateList = z.object({ certificates: z.array(certificateRecord) });

export const revokeBody = z.object({ reason: z.string().min(1).max(200).describe('why, e.g. keyCompromise, decommissioned') }).strict();

export const revokedSerials = z.object({ revoked: z.array(z.string()).describe('serials revoked now (lowercase hex)') });

export const clientSecretCreated = z.object({
  clientId: z.string(),
  clientSecret: z.string().describe('shown only here, stored hashed; replaces any earlier secret'),
});

export const auditRecord = z.object({
  seq: z.number().int(),
  time: timestamp,
  tenant: z.string().optional(),
  actor: z.string().optional(),
  action: z.string(),
  target: z.string().optional(),
  decision: z.enum(['allow', 'deny', 'info']),
  reason: z.string().optional(),
  requestId: z.string().optional(),
});

export const auditList = z.object({ records: z.array(auditRecord) });

export const certificatesQuery = z.object({
  agent: nameSchema.optional().describe('only this agent'),
  revoked: z.enum(['true', 'false']).optional().describe('only revoked (true) or unrevoked (false) certificates'),
});

export const auditQuery = z.object({
  tenant: nameSchema.optional().describe('only records of this tenant'),
  action: z.string().max(100).optional().describe('only this action, e.g. enroll.token, cert.issue, cert.revoke'),
  after: z.string().regex(/^\d+$/, 'must be a record seq (integer)').optional().describe('only records with seq greater than this'),
  limit: z.string().regex(/^\d+$/, 'must be an integer').optional().describe('at most this many records (1-1000, default 100)'),
});
