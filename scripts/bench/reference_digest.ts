/**
 * The benchmark's yardstick for a full index rebuild: the least any indexer
 * must do, which is to read every package file of the channel once and
 * compute its sha256 and md5. No inspection, no output files.
 *
 * ```sh
 * deno run --allow-read=CHANNEL scripts/bench/reference_digest.ts CHANNEL
 * ```
 *
 * Prints the number of packages digested.
 *
 * @module
 */

import { createHash } from "node:crypto";
import { join } from "node:path";

/** Reads and hashes every `.conda` and `.tar.bz2` in the subdirs of `root`; returns their count. */
export async function digestChannel(root: string): Promise<number> {
  let count = 0;
  for await (const subdir of Deno.readDir(root)) {
    if (!subdir.isDirectory || subdir.name.startsWith(".")) continue;
    for await (const entry of Deno.readDir(join(root, subdir.name))) {
      if (!entry.isFile || !/\.(conda|tar\.bz2)$/.test(entry.name)) continue;
      const bytes = await Deno.readFile(join(root, subdir.name, entry.name));
      createHash("sha256").update(bytes).digest("hex");
      createHash("md5").update(bytes).digest("hex");
      count++;
    }
  }
  return count;
}

if (import.meta.main) {
  const root = Deno.args[0];
  if (root === undefined) {
    console.error("usage: reference_digest.ts CHANNEL_ROOT");
    Deno.exit(2);
  }
  console.log(await digestChannel(root));
}
