/**
 * The HTTP handler: hands writes to the front door and reads to channel
 * serving, turns thrown errors into responses in one place, and logs one
 * line per request.
 *
 * | Method | Path | Route |
 * |---|---|---|
 * | POST, PUT, DELETE | see `upload/write_routes.ts` | uploads and deletes (any channel) |
 * | POST | `/api/oidc/mint_token` | trusted publishing: an upload token for a CI ID token |
 * | GET | `/health`, `/metrics` | readiness (JSON), Prometheus metrics |
 * | GET, HEAD | `/NAME/...` | the files of the `--channel NAME=DIR` channel |
 * | GET, HEAD | anything else | the files of the channel at `/` |
 *
 * Write requests go through the front door (`upload/front_door.ts`, one
 * route table in `upload/write_routes.ts`): authenticated before an upload
 * slot is taken (401, 429 from the failed-token throttle), held to the
 * token's scope (403 before any byte is kept), then the
 * concurrent upload cap (503); their body is cut off when it stalls (408) or
 * when a shutdown's deadline passes (503).
 *
 * Every path may start with `/t/<token>/` (a conda token in the path, also
 * as `//t/`, `%2Ft%2F`, ...); it is taken out before routing, used as the
 * token when no header carries one, and written to the log as
 * `/t/<redacted>/`.
 *
 * @module
 */

import { basename } from "node:path";
import type { AuthThrottle } from "./auth/auth_throttle.ts";
import { Authenticator } from "./auth/authenticator.ts";
import { handleMintToken } from "./auth/mint_token_handler.ts";
import { MINT_TOKEN_PATH } from "./auth/mint_token_request.ts";
import type { TokenMinter } from "./auth/token_minter.ts";
import { redactPathToken, splitPathToken } from "./auth/path_token.ts";
import type { TokenVerifier } from "./auth/token_verifier.ts";
import { errorResponse, HttpError, httpErrorOf } from "./http/http_error.ts";
import { STATUS } from "./http/status.ts";
import type { Logger } from "./log.ts";
import { healthResponse } from "./observability/health.ts";
import type { Metrics } from "./observability/metrics.ts";
import { serveChannel, type ServeChannelOptions } from "./serve/serve_channel.ts";
import type { ChannelStore } from "./storage/channel_store.ts";
import { type FrontDoorContext, handleWrite } from "./upload/front_door.ts";
import { PreAuthPool } from "./upload/pre_auth_pool.ts";
import type { UploadGate } from "./upload/upload_gate.ts";
import { type ServedChannel, ServedChannels } from "./upload/served_channels.ts";
import type { UploadService } from "./upload/upload_service.ts";
import { writeMethods } from "./upload/write_routes.ts";

/** What the handler needs. */
export interface HandlerContext {
  /** The channel's storage. */
  storage: ChannelStore;
  /** The shared upload path. */
  uploads: UploadService;
  /** Checks tokens. */
  verifier: TokenVerifier;
  /** Request and error lines go here. */
  logger: Logger;
  /** Whether channel files are served (GET/HEAD). */
  serve: boolean;
  /** Options for channel serving. */
  serveOptions?: ServeChannelOptions;
  /**
   * The channel's name in upload URLs (`/api/v1/upload/<name>`, ...).
   * @default {basename(storage.root)}
   */
  channelName?: string;
  /** The `--channel NAME=DIR` channels, served at `/NAME/`. */
  channels?: readonly ServedChannel[];
  /** Trusted publishing (`POST /api/oidc/mint_token`); without it that path is a 404. */
  minter?: TokenMinter;
  /** Admission and shutdown drain of write requests. */
  gate: UploadGate;
  /** Failed-token slow-down per client address. */
  throttle: AuthThrottle;
  /**
   * Where form uploads wait for their token field.
   * @default {new PreAuthPool()}
   */
  preAuth?: PreAuthPool;
  /** What `/metrics` reports. */
  metrics: Metrics;
  /** Longest wait for the next chunk of a request body, in ms. */
  bodyIdleMs: number;
}

const WRITE_METHODS: ReadonlySet<string> = new Set(["POST", "PUT", "DELETE"]);

/** A request handler as `Deno.serve` takes it. */
export type Handler = (request: Request, info: Deno.ServeHandlerInfo) => Promise<Response>;

/** Creates the server's request handler. */
export function createHandler(context: HandlerContext): Handler {
  const preAuth = context.preAuth ?? new PreAuthPool();
  const readContext = { ...context, preAuth };
  const channels = new ServedChannels({
    name: context.channelName ?? basename(context.storage.root),
    storage: context.storage,
    uploads: context.uploads,
  }, context.channels);
  const onFailure = () => context.metrics.failedAuth++;
  const frontDoor: FrontDoorContext = {
    channels,
    authenticator: new Authenticator(context.verifier, context.throttle, {
      onFailure,
      ...(context.minter ? { minted: context.minter.minted } : {}),
    }),
    gate: context.gate,
    preAuth,
    bodyIdleMs: context.bodyIdleMs,
    metrics: context.metrics,
  };
  const mint = {
    minter: context.minter,
    throttle: context.throttle,
    logger: context.logger,
    bodyIdleMs: context.bodyIdleMs,
    signal: context.gate.signal,
    onFailure,
  };
  return async (request, info) => {
    const started = performance.now();
    // Parsed once here: the routes below take this URL instead of parsing `request.url` again.
    const url = new URL(request.url);
    const path = loggedPath(url);
    const client = clientAddress(request, info);
    const minting = request.method === "POST" && path === MINT_TOKEN_PATH;
    const write = WRITE_METHODS.has(request.method) && !minting;
    let response: Response;
    try {
      response = minting
        ? await handleMintToken(request, client, mint)
        : (write ? await handleWrite(request, client, frontDoor) : undefined) ??
          await route(withoutPathToken(request, url), readContext, channels);
    } catch (error) {
      response = errorResponse(error);
      logFailure(context.logger, request, path, error);
    }
    if (write) countWrite(request, response, started, context.metrics);
    context.logger.info("request", {
      method: request.method,
      path,
      status: response.status,
      bytes: Number(response.headers.get("content-length") ?? 0) || undefined,
      ms: Math.round(performance.now() - started),
      client,
    });
    return response;
  };
}

