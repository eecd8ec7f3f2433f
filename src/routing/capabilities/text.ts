import { stemmer } from 'stemmer';

/**
 * Text analysis shared by documents (skills) and queries: Unicode-aware tokenizing, English stop
 * words, Porter stemming (the `stemmer` package) and a synonym table that expands query terms.
 */

/** Common English function words plus conversational filler ("please", "hi") seen in questions. */
export const STOP_WORDS: ReadonlySet<string> = new Set(
  (
    'a about above after again against all also am an and any are aren as at be because been before being ' +
    'below between both but by can cannot could couldn did didn do does doesn doing don down during each ' +
    'either else etc ever few for from further had hadn has hasn have haven having he her here hers herself ' +
    'him himself his how however i if in into is isn it its itself just let ll me might mine more most must ' +
    'mustn my myself no nor not now of off on once only or other ought our ours ourselves out over own per ' +
    're same shall shan she should shouldn so some such than that the their theirs them themselves then ' +
    'there these they this those through thus to too under until up upon us ve very via was wasn we were ' +
    'weren what when where whether which while who whom whose why will with within without won would ' +
    'wouldn yet you your yours yourself yourselves ' +
    'hi hello hey dear please pls thanks thank thx kindly regards cheers ok okay yes yeah ' +
    'want wanted wants need needs needed like get got getting know tell lets someone ' +
    'something anything somebody anybody way really much many thing things'
  ).split(' '),
);

/** Word characters are letters, combining marks (vowel signs of Indic scripts) and digits. */
const NON_WORD = /[^\p{L}\p{M}\p{N}]+/u;
const ASCII_WORD = /^[a-z]+$/;
const STEM_CACHE_LIMIT = 50_000;
const stemCache = new Map<string, string>();

/** Porter stem of an ASCII word; other words (digits, non-Latin scripts) are kept as they are. */
export function stem(word: string): string {
  return ASCII_WORD.test(word) ? stemmer(word) : word;
}

/** The stem of a lowercased word, or '' for a stop word; memoized (one hash lookup per word). */
function analyzeWord(word: string): string {
  let stemmed = stemCache.get(word);
  if (stemmed === undefined) {
    stemmed = STOP_WORDS.has(word) ? '' : stem(word);
    // A bounded memo: documents repeat words a lot; an adversarial stream of new words only resets it.
    if (stemCache.size >= STEM_CACHE_LIMIT) stemCache.clear();
    stemCache.set(word, stemmed);
  }
  return stemmed;
}

/**
 * Lowercased word tokens (NFKC, split on anything but letters, marks and digits), in order.
 * Scripts written without spaces (Chinese, Japanese) are not segmented: a run is one token.
 */
export function tokenize(text: string): string[] {
  return splitWords(text).filter(isToken);
}

function splitWords(text: string): string[] {
  return text.normalize('NFKC').toLowerCase().split(NON_WORD);
}

/** A single Latin letter is noise ("s" of "what's"); a single digit or ideograph may matter. */
function isToken(word: string): boolean {
  return word.length > 1 || (word.length === 1 && !(word >= 'a' && word <= 'z'));
}

/** A term of analyzed text: its stem and the word it came from (for explanations). */
export interface Term {
  readonly stem: string;
  readonly word: string;
}

/** Tokens without stop words, stemmed. */
export function analyze(text: string): Term[] {
  const terms: Term[] = [];
  for (const word of splitWords(text)) {
    if (!isToken(word)) continue;
    const stemmed = analyzeWord(word);
    if (stemmed !== '') terms.push({ stem: stemmed, word });
  }
  return terms;
}

/** Groups of words or phrases that mean the same; the key of each group is only its name. */
export type SynonymGroups = Readonly<Record<string, readonly string[]>>;

