import { existsSync } from 'node:fs';
import path from 'node:path';
import type { OffboardSummary } from '../tenancy/lifecycle.js';
import { API_OPTIONS, apiFor, show } from './admin-api.js';
import { CONFIG_FILE_OPTION, stringValue, type Command } from './command.js';
import { configFileFrom, effectiveConfig } from './config-commands.js';
import { CliError, readMapping, UsageError } from './io.js';
import { formatFields, formatTable } from './table.js';

interface ExplainStep {
  kind: string;
  side?: string;
  rule?: string;
  effect?: string;
  matched?: boolean;
  decided?: boolean;
  field?: string;
  reason?: string;
  [key: string]: unknown;
}

interface Explanation {
  decision: { allow: boolean; code: string; rule?: string; sourceRule?: string; message: string };
  caller: string;
  target: string;
  kind: string;
  steps: ExplainStep[];
}

export const tenancyCommands: Command[] = [
  {
    name: 'tenant offboard',
    args: 'NAME',
    positionals: { min: 1, max: 1 },
    summary: 'offboard a tenant (irreversible): remove its agents, cut its traffic, revoke its certificates, destroy its data keys',
    options: { yes: { type: 'boolean', help: 'confirm: the data keys are destroyed and what they sealed becomes unreadable' }, ...API_OPTIONS },
    async run(context) {
      const name = context.positionals[0]!;
      if (!context.values.yes) throw new UsageError(`offboarding ${name} cannot be undone: add --yes to confirm`, 'tenant offboard');
      const body = (await apiFor(context).call('DELETE', ['tenants', name])) as OffboardSummary;
      return show(context, body, () => [
        `tenant ${name} offboarded`,
        ...formatFields([
          ['agents removed', String(body.agentsRemoved)],
          ['certificates revoked', String(body.certificatesRevoked)],
          ['CAs retired', body.casRetired.join(', ') || 'none'],
          ['requests cut', String(body.requestsCut)],
          ['data keys destroyed', String(body.dataKeysDestroyed)],
        ]),
      ]);
    },
  },
  {
    name: 'policy get',
    args: 'TENANT',
    positionals: { min: 1, max: 1 },
    summary: "print a tenant's policy and the defaults it falls back to",
    options: API_OPTIONS,
    async run(context) {
      const body = await apiFor(context).call('GET', ['tenants', context.positionals[0]!, 'policy']);
      context.io.out(JSON.stringify(body, null, 2));
      return 0;
    },
  },
  {
    name: 'policy set',
    args: 'TENANT',
    positionals: { min: 1, max: 1 },
    summary: "replace a tenant's policy from a YAML or JSON file (validated; only that tenant is touched)",
    options: { file: { type: 'string', placeholder: 'FILE', help: 'the policy: intraTenant, anonymous, requireClearance, rules' }, ...API_OPTIONS },
    async run(context) {
      const file = stringValue(context.values, 'file');
      if (!file) throw new UsageError('--file is required', 'policy set');
      const tenant = context.positionals[0]!;
      const policy = await readMapping(file);
      const body = (await apiFor(context).call('PUT', ['tenants', tenant, 'policy'], policy)) as { rules?: unknown[] };
      return show(context, body, () => [`policy of tenant ${tenant} replaced (${body.rules?.length ?? 0} rules)`]);
    },
  },
  {
    name: 'policy explain',
    positionals: { min: 0, max: 0 },
    summary: 'would --from call --to? prints allow/deny, the rule that decided and every rule considered',
    options: {
      from: { type: 'string', placeholder: 'TENANT/AGENT', help: 'the caller, or "anonymous" (required)' },
      to: { type: 'string', placeholder: 'TENANT/AGENT', help: 'the target (required)' },
      method: { type: 'string', placeholder: 'METHOD', help: 'HTTP method (default POST)' },
      path: { type: 'string', placeholder: 'PATH', help: 'path at the agent (default /)' },
      'data-tags': { type: 'string', placeholder: 'TAGS', help: 'comma-separated data tags the request carries' },
      ...API_OPTIONS,
    },
    async run(context) {
      const from = stringValue(context.values, 'from');
      const to = stringValue(context.values, 'to');
      if (!from || !to) throw new UsageError('--from and --to are required', 'policy explain');
      const body = (await apiFor(context).call('GET', ['policy', 'explain'], undefined, {
        from,
        to,
        method: stringValue(context.values, 'method'),
        path: stringValue(context.values, 'path'),
        dataTags: stringValue(context.values, 'data-tags'),
      })) as Explanation;
      show(context, body, () => {
        const decision = body.decision;
        // A rule decides an allow, or a deny rule; a missing consent is decided by its absence.
        const rules = decision.allow || decision.code === 'denied_by_rule' ? [decision.rule, decision.sourceRule].filter(Boolean).join(' + ') : '';
        return [
          `${decision.allow ? 'ALLOW' : 'DENY'} ${body.caller} -> ${body.target} (${body.kind})`,
          `decided by: ${rules ? `${rules} (${decision.code})` : decision.code}`,
          decision.message,
          '',
          ...formatTable(
            ['STEP', 'SIDE', 'RULE', 'EFFECT', 'MATCHED', 'WHY NOT'],
            body.steps.map((step) => [
              step.decided ? `${step.kind} *` : step.kind,
              step.side ?? '',
              step.rule ?? '',
              step.effect ?? '',
              step.matched === undefined ? '' : step.matched ? 'yes' : 'no',
              step.reason ?? step.field ?? '',
            ]),
          ),
        ];
      });
      // The exit code answers the question too, for scripts.
      return body.decision.allow ? 0 : 3;
    },
  },
  {
    name: 'admin rotate-master-key',
    positionals: { min: 0, max: 0 },
    summary: 'stop the gateway first: re-wrap every key sealed by the master key (CA keys, tenant data keys) under a new one',
    options: {
      'new-key-file': { type: 'string', placeholder: 'FILE', help: 'the new master key: 32 bytes as 64 hex digits or base64 (required)' },
      home: { type: 'string', placeholder: 'DIR', help: 'state directory (DMSC_HOME; default ./.dmsc)' },
      ...CONFIG_FILE_OPTION,
    },
    async run({ values, io }) {
      const newKeyFile = stringValue(values, 'new-key-file');
      if (!newKeyFile) throw new UsageError('--new-key-file is required', 'admin rotate-master-key');
      const { stateDir, config } = await effectiveConfig(configFileFrom(values, io), { home: values.home }, io.env);
      if (!existsSync(stateDir)) throw new CliError(`no gateway state in ${path.resolve(stateDir)}`);
      const { rotateMasterKey } = await import('../identity/master-key.js');
      const result = await rotateMasterKey({ stateDir, config, env: io.env, newKeyFile: path.resolve(newKeyFile) });
      io.out(`re-wrapped ${result.rewrapped} sealed keys under the new master key`);
      io.err(result.note);
      return 0;
    },
  },
];

