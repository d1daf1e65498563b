/**
 * The command line: the original tool's flags (`-d -p -e -c -k -t` with
 * their `--write_dir`-style long names, also spelled `--write-dir`), the
 * flags users expect of a mature server, an environment variable for every
 * flag (`AUH_<LONG_NAME>`), and the `hash-token`, `generate-token` and
 * `index` subcommands.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { DEFAULT_SALT } from "../auth/token_hash.ts";

/** A flag's description, shared by the parser, the environment and `--help`. */
interface FlagSpec {
  short?: string;
  type: "string" | "boolean";
  multiple?: boolean;
  value?: string;
  help: string;
}

/** Every server flag, by its canonical (underscore) long name. */
export const SERVER_FLAGS: Readonly<Record<string, FlagSpec>> = {
  write_dir: {
    short: "d",
    type: "string",
    value: "WRITE_DIR",
    help:
      "channel root; packages go to WRITE_DIR/<subdir>/ (a path ending in a subdir name, as the original tool used, means its parent)",
  },
  storage: {
    type: "string",
    value: "URL",
    help:
      "s3://BUCKET/PREFIX: keep the channel in S3-compatible object storage (credentials and endpoint from AWS_*); WRITE_DIR is then the replica's local work directory",
  },
  port: { short: "p", type: "string", value: "PORT", help: "port to listen on (default 8443)" },
  host: {
    type: "string",
    value: "ADDRESS",
    help: "address to bind (default 0.0.0.0; 127.0.0.1 with --dev)",
  },
  conda_exe: {
    short: "e",
    type: "string",
    value: "CONDA_EXE",
    help: "index with `CONDA_EXE index` instead of the built-in indexer",
  },
  certfile: { short: "c", type: "string", value: "CERTFILE", help: "TLS certificate (PEM)" },
  keyfile: { short: "k", type: "string", value: "KEYFILE", help: "TLS private key (PEM)" },
  token_hash: {
    short: "t",
    type: "string",
    multiple: true,
    value: "TOKEN_HASH",
    help: "hex sha256 of salt + token; repeat or comma-separate for several (rotation)",
  },
  token_hash_file: {
    type: "string",
    value: "FILE",
    help:
      "file with one token hash per line, optionally 'name=NAME channels=a,b packages=GLOB,GLOB can=upload,overwrite,delete' (# comments allowed); re-read on SIGHUP",
  },
  trusted_publishers: {
    type: "string",
    value: "FILE",
    help:
      "JSON list of CI workflows (OIDC issuer, claims, scope) that may mint upload tokens at /api/oidc/mint_token; re-read on SIGHUP",
  },
  server_name: {
    type: "string",
    value: "HOST",
    help:
      "host name clients upload to; trusted publishers accept CI tokens for this audience and prefix.dev",
  },
  salt: { type: "string", value: "SALT", help: "token salt (default: the original tool's)" },
  max_upload_size: {
    type: "string",
    value: "SIZE",
    help: "largest artifact accepted, e.g. 500M, 4G (default 4G)",
  },
  allow_overwrite: {
    type: "boolean",
    help: "let clients replace an existing package with force (default: refuse with 409)",
  },
  no_serve: {
    type: "boolean",
    help: "do not serve the channel's files (another web server serves the directory)",
  },
  channel_name: {
    type: "string",
    value: "NAME",
    help: "channel name in upload URLs such as /api/v1/upload/NAME (default: root's basename)",
  },
  channel: {
    type: "string",
    multiple: true,
    value: "NAME=DIR",
    help:
      "another channel, served at /NAME/ with its own index; repeat for several (in the variable: comma-separated)",
  },
  log_format: { type: "string", value: "text|json", help: "log line format (default text)" },
  audit_log: {
    type: "string",
    value: "FILE",
    help: "append one JSON line per publish, replace and delete to FILE",
  },
  max_concurrent_uploads: {
    type: "string",
    value: "N",
    help: "uploads processed at once; more get 503 with Retry-After (default 16)",
  },
  body_timeout: {
    type: "string",
    value: "SECONDS",
    help: "cut off an upload whose body stalls this long (default 60)",
  },
  token_timeout: {
    type: "string",
    value: "SECONDS",
    help:
      "a form upload must send its token field within this long of its start, and within its first 64 KiB (default 10)",
  },
  shutdown_timeout: {
    type: "string",
    value: "SECONDS",
    help: "on SIGTERM/SIGINT, let running uploads finish this long, then abort them (default 30)",
  },
  header_timeout: {
    type: "string",
    value: "SECONDS",
    help:
      "close a connection whose request head (TLS handshake included) takes longer (default 10)",
  },
  idle_timeout: {
    type: "string",
    value: "SECONDS",
    help: "close a keep-alive connection idle this long between requests (default 30)",
  },
  max_connections: {
    type: "string",
    value: "N",
    help: "client connections open at once; more are closed at once (default: from ulimit -n)",
  },
  max_connections_per_client: {
    type: "string",
    value: "N",
    help: "client connections open at once from one address (default 128)",
  },
  insecure_no_tls: {
    type: "boolean",
    help: "serve plain HTTP (only behind a TLS-terminating proxy)",
  },
  dev: {
    type: "boolean",
    help: "development server: ./channel, self-signed certificate, random token, loopback",
  },
  help: { short: "h", type: "boolean", help: "show this help and exit" },
  version: { type: "boolean", help: "print the version and exit" },
};

