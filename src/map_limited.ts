/**
 * `map` over an async function with a bound on how many calls run at once.
 *
 * @module
 */

/**
 * Calls `task` on every item with at most `limit` calls in flight; the
 * results are in input order. The first rejection rejects the whole call
 * (calls already started still run to their end).
 */
export async function mapLimited<T, R>(
  items: readonly T[],
  limit: number,
  task: (item: T) => Promise<R>,
): Promise<R[]> {
  const results: R[] = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const index = next++;
      results[index] = await task(items[index] as T);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}
