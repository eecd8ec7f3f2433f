import { isIPv4, isIPv6 } from 'node:net';
import { countrySpecs, isValidIBAN } from 'ibantools';
import type { BuiltinKind } from './schema.js';

// The built-in PII detectors. Each one is a single left-to-right pass over the text that appends
// what it found, in order and without overlaps, to `out`. Every regular expression here runs in
// linear time on any input: candidates start only where the previous character cannot continue
// them (look-behind), repetitions are bounded or separated by mandatory separators, and the
// expensive checks (checksums, address parsing) run only on candidates. test/masking.test.ts
// feeds each detector long adversarial runs to keep it that way.

export interface Finding {
  /** Offsets in the scanned text, end exclusive. */
  readonly start: number;
  readonly end: number;
  /** The kind (or custom pattern name) it is counted under. */
  readonly name: string;
  /** What replaces the value when masking. */
  readonly token: string;
}

export type Detect = (text: string, out: Finding[]) => void;

const DOT = 46;

// ------------------------------------------------------------------------------------------ email

/** Characters of an RFC 5322 dot-atom local part (ASCII only; quoted local parts are not detected). */
const LOCAL_PART = new Uint8Array(128);
for (const ch of "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!#$%&'*+/=?^_`{|}~.-") LOCAL_PART[ch.charCodeAt(0)] = 1;
const MAX_LOCAL_PART = 64;
const MAX_DOMAIN = 253;
/** Host name labels (1-63 letters, digits, inner hyphens) then a letters-only or punycode top-level domain. */
const DOMAIN = /(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+(?:[A-Za-z]{2,63}|xn--[A-Za-z0-9-]{1,59})(?![A-Za-z0-9-])/y;

/** local@domain.tld: found from each "@" outwards, so text without "@" costs one indexOf. */
export const detectEmails: Detect = (text, out) => {
  let floor = 0;
  for (let at = text.indexOf('@'); at !== -1; at = text.indexOf('@', at + 1)) {
    let start = at;
    while (start > floor && at - start <= MAX_LOCAL_PART) {
      const code = text.charCodeAt(start - 1);
      if (code >= 128 || LOCAL_PART[code] === 0) break;
      start--;
    }
    if (start === at || at - start > MAX_LOCAL_PART || text.charCodeAt(at - 1) === DOT) continue;
    // Only the part after the last ".." (and without leading dots) is a valid dot-atom.
    for (let i = at - 2; i > start; i--) {
      if (text.charCodeAt(i) === DOT && text.charCodeAt(i - 1) === DOT) {
        start = i + 1;
        break;
      }
    }
    while (text.charCodeAt(start) === DOT) start++;
    if (start >= at) continue;
    DOMAIN.lastIndex = at + 1;
    const domain = DOMAIN.exec(text);
    if (!domain || domain[0].length > MAX_DOMAIN) continue;
    const end = at + 1 + domain[0].length;
    out.push({ start, end, name: 'email', token: '[email]' });
    floor = end;
    at = end - 1;
  }
};

// ------------------------------------------------------------------------------------------- card

/**
 * 13-19 digits, optionally in groups separated by one space or dash, starting with three digits
 * not preceded by a digit (written so that the engine can skip ahead to digit triples quickly).
 */
const CARD = /\d\d\d(?<!\d\d\d\d)(?:[ -]?\d){10,16}(?!\d)/g;

/** Luhn (mod 10) check over the digits of text[start, end) (other characters are skipped). */
export function luhnValid(text: string, start = 0, end = text.length): boolean {
  let sum = 0;
  let double = false;
  for (let i = end - 1; i >= start; i--) {
    let d = text.charCodeAt(i) - 48;
    if (d < 0 || d > 9) continue;
    if (double) {
      d *= 2;
      if (d > 9) d -= 9;
    }
    sum += d;
    double = !double;
  }
  return sum % 10 === 0;
}

/**
 * Issuer ranges and lengths of the major networks, from the first four digits: Visa 4 (13, 16,
 * 19); Mastercard 51-55, 2221-2720 (16); Mir 2200-2204 (16-19); Amex 34, 37 (15); Diners 300-305,
 * 36, 38-39 (14-19); JCB 3528-3589 (16-19); Maestro 50, 56-59 (13-19) and 6304, 6759, 676x
 * (13-19); Discover, UnionPay, RuPay and the rest of 6 (16-19).
 */
export function knownIssuer(four: number, length: number): boolean {
  const two = Math.trunc(four / 100);
  switch (Math.trunc(four / 1000)) {
    case 4:
      return length === 13 || length === 16 || length === 19;
    case 5:
      return two >= 51 && two <= 55 ? length === 16 : true;
    case 2:
      if (four >= 2221 && four <= 2720) return length === 16;
      return four >= 2200 && four <= 2204 && length >= 16;
    case 3:
      if (two === 34 || two === 37) return length === 15;
      if (two === 36 || two === 38 || two === 39 || (four >= 3000 && four <= 3059)) return length >= 14;
      return four >= 3528 && four <= 3589 && length >= 16;
    case 6:
      return length >= 16 || four === 6304 || four === 6759 || (four >= 6760 && four <= 6769);
    default:
      return false;
  }
}

const MAX_GROUPS = 19;
const groupEnd = new Int32Array(MAX_GROUPS);
const digitsBefore = new Int32Array(MAX_GROUPS);

/**
 * The card number at the start of text[start, end): the whole run if it has no separators,
 * otherwise the longest run of whole groups (each of 3 or more digits, one kind of separator; the
 * candidate is cut before the first group that breaks this) with 13-19 digits that passes the
 * issuer and Luhn checks. Returns where it ends, or -1.
 */
function cardEnd(text: string, start: number, end: number): number {
  let groups = 0;
  let digits = 0;
  let groupLength = 0;
  let separator = 0;
  let four = 0;
  let i = start;
  for (; i < end; i++) {
    const code = text.charCodeAt(i);
    if (code >= 48 && code <= 57) {
      if (digits < 4) four = four * 10 + (code - 48);
      digits++;
      groupLength++;
      continue;
    }
    if (groupLength < 3 || (separator !== 0 && code !== separator)) break;
    separator = code;
    groupEnd[groups] = i;
    digitsBefore[groups++] = digits;
    groupLength = 0;
  }
  if (groupLength >= 3) {
    groupEnd[groups] = i;
    digitsBefore[groups++] = digits;
  }
  for (let g = groups - 1; g >= 0 && digitsBefore[g]! >= 13; g--) {
    const length = digitsBefore[g]!;
    if (length <= 19 && knownIssuer(four, length) && luhnValid(text, start, groupEnd[g]!)) return groupEnd[g]!;
  }
  return -1;
}

export const detectCards: Detect = (text, out) => {
  CARD.lastIndex = 0;
  for (let m = CARD.exec(text); m; m = CARD.exec(text)) {
    const end = cardEnd(text, m.index, m.index + m[0].length);
    if (end === -1) {
      CARD.lastIndex = m.index + 1;
      continue;
    }
    out.push({ start: m.index, end, name: 'card', token: `[card ****${text.slice(end - 4, end)}]` });
    CARD.lastIndex = end;
  }
};

// ------------------------------------------------------------------------------------------- iban

/** Country code, check digits, then 11-30 letters or digits, optionally in space-separated groups (uppercase only). */
const IBAN = /(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}(?![A-Za-z0-9])/g;
const IBAN_LENGTH = new Map<string, number>();
for (const [country, spec] of Object.entries(countrySpecs)) if (spec.chars) IBAN_LENGTH.set(country, spec.chars);

/** ISO 7064 mod 97-10 over an IBAN in text[start, end) (spaces skipped): country and check digits move to the end, letters count 10-35. */
function ibanChecksumValid(text: string, start: number, end: number): boolean {
  let remainder = 0;
  const step = (code: number) => {
    if (code === 32) return;
    remainder = code <= 57 ? (remainder * 10 + (code - 48)) % 97 : (remainder * 100 + (code - 55)) % 97;
  };
  for (let i = start + 4; i < end; i++) step(text.charCodeAt(i));
  for (let i = start; i < start + 4; i++) step(text.charCodeAt(i));
  return remainder === 1;
}

/**
 * The IBAN at the start of text[start, end): exactly as many letters and digits as the country's
 * IBAN has (ISO 13616 registry, from ibantools), not followed by another letter or digit, with a
 * valid mod-97 checksum and BBAN format. Returns where it ends, or -1.
 */
function ibanEnd(text: string, start: number, end: number): number {
  const expected = IBAN_LENGTH.get(text.slice(start, start + 2));
  if (expected === undefined) return -1;
  let count = 0;
  let i = start;
  for (; i < end && count < expected; i++) if (text.charCodeAt(i) !== 32) count++;
  if (count < expected || (i < end && text.charCodeAt(i) !== 32)) return -1;
  if (!ibanChecksumValid(text, start, i)) return -1;
  return isValidIBAN(text.slice(start, i).replaceAll(' ', '')) ? i : -1;
}

export const detectIbans: Detect = (text, out) => {
  IBAN.lastIndex = 0;
  for (let m = IBAN.exec(text); m; m = IBAN.exec(text)) {
    const end = ibanEnd(text, m.index, m.index + m[0].length);
    if (end === -1) {
      IBAN.lastIndex = m.index + 1;
      continue;
    }
    out.push({ start: m.index, end, name: 'iban', token: '[iban]' });
    IBAN.lastIndex = end;
  }
};

// ------------------------------------------------------------------------------------ national_id

/**
 * One pass, four formats (capture groups tell which matched):
 *  1-4  US SSN        AAA-GG-SSSS or AAA GG SSSS
 *  5-9  UK NINO       AB123456C, AB 12 34 56 C
 *  10-16 French NIR   1 84 12 76 451 089 46 (15 characters, spaces optional, Corsica 2A/2B)
 *  17-18 Spanish DNI  12345678Z, 12345678-Z; NIE X1234567L
 */
const NATIONAL_ID = new RegExp(
  '(?<![A-Za-z0-9])(?:' +
    '(\\d{3})([- ])(\\d{2})\\2(\\d{4})' +
    '|([A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z]) ?(\\d{2}) ?(\\d{2}) ?(\\d{2}) ?([A-D])' +
    '|([1-478]) ?(\\d{2}) ?(\\d{2}) ?(\\d{2}|2[AB]) ?(\\d{3}) ?(\\d{3}) ?(\\d{2})' +
    '|([XYZ]\\d{7}|\\d{8})-?([A-Z])' +
    ')(?![A-Za-z0-9])',
  'g',
);

/** SSA rules: area 001-899 except 666, group 01-99, serial 0001-9999. */
export function ssnValid(area: string, group: string, serial: string): boolean {
  const a = Number(area);
  return a !== 0 && a !== 666 && a < 900 && group !== '00' && serial !== '0000';
}

const NINO_UNALLOCATED = new Set(['BG', 'GB', 'KN', 'NK', 'NT', 'TN', 'ZZ']);

/** INSEE: month 01-12, 20, 30-42 or 50-99; department, commune and order not zero; key = 97 - (number mod 97). */
export function nirValid(sex: string, year: string, month: string, department: string, commune: string, order: string, key: string): boolean {
  const m = Number(month);
  if (!((m >= 1 && m <= 12) || m === 20 || (m >= 30 && m <= 42) || m >= 50)) return false;
  if (department === '00' || commune === '000' || order === '000') return false;
  const dept = department === '2A' ? '19' : department === '2B' ? '18' : department;
  const number = Number(sex + year + month + dept + commune + order);
  return 97 - (number % 97) === Number(key);
}

const DNI_LETTERS = 'TRWAGMYFPDXBNJZSQVHLCKE';

/** Spanish DNI / NIE: the letter is DNI_LETTERS[number mod 23]; an NIE's X, Y, Z count as 0, 1, 2. */
export function dniValid(number: string, letter: string): boolean {
  const first = number.charCodeAt(0);
  const digits = first >= 88 ? String(first - 88) + number.slice(1) : number; // 'X' is 88
  return DNI_LETTERS[Number(digits) % 23] === letter;
}

function nationalIdValid(m: RegExpExecArray): boolean {
  if (m[1] !== undefined) return ssnValid(m[1], m[3]!, m[4]!);
  if (m[5] !== undefined) return !NINO_UNALLOCATED.has(m[5]);
  if (m[10] !== undefined) return nirValid(m[10], m[11]!, m[12]!, m[13]!, m[14]!, m[15]!, m[16]!);
  return dniValid(m[17]!, m[18]!);
}

export const detectNationalIds: Detect = (text, out) => {
  NATIONAL_ID.lastIndex = 0;
  for (let m = NATIONAL_ID.exec(text); m; m = NATIONAL_ID.exec(text)) {
    if (!nationalIdValid(m)) {
      NATIONAL_ID.lastIndex = m.index + 1;
      continue;
    }
    out.push({ start: m.index, end: m.index + m[0].length, name: 'national_id', token: '[national_id]' });
  }
};

// --------------------------------------------------------------------------------------------- ip

/** Dotted quads, not part of a longer dotted number (a version such as 1.2.3.4.5); a sentence's final dot is fine. */
const IPV4 = /(?<![\d.])\d{1,3}(?:\.\d{1,3}){3}(?!\.?\d)/g;
const MAX_IPV6 = 45;

/** 1: hex digit, 2: ':' or '.', 0: anything else. */
const IPV6_CHAR = new Uint8Array(128);
for (const ch of '0123456789abcdefABCDEF') IPV6_CHAR[ch.charCodeAt(0)] = 1;
IPV6_CHAR[58] = 2;
IPV6_CHAR[46] = 2;

function ipv6Char(code: number): number {
  return code < 128 ? IPV6_CHAR[code]! : 0;
}

function isAsciiAlnum(code: number): boolean {
  return (code >= 48 && code <= 57) || ((code | 32) >= 97 && (code | 32) <= 122);
}

/**
 * IPv6 addresses: from each ":" the surrounding run of hex digits, colons and dots (at most 45
 * characters, not touching other letters or digits, a sentence's final dot dropped), which
 * node:net's isIPv6 then accepts or not. Text without ":" costs one indexOf.
 */
function detectIpv6(text: string, out: Finding[]): void {
  for (let colon = text.indexOf(':'); colon !== -1; ) {
    let start = colon;
    while (start > 0 && ipv6Char(text.charCodeAt(start - 1)) !== 0) start--;
    let end = colon + 1;
    while (end < text.length && ipv6Char(text.charCodeAt(end)) !== 0) end++;
    const next = text.indexOf(':', end);
    let stop = end;
    while (stop > start && text.charCodeAt(stop - 1) === DOT) stop--;
    const touches = (start > 0 && isAsciiAlnum(text.charCodeAt(start - 1))) || (end < text.length && isAsciiAlnum(text.charCodeAt(end)));
    if (!touches && stop - start > 2 && stop - start <= MAX_IPV6 && text.charCodeAt(start) !== DOT && isIPv6(text.slice(start, stop))) {
      out.push({ start, end: stop, name: 'ip', token: '[ip]' });
    }
    colon = next;
  }
}

export const detectIps: Detect = (text, out) => {
  const v6: Finding[] = [];
  detectIpv6(text, v6);
  // Merge IPv4 addresses that are not inside an IPv6 one (::ffff:192.0.2.1), keeping order.
  let next = 0;
  IPV4.lastIndex = 0;
  for (let m = IPV4.exec(text); m; m = IPV4.exec(text)) {
    if (!isIPv4(m[0])) continue;
    const start = m.index;
    while (next < v6.length && v6[next]!.end <= start) out.push(v6[next++]!);
    if (next < v6.length && v6[next]!.start < start + m[0].length) continue;
    out.push({ start, end: start + m[0].length, name: 'ip', token: '[ip]' });
  }
  while (next < v6.length) out.push(v6[next++]!);
};

// ------------------------------------------------------------------------------------------ phone

/**
 * Four shapes (capture groups tell which matched); see docs/masking.md for why plain digit runs,
 * years, prices and dates are not phone numbers here:
 *  1 international  +<country><digits>, groups separated by one space, dot or dash, "(0)" allowed
 *  2 area in ()     (555) 123-4567, (06) 12 34 56 78
 *  3 trunk 0        020 7946 0958, 06-12-34-56-78, 030/1234567 (leading 0, a separator, 10-13 digits)
 *  4 NANP           555-123-4567, 1 800 555 0199 (3-3-4 with one kind of separator)
 */
const PHONE = new RegExp(
  '(?<![\\w+\\-./()])(?:' +
    '(\\+[1-9]\\d{0,14}(?:(?:[ .\\-]|[ ]?\\(\\d{1,5}\\)[ ]?)\\d{1,14}){0,7})' +
    '|(\\(\\d{2,5}\\)[ ]?\\d{2,8}(?:[ .\\-]\\d{2,8}){0,3})' +
    '|(0\\d{1,4}(?:[ .\\-/]\\d{2,8}){1,4})' +
    '|((?:1[ .\\-])?[2-9]\\d{2}([ .\\-])\\d{3}\\5\\d{4})' +
    ')(?!\\w|[.\\-/]\\d)',
  'g',
);

function countDigits(value: string): number {
  let n = 0;
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i);
    if (c >= 48 && c <= 57) n++;
  }
  return n;
}

