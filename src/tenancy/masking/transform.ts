import { isUtf8 } from 'node:buffer';
import { BUILTIN_DETECTORS, BUILTIN_PRIORITY, BUILTIN_TAGS, customDetector, type Detect, type Finding } from './detectors.js';
import { customPatternFlags, customPatternProblem, type MaskingConfig } from './schema.js';

export interface MaskResult {
  /** How many values of each kind (custom patterns by name) were found; empty when none. Never the values. */
  readonly counts: Readonly<Record<string, number>>;
  /** Data tags for what was found, sorted (e.g. ['finance', 'pii']); empty when nothing was found. */
  readonly dataTags: readonly string[];
  /** The masked body (action mask, something found); undefined: forward the original bytes. */
  readonly body?: Buffer;
  /** Refuse the request: action block and something was found, or (with `notInspected`) oversize: block. */
  readonly blocked: boolean;
  /**
   * Set when the body could not be inspected (larger than maxBytes, UTF-16/32, or without a
   * Content-Type and not UTF-8 text): why, for the audit and the error. Handle it per `oversize`;
   * `blocked` already says so. Nothing was counted.
   */
  readonly notInspected?: string;
}

export interface Masker {
  readonly config: MaskingConfig;
  /** Whether bodies of this Content-Type (header value, parameters allowed) are inspected. A missing one counts as text/plain. */
  inspects(contentType: string | undefined): boolean;
  /**
   * Inspects a buffered body (at most `config.maxBytes`). JSON bodies (application/json,
   * *+json) that parse are inspected value by value: string values and keys, and integers of 13+
   * digits; only those tokens change and the document stays valid JSON. Anything else, including
   * JSON that does not parse, is inspected as text.
   */
  transform(body: Buffer, contentType: string | undefined): MaskResult;
}

interface Layer {
  readonly detect: Detect;
  /** Skips the pass when the text cannot contain a match (cheap test). */
  readonly mayMatch?: (text: string) => boolean;
}

const EMPTY_COUNTS: Readonly<Record<string, number>> = Object.freeze({});
const NO_TAGS: readonly string[] = Object.freeze([]);
const CLEAN: MaskResult = Object.freeze({ counts: EMPTY_COUNTS, dataTags: NO_TAGS, blocked: false });

/**
 * Compiles a tenant's masking config: detectors in priority order, custom patterns checked and
 * compiled once. Throws an Error naming the pattern and the problem when a custom pattern is
 * invalid or can backtrack catastrophically (the schema reports the same at config load).
 */
export function compileMasking(config: MaskingConfig): Masker {
  const layers: Layer[] = [];
  const tags = new Map<string, readonly string[]>();
  config.customPatterns.forEach((custom, index) => {
    const problem = customPatternProblem(custom.pattern, custom.ignoreCase);
    if (problem) throw new Error(`customPatterns[${index}] "${custom.name}": pattern ${problem}`);
    layers.push({ detect: customDetector(custom.name, new RegExp(custom.pattern, customPatternFlags(custom.ignoreCase))) });
    tags.set(custom.name, custom.tags);
  });
  for (const kind of BUILTIN_PRIORITY) {
    if (!config.kinds.includes(kind)) continue;
    layers.push({ detect: BUILTIN_DETECTORS[kind], mayMatch: kind === 'email' ? hasAt : undefined });
    tags.set(kind, BUILTIN_TAGS[kind]);
  }
  return new CompiledMasker(config, layers, tags);
}

function hasAt(text: string): boolean {
  return text.indexOf('@') !== -1;
}

/** Where the findings may lie: one JSON token each (never across two), and how to put masked text back. */
interface Segments {
  /** The text the detectors scan: the decoded tokens joined with "\n". */
  view: string;
  /** Per token: start in the view; and in the raw text, start and end (end exclusive). */
  readonly viewStart: number[];
  readonly rawStart: number[];
  readonly rawEnd: number[];
  /** Per token: 0 a plain string literal (view text == raw text between the quotes), 1 a literal with escapes, 2 an integer. */
  readonly form: number[];
}

