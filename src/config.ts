/**
 * Turns parsed flags into a checked server configuration. Every problem is a
 * {@linkcode ConfigError} with one clear sentence, printed by main.
 *
 * @module
 */

import { basename, dirname, resolve } from "node:path";
import { readTokenFile, type TokenEntry } from "./auth/token_file.ts";
import { DEFAULT_SALT, isTokenHash } from "./auth/token_hash.ts";
import { readTrustedPublishers, type TrustedPublisher } from "./auth/trusted_publishers.ts";
import type { ServerFlags } from "./cli/command_line.ts";
import type { LogFormat } from "./log.ts";
import { checkChannels, type NamedChannel, parseChannelFlag } from "./named_channels.ts";
import { isKnownSubdir } from "./package/platforms.ts";
import {
  parseS3Url,
  type S3Location,
  type S3Settings,
  s3SettingsFromEnv,
} from "./storage/s3_location.ts";

/** A start-up problem, reported as one line and a non-zero exit. */
export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ConfigError";
  }
}

/** Everything the server needs to start. */
export interface ServerConfig {
  /** Absolute path of the channel root (with {@linkcode objectStorage}: the replica's work directory). */
  channelRoot: string;
  /** Set with `--storage`: the channel is kept in this object store. */
  objectStorage?: ObjectStorageConfig;
  /** Set when WRITE_DIR named a subdir and its parent was taken as the root. */
  writeDirWasSubdir?: string;
  /** Name of the channel in upload URLs. */
  channelName: string;
  /** Address to bind. */
  hostname: string;
  /** Port to listen on (0: any free port). */
  port: number;
  /** `conda` executable for indexing, or undefined for the built-in index. */
  condaExe?: string;
  /** TLS certificate and key files; undefined with `insecureNoTls` or `dev`. */
  tls?: { certFile: string; keyFile: string };
  /** Token hashes from `-t`/`AUH_TOKEN_HASH`, lowercase hex; each may do everything. */
  tokenHashes: string[];
  /** The `--token_hash_file`, re-read on SIGHUP. */
  tokenHashFile?: string;
  /** The named, scoped tokens read from {@linkcode ServerConfig.tokenHashFile}. */
  tokenFileEntries: TokenEntry[];
  /** The `--trusted_publishers` file, re-read on SIGHUP. */
  trustedPublishersFile?: string;
  /** The trusted publishers read from {@linkcode ServerConfig.trustedPublishersFile}. */
  trustedPublishers: TrustedPublisher[];
  /** The host name clients upload to (`--server_name`), lowercase. */
  serverName?: string;
  /** Channels served at `/NAME/` besides the one at `/`. */
  channels: NamedChannel[];
  /** Token salt. */
  salt: string;
  /** Largest artifact accepted, in bytes. */
  maxUploadBytes: number;
  /** Whether `force` may replace a package. */
  allowOverwrite: boolean;
  /** Whether channel files are served. */
  serve: boolean;
  /** Log line format. */
  logFormat: LogFormat;
  /** Append-only audit log file, if any. */
  auditLog?: string;
  /** Uploads processed at once. */
  maxConcurrentUploads: number;
  /** Longest stall of a request body, in ms. */
  bodyIdleMs: number;
  /** Time from a form upload's start until its token field must have arrived, in ms. */
  tokenTimeoutMs: number;
  /** Form bytes that may come before the token field ends. */
  tokenBudgetBytes: number;
  /** How long running uploads may finish after SIGTERM, in ms. */
  shutdownMs: number;
  /** Longest time for a complete request head (TLS handshake included), in ms. */
  headerTimeoutMs: number;
  /** Longest idle time of a keep-alive connection between requests, in ms. */
  idleTimeoutMs: number;
  /** Most client connections open at once; undefined: derived from the open-file limit. */
  maxConnections?: number;
  /** Most client connections open at once from one address; undefined: the default. */
  maxConnectionsPerClient?: number;
  /** Plain HTTP, for use behind a TLS-terminating proxy. */
  insecureNoTls: boolean;
  /** Development mode. */
  dev: boolean;
}

