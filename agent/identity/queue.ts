// The order in which identities get a CSR slot: connections waiting on a certificate (high) before
// prefetches and renewals (background), first come first served within a priority. An item is in
// the queue at most once, so the queue is bounded by the number of identities the node holds.

export type Priority = 'high' | 'background';

export class PriorityQueue<T> {
  // Sets keep insertion order and delete in O(1): promotion never scans.
  private readonly high = new Set<T>();
  private readonly background = new Set<T>();

  get size(): number {
    return this.high.size + this.background.size;
  }

  priorityOf(item: T): Priority | undefined {
    return this.high.has(item) ? 'high' : this.background.has(item) ? 'background' : undefined;
  }

  /** Queues `item`, or raises it to high if it already waits at background; never lowers it. */
  push(item: T, priority: Priority): void {
    if (this.high.has(item)) return;
    if (priority === 'background') {
      this.background.add(item);
      return;
    }
    this.background.delete(item);
    this.high.add(item);
  }

  delete(item: T): void {
    this.high.delete(item);
    this.background.delete(item);
  }

  shift(): T | undefined {
    for (const set of [this.high, this.background]) {
      const first = set.values().next();
      if (!first.done) {
        set.delete(first.value);
        return first.value;
      }
    }
    return undefined;
  }

  clear(): void {
    this.high.clear();
    this.background.clear();
  }
}
