/**
 * Measurement 5: start-up on a consistent channel (spawn to the `listening`
 * line, with reconcile trusting every package) against the reference
 * server's start-up, and a full `index` rebuild after `repodata.json` is
 * deleted against reading and hashing every package once.
 *
 * @module
 */

import { join } from "node:path";
import { type BenchContext, copyTree, countLabel, removeAll } from "./bench_context.ts";
import {
  ourProgramArgs,
  REPO_ROOT,
  runDeno,
  startOurServer,
  startReferenceServer,
} from "./bench_process.ts";
import type { ChannelTemplate } from "./channel_template.ts";
import { figure, times } from "./report_table.ts";
import { median } from "./stats.ts";

const REFERENCE_DIGEST_TS = join(REPO_ROOT, "scripts", "bench", "reference_digest.ts");

/** Times start-ups and rebuilds on `template`; adds the rows. */
export async function benchStartup(
  context: BenchContext,
  template: ChannelTemplate,
): Promise<void> {
  const { plan } = context;
  const count = countLabel(template.count);
  const channel = join(context.tmp, "startup-channel");
  await copyTree(template.root, channel);
  const ours: number[] = [];
  const reference: number[] = [];
  try {
    for (let run = 0; run < plan.startupRuns; run++) {
      const server = await startOurServer(channel, {
        tls: context.tls,
        tokenHash: context.tokenHash,
      });
      await server.stop();
      const line = server.lines.find((line) => /\bindex reconciled\b/.test(line)) ?? "";
      if (
        !new RegExp(`\\bunchanged=${template.count}\\b.*`).test(line) || !/\badded=0\b/.test(line)
      ) {
        throw new Error(`Cannot time start-up: the channel was not consistent: ${line}`);
      }
      ours.push(server.startMs);
      const empty = await Deno.makeTempDir({ dir: context.tmp, prefix: "reference-" });
      try {
        const referenceServer = await startReferenceServer(empty, {
          mode: "store",
          tls: context.tls,
          token: context.token,
        });
        await referenceServer.stop();
        reference.push(referenceServer.startMs);
      } finally {
        await removeAll(empty);
      }
    }
  } finally {
    await removeAll(channel);
  }
  const oursMs = median(ours);
  const referenceMs = median(reference);
  context.rows.push({
    what: `5. start-up, consistent channel of ${count} pkgs (spawn → listening)`,
    ours: figure(oursMs, "ms"),
    reference: figure(referenceMs, "ms"),
    ratio: times(oursMs / referenceMs),
    target: "—",
    met: undefined,
  });
  context.progress(
    `start-up ${count} pkgs: ${oursMs.toFixed(0)} ms (reference ${referenceMs.toFixed(0)} ms)`,
  );

  const rebuilds: number[] = [];
  const digests: number[] = [];
  for (let run = 0; run < plan.rebuildRuns; run++) {
    const copy = join(context.tmp, "rebuild-channel");
    await copyTree(template.root, copy);
    try {
      await Deno.remove(join(copy, "linux-64", "repodata.json"));
      const result = await runDeno(ourProgramArgs(copy, ["index", copy]), 900_000);
      if (result.code !== 0 || !new RegExp(`\\badded=${template.count}\\b`).test(result.stderr)) {
        throw new Error(`Cannot rebuild the index: ${result.stderr.slice(-2000)}`);
      }
      rebuilds.push(result.ms);
      const digest = await runDeno(
        [
          "run",
          `--allow-read=${copy}`,
          "--config",
          join(REPO_ROOT, "deno.json"),
          REFERENCE_DIGEST_TS,
          copy,
        ],
        900_000,
      );
      if (digest.code !== 0 || Number(digest.stdout.trim()) < template.count) {
        throw new Error(`Cannot digest the channel: ${digest.stderr.slice(-2000)}`);
      }
      digests.push(digest.ms);
      context.progress(
        `index rebuild ${count} pkgs run ${run + 1}/${plan.rebuildRuns}: ${
          (result.ms / 1000).toFixed(1)
        } s (reference ${(digest.ms / 1000).toFixed(1)} s)`,
      );
    } finally {
      await removeAll(copy);
    }
  }
  const rebuildMs = median(rebuilds);
  const digestMs = median(digests);
  context.rows.push({
    what: `5. full \`index\` rebuild of ${count} pkgs (repodata.json deleted)`,
    ours: figure(rebuildMs / 1000, "s"),
    reference: `${figure(digestMs / 1000, "s")} (read + hash all)`,
    ratio: times(rebuildMs / digestMs),
    target: "—",
    met: undefined,
  });
}
