import {
  PUBLIC_DATA_TAG,
  PolicyError,
  formatPolicyPath,
  policyDefaultsSchema,
  ruleDirection,
  tenantPolicyIssues,
  type PolicyDefaults,
  type PolicyEffect,
  type PolicyRule,
  type TenantPolicy,
} from './schema.js';
import { PrefixTree } from './prefix-tree.js';

/** Who is calling. No tenant: an anonymous caller (a listener with allowAnonymous). */
export interface Caller {
  readonly tenant?: string;
  readonly agent?: string;
  readonly spiffeId?: string;
  /** The calling agent's tags. */
  readonly labels: readonly string[];
}

export interface TargetSkill {
  readonly id: string;
  readonly tags: readonly string[];
}

/**
 * The agent being called, as the registry knows it. Treated as immutable: build it once per agent
 * version (not per request) and replace it when the agent changes; derived sets are cached per object.
 */
export interface TargetAgent {
  readonly tenant: string;
  readonly agent: string;
  readonly tags: readonly string[];
  readonly skills: readonly TargetSkill[];
  /** Data tags the agent is cleared to receive. */
  readonly clearances: readonly string[];
}

export interface RequestFacts {
  readonly method: string;
  /** The path the agent is called with; a query string is ignored, dot-segments and encoded unreserved characters are normalised. */
  readonly path: string;
  readonly dataTags: readonly string[];
}

export type DecisionCode =
  | 'allowed_by_rule'
  | 'allowed_by_default'
  | 'denied_by_rule'
  | 'denied_by_default'
  | 'anonymous_denied'
  | 'no_inbound_consent'
  | 'no_outbound_consent'
  | 'no_consent'
  | 'not_cleared';

export interface Decision {
  readonly allow: boolean;
  readonly code: DecisionCode;
  /** 'tenant/rule-name' of the rule that decided; for a cross-tenant allow, the target tenant's (inbound) rule. */
  readonly rule?: string;
  /** For a cross-tenant allow: the source tenant's (outbound) rule. */
  readonly sourceRule?: string;
  /** For not_cleared: the request's data tags the target is not cleared for. */
  readonly missingClearances?: readonly string[];
  readonly message: string;
}

/**
 * The first field of a rule that did not match. Fields are checked in this order (cheap and
 * selective ones first), so it is the first failing one in this order.
 */
export type RuleField =
  | 'from.anonymous'
  | 'from.tenant'
  | 'to.tenant'
  | 'to.agents'
  | 'from.agents'
  | 'methods'
  | 'paths'
  | 'from.identities'
  | 'from.labels'
  | 'dataTags'
  | 'to.skills'
  | 'to.tags';

export type ExplainStep =
  | {
      readonly kind: 'rule';
      /** inbound: a rule of the target's tenant; outbound: a rule of the caller's tenant. */
      readonly side: 'inbound' | 'outbound';
      readonly rule: string;
      readonly effect: PolicyEffect;
      readonly matched: boolean;
      /** The rule is named in the decision. */
      readonly decided: boolean;
      /** Why it did not match: the first field that failed. */
      readonly field?: RuleField;
      readonly reason?: string;
    }
  | {
      readonly kind: 'default';
      readonly tenant: string;
      readonly setting: 'intraTenant' | 'anonymous';
      readonly value: PolicyEffect;
      /** tenant: set in the tenant's policy; gateway: the gateway default. */
      readonly from: 'tenant' | 'gateway';
      readonly applied: boolean;
    }
  | {
      readonly kind: 'clearance';
      readonly tenant: string;
      readonly required: boolean;
      readonly from: 'tenant' | 'gateway';
      readonly dataTags: readonly string[];
      readonly missing: readonly string[];
      readonly applied: boolean;
    };

export interface Explanation {
  readonly decision: Decision;
  readonly caller: string;
  readonly target: string;
  readonly kind: 'intra-tenant' | 'cross-tenant' | 'anonymous';
  /** Inbound rules of the target's tenant, then (cross-tenant) outbound rules of the caller's, then defaults and clearance. */
  readonly steps: readonly ExplainStep[];
}

// ---- compiled rules ------------------------------------------------------------------------------

const NO_TAGS: readonly string[] = Object.freeze([]);
const MATCH = 0;
const FIELDS: readonly RuleField[] = [
  'from.anonymous', // 1
  'from.tenant',
  'to.tenant',
  'to.agents',
  'from.agents',
  'methods',
  'paths',
  'from.identities',
  'from.labels',
  'dataTags',
  'to.skills',
  'to.tags', // 12
];
const ANY = '*';
/** The tenant key of inbound rules for anonymous callers (never a tenant name). */
const ANONYMOUS_KEY = '';

function setOrNull(values: readonly string[] | undefined): ReadonlySet<string> | null {
  if (values === undefined || (values.length === 1 && values[0] === ANY)) return null;
  return new Set(values);
}

/** Exact values, and prefixes (patterns ending in '*', without it). */
interface Patterns {
  readonly exact: ReadonlySet<string>;
  readonly prefixes: readonly string[];
}

function splitPatterns(values: readonly string[] | undefined): Patterns | null {
  if (values === undefined) return null;
  const exact = new Set<string>();
  const prefixes: string[] = [];
  for (const value of values) {
    if (value.endsWith('*')) prefixes.push(value.slice(0, -1));
    else exact.add(value);
  }
  return { exact, prefixes };
}

function frozen(decision: Decision): Decision {
  return Object.freeze(decision);
}

