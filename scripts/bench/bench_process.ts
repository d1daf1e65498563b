/**
 * Runs the benchmark's servers as child processes: our server
 * (`deno run <shipped permissions> main.ts ...`) and the reference server,
 * each on 127.0.0.1 over TLS, with their stderr collected as lines, their
 * start-up time and their peak resident memory (`VmHWM`).
 *
 * @module
 */

import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { serverPermissionFlags } from "../../src/permissions.ts";
import { listenArgs } from "../../tests/helpers/server_process.ts";
import { watchChild } from "./watched_child.ts";

/** The repository root. */
export const REPO_ROOT: string = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const MAIN_TS = join(REPO_ROOT, "main.ts");
const DENO_JSON = join(REPO_ROOT, "deno.json");
const REFERENCE_SERVER_TS = join(REPO_ROOT, "scripts", "bench", "reference_server.ts");

/** TLS files and the token every server of a benchmark run uses. */
export interface BenchTls {
  /** Server certificate (PEM file). */
  certFile: string;
  /** Server key (PEM file). */
  keyFile: string;
  /** CA certificate (PEM file), for curl. */
  caFile: string;
  /** CA certificate (PEM text), for fetch clients. */
  caPem: string;
}

/** A server child process that has printed its `listening` line. */
export interface BenchServer {
  /** Process id of the deno process. */
  pid: number;
  /** `https://127.0.0.1:PORT`. */
  url: string;
  /** Milliseconds from spawn to the `listening` line. */
  startMs: number;
  /** Every stderr line so far. */
  lines: string[];
  /** Peak resident set size so far (`VmHWM`), in KiB. */
  peakRssKiB(): Promise<number>;
  /** Stops the process (SIGTERM, then SIGKILL after 20 s) and waits for it. */
  stop(): Promise<void>;
}

/** Options for {@linkcode startOurServer}. */
export interface OurServerOptions {
  /** TLS files to serve with. */
  tls: BenchTls;
  /** Accepted token hash (`-t`). */
  tokenHash: string;
  /** `-e`: the conda executable. */
  condaExe?: string;
  /** Write a V8 CPU profile into this directory on exit (`--cpu-prof`). */
  cpuProfDir?: string;
  /** Longest wait for the `listening` line, in ms. @default {120000} */
  startTimeoutMs?: number;
  /**
   * Keep no per-request log lines in {@linkcode BenchServer.lines} (read
   * benchmarks make hundreds of thousands).
   * @default {false}
   */
  dropRequestLines?: boolean;
}

const REQUEST_LINE = /^\S+ INFO request /;

/** The environment of the children: ours minus `AUH_*`, no colour, no update check. */
function _childEnv(): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [key, value] of Object.entries(Deno.env.toObject())) {
    if (!key.startsWith("AUH_")) env[key] = value;
  }
  return { ...env, NO_COLOR: "1", DENO_NO_UPDATE_CHECK: "1" };
}

/**
 * Starts our server on `channelRoot` (127.0.0.1, any port, TLS) under the
 * shipped permission list, and waits for its `listening` line.
 */
export async function startOurServer(
  channelRoot: string,
  options: OurServerOptions,
): Promise<BenchServer> {
  const { tls, tokenHash } = options;
  const permissions = serverPermissionFlags({
    channelRoot,
    readFiles: [tls.certFile, tls.keyFile],
    ...(options.condaExe === undefined ? {} : { condaExe: options.condaExe }),
  });
  const profile = options.cpuProfDir === undefined
    ? []
    : ["--cpu-prof", `--cpu-prof-dir=${options.cpuProfDir}`];
  const args = [
    "run",
    ...permissions,
    ...profile,
    "--config",
    DENO_JSON,
    MAIN_TS,
    ...listenArgs(channelRoot, tls),
    "-t",
    tokenHash,
    ...(options.condaExe === undefined ? [] : ["-e", options.condaExe]),
  ];
  return await _spawnListening(
    args,
    options.startTimeoutMs ?? 120_000,
    options.dropRequestLines ? (line) => !REQUEST_LINE.test(line) : undefined,
  );
}

/** Options for {@linkcode startReferenceServer}. */
export interface ReferenceServerOptions {
  /** `hash`: stream the raw body to a file with sha256 + md5; `store`: write the form's artifact. */
  mode: "hash" | "store";
  /** TLS files to serve with. */
  tls: BenchTls;
  /** The token the `store` mode accepts. */
  token: string;
}

