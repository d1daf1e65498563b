/**
 * Builds the single executable with `deno compile`, one per target, named
 * `dist/artifact-upload-handler-<target>`, with the shipped permissions.
 *
 *   deno task compile                    every target (needs the denort runtimes)
 *   deno task compile --target <triple>  one target
 *   deno task compile --smoke-test       host target, then run --version and one upload
 *
 * `deno compile` downloads a `denort` runtime per target. Where that is not
 * possible (offline machines), set `DENORT_BIN` to a local denort binary for
 * the host target; without it the script says so in one sentence and, with
 * `--smoke-test`, skips (exit 0) so CI states plainly what it did not do.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { COMPILED_PERMISSION_FLAGS } from "../src/permissions.ts";
import { BZIP2_WORKER_URL } from "../src/package/bzip2_worker_pool.ts";

/** The targets of a release. */
export const TARGETS = [
  "x86_64-unknown-linux-gnu",
  "aarch64-unknown-linux-gnu",
  "x86_64-apple-darwin",
  "aarch64-apple-darwin",
  "x86_64-pc-windows-msvc",
] as const;

const root = dirname(dirname(fileURLToPath(import.meta.url)));

function hostTarget(): string {
  const arch = Deno.build.arch;
  switch (Deno.build.os) {
    case "linux":
      return `${arch}-unknown-linux-gnu`;
    case "darwin":
      return `${arch}-apple-darwin`;
    case "windows":
      return `${arch}-pc-windows-msvc`;
    default:
      return `${arch}-${Deno.build.os}`;
  }
}

function outputPath(target: string): string {
  const name = `artifact-upload-handler-${target}${target.includes("windows") ? ".exe" : ""}`;
  return join(root, "dist", name);
}

async function compile(target: string): Promise<{ ok: boolean; stderr: string }> {
  const args = [
    "compile",
    "--no-check",
    ...COMPILED_PERMISSION_FLAGS,
    "--config",
    join(root, "deno.json"),
    // a worker's module is not part of the static import graph
    "--include",
    fileURLToPath(BZIP2_WORKER_URL),
    "--target",
    target,
    "--output",
    outputPath(target),
    join(root, "main.ts"),
  ];
  const output = await new Deno.Command(Deno.execPath(), {
    args,
    stdout: "inherit",
    stderr: "piped",
    signal: AbortSignal.timeout(10 * 60_000),
  }).output();
  const stderr = new TextDecoder().decode(output.stderr);
  if (!output.success) console.error(stderr.trim().split("\n").slice(0, 6).join("\n"));
  return { ok: output.success, stderr };
}

async function smokeTest(binary: string): Promise<void> {
  const version = await new Deno.Command(binary, { args: ["--version"] }).output();
  const text = new TextDecoder().decode(version.stdout);
  if (!version.success || !text.includes("artifact-upload-handler")) {
    throw new Error(
      `Cannot smoke-test ${binary}: --version printed ${JSON.stringify(text.slice(0, 80))}`,
    );
  }
  console.log(`compiled binary: ${text.trim()}`);
  const { smokeUpload } = await import("./smoke_upload.ts");
  await smokeUpload(binary);
  console.log("compiled binary: one upload accepted and indexed");
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: { target: { type: "string" }, "smoke-test": { type: "boolean" } },
  });
  const smoke = values["smoke-test"] === true;
  const denort = Deno.env.get("DENORT_BIN");
  if (smoke && !denort) {
    console.log(
      "compile: SKIPPED - no denort runtime here (set DENORT_BIN to a denort binary for " +
        `${hostTarget()} to build and smoke-test the single executable)`,
    );
    Deno.exit(0);
  }
  const targets = smoke || denort
    ? [values.target ?? hostTarget()]
    : values.target
    ? [values.target]
    : [...TARGETS];
  await Deno.mkdir(join(root, "dist"), { recursive: true });
  for (const target of targets) {
    const { ok, stderr } = await compile(target);
    if (!ok) {
      const offline = /dl\.deno\.land|denort|download/i.test(stderr);
      console.error(
        offline
          ? `compile: cannot build ${target}: deno compile could not get the denort runtime; set DENORT_BIN to a local denort binary for that target`
          : `compile: cannot build ${target}`,
      );
      Deno.exit(1);
    }
    console.log(`compile: built ${outputPath(target)}`);
  }
  if (smoke) {
    try {
      await smokeTest(outputPath(targets[0]!));
    } catch (error) {
      console.error(`compile: ${error instanceof Error ? error.message : String(error)}`);
      Deno.exit(1);
    }
  }
}