class CompiledRule {
  readonly id: string;
  readonly deny: boolean;
  readonly inbound: boolean;
  readonly anonymous: boolean;
  readonly fromTenant: string;
  readonly fromAgents: ReadonlySet<string> | null;
  readonly identities: Patterns | null;
  readonly labels: readonly string[] | null;
  readonly toTenant: string;
  readonly toAgents: ReadonlySet<string> | null;
  readonly toTags: readonly string[] | null;
  readonly toSkills: readonly string[] | null;
  readonly methods: ReadonlySet<string> | null;
  readonly paths: Patterns | null;
  readonly dataTags: ReadonlySet<string> | null;
  /** Returned as is when this rule decides alone (a deny, or an intra-tenant / anonymous allow). */
  readonly decision: Decision;
  /** Cross-tenant allows of this inbound rule, per outbound rule (weak: the other tenant may recompile). */
  private pairs: WeakMap<CompiledRule, Decision> | undefined;

  constructor(
    readonly tenant: string,
    readonly source: PolicyRule,
    /** Position in the tenant's rules: among matching rules of one effect, the first one is named. */
    readonly order: number,
  ) {
    const from = source.from;
    const to = source.to;
    this.id = `${tenant}/${source.name}`;
    this.deny = source.effect === 'deny';
    this.inbound = ruleDirection(tenant, source) === 'inbound';
    this.anonymous = from?.anonymous === true;
    this.fromTenant = this.anonymous ? ANONYMOUS_KEY : (from?.tenant ?? tenant);
    this.fromAgents = setOrNull(from?.agents);
    this.identities = splitPatterns(from?.identities);
    this.labels = from?.labels ?? null;
    this.toTenant = to?.tenant ?? tenant;
    this.toAgents = setOrNull(to?.agents);
    this.toTags = to?.tags ?? null;
    this.toSkills = to?.skills ?? null;
    this.methods = setOrNull(source.methods?.map((method) => method.toUpperCase()));
    this.paths = splitPatterns(source.paths);
    this.dataTags = source.dataTags ? new Set(source.dataTags) : null;
    this.decision = frozen(
      this.deny
        ? { allow: false, code: 'denied_by_rule', rule: this.id, message: `denied by rule ${this.id}` }
        : { allow: true, code: 'allowed_by_rule', rule: this.id, message: `allowed by rule ${this.id}` },
    );
  }

  /** The allow decision naming this inbound rule and the caller tenant's outbound rule. */
  allowWith(outbound: CompiledRule): Decision {
    this.pairs ??= new WeakMap();
    let decision = this.pairs.get(outbound);
    if (decision === undefined) {
      decision = frozen({
        allow: true,
        code: 'allowed_by_rule',
        rule: this.id,
        sourceRule: outbound.id,
        message: `allowed by rule ${this.id} (inbound) and rule ${outbound.id} (outbound)`,
      });
      this.pairs.set(outbound, decision);
    }
    return decision;
  }
}

function matchesPattern(patterns: Patterns, value: string): boolean {
  if (patterns.exact.size !== 0 && patterns.exact.has(value)) return true;
  const prefixes = patterns.prefixes;
  for (let i = 0; i < prefixes.length; i++) if (startsWithFromEnd(value, prefixes[i]!)) return true;
  return false;
}

/**
 * value.startsWith(prefix), comparing from the prefix's last character back: prefixes tend to share
 * their head ('spiffe://example.org/tenant/', '/a2a/') and differ at the end, so a mismatch is
 * found in a character or two (String.prototype.startsWith walks the shared head every time).
 */
function startsWithFromEnd(value: string, prefix: string): boolean {
  if (value.length < prefix.length) return false;
  for (let i = prefix.length - 1; i >= 0; i--) if (value.charCodeAt(i) !== prefix.charCodeAt(i)) return false;
  return true;
}

/** A target's tags (its own and its skills') and skill ids as sets, computed once per TargetAgent object. */
interface TargetSets {
  readonly tags: ReadonlySet<string>;
  readonly skills: ReadonlySet<string>;
  readonly tagList: readonly string[];
  readonly skillList: readonly string[];
}
const targetSetCache = new WeakMap<TargetAgent, TargetSets>();
// The last target looked up: the rules of one decision ask for the same target many times.
let lastTarget: TargetAgent | undefined;
let lastTargetSets: TargetSets | undefined;

function targetSets(target: TargetAgent): TargetSets {
  if (lastTarget === target) return lastTargetSets!;
  let sets = targetSetCache.get(target);
  if (sets === undefined) {
    const tags = new Set(target.tags);
    const skills = new Set<string>();
    for (const skill of target.skills) {
      skills.add(skill.id);
      for (const tag of skill.tags) tags.add(tag);
    }
    sets = { tags, skills, tagList: [...tags], skillList: [...skills] };
    targetSetCache.set(target, sets);
  }
  lastTarget = target;
  lastTargetSets = sets;
  return sets;
}

function hasAny(wanted: readonly string[], present: ReadonlySet<string>): boolean {
  for (let i = 0; i < wanted.length; i++) if (present.has(wanted[i]!)) return true;
  return false;
}

