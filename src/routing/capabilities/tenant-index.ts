import { grow, TopK } from './collections.js';
import { analyze, normalizeTag, type QueryTerm } from './text.js';
import type { MatchExplanation, Skill, SkillField } from './types.js';
import { SKILL_FIELDS } from './types.js';

/*
 * The skills of one tenant as an inverted index, updated in place (no rebuild per change).
 *
 * Documents are skills; each has four fields (name, description, examples, tags). A term's
 * postings hold, per document, its term frequency in each field (8 bits each, packed in one
 * int32) and its precomputed BM25F impact (fixed point); each document keeps a forward list of
 * its terms (by ascending term id), their packed frequencies and their positions in the
 * postings, so a removal swaps the last posting into the hole in O(1). Exact tags (the skill's
 * and its agent's) are indexed as terms of their own, which required tags intersect.
 *
 * Scoring is BM25F (Robertson & Zaragoza): per term, x = sum over fields of
 * weight_f * tf_f / (1 - b_f + b_f * len_f / avgLen_f), score += queryWeight * idf * x / (k1 + x),
 * idf = ln(1 + (N - df + 0.5) / (df + 0.5)). The impact x / (k1 + x) of each posting is computed
 * when the document is added, with the average lengths of that moment. When an average field
 * length has drifted by 2% since, all impacts are recomputed, a slice of 100,000 postings per
 * later change (so no single change pays for the whole index; meanwhile impacts mix both).
 *
 * Query evaluation is term-at-a-time, rarest term first (highest idf * weight), with two bounds:
 * - MaxScore (Turtle & Flood): once the sum of the remaining terms' upper bounds (a term adds less
 *   than weight * idf) cannot lift an unseen document into the top `limit`, the remaining terms
 *   only rescore the documents already found that can still reach the top. Exact.
 * - A work budget (maxPostingsPerQuery): when walking the next term's postings would exceed it,
 *   the remaining (common, low-idf) terms also only rescore the documents found so far, about
 *   maxRescoredDocuments of them (the best partial scores). Like Lucene's CommonTermsQuery,
 *   frequent terms then rank the documents the rare terms found instead of finding documents.
 *   A query made only of terms more frequent than the budget still walks its rarest term.
 * Rescoring must not chase pointers into documents spread over a large heap (a random access
 * there costs ~200 ns): a term in at least 1/64 of the documents (and 1,024) also keeps a dense
 * byte array of its quantized impacts, indexed by document, that rescoring reads directly; a
 * rarer term is rescored by walking its (short) postings against a bit set of the kept documents.
 *
 * An agent filter (the router's: registered, healthy, allowed by policy) costs far more per agent
 * than scoring, so it is asked about as few agents as give the same result as filtering every
 * document: the pruning threshold and the final selection walk the best first until they have
 * enough accepted agents; the documents kept for rescoring are the best accepted ones up to
 * maxRescoredDocuments, found by asking about the best documents first (about that many agents).
 */

const FIELD_COUNT = SKILL_FIELDS.length;
const TF_MAX = 255;
const LENGTH_MAX = 0xffff;
const AVERAGE_DRIFT = 0.02;
/** Postings whose impacts one change recomputes while a refresh is under way (a few ms at most). */
const REFRESH_POSTINGS_PER_CHANGE = 100_000;
/** Below this document frequency a term is walked without first checking the MaxScore bound. */
const PRUNE_CHECK_DF = 256;
/** The pruning threshold is taken over at most this many of the documents found first (a lower bound, so still exact). */
const THRESHOLD_SAMPLE = 256;
/** The most candidates selectAllowed ranks unfiltered (TopK keeps at most 64 in order as they come). */
const SELECT_ALLOWED_MAX = 64;
/** How many refused agents bestAllowed skips (one pass each) before filtering every document instead. */
const BEST_ALLOWED_ATTEMPTS = 4;
/** A term gets a dense impact array from this document frequency on, and this share of the documents. */
const DENSE_MIN_DF = 1024;
const DENSE_SHARE = 64;
/** Prefix of the term of an exact tag (a query stem never has it: it is no letter or digit). */
const TAG_TERM = '\u0001';
/** Impacts (x / (k1 + x), in (0, 1)) are stored in postings as fixed-point integers. */
const IMPACT_ONE = 2 ** 30;
/** Dense impacts are bytes: impact * 255, at least 1; 0 = absent. */
const DENSE_SCALE = 255;

export interface Settings {
  readonly k1: number;
  readonly b: readonly number[];
  readonly weights: readonly number[];
  readonly unknownTermWeight: number;
  readonly maxPostingsPerQuery: number;
  readonly maxRescoredDocuments: number;
}

/**
 * A term's postings: `size` triples [document, packed field frequencies, impact * IMPACT_ONE]
 * in one array (one typed array per term: a tenant has thousands of terms, most of them rare).
 */
interface Postings {
  readonly id: number;
  readonly stem: string;
  data: Int32Array;
  size: number;
  /** For frequent terms: the quantized impact of every document (0 if absent), by document id. */
  dense?: Uint8Array;
}

export interface AgentEntry {
  readonly name: string;
  readonly key: string;
  readonly slot: number;
  readonly tags: readonly string[];
  readonly skills: readonly Skill[];
  readonly digest: string;
  readonly docs: number[];
}

