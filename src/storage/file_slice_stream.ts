/**
 * A local file's bytes as a byte stream (the file-system backend's
 * `OpenedFile.stream`), read in 256 KiB chunks as the client takes them.
 *
 * @module
 */

/** Bytes read per chunk. */
const CHUNK_SIZE = 256 * 1024;

/**
 * A stream of exactly `length` bytes of `file` from `start`, which closes
 * the file when it ends, fails or is cancelled. Bounded so that a file that
 * grows while being sent never exceeds the announced `Content-Length`.
 */
export function fileSliceStream(
  file: Deno.FsFile,
  start: number,
  length: number,
): ReadableStream<Uint8Array<ArrayBuffer>> {
  let remaining = length;
  let closed = false;
  const close = () => {
    if (closed) return;
    closed = true;
    try {
      file.close();
    } catch {
      // Already closed.
    }
  };
  return new ReadableStream({
    type: "bytes",
    autoAllocateChunkSize: CHUNK_SIZE,
    async start(controller) {
      try {
        if (start > 0) await file.seek(start, Deno.SeekMode.Start);
      } catch (error) {
        close();
        controller.error(error);
        return;
      }
      if (remaining === 0) {
        close();
        controller.close();
      }
    },
    async pull(controller) {
      // A byte stream: a reader that brings its own buffer (a BYOB reader)
      // gets the bytes read into it, so a connection layer can send a large
      // file through one reused buffer; other readers get a fresh chunk.
      const request = controller.byobRequest!;
      const view = request.view!;
      const target = new Uint8Array(
        view.buffer,
        view.byteOffset,
        Math.min(view.byteLength, remaining),
      );
      let read: number | null;
      try {
        read = await file.read(target);
      } catch (error) {
        close();
        controller.error(error);
        return;
      }
      if (read === null) {
        close();
        controller.error(new Error("Cannot stream file: it is shorter than its announced size"));
        return;
      }
      remaining -= read;
      request.respond(read);
      if (remaining === 0) {
        close();
        controller.close();
      }
    },
    cancel() {
      close();
    },
  });
}