/** 0 when the rule matches, else the 1-based index in FIELDS of the first field that does not. */
function mismatch(rule: CompiledRule, caller: Caller, target: TargetAgent, method: string, path: string, dataTags: readonly string[]): number {
  const callerTenant = caller.tenant;
  if (rule.anonymous !== (callerTenant === undefined)) return 1;
  if (!rule.anonymous && rule.fromTenant !== ANY && rule.fromTenant !== callerTenant) return 2;
  if (rule.toTenant !== ANY && rule.toTenant !== target.tenant) return 3;
  if (rule.toAgents !== null && !rule.toAgents.has(target.agent)) return 4;
  if (rule.fromAgents !== null && (caller.agent === undefined || !rule.fromAgents.has(caller.agent))) return 5;
  if (rule.methods !== null && !rule.methods.has(method)) return 6;
  if (rule.paths !== null && !matchesPattern(rule.paths, path)) return 7;
  if (rule.identities !== null && (caller.spiffeId === undefined || !matchesPattern(rule.identities, caller.spiffeId))) return 8;
  const labels = rule.labels;
  if (labels !== null) {
    for (let i = 0; i < labels.length; i++) if (!caller.labels.includes(labels[i]!)) return 9;
  }
  const listed = rule.dataTags;
  if (listed !== null) {
    if (rule.deny) {
      let any = false;
      for (let i = 0; i < dataTags.length; i++) {
        if (listed.has(dataTags[i]!)) {
          any = true;
          break;
        }
      }
      if (!any) return 10;
    } else {
      for (let i = 0; i < dataTags.length; i++) if (!listed.has(dataTags[i]!)) return 10;
    }
  }
  if (rule.toSkills !== null && !hasAny(rule.toSkills, targetSets(target).skills)) return 11;
  if (rule.toTags !== null && !hasAny(rule.toTags, targetSets(target).tags)) return 12;
  return MATCH;
}

interface RuleLists {
  readonly deny: CompiledRule[];
  readonly allow: CompiledRule[];
}

/** The facts of the decision in progress and the first matches so far: one object, reused (decide is synchronous). */
class Probe {
  caller: Caller = { labels: NO_TAGS };
  target: TargetAgent = { tenant: '', agent: '', tags: NO_TAGS, skills: [], clearances: NO_TAGS };
  method = '';
  path = '';
  dataTags: readonly string[] = NO_TAGS;
  deny: CompiledRule | undefined = undefined;
  allow: CompiledRule | undefined = undefined;
}
const probe = new Probe();

// Rule filing: each rule goes in the lists of one of its fields that can be looked up — the most
// selective one, unless many rules share its value (see filing()) — so a decision tries only the
// rules filed under its own values, plus the rules with none of these fields (which match every
// call of their bucket). A rule is in one dimension only, so it is tried once per decision unless
// several of its values match the call (harmless: scan() keeps the first match in rule order,
// whatever order the lists are visited in).
const BY_TARGET_AGENT = 0;
const BY_SOURCE_AGENT = 1;
const BY_SKILL = 2;
const BY_LABEL = 3; // the rule's rarest label: the caller must carry all of them
const BY_TAG = 4;
const BY_METHOD = 5;
const BY_DATA_TAG = 6; // deny rules under each of their tags; allow rules under each and UNTAGGED
const KEYED_DIMENSIONS = 7;
const BY_IDENTITY = 7; // exact identities in a map, prefixes in a prefix tree
const BY_PATH = 8; // the same for paths
/** The data-tag key of allow rules for untagged requests (never a data tag: those are not empty). */
const UNTAGGED = '';

/**
 * The values a rule is filed under in a keyed dimension, or null when it leaves the field out. A
 * deny rule fires on a request carrying any of its data tags; an allow rule admits a request
 * carrying only its tags, so it is found under the request's first tag, or under UNTAGGED.
 */
function keysOf(rule: CompiledRule, dimension: number): Iterable<string> | null {
  switch (dimension) {
    case BY_TARGET_AGENT:
      return rule.toAgents;
    case BY_SOURCE_AGENT:
      return rule.fromAgents;
    case BY_SKILL:
      return rule.toSkills;
    case BY_LABEL:
      return rule.labels;
    case BY_TAG:
      return rule.toTags;
    case BY_METHOD:
      return rule.methods;
    case BY_DATA_TAG:
      return rule.dataTags === null ? null : rule.deny ? rule.dataTags : [UNTAGGED, ...rule.dataTags];
  }
  return null;
}

/** The dimensions a rule can be filed in, most selective and cheapest to look up first: names and exact values, then tags, prefixes, methods, data tags. */
function filingOrder(rule: CompiledRule): number[] {
  const exactIdentities = rule.identities !== null && rule.identities.prefixes.length === 0;
  const exactPaths = rule.paths !== null && rule.paths.prefixes.length === 0;
  const order = [BY_TARGET_AGENT, BY_SOURCE_AGENT];
  if (exactIdentities) order.push(BY_IDENTITY);
  if (exactPaths) order.push(BY_PATH);
  order.push(BY_SKILL, BY_LABEL, BY_TAG);
  if (rule.identities !== null && !exactIdentities) order.push(BY_IDENTITY);
  if (rule.paths !== null && !exactPaths) order.push(BY_PATH);
  order.push(BY_METHOD, BY_DATA_TAG);
  return order;
}

/** How many rules of a bucket name each prefix or exact value of one pattern field. */
class PatternCensus {
  private readonly exact = new Map<string, number>();
  private readonly prefixes = new PrefixTree<{ rules: number }>();

  add(patterns: Patterns): void {
    for (const value of patterns.exact) this.exact.set(value, (this.exact.get(value) ?? 0) + 1);
    for (const prefix of patterns.prefixes) this.prefixes.upsert(prefix, () => ({ rules: 0 })).rules++;
  }

  /** The most rules a call matching one of these patterns would have the index try. */
  cost(patterns: Patterns): number {
    let most = 0;
    for (const value of patterns.exact) most = Math.max(most, (this.exact.get(value) ?? 0) + this.along(value));
    for (const prefix of patterns.prefixes) most = Math.max(most, this.along(prefix));
    return most;
  }

