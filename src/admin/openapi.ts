import { z } from 'zod';
import { nameSchema } from '../config/schema.js';
import type { Route } from './routes.js';
import { TENANCY_SCHEMA_NAMES } from './routes-tenancy.js';
import { ROUTING_SCHEMA_NAMES } from './routes-routing.js';
import * as schemas from './schemas.js';

type JsonObject = Record<string, unknown>;

const SCHEMA_NAMES = new Map<z.ZodType, string>([
  [schemas.createTenantBody, 'CreateTenantRequest'],
  [schemas.createAgentBody, 'CreateAgentRequest'],
  [schemas.putAgentBody, 'PutAgentRequest'],
  [schemas.tenantRecord, 'Tenant'],
  [schemas.agentView, 'Agent'],
  [schemas.tenantList, 'TenantList'],
  [schemas.agentList, 'AgentList'],
  [schemas.gatewayStatus, 'GatewayStatus'],
  [schemas.probeStatus, 'ProbeStatus'],
  [schemas.errorBody, 'Error'],
  [schemas.createBootstrapTokenBody, 'CreateBootstrapTokenRequest'],
  [schemas.bootstrapTokenCreated, 'BootstrapToken'],
  [schemas.certificateRecord, 'Certificate'],
  [schemas.certificateList, 'CertificateList'],
  [schemas.revokeBody, 'RevokeRequest'],
  [schemas.revokedSerials, 'RevokedSerials'],
  [schemas.clientSecretCreated, 'ClientSecret'],
  [schemas.auditList, 'AuditList'],
  [schemas.auditVerifyResult, 'AuditVerifyResult'],
  ...TENANCY_SCHEMA_NAMES,
  ...ROUTING_SCHEMA_NAMES,
]);

const STANDARD_FORMATS = new Set(['date-time', 'date', 'time', 'duration', 'email', 'hostname', 'ipv4', 'ipv6', 'uri', 'uri-reference', 'uuid', 'regex']);

const ERROR_DESCRIPTIONS: Record<number, string> = {
  400: 'bad_request (malformed JSON) or invalid (the message names the field)',
  401: 'unauthorized: missing or unknown admin token',
  404: 'not_found',
  409: 'conflict (already exists) or managed_by_config (defined in the config file)',
  413: 'body_too_large: request body over 1 MiB',
  415: 'unsupported_media_type: the body must be application/json',
  501: 'not_configured: the built-in identity (or its OAuth token service) is not enabled',
};

/** JSON Schema 2020-12 (what OpenAPI 3.1 uses) for schemas, request bodies as accepted (input), responses as sent (output). */
function componentSchemas(routes: readonly Route[]): JsonObject {
  const inputs = z.registry<{ id: string }>();
  const outputs = z.registry<{ id: string }>();
  const add = (registry: typeof inputs, schema: z.ZodType) => {
    const id = SCHEMA_NAMES.get(schema);
    if (!id) throw new Error('every schema in the admin route table needs a name in SCHEMA_NAMES');
    if (!registry.has(schema)) registry.add(schema, { id });
  };
  add(outputs, schemas.errorBody);
  for (const r of routes) {
    if (r.body) add(inputs, r.body);
    for (const response of Object.values(r.responses)) if (response.schema) add(outputs, response.schema);
  }
  const options = {
    uri: (id: string) => `#/components/schemas/${id}`,
    unrepresentable: 'throw' as const,
    // zod names some checks as formats JSON Schema does not define (e.g. "starts_with"); the pattern already says it.
    override: ({ jsonSchema }: { jsonSchema: JsonObject }) => {
      if (typeof jsonSchema.format === 'string' && !STANDARD_FORMATS.has(jsonSchema.format)) delete jsonSchema.format;
    },
  };
  const all = {
    ...z.toJSONSchema(inputs, { ...options, io: 'input' }).schemas,
    ...z.toJSONSchema(outputs, { ...options, io: 'output' }).schemas,
  };
  // Components are embedded in the document: drop the standalone-document keywords.
  return Object.fromEntries(
    Object.entries(all).map(([id, schema]) => {
      const { $schema: _schema, $id: _id, ...rest } = schema as JsonObject;
      return [id, rest];
    }),
  );
}

