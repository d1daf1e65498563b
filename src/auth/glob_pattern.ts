/**
 * A small, safe glob matcher for package names and OIDC claims: `*` matches
 * any run of characters (including none, including `/`), `?` exactly one,
 * everything else itself. The whole value must match (anchored). No regular
 * expression is built from configuration, and matching takes at most
 * O(pattern × value) steps whatever the input, so a hostile value cannot
 * stall the server.
 *
 * @module
 */

/**
 * Whether `value` matches `pattern` as a whole.
 *
 * @example Usage
 * ```ts
 * import { matchGlob } from "./glob_pattern.ts";
 * console.log(matchGlob("mylib-*", "mylib-core")); // true
 * console.log(matchGlob("mylib-*", "mylib")); // false
 * console.log(matchGlob("v?.*", "v1.2")); // true
 * ```
 */
export function matchGlob(pattern: string, value: string): boolean {
  // The classic greedy two-pointer match with one backtrack point: on a
  // mismatch, the last `*` takes one more character. Linear in practice,
  // O(pattern × value) at worst.
  let p = 0;
  let v = 0;
  let star = -1;
  let starValue = 0;
  while (v < value.length) {
    const wanted = pattern[p];
    if (wanted === "*") {
      star = p++;
      starValue = v;
    } else if (wanted !== undefined && (wanted === "?" || wanted === value[v])) {
      p++;
      v++;
    } else if (star >= 0) {
      p = star + 1;
      v = ++starValue;
    } else {
      return false;
    }
  }
  while (pattern[p] === "*") p++;
  return p === pattern.length;
}

/** Whether `pattern` matches everything (it is nothing but `*`). */
export function matchesEverything(pattern: string): boolean {
  return /^\*+$/.test(pattern);
}
