/**
 * Where the package readers take their bytes from: an open file, or the
 * whole package already in memory. A small package (an upload that fit in
 * the spool writer's buffer, a file the `index` command read whole to hash
 * it) is inspected from memory, so that dozens of seeks and reads, each a
 * round trip to the file system's thread pool, cost nothing.
 *
 * @module
 */

/** The part of `Deno.FsFile` the package readers use; `Deno.FsFile` is one. */
export interface PackageSource {
  /** Reads into `buffer` at the current position; null at the end. */
  read(buffer: Uint8Array): Promise<number | null>;
  /** Reads into `buffer` at the current position, synchronously; null at the end. */
  readSync(buffer: Uint8Array): number | null;
  /** Moves the position; returns the new one. */
  seek(offset: number | bigint, whence: Deno.SeekMode): Promise<number>;
}

/**
 * A package held in memory, read like a file.
 *
 * @example Usage
 * ```ts
 * import { MemoryPackageSource } from "./package_source.ts";
 * const source = new MemoryPackageSource(new Uint8Array([1, 2, 3]));
 * await source.seek(1, Deno.SeekMode.Start);
 * const buffer = new Uint8Array(4);
 * console.log(source.readSync(buffer)); // 2
 * ```
 */
export class MemoryPackageSource implements PackageSource {
  readonly #bytes: Uint8Array;
  #position = 0;

  constructor(bytes: Uint8Array) {
    this.#bytes = bytes;
  }

  /** The package's size in bytes. */
  get size(): number {
    return this.#bytes.length;
  }

  /** `length` bytes from `offset` (fewer at the end), without copying. */
  bytesAt(offset: number, length: number): Uint8Array {
    return this.#bytes.subarray(offset, offset + length);
  }

  read(buffer: Uint8Array): Promise<number | null> {
    return Promise.resolve(this.readSync(buffer));
  }

  readSync(buffer: Uint8Array): number | null {
    if (buffer.length === 0) return 0;
    if (this.#position >= this.#bytes.length) return null;
    const end = Math.min(this.#bytes.length, this.#position + buffer.length);
    buffer.set(this.#bytes.subarray(this.#position, end));
    const n = end - this.#position;
    this.#position = end;
    return n;
  }

  seek(offset: number | bigint, whence: Deno.SeekMode): Promise<number> {
    const base = whence === Deno.SeekMode.Start
      ? 0
      : whence === Deno.SeekMode.Current
      ? this.#position
      : this.#bytes.length;
    const position = base + Number(offset);
    if (position < 0) {
      return Promise.reject(new RangeError("Cannot seek: position before the start"));
    }
    this.#position = position;
    return Promise.resolve(position);
  }
}