export interface DocEntry {
  readonly skill: Skill;
  readonly agent: AgentEntry;
  /** The skill's own tags, normalized. */
  readonly tags: readonly string[];
  /** [term ids ascending | packed field frequencies | positions in the postings], n each. */
  readonly forward: Int32Array;
}

export interface Hit {
  readonly doc: DocEntry;
  readonly score: number;
  readonly confidence: number;
  /** Computed on demand (it costs a lookup per query term); safe to call after the index changed. */
  readonly explain: () => MatchExplanation;
}

/** Whether an agent (by slot) may be chosen; undefined: all may. */
type AgentFilter = ((slot: number) => boolean) | undefined;

interface Found {
  /** Documents touched (listed in this.touched), whose scores must be reset after the query. */
  readonly touched: number;
  /** The documents the best are chosen from: the first `count` of `candidates`. */
  readonly candidates: Int32Array;
  readonly count: number;
}

const NOTHING_FOUND: Found = { touched: 0, candidates: new Int32Array(0), count: 0 };

/** The skills a query's required tags allow (see tagFilter). */
interface TagFilter {
  /** The rarest required tag: its postings list every skill that may qualify. */
  readonly driver: Postings;
  /** When every required tag is frequent: their dense arrays (a skill qualifies if none is 0). */
  readonly dense?: readonly Uint8Array[];
}

const NO_SKILL: TagFilter = { driver: { id: -1, stem: '', data: new Int32Array(0), size: 0 } };

interface ResolvedTerm {
  readonly term: QueryTerm;
  readonly postings: Postings;
  /** weight * idf: the most this term can add to a document's score. */
  readonly bound: number;
}

export class TenantIndex {
  readonly agents = new Map<string, AgentEntry>();
  private readonly terms = new Map<string, Postings>();
  private readonly termsById = new Map<number, Postings>();
  private readonly denseTerms = new Set<Postings>();
  private nextTermId = 0;

  private docs: (DocEntry | undefined)[] = [];
  private readonly freeDocs: number[] = [];
  private docCount = 0;
  private readonly lengthSums = new Float64Array(FIELD_COUNT);
  /** The average field lengths the cached factors were computed with. */
  private readonly cachedAverages = new Float64Array(FIELD_COUNT);
  /** Postings whose impacts still use older averages, refreshed a slice per change from `refreshed` on. */
  private refreshQueue: Postings[] = [];
  private refreshed = 0;
  private lengths = new Uint16Array(0);
  private factors = new Float32Array(0);
  private agentOfDoc = new Int32Array(0);

  /** Agent keys by slot (what the agent filter is asked about). */
  private agentKeys: (string | undefined)[] = [];
  private readonly freeAgentSlots: number[] = [];

  // Scratch state of one query (queries are synchronous, so one set per tenant suffices).
  private clock = 0;
  private scores = new Float32Array(0);
  /** The bit patterns of `scores` (the same memory), which order like the scores. */
  private scoreBits = new Uint32Array(0);
  private readonly sampleOrder = new Float64Array(THRESHOLD_SAMPLE);
  private touched = new Int32Array(0);
  private kept = new Int32Array(0);
  private keptScores = new Float64Array(0);
  private keptBuckets = new Uint8Array(0);
  /** One bit per document, set for the kept ones during a rescore (small enough to stay in cache). */
  private keptBits = new Uint32Array(0);
  private eligibleMark = new Uint32Array(0);
  /** Per document, how many of a query's sparse required tags it has (zeroed after use). */
  private tagCounts = new Uint8Array(0);
  private agentMark = new Uint32Array(0);
  private agentBest = new Float64Array(0);
  private agentBestDoc = new Int32Array(0);
  private agentsSeen = new Int32Array(0);
  private allowedMark = new Uint32Array(0);
  private allowedValue = new Uint8Array(0);

  constructor(private readonly settings: Settings) {}

  get skillCount(): number {
    return this.docCount;
  }

  get termCount(): number {
    return this.terms.size;
  }

  addAgent(name: string, key: string, skills: readonly Skill[], agentTags: readonly string[], digest: string): void {
    const slot = this.freeAgentSlots.pop() ?? this.agentKeys.length;
    const agent: AgentEntry = { name, key, slot, tags: uniqueTags(agentTags), skills, digest, docs: [] };
    this.agents.set(name, agent);
    this.agentKeys[slot] = key;
    this.ensureAgentCapacity(slot + 1);
    for (const skill of skills) agent.docs.push(this.addDoc(skill, agent));
    this.refreshFactorsIfDrifted();
  }

  removeAgent(name: string): boolean {
    const agent = this.agents.get(name);
    if (!agent) return false;
    for (const doc of agent.docs) this.removeDoc(doc);
    this.agents.delete(name);
    this.agentKeys[agent.slot] = undefined;
    this.freeAgentSlots.push(agent.slot);
    this.refreshFactorsIfDrifted();
    return true;
  }

  /** All skills of the tenant, in agent order, for listings without a query. */
  *allDocs(): Generator<DocEntry> {
    for (const agent of this.agents.values()) for (const doc of agent.docs) yield this.docs[doc]!;
  }