  /** Rules under the stored prefixes of `value` (all of which a call with that value tries). */
  private along(value: string): number {
    const sum = { rules: 0 };
    this.prefixes.forEachPrefixOf(value, (count, total) => (total.rules += count.rules), sum);
    return sum.rules;
  }
}

/** How many rules of a bucket name each value of each field: the length of the list a rule would join. */
class Census {
  private readonly keyed: Map<string, number>[] = Array.from({ length: KEYED_DIMENSIONS }, () => new Map());
  private readonly identities = new PatternCensus();
  private readonly paths = new PatternCensus();

  constructor(rules: readonly CompiledRule[]) {
    for (const rule of rules) {
      for (let dimension = 0; dimension < KEYED_DIMENSIONS; dimension++) {
        const counts = this.keyed[dimension]!;
        for (const key of keysOf(rule, dimension) ?? NO_TAGS) counts.set(key, (counts.get(key) ?? 0) + 1);
      }
      if (rule.identities !== null) this.identities.add(rule.identities);
      if (rule.paths !== null) this.paths.add(rule.paths);
    }
  }

  /** The rule's label fewest rules name: a caller reaching the rule carries it. */
  rarestLabel(labels: readonly string[]): string {
    const counts = this.keyed[BY_LABEL]!;
    let rarest = labels[0]!;
    for (const label of labels) if (counts.get(label)! < counts.get(rarest)!) rarest = label;
    return rarest;
  }

  /** The longest list a call could try if the rule were filed in this dimension; Infinity when it leaves the field out. */
  cost(rule: CompiledRule, dimension: number): number {
    if (dimension === BY_IDENTITY) return rule.identities === null ? Infinity : this.identities.cost(rule.identities);
    if (dimension === BY_PATH) return rule.paths === null ? Infinity : this.paths.cost(rule.paths);
    const counts = this.keyed[dimension]!;
    if (dimension === BY_LABEL) return rule.labels === null ? Infinity : counts.get(this.rarestLabel(rule.labels))!;
    const keys = keysOf(rule, dimension);
    if (keys === null) return Infinity;
    let most = 0;
    for (const key of keys) most = Math.max(most, counts.get(key)!);
    return most;
  }
}

/**
 * A list this short costs less to try than a lookup in one more dimension (a prefix tree walk, a
 * loop over the target's tags): a rule goes in the first field of filingOrder whose lists stay
 * this short, and only when all are longer in the field with the shortest lists.
 */
const SHORT_LIST = 8;

/** The dimension to file the rule in, or undefined when it sets no field that can be looked up. */
function filing(rule: CompiledRule, census: Census): number | undefined {
  let best: number | undefined;
  let bestCost = Infinity;
  for (const dimension of filingOrder(rule)) {
    const cost = census.cost(rule, dimension);
    if (cost <= SHORT_LIST) return dimension;
    if (cost < bestCost) {
      best = dimension;
      bestCost = cost;
    }
  }
  return best;
}

/** Exact patterns in a map, prefix patterns (a trailing '*') in a prefix tree. */
class PatternIndex {
  private readonly exact = new Map<string, RuleLists>();
  private readonly prefixes = new PrefixTree<RuleLists>();

  get empty(): boolean {
    return this.exact.size === 0 && this.prefixes.size === 0;
  }

  add(patterns: Patterns, rule: CompiledRule): void {
    for (const value of patterns.exact) push(listsOf(this.exact, value), rule);
    // A prefix that extends another of the rule's prefixes adds nothing ('/a*' covers '/ab*'):
    // in sorted order, such a prefix comes right after the shorter one or its other extensions.
    let kept: string | undefined;
    for (const prefix of [...patterns.prefixes].sort()) {
      if (kept !== undefined && prefix.startsWith(kept)) continue;
      kept = prefix;
      push(this.prefixes.upsert(prefix, newLists), rule);
    }
  }

  /** Visits the rules with a pattern matching `value`: its exact list and the lists of its stored prefixes. */
  collect(value: string, p: Probe): void {
    if (this.exact.size !== 0) visit(this.exact.get(value), p);
    if (this.prefixes.size !== 0) this.prefixes.forEachPrefixOf(value, visit, p);
  }
}

function newLists(): RuleLists {
  return { deny: [], allow: [] };
}

function listsOf(map: Map<string, RuleLists>, key: string): RuleLists {
  let lists = map.get(key);
  if (lists === undefined) {
    lists = newLists();
    map.set(key, lists);
  }
  return lists;
}

/** The rules of one counterpart tenant key, filed by field value; every list keeps rule order. */
class RuleBucket {
  private readonly filed: Map<string, RuleLists>[] = Array.from({ length: KEYED_DIMENSIONS }, () => new Map());
  private readonly identities = new PatternIndex();
  private readonly paths = new PatternIndex();
  private readonly rest: RuleLists = newLists();

  /** `rules` in rule order. */
  constructor(rules: readonly CompiledRule[]) {
    const census = new Census(rules);
    for (const rule of rules) {
      const dimension = filing(rule, census);
      if (dimension === undefined) push(this.rest, rule);
      else if (dimension === BY_IDENTITY) this.identities.add(rule.identities!, rule);
      else if (dimension === BY_PATH) this.paths.add(rule.paths!, rule);
      else {
        const map = this.filed[dimension]!;
        const keys = dimension === BY_LABEL ? [census.rarestLabel(rule.labels!)] : keysOf(rule, dimension)!;
        for (const key of keys) push(listsOf(map, key), rule);
      }
    }
  }

