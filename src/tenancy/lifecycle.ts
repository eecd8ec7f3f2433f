import type { Pki } from '../identity/types.js';
import type { RegistryAdmin } from '../registry/types.js';
import type { TenantRecord } from '../store/types.js';
import type { TenantKeys } from './keys.js';
import type { Tenancy } from './runtime.js';
import type { AuditSink } from './stages.js';

export interface LifecycleDeps {
  registry: RegistryAdmin;
  pki: Pick<Pki, 'offboardTenant'>;
  keys: TenantKeys;
  tenancy: Tenancy;
  audit: AuditSink;
  /** The tenant's scoped admin tokens go with it (a tenant of the same name later must not inherit them). */
  adminTokens: { list(tenant: string): Promise<Array<{ id: string }>>; remove(id: string): Promise<boolean> };
}

export interface OffboardSummary {
  tenant: string;
  agentsRemoved: number;
  certificatesRevoked: number;
  casRetired: string[];
  requestsCut: number;
  dataKeysDestroyed: number;
}

/**
 * Onboarding in one step: the registry's tenant-added hooks create the tenant's CA and data key
 * before the tenant is stored; its spec (policy, limits, masking) is validated and applied.
 */
export async function onboardTenant(deps: LifecycleDeps, name: string, spec: Record<string, unknown> | undefined, actor: string): Promise<TenantRecord> {
  const record = await deps.registry.createTenant(name, spec);
  deps.audit.record({ tenant: name, actor, action: 'tenant.onboard', target: name, decision: 'info', reason: 'CA, data key, policy and limits created' });
  return record;
}

/**
 * Offboarding in one step, in the order that closes the door first: routing and policy stop
 * (registry removal), in-flight requests are cut, every certificate is revoked and the CAs retired
 * (live connections close), and the data keys are destroyed, so whatever the gateway stored sealed
 * for the tenant can no longer be read (crypto-shredding). Irreversible.
 */
export async function offboardTenant(deps: LifecycleDeps, name: string, actor: string): Promise<OffboardSummary> {
  const agents = deps.registry.listAgents(name).length; // not_found when absent
  await deps.registry.deleteTenant(name); // managed_by_config for config tenants
  const requestsCut = deps.tenancy.cutTraffic(name);
  const pki = await deps.pki.offboardTenant(name, actor);
  const dataKeysDestroyed = await deps.keys.destroy(name);
  for (const token of await deps.adminTokens.list(name)) await deps.adminTokens.remove(token.id);
  const summary: OffboardSummary = {
    tenant: name,
    agentsRemoved: agents,
    certificatesRevoked: pki.revoked.length,
    casRetired: pki.retiredCas,
    requestsCut,
    dataKeysDestroyed,
  };
  deps.audit.record({
    tenant: name,
    actor,
    action: 'tenant.offboard',
    target: name,
    decision: 'info',
    reason: `${agents} agents removed, ${pki.revoked.length} certificates revoked, ${dataKeysDestroyed} data keys destroyed`,
  });
  return summary;
}
