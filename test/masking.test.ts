import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { composeIBAN, friendlyFormatIBAN } from 'ibantools';
import {
  compileMasking,
  customPatternProblem,
  maskingSchema,
  type MaskResult,
  type Masker,
  type MaskingConfigInput,
} from '../src/tenancy/masking/index.js';

function masker(input: MaskingConfigInput = {}): Masker {
  return compileMasking(maskingSchema.parse({ enabled: true, ...input }));
}

const defaultMasker = masker();

function scan(text: string, m: Masker = defaultMasker, contentType = 'text/plain'): MaskResult {
  return m.transform(Buffer.from(text), contentType);
}

/** The text after masking (the original when nothing was masked). */
function masked(text: string, m: Masker = defaultMasker, contentType = 'text/plain'): string {
  return scan(text, m, contentType).body?.toString() ?? text;
}

function assertFound(kind: string, samples: readonly string[]): void {
  for (const sample of samples) {
    const result = scan(`before ${sample} after`);
    assert.deepEqual(result.counts, { [kind]: 1 }, `expected one ${kind} in ${JSON.stringify(sample)}`);
    assert.ok(result.body, `expected ${JSON.stringify(sample)} to be masked`);
    assert.ok(!result.body.toString().includes(sample), `${JSON.stringify(sample)} still present: ${result.body.toString()}`);
  }
}

function assertNotFound(samples: readonly string[]): void {
  for (const sample of samples) {
    const result = scan(`before ${sample} after`);
    assert.deepEqual(result.counts, {}, `expected nothing in ${JSON.stringify(sample)}, got ${JSON.stringify(result.counts)}`);
    assert.equal(result.body, undefined);
  }
}

function luhnCheckDigit(partial: string): number {
  let sum = 0;
  let double = true;
  for (let i = partial.length - 1; i >= 0; i--) {
    let d = Number(partial[i]);
    if (double) {
      d *= 2;
      if (d > 9) d -= 9;
    }
    sum += d;
    double = !double;
  }
  return (10 - (sum % 10)) % 10;
}