/** Where the channel is kept when `--storage` names an object store. */
export interface ObjectStorageConfig {
  /** The kind of store. */
  kind: "s3";
  /** Bucket and key prefix. */
  location: S3Location;
  /** Credentials, region and endpoint from the `AWS_*` variables. */
  settings: S3Settings;
  /** `AUH_S3_REFRESH_MS`: how long a replica trusts what it looked up, in ms. */
  refreshMs?: number;
  /** `AUH_S3_ORPHAN_GRACE_S`: age at which an unrecorded package object is an orphan, in ms. */
  orphanGraceMs?: number;
  /** `AUH_S3_MULTIPART_MIB`: packages above this size go as multipart uploads, in bytes. */
  multipartThreshold?: number;
}

/**
 * Checks `--storage s3://BUCKET/PREFIX` and the `AWS_*` variables it needs;
 * throws {@linkcode ConfigError}.
 */
export function resolveObjectStorage(
  value: string,
  env: Readonly<Record<string, string>>,
): ObjectStorageConfig {
  let config: ObjectStorageConfig;
  try {
    config = { kind: "s3", location: parseS3Url(value), settings: s3SettingsFromEnv(env) };
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    throw new ConfigError(reason.replace(/^Cannot [^:]+: /, "Cannot start: "));
  }
  const tuning = (name: string, scale: number): number | undefined => {
    const raw = env[name];
    if (raw === undefined || raw === "") return undefined;
    if (!/^\d{1,9}$/.test(raw) || Number(raw) < 1) {
      throw new ConfigError(`Cannot start: ${name} must be a whole number from 1, not ${raw}`);
    }
    return Number(raw) * scale;
  };
  const refreshMs = tuning("AUH_S3_REFRESH_MS", 1);
  const orphanGraceMs = tuning("AUH_S3_ORPHAN_GRACE_S", 1000);
  const multipartThreshold = tuning("AUH_S3_MULTIPART_MIB", 1024 * 1024);
  if (refreshMs !== undefined) config.refreshMs = refreshMs;
  if (orphanGraceMs !== undefined) config.orphanGraceMs = orphanGraceMs;
  if (multipartThreshold !== undefined) config.multipartThreshold = multipartThreshold;
  return config;
}

/** Default port, the original README's example being 9999 but TLS servers usually 8443. */
export const DEFAULT_PORT = 8443;
/** Default cap on connections from one client address. */
export const DEFAULT_MAX_CONNECTIONS_PER_CLIENT = 128;
/** Default largest artifact: 4 GiB. */
export const DEFAULT_MAX_UPLOAD_BYTES = 4 * 1024 ** 3;

/** Form bytes that may come before the token field ends: 64 KiB, the multipart field limit. */
export const TOKEN_BUDGET_BYTES = 65_536;

