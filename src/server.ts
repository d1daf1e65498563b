/**
 * The HTTP handler: routes requests to the upload routes and to channel
 * serving, turns thrown errors into responses in one place, and logs one
 * line per request.
 *
 * @module
 */

import type { TokenVerifier } from "./auth/token_verifier.ts";
import { errorResponse, HttpError } from "./http/http_error.ts";
import { STATUS } from "./http/status.ts";
import type { Logger } from "./log.ts";
import { serveChannel, type ServeChannelOptions } from "./serve/serve_channel.ts";
import type { ChannelStorage } from "./storage/channel_storage.ts";
import { handleFormUpload } from "./upload/form_upload_route.ts";
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
}

/** A request handler as `Deno.serve` takes it. */
export type Handler = (request: Request, info: Deno.ServeHandlerInfo) => Promise<Response>;

/** Creates the server's request handler. */
export function createHandler(context: HandlerContext): Handler {
  return async (request, info) => {
    const started = performance.now();
    let response: Response;
    try {
      response = await route(request, context);
    } catch (error) {
      response = errorResponse(error);
      logFailure(context.logger, request, error);
    }
    const url = new URL(request.url);
    context.logger.info("request", {
      method: request.method,
      path: url.pathname.slice(0, 200),
      status: response.status,
      bytes: Number(response.headers.get("content-length") ?? 0) || undefined,
      ms: Math.round(performance.now() - started),
      client: remoteAddress(info),
    });
    return response;
  };
}

async function route(request: Request, context: HandlerContext): Promise<Response> {
  const { pathname } = new URL(request.url);
  const method = request.method;
  if (method === "POST" && pathname === "/") return await handleFormUpload(request, context);
  if (method === "GET" || method === "HEAD") {
    if (!context.serve) {
      throw new HttpError(STATUS.NotFound, "Cannot serve file: serving is turned off");
    }
    return await serveChannel(request, context.storage, context.serveOptions);
  }
  throw new HttpError(STATUS.MethodNotAllowed, `Cannot ${method} ${pathname.slice(0, 100)}`, {
    headers: { allow: pathname === "/" ? "GET, HEAD, POST" : "GET, HEAD" },
  });
}

function logFailure(logger: Logger, request: Request, error: unknown): void {
  const path = new URL(request.url).pathname.slice(0, 200);
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

function remoteAddress(info: Deno.ServeHandlerInfo): string | undefined {
  const address = info.remoteAddr as Deno.Addr;
  return "hostname" in address ? address.hostname : undefined;
}