const PLAIN = 0;
const ESCAPED = 1;
const INTEGER = 2;

class CompiledMasker implements Masker {
  private readonly ranges: readonly MediaRange[];
  private readonly inspected = new Map<string, boolean>();

  constructor(
    readonly config: MaskingConfig,
    private readonly layers: readonly Layer[],
    private readonly tagsOf: ReadonlyMap<string, readonly string[]>,
  ) {
    this.ranges = config.contentTypes.map(parseMediaRange);
  }

  inspects(contentType: string | undefined): boolean {
    if (!this.config.enabled) return false;
    const key = contentType ?? '';
    const cached = this.inspected.get(key);
    if (cached !== undefined) return cached;
    const { type, subtype } = parseMediaType(contentType);
    const result = this.ranges.some((range) => range.matches(type, subtype));
    if (this.inspected.size < 64) this.inspected.set(key, result);
    return result;
  }

  transform(body: Buffer, contentType: string | undefined): MaskResult {
    const config = this.config;
    if (body.length > config.maxBytes) return this.uninspected(`body of ${body.length} bytes is larger than maxBytes (${config.maxBytes})`);
    if (body.length === 0) return CLEAN;
    const media = parseMediaType(contentType);
    if (/^utf-?(16|32)/.test(media.charset) || hasUtf16Bom(body)) {
      return this.uninspected('UTF-16/UTF-32 body (only UTF-8 and ASCII-compatible 8-bit text is inspected)');
    }
    const utf8 = isUtf8(body);
    if (!utf8 && media.untyped) return this.uninspected('body without Content-Type is not UTF-8 text');
    // Non-UTF-8 text is read as Latin-1: every byte maps to one character and back, so bytes
    // outside the masked values are forwarded exactly as they came.
    const encoding: BufferEncoding = utf8 ? 'utf8' : 'latin1';
    const text = body.toString(encoding);
    const segments = (media.subtype === 'json' || media.subtype.endsWith('+json')) && utf8 ? jsonSegments(text) : undefined;
    const view = segments ? segments.view : text;
    const findings = this.detect(view, segments);
    if (findings.length === 0) return CLEAN;

    const counts: Record<string, number> = {};
    const tagSet = new Set<string>();
    for (const finding of findings) counts[finding.name] = (counts[finding.name] ?? 0) + 1;
    for (const name of Object.keys(counts)) for (const tag of this.tagsOf.get(name) ?? NO_TAGS) tagSet.add(tag);
    const dataTags = [...tagSet].sort();
    if (config.action === 'block') return { counts, dataTags, blocked: true };
    if (config.action === 'tag') return { counts, dataTags, blocked: false };
    const masked = segments ? maskJson(text, segments, findings) : maskText(text, findings);
    return { counts, dataTags, blocked: false, body: Buffer.from(masked, encoding) };
  }

  private uninspected(why: string): MaskResult {
    return { counts: EMPTY_COUNTS, dataTags: NO_TAGS, blocked: this.config.oversize === 'block', notInspected: why };
  }

  /** Runs every detector once over the view; a finding overlapping one of a higher-priority detector is dropped. */
  private detect(view: string, segments: Segments | undefined): Finding[] {
    let accepted: Finding[] = [];
    const layerFindings: Finding[] = [];
    for (const layer of this.layers) {
      if (layer.mayMatch && !layer.mayMatch(view)) continue;
      layerFindings.length = 0;
      layer.detect(view, layerFindings);
      if (layerFindings.length === 0) continue;
      const usable = segments ? layerFindings.filter((finding) => withinOneToken(segments, finding)) : layerFindings;
      accepted = accepted.length === 0 ? usable.slice() : mergeWithoutOverlap(accepted, usable);
    }
    return accepted;
  }
}