export const DEFAULT_SYNONYMS: SynonymGroups = {
  refund: ['refund', 'reimbursement', 'reimburse', 'money back', 'chargeback'],
  invoice: ['invoice', 'bill', 'billing'],
  payment: ['payment', 'pay', 'charge'],
  erase: ['erase', 'erasure', 'delete', 'deletion', 'forget', 'right to be forgotten'],
  privacy: ['gdpr', 'privacy', 'data protection', 'ccpa'],
  personalData: ['personal data', 'personal information', 'pii'],
  translate: ['translate', 'translation', 'localize', 'localization'],
  weather: ['weather', 'forecast', 'meteorology'],
  flight: ['flight', 'airfare', 'plane ticket'],
  lodging: ['hotel', 'accommodation', 'lodging'],
  trip: ['trip', 'travel', 'journey'],
  contract: ['contract', 'agreement'],
  lawyer: ['lawyer', 'attorney', 'counsel', 'legal advice'],
  employee: ['employee', 'staff', 'personnel', 'worker'],
  leave: ['vacation', 'holiday', 'paid time off', 'pto', 'leave'],
  salary: ['salary', 'payroll', 'wage', 'compensation', 'paycheck'],
  password: ['password', 'passphrase', 'credentials', 'login'],
  computer: ['laptop', 'computer', 'pc', 'workstation'],
  network: ['wifi', 'wi-fi', 'wireless', 'vpn', 'network'],
  purchase: ['buy', 'purchase', 'order'],
  price: ['price', 'cost', 'pricing'],
  email: ['email', 'e-mail', 'mail', 'inbox'],
};

/** A query term: a stem with its weight, and for a synonym the query word it was expanded from. */
export interface QueryTerm extends Term {
  readonly weight: number;
  readonly synonymOf?: string;
}

interface Member {
  readonly group: number;
  readonly terms: readonly Term[];
}

/**
 * Synonym groups, analyzed like any text. A query containing one member of a group (a phrase
 * must appear as consecutive terms) gains the terms of the other members at a lower weight.
 */
export class SynonymTable {
  private readonly membersByKey = new Map<string, Member[]>();
  /** Proper prefixes of the keys of phrase members: a phrase is only extended while it is one. */
  private readonly phrasePrefixes = new Set<string>();
  private readonly groups: Member[][] = [];

  constructor(groups: SynonymGroups) {
    for (const words of Object.values(groups)) {
      const group: Member[] = [];
      for (const phrase of words) {
        const terms = analyze(phrase);
        if (terms.length === 0) continue;
        const member = { group: this.groups.length, terms };
        group.push(member);
        const stems = terms.map((term) => term.stem);
        const key = stems.join(' ');
        const sameKey = this.membersByKey.get(key);
        if (sameKey) sameKey.push(member);
        else this.membersByKey.set(key, [member]);
        for (let length = 1; length < stems.length; length++) this.phrasePrefixes.add(stems.slice(0, length).join(' '));
      }
      this.groups.push(group);
    }
  }

  /**
   * The query's own terms (weight 1, once each) followed by synonym terms (synonymWeight).
   * Duplicates are found by a linear scan: a query has at most a few dozen terms (see rank), and
   * this allocates less than a map per query.
   */
  expand(terms: readonly Term[], synonymWeight: number): QueryTerm[] {
    const result: QueryTerm[] = [];
    for (const { stem, word } of terms) if (!hasStem(result, stem)) result.push({ stem, word, weight: 1 });
    if (synonymWeight <= 0) return result;
    for (let start = 0; start < terms.length; start++) {
      let key = terms[start]!.stem;
      let via = terms[start]!.word;
      for (let end = start + 1; ; end++) {
        const matches = this.membersByKey.get(key);
        if (matches) {
          for (const matched of matches) {
            for (const member of this.groups[matched.group]!) {
              for (const synonym of member.terms) {
                if (!hasStem(result, synonym.stem)) result.push({ stem: synonym.stem, word: synonym.word, weight: synonymWeight, synonymOf: via });
              }
            }
          }
        }
        if (end === terms.length || !this.phrasePrefixes.has(key)) break;
        key = `${key} ${terms[end]!.stem}`;
        via = `${via} ${terms[end]!.word}`;
      }
    }
    return result;
  }
}

function hasStem(terms: readonly QueryTerm[], stem: string): boolean {
  for (const term of terms) if (term.stem === stem) return true;
  return false;
}

/** Tags compare exactly but case-insensitively. */
export function normalizeTag(tag: string): string {
  return tag.normalize('NFKC').trim().toLowerCase();
}
