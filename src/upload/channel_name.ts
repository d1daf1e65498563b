/**
 * The channel name that upload URLs carry (`/api/v1/upload/<channel>`,
 * `/api/channels/<channel>/upload/...`, `PUT /<channel>/<subdir>/...`). This
 * server holds one channel, named by `--channel_name` (default: the basename
 * of the channel root); a URL naming another channel is a 404.
 *
 * @module
 */

import { HttpError } from "../http/http_error.ts";
import { STATUS } from "../http/status.ts";

/** Options for {@linkcode checkChannelName}. */
export interface CheckChannelNameOptions {
  /**
   * The verb of the error message ("Cannot <action>: ...").
   * @default {"upload"}
   */
  action?: string;
}

/**
 * Throws a 404 unless `requested` names this server's channel. Leading and
 * trailing slashes are ignored, so `a/b/` and `a/b` are the same channel.
 *
 * @example Usage
 * ```ts
 * import { checkChannelName } from "./channel_name.ts";
 * checkChannelName("main", "main"); // fine
 * try {
 *   checkChannelName("other", "main");
 * } catch (error) {
 *   console.log((error as Error).message); // Cannot upload: no channel named "other" here
 * }
 * ```
 */
export function checkChannelName(
  requested: string,
  channelName: string,
  options: CheckChannelNameOptions = {},
): void {
  if (trimSlashes(requested) !== trimSlashes(channelName)) {
    throw new HttpError(
      STATUS.NotFound,
      `Cannot ${options.action ?? "upload"}: no channel named ${
        JSON.stringify(requested.slice(0, 100))
      } here`,
    );
  }
}

function trimSlashes(name: string): string {
  return name.replace(/^\/+|\/+$/g, "");
}