describe('detectors', () => {
  test('email: pragmatic local@domain.tld', () => {
    assertFound('email', [
      'alice@example.com',
      'bob.smith+tag@mail.example.co.uk',
      "o'brien@example.ie",
      'USER_1@Sub-Domain.Example.ORG',
      'x@xn--80ak6aa92e.com',
      'user@xn--p1ai.xn--p1ai',
    ]);
    assert.equal(masked('write to alice@example.com.'), 'write to [email].');
    assert.equal(masked('<alice@example.com>,"bob@example.org"'), '<[email]>,"[email]"');
    assertNotFound([
      'alice@localhost',
      'user@example',
      '@example.com',
      'name@example.c',
      'foo@bar.123',
      'x@-example.com',
      'twitter @handle',
      'alice.@example.com',
      `${'a'.repeat(65)}@example.com`,
    ]);
  });

  test('phone: E.164 and national formats with separators, not plain numbers', () => {
    assertFound('phone', [
      '+1 415 555 2671',
      '+14155552671',
      '+44 (0)20 7946 0958',
      '+33 6 12 34 56 78',
      '+49-30-1234567',
      '(555) 123-4567',
      '555-123-4567',
      '555.123.4567',
      '1-800-555-0199',
      '020 7946 0958',
      '06 12 34 56 78',
      '030/1234567',
    ]);
    assertNotFound([
      'in 2024',
      '1999.99',
      '123456789',
      '4567890123',
      '2024-01-15',
      '15.01.2024',
      '01/02/2024',
      '1.2.3',
      '+1',
      '+12 34',
      '1 234 567',
      '12:30:45',
      '555-12-34',
      '555-123-4567-89',
    ]);
  });

  test('card: 13-19 digits, Luhn-valid, known issuer, last four kept', () => {
    assertFound('card', [
      '4111 1111 1111 1111',
      '4111-1111-1111-1111',
      '4111111111111111',
      '5555 5555 5555 4444',
      '3782 822463 10005',
      '6011 1111 1111 1117',
      '2223003122003222',
      '4222222222222',
    ]);
    assert.equal(masked('pay with 4111 1111 1111 1111 today'), 'pay with [card ****1111] today');
    assert.equal(masked('card 5555-5555-5555-4444 2 items'), 'card [card ****4444] 2 items');
    assertNotFound([
      '4111 1111 1111 1112',
      '4111111111111112',
      `123456789012345${luhnCheckDigit('123456789012345')}`,
      '4111 1111-1111 1111',
      '41 11 11 11 11 11 11 11',
      '41111111111111111111',
      '411111111111',
    ]);
  });

  test('iban: country length table and mod-97 checksum', () => {
    assertFound('iban', [
      'GB82 WEST 1234 5698 7654 32',
      'GB82WEST12345698765432',
      'DE89 3704 0044 0532 0130 00',
      'FR14 2004 1010 0505 0001 3M02 606',
      'NO93 8601 1117 947',
      'NL91 ABNA 0417 1643 00',
    ]);
    assert.equal(masked('to GB82 WEST 1234 5698 7654 32 EUR 10'), 'to [iban] EUR 10');
    assertNotFound([
      'GB82 WEST 1234 5698 7654 33',
      'GB82WEST1234569876543',
      'GB82WEST123456987654321',
      'XX82WEST12345698765432',
      'gb82west12345698765432',
    ]);
  });

  test('national_id: US SSN, UK NINO, French NIR, Spanish DNI/NIE', () => {
    assertFound('national_id', [
      '123-45-6789',
      '123 45 6789',
      'AB123456C',
      'AB 12 34 56 C',
      '2 55 08 14 168 025 38',
      '255081416802538',
      '1 80 01 2A 123 456 20',
      '12345678Z',
      '12345678-Z',
      'X1234567L',
      'Y1234567X',
    ]);
    assertNotFound([
      '000-12-3456',
      '666-12-3456',
      '900-12-3456',
      '123-00-4567',
      '123-45-0000',
      '123-45 6789',
      'QQ123456C',
      'GB123456A',
      'AB123456E',
      'DA123456A',
      '255081416802539',
      '2 55 13 14 168 025 38',
      '12345678A',
      'X1234567A',
    ]);
  });

  test('ip: IPv4 dotted quads and IPv6 (node:net)', () => {
    assertFound('ip', ['192.168.1.20', '10.0.0.1', '255.255.255.255', '2001:db8::8a2e:370:7334', '::1', 'fe80::1', '::ffff:192.0.2.1', '2001:DB8:0:0:8:800:200C:417A']);
    assert.equal(masked('from 10.0.0.1.'), 'from [ip].');
    assertNotFound(['256.1.1.1', '1.2.3', '1.2.3.4.5', '01.2.3.4', '12:30:45', '00:1A:2B:3C:4D:5E', 'std::vector', 'a:b:c', '::']);
  });

  test('overlapping findings are counted once, for the stronger kind', () => {
    assert.deepEqual(scan('ssn 012-34-5678').counts, { national_id: 1 });
    assert.deepEqual(scan('contact x4111111111111111@example.com').counts, { email: 1 });
    assert.deepEqual(scan('mapped ::ffff:192.0.2.1 and 192.0.2.1').counts, { ip: 2 });
  });

  test('kinds selects the built-in detectors', () => {
    const emailOnly = masker({ kinds: ['email'] });
    const result = scan('alice@example.com 4111 1111 1111 1111 10.0.0.1', emailOnly);
    assert.deepEqual(result.counts, { email: 1 });
    assert.equal(result.body?.toString(), '[email] 4111 1111 1111 1111 10.0.0.1');
    assert.deepEqual(scan('alice@example.com', masker({ kinds: [] })).counts, {});
  });

  test('adversarial input stays linear (no regex backtracking blow-up)', () => {
    const big = masker({ maxBytes: 1024 * 1024 });
    const units = ['1', '1 ', '123 ', '555-', '555 ', 'a@', 'a.a@', '..@', '::1 ', 'f:', 'GB82 ', 'AB12 ', '+1 ', '(12)', '0 1', '1.1.', 'X1', '2A '];
    for (const unit of units) {
      const text = unit.repeat(Math.ceil((256 * 1024) / unit.length));
      const started = performance.now();
      big.transform(Buffer.from(text), 'text/plain');
      big.transform(Buffer.from(JSON.stringify([text, text.slice(1)])), 'application/json');
      const elapsed = performance.now() - started;
      // A quadratic or exponential pattern takes minutes here; linear ones take milliseconds.
      assert.ok(elapsed < 5000, `${JSON.stringify(unit)} x 256 KiB took ${elapsed.toFixed(0)} ms`);
    }
  });
});