  /**
   * The best `limit` agents (perAgent: best skill per agent) or skills for the query terms, among
   * skills whose tags plus agent tags include all `requiredTags`, of agents `allowed` accepts.
   * With no known query term, the eligible skills are returned with score 0 (confidence 1 when
   * the query had no terms at all, only tags; 0 when its words are unknown to this tenant).
   */
  match(
    queryTerms: readonly QueryTerm[],
    requiredTags: readonly string[],
    perAgent: boolean,
    limit: number,
    allowed?: (agentKey: string) => boolean,
  ): Hit[] {
    if (limit <= 0 || this.docCount === 0) return [];
    const query = this.tick();
    const isAllowed: AgentFilter = allowed && ((slot) => this.isAllowed(slot, query, allowed));
    const filter = requiredTags.length > 0 ? this.tagFilter(requiredTags, query) : undefined;
    if (filter === NO_SKILL) return [];
    const resolved = this.resolve(queryTerms);

    const found = resolved.length > 0 ? this.accumulate(resolved, filter, query, perAgent, limit, isAllowed) : NOTHING_FOUND;
    const best = isAllowed
      ? this.selectAllowed(found.candidates, found.count, perAgent, limit, isAllowed)
      : this.selectTop(found.candidates, found.count, perAgent, limit, undefined, true).sorted();
    const hits: Hit[] = [];
    const ideal = this.idealScore(queryTerms, resolved);
    for (const { id, score } of best) {
      const doc = this.docs[id]!;
      hits.push({ doc, score, confidence: Math.min(1, score / ideal), explain: () => explain(doc, resolved, requiredTags) });
    }
    for (let i = 0; i < found.touched; i++) this.scores[this.touched[i]!] = 0;

    // Eligible skills the text did not match still qualify by their tags, in index order.
    if (filter && hits.length < limit) {
      const tagsOnly = queryTerms.length === 0 ? 1 : 0;
      const seen = new Set(hits.map((hit) => (perAgent ? hit.doc.agent.slot : hit.doc.skill)));
      const { data, size } = filter.driver;
      for (let at = 0; at < 3 * size && hits.length < limit; at += 3) {
        if (!this.qualifies(data[at]!, filter, query)) continue;
        const doc = this.docs[data[at]!]!;
        const key = perAgent ? doc.agent.slot : doc.skill;
        if (seen.has(key) || (isAllowed && !isAllowed(doc.agent.slot))) continue;
        seen.add(key);
        hits.push({ doc, score: 0, confidence: tagsOnly, explain: () => ({ fields: {}, synonyms: [], tags: [...requiredTags] }) });
      }
    }
    return hits;
  }

  private resolve(queryTerms: readonly QueryTerm[]): ResolvedTerm[] {
    const resolved: ResolvedTerm[] = [];
    for (const term of queryTerms) {
      const postings = this.terms.get(term.stem);
      if (postings) resolved.push({ term, postings, bound: term.weight * this.idf(postings.size) });
    }
    return resolved.sort((x, y) => y.bound - x.bound);
  }

  /**
   * Accumulates scores into this.scores; returns how many documents it touched (listed in
   * this.touched) and the candidates among them for the top (this.touched or this.kept).
   */
  private accumulate(
    resolved: readonly ResolvedTerm[],
    filter: TagFilter | undefined,
    query: number,
    perAgent: boolean,
    limit: number,
    isAllowed: AgentFilter,
  ): Found {
    const { maxPostingsPerQuery } = this.settings;
    // remaining[i]: the most the terms from i on can add.
    const remaining: number[] = new Array<number>(resolved.length + 1).fill(0);
    for (let i = resolved.length - 1; i >= 0; i--) remaining[i] = remaining[i + 1]! + resolved[i]!.bound;
    const scores = this.scores;
    const touched = this.touched;
    let touchedCount = 0;
    let walked = 0;
    /** The best partial score: the limit-th best is at most this, so no pruning while the rest may add more. */
    let top = 0;
    /** A lower bound of the final limit-th best score, once computed. */
    let threshold = 0;
    let next = 0;
    for (; next < resolved.length; next++) {
      const { postings, bound } = resolved[next]!;
      const size = postings.size;
      if (touchedCount > 0) {
        if (walked + size > maxPostingsPerQuery) break;
        const reach = remaining[next]!;
        if (size > PRUNE_CHECK_DF && reach < top) {
          threshold = this.threshold(touchedCount, perAgent, limit, isAllowed);
          if (reach < threshold) break;
        }
      }
      walked += size;
      const data = postings.data;
      const scale = bound / IMPACT_ONE;
      for (let at = 0; at < 3 * size; at += 3) {
        const doc = data[at]!;
        if (filter && !this.qualifies(doc, filter, query)) continue;
        const before = scores[doc]!;
        if (before === 0) touched[touchedCount++] = doc;
        const score = before + scale * data[at + 2]!;
        scores[doc] = score;
        if (score > top) top = score;
      }
    }
    if (next === resolved.length || touchedCount === 0) return { touched: touchedCount, candidates: touched, count: touchedCount };
    // A threshold, if the pruning check did not compute one yet, usually rules out most documents.
    if (threshold === 0) threshold = this.threshold(touchedCount, perAgent, limit, isAllowed);
    const keptCount = this.rescore(resolved, next, remaining[next]!, threshold, touchedCount, isAllowed);
    return { touched: touchedCount, candidates: this.kept, count: keptCount };
  }

