import { z } from 'zod';
import { rateSchema, tenantLimitsSchema } from '../tenancy/limits/schema.js';
import { maskingSchema } from '../tenancy/masking/schema.js';
import { dataTagSchema, gatewayPolicySchema, tenantPolicyIssues, tenantPolicySchema } from '../tenancy/policy/schema.js';
import { agentLoadPollSchema, balancingSchema } from '../routing/balancing-config.js';
import { routingSchema, tenantRoutingSchema } from '../routing/config.js';

// Every limit has a safe default; every field can be omitted from YAML.

const port = z.number().int().min(0).max(65535);
const positiveMs = z.number().int().positive();

const httpUrl = z
  .string()
  .refine((value) => {
    try {
      const url = new URL(value);
      return (url.protocol === 'http:' || url.protocol === 'https:') && !url.search && !url.hash && !url.username;
    } catch {
      return false;
    }
  }, 'must be an http:// or https:// URL such as http://127.0.0.1:7001 or http://10.0.0.5:80/base (no query, fragment or credentials)');

export const NAME_PATTERN = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
export const nameSchema = z
  .string()
  .regex(NAME_PATTERN, 'must be a DNS label: lowercase letters, digits and "-", 1-63 characters, not starting or ending with "-"');

export const healthCheckSchema = z
  .object({
    enabled: z.boolean().default(true),
    path: z.string().startsWith('/').default('/'),
    intervalMs: positiveMs.default(5000),
    timeoutMs: positiveMs.default(2000),
    healthyThreshold: z.number().int().min(1).max(100).default(1),
    unhealthyThreshold: z.number().int().min(1).max(100).default(2),
  })
  .strict();

/** An agent's own health-check fields: no defaults, so unset fields fall back to the top-level settings. */
export const healthCheckOverrideSchema = z
  .object({
    enabled: z.boolean(),
    path: z.string().startsWith('/'),
    intervalMs: positiveMs,
    timeoutMs: positiveMs,
    healthyThreshold: z.number().int().min(1).max(100),
    unhealthyThreshold: z.number().int().min(1).max(100),
  })
  .partial()
  .strict();

/** A skill declared in config, in the A2A Agent Card's skill shape (for agents without a card, or to add to it). */
export const skillSchema = z
  .object({
    id: z.string().min(1).max(128),
    name: z.string().min(1).max(256).optional(),
    description: z.string().max(4096).optional(),
    tags: z.array(z.string().min(1).max(64)).max(64).default([]),
    examples: z.array(z.string().min(1).max(1024)).max(64).optional(),
    inputModes: z.array(z.string().min(1).max(128)).max(32).optional(),
    outputModes: z.array(z.string().min(1).max(128)).max(32).optional(),
  })
  .strict();

export const agentSchema = z
  .object({
    name: nameSchema,
    endpoints: z.array(httpUrl).min(1).max(256),
    tags: z.array(z.string().min(1).max(64)).max(64).default([]),
    healthCheck: healthCheckOverrideSchema.optional(),
    /** Data tags this agent may receive when the tenant's policy requires clearance. */
    clearances: z.array(dataTagSchema).max(64).optional(),
    /** Data tags every request this agent sends carries. */
    dataTags: z.array(dataTagSchema).max(64).optional(),
    /** This agent's rate limit as a target (overrides the tenant's per-agent default). */
    limits: rateSchema.optional(),
    /** Skills for capability routing, beside those of its Agent Card (a card skill with the same id wins). */
    skills: z.array(skillSchema).max(256).optional(),
    /** Polling this agent's endpoints for their load: `false`, or overrides of `balancing.loadPoll` (which turn it on). */
    loadPoll: agentLoadPollSchema.optional(),
  })
  .strict();

const JWT_ALGORITHMS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA'] as const;

/** An external OAuth 2.0 / OIDC issuer whose JWTs authenticate this tenant's agents. */
export const jwtIssuerSchema = z
  .object({
    issuer: z.string().min(1),
    /** JWKS URL; keys are cached and re-fetched when a token names an unknown `kid`. */
    jwksUri: httpUrl,
    audiences: z.array(z.string().min(1)).min(1),
    /** Allow-list; `none` and HMAC algorithms are never accepted for issuers with public keys. */
    algorithms: z.array(z.enum(JWT_ALGORITHMS)).min(1).default(['RS256', 'ES256', 'PS256', 'EdDSA']),
    /** The claim naming the agent: its name in the tenant, or its SPIFFE ID. */
    agentClaim: z.string().min(1).default('sub'),
  })
  .strict();

