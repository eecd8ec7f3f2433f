import { readFile } from 'node:fs/promises';
import { isMap, isNode, LineCounter, parseDocument, type Document, type Node } from 'yaml';
import type { z } from 'zod';
import { configSchema, type GatewayConfig } from './schema.js';

/** A config that cannot be used; each line of the message reads `file:line:col: path: what is wrong`. */
export class ConfigError extends Error {
  constructor(readonly problems: readonly string[]) {
    super(problems.join('\n'));
    this.name = 'ConfigError';
  }
}

/** A partial config (as it would appear in YAML) layered over the file: flags and environment. */
export type ConfigOverrides = { [key: string]: ConfigOverrides | string | number | boolean };

type PathSegment = string | number;

export function formatConfigPath(path: readonly PropertyKey[]): string {
  let text = '';
  for (const segment of path) {
    if (typeof segment === 'number') text += `[${segment}]`;
    else text += (text ? '.' : '') + String(segment);
  }
  return text || '(top level)';
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Overrides win over the file; a non-object in the file is left alone so validation reports it there. */
function applyOverrides(raw: unknown, overrides: ConfigOverrides): unknown {
  if (!isPlainObject(raw)) return raw;
  const merged: Record<string, unknown> = { ...raw };
  for (const [key, value] of Object.entries(overrides)) {
    if (isPlainObject(value)) merged[key] = applyOverrides(merged[key] ?? {}, value);
    else merged[key] = value;
  }
  return merged;
}

/** The YAML node at `path`, or at its nearest existing ancestor. */
function nearestNode(doc: Document, path: readonly PathSegment[]): Node | undefined {
  for (let length = path.length; length >= 0; length--) {
    const node = length === 0 ? doc.contents : doc.getIn(path.slice(0, length), true);
    if (isNode(node) && node.range) return node;
  }
  return undefined;
}

/** The key node of `key` in the map at `path`: where an unknown key should be pointed at. */
function keyNode(doc: Document, path: readonly PathSegment[], key: string): Node | undefined {
  const map = path.length === 0 ? doc.contents : doc.getIn(path, true);
  if (!isMap(map)) return undefined;
  const pair = map.items.find((item) => isNode(item.key) && (item.key as { value?: unknown }).value === key);
  return isNode(pair?.key) ? pair.key : undefined;
}

function locate(file: string, lines: LineCounter, node: Node | undefined): string {
  if (!node?.range) return `${file}:1:1`;
  const { line, col } = lines.linePos(node.range[0]);
  return `${file}:${line}:${col}`;
}

function describeIssues(issues: readonly z.core.$ZodIssue[], file: string, doc: Document, lines: LineCounter): string[] {
  const problems: string[] = [];
  for (const issue of issues) {
    const path = issue.path.filter((segment): segment is PathSegment => typeof segment !== 'symbol');
    if (issue.code === 'unrecognized_keys') {
      for (const key of issue.keys) {
        const where = locate(file, lines, keyNode(doc, path, key) ?? nearestNode(doc, path));
        problems.push(`${where}: ${formatConfigPath([...path, key])}: unknown key`);
      }
      continue;
    }
    problems.push(`${locate(file, lines, nearestNode(doc, path))}: ${formatConfigPath(path)}: ${issue.message}`);
  }
  return problems;
}

/** Clearer wording than zod's defaults for the mistakes people make in YAML; other issues keep zod's message. */
export const configIssueMessages: z.core.$ZodErrorMap = (issue) => {
  if (issue.code !== 'invalid_type') return undefined;
  if (issue.input === undefined) return 'required';
  const { input } = issue;
  const got = Array.isArray(input) ? 'a list' : input === null ? 'nothing (null)' : `${typeof input} ${JSON.stringify(input)}`;
  return `expected ${issue.expected === 'array' ? 'a list' : issue.expected}, got ${got.length > 60 ? got.slice(0, 57) + '...' : got}`;
};

/** Parses and validates config YAML; `file` only names the source in error messages. Empty text = all defaults. */
export function parseConfigText(text: string, file: string, overrides: ConfigOverrides = {}): GatewayConfig {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: true, uniqueKeys: true });
  if (doc.errors.length > 0) {
    throw new ConfigError(
      doc.errors.map((error) => {
        const pos = error.linePos?.[0];
        const firstLine = error.message.split('\n')[0]!.replace(/ at line \d+, column \d+:?$/, '');
        return `${file}:${pos?.line ?? 1}:${pos?.col ?? 1}: ${firstLine}`;
      }),
    );
  }
  const raw = applyOverrides(doc.toJS() ?? {}, overrides);
  const result = configSchema.safeParse(raw, { error: configIssueMessages });
  if (!result.success) throw new ConfigError(describeIssues(result.error.issues, file, doc, lines));
  return result.data;
}

export async function loadConfigFile(file: string, overrides: ConfigOverrides = {}): Promise<GatewayConfig> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    const reason = (err as NodeJS.ErrnoException).code === 'ENOENT' ? 'file not found' : (err as Error).message;
    throw new ConfigError([`${file}: ${reason}`]);
  }
  return parseConfigText(text, file, overrides);
}