describe('transform', () => {
  test('JSON: only strings holding PII change; formatting, numbers and escapes stay byte for byte', () => {
    const input = [
      '{',
      '  "user": {"email": "alice@example.com", "note": "call +44 20 7946 0958 today"},',
      '  "big": 12345678901234567890, "float": 1.5e+300, "neg": -4111111111111111,',
      '  "pay": [4111111111111111, "GB82 WEST 1234 5698 7654 32"],',
      '  "esc": "dave\\u0040example.com\\n", "quote": "say \\"hi\\" to bob@example.org",',
      '  "ok": true, "none": null, "unicode": "café ☕ 4111"',
      '}',
    ].join('\n');
    const expected = [
      '{',
      '  "user": {"email": "[email]", "note": "call [phone] today"},',
      '  "big": 12345678901234567890, "float": 1.5e+300, "neg": "-[card ****1111]",',
      '  "pay": ["[card ****1111]", "[iban]"],',
      '  "esc": "[email]\\n", "quote": "say \\"hi\\" to [email]",',
      '  "ok": true, "none": null, "unicode": "café ☕ 4111"',
      '}',
    ].join('\n');
    const result = scan(input, defaultMasker, 'application/json');
    assert.equal(result.body?.toString(), expected);
    assert.deepEqual(result.counts, { email: 3, phone: 1, card: 2, iban: 1 });
    assert.deepEqual(result.dataTags, ['finance', 'pii']);
    assert.equal(result.blocked, false);
    JSON.parse(result.body!.toString());
  });

  test('JSON: keys are inspected too, and masked keys stay distinct', () => {
    const result = scan('{"alice@example.com": 1, "bob@example.com": {"carol@example.com": 2}}', defaultMasker, 'application/json');
    assert.equal(result.body?.toString(), '{"[email#1]": 1, "[email#2]": {"[email#3]": 2}}');
    assert.deepEqual(result.counts, { email: 3 });
  });

  test('JSON content type with a body that is not JSON: inspected as text', () => {
    const result = scan('{"a": alice@example.com', defaultMasker, 'application/json');
    assert.equal(result.body?.toString(), '{"a": [email]');
    assert.equal(masked('not json at all: 10.0.0.1', defaultMasker, 'application/vnd.api+json'), 'not json at all: [ip]');
  });

  test('text bodies are masked in place; counts are exact', () => {
    const text = 'a@example.com b@example.com, c@example.com; 4111 1111 1111 1111 and 5555555555554444; ssn 123-45-6789';
    const result = scan(text);
    assert.deepEqual(result.counts, { email: 3, card: 2, national_id: 1 });
    assert.equal(result.body?.toString(), '[email] [email], [email]; [card ****1111] and [card ****4444]; ssn [national_id]');
  });

  test('a body without PII is not copied: body is undefined and nothing is counted', () => {
    const result = scan('{"order": 12345, "total": 99.95, "at": "2024-01-15T10:30:00Z", "v": "1.2.3"}', defaultMasker, 'application/json');
    assert.deepEqual(result, { counts: {}, dataTags: [], blocked: false });
  });

  test('data tags: any PII gives pii, cards and IBANs also finance', () => {
    assert.deepEqual(scan('alice@example.com').dataTags, ['pii']);
    assert.deepEqual(scan('10.0.0.1').dataTags, ['pii']);
    assert.deepEqual(scan('GB82WEST12345698765432').dataTags, ['finance', 'pii']);
    assert.deepEqual(scan('4111111111111111').dataTags, ['finance', 'pii']);
  });

  test('action tag: counts and tags, body untouched', () => {
    const result = scan('alice@example.com', masker({ action: 'tag' }));
    assert.deepEqual(result, { counts: { email: 1 }, dataTags: ['pii'], blocked: false });
  });

  test('action block: blocked when something is found, not otherwise', () => {
    const blocking = masker({ action: 'block' });
    assert.deepEqual(scan('card 4111 1111 1111 1111', blocking), { counts: { card: 1 }, dataTags: ['finance', 'pii'], blocked: true });
    assert.equal(scan('nothing to see', blocking).blocked, false);
  });

  test('custom patterns: counted by name, own tags, masked as [name]', () => {
    const m = masker({
      customPatterns: [
        { name: 'employee-id', pattern: 'EMP-[0-9]{6}', tags: ['hr'] },
        { name: 'project', pattern: 'project (apollo|gemini)', ignoreCase: true },
        { name: 'case-ref', pattern: '\\d{3}-\\d{2}-\\d{4}', tags: ['legal', 'pii'] },
      ],
    });
    const result = scan('EMP-123456 on Project Apollo, case 123-45-6789, EMP-12345', m);
    assert.deepEqual(result.counts, { 'employee-id': 1, project: 1, 'case-ref': 1 });
    assert.deepEqual(result.dataTags, ['hr', 'legal', 'pii']);
    assert.equal(result.body?.toString(), '[employee-id] on [project], case [case-ref], EMP-12345');
    assert.deepEqual(scan('EMP-654321', m).dataTags, ['hr']);
  });

  test('custom patterns: ^ and $ match at the ends of each JSON string value', () => {
    const m = masker({ customPatterns: [{ name: 'ticket', pattern: '^T-\\d{4}$', tags: ['ops'] }] });
    const result = scan('{"a": "T-1234", "b": "see T-5678", "c": ["T-9999"]}', m, 'application/json');
    assert.equal(result.body?.toString(), '{"a": "[ticket]", "b": "see T-5678", "c": ["[ticket]"]}');
    assert.deepEqual(result.counts, { ticket: 2 });
  });

  test('custom patterns never match across two JSON values', () => {
    const m = masker({ customPatterns: [{ name: 'pair', pattern: 'a\\sb' }] });
    assert.deepEqual(scan('["a", "b"]', m, 'application/json').counts, {});
    assert.deepEqual(scan('["a b"]', m, 'application/json').counts, { pair: 1 });
  });

  test('content types: JSON, +json and text by default; parameters and case ignored; a missing one reads as text/plain', () => {
    for (const type of ['application/json', 'Application/JSON; charset=utf-8', 'application/vnd.api+json', 'application/problem+json', 'text/plain', 'text/csv', undefined]) {
      assert.equal(defaultMasker.inspects(type), true, String(type));
    }
    for (const type of ['application/octet-stream', 'image/png', 'application/xml', 'multipart/form-data', 'application/jsonx', 'application/+json']) {
      assert.equal(defaultMasker.inspects(type), false, type);
    }
    const xmlOnly = masker({ contentTypes: ['application/xml'] });
    assert.equal(xmlOnly.inspects('application/xml'), true);
    assert.equal(xmlOnly.inspects('application/json'), false);
    assert.equal(xmlOnly.inspects(undefined), false);
    assert.equal(masker({ contentTypes: ['*/*'] }).inspects('image/png'), true);
    assert.equal(compileMasking(maskingSchema.parse({ enabled: false })).inspects('application/json'), false);
  });

  test('non-UTF-8 text is read byte-transparently (Latin-1): only the masked values change', () => {
    const body = Buffer.concat([Buffer.from([0x63, 0x61, 0x66, 0xe9, 0x20]), Buffer.from('alice@example.com '), Buffer.from([0xff, 0x00, 0x80])]);
    const result = defaultMasker.transform(body, 'text/plain; charset=iso-8859-1');
    assert.deepEqual(result.counts, { email: 1 });
    assert.deepEqual(result.body, Buffer.concat([Buffer.from([0x63, 0x61, 0x66, 0xe9, 0x20]), Buffer.from('[email] '), Buffer.from([0xff, 0x00, 0x80])]));
  });

  test('bodies that cannot be inspected: blocked or passed per oversize, never truncated', () => {
    const utf16 = Buffer.from('\ufeffalice@example.com', 'utf16le');
    const refused = defaultMasker.transform(utf16, 'text/plain');
    assert.equal(refused.blocked, true);
    assert.match(refused.notInspected!, /UTF-16/);
    assert.deepEqual(refused.counts, {});
    const passing = masker({ oversize: 'pass' });
    const passed = passing.transform(Buffer.from('alice@example.com', 'utf16le'), 'text/plain; charset=UTF-16LE');
    assert.equal(passed.blocked, false);
    assert.match(passed.notInspected!, /UTF-16/);
    assert.equal(passed.body, undefined);

    const binary = defaultMasker.transform(Buffer.from([0x80, 0x81, 0xfd, 0x40, 0x41]), undefined);
    assert.match(binary.notInspected!, /without Content-Type/);

    const small = masker({ maxBytes: 1024 });
    const large = small.transform(Buffer.alloc(1025, 0x61), 'text/plain');
    assert.equal(large.blocked, true);
    assert.match(large.notInspected!, /1025 bytes is larger than maxBytes \(1024\)/);
    assert.equal(small.transform(Buffer.alloc(1024, 0x61), 'text/plain').notInspected, undefined);
  });

  test('an empty body is clean', () => {
    assert.deepEqual(defaultMasker.transform(Buffer.alloc(0), 'application/json'), { counts: {}, dataTags: [], blocked: false });
  });
});