  /**
   * Adds the terms from `from` on to the documents found so far that can still reach `threshold`
   * (at most maxRescoredDocuments of them, by partial score); returns how many, listed in this.kept.
   */
  private rescore(
    resolved: readonly ResolvedTerm[],
    from: number,
    reach: number,
    threshold: number,
    touchedCount: number,
    isAllowed: AgentFilter,
  ): number {
    const scores = this.scores;
    const kept = this.kept;
    const keptScores = this.keptScores;
    let keptCount = 0;
    let best = 0;
    for (let i = 0; i < touchedCount; i++) {
      const doc = this.touched[i]!;
      const score = scores[doc]!;
      if (score + reach >= threshold) {
        kept[keptCount] = doc;
        keptScores[keptCount++] = score;
        if (score > best) best = score;
      }
    }
    const cap = this.settings.maxRescoredDocuments;
    // Within the cap, refused documents are rescored too (harmless: the final selection skips them).
    if (keptCount > cap) keptCount = isAllowed ? this.keepAllowed(keptCount, cap, isAllowed) : keepBest(kept, keptScores, keptCount, cap, best);
    const keptBits = this.keptBits;
    for (let i = 0; i < keptCount; i++) {
      const doc = kept[i]!;
      keptBits[doc >>> 5] = keptBits[doc >>> 5]! | (1 << (doc & 31));
    }
    for (let t = from; t < resolved.length; t++) {
      const { postings, bound } = resolved[t]!;
      const dense = postings.dense;
      if (dense) {
        const scale = bound / DENSE_SCALE;
        for (let i = 0; i < keptCount; i++) {
          const doc = kept[i]!;
          const quantized = dense[doc]!;
          if (quantized !== 0) scores[doc] = scores[doc]! + scale * quantized;
        }
      } else {
        const data = postings.data;
        const scale = bound / IMPACT_ONE;
        for (let at = 0; at < 3 * postings.size; at += 3) {
          const doc = data[at]!;
          if ((keptBits[doc >>> 5]! >>> (doc & 31)) & 1) scores[doc] = scores[doc]! + scale * data[at + 2]!;
        }
      }
    }
    for (let i = 0; i < keptCount; i++) keptBits[kept[i]! >>> 5] = 0;
    return keptCount;
  }

  /**
   * Of the first `count` (more than `cap`) documents of this.kept, keeps those of allowed agents,
   * then as keepBest would of those (the same documents in the same order), asking the filter about
   * the agents of the best documents only: the filter (policy, health) costs far more per agent
   * than a pass over scores, and keepBest cuts most documents that reach the rescoring bound anyway.
   */
  private keepAllowed(count: number, cap: number, isAllowed: (slot: number) => boolean): number {
    const { kept, keptScores, agentOfDoc } = this;
    const allowedAt = (i: number): boolean => isAllowed(agentOfDoc[kept[i]!]!);
    const bestAllowed = this.bestAllowed(count, allowedAt);
    if (bestAllowed > 0) return keepBestAllowed(kept, keptScores, this.keptBuckets, count, cap, bestAllowed, allowedAt);
    let allowed = 0;
    let best = 0;
    for (let i = 0; i < count; i++) {
      if (!allowedAt(i)) continue;
      const score = keptScores[i]!;
      kept[allowed] = kept[i]!;
      keptScores[allowed++] = score;
      if (score > best) best = score;
    }
    return allowed > cap ? keepBest(kept, keptScores, allowed, cap, best) : allowed;
  }

  /**
   * The best score among the first `count` kept documents of allowed agents, found by asking about
   * the agent of the best remaining document a few times; -1 if those were all refused.
   */
  private bestAllowed(count: number, allowedAt: (i: number) => boolean): number {
    const { kept, keptScores, agentOfDoc, agentMark } = this;
    const refused = this.tick();
    for (let attempt = 0; attempt < BEST_ALLOWED_ATTEMPTS; attempt++) {
      let at = -1;
      let top = 0;
      for (let i = 0; i < count; i++) {
        if (keptScores[i]! > top && agentMark[agentOfDoc[kept[i]!]!] !== refused) {
          top = keptScores[i]!;
          at = i;
        }
      }
      if (at < 0) return -1;
      if (allowedAt(at)) return top;
      agentMark[agentOfDoc[kept[at]!]!] = refused;
    }
    return -1;
  }

  /**
   * A lower bound of the `limit`-th best (partial) score among touched documents or agents: taken
   * over the first THRESHOLD_SAMPLE of them only, 0 if fewer than `limit`. With an agent filter,
   * the sample is walked best first, so the filter is asked about the best agents only.
   */
  private threshold(touchedCount: number, perAgent: boolean, limit: number, isAllowed: AgentFilter): number {
    const count = Math.min(touchedCount, THRESHOLD_SAMPLE);
    if (!isAllowed) return this.selectTop(this.touched, count, perAgent, limit, undefined, false).floor;
    const { touched, scoreBits, agentOfDoc, agentMark } = this;
    // Non-negative float32 scores sort like their bit patterns; the low bits carry the sample index.
    const order = this.sampleOrder;
    for (let i = 0; i < count; i++) order[i] = scoreBits[touched[i]!]! * THRESHOLD_SAMPLE + i;
    const sorted = order.subarray(0, count).sort();
    const top = new TopK(limit);
    const seen = this.tick();
    let offered = 0;
    for (let i = count - 1; i >= 0 && offered < limit; i--) {
      const doc = touched[sorted[i]! % THRESHOLD_SAMPLE]!;
      const slot = agentOfDoc[doc]!;
      if (perAgent) {
        if (agentMark[slot] === seen) continue;
        agentMark[slot] = seen;
      }
      if (!isAllowed(slot)) continue;
      top.offer(this.scores[doc]!, doc);
      offered++;
    }
    return top.floor;
  }

