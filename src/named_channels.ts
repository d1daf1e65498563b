/**
 * The channels one server holds: `-d` is the channel served at `/` (the
 * original tool's layout), and each `--channel NAME=DIR` adds one served at
 * `/NAME/`, with its own directory, index, lock and `noarch`. A name must be
 * safe in a URL and must not shadow a route (`/api`, `/t`, `/health`,
 * `/metrics`) or a subdir of the channel at `/` (`/linux-64`, `/noarch`).
 *
 * @module
 */

import { isAbsolute, relative, resolve } from "node:path";
import { isKnownSubdir } from "./package/platforms.ts";

/** A channel served at `/NAME/`. */
export interface NamedChannel {
  /** Its name: the first path segment of its URLs and the channel of upload URLs. */
  name: string;
  /** Absolute path of its directory. */
  root: string;
}

/** First path segments the server itself answers; no channel may take them. */
export const RESERVED_CHANNEL_NAMES: readonly string[] = ["api", "t", "health", "metrics"];

const CHANNEL_NAME = /^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/;

/**
 * Parses one `--channel NAME=DIR` value. Throws a `SyntaxError` for a
 * malformed value or an unsafe or reserved name.
 *
 * @example Usage
 * ```ts
 * import { parseChannelFlag } from "./named_channels.ts";
 * console.log(parseChannelFlag("staging=/srv/conda/staging"));
 * // { name: "staging", root: "/srv/conda/staging" }
 * ```
 */
export function parseChannelFlag(value: string): NamedChannel {
  const equals = value.indexOf("=");
  if (equals < 0) {
    throw new SyntaxError(
      `--channel ${JSON.stringify(value.slice(0, 100))} is not NAME=DIR`,
    );
  }
  const name = value.slice(0, equals);
  const dir = value.slice(equals + 1);
  if (!CHANNEL_NAME.test(name)) {
    throw new SyntaxError(
      `--channel name ${
        JSON.stringify(name.slice(0, 100))
      } must be letters, digits, _ and - (at most 64, not starting with _ or -)`,
    );
  }
  if (RESERVED_CHANNEL_NAMES.includes(name.toLowerCase())) {
    throw new SyntaxError(`--channel name "${name}" is taken by the server's /${name} routes`);
  }
  if (isKnownSubdir(name.toLowerCase())) {
    throw new SyntaxError(
      `--channel name "${name}" is a subdir name; /${name}/ belongs to the channel at /`,
    );
  }
  if (dir === "") throw new SyntaxError(`--channel ${name}= has no directory`);
  return { name, root: resolve(dir) };
}

/**
 * Checks the named channels together with the channel at `/` (its name and
 * root): no name twice (ignoring case), no directory inside another.
 * Throws a `SyntaxError` naming both channels of a clash.
 */
export function checkChannels(
  main: NamedChannel,
  channels: readonly NamedChannel[],
): void {
  const seen = new Map<string, string>([[main.name.toLowerCase(), "the channel at / (-d)"]]);
  for (const channel of channels) {
    const key = channel.name.toLowerCase();
    const previous = seen.get(key);
    if (previous !== undefined) {
      throw new SyntaxError(`--channel name "${channel.name}" is already the name of ${previous}`);
    }
    seen.set(key, `--channel ${channel.name}`);
  }
  const all = [
    { label: "the channel at / (-d)", root: main.root },
    ...channels.map((channel) => ({
      label: `--channel ${channel.name}`,
      root: channel.root,
    })),
  ];
  for (const [index, a] of all.entries()) {
    for (const b of all.slice(index + 1)) {
      if (contains(a.root, b.root) || contains(b.root, a.root)) {
        throw new SyntaxError(
          `${b.label} directory ${b.root} overlaps ${a.label} directory ${a.root}; each channel needs its own`,
        );
      }
    }
  }
}

/** Whether `inner` is `outer` or inside it. */
function contains(outer: string, inner: string): boolean {
  const path = relative(outer, inner);
  return path === "" || (!path.startsWith("..") && !isAbsolute(path));
}