describe('config', () => {
  test('defaults', () => {
    assert.deepEqual(maskingSchema.parse({}), {
      enabled: false,
      action: 'mask',
      kinds: ['email', 'phone', 'card', 'iban', 'national_id', 'ip'],
      maxBytes: 1024 * 1024,
      oversize: 'block',
      contentTypes: ['application/json', 'application/*+json', 'text/*'],
      customPatterns: [],
    });
    assert.deepEqual(maskingSchema.parse({ customPatterns: [{ name: 'x', pattern: 'X-\\d{3}' }] }).customPatterns, [
      { name: 'x', pattern: 'X-\\d{3}', tags: ['pii'], ignoreCase: false },
    ]);
  });

  function issues(input: unknown): string[] {
    const parsed = maskingSchema.safeParse(input);
    assert.equal(parsed.success, false);
    return parsed.error!.issues.map((issue) => `${issue.path.join('.')}: ${issue.message}`);
  }

  test('clear errors for bad values', () => {
    assert.deepEqual(issues({ action: 'drop' }), ['action: must be "mask", "tag" or "block"']);
    assert.deepEqual(issues({ oversize: 'truncate' }), ['oversize: must be "pass" or "block"']);
    assert.deepEqual(issues({ maxBytes: 32 * 1024 * 1024 }), ['maxBytes: must be at most 16777216 bytes (16 MiB)']);
    assert.deepEqual(issues({ maxBytes: 10 }), ['maxBytes: must be at least 1024 bytes']);
    assert.deepEqual(issues({ kinds: ['email', 'ssn'] }), ['kinds.1: must be one of email, phone, card, iban, national_id, ip']);
    assert.deepEqual(issues({ kinds: ['email', 'email'] }), ['kinds: must not list a kind twice']);
    assert.match(issues({ contentTypes: ['application/json; charset=utf-8'] })[0]!, /^contentTypes\.0: must be a lowercase media range/);
    assert.match(issues({ extra: 1 })[0]!, /Unrecognized key: "extra"/);
    assert.deepEqual(issues({ customPatterns: [{ name: 'email', pattern: 'x' }] }), [
      'customPatterns.0.name: must not be the name of a built-in kind (email, phone, card, iban, national_id, ip)',
    ]);
    assert.deepEqual(issues({ customPatterns: [{ name: 'a', pattern: 'A-1' }, { name: 'a', pattern: 'A-2' }] }), ['customPatterns.1.name: duplicate custom pattern "a"']);
    assert.match(issues({ customPatterns: [{ name: 'a', pattern: 'A-1', tags: ['HR'] }] })[0]!, /^customPatterns\.0\.tags\.0: must be a data tag/);
  });

  test('custom patterns that are invalid, empty-matching, too long or catastrophic are refused', () => {
    assert.match(issues({ customPatterns: [{ name: 'a', pattern: '[' }] })[0]!, /^customPatterns\.0\.pattern: is not a valid JavaScript regular expression/);
    assert.match(issues({ customPatterns: [{ name: 'a', pattern: 'x*' }] })[0]!, /must not match the empty string/);
    assert.match(issues({ customPatterns: [{ name: 'a', pattern: 'x'.repeat(257) }] })[0]!, /must be at most 256 characters \(it has 257\)/);
    for (const pattern of ['(a+)+$', '\\s*,\\s*', '\\d+X', '\\w+@\\w+\\.com']) {
      assert.match(issues({ customPatterns: [{ name: 'a', pattern }] })[0]!, /^customPatterns\.0\.pattern: can backtrack catastrophically \(ReDoS\)/, pattern);
    }
    // Analysis that does not finish in time is a refusal too.
    assert.match(customPatternProblem('(a|a)+$')!, /too complex to prove free of catastrophic backtracking within 1000 ms/);
    assert.equal(customPatternProblem('EMP-[0-9]{6}'), null);
    assert.equal(customPatternProblem('\\bACCT-\\d{8}\\b'), null);
  });

  test('compileMasking refuses a catastrophic pattern that bypassed the schema, naming it', () => {
    const config = { ...maskingSchema.parse({ enabled: true }), customPatterns: [{ name: 'bad', pattern: '(a+)+$', tags: [], ignoreCase: false }] };
    assert.throws(() => compileMasking(config), /^Error: customPatterns\[0\] "bad": pattern can backtrack catastrophically \(ReDoS\)/);
  });
});

