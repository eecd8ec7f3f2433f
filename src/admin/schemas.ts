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
