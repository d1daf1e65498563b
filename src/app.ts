/**
 * Wires a checked configuration into a running server: storage, index,
 * upload path, TLS and the listener.
 *
 * @module
 */

import { TokenMinter } from "./auth/token_minter.ts";
import { identityFields } from "./auth/token_scope.ts";
import { TokenVerifier } from "./auth/token_verifier.ts";
import {
  ConfigError,
  DEFAULT_MAX_CONNECTIONS_PER_CLIENT,
  readTokenFileFor,
  readTrustedPublishersFor,
  type ServerConfig,
} from "./config.ts";
import {
  countFreeFileDescriptors,
  defaultMaxConnections,
  FREE_DESCRIPTORS_ENOUGH,
} from "./http/connection_limits.ts";
import type { ChannelIndexer } from "./index/channel_indexer.ts";
import type { Logger } from "./log.ts";
import { Listener, type TlsPem } from "./listener.ts";
import { AuditLog } from "./observability/audit_log.ts";
import { Metrics } from "./observability/metrics.ts";
import { createHandler } from "./server.ts";
import { AuthThrottle } from "./auth/auth_throttle.ts";
import { PreAuthPool } from "./upload/pre_auth_pool.ts";
import { UploadGate } from "./upload/upload_gate.ts";
import type { ChannelStore } from "./storage/channel_store.ts";
import { type OpenChannel, openChannel } from "./open_channel.ts";
import { type UploadEvents, UploadService } from "./upload/upload_service.ts";
import { fileReadReason } from "./file_read_reason.ts";

export type { TlsPem } from "./listener.ts";

/** A running server. */
export interface RunningServer {
  /** The base URL clients use, e.g. `https://localhost:8443`. */
  url: string;
  /** The port actually bound. */
  port: number;
  /** The channel's storage. */
  storage: ChannelStore;
  /** The channel's indexer. */
  indexer: ChannelIndexer;
  /** What `/metrics` reports. */
  metrics: Metrics;
  /** Re-reads the certificate and key files and serves new connections with them. */
  reloadTls(): Promise<void>;
  /**
   * Re-reads the token hash file and the trusted publishers file; a file
   * that cannot be read or used keeps the current one in force.
   */
  reloadCredentials(): Promise<void>;
  /** What SIGHUP does: {@linkcode RunningServer.reloadTls} and {@linkcode RunningServer.reloadCredentials}. */
  reload(): Promise<void>;
  /** The accepted tokens (static and from the token hash file). */
  verifier: TokenVerifier;
  /** Trusted publishing: verifies CI tokens and mints upload tokens. */
  minter: TokenMinter;
  /** Settles when the server has stopped. */
  finished: Promise<void>;
  /**
   * Stops accepting connections and uploads, lets running uploads finish
   * within the configured deadline, then aborts the rest (their spool files
   * are removed).
   */
  shutdown(): Promise<void>;
  /** Same as {@linkcode RunningServer.shutdown}, for `await using`. */
  [Symbol.asyncDispose](): Promise<void>;
}

/** Options for {@linkcode startApplication}. */
export interface StartOptions {
  /** Where log lines go. */
  logger: Logger;
  /** TLS material to use instead of reading `config.tls` files (dev mode, tests). */
  tls?: TlsPem;
  /**
   * How often the certificate and key files are checked for a change.
   * @default {30000}
   */
  tlsPollMs?: number;
}

/**
 * Opens the channel, brings its index in line with the files present,
 * and starts listening. Throws {@linkcode ConfigError} for start-up problems.
 */