  /** Updates probe.deny / probe.allow with this bucket's first matching rules. */
  collect(p: Probe): void {
    const filed = this.filed;
    const byTarget = filed[BY_TARGET_AGENT]!;
    if (byTarget.size !== 0) visit(byTarget.get(p.target.agent), p);
    const bySource = filed[BY_SOURCE_AGENT]!;
    if (bySource.size !== 0 && p.caller.agent !== undefined) visit(bySource.get(p.caller.agent), p);
    if (!this.identities.empty && p.caller.spiffeId !== undefined) this.identities.collect(p.caller.spiffeId, p);
    if (!this.paths.empty) this.paths.collect(p.path, p);
    const bySkill = filed[BY_SKILL]!;
    if (bySkill.size !== 0) {
      const skills = targetSets(p.target).skillList;
      for (let i = 0; i < skills.length; i++) visit(bySkill.get(skills[i]!), p);
    }
    const byLabel = filed[BY_LABEL]!;
    if (byLabel.size !== 0) {
      const labels = p.caller.labels;
      for (let i = 0; i < labels.length; i++) visit(byLabel.get(labels[i]!), p);
    }
    const byTag = filed[BY_TAG]!;
    if (byTag.size !== 0) {
      const tags = targetSets(p.target).tagList;
      for (let i = 0; i < tags.length; i++) visit(byTag.get(tags[i]!), p);
    }
    const byMethod = filed[BY_METHOD]!;
    if (byMethod.size !== 0) visit(byMethod.get(p.method), p);
    const byDataTag = filed[BY_DATA_TAG]!;
    if (byDataTag.size !== 0) {
      const tags = p.dataTags;
      for (let i = 0; i < tags.length; i++) {
        const lists = byDataTag.get(tags[i]!);
        if (lists !== undefined) p.deny = scan(lists.deny, p.deny, p);
      }
      if (p.deny === undefined) {
        const lists = byDataTag.get(tags.length === 0 ? UNTAGGED : tags[0]!);
        if (lists !== undefined) p.allow = scan(lists.allow, p.allow, p);
      }
    }
    visit(this.rest, p);
  }
}

function push(lists: RuleLists, rule: CompiledRule): void {
  (rule.deny ? lists.deny : lists.allow).push(rule);
}

/** Once a deny matched, allows no longer matter: a deny wins. */
function visit(lists: RuleLists | undefined, p: Probe): void {
  if (lists === undefined) return;
  p.deny = scan(lists.deny, p.deny, p);
  if (p.deny === undefined) p.allow = scan(lists.allow, p.allow, p);
}

/** The first matching rule of `list` if it comes before `best` (lists are in rule order). */
function scan(list: readonly CompiledRule[], best: CompiledRule | undefined, p: Probe): CompiledRule | undefined {
  for (let i = 0; i < list.length; i++) {
    const rule = list[i]!;
    if (best !== undefined && rule.order >= best.order) return best;
    if (mismatch(rule, p.caller, p.target, p.method, p.path, p.dataTags) === MATCH) return rule;
  }
  return best;
}

/** Rules keyed by the other side's tenant (or '*', or ANONYMOUS_KEY). */
class RuleIndex {
  private readonly byTenant = new Map<string, RuleBucket>();

  /** `rules` in rule order, each with the key of the other side's tenant. */
  constructor(rules: readonly CompiledRule[], tenantKey: (rule: CompiledRule) => string) {
    const groups = new Map<string, CompiledRule[]>();
    for (const rule of rules) {
      const key = tenantKey(rule);
      let group = groups.get(key);
      if (group === undefined) {
        group = [];
        groups.set(key, group);
      }
      group.push(rule);
    }
    for (const [key, group] of groups) this.byTenant.set(key, new RuleBucket(group));
  }

  /**
   * Sets probe.deny and probe.allow to the first (in rule order) matching deny and allow among the
   * rules keyed by `tenantKey` and, with `withAnyTenant`, by '*'. probe.allow is meaningless when
   * probe.deny is set.
   */
  collect(tenantKey: string, withAnyTenant: boolean, p: Probe): Probe {
    p.deny = undefined;
    p.allow = undefined;
    this.byTenant.get(tenantKey)?.collect(p);
    if (withAnyTenant) this.byTenant.get(ANY)?.collect(p);
    return p;
  }
}

/** One tenant's policy, compiled. Immutable: a reload replaces it. */
export class CompiledTenantPolicy {
  readonly rules: readonly CompiledRule[];
  /** Inbound rules keyed by the caller's tenant. */
  readonly inbound: RuleIndex;
  /** Outbound rules keyed by the target's tenant. */
  readonly outbound: RuleIndex;
  readonly intraTenant: PolicyEffect | undefined;
  readonly anonymous: PolicyEffect | undefined;
  readonly requireClearance: boolean | undefined;
  readonly intraAllow: Decision;
  readonly anonymousAllow: Decision;
  readonly anonymousDeny: Decision;

  constructor(
    readonly tenant: string,
    readonly policy: TenantPolicy | undefined,
  ) {
    this.intraTenant = policy?.intraTenant;
    this.anonymous = policy?.anonymous;
    this.requireClearance = policy?.requireClearance;
    const rules = (policy?.rules ?? []).map((rule, order) => new CompiledRule(tenant, rule, order));
    this.inbound = new RuleIndex(
      rules.filter((rule) => rule.inbound),
      (rule) => rule.fromTenant,
    );
    this.outbound = new RuleIndex(
      rules.filter((rule) => !rule.inbound),
      (rule) => rule.toTenant,
    );
    this.rules = rules;
    this.intraAllow = frozen({
      allow: true,
      code: 'allowed_by_default',
      message: `allowed: no rule of tenant ${tenant} matched and its calls between its own agents default to allow (intraTenant: allow)`,
    });
    this.anonymousAllow = frozen({
      allow: true,
      code: 'allowed_by_default',
      message: `allowed: no rule of tenant ${tenant} matched and anonymous callers default to allow (anonymous: allow)`,
    });
    this.anonymousDeny = frozen({
      allow: false,
      code: 'anonymous_denied',
      message: `denied: tenant ${tenant} has no rule letting anonymous callers in (anonymous: deny); authenticate with a certificate or token`,
    });
  }
}

