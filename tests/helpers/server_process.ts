/**
 * Runs the real program (`deno run <permissions> main.ts ...`) as a
 * subprocess, under exactly the permission list that ships
 * ({@linkcode serverPermissionFlags}), never `-A`: what is tested is what ships.
 *
 * @module
 */

import { basename, dirname, isAbsolute, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseCommandLine } from "../../src/cli/command_line.ts";
import { isKnownSubdir } from "../../src/package/platforms.ts";
import { hashToken } from "../../src/auth/token_hash.ts";
import { serverPermissionFlags } from "../../src/permissions.ts";
import { createSelfSignedCertificate } from "../../src/tls/self_signed_certificate.ts";

/** The repository root (absolute). */
export const REPO_ROOT: string = fileURLToPath(new URL("../../", import.meta.url));
/** The program's entry file (absolute). */
export const MAIN_TS: string = join(REPO_ROOT, "main.ts");
/** The repository's deno.json (absolute). */
export const DENO_JSON: string = join(REPO_ROOT, "deno.json");

/** Options for {@linkcode startServerProcess} and {@linkcode runProgram}. */
export interface ProgramOptions {
  /** Working directory. @default {Deno.cwd()} */
  cwd?: string;
  /**
   * Environment variables on top of the test process's own (whose `AUH_*`
   * variables are dropped so that they cannot leak into the program).
   * @default {{}}
   */
  env?: Record<string, string>;
  /**
   * `deno run` permission flags. @default {programPermissions(args, options)}:
   * the shipped list, scoped to the paths named in `args`
   */
  permissions?: string[];
  /**
   * A program that runs deno with the rest of its arguments, e.g.
   * `["prlimit", "--nofile=120:120", "--"]` for a low open-file limit.
   * @default {none: deno runs directly}
   */
  launcher?: readonly string[];
}

/** Options for {@linkcode startServerProcess}. */
export interface ServerProcessOptions extends ProgramOptions {
  /** Longest wait for the `listening` log line, in ms. @default {30000} */
  startTimeoutMs?: number;
}

/** Options for {@linkcode runProgram}. */
export interface RunProgramOptions extends ProgramOptions {
  /** Bytes written to the program's standard input. @default {no input (null)} */
  stdin?: string;
  /** Longest the program may run before it is killed and the call throws, in ms. @default {30000} */
  timeoutMs?: number;
}

/** How a finished program ended, and what it printed. */
export interface ProgramResult {
  /** Exit code. */
  code: number;
  /** Standard output, decoded. */
  stdout: string;
  /** Standard error, decoded. */
  stderr: string;
}

/** A running server process. */
export interface ServerProcess extends AsyncDisposable {
  /** Process id of the deno process running main.ts. */
  pid: number;
  /** The URL from the `listening url=...` log line. */
  url: string;
  /** Standard output lines received so far. */
  stdout: string[];
  /** Standard error lines (the log) received so far. */
  stderr: string[];
  /** Settles when the process has exited. */
  status: Promise<Deno.CommandStatus>;
  /** Peak resident set size of the process so far (`VmHWM`), in KiB. */
  rssPeakKiB(): Promise<number>;
  /** Sends a signal (no-op when the process has already exited). */
  kill(signal?: Deno.Signal): void;
  /** Resolves with the first line (received or to come) matching `pattern`. */
  waitForLine(pattern: RegExp, options?: WaitForLineOptions): Promise<string>;
}

/** Options for {@linkcode ServerProcess.waitForLine}. */
export interface WaitForLineOptions {
  /** Which stream to watch. @default {"stderr"} */
  stream?: "stdout" | "stderr";
  /** Longest wait in ms. @default {10000} */
  timeoutMs?: number;
}

/** TLS files written by {@linkcode writeTestTls}. */
export interface TestTlsFiles {
  /** Server certificate (PEM). */
  certFile: string;
  /** Server private key (PEM). */
  keyFile: string;
  /** CA certificate that signed it, for `curl --cacert`. */
  caFile: string;
}

/** Writes a fresh self-signed certificate, key and CA for localhost into `dir`. */
export async function writeTestTls(dir: string): Promise<TestTlsFiles> {
  const pem = await createSelfSignedCertificate();
  const files = {
    certFile: join(dir, "cert.pem"),
    keyFile: join(dir, "key.pem"),
    caFile: join(dir, "ca.pem"),
  };
  await Deno.writeTextFile(files.certFile, pem.cert);
  await Deno.writeTextFile(files.keyFile, pem.key, { mode: 0o600 });
  await Deno.writeTextFile(files.caFile, pem.ca);
  return files;
}