interface AdminTokenView {
  id: string;
  tenant: string;
  description?: string;
  createdAt: string;
  token?: string;
}

export const adminTokenCommands: Command[] = [
  {
    name: 'admin token create',
    positionals: { min: 0, max: 0 },
    summary: "make a read-only Admin API token for one tenant's operators (printed once)",
    options: {
      tenant: { type: 'string', placeholder: 'TENANT', help: 'the tenant it may read (required)' },
      description: { type: 'string', placeholder: 'TEXT', help: 'who or what it is for' },
      ...API_OPTIONS,
    },
    async run(context) {
      const tenant = stringValue(context.values, 'tenant');
      if (!tenant) throw new UsageError('--tenant is required', 'admin token create');
      const description = stringValue(context.values, 'description');
      const body = (await apiFor(context).call('POST', ['admin-tokens'], { tenant, ...(description ? { description } : {}) })) as AdminTokenView;
      if (context.values.json) return show(context, body, () => []);
      context.io.out(body.token!);
      context.io.err(`Token ${body.id} above (shown once, stored hashed): reads tenant ${tenant} only.`);
      return 0;
    },
  },
  {
    name: 'admin token list',
    positionals: { min: 0, max: 0 },
    summary: 'list tenant-scoped admin tokens (never the tokens themselves)',
    options: { tenant: { type: 'string', placeholder: 'TENANT', help: 'only this tenant' }, ...API_OPTIONS },
    async run(context) {
      const body = (await apiFor(context).call('GET', ['admin-tokens'], undefined, { tenant: stringValue(context.values, 'tenant') })) as { tokens: AdminTokenView[] };
      return show(context, body, () =>
        formatTable(['ID', 'TENANT', 'CREATED', 'DESCRIPTION'], body.tokens.map((t) => [t.id, t.tenant, t.createdAt, t.description ?? ''])),
      );
    },
  },
  {
    name: 'admin token revoke',
    args: 'ID',
    positionals: { min: 1, max: 1 },
    summary: 'revoke a tenant-scoped admin token (effective at once)',
    options: API_OPTIONS,
    async run(context) {
      await apiFor(context).call('DELETE', ['admin-tokens', context.positionals[0]!]);
      context.io.out(`admin token ${context.positionals[0]} revoked`);
      return 0;
    },
  },
];
