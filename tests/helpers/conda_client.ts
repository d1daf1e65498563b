/**
 * A real conda client (conda 25.11.1, classic solver) and the reference
 * indexer (conda-index 0.12.1) for end-to-end tests, installed once from
 * the shared tools folder into a cache directory by the folder's own
 * `install.sh`.
 *
 * The folder is looked for at `$AUH_CONDA_CLIENT_DIR`, then
 * `../shared/tools/conda-client` beside the project, then
 * `/work/shared/tools/conda-client`; it is installed into
 * `$AUH_CONDA_CLIENT_CACHE` (default `~/.cache/artifact-upload-handler/conda-client`).
 * Where it is absent or cannot be installed, {@linkcode condaClient}
 * resolves with the reason, and the tests skip saying so.
 *
 * @module
 */

import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

/** The installed tools. */
export interface CondaClient {
  /** `conda` executable. */
  conda: string;
  /** `conda-index` executable. */
  condaIndex: string;
}

const PROJECT_ROOT = dirname(dirname(dirname(fileURLToPath(import.meta.url))));
let installed: Promise<CondaClient | string> | undefined;

function _exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

/**
 * Installs (once per process) and returns the tools, or a one-line reason
 * why they are not available.
 */
export function condaClient(): Promise<CondaClient | string> {
  installed ??= _install();
  return installed;
}

async function _install(): Promise<CondaClient | string> {
  const candidates = [
    Deno.env.get("AUH_CONDA_CLIENT_DIR"),
    join(PROJECT_ROOT, "..", "shared", "tools", "conda-client"),
    "/work/shared/tools/conda-client",
  ].filter((path): path is string => path !== undefined && path !== "");
  const folder = candidates.find((path) => _exists(join(path, "install.sh")));
  if (!folder) return `no conda-client folder (looked at ${candidates.join(", ")})`;
  const home = Deno.env.get("HOME") ?? "/tmp";
  const dest = Deno.env.get("AUH_CONDA_CLIENT_CACHE") ??
    join(home, ".cache", "artifact-upload-handler", "conda-client");
  const output = await new Deno.Command("bash", {
    args: [join(folder, "install.sh"), dest],
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(600_000),
  }).output();
  if (!output.success) {
    const tail = new TextDecoder().decode(output.stderr).trim().split("\n").slice(-2).join(" | ");
    return `cannot install the conda client from ${folder}: ${tail}`;
  }
  return { conda: join(dest, "bin", "conda"), condaIndex: join(dest, "bin", "conda-index") };
}

/** Options for {@linkcode runTool}. */
export interface RunToolOptions {
  /** Extra environment variables. */
  env?: Record<string, string>;
  /**
   * Kill the tool after this many milliseconds.
   * @default {300000}
   */
  timeoutMs?: number;
}

/** Runs a tool; throws with the tail of its stderr when it fails. Returns stdout. */
export async function runTool(
  command: string,
  args: string[],
  options: RunToolOptions = {},
): Promise<string> {
  const output = await new Deno.Command(command, {
    args,
    env: options.env ?? {},
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(options.timeoutMs ?? 300_000),
  }).output();
  const stdout = new TextDecoder().decode(output.stdout);
  if (!output.success) {
    const stderr = new TextDecoder().decode(output.stderr).trim().split("\n").slice(-8).join("\n");
    throw new Error(`Cannot run ${command} ${args.join(" ")}: ${stderr}\n${stdout.slice(-2000)}`);
  }
  return stdout;
}
