export { GatewayMetrics, MAX_TENANT_AGENT_PAIRS, OTHER_LABEL, UNRESOLVED_LABEL } from './metrics.js';
export { generateAdminToken, hashToken, ADMIN_TOKEN_PREFIX } from './tokens.js';
export { startAdminServer, type AdminServer, type AdminServerOptions } from './server.js';
export { adminRoutes, type Route, type StatusSnapshot } from './routes.js';
export { MAX_ADMIN_BODY_BYTES } from './http.js';
export { GATEWAY_VERSION } from './version.js';
export { noopTelemetry, type DataplaneTelemetry, type UpstreamErrorKind } from './telemetry.js';