export async function startApplication(
  config: ServerConfig,
  options: StartOptions,
): Promise<RunningServer> {
  const { logger } = options;
  if (config.writeDirWasSubdir !== undefined) {
    logger.info("WRITE_DIR names a subdir; using its parent as the channel root", {
      write_dir: config.writeDirWasSubdir,
      channel: config.channelRoot,
    });
  }
  const tls = options.tls ?? (config.tls ? await readTls(config.tls) : undefined);
  checkPortFree(config);
  if (!tls) {
    logger.warn(
      "INSECURE: serving plain HTTP (--insecure_no_tls); tokens cross the network in clear text unless a TLS proxy is in front",
    );
  }
  const openOptions = {
    logger,
    ...(config.condaExe === undefined ? {} : { condaExe: config.condaExe }),
    ...(config.objectStorage === undefined ? {} : { objectStorage: config.objectStorage }),
  };
  const main = await openChannel(
    { name: config.channelName, root: config.channelRoot },
    openOptions,
  );
  const { storage, indexer } = main;
  const named: OpenChannel[] = [];
  try {
    for (const channel of config.channels) named.push(await openChannel(channel, openOptions));
  } catch (error) {
    for (const channel of [{ storage }, ...named]) channel.storage.close();
    throw error;
  }
  const auditLog = config.auditLog === undefined ? undefined : new AuditLog(config.auditLog);
  try {
    await auditLog?.check();
  } catch (error) {
    throw new ConfigError(
      `Cannot start: cannot append to audit log ${config.auditLog}: ${
        error instanceof Error ? error.message : String(error)
      }`,
    );
  }
  const metrics = new Metrics();
  const several = named.length > 0;
  const channelNames = named.map((channel) => channel.name.toLowerCase());
  const uploadService = (channel: OpenChannel) =>
    new UploadService(channel.storage, channel.indexer, {
      maxUploadBytes: config.maxUploadBytes,
      allowOverwrite: config.allowOverwrite,
      logger,
      events: uploadEvents(metrics, auditLog, several ? channel.name : undefined),
      ...(several ? { channel: channel.name } : {}),
      ...(channel.storage === storage ? { shadowedSubdirs: channelNames } : {}),
    });
  const uploads = uploadService(main);
  const namedChannels = named.map((channel) => ({
    name: channel.name,
    storage: channel.storage,
    uploads: uploadService(channel),
  }));
  const gate = new UploadGate(config.maxConcurrentUploads);
  const throttle = new AuthThrottle();
  const preAuth = new PreAuthPool({
    budgetMs: config.tokenTimeoutMs,
    budgetBytes: config.tokenBudgetBytes,
  });
  const verifier = new TokenVerifier(
    [...config.tokenHashes, ...config.tokenFileEntries],
    config.salt,
  );
  const minter = new TokenMinter(
    config.trustedPublishers,
    config.serverName === undefined ? {} : { serverName: config.serverName },
  );
  const handler = createHandler({
    storage,
    uploads,
    verifier,
    logger,
    serve: config.serve,
    // Packages that may be replaced must not be cached as immutable.
    serveOptions: { mutablePackages: config.allowOverwrite },
    channelName: config.channelName,
    channels: namedChannels,
    minter,
    gate,
    throttle,
    preAuth,
    metrics,
    bodyIdleMs: config.bodyIdleMs,
  });
  const maxConnections = config.maxConnections ??
    defaultMaxConnections(countFreeFileDescriptors(storage.root, FREE_DESCRIPTORS_ENOUGH));
  let listener: Listener;
  try {
    listener = Listener.start({
      hostname: config.hostname,
      port: config.port,
      tls,
      handler,
      logger,
      connections: {
        headerTimeoutMs: config.headerTimeoutMs,
        idleTimeoutMs: config.idleTimeoutMs,
        maxConnections,
        maxConnectionsPerClient: config.maxConnectionsPerClient ??
          Math.min(DEFAULT_MAX_CONNECTIONS_PER_CLIENT, maxConnections),
      },
    });
  } catch (error) {
    throw listenError(error, config.port);
  }
  const port = listener.port;
  const scheme = tls ? "https" : "http";
  const host = config.hostname === "0.0.0.0" || config.hostname === "127.0.0.1"
    ? "localhost"
    : config.hostname.includes(":")
    ? `[${config.hostname}]`
    : config.hostname;
  const url = `${scheme}://${host}:${port}`;
  logger.info("listening", {
    url,
    address: config.hostname,
    channel: storage.root,
    work_dir: config.objectStorage === undefined ? undefined : config.channelRoot,
    indexer: config.condaExe ? `${config.condaExe} index` : "built-in",
    channels: several
      ? named.map((channel) => `${channel.name}=${channel.storage.root}`).join(",")
      : undefined,
    tokens: verifier.size,
    trusted_publishers: minter.size > 0 ? minter.size : undefined,
    max_connections: maxConnections,
  });
  const reloadTls = async () => {
    if (!config.tls || options.tls) return;
    try {
      await listener.reloadTls(await readTls(config.tls));
      logger.info("TLS certificate reloaded", { cert: config.tls.certFile });
    } catch (error) {
      logger.error("TLS certificate reload failed; keeping the current one", {
        reason: error instanceof Error ? error.message : String(error),
      });
    }
  };
  const servedChannels = [config.channelName, ...config.channels.map((channel) => channel.name)];
  const reloadCredentials = async () => {
    if (config.tokenHashFile !== undefined) {
      try {
        const entries = await readTokenFileFor(config.tokenHashFile, servedChannels);
        verifier.replace([...config.tokenHashes, ...entries]);
        logger.info("token hash file reloaded", {
          file: config.tokenHashFile,
          tokens: verifier.size,
        });
      } catch (error) {
        logger.error("token hash file reload failed; keeping the current tokens", {
          reason: error instanceof Error ? error.message : String(error),
        });
      }
    }
    if (config.trustedPublishersFile !== undefined) {
      try {
        const publishers = await readTrustedPublishersFor(
          config.trustedPublishersFile,
          servedChannels,
        );
        if (
          config.serverName === undefined && publishers.some((publisher) => !publisher.audiences)
        ) {
          throw new Error("a publisher names no audience and --server_name is not given");
        }
        minter.replace(publishers);
        logger.info("trusted publishers reloaded", {
          file: config.trustedPublishersFile,
          publishers: minter.size,
        });
      } catch (error) {
        logger.error("trusted publishers reload failed; keeping the current ones", {
          reason: error instanceof Error ? error.message : String(error),
        });
      }
    }
  };
  const stopWatching = config.tls && !options.tls
    ? watchFiles([config.tls.certFile, config.tls.keyFile], options.tlsPollMs ?? 30_000, reloadTls)
    : () => {};
  let stopped: Promise<void> | undefined;
  const shutdown = () => {
    stopped ??= (async () => {
      stopWatching();
      gate.close();
      preAuth.close();
      throttle.close();
      const deadline = setTimeout(() => {
        if (gate.inFlight > 0) {
          logger.warn("shutdown deadline passed; aborting running uploads", {
            uploads: gate.inFlight,
          });
        }
        gate.abortRunning();
      }, config.shutdownMs);
      try {
        // After the deadline the running uploads are aborted and answer 503; what is
        // still open a moment later (a client that does not read its answer) is closed.
        await listener.shutdown(config.shutdownMs + SHUTDOWN_GRACE_MS);
      } finally {
        clearTimeout(deadline);
        // What the indexers write behind, unless another process holds the
        // channel's lock past the grace (the next start catches up).
        const channels = [main, ...named];
        for (const channel of channels) channel.stopSweeping();
        const closed = Promise.all(
          channels.map((channel) => channel.indexer.close().catch(() => {})),
        );
        let grace: ReturnType<typeof setTimeout> | undefined;
        await Promise.race([
          closed,
          new Promise((resolve) => grace = setTimeout(resolve, SHUTDOWN_GRACE_MS)),
        ]);
        clearTimeout(grace);
        const all = [storage, ...named.map((channel) => channel.storage)];
        await Promise.all(all.map((each) => each.settle().catch(() => {})));
        for (const each of all) each.close();
      }
    })();
    return stopped;
  };
  return {
    url,
    port,
    storage,
    indexer,
    metrics,
    // Once the whole shutdown is done, index and storage closed included.
    finished: listener.finished.then(() => stopped),
    shutdown,
    reloadTls,
    reloadCredentials,
    reload: async () => {
      await reloadTls();
      await reloadCredentials();
    },
    verifier,
    minter,
    [Symbol.asyncDispose]: shutdown,
  };
}