export const tenantSchema = z
  .object({
    name: nameSchema,
    agents: z.array(agentSchema).max(10000).default([]),
    oauth: z
      .object({ issuers: z.array(jwtIssuerSchema).max(16).default([]) })
      .strict()
      .prefault({}),
    /** Who may call this tenant's agents and whom its agents may call (deny by default). */
    policy: tenantPolicySchema.optional(),
    /** Rate limits and quotas, concurrency per endpoint. */
    limits: tenantLimitsSchema.optional(),
    /** PII detection and masking of request bodies. */
    masking: maskingSchema.optional(),
    /** Intent routing for the tenant's A2A endpoint: fallback agent, confidence threshold. */
    routing: tenantRoutingSchema.optional(),
  })
  .strict();

const identitySchema = z
  .object({
    /** SPIFFE trust domain of agent identities; defaults to `domain`. */
    trustDomain: z
      .string()
      .regex(/^[a-z0-9]([a-z0-9.-]{0,253}[a-z0-9])?$/, 'must be a lowercase DNS name such as example.org')
      .optional(),
    /** Where the master key comes from; default: <stateDir>/master.key, generated at first start. */
    masterKey: z
      .object({ file: z.string().min(1).optional(), env: z.string().min(1).optional() })
      .strict()
      .refine((value) => !(value.file && value.env), { message: 'give file or env, not both' })
      .prefault({}),
    /** An existing CA (PEM certificate + key) to use as the root instead of a generated one. */
    rootCa: z
      .object({ certFile: z.string().min(1), keyFile: z.string().min(1) })
      .strict()
      .optional(),
    certTtlMs: z.number().int().min(60_000).max(90 * 24 * 3600_000).default(24 * 3600_000),
    intermediateTtlMs: z.number().int().min(3600_000).default(90 * 24 * 3600_000),
    clockSkewMs: z.number().int().min(0).max(3600_000).default(5 * 60_000),
    /** Lifetime of enrollment bootstrap tokens unless the operator asks otherwise. */
    bootstrapTokenTtlMs: z.number().int().min(60_000).max(30 * 24 * 3600_000).default(3600_000),
    /** Lifetime of access tokens from the built-in token endpoint. */
    accessTokenTtlMs: z.number().int().min(60_000).max(24 * 3600_000).default(10 * 60_000),
  })
  .strict();

const tlsListenerSchema = z
  .object({
    enabled: z.boolean().default(true),
    host: z.string().min(1).default('0.0.0.0'),
    port: port.default(8443),
    /** PEM files; when absent a development CA and server certificate are generated in the state dir. */
    certFile: z.string().optional(),
    keyFile: z.string().optional(),
    /** Let requests without a certificate or token through (as no identity). Off by default. */
    allowAnonymous: z.boolean().default(false),
    mtls: z
      .object({
        enabled: z.boolean().default(false),
        /** PEM bundle of CAs that client certificates must chain to; defaults to the development CA. */
        caFile: z.string().optional(),
      })
      .strict()
      .prefault({}),
  })
  .strict()
  .refine((value) => Boolean(value.certFile) === Boolean(value.keyFile), {
    message: 'certFile and keyFile must be given together',
  });

const plainListenerSchema = z
  .object({
    enabled: z.boolean().default(true),
    host: z.string().min(1).default('127.0.0.1'),
    port: port.default(8080),
    /**
     * Let requests without a certificate or token through (as no identity). Only for a loopback
     * listener on a single-tenant host; refused by policy stages that need an identity.
     */
    allowAnonymous: z.boolean().default(false),
  })
  .strict();

const adminListenerSchema = z
  .object({
    host: z.string().min(1).default('127.0.0.1'),
    port: port.default(9400),
  })
  .strict();

export const limitsSchema = z
  .object({
    maxHeaderBytes: z.number().int().min(1024).max(1024 * 1024).default(16 * 1024),
    maxBodyBytes: z.number().int().min(0).default(1024 * 1024 * 1024),
    maxConcurrentRequests: z.number().int().min(1).default(10000),
    maxConnectionsPerEndpoint: z.number().int().min(1).max(10000).default(256),
  })
  .strict();

