import { grow, TopK } from './collections.js';
import { analyze, normalizeTag, type QueryTerm } from './text.js';
import type { MatchExplanation, RankedAgent, Skill, SkillField } from './types.js';
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
 * (~1 µs of cache misses on a large heap, more with a policy check) than scoring a document, so it
 * is asked about as few agents as give the answer, best first, in two stages:
 * 1. The unfiltered ranking (its pruning threshold, its rescoring cap over all documents), then the
 *    final selection walks its candidates best first, asking the filter until `limit` are accepted.
 *    Its answer stands when (a) the last accepted one scores at least the pruning threshold (what
 *    pruning left out scores less: exact), and (b) if the cap left candidates out, at most
 *    ceil(limit / 4) of the agents asked were refused (2 of 10 for limit 8). Refused documents kept
 *    under the cap take the place of accepted ones that stage 2 would rescore; the refused share of
 *    the best agents, then at most ~1/5, estimates theirs, so at least ~4/5 of the accepted documents
 *    stage 2 would rescore were rescored (measured at 10,000 agents, 2% refused: the same best agent
 *    for 99.9-100% of queries, the same top 8 for ~97%). A policy that refuses none of the candidates
 *    gives the unfiltered ranking, and with few refusals (the common case) ~limit agents are asked.
 * 2. Otherwise (many refusals, or fewer than `limit` accepted, as under a policy allowing few agents)
 *    the query is evaluated again, filtered: the pruning threshold is the `limit`-th best accepted
 *    agent of the sample, and the documents kept for rescoring are the best accepted ones up to
 *    maxRescoredDocuments, found by asking about the best documents first (about that many agents;
 *    all candidates when most are refused). Answers are kept per query: no agent is asked twice.
 * So a restrictive policy still finds the agents it allows; stage 1 costs it a few asks and one
 * unfiltered evaluation (tens of µs, against ~1 µs per agent asked in stage 2).
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
/** From this many candidates on, selectTop first takes a lower bound of the result from a sample. */
const SAMPLED_SELECT_MIN = 4 * THRESHOLD_SAMPLE;
/** The most candidates selectAllowed ranks unfiltered (TopK keeps at most 64 in order as they come). */
const SELECT_ALLOWED_MAX = 64;
/** Stage 1 of a filtered query (see the header) accepts its answer with at most ceil(limit / this) agents refused. */
const STAGE1_REFUSED = 4;
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

/*
 * A skill found, with its score; as rank() returns it, its agent's best skill (a RankedAgent as it
 * is, so a query allocates one object per result). The explanation is computed when first read
 * (most callers only read the chosen one's), through a getter of the class. Not a getter in an
 * object literal: V8 makes each such object a dictionary-mode object (~0.4 µs each) and its
 * accessor keeps the query's young objects alive through minor GCs (measured in a rank() loop at
 * 10,000 agents: ~3.8 MB promoted per scavenge and ~6 ms scavenges, against ~0.3 MB and ~2 ms).
 * Its own enumerable fields are RankedAgent's but the explanation; toJSON adds it.
 */
export class Hit implements RankedAgent {
  readonly agentKey: string;
  readonly skillId: string;
  readonly score: number;
  readonly confidence: number;
  readonly #doc: DocEntry;
  readonly #resolved: readonly ResolvedTerm[];
  readonly #requiredTags: readonly string[];
  #explanation: MatchExplanation | undefined;

  constructor(doc: DocEntry, score: number, confidence: number, resolved: readonly ResolvedTerm[], requiredTags: readonly string[]) {
    this.agentKey = doc.agent.key;
    this.skillId = doc.skill.id;
    this.score = score;
    this.confidence = confidence;
    this.#doc = doc;
    this.#resolved = resolved;
    this.#requiredTags = requiredTags;
  }

  get doc(): DocEntry {
    return this.#doc;
  }

