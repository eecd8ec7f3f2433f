import type { SkillSummary } from './types.js';

/**
 * A2A Agent Card handling. Cards come in two shapes: v1.0 lists `supportedInterfaces[]`
 * ({url, protocolBinding}), v0.3 has a main `url` with `preferredTransport` plus
 * `additionalInterfaces[]` ({url, transport}). Both are handled; unknown fields pass through untouched.
 */

type Json = Record<string, unknown>;

export const CARD_PATHS = ['/.well-known/agent-card.json', '/.well-known/agent.json'] as const;

interface Endpoint {
  origin: string;
  basePath: string;
}

function parseEndpoint(url: string): Endpoint {
  const parsed = new URL(url);
  return { origin: parsed.origin, basePath: parsed.pathname.replace(/\/+$/, '') };
}

/**
 * The agent-relative path (and query) an interface URL addresses: the endpoint's base path is
 * removed when the URL sits under it, so forwarding (which prefixes the base path) lands on the
 * same resource. URLs on another host (a card built with a public name) keep their whole path.
 */
export function agentRelativePath(interfaceUrl: string, endpoints: readonly string[]): string | undefined {
  let parsed: URL;
  try {
    parsed = new URL(interfaceUrl);
  } catch {
    return undefined;
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') return undefined;
  let path = parsed.pathname;
  for (const endpoint of endpoints.map(parseEndpoint)) {
    if (endpoint.basePath && (path === endpoint.basePath || path.startsWith(endpoint.basePath + '/'))) {
      path = path.slice(endpoint.basePath.length) || '/';
      break;
    }
  }
  return path + parsed.search;
}

function interfaces(card: Json): Array<{ holder: Json; transport: string }> {
  const found: Array<{ holder: Json; transport: string }> = [];
  const supported = card.supportedInterfaces;
  if (Array.isArray(supported)) {
    for (const entry of supported) {
      if (entry && typeof entry === 'object' && typeof (entry as Json).url === 'string') {
        found.push({ holder: entry as Json, transport: String((entry as Json).protocolBinding ?? 'JSONRPC') });
      }
    }
  }
  if (typeof card.url === 'string') {
    found.push({ holder: card, transport: String(card.preferredTransport ?? 'JSONRPC') });
  }
  const additional = card.additionalInterfaces;
  if (Array.isArray(additional)) {
    for (const entry of additional) {
      if (entry && typeof entry === 'object' && typeof (entry as Json).url === 'string') {
        found.push({ holder: entry as Json, transport: String((entry as Json).transport ?? 'JSONRPC') });
      }
    }
  }
  return found;
}

/** Agent-relative paths of the card's JSON-RPC interfaces (POSTs there get JSON-RPC-shaped errors). */
export function jsonRpcPaths(card: Json | undefined, endpoints: readonly string[]): Set<string> {
  const paths = new Set<string>();
  if (!card) return paths;
  for (const { holder, transport } of interfaces(card)) {
    if (transport.toUpperCase() !== 'JSONRPC') continue;
    const path = agentRelativePath(holder.url as string, endpoints);
    if (path !== undefined) paths.add(path.split('?')[0]!);
  }
  return paths;
}

export interface JsonRpcInterface {
  /** Agent-relative path (no query). */
  path: string;
  /** The A2A version spoken there: '1.0' or '0.3' (from the interface's or the card's protocolVersion). */
  version: '1.0' | '0.3';
}

/** The card's JSON-RPC interfaces with the A2A version each speaks (a v1.0 card may declare both on one URL). */
export function jsonRpcInterfaces(card: Json | undefined, endpoints: readonly string[]): JsonRpcInterface[] {
  if (!card) return [];
  const found: JsonRpcInterface[] = [];
  for (const { holder, transport } of interfaces(card)) {
    if (transport.toUpperCase() !== 'JSONRPC') continue;
    const path = agentRelativePath(holder.url as string, endpoints);
    if (path === undefined) continue;
    const declared = holder === card || holder.protocolVersion === undefined ? card.protocolVersion : holder.protocolVersion;
    // supportedInterfaces only exist in v1.0 cards; a card with a main `url` is v0.3 unless it says otherwise.
    const fallback = holder === card || !Array.isArray(card.supportedInterfaces) ? '0.3' : '1.0';
    const version = typeof declared === 'string' ? (declared.startsWith('0.') ? '0.3' : '1.0') : fallback;
    found.push({ path: path.split('?')[0]!, version });
  }
  return found;
}

/**
 * The card as a client of the gateway must see it: every HTTP(S) interface URL points at the
 * gateway's address for this agent, so a client that discovers the agent here keeps talking through
 * here. Card signatures cover the original URLs and cannot survive the rewrite, so they are dropped
 * (an A2A client would otherwise reject the card as tampered).
 */
export function rewriteAgentCard(card: Json, options: { agentBaseUrl: string; endpointUrls: readonly string[] }): Json {
  const copy = structuredClone(card);
  for (const { holder } of interfaces(copy)) {
    const path = agentRelativePath(holder.url as string, options.endpointUrls);
    if (path !== undefined) holder.url = options.agentBaseUrl + (path === '/' ? '' : path);
  }
  delete copy.signatures;
  return copy;
}

const asStrings = (value: unknown): string[] | undefined =>
  Array.isArray(value) ? value.filter((item): item is string => typeof item === 'string') : undefined;

/** The skills the registry keeps from a card (id, name, description, tags, examples). */
export function cardSkills(card: Json | undefined): SkillSummary[] {
  const skills = card?.skills;
  if (!Array.isArray(skills)) return [];
  const out: SkillSummary[] = [];
  for (const skill of skills) {
    if (!skill || typeof skill !== 'object') continue;
    const s = skill as Json;
    if (typeof s.id !== 'string' && typeof s.name !== 'string') continue;
    out.push({
      id: String(s.id ?? s.name),
      name: String(s.name ?? s.id),
      ...(typeof s.description === 'string' ? { description: s.description } : {}),
      tags: asStrings(s.tags) ?? [],
      ...(asStrings(s.examples) ? { examples: asStrings(s.examples) } : {}),
    });
  }
  return out;
}

/** Why a fetched document is not an Agent Card, or undefined when it looks like one. */
export function cardProblem(value: unknown): string | undefined {
  if (!value || typeof value !== 'object' || Array.isArray(value)) return 'not a JSON object';
  const card = value as Json;
  if (typeof card.name !== 'string' || card.name.length === 0) return 'missing "name"';
  if (card.skills !== undefined && !Array.isArray(card.skills)) return '"skills" is not an array';
  return undefined;
}
