/** Small typed-array helpers of the capability index. */

export type TypedArray = Int32Array | Uint32Array | Uint16Array | Uint8Array | Float32Array | Float64Array;

/** A copy of `array` with room for `length` elements. */
export function grow<T extends TypedArray>(array: T, length: number): T {
  const bigger = new (array.constructor as new (length: number) => T)(length);
  bigger.set(array.length <= length ? array : array.subarray(0, length));
  return bigger;
}

/** The best k (score, id) pairs; ties broken by `compare` on ids when given. */
export class TopK {
  /** Up to this k an insertion sort is cheapest; beyond, offers are collected and sorted once. */
  private static readonly INSERTION_LIMIT = 64;
  private readonly scores: number[] = [];
  private readonly ids: number[] = [];

  constructor(
    private readonly k: number,
    private readonly compare?: (x: number, y: number) => number,
  ) {}

  offer(score: number, id: number): void {
    if (this.k > TopK.INSERTION_LIMIT) {
      this.scores.push(score);
      this.ids.push(id);
      return;
    }
    const size = this.scores.length;
    if (size === this.k && !this.beats(score, id, this.scores[size - 1]!, this.ids[size - 1]!)) return;
    let at = size === this.k ? size - 1 : size;
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
    return this.scores.length < this.k || this.k > TopK.INSERTION_LIMIT ? 0 : this.scores[this.k - 1]!;
  }

  sorted(): { id: number; score: number }[] {
    const pairs = this.ids.map((id, i) => ({ id, score: this.scores[i]! }));
    if (this.k <= TopK.INSERTION_LIMIT) return pairs;
    pairs.sort((x, y) => (this.beats(x.score, x.id, y.score, y.id) ? -1 : this.beats(y.score, y.id, x.score, x.id) ? 1 : 0));
    return pairs.slice(0, this.k);
  }

  private beats(score: number, id: number, otherScore: number, otherId: number): boolean {
    if (score !== otherScore) return score > otherScore;
    return this.compare !== undefined && this.compare(id, otherId) < 0;
  }
}