// ---- paths ---------------------------------------------------------------------------------------

const ENCODED_UNRESERVED = /%(?:[46][1-9A-Fa-f]|[57][0-9Aa]|3[0-9]|2[dDeE]|5[fF]|7[eE])/g;
const MULTIPLE_SLASHES = /\/{2,}/g;
const BACKSLASHES = /\\/g;

/**
 * The path rules are matched against: without the query, and — only when it holds something that
 * could dress up another path ('%', '/.', '//', '\') — with encoded unreserved characters decoded,
 * dot-segments resolved and repeated slashes merged, so '/a2a/../admin' cannot slip past a deny on
 * '/admin'. Plain paths are returned as they are (no allocation).
 */
export function policyPath(raw: string): string {
  const query = raw.indexOf('?');
  let path = query === -1 ? raw : raw.slice(0, query);
  if (path.includes('%') || path.includes('/.') || path.includes('//') || path.includes('\\')) {
    // Slashes first: '//x' must not reach the URL parser, which would read it as a host.
    path = path
      .replace(ENCODED_UNRESERVED, (hex) => String.fromCharCode(Number.parseInt(hex.slice(1), 16)))
      .replace(BACKSLASHES, '/')
      .replace(MULTIPLE_SLASHES, '/');
    try {
      path = new URL(path.startsWith('/') ? path : `/${path}`, 'http://policy.invalid').pathname;
    } catch {
      // keep it as it is: it then matches only rules written for it
    }
  }
  return path;
}

/** HTTP methods arrive upper-case; anything else (an HTTP/2 peer may send 'delete') is upper-cased so a deny on DELETE still applies. */
function upperCase(method: string): string {
  for (let i = 0; i < method.length; i++) {
    const code = method.charCodeAt(i);
    if (code >= 97 && code <= 122) return method.toUpperCase();
  }
  return method;
}

// ---- the policy set ------------------------------------------------------------------------------

const MAX_IMPLICIT_TENANTS = 4096;

function describeCaller(caller: Caller): string {
  return caller.tenant === undefined ? 'an anonymous caller' : `${caller.tenant}/${caller.agent ?? '(no agent)'}`;
}

/** The compiled policies of all tenants: decides calls, explains decisions. Reloads are per tenant. */
export class PolicySet {
  private defaults: PolicyDefaults;
  private readonly tenants = new Map<string, CompiledTenantPolicy>();
  /** Rule-less policies for tenants that never had setTenant called (gateway defaults). */
  private readonly implicit = new Map<string, CompiledTenantPolicy>();
  private rules = 0;
  /** Changes so far: each change's stamp is the count, so stamps only grow. */
  private changes = 0;
  private defaultsStamp = 0;
  /** The stamp of each tenant's last policy change (kept after a removal, so a stamp never repeats). */
  private readonly tenantStamps = new Map<string, number>();

  constructor(defaults?: Partial<PolicyDefaults>) {
    this.defaults = policyDefaultsSchema.parse(defaults ?? {});
  }

  /** Gateway-wide defaults; compiled tenant policies are untouched (they resolve defaults per decision). */
  setDefaults(defaults: Partial<PolicyDefaults>): void {
    this.defaults = policyDefaultsSchema.parse(defaults);
    this.defaultsStamp = ++this.changes;
  }

  /**
   * A number that changes whenever a decision about a call into `tenant` by a caller of
   * `callerTenant` (undefined: anonymous) may change: the defaults, or either tenant's policy set or
   * removed. It only grows (a sum of stamps that only grow).
   */
  versionFor(tenant: string, callerTenant: string | undefined): number {
    const target = this.tenantStamps.get(tenant) ?? 0;
    const caller = callerTenant === undefined || callerTenant === tenant ? 0 : (this.tenantStamps.get(callerTenant) ?? 0);
    return this.defaultsStamp + target + caller;
  }

  getDefaults(): PolicyDefaults {
    return { ...this.defaults };
  }

  /**
   * Compiles and installs one tenant's policy (undefined: gateway defaults, no rules); nothing of
   * other tenants is touched. Throws a PolicyError when a rule does not speak for this tenant.
   */
  setTenant(name: string, policy: TenantPolicy | undefined): CompiledTenantPolicy {
    if (policy !== undefined) {
      const issues = tenantPolicyIssues(name, policy);
      if (issues.length > 0) {
        throw new PolicyError(
          name,
          issues.map((issue) => ({ path: formatPolicyPath(issue.path), message: issue.message })),
        );
      }
    }
    const compiled = new CompiledTenantPolicy(name, policy);
    this.rules += compiled.rules.length - (this.tenants.get(name)?.rules.length ?? 0);
    this.tenants.set(name, compiled);
    this.implicit.delete(name);
    this.tenantStamps.set(name, ++this.changes);
    return compiled;
  }

  removeTenant(name: string): void {
    this.rules -= this.tenants.get(name)?.rules.length ?? 0;
    this.tenants.delete(name);
    this.implicit.delete(name);
    this.tenantStamps.set(name, ++this.changes);
  }

