import { createHash } from 'node:crypto';
import type { Skill } from './types.js';

/**
 * SHA-256 (hex) of the canonical JSON of an agent's skills and agent-level tags: object keys
 * sorted, absent fields omitted, skills sorted by their canonical JSON (a card listing the same
 * skills in another order has the same digest); the order inside arrays (tags, examples, modes)
 * is kept as given.
 * Two gateways compare it to know whether their copies of a card's skills agree. The index
 * digests the Skill fields it keeps (id, name, description, tags, examples, input/output modes).
 */
export function skillsDigest(skills: readonly Skill[], agentTags: readonly string[] = []): string {
  const ordered = skills.map(canonicalJson).sort();
  return createHash('sha256').update(`{"skills":[${ordered.join(',')}],"tags":${canonicalJson(agentTags)}}`).digest('hex');
}

function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, field]) => field !== undefined)
      .sort(([x], [y]) => (x < y ? -1 : x > y ? 1 : 0));
    return `{${entries.map(([key, field]) => `${JSON.stringify(key)}:${canonicalJson(field)}`).join(',')}}`;
  }
  return JSON.stringify(value) ?? 'null';
}