export const timeoutsSchema = z
  .object({
    connectMs: positiveMs.default(5000),
    firstByteMs: positiveMs.default(60000),
    idleMs: positiveMs.default(120000),
    totalMs: positiveMs.default(600000),
    /** Wait for one attempt's response headers before trying another endpoint (idempotent requests); unset: firstByteMs. */
    perTryMs: positiveMs.optional(),
    shutdownDrainMs: positiveMs.default(15000),
  })
  .strict();

export const configSchema = z
  .object({
    stateDir: z.string().optional(),
    /** Host-form addressing: <agent>.<tenant>.<domain> */
    domain: z.string().min(1).default('dmsc.localhost'),
    listeners: z
      .object({
        tls: tlsListenerSchema.prefault({}),
        plain: plainListenerSchema.prefault({}),
        admin: adminListenerSchema.prefault({}),
      })
      .strict()
      .prefault({}),
    limits: limitsSchema.prefault({}),
    timeouts: timeoutsSchema.prefault({}),
    healthCheck: healthCheckSchema.prefault({}),
    /** Endpoint choice, outlier ejection and retries (docs/balancing.md). */
    balancing: balancingSchema.prefault({}),
    identity: identitySchema.prefault({}),
    cards: z
      .object({
        refreshIntervalMs: positiveMs.default(300000),
        fetchTimeoutMs: positiveMs.default(5000),
        maxBytes: z.number().int().min(1024).default(1024 * 1024),
      })
      .strict()
      .prefault({}),
    logging: z
      .object({
        level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
        /** One JSON line per request; off by default like Envoy and Istio. */
        access: z.boolean().default(false),
      })
      .strict()
      .prefault({}),
    audit: z
      .object({
        /** all: every delegation decision is recorded; denials: only refusals (cheaper under heavy traffic). */
        decisions: z.enum(['all', 'denials']).default('all'),
        /**
         * process: a record is committed (SQLite WAL) before its response is sent: survives kill -9.
         * power: also fsynced: survives power loss, one fsync per commit batch.
         */
        durability: z.enum(['process', 'power']).default('process'),
        /** Sign a checkpoint of the chain after this many records, or this often while there are new ones. */
        checkpointEveryRecords: z.number().int().min(1).max(1_000_000).default(1000),
        checkpointIntervalMs: z.number().int().min(1000).max(24 * 3600_000).default(60_000),
      })
      .strict()
      .prefault({}),
    /** Limits and masking for every tenant that sets none of its own (onboarding applies them). */
    tenantDefaults: z
      .object({ limits: tenantLimitsSchema.optional(), masking: maskingSchema.optional() })
      .strict()
      .prefault({}),
    /** Gateway-wide policy defaults (each tenant may override them). */
    policy: gatewayPolicySchema.prefault({}),
    /** Capability and intent routing (the tenants' A2A endpoints, /capabilities/...). */
    routing: routingSchema.prefault({}),
    tenants: z.array(tenantSchema).default([]),
  })
  .strict()
  .superRefine((config, ctx) => {
    const seenTenants = new Set<string>();
    config.tenants.forEach((tenant, ti) => {
      if (tenant.policy) {
        for (const issue of tenantPolicyIssues(tenant.name, tenant.policy)) {
          ctx.addIssue({ code: 'custom', path: ['tenants', ti, 'policy', ...issue.path], message: issue.message });
        }
      }
      if (seenTenants.has(tenant.name)) {
        ctx.addIssue({ code: 'custom', path: ['tenants', ti, 'name'], message: `duplicate tenant "${tenant.name}"` });
      }
      seenTenants.add(tenant.name);
      const seenAgents = new Set<string>();
      tenant.agents.forEach((agent, ai) => {
        if (seenAgents.has(agent.name)) {
          ctx.addIssue({
            code: 'custom',
            path: ['tenants', ti, 'agents', ai, 'name'],
            message: `duplicate agent "${agent.name}" in tenant "${tenant.name}"`,
          });
        }
        seenAgents.add(agent.name);
      });
    });
  });

export type GatewayConfig = z.infer<typeof configSchema>;
export type TenantConfig = z.infer<typeof tenantSchema>;
export type AgentConfig = z.infer<typeof agentSchema>;
export type HealthCheckConfig = z.infer<typeof healthCheckSchema>;
export type LimitsConfig = z.infer<typeof limitsSchema>;
export type TimeoutsConfig = z.infer<typeof timeoutsSchema>;
export type IdentityConfig = z.infer<typeof identitySchema>;
export type JwtIssuerConfig = z.infer<typeof jwtIssuerSchema>;
