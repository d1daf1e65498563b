/**
 * What `channeldata.json` tells about a package besides `about.json`, read
 * the way conda-index reads it: the post-install flags from
 * `info/paths.json` (prefix placeholders, activation and link scripts) and
 * the recipe's `source` from `info/recipe/meta.yaml` (for `source_url` and
 * `source_git_url`).
 *
 * @module
 */

import { parse as parseYaml } from "yaml";
import type { JsonObject } from "./package_metadata.ts";

/** The flags conda-index derives from `info/paths.json`. */
export const POST_INSTALL_FLAGS: readonly string[] = [
  "binary_prefix",
  "text_prefix",
  "activate.d",
  "deactivate.d",
  "pre_link",
  "post_link",
  "pre_unlink",
];

const LINK_SCRIPTS: ReadonlyArray<readonly [flag: string, pattern: RegExp]> = [
  // fnmatch("*/.*-pre-link.*"): `*` also matches "/".
  ["pre_link", /\/\..*-pre-link\./s],
  ["post_link", /\/\..*-post-link\./s],
  ["pre_unlink", /\/\..*-pre-unlink\./s],
];

/**
 * The post-install flags of a package from its `info/paths.json` bytes
 * (all false without one, or when it cannot be parsed), as conda-index's
 * `_cache_post_install_details` computes them.
 *
 * @example Usage
 * ```ts
 * import { postInstallFlags } from "./channeldata_hints.ts";
 * const paths = { paths: [{ _path: "bin/.foo-post-link.sh" }] };
 * console.log(postInstallFlags(new TextEncoder().encode(JSON.stringify(paths))).post_link); // true
 * ```
 */
export function postInstallFlags(pathsJson: Uint8Array | undefined): Record<string, boolean> {
  const flags: Record<string, boolean> = {};
  for (const flag of POST_INSTALL_FLAGS) flags[flag] = false;
  if (pathsJson === undefined) return flags;
  let paths: unknown;
  try {
    paths = (JSON.parse(new TextDecoder().decode(pathsJson)) as JsonObject)?.paths;
  } catch {
    return flags;
  }
  if (!Array.isArray(paths)) return flags;
  for (const entry of paths) {
    if (typeof entry !== "object" || entry === null) continue;
    const { prefix_placeholder: placeholder, file_mode: mode, _path: path } = entry as JsonObject;
    if (placeholder) {
      if (mode === "binary") flags.binary_prefix = true;
      else if (mode === "text") flags.text_prefix = true;
    }
    if (typeof path !== "string") continue;
    if (path.startsWith("etc/conda/activate.d")) flags["activate.d"] = true;
    if (path.startsWith("etc/conda/deactivate.d")) flags["deactivate.d"] = true;
    for (const [flag, pattern] of LINK_SCRIPTS) if (pattern.test(path)) flags[flag] = true;
  }
  return flags;
}

/**
 * The recipe's `source` keys conda-index copies into channeldata
 * (`source_url`, `source_git_url`), from `info/recipe/meta.yaml` bytes. A
 * recipe that is not YAML, or whose `source` is not a mapping (several
 * sources), tells nothing, as with conda-index.
 *
 * @example Usage
 * ```ts
 * import { recipeSourceFields } from "./channeldata_hints.ts";
 * const yaml = new TextEncoder().encode("source:\n  url: https://example.org/foo.tar.gz\n");
 * console.log(recipeSourceFields(yaml)); // { source_url: "https://example.org/foo.tar.gz" }
 * ```
 */
export function recipeSourceFields(metaYaml: Uint8Array | undefined): JsonObject {
  if (metaYaml === undefined) return {};
  let recipe: unknown;
  try {
    // The YAML 1.2 core schema, as ruamel's safe loader; aliases are bounded.
    recipe = parseYaml(new TextDecoder().decode(metaYaml), { maxAliasCount: 100 });
  } catch {
    return {};
  }
  if (typeof recipe !== "object" || recipe === null || Array.isArray(recipe)) return {};
  const source = (recipe as JsonObject).source;
  if (typeof source !== "object" || source === null || Array.isArray(source)) return {};
  const fields: JsonObject = {};
  for (const key of ["url", "git_url"]) {
    const value = _json((source as JsonObject)[key]);
    if (value !== undefined) fields[`source_${key}`] = value;
  }
  return fields;
}

/** A YAML value as JSON would hold it (dates as ISO strings), or undefined. */
function _json(value: unknown): unknown {
  if (value === undefined) return undefined;
  try {
    return JSON.parse(JSON.stringify(value));
  } catch {
    return undefined;
  }
}
