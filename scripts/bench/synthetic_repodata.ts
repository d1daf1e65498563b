/**
 * Channels made of repodata alone (no package files), for the benchmarks that
 * only need an index to read or to grow.
 *
 * @module
 */

import { createHash } from "node:crypto";
import { join } from "node:path";

/** A stand-in digest for a synthetic record: the hex digest of `seed`. */
export function seedDigest(seed: string, algorithm: "sha256" | "md5"): string {
  return createHash(algorithm).update(seed).digest("hex");
}

/** Writes `root/<subdir>/repodata.json` holding `packages` as its `.conda` records. */
export async function writeRepodata(
  root: string,
  subdir: string,
  packages: Record<string, unknown>,
): Promise<void> {
  await Deno.mkdir(join(root, subdir), { recursive: true });
  await Deno.writeTextFile(
    join(root, subdir, "repodata.json"),
    JSON.stringify({
      info: { subdir },
      packages: {},
      "packages.conda": packages,
      removed: [],
      repodata_version: 1,
    }),
  );
}