function phoneValid(m: RegExpExecArray): boolean {
  const digits = countDigits(m[0]);
  if (m[1] !== undefined || m[2] !== undefined) return digits >= 8 && digits <= 15;
  if (m[3] !== undefined) return digits >= 10 && digits <= 13;
  return true;
}

export const detectPhones: Detect = (text, out) => {
  PHONE.lastIndex = 0;
  for (let m = PHONE.exec(text); m; m = PHONE.exec(text)) {
    if (phoneValid(m)) out.push({ start: m.index, end: m.index + m[0].length, name: 'phone', token: '[phone]' });
  }
};

// ----------------------------------------------------------------------------------------- custom

/** A tenant's custom pattern (already checked: compiles, not empty-matching, ReDoS-safe), global flag set. */
export function customDetector(name: string, regexp: RegExp): Detect {
  const token = `[${name}]`;
  return (text, out) => {
    regexp.lastIndex = 0;
    for (let m = regexp.exec(text); m; m = regexp.exec(text)) {
      if (m[0].length === 0) {
        regexp.lastIndex++;
        continue;
      }
      out.push({ start: m.index, end: m.index + m[0].length, name, token });
    }
  };
}

// --------------------------------------------------------------------------------------- registry

export const BUILTIN_DETECTORS: Readonly<Record<BuiltinKind, Detect>> = {
  email: detectEmails,
  phone: detectPhones,
  card: detectCards,
  iban: detectIbans,
  national_id: detectNationalIds,
  ip: detectIps,
};

/**
 * When two findings overlap, the one found by the detector earlier in this list wins (custom
 * patterns come before all of these). Checksummed kinds outrank the looser phone heuristic.
 */
export const BUILTIN_PRIORITY: readonly BuiltinKind[] = ['email', 'iban', 'card', 'national_id', 'ip', 'phone'];

/** Data tags each built-in kind puts on a request. */
export const BUILTIN_TAGS: Readonly<Record<BuiltinKind, readonly string[]>> = {
  email: ['pii'],
  phone: ['pii'],
  card: ['pii', 'finance'],
  iban: ['pii', 'finance'],
  national_id: ['pii'],
  ip: ['pii'],
};
