/**
 * Builds the benchmark's pre-populated channels: `count` small real
 * `.conda` packages in `linux-64/`, indexed by our own `index` subcommand,
 * so that a copy (`cp -a`, modification times kept) starts consistent and
 * is trusted by start-up reconcile without re-reading a package.
 *
 * @module
 */

import { join } from "node:path";
import { writePackage } from "../../tests/helpers/conda_package.ts";
import { ourProgramArgs, runDeno } from "./bench_process.ts";

/** A built channel. */
export interface ChannelTemplate {
  /** Channel root. */
  root: string;
  /** Packages in `linux-64/`. */
  count: number;
}

/**
 * Writes `count` packages (about five versions per name) into
 * `root/linux-64/` and runs `main.ts index root`. Throws when the index
 * does not end up with all of them.
 */
export async function buildChannelTemplate(root: string, count: number): Promise<ChannelTemplate> {
  const subdir = join(root, "linux-64");
  await Deno.mkdir(subdir, { recursive: true });
  const names = Math.max(1, Math.ceil(count / 5));
  for (let i = 0; i < count; i++) {
    await writePackage(subdir, {
      name: `bench-pkg-${i % names}`,
      version: `1.${Math.floor(i / names)}`,
      depends: ["python >=3.9", `bench-dep-${i % 7}`],
    });
  }
  const result = await runDeno(ourProgramArgs(root, ["index", root]), 900_000);
  if (result.code !== 0 || !new RegExp(`\\badded=${count}\\b`).test(result.stderr)) {
    throw new Error(`Cannot index the template channel: ${result.stderr.slice(-2000)}`);
  }
  return { root, count };
}