  /**
   * selectTop(..., isAllowed, true).sorted(), asking the filter about the best agents only: the
   * best of all agents (or documents) in order, a few more than `limit`, then more if too many of
   * those were refused, and at last all of them.
   */
  private selectAllowed(list: Int32Array, count: number, perAgent: boolean, limit: number, isAllowed: (slot: number) => boolean): { id: number; score: number }[] {
    for (let asked = 2 * limit; asked <= SELECT_ALLOWED_MAX; asked *= 4) {
      const best = this.selectTop(list, count, perAgent, asked, undefined, true).sorted();
      const chosen: { id: number; score: number }[] = [];
      for (const entry of best) {
        if (!isAllowed(this.agentOfDoc[entry.id]!)) continue;
        chosen.push(entry);
        if (chosen.length === limit) return chosen;
      }
      if (best.length < asked) return chosen;
    }
    return this.selectTop(list, count, perAgent, limit, isAllowed, true).sorted();
  }

  /** The best `limit` of the first `count` documents of `list` (perAgent: the best document of each agent). */
  private selectTop(
    list: Int32Array,
    count: number,
    perAgent: boolean,
    limit: number,
    isAllowed: AgentFilter,
    breakTies: boolean,
  ): TopK {
    const top = new TopK(limit, breakTies ? (x, y) => compareKeys(this.docs[x]!, this.docs[y]!) : undefined);
    const scores = this.scores;
    if (!perAgent) {
      for (let i = 0; i < count; i++) {
        const doc = list[i]!;
        if (!isAllowed || isAllowed(this.agentOfDoc[doc]!)) top.offer(scores[doc]!, doc);
      }
      return top;
    }
    const mark = this.tick();
    const { agentMark, agentBest, agentBestDoc, agentsSeen } = this;
    let seen = 0;
    for (let i = 0; i < count; i++) {
      const doc = list[i]!;
      const slot = this.agentOfDoc[doc]!;
      const score = scores[doc]!;
      if (agentMark[slot] !== mark) {
        agentMark[slot] = mark;
        agentBest[slot] = score;
        agentBestDoc[slot] = doc;
        agentsSeen[seen++] = slot;
      } else if (score > agentBest[slot]! || (breakTies && score === agentBest[slot]! && compareKeys(this.docs[doc]!, this.docs[agentBestDoc[slot]!]!) < 0)) {
        agentBest[slot] = score;
        agentBestDoc[slot] = doc;
      }
    }
    for (let i = 0; i < seen; i++) {
      const slot = agentsSeen[i]!;
      if (!isAllowed || isAllowed(slot)) top.offer(agentBest[slot]!, agentBestDoc[slot]!);
    }
    return top;
  }

  /**
   * What a skill holding every query word once in its name field, at average length, would score;
   * words unknown to the tenant count as unknownTermWeight times the rarest possible word.
   */
  private idealScore(queryTerms: readonly QueryTerm[], resolved: readonly ResolvedTerm[]): number {
    const { k1, weights, unknownTermWeight } = this.settings;
    let strongest = 0;
    for (const weight of weights) strongest = Math.max(strongest, weight);
    let ideal = 0;
    for (const term of queryTerms) {
      if (term.synonymOf !== undefined) continue;
      const known = resolved.find((candidate) => candidate.term === term);
      ideal += known ? known.bound : unknownTermWeight * this.idf(1);
    }
    return (ideal * strongest) / (k1 + strongest) || Number.POSITIVE_INFINITY;
  }

  /**
   * Which skills have all of `requiredTags` (own or agent tags). When the rarest tag is in few
   * skills, they are marked with `query` (its postings walked, the other tags tested by their
   * dense array or by a count from walking their short postings); when all are frequent, each
   * skill is tested against their dense arrays when met, so no query walks a huge tag.
   */
  private tagFilter(requiredTags: readonly string[], query: number): TagFilter {
    const tagTerms: Postings[] = [];
    for (const tag of requiredTags) {
      const postings = this.terms.get(TAG_TERM + tag);
      if (!postings) return NO_SKILL;
      tagTerms.push(postings);
    }
    tagTerms.sort((x, y) => x.size - y.size);
    const rarest = tagTerms[0]!;
    if (rarest.dense) return { driver: rarest, dense: tagTerms.map((postings) => postings.dense!) };
    const others = tagTerms.slice(1);
    const sparse = others.filter((postings) => !postings.dense);
    const dense = others.filter((postings) => postings.dense).map((postings) => postings.dense!);
    const counts = this.tagCounts;
    for (const postings of sparse) for (let at = 0; at < 3 * postings.size; at += 3) counts[postings.data[at]!]!++;
    let any = false;
    for (let at = 0; at < 3 * rarest.size; at += 3) {
      const doc = rarest.data[at]!;
      if (counts[doc] === sparse.length && dense.every((impacts) => impacts[doc] !== 0)) {
        this.eligibleMark[doc] = query;
        any = true;
      }
    }
    for (const postings of sparse) for (let at = 0; at < 3 * postings.size; at += 3) counts[postings.data[at]!] = 0;
    return any ? { driver: rarest } : NO_SKILL;
  }