function ref(schema: z.ZodType): JsonObject {
  return { $ref: `#/components/schemas/${SCHEMA_NAMES.get(schema)}` };
}

function inlineSchema(schema: z.ZodType): JsonObject {
  const json = z.toJSONSchema(schema, { io: 'input' }) as JsonObject;
  delete json.$schema;
  return json;
}

function pathParameters(path: string): JsonObject[] {
  return [...path.matchAll(/\{(\w+)\}/g)].map((match) =>
    match[1] === 'serial'
      ? { name: 'serial', in: 'path', required: true, description: 'certificate serial number (hex)', schema: inlineSchema(schemas.serialSchema) }
      : { name: match[1], in: 'path', required: true, description: `${match[1]} name (a DNS label)`, schema: inlineSchema(nameSchema) },
  );
}

function queryParameters(query: z.ZodObject | undefined): JsonObject[] {
  if (!query) return [];
  return Object.entries(query.shape).map(([name, field]) => {
    const schema = inlineSchema(field as z.ZodType);
    const { description, ...rest } = schema;
    return { name, in: 'query', required: false, ...(description ? { description } : {}), schema: rest };
  });
}

function operation(r: Route): JsonObject {
  const responses: JsonObject = {};
  for (const [status, spec] of Object.entries(r.responses)) {
    const contentType = spec.contentType ?? (spec.schema ? 'application/json' : undefined);
    responses[status] = {
      description: spec.description,
      ...(contentType ? { content: { [contentType]: spec.schema ? { schema: ref(spec.schema) } : {} } } : {}),
    };
  }
  const errorStatuses = new Set(r.errors);
  if (r.auth) errorStatuses.add(401);
  if (r.body) [400, 413, 415].forEach((status) => errorStatuses.add(status));
  if (r.path.includes('{')) errorStatuses.add(400);
  for (const status of [...errorStatuses].sort()) {
    responses[String(status)] = {
      description: ERROR_DESCRIPTIONS[status] ?? 'error',
      content: { 'application/json': { schema: ref(schemas.errorBody) } },
    };
  }
  const parameters = [...pathParameters(r.path), ...queryParameters(r.query)];
  return {
    operationId: r.operationId,
    summary: r.summary,
    tags: [r.tag],
    security: r.auth ? [{ bearer: [] }] : [],
    ...(parameters.length ? { parameters } : {}),
    ...(r.body ? { requestBody: { required: !r.bodyOptional, content: { 'application/json': { schema: ref(r.body) } } } } : {}),
    responses,
  };
}

/** The OpenAPI 3.1 document of the admin listener, generated from the same table that serves it. */
export function buildOpenApiDocument(routes: readonly Route[], version: string): JsonObject {
  const paths: Record<string, JsonObject> = {};
  for (const r of routes) {
    paths[r.path] ??= {};
    paths[r.path]![r.method.toLowerCase()] = operation(r);
  }
  return {
    openapi: '3.1.0',
    info: {
      title: 'DMSC gateway Admin API',
      version,
      description:
        'Control plane of the DMSC gateway: tenants, agents and their endpoints, plus health and metrics. ' +
        'Errors are JSON {"error":{"code","message"}}. Tenants and agents defined in the config file are read-only here (409 managed_by_config).',
    },
    tags: [
      { name: 'health', description: 'Liveness, readiness and Prometheus metrics (no authentication)' },
      { name: 'status', description: 'The gateway itself' },
      { name: 'tenants', description: 'Isolated namespaces' },
      { name: 'agents', description: 'Workloads registered under a tenant, with their endpoints (replicas)' },
      { name: 'identity', description: 'Built-in CA: enrollment tokens, issued certificates, revocation, OAuth client secrets' },
      { name: 'audit', description: 'The audit trail' },
    ],
    paths,
    components: {
      schemas: componentSchemas(routes),
      securitySchemes: {
        bearer: { type: 'http', scheme: 'bearer', description: 'The admin token (printed at first start, or DMSC_ADMIN_TOKEN)' },
      },
    },
  };
}