/**
 * The shipped permission flags for running the program with `args`: the
 * channel root (WRITE_DIR, or its parent when it names a subdir; the
 * `index` root), the certificate, key and token hash files (read), the
 * audit log (written), and the conda executable, as named in `args` or in
 * `AUH_*` variables of `options.env`.
 * Arguments that do not parse get the list scoped to the working directory.
 */
export function programPermissions(
  args: readonly string[],
  options: Pick<ProgramOptions, "cwd" | "env"> = {},
): string[] {
  const cwd = options.cwd ?? Deno.cwd();
  const path = (value: string) => isAbsolute(value) ? value : resolve(cwd, value);
  let channelRoot = cwd;
  const readFiles: string[] = [];
  const otherChannelRoots: string[] = [];
  const writeFiles: string[] = [];
  let condaExe: string | undefined;
  try {
    const command = parseCommandLine(args, options.env ?? {});
    if (command.kind === "serve") {
      const { flags } = command;
      if (flags.writeDir !== undefined) {
        channelRoot = path(flags.writeDir);
        if (isKnownSubdir(basename(channelRoot))) channelRoot = dirname(channelRoot);
      }
      for (
        const file of [flags.certfile, flags.keyfile, flags.tokenHashFile, flags.trustedPublishers]
      ) {
        if (file !== undefined) readFiles.push(path(file));
      }
      for (const value of flags.channels ?? []) {
        const equals = value.indexOf("=");
        if (equals > 0) otherChannelRoots.push(path(value.slice(equals + 1)));
      }
      if (flags.auditLog !== undefined) writeFiles.push(path(flags.auditLog));
      if (flags.condaExe !== undefined) condaExe = flags.condaExe;
    } else if (command.kind === "index") {
      channelRoot = path(command.root);
      condaExe = command.condaExe;
    }
  } catch {
    // a command line that does not parse: the program refuses it before touching anything
  }
  return serverPermissionFlags({
    channelRoot,
    otherChannelRoots,
    readFiles,
    writeFiles,
    ...(condaExe === undefined ? {} : { condaExe }),
  });
}

function _command(
  args: readonly string[],
  options: ProgramOptions,
  stdin: "piped" | "null",
): Deno.Command {
  const env: Record<string, string> = {};
  for (const [key, value] of Object.entries(Deno.env.toObject())) {
    if (!key.startsWith("AUH_")) env[key] = value;
  }
  Object.assign(env, { NO_COLOR: "1", DENO_NO_UPDATE_CHECK: "1" }, options.env);
  const permissions = options.permissions ?? programPermissions(args, options);
  if (permissions.some((flag) => flag === "-A" || flag === "--allow-all")) {
    throw new Error("Cannot run the program: it must not run with --allow-all");
  }
  const denoArgs = ["run", ...permissions, "--config", DENO_JSON, MAIN_TS, ...args];
  const [launcher, ...launcherArgs] = options.launcher ?? [];
  return new Deno.Command(launcher ?? Deno.execPath(), {
    args: launcher === undefined ? denoArgs : [...launcherArgs, Deno.execPath(), ...denoArgs],
    cwd: options.cwd ?? Deno.cwd(),
    env,
    clearEnv: true,
    stdin,
    stdout: "piped",
    stderr: "piped",
  });
}

/** Runs the program to its end and returns its exit code and output. */
export async function runProgram(
  args: readonly string[],
  options: RunProgramOptions = {},
): Promise<ProgramResult> {
  const child = _command(args, options, options.stdin === undefined ? "null" : "piped").spawn();
  if (options.stdin !== undefined) {
    const writer = child.stdin.getWriter();
    await writer.write(new TextEncoder().encode(options.stdin));
    await writer.close();
  }
  const timeoutMs = options.timeoutMs ?? 30_000;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timedOut = new Promise<"timeout">((done) => {
    timer = setTimeout(() => done("timeout"), timeoutMs);
  });
  const output = child.output();
  try {
    const result = await Promise.race([output, timedOut]);
    if (result === "timeout") {
      child.kill("SIGKILL");
      const late = await output;
      throw new Error(
        `Cannot run ${args.join(" ")}: still running after ${timeoutMs} ms; stderr: ${
          new TextDecoder().decode(late.stderr).slice(-2000)
        }`,
      );
    }
    const decoder = new TextDecoder();
    return {
      code: result.code,
      stdout: decoder.decode(result.stdout),
      stderr: decoder.decode(result.stderr),
    };
  } finally {
    clearTimeout(timer);
  }
}