/** How long after the shutdown deadline connections may still take to answer and close. */
const SHUTDOWN_GRACE_MS = 2_000;

/** Feeds one channel's upload events to the metrics and the audit log. */
function uploadEvents(
  metrics: Metrics,
  auditLog: AuditLog | undefined,
  channel: string | undefined,
): UploadEvents {
  const where = channel === undefined ? {} : { channel };
  return {
    indexed: (seconds) => metrics.indexDuration.observe(seconds),
    published: (stored, identity) => {
      metrics.countPublished(identity.name);
      return auditLog?.record({
        action: stored.replaced ? "replace" : "publish",
        ...where,
        subdir: stored.subdir,
        filename: stored.filename,
        ...identityFields(identity) as { by: string },
        size: stored.size,
        sha256: stored.sha256,
      });
    },
    deleted: (subdir, filename, identity) =>
      auditLog?.record({
        action: "delete",
        ...where,
        subdir,
        filename,
        ...identityFields(identity) as { by: string },
      }),
  };
}

/** Calls `onChange` when any file's size or mtime changes; returns the stop function. */
function watchFiles(paths: string[], intervalMs: number, onChange: () => Promise<void>) {
  const signature = async () => {
    const parts = await Promise.all(paths.map(async (path) => {
      const info = await Deno.stat(path).catch(() => undefined);
      return `${info?.size}:${info?.mtime?.getTime()}`;
    }));
    return parts.join("|");
  };
  let last: string | undefined;
  let busy = false;
  signature().then((value) => last ??= value);
  const timer = setInterval(async () => {
    if (busy) return;
    busy = true;
    try {
      const current = await signature();
      if (last !== undefined && current !== last) await onChange();
      last = current;
    } finally {
      busy = false;
    }
  }, intervalMs);
  return () => clearInterval(timer);
}

