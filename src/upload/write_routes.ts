/**
 * The one table of write routes: method and path are matched once, and the
 * matching row's protocol turns the request into a {@linkcode WriteIntent}.
 * Adding a protocol means one protocol file and one row here.
 *
 * | Method | Path | Protocol |
 * |---|---|---|
 * | POST | `/` (raw body) | legacy prefix.dev / old pixi (200) |
 * | POST | `/` (multipart) | the original form upload |
 * | POST | `/NAME/` (raw body, multipart) | as `POST /`, to the channel served at `/NAME/` |
 * | POST | `/api/v1/upload/<channel>` (raw body) | legacy prefix.dev / old pixi (200) |
 * | POST | `/api/v1/upload/<channel>` (multipart) | prefix.dev: rattler-build, pixi |
 * | POST | `/api/channels/<channel>/upload/<file>` | quetz |
 * | PUT | `/[<channel>/]<subdir>/<file>` | Artifactory |
 * | DELETE | `/[<channel>/]<subdir>/<file>` | delete a package |
 *
 * @module
 */

import { artifactoryUploadIntent } from "./artifactory_protocol.ts";
import { deleteIntent } from "./delete_protocol.ts";
import { formUploadIntent, matchChannelRootPath } from "./form_protocol.ts";
import { isLegacyUpload, legacyUploadIntent } from "./legacy_protocol.ts";
import { matchPackagePath } from "./package_path.ts";
import { matchPrefixUploadPath, prefixUploadIntent } from "./prefix_protocol.ts";
import { matchQuetzUploadPath, quetzUploadIntent } from "./quetz_protocol.ts";
import type { WriteIntent, WriteRequest } from "./upload_intent.ts";

/** One row: a method, a path match, and the protocol that makes the intent. */
interface _Route {
  method: string;
  /** The intent maker when the path (and headers) match; undefined otherwise. */
  match(pathname: string, headers: Headers): ((write: WriteRequest) => WriteIntent) | undefined;
}

const when = <T>(value: T | undefined, make: (value: T) => (write: WriteRequest) => WriteIntent) =>
  value === undefined ? undefined : make(value);

const ROUTES: readonly _Route[] = [
  {
    method: "POST",
    match: (pathname, headers) =>
      pathname !== "/"
        ? undefined
        : isLegacyUpload(headers)
        ? (write) => legacyUploadIntent(write, undefined)
        : (write) => formUploadIntent(write),
  },
  {
    method: "POST",
    match: (pathname, headers) =>
      when(
        matchChannelRootPath(pathname),
        (channel) =>
          isLegacyUpload(headers)
            ? (write) => legacyUploadIntent(write, channel)
            : (write) => formUploadIntent(write, channel),
      ),
  },
  {
    method: "POST",
    match: (pathname, headers) =>
      when(
        matchPrefixUploadPath(pathname),
        (channel) =>
          isLegacyUpload(headers)
            ? (write) => legacyUploadIntent(write, channel)
            : (write) => prefixUploadIntent(write, channel),
      ),
  },
  {
    method: "POST",
    match: (pathname) =>
      when(matchQuetzUploadPath(pathname), (target) => (write) => quetzUploadIntent(write, target)),
  },
  {
    method: "PUT",
    match: (pathname) =>
      when(
        matchPackagePath(pathname),
        (target) => (write) => artifactoryUploadIntent(write, target),
      ),
  },
  {
    method: "DELETE",
    match: (pathname) =>
      when(matchPackagePath(pathname), (target) => (write) => deleteIntent(write, target)),
  },
];

/**
 * The intent maker of the write route matching `method` and `pathname`
 * (already without its path token), or undefined when no row matches.
 *
 * @example Usage
 * ```ts
 * import { matchWriteRoute } from "./write_routes.ts";
 * console.log(matchWriteRoute("PUT", "/linux-64/a-1-0.conda", new Headers()) !== undefined); // true
 * ```
 */
export function matchWriteRoute(
  method: string,
  pathname: string,
  headers: Headers,
): ((write: WriteRequest) => WriteIntent) | undefined {
  for (const route of ROUTES) {
    if (route.method !== method) continue;
    const make = route.match(pathname, headers);
    if (make !== undefined) return make;
  }
  return undefined;
}

/** The write methods some row accepts on `pathname` (for `Allow`). */
export function writeMethods(pathname: string): string[] {
  const methods = new Set<string>();
  for (const route of ROUTES) {
    if (route.match(pathname, new Headers()) !== undefined) methods.add(route.method);
  }
  return [...methods];
}