/** What the command line asks for. */
export type Command =
  | { kind: "serve"; flags: ServerFlags }
  | { kind: "hash-token"; token: string | undefined; salt: string }
  | { kind: "generate-token"; salt: string }
  | { kind: "index"; root: string; condaExe: string | undefined; storage?: string }
  | { kind: "help" }
  | { kind: "version" };

/** The server flags as parsed (strings, not yet validated). */
export interface ServerFlags {
  writeDir?: string;
  storage?: string;
  port?: string;
  host?: string;
  condaExe?: string;
  certfile?: string;
  keyfile?: string;
  tokenHashes: string[];
  tokenHashFile?: string;
  trustedPublishers?: string;
  serverName?: string;
  salt?: string;
  maxUploadSize?: string;
  allowOverwrite: boolean;
  noServe: boolean;
  channelName?: string;
  /** `--channel NAME=DIR` values, unchecked (none when absent). */
  channels?: string[];
  logFormat?: string;
  auditLog?: string;
  maxConcurrentUploads?: string;
  bodyTimeout?: string;
  tokenTimeout?: string;
  shutdownTimeout?: string;
  headerTimeout?: string;
  idleTimeout?: string;
  maxConnections?: string;
  maxConnectionsPerClient?: string;
  insecureNoTls: boolean;
  dev: boolean;
}

/** Thrown for a command line that cannot be used; main prints it as one line. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

/** Prefix of the environment variables that set flags. */
export const ENV_PREFIX = "AUH_";

/**
 * Parses the arguments (without the program name) and the environment.
 * Flags win over environment variables.
 */
export function parseCommandLine(
  args: readonly string[],
  env: Readonly<Record<string, string>> = {},
): Command {
  const [first, ...rest] = args;
  if (first === "hash-token") return parseHashToken(rest, env);
  if (first === "generate-token") return parseGenerateToken(rest, env);
  if (first === "index") return parseIndex(rest, env);
  return parseServe(args, env);
}

