/**
 * The HTTP handler: routes requests to the upload routes and to channel
 * serving, turns thrown errors into responses in one place, and logs one
 * line per request.
 *
 * | Method | Path | Route |
 * |---|---|---|
 * | POST | `/` (multipart) | the original form upload |
 * | POST | `/`, `/api/v1/upload/<channel>` (raw body) | legacy prefix.dev / old pixi (200) |
 * | POST | `/api/v1/upload/<channel>` (multipart) | prefix.dev: rattler-build, pixi |
 * | POST | `/api/channels/<channel>/upload/<file>` | quetz |
 * | PUT | `/[<channel>/]<subdir>/<file>` | Artifactory |
 * | DELETE | `/[<channel>/]<subdir>/<file>` | delete a package |
 * | GET | `/health`, `/metrics` | readiness (JSON), Prometheus metrics |
 * | GET, HEAD | anything else | the channel's files |
 *
 * Write requests (POST, PUT, DELETE) pass the failed-token throttle (429)
 * and the concurrent upload cap (503) before anything else, and their body
 * is cut off when it stalls (408) or when a shutdown's deadline passes (503).
 *
 * Every path may start with `/t/<token>/` (a conda token in the path); it is
 * taken out before routing, used as the token when no header carries one,
 * and written to the log as `/t/<redacted>/`.
 *
 * @module
 */

import { basename } from "node:path";
import type { AuthThrottle } from "./auth/auth_throttle.ts";
import { redactPathToken, splitPathToken } from "./auth/path_token.ts";
import type { TokenVerifier } from "./auth/token_verifier.ts";
import { guardBody } from "./http/guarded_body.ts";
import { errorResponse, HttpError } from "./http/http_error.ts";
import { STATUS } from "./http/status.ts";
import type { Logger } from "./log.ts";
import { healthResponse } from "./observability/health.ts";
import type { Metrics } from "./observability/metrics.ts";
import { serveChannel, type ServeChannelOptions } from "./serve/serve_channel.ts";
import type { ChannelStorage } from "./storage/channel_storage.ts";
import { handleArtifactoryUpload } from "./upload/artifactory_upload_route.ts";
import type { ChannelRouteContext } from "./upload/channel_name.ts";
import { handleDelete } from "./upload/delete_route.ts";
import { handleFormUpload } from "./upload/form_upload_route.ts";
import { handleLegacyUpload, isLegacyUpload } from "./upload/legacy_upload_route.ts";
import { matchPackagePath } from "./upload/package_path.ts";
import { handlePrefixUpload, matchPrefixUploadPath } from "./upload/prefix_upload_route.ts";
import { handleQuetzUpload, matchQuetzUploadPath } from "./upload/quetz_upload_route.ts";
import type { UploadGate } from "./upload/upload_gate.ts";
import type { UploadService } from "./upload/upload_service.ts";