interface _Waiter {
  pattern: RegExp;
  stream: "stdout" | "stderr";
  resolve(line: string): void;
  reject(error: Error): void;
}

/** Reads a byte stream into `lines`, calling `onLine` for each complete line. */
async function _collectLines(
  stream: ReadableStream<Uint8Array>,
  lines: string[],
  onLine: (line: string) => void,
): Promise<void> {
  let pending = "";
  for await (const text of stream.pipeThrough(new TextDecoderStream())) {
    pending += text;
    let newline: number;
    while ((newline = pending.indexOf("\n")) >= 0) {
      const line = pending.slice(0, newline).replace(/\r$/, "");
      pending = pending.slice(newline + 1);
      lines.push(line);
      onLine(line);
    }
  }
  if (pending !== "") {
    lines.push(pending);
    onLine(pending);
  }
}

/** The URL of a `listening` log line (text or JSON format), or undefined. */
export function listeningUrl(line: string): string | undefined {
  if (line.startsWith("{")) {
    try {
      const record = JSON.parse(line) as { msg?: unknown; url?: unknown };
      return record.msg === "listening" && typeof record.url === "string" ? record.url : undefined;
    } catch {
      return undefined;
    }
  }
  const match = /\bINFO listening\b.*?\burl=("(?:[^"\\]|\\.)*"|\S+)/.exec(line);
  if (!match) return undefined;
  const value = match[1]!;
  return value.startsWith('"') ? JSON.parse(value) as string : value;
}

/**
 * Starts the server (`main.ts ...args`) and waits for its `listening` log
 * line. Throws, with the program's stderr, when it exits or does not listen
 * within the start timeout. Use with `await using`.
 */
export async function startServerProcess(
  args: readonly string[],
  options: ServerProcessOptions = {},
): Promise<ServerProcess> {
  const child = _command(args, options, "null").spawn();
  const stdout: string[] = [];
  const stderr: string[] = [];
  const waiters = new Set<_Waiter>();
  let ended = false;
  const notify = (stream: "stdout" | "stderr") => (line: string) => {
    for (const waiter of waiters) {
      if (waiter.stream === stream && waiter.pattern.test(line)) {
        waiters.delete(waiter);
        waiter.resolve(line);
      }
    }
  };
  const reading = Promise.all([
    _collectLines(child.stdout, stdout, notify("stdout")),
    _collectLines(child.stderr, stderr, notify("stderr")),
  ]).catch(() => {});
  const status = child.status;
  let exited = false;
  const done = (async () => {
    await status;
    exited = true;
    await reading;
    ended = true;
    for (const waiter of waiters) {
      waiter.reject(
        new Error(
          `Cannot find a line matching ${waiter.pattern} in ${waiter.stream}: the server exited; stderr:\n${
            stderr.join("\n").slice(-4000)
          }`,
        ),
      );
    }
    waiters.clear();
  })();

  const waitForLine = (pattern: RegExp, wait: WaitForLineOptions = {}): Promise<string> => {
    const stream = wait.stream ?? "stderr";
    const found = (stream === "stdout" ? stdout : stderr).find((line) => pattern.test(line));
    if (found !== undefined) return Promise.resolve(found);
    if (ended) {
      return Promise.reject(
        new Error(`Cannot find a line matching ${pattern} in ${stream}: the server exited`),
      );
    }
    const timeoutMs = wait.timeoutMs ?? 10_000;
    return new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => {
        waiters.delete(waiter);
        reject(
          new Error(
            `Cannot find a line matching ${pattern} in ${stream} within ${timeoutMs} ms; stderr:\n${
              stderr.join("\n").slice(-4000)
            }`,
          ),
        );
      }, timeoutMs);
      const waiter: _Waiter = {
        pattern,
        stream,
        resolve: (line) => {
          clearTimeout(timer);
          resolve(line);
        },
        reject: (error) => {
          clearTimeout(timer);
          reject(error);
        },
      };
      waiters.add(waiter);
    });
  };

  const kill = (signal: Deno.Signal = "SIGTERM") => {
    if (exited) return;
    try {
      child.kill(signal);
    } catch (error) {
      if (!(error instanceof TypeError)) throw error; // TypeError: the child already exited
    }
  };

  const dispose = async () => {
    kill("SIGTERM");
    let timer: ReturnType<typeof setTimeout> | undefined;
    const killed = await Promise.race([
      status.then(() => false),
      new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(true), 10_000);
      }),
    ]);
    clearTimeout(timer);
    if (killed) kill("SIGKILL");
    await done;
  };

  let url: string;
  try {
    const line = await waitForLine(/\blistening\b/, {
      timeoutMs: options.startTimeoutMs ?? 30_000,
    });
    const parsed = listeningUrl(line);
    if (parsed === undefined) throw new Error(`Cannot parse the listening line: ${line}`);
    url = parsed;
  } catch (error) {
    await dispose();
    throw error;
  }

  return {
    pid: child.pid,
    url,
    stdout,
    stderr,
    status,
    kill,
    waitForLine,
    rssPeakKiB: () => readPeakRssKiB(child.pid),
    [Symbol.asyncDispose]: dispose,
  };
}