/** Checks flags and reads the token hash file; throws {@linkcode ConfigError}. */
export async function resolveServerConfig(flags: ServerFlags): Promise<ServerConfig> {
  const dev = flags.dev;
  let objectStorage: ObjectStorageConfig | undefined;
  if (flags.storage !== undefined) {
    objectStorage = resolveObjectStorage(flags.storage, Deno.env.toObject());
    if (flags.condaExe !== undefined) {
      throw new ConfigError(
        "Cannot start: --conda_exe needs a local channel directory and cannot be used with --storage",
      );
    }
    if ((flags.channels ?? []).length > 0) {
      throw new ConfigError("Cannot start: --channel cannot be used with --storage");
    }
    if (flags.writeDir === undefined && !dev) {
      throw new ConfigError(
        "Cannot start: no work directory given (-d WRITE_DIR: the replica's spool with --storage)",
      );
    }
  }
  if (flags.writeDir === undefined && !dev) {
    throw new ConfigError("Cannot start: no channel directory given (-d WRITE_DIR)");
  }
  let channelRoot = resolve(flags.writeDir ?? "channel");
  let writeDirWasSubdir: string | undefined;
  if (objectStorage === undefined && isKnownSubdir(basename(channelRoot))) {
    writeDirWasSubdir = channelRoot;
    channelRoot = dirname(channelRoot);
  }
  const port = parsePort(flags.port ?? String(DEFAULT_PORT));
  // Every replica of an object-store channel has the same name: the prefix's last segment.
  const channelName = flags.channelName ??
    (objectStorage === undefined
      ? basename(channelRoot)
      : objectStorage.location.prefix.split("/").at(-1) || objectStorage.location.bucket);
  const channels = (flags.channels ?? []).map((value) => {
    try {
      return parseChannelFlag(value);
    } catch (error) {
      throw new ConfigError(`Cannot start: ${(error as Error).message}`);
    }
  });
  try {
    checkChannels({ name: channelName, root: channelRoot }, channels);
  } catch (error) {
    throw new ConfigError(`Cannot start: ${(error as Error).message}`);
  }
  const servedChannels = [channelName, ...channels.map((channel) => channel.name)];
  const tokenHashes = [...flags.tokenHashes];
  const tokenFileEntries = flags.tokenHashFile === undefined
    ? []
    : await startupRead(() => readTokenFileFor(flags.tokenHashFile!, servedChannels));
  const trustedPublishers = flags.trustedPublishers === undefined
    ? []
    : await startupRead(() => readTrustedPublishersFor(flags.trustedPublishers!, servedChannels));
  const serverName = flags.serverName?.trim().toLowerCase();
  if (serverName !== undefined && !/^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$/.test(serverName)) {
    throw new ConfigError(
      `Cannot start: --server_name ${JSON.stringify(serverName.slice(0, 100))} is not a host name`,
    );
  }
  const withoutAudience = trustedPublishers.find((publisher) => publisher.audiences === undefined);
  if (withoutAudience !== undefined && serverName === undefined) {
    throw new ConfigError(
      `Cannot start: trusted publisher '${withoutAudience.name}' names no audience; give --server_name (the host name clients upload to, which newer rattler-build and pixi ask their CI token for) or an "audience"`,
    );
  }
  for (const hash of tokenHashes) {
    if (!isTokenHash(hash)) {
      throw new ConfigError(
        `Cannot start: token hash ${
          JSON.stringify(hash.slice(0, 80))
        } is not 64 hex digits (make one with 'hash-token')`,
      );
    }
  }
  if (
    tokenHashes.length === 0 && tokenFileEntries.length === 0 && trustedPublishers.length === 0 &&
    !dev
  ) {
    throw new ConfigError(
      "Cannot start: no token hash given (-t TOKEN_HASH, --token_hash_file or AUH_TOKEN_HASH) and no --trusted_publishers; make a token with 'generate-token'",
    );
  }
  let tls: ServerConfig["tls"];
  if (flags.certfile !== undefined || flags.keyfile !== undefined) {
    if (flags.certfile === undefined || flags.keyfile === undefined) {
      throw new ConfigError("Cannot start: -c CERTFILE and -k KEYFILE must be given together");
    }
    tls = { certFile: flags.certfile, keyFile: flags.keyfile };
  } else if (!flags.insecureNoTls && !dev) {
    throw new ConfigError(
      "Cannot start: no TLS certificate given (-c CERTFILE -k KEYFILE); use --insecure_no_tls only behind a TLS-terminating proxy",
    );
  }
  const logFormat = flags.logFormat ?? "text";
  if (logFormat !== "text" && logFormat !== "json") {
    throw new ConfigError(`Cannot start: --log_format must be text or json, not ${logFormat}`);
  }
  const config: ServerConfig = {
    channelRoot,
    channelName,
    hostname: flags.host ?? (dev ? "127.0.0.1" : "0.0.0.0"),
    port,
    tokenHashes: tokenHashes.map((hash) => hash.toLowerCase()),
    tokenFileEntries,
    trustedPublishers,
    channels,
    salt: flags.salt ?? DEFAULT_SALT,
    maxUploadBytes: flags.maxUploadSize === undefined
      ? DEFAULT_MAX_UPLOAD_BYTES
      : parseSize(flags.maxUploadSize),
    allowOverwrite: flags.allowOverwrite,
    serve: !flags.noServe,
    logFormat,
    maxConcurrentUploads: parseCount(
      flags.maxConcurrentUploads ?? "16",
      "--max_concurrent_uploads",
    ),
    bodyIdleMs: parseSeconds(flags.bodyTimeout ?? "60", "--body_timeout") * 1000,
    tokenTimeoutMs: parseSeconds(flags.tokenTimeout ?? "10", "--token_timeout") * 1000,
    tokenBudgetBytes: TOKEN_BUDGET_BYTES,
    shutdownMs: parseSeconds(flags.shutdownTimeout ?? "30", "--shutdown_timeout") * 1000,
    headerTimeoutMs: parseSeconds(flags.headerTimeout ?? "10", "--header_timeout") * 1000,
    idleTimeoutMs: parseSeconds(flags.idleTimeout ?? "30", "--idle_timeout") * 1000,
    insecureNoTls: flags.insecureNoTls,
    dev,
  };
  if (writeDirWasSubdir !== undefined) config.writeDirWasSubdir = writeDirWasSubdir;
  if (flags.condaExe !== undefined) config.condaExe = flags.condaExe;
  if (flags.maxConnections !== undefined) {
    config.maxConnections = parseCount(flags.maxConnections, "--max_connections");
  }
  if (flags.maxConnectionsPerClient !== undefined) {
    config.maxConnectionsPerClient = parseCount(
      flags.maxConnectionsPerClient,
      "--max_connections_per_client",
    );
  }
  if (objectStorage !== undefined) config.objectStorage = objectStorage;
  if (flags.auditLog !== undefined) config.auditLog = resolve(flags.auditLog);
  if (flags.tokenHashFile !== undefined) config.tokenHashFile = resolve(flags.tokenHashFile);
  if (flags.trustedPublishers !== undefined) {
    config.trustedPublishersFile = resolve(flags.trustedPublishers);
  }
  if (serverName !== undefined) config.serverName = serverName;
  if (tls !== undefined) config.tls = tls;
  return config;
}

