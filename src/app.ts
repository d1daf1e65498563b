/**
 * Wires a checked configuration into a running server: storage, index,
 * upload path, TLS and the listener.
 *
 * @module
 */

import { TokenVerifier } from "./auth/token_verifier.ts";
import { ConfigError, type ServerConfig } from "./config.ts";
import type { ChannelIndexer } from "./index/channel_indexer.ts";
import { BuiltinIndex } from "./index/builtin_index.ts";
import { CondaExeIndex } from "./index/conda_exe_index.ts";
import type { Logger } from "./log.ts";
import { createHandler } from "./server.ts";
import { ChannelStorage } from "./storage/channel_storage.ts";
import { UploadService } from "./upload/upload_service.ts";

/** TLS material in PEM form, as `Deno.serve` takes it. */
export interface TlsPem {
  cert: string;
  key: string;
}

/** A running server. */
export interface RunningServer {
  /** The base URL clients use, e.g. `https://localhost:8443`. */
  url: string;
  /** The port actually bound. */
  port: number;
  /** The channel's storage. */
  storage: ChannelStorage;
  /** The channel's indexer. */
  indexer: ChannelIndexer;
  /** Settles when the server has stopped. */
  finished: Promise<void>;
  /** Stops accepting connections and waits for in-flight requests. */
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
  let storage: ChannelStorage;
  try {
    storage = await ChannelStorage.open(config.channelRoot);
  } catch (error) {
    throw new ConfigError(error instanceof Error ? error.message : String(error));
  }
  const leftovers = await storage.removeLeftoverSpoolFiles();
  if (leftovers.length > 0) {
    logger.warn("removed leftover spool files of interrupted uploads", {
      count: leftovers.length,
    });
  }
  const indexer = await openIndexer(config, storage, logger);
  const uploads = new UploadService(storage, indexer, {
    maxUploadBytes: config.maxUploadBytes,
    allowOverwrite: config.allowOverwrite,
    logger,
  });
  const verifier = new TokenVerifier(config.tokenHashes, config.salt);
  const handler = createHandler({
    storage,
    uploads,
    verifier,
    logger,
    serve: config.serve,
  });
  const server = listen(config, tls, handler);
  const port = server.addr.port;
  const scheme = tls ? "https" : "http";
  const host = config.hostname === "0.0.0.0" || config.hostname === "127.0.0.1"
    ? "localhost"
    : config.hostname.includes(":")
    ? `[${config.hostname}]`
    : config.hostname;
  logger.info("listening", {
    url: `${scheme}://${host}:${port}`,
    address: config.hostname,
    channel: config.channelRoot,
    indexer: config.condaExe ? `${config.condaExe} index` : "built-in",
    tokens: config.tokenHashes.length,
  });
  const shutdown = () => server.shutdown();
  return {
    url: `${scheme}://${host}:${port}`,
    port,
    storage,
    indexer,
    finished: server.finished,
    shutdown,
    [Symbol.asyncDispose]: shutdown,
  };
}

async function openIndexer(
  config: ServerConfig,
  storage: ChannelStorage,
  logger: Logger,
): Promise<ChannelIndexer> {
  if (config.condaExe !== undefined) {
    return new CondaExeIndex(config.condaExe, storage, { logger });
  }
  const index = await BuiltinIndex.open(storage, { logger });
  const started = performance.now();
  const report = await index.reconcile();
  logger.info("index reconciled", {
    subdirs: report.subdirs.length,
    added: report.added.length,
    removed: report.removed.length,
    failed: report.failed.length,
    unchanged: report.unchanged,
    ms: Math.round(performance.now() - started),
  });
  for (const failure of report.failed) {
    logger.warn("package left out of the index", { path: failure.path, reason: failure.reason });
  }
  return index;
}

function listen(
  config: ServerConfig,
  tls: TlsPem | undefined,
  handler: ReturnType<typeof createHandler>,
): Deno.HttpServer<Deno.NetAddr> {
  const options = {
    hostname: config.hostname,
    port: config.port,
    onListen: () => {},
    onError: () => new Response("Internal server error\n", { status: 500 }),
  };
  try {
    return tls ? Deno.serve({ ...options, ...tls }, handler) : Deno.serve(options, handler);
  } catch (error) {
    throw listenError(error, config.port);
  }
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
  if (error instanceof Deno.errors.AddrInUse) {
    return new ConfigError(`Cannot start: port ${port} is already in use`);
  }
  if (error instanceof Deno.errors.PermissionDenied) {
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
      const reason = error instanceof Deno.errors.NotFound
        ? "no such file"
        : error instanceof Deno.errors.PermissionDenied
        ? "permission denied"
        : error instanceof Error
        ? error.message
        : String(error);
      throw new ConfigError(`Cannot start: cannot read ${what} ${path}: ${reason}`);
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
