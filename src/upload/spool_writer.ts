/**
 * Streams an upload's bytes into its spool file while hashing them, so the
 * artifact is never held in memory and is read only once.
 *
 * @module
 */

import { createHash } from "node:crypto";
import { HttpError } from "../http/http_error.ts";
import { STATUS } from "../http/status.ts";
import type { FileDigest } from "../package/package_metadata.ts";
import type { SpoolFile } from "../storage/channel_store.ts";

/** Options for {@linkcode writeSpool}. */
export interface WriteSpoolOptions {
  /** Refuse (413) once more than this many bytes arrived. */
  maxBytes: number;
  /**
   * Bytes gathered before one write to disk, to save system calls.
   * @default {1048576}
   */
  bufferBytes?: number;
}

const DEFAULT_BUFFER_BYTES = 1 << 20;
/** Write buffers kept for reuse: a small upload should not allocate and zero 1 MiB. */
const idleBuffers: Uint8Array[] = [];
const MAX_IDLE_BUFFERS = 8;

function takeBuffer(size: number): Uint8Array {
  const index = idleBuffers.findIndex((buffer) => buffer.length === size);
  return index < 0 ? new Uint8Array(size) : idleBuffers.splice(index, 1)[0]!;
}

function returnBuffer(buffer: Uint8Array): void {
  if (idleBuffers.length < MAX_IDLE_BUFFERS) idleBuffers.push(buffer);
}

/** What {@linkcode writeSpool} received. */
export interface SpoolDigest extends FileDigest {
  /**
   * A copy of the whole artifact when it fit in the write buffer, so that a
   * small package is inspected from memory instead of read back.
   */
  bytes?: Uint8Array;
  /**
   * Resolves once the bytes are on disk (synced, unless the spool is
   * scratch) and the file is closed; rejects when the sync failed. The sync
   * runs while the caller inspects the package: await this before the file
   * takes its name.
   */
  durable: Promise<void>;
}

/**
 * Copies `body` into `spool.file`, computing size, sha256 and md5 on the way,
 * then starts its sync (unless the storage marks the spool as scratch:
 * `durable: false`), which closes the file when done (see
 * {@linkcode SpoolDigest.durable}). Throws {@linkcode HttpError} 413 as soon
 * as the limit is passed. The caller removes the spool file on failure.
 */
export async function writeSpool(
  body: ReadableStream<Uint8Array>,
  spool: SpoolFile,
  options: WriteSpoolOptions,
): Promise<SpoolDigest> {
  const sha256 = createHash("sha256");
  const md5 = createHash("md5");
  const bufferBytes = options.bufferBytes ?? DEFAULT_BUFFER_BYTES;
  const buffer = takeBuffer(bufferBytes);
  let buffered = 0;
  let size = 0;
  let bytes: Uint8Array | undefined;
  const flush = async () => {
    let written = 0;
    while (written < buffered) {
      written += await spool.file.write(buffer.subarray(written, buffered));
    }
    buffered = 0;
  };
  const reader = body.getReader();
  try {
    while (true) {
      const { done, value } = await reader.read();
      if (done) break;
      size += value.byteLength;
      if (size > options.maxBytes) {
        throw new HttpError(
          STATUS.ContentTooLarge,
          `Cannot accept artifact: it is larger than the limit of ${options.maxBytes} bytes`,
        );
      }
      sha256.update(value);
      md5.update(value);
      if (value.byteLength >= bufferBytes) {
        await flush();
        let written = 0;
        while (written < value.byteLength) {
          written += await spool.file.write(value.subarray(written));
        }
        continue;
      }
      if (buffered + value.byteLength > bufferBytes) await flush();
      buffer.set(value, buffered);
      buffered += value.byteLength;
    }
    if (buffered === size) {
      // The whole artifact is in the buffer: keep a copy for inspection, and
      // write it with one synchronous call (into the page cache) rather than
      // a round trip through the thread pool.
      bytes = buffer.slice(0, buffered);
      let written = 0;
      while (written < buffered) written += spool.file.writeSync(bytes.subarray(written));
      buffered = 0;
    }
    await flush();
  } catch (error) {
    await reader.cancel().catch(() => {});
    _close(spool.file);
    throw error;
  } finally {
    returnBuffer(buffer);
    reader.releaseLock();
  }
  const durable = (spool.durable === false ? Promise.resolve() : spool.file.syncData())
    .finally(() => _close(spool.file));
  durable.catch(() => {}); // the publish awaits it and answers its failure
  const digest: SpoolDigest = {
    size,
    sha256: sha256.digest("hex"),
    md5: md5.digest("hex"),
    durable,
  };
  if (bytes) digest.bytes = bytes;
  return digest;
}

function _close(file: Deno.FsFile): void {
  try {
    file.close();
  } catch {
    // Already closed.
  }
}
