export { ExplainError, Tenancy, tenantSpecProblems, tenantSpecSchema, type TenantSpec, type TenancyOptions } from './runtime.js';
export { authorizeStage, candidatePolicyCheck, concurrencyStage, maskStage, rateLimitStage, type AuditSink, type TenancyStageOptions } from './stages.js';
export { TenantKeys, TenantKeyUnavailable } from './keys.js';
export { gatewayPolicySchema, type Explanation, type PolicyDefaults } from './policy/index.js';
export { offboardTenant, onboardTenant, type LifecycleDeps, type OffboardSummary } from './lifecycle.js';
