import { isSafe } from 'redos-detector';
import { z } from 'zod';
import { dataTagSchema } from '../policy/index.js';

// A tenant's `masking:` block. No transforms: like the other tenancy schemas it also describes the
// Admin API body in the OpenAPI document.

/** The built-in detectors, in the order they appear in documentation. */
export const BUILTIN_KINDS = ['email', 'phone', 'card', 'iban', 'national_id', 'ip'] as const;
export type BuiltinKind = (typeof BUILTIN_KINDS)[number];

export const MASKING_ACTIONS = ['mask', 'tag', 'block'] as const;
export type MaskingAction = (typeof MASKING_ACTIONS)[number];

export const DEFAULT_MAX_BYTES = 1024 * 1024;
export const MAX_MAX_BYTES = 16 * 1024 * 1024;
export const MAX_PATTERN_LENGTH = 256;
export const MAX_CUSTOM_PATTERNS = 32;
/** How long the ReDoS analysis of one custom pattern may take before the pattern is refused. */
export const PATTERN_CHECK_TIMEOUT_MS = 1000;

export const DEFAULT_CONTENT_TYPES = ['application/json', 'application/*+json', 'text/*'];

const DNS_LABEL = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
/** type/subtype, type/*, type/*+suffix or *\/* (lowercase, no parameters). */
const MEDIA_RANGE = /^(\*\/\*|[a-z0-9][a-z0-9!#$&^_.+-]{0,126}\/(\*|\*\+[a-z0-9][a-z0-9!#$&^_.-]{0,62}|[a-z0-9][a-z0-9!#$&^_.+-]{0,126}))$/;

/**
 * The flags a custom pattern runs with: global (every match), multiline (`^`/`$` match at the start
 * and end of each line and of each JSON string value) and, on request, case-insensitive.
 */
export function customPatternFlags(ignoreCase: boolean): string {
  return ignoreCase ? 'gmi' : 'gm';
}

const verdicts = new Map<string, string | null>();
const MAX_CACHED_VERDICTS = 512;

/**
 * Why a custom pattern is refused, or null when it is acceptable: it must compile, must not match
 * the empty string, and must pass a ReDoS analysis (redos-detector: no input may be matched in more
 * than a handful of ways, which rules out exponential *and* polynomial backtracking such as
 * `(a+)+$`, `(a|a)*`, `\s*,\s*` or `\d+X`). The verdict is cached: config reloads do not repeat
 * the analysis.
 */
export function customPatternProblem(pattern: string, ignoreCase = false): string | null {
  const flags = customPatternFlags(ignoreCase);
  const key = `${flags}/${pattern}`;
  const cached = verdicts.get(key);
  if (cached !== undefined) return cached;
  const verdict = analyse(pattern, flags);
  if (verdicts.size >= MAX_CACHED_VERDICTS) verdicts.delete(verdicts.keys().next().value!);
  verdicts.set(key, verdict);
  return verdict;
}

function analyse(pattern: string, flags: string): string | null {
  if (pattern.length === 0) return 'must not be empty';
  if (pattern.length > MAX_PATTERN_LENGTH) return `must be at most ${MAX_PATTERN_LENGTH} characters (it has ${pattern.length})`;
  let regexp: RegExp;
  try {
    regexp = new RegExp(pattern, flags);
  } catch (err) {
    return `is not a valid JavaScript regular expression: ${(err as Error).message}`;
  }
  if (new RegExp(pattern, flags.replace('g', '')).test('')) {
    return 'must not match the empty string (a pattern such as "x*" would match everywhere); use + instead of * or add a literal part';
  }
  let result;
  try {
    result = isSafe(regexp, { timeout: PATTERN_CHECK_TIMEOUT_MS });
  } catch (err) {
    return `could not be analysed for catastrophic backtracking (${(err as Error).message}); simplify it`;
  }
  if (result.safe) return null;
  if (result.error === 'timedOut' || result.error === 'hitMaxSteps') {
    return `is too complex to prove free of catastrophic backtracking within ${PATTERN_CHECK_TIMEOUT_MS} ms; simplify it (fewer nested or adjacent quantifiers)`;
  }
  return (
    'can backtrack catastrophically (ReDoS): some inputs make it try a huge number of ways to match, which would stall the gateway. ' +
    'Avoid nested quantifiers such as (a+)+, alternatives that overlap such as (a|ab)*, and adjacent quantified parts that can match the same ' +
    'characters such as \\s*,\\s* or \\d+\\d; start the pattern with a literal or a bounded part, e.g. EMP-[0-9]{6}'
  );
}

export const customPatternSchema = z
  .object({
    /** Counted and audited under this name; the mask token is `[name]`. */
    name: z
      .string()
      .regex(DNS_LABEL, 'must be a DNS label: lowercase letters, digits and "-", 1-63 characters, not starting or ending with "-"')
      .refine((name) => !(BUILTIN_KINDS as readonly string[]).includes(name), {
        message: `must not be the name of a built-in kind (${BUILTIN_KINDS.join(', ')})`,
      }),
    /** A JavaScript regular expression (without slashes), at most 256 characters. */
    pattern: z.string(),
    /** Data tags a request gets when the pattern matches (default: pii). */
    tags: z.array(dataTagSchema).max(16, 'at most 16 tags').default(['pii']),
    ignoreCase: z.boolean().default(false),
  })
  .strict()
  .superRefine((value, ctx) => {
    const problem = customPatternProblem(value.pattern, value.ignoreCase);
    if (problem) ctx.addIssue({ code: 'custom', path: ['pattern'], message: problem });
  });

export const maskingSchema = z
  .object({
    enabled: z.boolean().default(false),
    /** mask: replace what was found and tag the request; tag: only tag; block: refuse the request. */
    action: z.enum(MASKING_ACTIONS, { error: 'must be "mask", "tag" or "block"' }).default('mask'),
    /** Built-in detectors to run (custom patterns always run). */
    kinds: z
      .array(z.enum(BUILTIN_KINDS, { error: `must be one of ${BUILTIN_KINDS.join(', ')}` }))
      .max(BUILTIN_KINDS.length)
      .refine((kinds) => new Set(kinds).size === kinds.length, 'must not list a kind twice')
      .default([...BUILTIN_KINDS]),
    /** Bodies up to this many bytes are inspected. */
    maxBytes: z
      .number()
      .int('must be a whole number of bytes')
      .min(1024, 'must be at least 1024 bytes')
      .max(MAX_MAX_BYTES, `must be at most ${MAX_MAX_BYTES} bytes (16 MiB)`)
      .default(DEFAULT_MAX_BYTES),
    /** What happens to a body that cannot be inspected (larger than maxBytes, compressed, UTF-16): refuse it, or pass it unmodified. */
    oversize: z.enum(['pass', 'block'], { error: 'must be "pass" or "block"' }).default('block'),
    /** Media types whose bodies are inspected: type/subtype, type/*, type/*+suffix, or *\/*. */
    contentTypes: z
      .array(z.string().regex(MEDIA_RANGE, 'must be a lowercase media range such as application/json, text/*, application/*+json or */* (no parameters)'))
      .max(64, 'at most 64 entries')
      .default([...DEFAULT_CONTENT_TYPES]),
    customPatterns: z
      .array(customPatternSchema)
      .max(MAX_CUSTOM_PATTERNS, `at most ${MAX_CUSTOM_PATTERNS} custom patterns`)
      .default([])
      .superRefine((patterns, ctx) => {
        const seen = new Set<string>();
        patterns.forEach((pattern, index) => {
          if (seen.has(pattern.name)) ctx.addIssue({ code: 'custom', path: [index, 'name'], message: `duplicate custom pattern "${pattern.name}"` });
          seen.add(pattern.name);
        });
      }),
  })
  .strict();

/** A validated masking block (defaults applied). */
export type MaskingConfig = z.infer<typeof maskingSchema>;
/** A masking block as an operator writes it. */
export type MaskingConfigInput = z.input<typeof maskingSchema>;
export type CustomPatternConfig = z.infer<typeof customPatternSchema>;
