import type { AuditEvent } from './record.js';

/** An Admin API write as the admin listener saw it. */
export interface AdminWrite {
  method: string;
  /** The path without the query. */
  path: string;
  status: number;
  /** 'admin-token' when authenticated, else 'anonymous'. */
  actor: string;
}

const TENANT_PATH = /^\/admin\/v1\/tenants\/([^/]+)/;

/** The audit record of an Admin API write: action admin.write, allowed when it succeeded. */
export function adminWriteEvent(write: AdminWrite): AuditEvent {
  let tenant: string | undefined;
  const raw = TENANT_PATH.exec(write.path)?.[1];
  if (raw) {
    try {
      tenant = decodeURIComponent(raw);
    } catch {
      tenant = raw;
    }
  }
  return {
    ...(tenant ? { tenant } : {}),
    actor: write.actor,
    action: 'admin.write',
    target: `${write.method} ${write.path}`,
    decision: write.status < 400 ? 'allow' : 'deny',
    reason: `HTTP ${write.status}`,
  };
}