function parseServe(args: readonly string[], env: Readonly<Record<string, string>>): Command {
  const values = parse(args, SERVER_FLAGS, false).values;
  if (values.help) return { kind: "help" };
  if (values.version) return { kind: "version" };
  const string = (name: string): string | undefined => {
    const value = values[name] ?? env[ENV_PREFIX + name.toUpperCase()];
    return typeof value === "string" ? value : undefined;
  };
  const boolean = (name: string): boolean => {
    if (values[name] === true) return true;
    const value = env[ENV_PREFIX + name.toUpperCase()];
    return value !== undefined && /^(1|true|yes|on)$/i.test(value);
  };
  const flagHashes = values.token_hash;
  const hashSource = Array.isArray(flagHashes) && flagHashes.length > 0
    ? flagHashes.map(String)
    : [env[ENV_PREFIX + "TOKEN_HASH"] ?? ""];
  const tokenHashes = hashSource.flatMap((value) => value.split(","))
    .map((value) => value.trim()).filter((value) => value !== "");
  const flagChannels = values.channel;
  const channels = Array.isArray(flagChannels) && flagChannels.length > 0
    ? flagChannels.map(String)
    : (env[ENV_PREFIX + "CHANNEL"] ?? "").split(",").map((value) => value.trim())
      .filter((value) => value !== "");
  const flags: ServerFlags = {
    tokenHashes,
    channels,
    allowOverwrite: boolean("allow_overwrite"),
    noServe: boolean("no_serve"),
    insecureNoTls: boolean("insecure_no_tls"),
    dev: boolean("dev"),
  };
  assign(flags, "writeDir", string("write_dir"));
  assign(flags, "storage", string("storage"));
  assign(flags, "port", string("port"));
  assign(flags, "host", string("host"));
  assign(flags, "condaExe", string("conda_exe"));
  assign(flags, "certfile", string("certfile"));
  assign(flags, "keyfile", string("keyfile"));
  assign(flags, "tokenHashFile", string("token_hash_file"));
  assign(flags, "trustedPublishers", string("trusted_publishers"));
  assign(flags, "serverName", string("server_name"));
  assign(flags, "salt", string("salt"));
  assign(flags, "maxUploadSize", string("max_upload_size"));
  assign(flags, "channelName", string("channel_name"));
  assign(flags, "logFormat", string("log_format"));
  assign(flags, "auditLog", string("audit_log"));
  assign(flags, "maxConcurrentUploads", string("max_concurrent_uploads"));
  assign(flags, "bodyTimeout", string("body_timeout"));
  assign(flags, "tokenTimeout", string("token_timeout"));
  assign(flags, "shutdownTimeout", string("shutdown_timeout"));
  assign(flags, "headerTimeout", string("header_timeout"));
  assign(flags, "idleTimeout", string("idle_timeout"));
  assign(flags, "maxConnections", string("max_connections"));
  assign(flags, "maxConnectionsPerClient", string("max_connections_per_client"));
  return { kind: "serve", flags };
}

const SALT_FLAG: Record<string, FlagSpec> = {
  salt: { type: "string", value: "SALT", help: "token salt" },
  help: { short: "h", type: "boolean", help: "show help" },
};

function parseHashToken(args: readonly string[], env: Readonly<Record<string, string>>): Command {
  const { values, positionals } = parse(args, SALT_FLAG, true);
  if (values.help) return { kind: "help" };
  if (positionals.length > 1) throw new UsageError("hash-token takes at most one TOKEN");
  return {
    kind: "hash-token",
    token: positionals[0],
    salt: saltOf(values.salt, env),
  };
}

function parseGenerateToken(
  args: readonly string[],
  env: Readonly<Record<string, string>>,
): Command {
  const { values, positionals } = parse(args, SALT_FLAG, true);
  if (values.help) return { kind: "help" };
  if (positionals.length > 0) throw new UsageError("generate-token takes no arguments");
  return { kind: "generate-token", salt: saltOf(values.salt, env) };
}