/** `accepted` and `lower` are each sorted and free of overlaps; keeps all of `accepted` and what of `lower` overlaps none of it. */
function mergeWithoutOverlap(accepted: readonly Finding[], lower: readonly Finding[]): Finding[] {
  const merged: Finding[] = [];
  let i = 0;
  for (const finding of lower) {
    while (i < accepted.length && accepted[i]!.end <= finding.start) merged.push(accepted[i++]!);
    if (i < accepted.length && accepted[i]!.start < finding.end) continue;
    merged.push(finding);
  }
  while (i < accepted.length) merged.push(accepted[i++]!);
  return merged;
}

// ---------------------------------------------------------------------------------------- JSON

/** The string literals and long integers of a JSON text, or undefined when the text is not JSON. */
function jsonSegments(text: string): Segments | undefined {
  try {
    JSON.parse(text);
  } catch {
    return undefined;
  }
  // The text is valid JSON, so quotes and backslashes occur only in string literals: indexOf finds
  // each literal, and a backslash inside one means it has escapes to decode.
  const segments: Segments = { view: '', viewStart: [], rawStart: [], rawEnd: [], form: [] };
  const parts: string[] = [];
  let offset = 0;
  const add = (value: string, start: number, end: number, form: number) => {
    parts.push(value);
    segments.viewStart.push(offset);
    segments.rawStart.push(start);
    segments.rawEnd.push(end);
    segments.form.push(form);
    offset += value.length + 1;
  };
  let backslash = text.indexOf('\\');
  let pos = 0;
  for (;;) {
    const open = text.indexOf('"', pos);
    addIntegers(text, pos, open === -1 ? text.length : open, add);
    if (open === -1) break;
    let close = text.indexOf('"', open + 1);
    let form = PLAIN;
    if (backslash !== -1 && backslash < close) {
      form = ESCAPED;
      while (escapedQuote(text, close)) close = text.indexOf('"', close + 1);
      backslash = text.indexOf('\\', close + 1);
    }
    if (close > open + 1) add(form === PLAIN ? text.slice(open + 1, close) : (JSON.parse(text.slice(open, close + 1)) as string), open, close + 1, form);
    pos = close + 1;
  }
  segments.view = parts.join('\n');
  return segments;
}

function escapedQuote(text: string, quote: number): boolean {
  let i = quote - 1;
  while (text.charCodeAt(i) === 92) i--;
  return (quote - 1 - i) % 2 === 1;
}

const MIN_INTEGER_DIGITS = 13;

/** Integers of 13 or more digits (card numbers sent as JSON numbers) between two string literals. */
function addIntegers(text: string, from: number, to: number, add: (value: string, start: number, end: number, form: number) => void): void {
  if (to - from < MIN_INTEGER_DIGITS) return;
  let run = 0;
  for (let i = from; i <= to; i++) {
    const code = i < to ? text.charCodeAt(i) : 0;
    if (code >= 48 && code <= 57) {
      run++;
      continue;
    }
    if (run >= MIN_INTEGER_DIGITS && code !== 46 && code !== 101 && code !== 69) {
      // Not followed by a fraction or exponent; not itself a fraction or exponent; a minus sign belongs to the token.
      let start = i - run;
      let before = text.charCodeAt(start - 1);
      if (before === 45) {
        before = text.charCodeAt(start - 2);
        if (before !== 101 && before !== 69) start--;
      }
      if (before !== 46 && before !== 101 && before !== 69 && before !== 43) add(text.slice(start, i), start, i, INTEGER);
    }
    run = 0;
  }
}

/** Index of the token whose view text contains `position` (viewStart is ascending). */
function tokenAt(segments: Segments, position: number): number {
  const starts = segments.viewStart;
  let low = 0;
  let high = starts.length - 1;
  while (low < high) {
    const mid = (low + high + 1) >> 1;
    if (starts[mid]! <= position) low = mid;
    else high = mid - 1;
  }
  return low;
}

function tokenViewEnd(segments: Segments, index: number): number {
  const next = segments.viewStart[index + 1];
  return next === undefined ? segments.view.length : next - 1;
}

