import { z } from 'zod';
import { tenantLimitsSchema } from '../tenancy/limits/schema.js';
import { maskingSchema } from '../tenancy/masking/schema.js';
import { tenantPolicySchema } from '../tenancy/policy/schema.js';
import { agentSchema, healthCheckSchema, nameSchema } from '../config/schema.js';

// Request bodies reuse the config schema, so the Admin API and the YAML file accept exactly the same things.

/** Onboarding: the tenant's name and, optionally, its policy, limits and masking settings. */
export const createTenantBody = z
  .object({
    name: nameSchema,
    policy: tenantPolicySchema.optional(),
    limits: tenantLimitsSchema.optional(),
    masking: maskingSchema.optional(),
  })
  .strict();

export const createAgentBody = agentSchema;

/** PUT names the agent in the path; a `name` in the body is allowed only when it says the same. */
export const putAgentBody = agentSchema.omit({ name: true }).extend({ name: nameSchema.optional() }).strict();

const timestamp = z.string().describe('ISO-8601 timestamp');
const source = z.enum(['config', 'api']).describe('"config": managed by the config file (read-only here); "api": created through this API');

export const tenantRecord = z.object({
  name: z.string(),
  source,
  spec: z.record(z.string(), z.unknown()).optional().describe('policy, limits and masking as given'),
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
  load: z
    .object({
      latencyMs: z.number().optional().describe('peak-EWMA latency'),
      errorRate: z.number().describe('decaying share of failed attempts'),
      reported: z
        .object({ utilization: z.number(), queue: z.number(), at: timestamp })
        .optional()
        .describe('what the agent last reported in x-dmsc-load'),
    })
    .optional()
    .describe('what the load-aware balancer sees (docs/balancing.md)'),
  outlier: z
    .object({ state: z.enum(['in-service', 'ejected', 'half-open']), ejections: z.number().int(), ejectedUntil: timestamp.optional() })
    .optional()
    .describe('outlier detection (circuit breaking) state'),
});

const skillSummary = z.object({
  id: z.string(),
  name: z.string(),
  description: z.string().optional(),
  tags: z.array(z.string()),
  examples: z.array(z.string()).optional(),
  inputModes: z.array(z.string()).optional(),
  outputModes: z.array(z.string()).optional(),
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
  settings: z.record(z.string(), z.unknown()).optional().describe('clearances, data tags, rate limit and declared skills'),
  skills: z.array(skillSummary).describe("every skill routing knows: the card's, then those declared in config"),
  card: z
    .object({
      sourceUrl: z.string(),
      fetchedAt: timestamp,
      name: z.string().optional(),
      skills: z.array(skillSummary),
      digest: z.string().describe("SHA-256 of the card's RFC 8785 canonical JSON"),
    })
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

const sha256Hex = z.string().describe('SHA-256, 64 lowercase hex digits');

export const auditRecord = z.object({
  seq: z.number().int().describe('position in the chain: 1, 2, 3, ... with no gaps'),
  time: timestamp,
  tenant: z.string().optional(),
  actor: z.string().optional().describe('an identity (SPIFFE ID), admin-token, anonymous, system, or a client address'),
  action: z.string().describe('e.g. authn, enroll.token, cert.issue, cert.revoke, token.issue, admin.write'),
  target: z.string().optional(),
  decision: z.enum(['allow', 'deny', 'info']),
  reason: z.string().optional(),
  requestId: z.string().optional(),
  detail: z.record(z.string(), z.unknown()).optional().describe('non-sensitive facts (a small JSON object)'),
  excerpt: z.string().optional().describe("opaque: sealed with the tenant's data key"),
  prevHash: sha256Hex.describe("the previous record's hash (64 zeros for seq 1)"),
  hash: sha256Hex.describe('SHA-256 of the canonical JSON (RFC 8785) of this record without hash (docs/audit.md)'),
});

export const auditList = z.object({ records: z.array(auditRecord) });

export const certificatesQuery = z.object({
  agent: nameSchema.optional().describe('only this agent'),
  revoked: z.enum(['true', 'false']).optional().describe('only revoked (true) or unrevoked (false) certificates'),
});

const isoTime = z
  .string()
  .refine((text) => /^\d{4}-\d{2}-\d{2}/.test(text) && !Number.isNaN(Date.parse(text)), 'must be an ISO-8601 time, e.g. 2025-01-31T12:00:00Z');

const auditFilters = {
  tenant: nameSchema.optional().describe('only records of this tenant'),
  action: z.string().max(100).optional().describe('only this action, e.g. enroll.token, cert.issue, cert.revoke, admin.write'),
  since: isoTime.optional().describe('only records at or after this time (ISO-8601)'),
  until: isoTime.optional().describe('only records before this time (ISO-8601)'),
  after: z.string().regex(/^\d+$/, 'must be a record seq (integer)').optional().describe('only records with seq greater than this'),
};

export const auditQuery = z.object({
  ...auditFilters,
  limit: z.string().regex(/^\d+$/, 'must be an integer').optional().describe('at most this many records (1-1000, default 100)'),
});

export const auditExportQuery = z.object({
  ...auditFilters,
  limit: z.string().regex(/^\d+$/, 'must be an integer').optional().describe('at most this many records (default: all)'),
});

export const auditVerifyResult = z.object({
  ok: z.boolean().describe('true when every record and checkpoint verifies'),
  records: z.number().int().describe('records verified (before the first bad one when ok is false)'),
  checkpoints: z.number().int().describe('signed checkpoints that verified'),
  keysAuthenticated: z.boolean().describe("whether the checkpoint keys were proven to be this gateway's (sealed by its master key)"),
  lastSeq: z.number().int().optional().describe('when ok: the last record'),
  lastHash: sha256Hex.optional().describe("when ok: the last record's hash"),
  seq: z.number().int().optional().describe('when not ok: the first bad record'),
  problem: z.enum(['modified', 'deleted', 'inserted', 'reordered', 'truncated', 'bad_checkpoint']).optional(),
  message: z.string().optional().describe('when not ok: what is wrong, in words'),
});