  /** The compiled policy of a tenant set with setTenant (for diagnostics and tests). */
  tenant(name: string): CompiledTenantPolicy | undefined {
    return this.tenants.get(name);
  }

  tenantNames(): string[] {
    return [...this.tenants.keys()];
  }

  ruleCount(): number {
    return this.rules;
  }

  private compiled(name: string): CompiledTenantPolicy {
    const compiled = this.tenants.get(name) ?? this.implicit.get(name);
    if (compiled !== undefined) return compiled;
    const fresh = new CompiledTenantPolicy(name, undefined);
    if (this.implicit.size < MAX_IMPLICIT_TENANTS) this.implicit.set(name, fresh);
    return fresh;
  }

  decide(caller: Caller, target: TargetAgent, request: RequestFacts): Decision {
    const policy = this.compiled(target.tenant);
    const p = probe;
    p.caller = caller;
    p.target = target;
    p.method = upperCase(request.method);
    p.path = policyPath(request.path);
    p.dataTags = request.dataTags;
    let decision: Decision;
    const callerTenant = caller.tenant;
    if (callerTenant === undefined) {
      policy.inbound.collect(ANONYMOUS_KEY, false, p);
      const rule = p.deny ?? p.allow;
      if (rule !== undefined) decision = rule.decision;
      else decision = (policy.anonymous ?? this.defaults.anonymous) === 'allow' ? policy.anonymousAllow : policy.anonymousDeny;
    } else if (callerTenant === target.tenant) {
      policy.inbound.collect(callerTenant, true, p);
      const rule = p.deny ?? p.allow;
      if (rule !== undefined) decision = rule.decision;
      else if ((policy.intraTenant ?? this.defaults.intraTenant) === 'allow') decision = policy.intraAllow;
      else {
        decision = {
          allow: false,
          code: 'denied_by_default',
          message: `denied: tenant ${target.tenant} has no rule letting ${describeCaller(caller)} call ${target.tenant}/${target.agent} (intraTenant: deny)`,
        };
      }
    } else {
      decision = this.decideCrossTenant(policy, this.compiled(callerTenant), caller, target);
    }
    if (!decision.allow) return decision;
    return this.clearance(policy, target, request.dataTags) ?? decision;
  }

  /** Both tenants must consent: the target's inbound rules and the caller's outbound rules; a deny on either side wins. */
  private decideCrossTenant(targetPolicy: CompiledTenantPolicy, sourcePolicy: CompiledTenantPolicy, caller: Caller, target: TargetAgent): Decision {
    const source = sourcePolicy.tenant;
    const inboundSide = targetPolicy.inbound.collect(source, true, probe);
    if (inboundSide.deny !== undefined) return inboundSide.deny.decision;
    const inbound = inboundSide.allow;
    const outboundSide = sourcePolicy.outbound.collect(target.tenant, true, probe);
    if (outboundSide.deny !== undefined) return outboundSide.deny.decision;
    const outbound = outboundSide.allow;
    if (inbound !== undefined && outbound !== undefined) return inbound.allowWith(outbound);
    const who = describeCaller(caller);
    const whom = `${target.tenant}/${target.agent}`;
    if (inbound === undefined && outbound === undefined) {
      return {
        allow: false,
        code: 'no_consent',
        message: `denied: tenant ${target.tenant} has no rule letting ${who} call ${whom}, and tenant ${source} has no rule letting ${who} call out to ${whom}; a cross-tenant call needs an allow rule in both tenants`,
      };
    }
    if (inbound === undefined) {
      return {
        allow: false,
        code: 'no_inbound_consent',
        sourceRule: outbound!.id,
        message: `denied: tenant ${target.tenant} has no rule letting ${who} call ${whom} (tenant ${source} consents by rule ${outbound!.id})`,
      };
    }
    return {
      allow: false,
      code: 'no_outbound_consent',
      rule: inbound.id,
      message: `denied: tenant ${source} has no rule letting ${who} call out to ${whom} (tenant ${target.tenant} consents by rule ${inbound.id})`,
    };
  }

  /** The not_cleared denial when the target tenant requires clearance and the target lacks some. */
  private clearance(policy: CompiledTenantPolicy, target: TargetAgent, dataTags: readonly string[]): Decision | undefined {
    if (dataTags.length === 0 || !(policy.requireClearance ?? this.defaults.requireClearance)) return undefined;
    const missing = missingClearances(target, dataTags);
    if (missing.length === 0) return undefined;
    return {
      allow: false,
      code: 'not_cleared',
      missingClearances: missing,
      message: `denied: ${target.tenant}/${target.agent} is not cleared for data tagged ${missing.join(', ')} (tenant ${target.tenant} requires clearance)`,
    };
  }

