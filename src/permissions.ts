/**
 * The one list of Deno permissions the server runs with. The tasks, the
 * compile script and the end-to-end tests all take it from here, so what is
 * tested is what ships.
 *
 * @module
 */

import { isAbsolute, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { BZIP2_WORKER_URL } from "./package/bzip2_worker_pool.ts";

/** Paths the server touches, to scope read, write and run permissions. */
export interface PermissionScope {
  /** The channel root (read and write). */
  channelRoot: string;
  /** The directories of the `--channel NAME=DIR` channels (read and write). */
  otherChannelRoots?: string[];
  /** Files only read: TLS certificate and key, token hash file, trusted publishers file. */
  readFiles?: string[];
  /** Extra files written (e.g. an audit log). */
  writeFiles?: string[];
  /** The conda executable run for `-e`, if any. */
  condaExe?: string;
}

/**
 * V8 settings the server runs with: a 1 MiB young generation, so the
 * short-lived buffers of a streaming upload are collected early and memory
 * stays flat (peak RSS about 110 MiB instead of 165 MiB for a 256 MiB upload,
 * at the same throughput; see docs/benchmarks.md).
 */
export const RUNTIME_FLAGS: readonly string[] = ["--v8-flags=--max-semi-space-size=1"];

/** Whether `path` is `root` or inside it (both resolved from the working directory). */
function _within(path: string, root: string): boolean {
  const rest = relative(resolve(root), resolve(path));
  return rest === "" || (!rest.startsWith("..") && !isAbsolute(rest));
}

/**
 * `deno run` flags for a server with the given scope: the
 * {@linkcode RUNTIME_FLAGS}, then the permissions: network,
 * read/write limited to the channel (and the named files), plus read of
 * the bzip2 decoder's worker module (a worker loads its module from disk),
 * environment (flags may come from `AUH_*` variables), and run only for
 * `conda`.
 *
 * @example Usage
 * ```ts
 * import { serverPermissionFlags } from "./permissions.ts";
 * console.log(serverPermissionFlags({ channelRoot: "/srv/channel" }));
 * ```
 */
export function serverPermissionFlags(scope: PermissionScope): string[] {
  const channels = [scope.channelRoot, ...(scope.otherChannelRoots ?? [])];
  const reads = [...channels, ...(scope.readFiles ?? [])];
  const worker = fileURLToPath(BZIP2_WORKER_URL);
  if (!reads.some((root) => _within(worker, root))) reads.push(worker);
  const writes = [...channels, ...(scope.writeFiles ?? [])];
  const flags = [
    ...RUNTIME_FLAGS,
    "--allow-net",
    `--allow-read=${reads.join(",")}`,
    `--allow-write=${writes.join(",")}`,
    "--allow-env",
  ];
  if (scope.condaExe !== undefined) flags.push(`--allow-run=${scope.condaExe}`);
  return flags;
}

/**
 * Permissions baked into the compiled executable. `deno compile` fixes them
 * at build time, before the channel path or the conda executable are known,
 * so read, write and run cannot be scoped to paths here: confine the
 * process with the service manager instead (systemd `ReadWritePaths=`, see
 * the README). No FFI, no `--allow-sys`, no `-A`.
 */
export const COMPILED_PERMISSION_FLAGS: readonly string[] = [
  ...RUNTIME_FLAGS,
  "--allow-net",
  "--allow-read",
  "--allow-write",
  "--allow-env",
  "--allow-run",
];