function countWrite(
  request: Request,
  response: Response,
  started: number,
  metrics: Metrics,
): void {
  if (request.method === "DELETE") {
    if (response.ok) metrics.deletes++;
    return;
  }
  metrics.countUpload(response.ok ? "stored" : String(response.status));
  metrics.uploadDuration.observe((performance.now() - started) / 1000);
}

/** The read routes (and the 405 of a write no route takes). */
async function route(
  { request, url }: _ParsedRequest,
  context: HandlerContext & { preAuth: PreAuthPool },
  channels: ServedChannels,
): Promise<Response> {
  const { pathname } = url;
  const method = request.method;
  if ((method === "GET" || method === "HEAD") && pathname === "/health") {
    return await healthResponse(
      channels.all.map((channel) => channel.storage),
      context.gate.inFlight,
    );
  }
  if ((method === "GET" || method === "HEAD") && pathname === "/metrics") {
    context.metrics.authHeld = context.throttle.held;
    context.metrics.awaitingToken = context.preAuth.waiting;
    return new Response(context.metrics.render(), {
      headers: {
        "content-type": "text/plain; version=0.0.4; charset=utf-8",
        "cache-control": "no-store",
      },
    });
  }
  if (method === "GET" || method === "HEAD") {
    if (!context.serve) {
      throw new HttpError(STATUS.NotFound, "Cannot serve file: serving is turned off");
    }
    const read = channels.forRead(pathname);
    if ("redirect" in read) {
      return new Response(null, {
        status: STATUS.MovedPermanently,
        headers: { location: read.redirect },
      });
    }
    if (read.mount === "/") {
      return await serveChannel(request, read.channel.storage, context.serveOptions);
    }
    url.pathname = read.pathname;
    return await serveChannel(
      new Request(url, { method, headers: request.headers }),
      read.channel.storage,
      {
        ...context.serveOptions,
        channelName: read.channel.name,
        channelUrl: `${
          (context.serveOptions?.channelUrl ?? url.origin).replace(/\/+$/, "")
        }/${read.channel.name}`,
      },
    );
  }
  throw new HttpError(STATUS.MethodNotAllowed, `Cannot ${method} ${pathname.slice(0, 100)}`, {
    headers: { allow: allowedMethods(pathname).join(", ") },
  });
}

function allowedMethods(pathname: string): string[] {
  return ["GET", "HEAD", ...writeMethods(pathname)];
}

/** A request and its parsed URL, which the route may change. */
interface _ParsedRequest {
  request: Request;
  url: URL;
}

/**
 * The request without its `/t/<token>/` path prefix (reads ignore the
 * token); `url` is the request's URL, taken over (changed in place).
 */
function withoutPathToken(request: Request, url: URL): _ParsedRequest {
  const { token, pathname } = splitPathToken(url.pathname);
  if (token === undefined) return { request, url };
  url.pathname = pathname;
  // No `signal`: Deno.serve's request signal also fires after a successful response.
  return {
    request: new Request(url, {
      method: request.method,
      headers: request.headers,
      body: request.body,
    }),
    url,
  };
}

/** The request's path for log lines: clipped, and never with a path token. */
function loggedPath(url: URL): string {
  return redactPathToken(url.pathname).slice(0, 200);
}

function logFailure(logger: Logger, request: Request, path: string, thrown: unknown): void {
  const error = httpErrorOf(thrown); // package errors carry no status of their own
  if (error) {
    if (error.status >= 500) {
      logger.error("request failed", {
        status: error.status,
        path,
        reason: error.message,
        cause: describe(error.cause),
      });
    } else if (request.method !== "GET" && request.method !== "HEAD") {
      logger.warn("request refused", { status: error.status, path, reason: error.message });
    }
    return;
  }
  logger.error("internal error", { path, reason: describe(thrown) });
}

function describe(error: unknown): string | undefined {
  if (error === undefined) return undefined;
  return error instanceof Error ? `${error.name}: ${error.message}` : String(error);
}

const LOOPBACK = /^(127\.|::1$|::ffff:127\.)/;

/**
 * The client's address, for logs and the failed-token throttle. A reverse
 * proxy on the same machine connects from loopback; only then is the last
 * `X-Forwarded-For` entry (the one that proxy added) taken instead.
 */
function clientAddress(request: Request, info: Deno.ServeHandlerInfo): string {
  const address = info.remoteAddr as Deno.Addr;
  const peer = "hostname" in address ? address.hostname : "unknown";
  if (!LOOPBACK.test(peer)) return peer;
  const forwarded = request.headers.get("x-forwarded-for")?.split(",").at(-1)?.trim();
  return forwarded && /^[\d.:a-fA-F]{2,45}$/.test(forwarded) ? forwarded : peer;
}