  private qualifies(doc: number, filter: TagFilter, query: number): boolean {
    if (!filter.dense) return this.eligibleMark[doc] === query;
    for (const impacts of filter.dense) if (impacts[doc] === 0) return false;
    return true;
  }

  private isAllowed(slot: number, query: number, allowed: (agentKey: string) => boolean): boolean {
    if (this.allowedMark[slot] !== query) {
      this.allowedMark[slot] = query;
      this.allowedValue[slot] = allowed(this.agentKeys[slot]!) ? 1 : 0;
    }
    return this.allowedValue[slot] === 1;
  }

  private idf(documentFrequency: number): number {
    return Math.log(1 + (this.docCount - documentFrequency + 0.5) / (documentFrequency + 0.5));
  }

  private tick(): number {
    if (this.clock === 0xffffffff) {
      this.clock = 0;
      for (const marks of [this.eligibleMark, this.agentMark, this.allowedMark]) marks.fill(0);
    }
    return ++this.clock;
  }

  private addDoc(skill: Skill, agent: AgentEntry): number {
    const doc = this.freeDocs.pop() ?? this.docs.length;
    this.ensureDocCapacity(doc + 1);
    const tags = uniqueTags(skill.tags ?? []);
    const texts = [skill.name, skill.description ?? '', (skill.examples ?? []).join('\n'), [...tags, ...agent.tags].join(' ')];
    const frequencies = new Map<string, number>();
    texts.forEach((text, f) => {
      const terms = analyze(text);
      const length = Math.min(terms.length, LENGTH_MAX);
      this.lengths[doc * FIELD_COUNT + f] = length;
      this.lengthSums[f] = this.lengthSums[f]! + length;
      for (const { stem } of terms) {
        const packed = frequencies.get(stem) ?? 0;
        if (((packed >>> (8 * f)) & TF_MAX) < TF_MAX) frequencies.set(stem, packed + (1 << (8 * f)));
      }
    });
    // Exact tags (the skill's and its agent's) are terms too, that no query word can be.
    for (const tag of tags) frequencies.set(TAG_TERM + tag, 0);
    for (const tag of agent.tags) frequencies.set(TAG_TERM + tag, 0);
    this.docCount++;
    if (this.cachedAverages[0] === 0) this.cachedAverages.set(this.averages());
    this.computeFactors(doc);
    const entries = [...frequencies].map(([stem, packed]) => ({ postings: this.postingsFor(stem), packed: packed | 0 }));
    entries.sort((x, y) => x.postings.id - y.postings.id);
    const count = entries.length;
    const forward = new Int32Array(count * 3);
    entries.forEach(({ postings, packed }, i) => {
      forward[i] = postings.id;
      forward[count + i] = packed;
      forward[2 * count + i] = this.appendPosting(postings, doc, packed);
    });
    this.docs[doc] = { skill, agent, tags, forward };
    this.agentOfDoc[doc] = agent.slot;
    return doc;
  }

  private removeDoc(doc: number): void {
    const entry = this.docs[doc]!;
    const forward = entry.forward;
    const count = (forward.length / 3) | 0;
    for (let i = 0; i < count; i++) {
      const postings = this.termsById.get(forward[i]!)!;
      const position = forward[2 * count + i]!;
      const last = --postings.size;
      if (postings.dense) {
        postings.dense[doc] = 0;
        if (postings.size < this.denseThreshold() / 2) this.makeSparse(postings);
      }
      if (position !== last) {
        const data = postings.data;
        const moved = data[3 * last]!;
        data.copyWithin(3 * position, 3 * last, 3 * last + 3);
        const movedForward = this.docs[moved]!.forward;
        movedForward[2 * ((movedForward.length / 3) | 0) + findTerm(movedForward, postings.id)] = position;
      }
      if (postings.size === 0) {
        this.makeSparse(postings);
        this.terms.delete(postings.stem);
        this.termsById.delete(postings.id);
      }
    }
    for (let f = 0; f < FIELD_COUNT; f++) this.lengthSums[f] = this.lengthSums[f]! - this.lengths[doc * FIELD_COUNT + f]!;
    this.docs[doc] = undefined;
    this.freeDocs.push(doc);
    this.docCount--;
  }

  private postingsFor(stem: string): Postings {
    let postings = this.terms.get(stem);
    if (!postings) {
      postings = { id: this.nextTermId++, stem, data: new Int32Array(3), size: 0 };
      this.terms.set(stem, postings);
      this.termsById.set(postings.id, postings);
    }
    return postings;
  }

  private averages(): number[] {
    return SKILL_FIELDS.map((_, f) => Math.max(1, this.lengthSums[f]! / Math.max(1, this.docCount)));
  }

