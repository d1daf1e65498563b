/**
 * Size, sha256 and md5 of a file already in the channel, computed in one
 * streaming pass (for packages found by reconcile rather than uploaded).
 *
 * @module
 */

import { createHash } from "node:crypto";
import type { FileDigest } from "../package/package_metadata.ts";
import type { ChannelStore } from "../storage/channel_store.ts";

/** Size and lowercase hex sha256 and md5 of bytes held in memory. */
export function digestBytes(bytes: Uint8Array): FileDigest {
  return {
    size: bytes.length,
    sha256: createHash("sha256").update(bytes).digest("hex"),
    md5: createHash("md5").update(bytes).digest("hex"),
  };
}

/**
 * Reads the channel file at `relative` ("subdir/file") once and returns its
 * size and lowercase hex sha256 and md5. Throws when it is not a file in the
 * channel.
 *
 * @example Usage
 * ```ts ignore
 * import { digestChannelFile } from "./file_digest.ts";
 * import { ChannelStorage } from "../storage/channel_storage.ts";
 * const storage = await ChannelStorage.open("./channel");
 * const digest = await digestChannelFile(storage, "noarch/foo-1.0-0.conda");
 * console.log(digest.sha256);
 * ```
 */
export async function digestChannelFile(
  storage: ChannelStore,
  relative: string,
): Promise<FileDigest> {
  const opened = await storage.open(relative);
  if (!opened) throw new Error(`Cannot digest ${relative}: not a file in the channel`);
  const sha256 = createHash("sha256");
  const md5 = createHash("md5");
  let size = 0;
  // The stream closes the file when it ends or fails.
  for await (const chunk of opened.stream(0, opened.entry.size)) {
    sha256.update(chunk);
    md5.update(chunk);
    size += chunk.length;
  }
  return { size, sha256: sha256.digest("hex"), md5: md5.digest("hex") };
}
