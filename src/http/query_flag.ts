/**
 * Boolean query parameters such as `?force=true`, as upload clients spell them.
 *
 * @module
 */

import { badRequest } from "./http_error.ts";

const TRUE = new Set(["true", "1", "yes", "on"]);
const FALSE = new Set(["false", "0", "no", "off", ""]);

/**
 * The value of the boolean query parameter `name`: false when absent;
 * `true`/`1`/`yes`/`on` and `false`/`0`/`no`/`off` (any case) otherwise.
 * Anything else is a 400, so that a typo never silently means false.
 *
 * @example Usage
 * ```ts
 * import { queryFlag } from "./query_flag.ts";
 * const url = new URL("https://example.org/api/v1/upload/main?force=true");
 * console.log(queryFlag(url.searchParams, "force")); // true
 * ```
 */
export function queryFlag(params: URLSearchParams, name: string): boolean {
  const value = params.get(name);
  if (value === null) return false;
  const normalized = value.trim().toLowerCase();
  if (TRUE.has(normalized)) return true;
  if (FALSE.has(normalized)) return false;
  throw badRequest(
    `Cannot read query parameter ${name}: ${
      JSON.stringify(value.slice(0, 32))
    } is not true or false`,
  );
}
