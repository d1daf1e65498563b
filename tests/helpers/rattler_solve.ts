/**
 * Solves specs against a channel URL with `@conda-org/rattler` (the rattler
 * solver that pixi and rattler-build use, compiled to WebAssembly), the way a
 * real client would: it fetches `repodata.json` over HTTP(S) from the server.
 *
 * The solve runs in a Deno subprocess started with `--cert <caFile>`, so
 * rattler's fetches trust the test server's CA without touching the test
 * process's trust store. Run directly, this file is that subprocess: it reads
 * one JSON request from its first argument and prints the solved records as
 * one JSON line.
 *
 * @module
 */

import { fileURLToPath as fromFileUrl } from "node:url";

/** One package of a solution, as rattler reports it. */
export interface SolvedRecord {
  /** Package name. */
  name: string;
  /** Version string. */
  version: string;
  /** Build string. */
  build: string;
  /** Archive filename. */
  filename: string;
  /** Subdir the record came from. */
  subdir: string | null;
  /** URL the client would download the package from. */
  url: string;
  /** sha256 from repodata, lowercase hex. */
  sha256: string | null;
  /** md5 from repodata. */
  md5: string | null;
  /** Size from repodata, in bytes. */
  size: number | null;
  /** Run dependencies. */
  depends: string[];
}

/** Options for {@linkcode solveWithRattler}. */
export interface RattlerSolveOptions {
  /**
   * Kill the solver after this many milliseconds.
   * @default {60000}
   */
  timeoutMs?: number;
}

interface _SolveRequest {
  specs: string[];
  channels: string[];
  platforms: string[];
}

const _CONFIG = fromFileUrl(new URL("../../deno.json", import.meta.url));

/** Where a test server serves its channel: the URL and the CA that signed its certificate. */
export interface ServedChannel {
  url: string;
  caFile: string;
}

/** Solves `specs` against a test server's channel for linux-64 and noarch, as the tests do. */
export function solveFromServer(server: ServedChannel, specs: string[]): Promise<SolvedRecord[]> {
  return solveWithRattler(specs, server.url, ["linux-64", "noarch"], server.caFile);
}

/**
 * Solves `specs` against `channelUrl` for `platforms` with rattler, trusting
 * the CA in `caFile` (a PEM file; pass undefined for a plain-HTTP channel).
 * Throws with rattler's message when there is no solution or the channel
 * cannot be read.
 */
export async function solveWithRattler(
  specs: string[],
  channelUrl: string,
  platforms: string[],
  caFile: string | undefined,
  options: RattlerSolveOptions = {},
): Promise<SolvedRecord[]> {
  const request: _SolveRequest = { specs, channels: [channelUrl], platforms };
  const args = ["run", "--quiet", "--allow-net", "--allow-read", "--allow-env"];
  if (caFile !== undefined) args.push("--cert", caFile);
  args.push("--config", _CONFIG, fromFileUrl(import.meta.url), JSON.stringify(request));
  const output = await new Deno.Command(Deno.execPath(), {
    args,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(options.timeoutMs ?? 60_000),
  }).output();
  const stdout = new TextDecoder().decode(output.stdout).trim();
  const stderr = new TextDecoder().decode(output.stderr).trim();
  if (!output.success) {
    throw new Error(`Cannot solve with rattler: ${stderr.split("\n").slice(-5).join(" | ")}`);
  }
  const last = stdout.split("\n").at(-1) ?? "";
  return JSON.parse(last) as SolvedRecord[];
}

async function _main(): Promise<void> {
  const request = JSON.parse(Deno.args[0] ?? "{}") as _SolveRequest;
  // The import map of deno.json (passed with --config) resolves the package.
  const rattler = await import("@conda-org/rattler");
  const solved = await rattler.simpleSolve(
    request.specs,
    request.channels,
    request.platforms as Parameters<typeof rattler.simpleSolve>[2],
    undefined,
  );
  const records: SolvedRecord[] = solved.map((record) => ({
    name: record.packageName,
    version: record.version,
    build: record.build,
    filename: record.filename,
    subdir: record.subdir ?? null,
    url: record.url,
    sha256: record.sha256 ?? null,
    md5: record.md5 ?? null,
    size: record.size === undefined ? null : Number(record.size),
    depends: record.depends ?? [],
  }));
  console.log(JSON.stringify(records));
}

if (import.meta.main) {
  try {
    await _main();
  } catch (error) {
    console.error(error instanceof Error ? error.message : String(error));
    Deno.exit(1);
  }
}