  /** It costs a lookup per query term; safe to read after the index changed. */
  get explanation(): MatchExplanation {
    return (this.#explanation ??= explain(this.#doc, this.#resolved, this.#requiredTags));
  }

  toJSON(): RankedAgent {
    return { agentKey: this.agentKey, skillId: this.skillId, score: this.score, confidence: this.confidence, explanation: this.explanation };
  }
}

const NO_TERMS: readonly ResolvedTerm[] = [];

/** Whether an agent (by slot) may be chosen; undefined: all may. */
type AgentFilter = ((slot: number) => boolean) | undefined;

/** What accumulate found (the documents it touched are listed in this.touched, this.touchedCount of them). */
interface Found {
  /** The documents the best are chosen from: the first `count` of `candidates`. */
  readonly candidates: Int32Array;
  readonly count: number;
  /** The pruning threshold applied (0: none): documents left out score less. */
  readonly threshold: number;
  /** Whether the rescoring cap left out candidates (of any agent: without an agent filter). */
  readonly cut: boolean;
}

const NOTHING_FOUND: Found = { candidates: new Int32Array(0), count: 0, threshold: 0, cut: false };

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
  /** The most this term and the following ones (by descending bound) can add together. */
  reach: number;
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
  private touched = new Int32Array(0);
  /** Documents listed in `touched` whose scores are not 0 (cleared after each query). */
  private touchedCount = 0;
  private kept = new Int32Array(0);
  private keptScores = new Float64Array(0);
  private keptBuckets = new Uint8Array(0);
  /** One bit per document, set for the kept ones during a rescore (small enough to stay in cache). */
  private keptBits = new Uint32Array(0);
  private eligibleMark = new Uint32Array(0);
  /** Per document, how many of a query's sparse required tags it has (zeroed after use). */
  private tagCounts = new Uint8Array(0);
  /** What selectTop returns (valid until its next call), and the selections that walk it. */
  private readonly top = new TopK();
  private readonly chosen = new TopK();
  /** Whether the last rescore cut candidates while keeping documents of any agent. */
  private rescoreCut = false;
  private agentMark = new Uint32Array(0);
  private agentBest = new Float64Array(0);
  private agentBestDoc = new Int32Array(0);
  private agentsSeen = new Int32Array(0);
  private allowedMark = new Uint32Array(0);
  private allowedValue = new Uint8Array(0);