// ------------------------------------------------------------------------------------ properties

/** Strings with no digits, "@" or ":": nothing in them can be PII (":" could make an IPv6 address such as ::a). Quotes, backslashes and control characters exercise escaping. */
const safeText = fc.string({
  unit: fc.constantFrom(...'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ ,.;!?-_()/\'"\\\n\té☕日本'.split('')),
  maxLength: 40,
});

const safeJson: fc.Arbitrary<unknown> = fc.letrec<{ value: unknown }>((tie) => ({
  value: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    safeText,
    fc.integer({ min: -1_000_000_000, max: 1_000_000_000 }),
    fc.double({ noNaN: true, noDefaultInfinity: true, min: -1e6, max: 1e6 }),
    fc.boolean(),
    fc.constant(null),
    fc.array(tie('value'), { maxLength: 5 }),
    fc.dictionary(safeText, tie('value'), { maxKeys: 5 }),
  ),
})).value;

/** A Luhn-valid 16-digit number from a real issuer range, as plain digits or in groups of four. */
const cardNumber = fc
  .tuple(fc.constantFrom('4', '51', '55', '2221', '6011'), fc.array(fc.integer({ min: 0, max: 9 }), { minLength: 15, maxLength: 15 }), fc.constantFrom('', ' ', '-'))
  .map(([prefix, digits, separator]) => {
    const partial = (prefix + digits.join('')).slice(0, 15);
    const number = partial + luhnCheckDigit(partial);
    return { compact: number, text: separator ? number.match(/.{4}/g)!.join(separator) : number };
  });

