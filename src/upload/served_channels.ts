/**
 * The channels one server holds: the channel at `/` (`-d`, named by
 * `--channel_name`, by default its directory's basename) and each
 * `--channel NAME=DIR`, served at `/NAME/`. Upload URLs name a channel
 * (`/api/v1/upload/<channel>`, `/api/channels/<channel>/upload/...`,
 * `PUT /<channel>/<subdir>/...`, the form at `POST /NAME/`); a URL naming
 * none means the channel at `/`, and one naming a channel not held here is a
 * 404.
 *
 * @module
 */

import { HttpError } from "../http/http_error.ts";
import { STATUS } from "../http/status.ts";
import type { ChannelStore } from "../storage/channel_store.ts";
import type { UploadService } from "./upload_service.ts";

/** One channel, ready for uploads and reads. */
export interface ServedChannel {
  /** Its name in upload URLs. */
  name: string;
  /** Its files. */
  storage: ChannelStore;
  /** Its upload path (spool, inspection, publish, index). */
  uploads: UploadService;
}

/** Where a read goes: a channel and the path inside it. */
export interface ChannelRead {
  /** The channel. */
  channel: ServedChannel;
  /** The URL path of the channel's files: `/NAME` taken off for a named channel. */
  pathname: string;
  /** The URL of the channel's root: `/` or `/NAME/`. */
  mount: string;
}

/**
 * The channel at `/` and the named ones.
 *
 * @example Usage
 * ```ts ignore
 * const channels = new ServedChannels(main, [staging]);
 * channels.resolve("staging").uploads; // staging's upload path
 * channels.resolve(undefined).name; // the channel at /
 * ```
 */
export class ServedChannels {
  /** The channel at `/`. */
  readonly root: ServedChannel;
  readonly #named: ReadonlyMap<string, ServedChannel>;

  constructor(root: ServedChannel, named: readonly ServedChannel[] = []) {
    this.root = root;
    this.#named = new Map(named.map((channel) => [channel.name, channel]));
  }

  /** Every channel, the one at `/` first. */
  get all(): ServedChannel[] {
    return [this.root, ...this.#named.values()];
  }

  /**
   * The channel an upload URL names: undefined or `""` is the channel at
   * `/`; its name (slashes around it ignored) or a named channel's name is
   * that channel; anything else throws a 404 {@linkcode HttpError}.
   */
  resolve(requested: string | undefined, action = "upload"): ServedChannel {
    if (requested === undefined || requested === "") return this.root;
    const name = trimSlashes(requested);
    if (name === trimSlashes(this.root.name)) return this.root;
    const named = this.#named.get(name);
    if (named !== undefined) return named;
    throw new HttpError(
      STATUS.NotFound,
      `Cannot ${action}: no channel named ${JSON.stringify(requested.slice(0, 100))} here`,
    );
  }

  /**
   * Where a read of `pathname` goes: `/NAME/...` to the named channel
   * (`/NAME` itself redirects to `/NAME/`), anything else to the channel at
   * `/`.
   */
  forRead(pathname: string): ChannelRead | { redirect: string } {
    const match = /^\/([^/]+)(\/.*)?$/.exec(pathname);
    const named = match === null ? undefined : this.#named.get(match[1]!);
    if (named === undefined) return { channel: this.root, pathname, mount: "/" };
    if (match![2] === undefined) return { redirect: `/${named.name}/` };
    return { channel: named, pathname: match![2], mount: `/${named.name}/` };
  }
}

function trimSlashes(name: string): string {
  return name.replace(/^\/+|\/+$/g, "");
}