function parsePort(value: string): number {
  if (!/^\d{1,5}$/.test(value) || Number(value) > 65535) {
    throw new ConfigError(`Cannot start: port ${JSON.stringify(value)} is not a number 0-65535`);
  }
  return Number(value);
}

function parseCount(value: string, flag: string): number {
  if (!/^\d{1,6}$/.test(value) || Number(value) < 1) {
    throw new ConfigError(`Cannot start: ${flag} must be a whole number from 1, not ${value}`);
  }
  return Number(value);
}

function parseSeconds(value: string, flag: string): number {
  if (!/^\d+(\.\d+)?$/.test(value) || Number(value) <= 0 || Number(value) > 86400) {
    throw new ConfigError(`Cannot start: ${flag} must be seconds (0 < s <= 86400), not ${value}`);
  }
  return Number(value);
}

const SIZE_UNITS: Record<string, number> = {
  "": 1,
  K: 1024,
  M: 1024 ** 2,
  G: 1024 ** 3,
  T: 1024 ** 4,
};

/** Parses `500M`, `4G`, `1048576` (binary units, optional `iB`/`B`). */
export function parseSize(value: string): number {
  const match = /^(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?$/i.exec(value.trim());
  const unit = SIZE_UNITS[match?.[2]?.toUpperCase() ?? ""];
  if (!match || unit === undefined || Number(match[1]) <= 0) {
    throw new ConfigError(`Cannot start: size ${JSON.stringify(value)} is not like 500M or 4G`);
  }
  return Math.floor(Number(match[1]) * unit);
}

/**
 * Reads the token hash file and checks that every channel a scope names is
 * served. Used at start and on each reload; throws an `Error` naming the file.
 */
export async function readTokenFileFor(
  path: string,
  servedChannels: readonly string[],
): Promise<TokenEntry[]> {
  const entries = await readTokenFile(path);
  for (const entry of entries) {
    const unknown = entry.scope.channels?.find((channel) => !servedChannels.includes(channel));
    if (unknown !== undefined) {
      throw new Error(
        `Cannot read token hash file ${path}: token ${
          entry.name === undefined ? "" : `'${entry.name}' `
        }names channel '${unknown}', which is not served here (${servedChannels.join(", ")})`,
      );
    }
  }
  return entries;
}

/**
 * Reads the trusted publishers file and checks that every channel a scope
 * names is served. Used at start and on each reload; throws an `Error`.
 */
export async function readTrustedPublishersFor(
  path: string,
  servedChannels: readonly string[],
): Promise<TrustedPublisher[]> {
  const publishers = await readTrustedPublishers(path);
  for (const publisher of publishers) {
    const unknown = publisher.scope.channels?.find((channel) => !servedChannels.includes(channel));
    if (unknown !== undefined) {
      throw new Error(
        `Cannot read trusted publishers file ${path}: publisher '${publisher.name}' names channel '${unknown}', which is not served here (${
          servedChannels.join(", ")
        })`,
      );
    }
  }
  return publishers;
}

async function startupRead<T>(read: () => Promise<T>): Promise<T> {
  try {
    return await read();
  } catch (error) {
    throw new ConfigError(
      `Cannot start: ${(error as Error).message.replace(/^Cannot /, "cannot ")}`,
    );
  }
}