/** Reads `VmHWM` (peak resident set size, KiB) of process `pid` from /proc. */
export async function readPeakRssKiB(pid: number): Promise<number> {
  const status = await Deno.readTextFile(`/proc/${pid}/status`);
  const match = /^VmHWM:\s+(\d+)\s+kB$/m.exec(status);
  if (!match) throw new Error(`Cannot read peak RSS: no VmHWM in /proc/${pid}/status`);
  return Number(match[1]);
}

/** A port that was free a moment ago (for tests that must name a port, like the seed README). */
export function freePort(hostname = "0.0.0.0"): number {
  const listener = Deno.listen({ hostname, port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

/** Options for {@linkcode curlUpload}. */
export interface CurlUploadOptions {
  /** CA certificate to trust (`--cacert`); none for plain HTTP. */
  caFile?: string;
  /** Longest the upload may take, in seconds (`--max-time`). @default {60} */
  maxTimeSeconds?: number;
}

/** What {@linkcode curlUpload} got back. */
export interface CurlResult {
  /** HTTP status. */
  status: number;
  /** Response body. */
  body: string;
}

/**
 * Uploads `file` with real curl as the original tool's clients do:
 * `curl -F token=TOKEN -F artifact=@FILE URL/`.
 */
export async function curlUpload(
  url: string,
  upload: { token: string; file: string },
  options: CurlUploadOptions = {},
): Promise<CurlResult> {
  const args = [
    "--silent",
    "--show-error",
    "--max-time",
    String(options.maxTimeSeconds ?? 60),
    ...(options.caFile === undefined ? [] : ["--cacert", options.caFile]),
    "--output",
    "-",
    "--write-out",
    "\n%{http_code}",
    "-F",
    `token=${upload.token}`,
    "-F",
    `artifact=@${upload.file}`,
    new URL("/", url).href,
  ];
  const output = await new Deno.Command("curl", { args, stdin: "null" }).output();
  const text = new TextDecoder().decode(output.stdout);
  if (!output.success) {
    throw new Error(
      `Cannot upload with curl: exit ${output.code}: ${new TextDecoder().decode(output.stderr)}`,
    );
  }
  const newline = text.lastIndexOf("\n");
  return { status: Number(text.slice(newline + 1)), body: text.slice(0, newline) };
}

/**
 * The command line of a test server without any token: the channel (or
 * work directory), any free port on `host` and the TLS files. Callers add
 * how clients are authorised (`-t`, `--token_hash_file`, ...).
 */
export function listenArgs(
  channel: string,
  tls: { certFile: string; keyFile: string },
  host = "127.0.0.1",
): string[] {
  return ["-d", channel, "-p", "0", "--host", host, "-c", tls.certFile, "-k", tls.keyFile];
}

/**
 * The usual command line of a test server: {@linkcode listenArgs} and one
 * token (given as its hash, as in production).
 */
export async function serverArgs(
  channel: string,
  tls: { certFile: string; keyFile: string },
  token: string,
  host = "127.0.0.1",
): Promise<string[]> {
  return [...listenArgs(channel, tls, host), "-t", await hashToken(token)];
}