/** What the handler needs. */
export interface HandlerContext {
  /** The channel's storage. */
  storage: ChannelStorage;
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
  /** Admission and shutdown drain of write requests. */
  gate: UploadGate;
  /** Failed-token slow-down per client address. */
  throttle: AuthThrottle;
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
  const routeContext: RouteContext = {
    ...context,
    channelName: context.channelName ?? basename(context.storage.root),
  };
  return async (request, info) => {
    const started = performance.now();
    const path = loggedPath(request);
    const client = clientAddress(request, info);
    const write = WRITE_METHODS.has(request.method);
    let response: Response;
    try {
      response = write
        ? await handleWrite(request, client, routeContext)
        : await route(withoutPathToken(request), routeContext);
    } catch (error) {
      response = errorResponse(error);
      logFailure(context.logger, request, path, error);
    }
    if (write) countWrite(request, response, client, started, context);
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

type RouteContext = HandlerContext & ChannelRouteContext;

async function handleWrite(
  request: Request,
  client: string,
  context: RouteContext,
): Promise<Response> {
  context.throttle.check(client);
  const release = context.gate.enter();
  context.metrics.uploadsInFlight = context.gate.inFlight;
  try {
    const guarded = request.body === null ? request : new Request(request.url, {
      method: request.method,
      headers: request.headers,
      body: guardBody(request.body, {
        idleMs: context.bodyIdleMs,
        signal: context.gate.signal,
        onBytes: (bytes) => context.metrics.bytesReceived += bytes,
      }),
    });
    return await route(withoutPathToken(guarded), context);
  } finally {
    release();
    context.metrics.uploadsInFlight = context.gate.inFlight;
  }
}

function countWrite(
  request: Request,
  response: Response,
  client: string,
  started: number,
  context: HandlerContext,
): void {
  const { metrics } = context;
  if (response.status === STATUS.Unauthorized) {
    metrics.failedAuth++;
    context.throttle.fail(client);
  }
  if (request.method === "DELETE") {
    if (response.ok) metrics.deletes++;
    return;
  }
  metrics.countUpload(response.ok ? "stored" : String(response.status));
  metrics.uploadDuration.observe((performance.now() - started) / 1000);
}

async function route(request: Request, context: RouteContext): Promise<Response> {
  const { pathname } = new URL(request.url);
  const method = request.method;
  if (method === "POST") {
    if (pathname === "/") {
      return isLegacyUpload(request)
        ? await handleLegacyUpload(request, context)
        : await handleFormUpload(request, context);
    }
    if (matchPrefixUploadPath(pathname) !== undefined) {
      return isLegacyUpload(request)
        ? await handleLegacyUpload(request, context)
        : await handlePrefixUpload(request, context);
    }
    if (matchQuetzUploadPath(pathname) !== undefined) {
      return await handleQuetzUpload(request, context);
    }
  }
  if (method === "PUT" && matchPackagePath(pathname) !== undefined) {
    return await handleArtifactoryUpload(request, context);
  }
  if (method === "DELETE" && matchPackagePath(pathname) !== undefined) {
    return await handleDelete(request, context);
  }
  if (method === "GET" && pathname === "/health") {
    return await healthResponse(context.storage, context.gate.inFlight);
  }
  if (method === "GET" && pathname === "/metrics") {
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
    return await serveChannel(request, context.storage, context.serveOptions);
  }
  throw new HttpError(STATUS.MethodNotAllowed, `Cannot ${method} ${pathname.slice(0, 100)}`, {
    headers: { allow: allowedMethods(pathname).join(", ") },
  });
}

function allowedMethods(pathname: string): string[] {
  const methods = ["GET", "HEAD"];
  if (
    pathname === "/" || matchPrefixUploadPath(pathname) !== undefined ||
    matchQuetzUploadPath(pathname) !== undefined
  ) {
    methods.push("POST");
  }
  if (matchPackagePath(pathname) !== undefined) methods.push("PUT", "DELETE");
  return methods;
}

/**
 * The request without its `/t/<token>/` path prefix; the token moves into an
 * `X-API-Key` header unless the request carries credentials in headers.
 */
function withoutPathToken(request: Request): Request {
  const url = new URL(request.url);
  const { token, pathname } = splitPathToken(url.pathname);
  if (token === undefined) return request;
  url.pathname = pathname;
  const headers = new Headers(request.headers);
  if (token !== "" && !headers.has("authorization") && !headers.has("x-api-key")) {
    try {
      headers.set("x-api-key", token);
    } catch {
      // Not a valid header value, so not a valid token: the route answers 401.
    }
  }
  // No `signal`: Deno.serve's request signal also fires after a successful response.
  return new Request(url, { method: request.method, headers, body: request.body });
}

/** The request's path for log lines: clipped, and never with a path token. */
function loggedPath(request: Request): string {
  return redactPathToken(new URL(request.url).pathname).slice(0, 200);
}

function logFailure(logger: Logger, request: Request, path: string, error: unknown): void {
  if (error instanceof HttpError) {
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
  logger.error("internal error", { path, reason: describe(error) });
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
