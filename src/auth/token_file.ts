/**
 * The `--token_hash_file`: one token hash per line, optionally followed by
 * the token's name and scope,
 *
 * ```
 * # HASH                                                            [name=NAME] [channels=a,b] [packages=GLOB,GLOB] [can=upload,overwrite,delete]
 * 3f1c...e9                                                         name=admin
 * 9ab0...41 name=ci-mylib channels=main packages=mylib,mylib-* can=upload
 * ```
 *
 * A bare hash keeps the original tool's meaning: any channel, any package,
 * every action. `#` starts a comment. A malformed line is refused with its
 * line number; no error message ever holds a hash.
 *
 * @module
 */

import { readAuthFile } from "./read_auth_file.ts";
import { isTokenHash } from "./token_hash.ts";
import { quote, type Scope, scopeFromLists, type ScopeLists } from "./token_scope.ts";

/** One accepted token: its hash, name and scope. */
export interface TokenEntry {
  /** Hex sha256 of salt + token, lowercase. */
  hash: string;
  /** The token's name; undefined for a bare hash (it is then named by its hash's digest). */
  name?: string;
  /** What the token may do. */
  scope: Scope;
}

const FIELDS = ["name", "channels", "packages", "can"] as const;
const TOKEN_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/**
 * Parses the text of a token hash file. Throws a `SyntaxError`
 * ("line N: ...") for the first line that cannot be used.
 *
 * @example Usage
 * ```ts
 * import { parseTokenFile } from "./token_file.ts";
 * const hash = "a".repeat(64);
 * const [entry] = parseTokenFile(`${hash} name=ci-mylib packages=mylib,mylib-* can=upload\n`);
 * console.log(entry?.name, entry?.scope.packages); // ci-mylib ["mylib", "mylib-*"]
 * ```
 */
export function parseTokenFile(text: string): TokenEntry[] {
  const entries: TokenEntry[] = [];
  const lineOfHash = new Map<string, number>();
  for (const [index, raw] of text.split("\n").entries()) {
    const line = index + 1;
    const fields = raw.replace(/#.*/, "").trim().split(/\s+/).filter((field) => field !== "");
    if (fields.length === 0) continue;
    try {
      const entry = parseLine(fields);
      const previous = lineOfHash.get(entry.hash);
      if (previous !== undefined) {
        throw new SyntaxError(`the same hash as line ${previous}`);
      }
      lineOfHash.set(entry.hash, line);
      entries.push(entry);
    } catch (error) {
      if (!(error instanceof SyntaxError)) throw error;
      throw new SyntaxError(`line ${line}: ${error.message}`);
    }
  }
  return entries;
}

function parseLine(fields: string[]): TokenEntry {
  const [hash, ...rest] = fields;
  if (hash === undefined || !isTokenHash(hash)) {
    throw new SyntaxError(
      "the first field is not a token hash (64 hex digits; make one with 'hash-token')",
    );
  }
  const values = new Map<string, string>();
  for (const [position, field] of rest.entries()) {
    const equals = field.indexOf("=");
    if (equals <= 0) {
      // The field itself is not shown: it might be a token pasted by mistake.
      throw new SyntaxError(
        `field ${position + 2} is not KEY=VALUE (keys: ${FIELDS.join(", ")})`,
      );
    }
    const key = field.slice(0, equals);
    if (!(FIELDS as readonly string[]).includes(key)) {
      throw new SyntaxError(
        `unknown field ${quote(key.slice(0, 20))} (keys: ${FIELDS.join(", ")})`,
      );
    }
    if (values.has(key)) throw new SyntaxError(`field ${key}= is given twice`);
    values.set(key, field.slice(equals + 1));
  }
  const list = (key: string) => values.get(key)?.split(",").map((value) => value.trim());
  const lists: { -readonly [K in keyof ScopeLists]: ScopeLists[K] } = {};
  for (const key of ["channels", "packages", "can"] as const) {
    const value = list(key);
    if (value !== undefined) lists[key] = value;
  }
  const entry: TokenEntry = { hash: hash.toLowerCase(), scope: scopeFromLists(lists) };
  const name = values.get("name");
  if (name !== undefined) {
    if (!TOKEN_NAME.test(name)) {
      throw new SyntaxError(
        `name ${quote(name.slice(0, 64))} is not a name (letters, digits, . _ -; at most 64)`,
      );
    }
    entry.name = name;
  }
  return entry;
}

/**
 * Reads and parses a token hash file. Throws an `Error` whose message names
 * the file and, for a malformed line, its number ("Cannot read token hash
 * file F: line 3: ...").
 */
export async function readTokenFile(path: string): Promise<TokenEntry[]> {
  return await readAuthFile(path, "token hash file", parseTokenFile);
}