  /** The decision, and every rule and setting that took part, with why each rule did or did not match. */
  explain(caller: Caller, target: TargetAgent, request: RequestFacts): Explanation {
    const decision = this.decide(caller, target, request);
    const path = policyPath(request.path);
    const method = upperCase(request.method);
    const targetPolicy = this.compiled(target.tenant);
    const kind = caller.tenant === undefined ? 'anonymous' : caller.tenant === target.tenant ? 'intra-tenant' : 'cross-tenant';
    const steps: ExplainStep[] = [];
    const ruleStep = (rule: CompiledRule, side: 'inbound' | 'outbound'): ExplainStep => {
      const field = mismatch(rule, caller, target, method, path, request.dataTags);
      const decided = decision.rule === rule.id || decision.sourceRule === rule.id;
      if (field === MATCH) return { kind: 'rule', side, rule: rule.id, effect: rule.source.effect, matched: true, decided };
      const name = FIELDS[field - 1]!;
      return {
        kind: 'rule',
        side,
        rule: rule.id,
        effect: rule.source.effect,
        matched: false,
        decided,
        field: name,
        reason: whyNot(name, rule, caller, target, request, method, path),
      };
    };
    for (const rule of targetPolicy.rules) if (rule.inbound) steps.push(ruleStep(rule, 'inbound'));
    if (kind === 'cross-tenant') {
      for (const rule of this.compiled(caller.tenant!).rules) if (!rule.inbound) steps.push(ruleStep(rule, 'outbound'));
    } else {
      const setting = kind === 'anonymous' ? 'anonymous' : 'intraTenant';
      const own = targetPolicy[setting];
      steps.push({
        kind: 'default',
        tenant: target.tenant,
        setting,
        value: own ?? this.defaults[setting],
        from: own === undefined ? 'gateway' : 'tenant',
        applied: decision.code === 'allowed_by_default' || decision.code === 'denied_by_default' || decision.code === 'anonymous_denied',
      });
    }
    const required = targetPolicy.requireClearance ?? this.defaults.requireClearance;
    steps.push({
      kind: 'clearance',
      tenant: target.tenant,
      required,
      from: targetPolicy.requireClearance === undefined ? 'gateway' : 'tenant',
      dataTags: request.dataTags.length === 0 ? NO_TAGS : [...request.dataTags],
      missing: missingClearances(target, request.dataTags),
      applied: decision.code === 'not_cleared',
    });
    return { decision, caller: describeCaller(caller), target: `${target.tenant}/${target.agent}`, kind, steps };
  }
}

function missingClearances(target: TargetAgent, dataTags: readonly string[]): readonly string[] {
  let missing: string[] | undefined;
  for (let i = 0; i < dataTags.length; i++) {
    const tag = dataTags[i]!;
    if (tag === PUBLIC_DATA_TAG || target.clearances.includes(tag)) continue;
    missing ??= [];
    if (!missing.includes(tag)) missing.push(tag);
  }
  return missing ?? NO_TAGS;
}

function listText(values: readonly string[] | undefined): string {
  return `[${(values ?? []).join(', ')}]`;
}

function whyNot(field: RuleField, rule: CompiledRule, caller: Caller, target: TargetAgent, request: RequestFacts, method: string, path: string): string {
  const from = rule.source.from;
  const to = rule.source.to;
  switch (field) {
    case 'from.anonymous':
      return rule.anonymous ? 'the rule is for anonymous callers; the caller is authenticated' : 'the rule is for authenticated callers; the caller is anonymous';
    case 'from.tenant':
      return `caller tenant ${caller.tenant} is not ${rule.fromTenant}`;
    case 'from.agents':
      return `caller agent ${caller.agent ?? '(none)'} is not in from.agents ${listText(from?.agents)}`;
    case 'from.identities':
      return `caller identity ${caller.spiffeId ?? '(none)'} matches none of from.identities ${listText(from?.identities)}`;
    case 'from.labels':
      return `caller lacks label(s) ${(rule.labels ?? []).filter((label) => !caller.labels.includes(label)).join(', ')}`;
    case 'to.tenant':
      return `target tenant ${target.tenant} is not ${rule.toTenant}`;
    case 'to.agents':
      return `target agent ${target.agent} is not in to.agents ${listText(to?.agents)}`;
    case 'to.tags':
      return `target has none of to.tags ${listText(to?.tags)} (on the agent or its skills)`;
    case 'to.skills':
      return `target has none of to.skills ${listText(to?.skills)}`;
    case 'methods':
      return `method ${method} is not in methods ${listText(rule.source.methods)}`;
    case 'paths':
      return `path ${path} matches none of paths ${listText(rule.source.paths)}`;
    case 'dataTags':
      return rule.deny
        ? `the request carries none of dataTags ${listText(rule.source.dataTags)}`
        : `request data tag(s) ${request.dataTags.filter((tag) => !rule.dataTags!.has(tag)).join(', ')} not in dataTags ${listText(rule.source.dataTags)}`;
  }
}

/** Explain as text, one line per step, for the CLI (`dmsc policy explain`). */
export function formatExplanation(explanation: Explanation, options: { onlyMatching?: boolean } = {}): string {
  const { decision } = explanation;
  const lines = [
    `${decision.allow ? 'ALLOW' : 'DENY'} ${explanation.caller} -> ${explanation.target} (${explanation.kind}): ${decision.code}`,
    `  ${decision.message}`,
  ];
  for (const step of explanation.steps) {
    switch (step.kind) {
      case 'rule':
        if (options.onlyMatching && !step.matched && !step.decided) continue;
        lines.push(
          `  ${step.decided ? '*' : ' '} ${step.side} ${step.effect} ${step.rule}: ${step.matched ? 'matches' : `no match: ${step.field}: ${step.reason}`}`,
        );
        break;
      case 'default':
        lines.push(`  ${step.applied ? '*' : ' '} default ${step.setting}: ${step.value} (${step.from === 'tenant' ? `tenant ${step.tenant}` : 'gateway default'})`);
        break;
      case 'clearance':
        lines.push(
          `  ${step.applied ? '*' : ' '} clearance: ${step.required ? 'required' : 'not required'} (${step.from === 'tenant' ? `tenant ${step.tenant}` : 'gateway default'}); data tags ${listText(step.dataTags)}${step.missing.length > 0 ? `; not cleared for ${step.missing.join(', ')}` : ''}`,
        );
        break;
    }
  }
  return lines.join('\n');
}
