/**
 * The agents whose runtime (record, card, endpoints) or endpoint health changed, in order and
 * numbered, so that what is derived from one agent (routing's kept eligibility verdicts) can be
 * dropped for that agent alone. A bounded ring: a reader that fell more than `capacity` changes
 * behind is told so, and must drop everything.
 */
export class AgentChanges {
  private readonly ring: (string | undefined)[];
  private next = 0;

  constructor(private readonly capacity = 4_096) {
    this.ring = new Array<string | undefined>(capacity);
  }

  /** Notes a change of the agent `tenant/name`. */
  record(agentKey: string): void {
    this.ring[this.next % this.capacity] = agentKey;
    this.next++;
  }

  /** The number the next change will get: what a reader has seen once it has read up to here. */
  get sequence(): number {
    return this.next;
  }

  /** Calls `visit` with the key of each change numbered `from` or later; false when some are no longer held. */
  since(from: number, visit: (agentKey: string) => void): boolean {
    if (this.next - from > this.capacity) return false;
    for (let n = from; n < this.next; n++) visit(this.ring[n % this.capacity]!);
    return true;
  }
}
