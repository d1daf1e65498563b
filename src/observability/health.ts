/**
 * `GET /health`: whether the server is ready to take uploads, i.e. every
 * channel it holds is writable. No token needed; nothing secret in the answer.
 *
 * @module
 */

import { STATUS } from "../http/status.ts";
import type { ChannelStore } from "../storage/channel_store.ts";

/** Answers 200 `{"status":"ready"}` or 503 `{"status":"not ready","reason":...}`. */
export async function healthResponse(
  storages: readonly ChannelStore[],
  uploadsInFlight: number,
): Promise<Response> {
  try {
    for (const storage of storages) await storage.checkWritable();
  } catch (error) {
    const reason = error instanceof Deno.errors.PermissionDenied
      ? "channel is not writable"
      : error instanceof Deno.errors.NotFound
      ? "channel directory is missing"
      : "channel cannot be written";
    return Response.json({ status: "not ready", reason }, {
      status: STATUS.ServiceUnavailable,
      headers: { "cache-control": "no-store" },
    });
  }
  return Response.json({ status: "ready", uploads_in_flight: uploadsInFlight }, {
    headers: { "cache-control": "no-store" },
  });
}
