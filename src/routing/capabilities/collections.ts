/** Small typed-array helpers of the capability index. */

export type TypedArray = Int32Array | Uint32Array | Uint16Array | Uint8Array | Float32Array | Float64Array;

/** A copy of `array` with room for `length` elements. */
export function grow<T extends TypedArray>(array: T, length: number): T {
  const bigger = new (array.constructor as new (length: number) => T)(length);
  bigger.set(array.length <= length ? array : array.subarray(0, length));
  return bigger;
}

/**
 * The best k (score, id) pairs; ties broken by `compare` on ids when given. Reusable (reset), so
 * a query allocates none.
 */
export class TopK {
  /** Up to this k an insertion sort is cheapest; beyond, offers are collected and sorted once. */
  private static readonly INSERTION_LIMIT = 64;
  private readonly scores: number[] = [];
  private readonly ids: number[] = [];
  /** Pairs held in scores and ids (their arrays keep their capacity between uses). */
  private count = 0;
  private ordered = true;

  constructor(
    private k = 0,
    private compare?: (x: number, y: number) => number,
  ) {}

  /** Empties it for the best `k`. */
  reset(k: number, compare?: (x: number, y: number) => number): this {
    this.k = k;
    this.compare = compare;
    this.count = 0;
    this.ordered = true;
    return this;
  }

  offer(score: number, id: number): void {
    const size = this.count;
    if (this.k > TopK.INSERTION_LIMIT) {
      this.scores[size] = score;
      this.ids[size] = id;
      this.count++;
      this.ordered = false;
      return;
    }
    if (size === this.k && !this.beats(score, id, this.scores[size - 1]!, this.ids[size - 1]!)) return;
    let at = size === this.k ? size - 1 : size;
    if (size < this.k) this.count++;
    while (at > 0 && this.beats(score, id, this.scores[at - 1]!, this.ids[at - 1]!)) {
      this.scores[at] = this.scores[at - 1]!;
      this.ids[at] = this.ids[at - 1]!;
      at--;
    }
    this.scores[at] = score;
    this.ids[at] = id;
  }

  /** The k-th best score so far, or 0 while fewer than k were offered. */
  get floor(): number {
    return this.count < this.k || this.k > TopK.INSERTION_LIMIT ? 0 : this.scores[this.k - 1]!;
  }

  /** How many are kept (at most k). */
  get size(): number {
    return Math.min(this.k, this.count);
  }

  /** The i-th best id (0: the best). */
  idAt(i: number): number {
    if (!this.ordered) this.order();
    return this.ids[i]!;
  }

  scoreAt(i: number): number {
    if (!this.ordered) this.order();
    return this.scores[i]!;
  }

  sorted(): { id: number; score: number }[] {
    const pairs: { id: number; score: number }[] = [];
    for (let i = 0; i < this.size; i++) pairs.push({ id: this.idAt(i), score: this.scoreAt(i) });
    return pairs;
  }

  private order(): void {
    const pairs: { id: number; score: number }[] = [];
    for (let i = 0; i < this.count; i++) pairs.push({ id: this.ids[i]!, score: this.scores[i]! });
    pairs.sort((x, y) => (this.beats(x.score, x.id, y.score, y.id) ? -1 : this.beats(y.score, y.id, x.score, x.id) ? 1 : 0));
    this.count = Math.min(this.count, this.k);
    for (let i = 0; i < this.count; i++) {
      this.ids[i] = pairs[i]!.id;
      this.scores[i] = pairs[i]!.score;
    }
    this.ordered = true;
  }

  private beats(score: number, id: number, otherScore: number, otherId: number): boolean {
    if (score !== otherScore) return score > otherScore;
    return this.compare !== undefined && this.compare(id, otherId) < 0;
  }
}