  /** Called after each change: starts a refresh of all impacts on drift, and continues one. */
  private refreshFactorsIfDrifted(): void {
    const current = this.averages();
    if (current.some((average, f) => Math.abs(average - this.cachedAverages[f]!) > AVERAGE_DRIFT * this.cachedAverages[f]!)) {
      this.cachedAverages.set(current);
      for (let doc = 0; doc < this.docs.length; doc++) if (this.docs[doc]) this.computeFactors(doc);
      this.refreshQueue = [...this.terms.values()];
      this.refreshed = 0;
    }
    let budget = REFRESH_POSTINGS_PER_CHANGE;
    while (budget > 0 && this.refreshed < this.refreshQueue.length) {
      const postings = this.refreshQueue[this.refreshed++]!;
      const data = postings.data;
      for (let at = 0; at < 3 * postings.size; at += 3) data[at + 2] = Math.round(this.impact(data[at + 1]!, data[at]!) * IMPACT_ONE);
      if (postings.dense) this.makeDense(postings);
      budget -= postings.size + 1;
    }
    if (this.refreshed === this.refreshQueue.length) this.refreshQueue = [];
  }

  private computeFactors(doc: number): void {
    const { b, weights } = this.settings;
    for (let f = 0; f < FIELD_COUNT; f++) {
      const relativeLength = this.lengths[doc * FIELD_COUNT + f]! / this.cachedAverages[f]!;
      this.factors[doc * FIELD_COUNT + f] = weights[f]! / (1 - b[f]! + b[f]! * relativeLength);
    }
  }

  /** x / (k1 + x) of a document's packed field frequencies. */
  private impact(packed: number, doc: number): number {
    const x = weightedFrequency(packed, this.factors, doc);
    return x / (this.settings.k1 + x);
  }

  private appendPosting(postings: Postings, doc: number, packed: number): number {
    if (3 * postings.size === postings.data.length) postings.data = grow(postings.data, 6 * postings.size);
    const impact = this.impact(packed, doc);
    const at = 3 * postings.size;
    postings.data[at] = doc;
    postings.data[at + 1] = packed;
    postings.data[at + 2] = Math.round(impact * IMPACT_ONE);
    const position = postings.size++;
    if (postings.dense) postings.dense[doc] = quantize(impact);
    else if (postings.size >= this.denseThreshold()) this.makeDense(postings);
    return position;
  }

  private denseThreshold(): number {
    return Math.max(DENSE_MIN_DF, this.docCount / DENSE_SHARE);
  }

  private makeDense(postings: Postings): void {
    const dense = postings.dense?.fill(0) ?? new Uint8Array(this.scores.length);
    const data = postings.data;
    for (let at = 0; at < 3 * postings.size; at += 3) dense[data[at]!] = quantize(data[at + 2]! / IMPACT_ONE);
    postings.dense = dense;
    this.denseTerms.add(postings);
  }

  private makeSparse(postings: Postings): void {
    postings.dense = undefined;
    this.denseTerms.delete(postings);
  }

  private ensureDocCapacity(needed: number): void {
    if (needed <= this.scores.length) return;
    const capacity = Math.max(64, this.scores.length * 2, needed);
    this.lengths = grow(this.lengths, capacity * FIELD_COUNT);
    this.factors = grow(this.factors, capacity * FIELD_COUNT);
    this.agentOfDoc = grow(this.agentOfDoc, capacity);
    this.scores = grow(this.scores, capacity);
    this.scoreBits = new Uint32Array(this.scores.buffer, this.scores.byteOffset, this.scores.length);
    this.touched = grow(this.touched, capacity);
    this.kept = grow(this.kept, capacity);
    this.keptScores = grow(this.keptScores, capacity);
    this.keptBuckets = grow(this.keptBuckets, capacity);
    this.keptBits = grow(this.keptBits, Math.ceil(capacity / 32));
    for (const postings of this.denseTerms) postings.dense = grow(postings.dense!, capacity);
    this.eligibleMark = grow(this.eligibleMark, capacity);
    this.tagCounts = grow(this.tagCounts, capacity);
  }

  private ensureAgentCapacity(needed: number): void {
    if (needed <= this.agentBest.length) return;
    const capacity = Math.max(16, this.agentBest.length * 2, needed);
    this.agentMark = grow(this.agentMark, capacity);
    this.agentBest = grow(this.agentBest, capacity);
    this.agentBestDoc = grow(this.agentBestDoc, capacity);
    this.agentsSeen = grow(this.agentsSeen, capacity);
    this.allowedMark = grow(this.allowedMark, capacity);
    this.allowedValue = grow(this.allowedValue, capacity);
  }
}

/** sum over fields of tf_f * factor_f for one posting. */
function weightedFrequency(packed: number, factors: Float32Array, doc: number): number {
  const base = doc * FIELD_COUNT;
  return (
    (packed & TF_MAX) * factors[base]! +
    ((packed >>> 8) & TF_MAX) * factors[base + 1]! +
    ((packed >>> 16) & TF_MAX) * factors[base + 2]! +
    (packed >>> 24) * factors[base + 3]!
  );
}

/** Index of a term id in a forward list (binary search over its first third), or -1. */
function findTerm(forward: Int32Array, termId: number): number {
  let low = 0;
  let high = ((forward.length / 3) | 0) - 1;
  while (low <= high) {
    const middle = (low + high) >>> 1;
    const id = forward[middle]!;
    if (id === termId) return middle;
    if (id < termId) low = middle + 1;
    else high = middle - 1;
  }
  return -1;
}

function compareKeys(x: DocEntry, y: DocEntry): number {
  return x.agent.key < y.agent.key ? -1 : x.agent.key > y.agent.key ? 1 : x.skill.id < y.skill.id ? -1 : x.skill.id > y.skill.id ? 1 : 0;
}

function uniqueTags(tags: readonly string[]): string[] {
  return [...new Set(tags.map(normalizeTag).filter((tag) => tag.length > 0))];
}