function parseIndex(args: readonly string[], env: Readonly<Record<string, string>>): Command {
  const spec: Record<string, FlagSpec> = {
    conda_exe: SERVER_FLAGS.conda_exe!,
    storage: SERVER_FLAGS.storage!,
    help: SALT_FLAG.help!,
  };
  const { values, positionals } = parse(args, spec, true);
  if (values.help) return { kind: "help" };
  const root = positionals[0] ?? env[ENV_PREFIX + "WRITE_DIR"];
  if (root === undefined || positionals.length > 1) {
    throw new UsageError("index takes exactly one CHANNEL_ROOT");
  }
  const condaExe = values.conda_exe ?? env[ENV_PREFIX + "CONDA_EXE"];
  const storage = values.storage ?? env[ENV_PREFIX + "STORAGE"];
  return {
    kind: "index",
    root,
    condaExe: typeof condaExe === "string" ? condaExe : undefined,
    ...(typeof storage === "string" ? { storage } : {}),
  };
}

function saltOf(value: unknown, env: Readonly<Record<string, string>>): string {
  return typeof value === "string" ? value : env[ENV_PREFIX + "SALT"] ?? DEFAULT_SALT;
}

type ParsedValues = Record<string, string | boolean | (string | boolean)[] | undefined>;

function parse(
  args: readonly string[],
  spec: Record<string, FlagSpec>,
  allowPositionals: boolean,
): { values: ParsedValues; positionals: string[] } {
  const options: Record<
    string,
    { type: "string" | "boolean"; short?: string; multiple?: boolean }
  > = {};
  for (const [name, flag] of Object.entries(spec)) {
    options[name] = {
      type: flag.type,
      ...(flag.short ? { short: flag.short } : {}),
      ...(flag.multiple ? { multiple: true } : {}),
    };
  }
  try {
    const { values, positionals } = parseArgs({
      args: args.map((arg) => normaliseLongName(arg, spec)),
      options,
      allowPositionals,
      strict: true,
    });
    return { values: values as ParsedValues, positionals };
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    throw new UsageError(message.split("\n")[0]!.replace(/^TypeError \[\w+\]: /, ""));
  }
}

/** `--write-dir=x` becomes `--write_dir=x` when that is a known flag. */
function normaliseLongName(arg: string, spec: Record<string, FlagSpec>): string {
  if (!arg.startsWith("--")) return arg;
  const equals = arg.indexOf("=");
  const name = arg.slice(2, equals < 0 ? undefined : equals);
  const canonical = name.replaceAll("-", "_");
  if (canonical === name || !(canonical in spec)) return arg;
  return "--" + canonical + (equals < 0 ? "" : arg.slice(equals));
}

function assign<K extends keyof ServerFlags>(
  flags: ServerFlags,
  key: K,
  value: ServerFlags[K] | undefined,
): void {
  if (value !== undefined) flags[key] = value;
}

/** The `--help` text, listing every flag and its environment variable. */
export function helpText(version: string): string {
  const lines = [
    `artifact-upload-handler ${version}: a secure upload server and index for a conda channel`,
    "",
    "Usage:",
    "  artifact-upload-handler -d WRITE_DIR -p PORT -c CERTFILE -k KEYFILE -t TOKEN_HASH [options]",
    "  artifact-upload-handler --dev                       development server, no setup",
    "  artifact-upload-handler hash-token [TOKEN] [--salt SALT]   (reads TOKEN from stdin if absent)",
    "  artifact-upload-handler generate-token [--salt SALT]",
    "  artifact-upload-handler index CHANNEL_ROOT [-e CONDA_EXE | --storage s3://BUCKET/PREFIX]",
    "",
    "Options (each also from the environment variable shown):",
  ];
  for (const [name, flag] of Object.entries(SERVER_FLAGS)) {
    const short = flag.short ? `-${flag.short}, ` : "    ";
    const value = flag.value ? ` ${flag.value}` : "";
    const variable = name === "help" || name === "version"
      ? ""
      : `  [${ENV_PREFIX}${name.toUpperCase()}]`;
    lines.push(`  ${short}--${name}${value}`);
    lines.push(`        ${flag.help}${variable}`);
  }
  lines.push("", "Long names may be written with dashes too: --write-dir, --token-hash, ...");
  return lines.join("\n");
}