/** Starts the reference server writing into `dir`, and waits for it to listen. */
export async function startReferenceServer(
  dir: string,
  options: ReferenceServerOptions,
): Promise<BenchServer> {
  const { mode, tls, token } = options;
  const args = [
    "run",
    "--allow-net=127.0.0.1",
    `--allow-read=${dir},${tls.certFile},${tls.keyFile}`,
    `--allow-write=${dir}`,
    "--config",
    DENO_JSON,
    REFERENCE_SERVER_TS,
    "--mode",
    mode,
    "--dir",
    dir,
    "--cert",
    tls.certFile,
    "--key",
    tls.keyFile,
    // One argument: a random token may begin with "-", which parseArgs takes for an option.
    `--token=${token}`,
  ];
  return await _spawnListening(args, 60_000);
}

/** Result of {@linkcode runDeno}. */
export interface DenoRunResult {
  /** Exit code. */
  code: number;
  /** Wall-clock milliseconds from spawn to exit. */
  ms: number;
  /** Standard error, decoded. */
  stderr: string;
  /** Standard output, decoded. */
  stdout: string;
}

/** Runs `deno <args>` to its end (killed after `timeoutMs`) and times it. */
export async function runDeno(args: string[], timeoutMs: number): Promise<DenoRunResult> {
  const started = performance.now();
  const output = await new Deno.Command(Deno.execPath(), {
    args,
    env: _childEnv(),
    clearEnv: true,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(timeoutMs),
  }).output();
  const ms = performance.now() - started;
  const decoder = new TextDecoder();
  return {
    code: output.code,
    ms,
    stderr: decoder.decode(output.stderr),
    stdout: decoder.decode(output.stdout),
  };
}

/** `deno run` arguments for our program (`main.ts ...args`) on `channelRoot`. */
export function ourProgramArgs(channelRoot: string, args: string[]): string[] {
  return [
    "run",
    ...serverPermissionFlags({ channelRoot }),
    "--config",
    DENO_JSON,
    MAIN_TS,
    ...args,
  ];
}

/** Reads `VmHWM` (peak resident set size, KiB) of process `pid`. */
export async function readPeakRssKiB(pid: number): Promise<number> {
  const status = await Deno.readTextFile(`/proc/${pid}/status`);
  const match = /^VmHWM:\s+(\d+)\s+kB$/m.exec(status);
  if (!match) throw new Error(`Cannot read peak RSS: no VmHWM in /proc/${pid}/status`);
  return Number(match[1]);
}

async function _spawnListening(
  args: string[],
  timeoutMs: number,
  keep: (line: string) => boolean = () => true,
): Promise<BenchServer> {
  const started = performance.now();
  const child = new Deno.Command(Deno.execPath(), {
    args,
    env: _childEnv(),
    clearEnv: true,
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const lines: string[] = [];
  let onLine: ((line: string) => void) | undefined;
  const reading = (async () => {
    let pending = "";
    for await (const text of child.stderr.pipeThrough(new TextDecoderStream())) {
      pending += text;
      let newline: number;
      while ((newline = pending.indexOf("\n")) >= 0) {
        const line = pending.slice(0, newline);
        pending = pending.slice(newline + 1);
        if (!keep(line)) continue;
        lines.push(line);
        onLine?.(line);
      }
    }
    if (pending !== "") lines.push(pending);
  })().catch(() => {});
  const watched = watchChild(child);
  const status = watched.status;

  const stop = async () => {
    await watched.stop("SIGTERM", 20_000);
    await reading;
  };

  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    const line = await new Promise<string>((resolve, reject) => {
      const found = lines.find((line) => /\blistening\b/.test(line));
      if (found !== undefined) return resolve(found);
      onLine = (line) => {
        if (/\blistening\b/.test(line)) resolve(line);
      };
      timer = setTimeout(() => reject(new Error("timed out")), timeoutMs);
      status.then(() => reject(new Error("exited")));
    });
    const startMs = performance.now() - started;
    const port = /url=https:\/\/[^:\s]+:(\d+)/.exec(line)?.[1];
    if (port === undefined) throw new Error(`no port in ${JSON.stringify(line)}`);
    onLine = undefined;
    return {
      pid: child.pid,
      url: `https://127.0.0.1:${port}`,
      startMs,
      lines,
      peakRssKiB: () => readPeakRssKiB(child.pid),
      stop,
    };
  } catch (error) {
    await stop();
    throw new Error(
      `Cannot start ${args.join(" ").slice(0, 300)}: ${
        error instanceof Error ? error.message : String(error)
      }; stderr:\n${lines.slice(-20).join("\n")}`,
    );
  } finally {
    clearTimeout(timer);
  }
}
