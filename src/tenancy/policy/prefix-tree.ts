interface PrefixNode<V> {
  /** The characters on the edge from the parent (empty only at the root). */
  label: string;
  value: V | undefined;
  /** Keyed by the first character code of the child's label. */
  children: Map<number, PrefixNode<V>> | undefined;
}

/**
 * A radix tree of string prefixes, one value per prefix. A lookup visits the values of the stored
 * prefixes of a key, and only those, walking the key once: O(key length) however many prefixes are
 * stored. Edges carry whole strings, so prefixes sharing a long head ('spiffe://example.org/tenant/')
 * cost one comparison of that head, not one step per character.
 */
export class PrefixTree<V> {
  private readonly root: PrefixNode<V> = { label: '', value: undefined, children: undefined };
  private count = 0;

  /** How many prefixes hold a value. */
  get size(): number {
    return this.count;
  }

  /** The value stored under exactly `prefix`, made by `create` when there is none yet. */
  upsert(prefix: string, create: () => V): V {
    let node = this.root;
    let at = 0;
    while (at < prefix.length) {
      const code = prefix.charCodeAt(at);
      const children = (node.children ??= new Map());
      let child = children.get(code);
      if (child === undefined) {
        child = { label: prefix.slice(at), value: undefined, children: undefined };
        children.set(code, child);
        node = child;
        break;
      }
      const label = child.label;
      let common = 1;
      while (common < label.length && at + common < prefix.length && label.charCodeAt(common) === prefix.charCodeAt(at + common)) common++;
      if (common < label.length) {
        // The prefix leaves (or ends inside) the edge: split it where they part.
        const tail = label.slice(common);
        child.label = tail;
        const middle: PrefixNode<V> = { label: label.slice(0, common), value: undefined, children: new Map([[tail.charCodeAt(0), child]]) };
        children.set(code, middle);
        child = middle;
      }
      node = child;
      at += common;
    }
    if (node.value === undefined) {
      node.value = create();
      this.count++;
    }
    return node.value;
  }

  /** Calls visit(value, context) for the value of every stored prefix of `key`, shortest first (the empty prefix included). */
  forEachPrefixOf<C>(key: string, visit: (value: V, context: C) => void, context: C): void {
    let node = this.root;
    let at = 0;
    for (;;) {
      if (node.value !== undefined) visit(node.value, context);
      const children = node.children;
      if (children === undefined || at >= key.length) return;
      const child = children.get(key.charCodeAt(at));
      if (child === undefined || !key.startsWith(child.label, at)) return;
      at += child.label.length;
      node = child;
    }
  }
}