  /** Ties between equal scores are broken by agent key, then skill id (a stable order across gateways). */
  private readonly compareDocs = (x: number, y: number): number => compareKeys(this.docs[x]!, this.docs[y]!);

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
    allowed?: (agentKey: string, slot: number) => boolean,
  ): Hit[] {
    if (limit <= 0 || this.docCount === 0) return [];
    const query = this.tick();
    const isAllowed: AgentFilter = allowed && ((slot) => this.isAllowed(slot, query, allowed));
    const filter = requiredTags.length > 0 ? this.tagFilter(requiredTags, query) : undefined;
    if (filter === NO_SKILL) return [];
    const resolved = this.resolve(queryTerms);

    const hits: Hit[] = [];
    // The filter may throw: the scores must be cleared all the same, or later queries would add to them.
    try {
      // Without a filter, or stage 1 with one (see the header): the unfiltered ranking.
      let found = resolved.length > 0 ? this.accumulate(resolved, filter, query, perAgent, limit, undefined) : NOTHING_FOUND;
      let best = isAllowed ? this.selectStage1(found, perAgent, limit, isAllowed) : this.selectTop(found.candidates, found.count, perAgent, limit, undefined, true);
      if (!best) {
        this.clearScores();
        found = this.accumulate(resolved, filter, query, perAgent, limit, isAllowed);
        best = this.selectAllowed(found.candidates, found.count, perAgent, limit, isAllowed!);
      }
      const ideal = this.idealScore(queryTerms, resolved);
      for (let i = 0; i < best.size; i++) {
        const score = best.scoreAt(i);
        hits.push(new Hit(this.docs[best.idAt(i)]!, score, Math.min(1, score / ideal), resolved, requiredTags));
      }
    } finally {
      this.clearScores();
    }

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
        hits.push(new Hit(doc, 0, tagsOnly, NO_TERMS, requiredTags));
      }
    }
    return hits;
  }

  private clearScores(): void {
    const { scores, touched } = this;
    // Past an eighth of the documents, one sequential pass beats scattered writes.
    if (this.touchedCount > scores.length / 8) scores.fill(0);
    else for (let i = 0; i < this.touchedCount; i++) scores[touched[i]!] = 0;
    this.touchedCount = 0;
  }

  /** The query terms the tenant knows, by descending bound (an insertion sort: a query has at most a few dozen). */
  private resolve(queryTerms: readonly QueryTerm[]): ResolvedTerm[] {
    const resolved: ResolvedTerm[] = [];
    for (const term of queryTerms) {
      const postings = this.terms.get(term.stem);
      if (!postings) continue;
      const entry = { term, postings, bound: term.weight * this.idf(postings.size), reach: 0 };
      let at = resolved.length;
      for (; at > 0 && resolved[at - 1]!.bound < entry.bound; at--) resolved[at] = resolved[at - 1]!;
      resolved[at] = entry;
    }
    let reach = 0;
    for (let i = resolved.length - 1; i >= 0; i--) resolved[i]!.reach = reach += resolved[i]!.bound;
    return resolved;
  }

  /**
   * Accumulates scores into this.scores (the documents touched listed in this.touched) and returns
   * the candidates among them for the top (this.touched or this.kept).
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
        const reach = resolved[next]!.reach;
        if (size > PRUNE_CHECK_DF && reach < top) {
          this.touchedCount = touchedCount;
          threshold = this.threshold(touchedCount, perAgent, limit, isAllowed);
          if (reach < threshold) break;
        }
      }
      walked += size;
      const data = postings.data;
      const scale = bound / IMPACT_ONE;
      if (touchedCount === 0) {
        // Every score is still 0: no need to read them (the first term may be a frequent one).
        for (let at = 0; at < 3 * size; at += 3) {
          const doc = data[at]!;
          if (filter && !this.qualifies(doc, filter, query)) continue;
          const score = scale * data[at + 2]!;
          touched[touchedCount++] = doc;
          scores[doc] = score;
          if (score > top) top = score;
        }
        continue;
      }
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
    this.touchedCount = touchedCount;
    if (next === resolved.length || touchedCount === 0) return { candidates: touched, count: touchedCount, threshold: 0, cut: false };
    // A threshold, if the pruning check did not compute one yet, usually rules out most documents.
    if (threshold === 0) threshold = this.threshold(touchedCount, perAgent, limit, isAllowed);
    const keptCount = this.rescore(resolved, next, resolved[next]!.reach, threshold, touchedCount, isAllowed);
    return { candidates: this.kept, count: keptCount, threshold, cut: this.rescoreCut };
  }

  /**
   * Adds the terms from `from` on to the documents found so far that can still reach `threshold`
   * (at most maxRescoredDocuments of them, by partial score; with an agent filter, of accepted
   * agents); returns how many, listed in this.kept.
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
    this.rescoreCut = keptCount > cap && !isAllowed;
    // Within the cap, refused documents are rescored too (harmless: the final selection skips them).
    if (keptCount > cap) keptCount = isAllowed ? this.keepAllowed(keptCount, cap, isAllowed) : keepBest(kept, keptScores, this.keptBuckets, keptCount, cap, best);
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
    return allowed > cap ? keepBest(kept, keptScores, this.keptBuckets, allowed, cap, best) : allowed;
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
    // The best few of the sample, in order, asked about until `limit` are accepted; more when too many were refused.
    for (let asked = 2 * limit; ; asked *= 4) {
      const best = this.selectTop(this.touched, count, perAgent, asked, undefined, false);
      let accepted = 0;
      for (let i = 0; i < best.size; i++) if (isAllowed(this.agentOfDoc[best.idAt(i)]!) && ++accepted === limit) return best.scoreAt(i);
      if (best.size < asked) return 0;
    }
  }

  /**
   * The final selection of stage 1 (see the header) over what the unfiltered ranking found: the
   * best `limit` accepted, walked best first; undefined when stage 2 must decide.
   */
  private selectStage1(found: Found, perAgent: boolean, limit: number, isAllowed: (slot: number) => boolean): TopK | undefined {
    let chosen: TopK;
    if (found.cut) {
      const maxRefused = Math.ceil(limit / STAGE1_REFUSED);
      const best = this.selectTop(found.candidates, found.count, perAgent, limit + maxRefused + 1, undefined, true);
      chosen = this.chosen.reset(limit);
      let refused = 0;
      for (let i = 0; i < best.size && chosen.size < limit; i++) {
        if (isAllowed(this.agentOfDoc[best.idAt(i)]!)) chosen.offer(best.scoreAt(i), best.idAt(i));
        else if (++refused > maxRefused) return undefined;
      }
      if (chosen.size < limit) return undefined;
    } else chosen = this.selectAllowed(found.candidates, found.count, perAgent, limit, isAllowed);
    // What the threshold pruned scores less than it: nothing accepted was missed if the last chosen reaches it.
    const exact = chosen.size === limit ? chosen.scoreAt(limit - 1) >= found.threshold : found.threshold === 0;
    return exact ? chosen : undefined;
  }

  /**
   * selectTop(..., isAllowed, true).sorted(), asking the filter about the best agents only: the
   * best of all agents (or documents) in order, a few more than `limit`, then more if too many of
   * those were refused, and at last all of them.
   */
  private selectAllowed(list: Int32Array, count: number, perAgent: boolean, limit: number, isAllowed: (slot: number) => boolean): TopK {
    for (let asked = 2 * limit; asked <= SELECT_ALLOWED_MAX; asked *= 4) {
      const best = this.selectTop(list, count, perAgent, asked, undefined, true);
      const chosen = this.chosen.reset(limit);
      for (let i = 0; i < best.size; i++) {
        if (!isAllowed(this.agentOfDoc[best.idAt(i)]!)) continue;
        chosen.offer(best.scoreAt(i), best.idAt(i));
        if (chosen.size === limit) return chosen;
      }
      if (best.size < asked) return chosen;
    }
    return this.selectTop(list, count, perAgent, limit, isAllowed, true);
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
    // In a long list, the limit-th best of the first THRESHOLD_SAMPLE bounds the limit-th best of
    // all from below: documents that score less are skipped without looking up their agent (exact).
    const floor = count > SAMPLED_SELECT_MIN && !isAllowed ? this.selectTop(list, THRESHOLD_SAMPLE, perAgent, limit, undefined, false).floor : 0;
    const top = this.top.reset(limit, breakTies ? this.compareDocs : undefined);
    const scores = this.scores;
    if (!perAgent) {
      for (let i = 0; i < count; i++) {
        const doc = list[i]!;
        if (scores[doc]! >= floor && (!isAllowed || isAllowed(this.agentOfDoc[doc]!))) top.offer(scores[doc]!, doc);
      }
      return top;
    }
    const mark = this.tick();
    const { agentMark, agentBest, agentBestDoc, agentsSeen } = this;
    let seen = 0;
    for (let i = 0; i < count; i++) {
      const doc = list[i]!;
      const score = scores[doc]!;
      if (score < floor) continue;
      const slot = this.agentOfDoc[doc]!;
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
      let bound = unknownTermWeight * this.idf(1);
      for (const known of resolved) if (known.term === term) bound = known.bound;
      ideal += bound;
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

  private isAllowed(slot: number, query: number, allowed: (agentKey: string, slot: number) => boolean): boolean {
    if (this.allowedMark[slot] !== query) {
      this.allowedMark[slot] = query;
      this.allowedValue[slot] = allowed(this.agentKeys[slot]!, slot) ? 1 : 0;
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
 * and the partial scores it orders are approximate anyway. `buckets` is scratch space for `count` bytes.
 */
function keepBest(docs: Int32Array, scores: Float64Array, buckets: Uint8Array, count: number, cap: number, best: number): number {
  const toBucket = CUT_BUCKETS / best;
  cutCounts.fill(0);
  for (let i = 0; i < count; i++) {
    const bucket = Math.min(CUT_BUCKETS - 1, Math.floor(scores[i]! * toBucket));
    buckets[i] = bucket;
    cutCounts[bucket]!++;
  }
  let boundary = CUT_BUCKETS - 1;
  let above = 0;
  while (boundary > 0 && above + cutCounts[boundary]! <= cap) above += cutCounts[boundary--]!;
  let fromBoundary = cap - above;
  let kept = 0;
  for (let i = 0; i < count; i++) {
    const bucket = buckets[i]!;
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