const iban = fc
  .tuple(
    fc.constantFrom('GB', 'DE'),
    fc.array(fc.constantFrom(...'ABCDEFGHIJKLMNOPQRSTUVWXYZ'.split('')), { minLength: 4, maxLength: 4 }),
    fc.array(fc.integer({ min: 0, max: 9 }), { minLength: 18, maxLength: 18 }),
    fc.boolean(),
  )
  .map(([country, letters, digits, spaced]) => {
    const bban = country === 'GB' ? letters.join('') + digits.slice(0, 14).join('') : digits.join('');
    const compact = composeIBAN({ countryCode: country, bban })!;
    return { compact, text: spaced ? friendlyFormatIBAN(compact)! : compact };
  });

const label = fc.stringMatching(/^[a-z][a-z0-9]{0,8}$/);
const email = fc
  .tuple(fc.array(label, { minLength: 1, maxLength: 2 }), fc.array(label, { minLength: 1, maxLength: 2 }), fc.stringMatching(/^[a-z]{2,6}$/))
  .map(([local, domain, tld]) => `${local.join('.')}@${domain.join('.')}.${tld}`);

type Injected = { kind: 'card' | 'iban' | 'email'; text: string; compact: string; as: 'value' | 'inText' | 'key' | 'number' };

const injected: fc.Arbitrary<Injected> = fc.oneof(
  fc.tuple(cardNumber, fc.constantFrom('value', 'inText', 'key', 'number')).map(([card, as]): Injected => ({ kind: 'card', ...card, as: as as Injected['as'] })),
  fc.tuple(iban, fc.constantFrom('value', 'inText', 'key')).map(([value, as]): Injected => ({ kind: 'iban', ...value, as: as as Injected['as'] })),
  fc.tuple(email, fc.constantFrom('value', 'inText', 'key')).map(([value, as]): Injected => ({ kind: 'email', text: value, compact: value, as: as as Injected['as'] })),
);