const CUT_BUCKETS = 64;
const cutCounts = new Int32Array(CUT_BUCKETS);

/**
 * Keeps (in place, the first `count` of `docs`) `cap` documents with the best `scores`, to within
 * a 64th of the best score: every document of the score buckets above the one where `cap` falls,
 * then the first ones met of that bucket. Cheaper than an exact selection (two sequential passes),
 * and the partial scores it orders are approximate anyway.
 */
function keepBest(docs: Int32Array, scores: Float64Array, count: number, cap: number, best: number): number {
  const bucketOf = (score: number): number => Math.min(CUT_BUCKETS - 1, Math.floor((score / best) * CUT_BUCKETS));
  cutCounts.fill(0);
  for (let i = 0; i < count; i++) cutCounts[bucketOf(scores[i]!)]!++;
  let boundary = CUT_BUCKETS - 1;
  let above = 0;
  while (boundary > 0 && above + cutCounts[boundary]! <= cap) above += cutCounts[boundary--]!;
  let fromBoundary = cap - above;
  let kept = 0;
  for (let i = 0; i < count; i++) {
    const bucket = bucketOf(scores[i]!);
    if (bucket > boundary || (bucket === boundary && fromBoundary-- > 0)) docs[kept++] = docs[i]!;
  }
  return kept;
}

const allowedCutCounts = new Int32Array(CUT_BUCKETS);
/** Buckets keepBestAllowed counts one pass each before counting all lower ones in one pass. */
const CUT_BUCKET_STEPS = 4;

/**
 * What keepBest would keep of the documents `allowedAt` accepts (`best`: their best score), asking
 * about few more than `cap` documents when few are refused: those of the buckets above the one
 * where the cut would fall if none were, then, bucket by bucket down from there, those of a bucket
 * in order until more than the rest of `cap` are accepted (keepBest keeps the first ones met in the
 * bucket of the cut). After a few buckets without the cut, it asks about all lower ones at once.
 * `buckets` is scratch space for `count` bytes.
 */
function keepBestAllowed(
  docs: Int32Array,
  scores: Float64Array,
  buckets: Uint8Array,
  count: number,
  cap: number,
  best: number,
  allowedAt: (i: number) => boolean,
): number {
  cutCounts.fill(0);
  for (let i = 0; i < count; i++) {
    const bucket = Math.min(CUT_BUCKETS - 1, Math.floor((scores[i]! / best) * CUT_BUCKETS));
    buckets[i] = bucket;
    cutCounts[bucket]!++;
  }
  let next = CUT_BUCKETS - 1;
  for (let reach = cutCounts[next]!; next > 0 && reach <= cap; ) reach += cutCounts[--next]!;
  // allowedCutCounts: accepted documents per bucket, exact above `next` (where at most `cap` are).
  allowedCutCounts.fill(0);
  let accepted = 0;
  for (let i = 0; i < count; i++) {
    if (buckets[i]! > next && allowedAt(i)) {
      allowedCutCounts[buckets[i]!]!++;
      accepted++;
    }
  }
  for (let steps = 0; ; steps++, next--) {
    const room = cap - accepted;
    if (steps === CUT_BUCKET_STEPS && next > 0) {
      for (let i = 0; i < count; i++) if (buckets[i]! <= next && allowedAt(i)) allowedCutCounts[buckets[i]!]!++;
      break;
    }
    let inBucket = 0;
    for (let i = 0; i < count && inBucket <= room; i++) if (buckets[i] === next && allowedAt(i)) inBucket++;
    // Counted to the end unless the cut falls here (then the count only needs to exceed `room`).
    allowedCutCounts[next] = inBucket;
    accepted += inBucket;
    if (inBucket > room || next === 0) break;
  }
  let boundary = CUT_BUCKETS - 1;
  let above = 0;
  while (boundary > 0 && above + allowedCutCounts[boundary]! <= cap) above += allowedCutCounts[boundary--]!;
  let fromBoundary = cap - above;
  let kept = 0;
  for (let i = 0; i < count; i++) {
    const bucket = buckets[i]!;
    if ((bucket > boundary || (bucket === boundary && fromBoundary > 0)) && allowedAt(i)) {
      if (bucket === boundary) fromBoundary--;
      docs[kept++] = docs[i]!;
    }
  }
  return kept;
}

function quantize(impact: number): number {
  return Math.max(1, Math.round(impact * DENSE_SCALE));
}

/** Which query terms a skill contains, per field (its forward list never changes once built). */
function explain(doc: DocEntry, resolved: readonly ResolvedTerm[], requiredTags: readonly string[]): MatchExplanation {
  const fields: Partial<Record<SkillField, string[]>> = {};
  const synonyms: { word: string; via: string }[] = [];
  const forward = doc.forward;
  for (const { term, postings } of resolved) {
    const at = findTerm(forward, postings.id);
    if (at < 0) continue;
    const packed = forward[((forward.length / 3) | 0) + at]!;
    SKILL_FIELDS.forEach((field, f) => {
      if ((packed >>> (8 * f)) & TF_MAX) (fields[field] ??= []).push(term.word);
    });
    if (term.synonymOf !== undefined) synonyms.push({ word: term.word, via: term.synonymOf });
  }
  return { fields, synonyms, tags: [...requiredTags] };
}