function withinOneToken(segments: Segments, finding: Finding): boolean {
  return finding.end <= tokenViewEnd(segments, tokenAt(segments, finding.start));
}

const WHITESPACE = /[ \t\r\n]*/y;

/** Rewrites only the tokens that hold findings; everything else stays byte for byte. */
function maskJson(text: string, segments: Segments, findings: readonly Finding[]): string {
  const out: string[] = [];
  let copied = 0;
  let keyNumber = 0;
  let f = 0;
  while (f < findings.length) {
    const index = tokenAt(segments, findings[f]!.start);
    const viewStart = segments.viewStart[index]!;
    const viewEnd = tokenViewEnd(segments, index);
    const rawStart = segments.rawStart[index]!;
    const rawEnd = segments.rawEnd[index]!;
    WHITESPACE.lastIndex = rawEnd;
    WHITESPACE.exec(text);
    // Keys get numbered tokens so that two masked keys of one object stay distinct.
    const isKey = text.charCodeAt(WHITESPACE.lastIndex) === 58;
    let value = '';
    let cursor = viewStart;
    for (; f < findings.length && findings[f]!.start < viewEnd; f++) {
      const finding = findings[f]!;
      value += segments.view.slice(cursor, finding.start);
      value += isKey ? `${finding.token.slice(0, -1)}#${++keyNumber}]` : finding.token;
      cursor = finding.end;
    }
    value += segments.view.slice(cursor, viewEnd);
    out.push(text.slice(copied, rawStart));
    // Tokens are ASCII without quotes or backslashes, so a plain literal stays valid as is.
    out.push(segments.form[index] === PLAIN ? `"${value}"` : JSON.stringify(value));
    copied = rawEnd;
  }
  out.push(text.slice(copied));
  return out.join('');
}

function maskText(text: string, findings: readonly Finding[]): string {
  const out: string[] = [];
  let cursor = 0;
  for (const finding of findings) {
    out.push(text.slice(cursor, finding.start), finding.token);
    cursor = finding.end;
  }
  out.push(text.slice(cursor));
  return out.join('');
}

// ------------------------------------------------------------------------------- content types

interface MediaRange {
  matches(type: string, subtype: string): boolean;
}

function parseMediaRange(range: string): MediaRange {
  if (range === '*/*') return { matches: () => true };
  const [type, subtype] = range.split('/') as [string, string];
  if (subtype === '*') return { matches: (t) => t === type };
  if (subtype.startsWith('*+')) {
    const suffix = subtype.slice(1);
    return { matches: (t, s) => t === type && s.endsWith(suffix) && s.length > suffix.length };
  }
  return { matches: (t, s) => t === type && s === subtype };
}

interface MediaType {
  type: string;
  subtype: string;
  charset: string;
  /** No Content-Type header (read as text/plain). */
  untyped: boolean;
}

/** type, subtype and charset of a Content-Type header, lowercased; a missing header reads as text/plain. */
function parseMediaType(header: string | undefined): MediaType {
  if (header === undefined || header.trim() === '') return { type: 'text', subtype: 'plain', charset: '', untyped: true };
  const semicolon = header.indexOf(';');
  const essence = (semicolon === -1 ? header : header.slice(0, semicolon)).trim().toLowerCase();
  const slash = essence.indexOf('/');
  const type = slash === -1 ? essence : essence.slice(0, slash);
  const subtype = slash === -1 ? '' : essence.slice(slash + 1);
  let charset = '';
  if (semicolon !== -1) {
    const match = /;\s*charset\s*=\s*"?([^";\s]+)/i.exec(header);
    if (match) charset = match[1]!.toLowerCase();
  }
  return { type, subtype, charset, untyped: false };
}

function hasUtf16Bom(body: Buffer): boolean {
  return body.length >= 2 && ((body[0] === 0xfe && body[1] === 0xff) || (body[0] === 0xff && body[1] === 0xfe));
}