describe('properties', () => {
  test('random JSON without PII comes back unchanged (no body, nothing counted)', () => {
    fc.assert(
      fc.property(safeJson, (doc) => {
        const result = defaultMasker.transform(Buffer.from(JSON.stringify(doc, null, doc === null ? undefined : 1)), 'application/json');
        assert.deepEqual(result, { counts: {}, dataTags: [], blocked: false });
      }),
      { numRuns: 300 },
    );
  });

  test('every injected card number, IBAN and email is masked and counted; the rest of the document is intact', () => {
    fc.assert(
      fc.property(safeJson, fc.array(fc.tuple(injected, safeText, safeText), { minLength: 1, maxLength: 8 }), (doc, items) => {
        const parts = items.map(([item, before, after]) => {
          if (item.as === 'number') return item.compact;
          if (item.as === 'key') return `{${JSON.stringify(item.text)}: ${JSON.stringify(before)}}`;
          if (item.as === 'value') return JSON.stringify(item.text);
          return JSON.stringify(`${before} ${item.text} ${after}`);
        });
        const body = `{"doc": ${JSON.stringify(doc)}, "items": [${parts.join(', ')}]}`;
        const result = defaultMasker.transform(Buffer.from(body), 'application/json');
        const expected: Record<string, number> = {};
        for (const [item] of items) expected[item.kind] = (expected[item.kind] ?? 0) + 1;
        assert.deepEqual(result.counts, expected);
        const out = result.body!.toString();
        const parsed = JSON.parse(out) as { doc: unknown; items: unknown[] };
        assert.deepEqual(parsed.doc, JSON.parse(JSON.stringify(doc)));
        assert.equal(parsed.items.length, items.length);
        for (const [item] of items) {
          assert.ok(!out.includes(item.text) && !out.includes(item.compact), `${item.text} left in ${out}`);
        }
        assert.ok(result.dataTags.includes('pii'));
      }),
      { numRuns: 300 },
    );
  });

  test('any JSON value: the result is either untouched or valid JSON of the same shape', () => {
    const shape = (value: unknown): unknown =>
      Array.isArray(value) ? value.map(shape) : value !== null && typeof value === 'object' ? Object.keys(value).length : typeof value === 'number' ? 'scalar' : typeof value === 'string' ? 'scalar' : value;
    fc.assert(
      fc.property(fc.jsonValue(), (doc) => {
        const text = JSON.stringify(doc);
        const result = defaultMasker.transform(Buffer.from(text), 'application/json');
        if (!result.body) return;
        assert.deepEqual(shape(JSON.parse(result.body.toString())), shape(JSON.parse(text)));
      }),
      { numRuns: 300 },
    );
  });
});