/**
 * Fails fast when the port is taken, before the (possibly long) start-up
 * reconcile; the real listener binds right after it.
 */
function checkPortFree(config: ServerConfig): void {
  if (config.port === 0) return;
  let probe: Deno.Listener | undefined;
  try {
    probe = Deno.listen({ hostname: config.hostname, port: config.port });
  } catch (error) {
    throw listenError(error, config.port);
  } finally {
    probe?.close();
  }
}

function listenError(error: unknown, port: number): ConfigError {
  const code = (error as { code?: unknown } | undefined)?.code;
  if (error instanceof Deno.errors.AddrInUse || code === "EADDRINUSE") {
    return new ConfigError(`Cannot start: port ${port} is already in use`);
  }
  if (error instanceof Deno.errors.PermissionDenied || code === "EACCES") {
    return new ConfigError(`Cannot start: not allowed to listen on port ${port}`);
  }
  return new ConfigError(
    `Cannot start: ${error instanceof Error ? error.message.split("\n")[0] : String(error)}`,
  );
}

async function readTls(files: { certFile: string; keyFile: string }): Promise<TlsPem> {
  const read = async (path: string, what: string) => {
    try {
      return await Deno.readTextFile(path);
    } catch (error) {
      throw new ConfigError(`Cannot start: cannot read ${what} ${path}: ${fileReadReason(error)}`);
    }
  };
  const cert = await read(files.certFile, "certificate");
  const key = await read(files.keyFile, "key");
  if (!cert.includes("-----BEGIN CERTIFICATE-----")) {
    throw new ConfigError(`Cannot start: ${files.certFile} is not a PEM certificate`);
  }
  if (!/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(key)) {
    throw new ConfigError(`Cannot start: ${files.keyFile} is not a PEM private key`);
  }
  return { cert, key };
}
