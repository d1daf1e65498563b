/**
 * Reads the `info/` files of a `.tar.bz2` conda package. A small one (at
 * most `maxWholeBzip2Bytes`) is decoded whole by libbzip2 in WebAssembly on
 * a worker thread (`bzip2_worker_pool.ts`), every CRC checked, and its tar
 * walked here. Any other file, and any small one the worker did not verify
 * whole, is decoded here with seek-bzip block by block, stopping as soon as
 * the info section is read (once every block CRC is checked, for a small
 * one), so a large package with `info/` first costs one bzip2 block
 * whatever its size; this reader also names what is wrong with a file.
 *
 * @module
 */

import Bunzip from "seek-bzip";
import {
  DEFAULT_MAX_SCANNED_BYTES,
  DEFAULT_MAX_WHOLE_BZIP2_BYTES,
  InfoCollector,
  type InspectOptions,
} from "./info_collector.ts";
import {
  packageError,
  PackageFormatError,
  PackageLimitError,
  PackageReadError,
} from "./package_errors.ts";
import { TarReader } from "./tar_reader.ts";
import { MemoryPackageSource, type PackageSource } from "./package_source.ts";
import { bzip2WorkerPool } from "./bzip2_worker_pool.ts";

/** The parts of seek-bzip's decoder used here (the package ships no types). */
interface _Bunzip {
  _init_block(): boolean;
  _read_bunzip(): number;
  _start_bunzip(input: _FileSource, output: _Sink): void;
  reader: { read(bits: number): number };
  streamCRC: number;
}
const BunzipDecoder = Bunzip as unknown as new (input: _FileSource, output: _Sink) => _Bunzip;

const READ_CHUNK = 1024 * 1024;
/** Input kept buffered before each block: more than any bzip2 block's compressed size. */
const PREFETCH = 3 * 1024 * 1024;
const OUTPUT_CHUNK = 64 * 1024;
/**
 * Empty bzip2 streams accepted in a row. Real multi-stream files (pbzip2,
 * lbzip2) have data in every stream; a row of empty ones is only padding or
 * an attack on the decoder's set-up cost.
 */
export const MAX_EMPTY_STREAMS = 8;

/** Thrown by the byte source when the file ends in the middle of a bzip2 stream. */
class _Truncated extends Error {}

/** Byte-at-a-time input for the decoder, buffered from the file. */
class _FileSource {
  #file: PackageSource;
  #buffer: Uint8Array;
  #pos = 0;
  #end = 0;
  #eof = false;

  constructor(file: PackageSource, fileSize: number) {
    this.#file = file;
    // a small file needs no more than its own size (plus one byte to see its end)
    this.#buffer = new Uint8Array(Math.min(PREFETCH + READ_CHUNK, fileSize + 1));
  }

  #compact(): void {
    if (this.#pos === 0) return;
    this.#buffer.copyWithin(0, this.#pos, this.#end);
    this.#end -= this.#pos;
    this.#pos = 0;
  }

  /** Reads ahead asynchronously so that the next block decodes from memory. */
  async prefetch(): Promise<void> {
    if (this.#eof || this.#end - this.#pos >= PREFETCH) return;
    this.#compact();
    while (!this.#eof && this.#end < Math.min(PREFETCH, this.#buffer.length)) {
      let n: number | null;
      try {
        n = await this.#file.read(this.#buffer.subarray(this.#end));
      } catch (error) {
        throw new PackageReadError("Cannot read package: spool file is unreadable", {
          cause: error,
        });
      }
      if (n === null || n === 0) this.#eof = true;
      else this.#end += n;
    }
  }

  #refillSync(): boolean {
    if (this.#eof) return false;
    this.#compact();
    let n: number | null;
    try {
      n = this.#file.readSync(this.#buffer.subarray(this.#end));
    } catch (error) {
      throw new PackageReadError("Cannot read package: spool file is unreadable", { cause: error });
    }
    if (n === null || n === 0) {
      this.#eof = true;
      return false;
    }
    this.#end += n;
    return true;
  }

  /** The next byte; throws {@linkcode _Truncated} at the end of the file. */
  readByte(): number {
    if (this.#pos >= this.#end && !this.#refillSync()) throw new _Truncated();
    return this.#buffer[this.#pos++]!;
  }

  /** Stream interface used by the decoder for the 4-byte stream magic. */
  read(target: Uint8Array, offset: number, length: number): number {
    let n = 0;
    while (n < length) {
      if (this.#pos >= this.#end && !this.#refillSync()) break;
      target[offset + n++] = this.#buffer[this.#pos++]!;
    }
    return n === 0 ? -1 : n;
  }

  /** Whether the whole file was consumed. */
  eof(): boolean {
    return this.#pos >= this.#end && !this.#refillSync();
  }
}

/** Decoder output: buffered, counted, and fed to the tar reader. */
class _Sink {
  /** Bytes decoded after the info/ section, only for their CRCs. */
  checkedAfterInfo = 0;
  #buffer = new Uint8Array(OUTPUT_CHUNK);
  #fill = 0;
  #scanned = 0;
  #tar: TarReader;
  #maxScanned: number;

  constructor(tar: TarReader, maxScanned: number) {
    this.#tar = tar;
    this.#maxScanned = maxScanned;
  }

  writeByte(byte: number): void {
    this.#buffer[this.#fill++] = byte;
    if (this.#fill === OUTPUT_CHUNK) this.flush();
  }

  /** Hands buffered output to the tar reader; enforces the scanned-bytes bound. */
  flush(): void {
    if (this.#fill === 0) return;
    const chunk = this.#buffer.subarray(0, this.#fill);
    this.#fill = 0;
    // once the tar reader is done, the rest is decoded only for the CRCs
    if (this.#tar.done) {
      this.checkedAfterInfo += chunk.length;
      return;
    }
    this.#scanned += chunk.length;
    this.#tar.push(chunk);
    if (!this.#tar.done && this.#scanned > this.#maxScanned) {
      throw new PackageLimitError(
        `Cannot read package: no complete info/ section in the first ${this.#maxScanned} decompressed bytes`,
      );
    }
  }
}

/** The 48-bit magic that starts a bzip2 stream's end-of-stream trailer. */
const STREAM_END_MAGIC = 0x177245385090n;
const MASK_48 = (1n << 48n) - 1n;

/**
 * Whether the file ends with a bzip2 end-of-stream trailer: the 48-bit magic,
 * the 32-bit stream CRC and 0 to 7 padding bits up to the last byte.
 */
async function _endsWithStreamTrailer(file: PackageSource, size: number): Promise<boolean> {
  let tail: Uint8Array;
  try {
    const length = Math.min(size, 11);
    tail = new Uint8Array(length);
    await file.seek(size - length, Deno.SeekMode.Start);
    let filled = 0;
    while (filled < length) {
      const n = await file.read(tail.subarray(filled));
      if (n === null || n === 0) break;
      filled += n;
    }
    if (filled < length) return false;
  } catch (error) {
    throw new PackageReadError("Cannot read package: spool file is unreadable", { cause: error });
  }
  if (tail.length < 10) return false;
  let bits = 0n;
  for (const byte of tail) bits = (bits << 8n) | BigInt(byte);
  const available = BigInt(tail.length * 8);
  for (let padding = 0n; padding < 8n && padding + 80n <= available; padding++) {
    if (((bits >> (padding + 32n)) & MASK_48) === STREAM_END_MAGIC) return true;
  }
  return false;
}

/** Gives other tasks a turn between two blocks. */
function _yield(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0));
}

/** A copy of the whole file, to hand to the worker. */
function _wholeFile(file: PackageSource, size: number): Uint8Array<ArrayBuffer> {
  if (file instanceof MemoryPackageSource) return file.bytesAt(0, size).slice();
  const bytes = new Uint8Array(size);
  let filled = 0;
  try {
    while (filled < size) {
      const n = file.readSync(bytes.subarray(filled));
      if (n === null || n === 0) break;
      filled += n;
    }
  } catch (error) {
    throw new PackageReadError("Cannot read package: spool file is unreadable", { cause: error });
  }
  return bytes.subarray(0, filled);
}

/**
 * Most decoded bytes the worker may produce for a `size`-byte file: 10 times
 * its size (at least 4 MiB, at most `16 * wholeBytes`, the bound the
 * streaming reader checks CRCs to). The worker's memory holds this much, so
 * it is kept small: a file that decodes to more (real packages compress 3
 * to 6 times) is read by the streaming reader, whose memory does not grow.
 */
function _outputBound(size: number, wholeBytes: number): number {
  return Math.min(16 * wholeBytes, Math.max(4 * 1024 * 1024, 10 * size));
}

/**
 * Walks the verified, decoded tar `output` with the same bound on scanned
 * bytes as the streaming reader.
 */
function _walkDecoded(output: Uint8Array, tar: TarReader, maxScanned: number): void {
  let scanned = 0;
  for (let at = 0; at < output.length && !tar.done; at += OUTPUT_CHUNK) {
    const chunk = output.subarray(at, at + OUTPUT_CHUNK);
    scanned += chunk.length;
    tar.push(chunk);
    if (!tar.done && scanned > maxScanned) {
      throw new PackageLimitError(
        `Cannot read package: no complete info/ section in the first ${maxScanned} decompressed bytes`,
      );
    }
  }
}

/**
 * Reads `info/index.json`, `info/about.json` and `info/run_exports.json`
 * (those present) from the `.tar.bz2` package open as `file` (`size` bytes,
 * read from its start; the caller closes it). Throws a
 * `PackageFormatError` for a corrupt or truncated archive, a
 * `PackageLimitError` for an oversized one.
 */
export async function readTarBz2Info(
  file: PackageSource,
  size: number,
  options: InspectOptions = {},
): Promise<Map<string, Uint8Array>> {
  const maxScanned = options.maxScannedBytes ?? DEFAULT_MAX_SCANNED_BYTES;
  // A small file is decoded whole, so that every block CRC is checked, as
  // long as it does not decompress to more than 16 times the size bound
  // (highly compressible payloads): past that, checking stops, nothing is refused.
  const wholeBytes = options.maxWholeBzip2Bytes ?? DEFAULT_MAX_WHOLE_BZIP2_BYTES;
  const wholeFile = options.verifyChecksums !== false && size <= wholeBytes;
  if (wholeFile) {
    const decoded = await bzip2WorkerPool.decode(
      _wholeFile(file, size),
      _outputBound(size, wholeBytes),
      MAX_EMPTY_STREAMS,
    );
    if (decoded.verified) {
      const collector = new InfoCollector(options);
      const tar = new TarReader(collector);
      _walkDecoded(decoded.output, tar, maxScanned);
      return _infoFiles(collector, tar);
    }
    // not verified whole: the streaming reader reads it, and names any fault
    try {
      await file.seek(0, Deno.SeekMode.Start);
    } catch (error) {
      throw new PackageReadError("Cannot read package: spool file is unreadable", {
        cause: error,
      });
    }
  }
  const collector = new InfoCollector(options);
  const tar = new TarReader(collector);
  const sink = new _Sink(tar, maxScanned);
  const checking = () => wholeFile && sink.checkedAfterInfo <= 16 * wholeBytes;
  try {
    const source = new _FileSource(file, size);
    await source.prefetch();
    const decoder = new BunzipDecoder(source, sink);
    let blocksInStream = 0;
    let emptyStreams = 0;
    while (!tar.done || checking()) {
      await source.prefetch();
      if (decoder._init_block()) {
        blocksInStream++;
        decoder._read_bunzip();
        sink.flush();
        await _yield();
        continue;
      }
      const storedCrc = decoder.reader.read(32) >>> 0;
      if (storedCrc !== decoder.streamCRC) {
        throw new PackageFormatError(
          "Cannot read package: corrupt bzip2 data (stream CRC mismatch)",
        );
      }
      if (source.eof()) break;
      // An empty stream is 14 bytes that cost a decoder set-up each: thousands
      // of them would keep the thread busy for long without any output.
      emptyStreams = blocksInStream === 0 ? emptyStreams + 1 : 0;
      if (emptyStreams > MAX_EMPTY_STREAMS) {
        throw new PackageLimitError(
          `Cannot read package: more than ${MAX_EMPTY_STREAMS} empty bzip2 streams in a row`,
        );
      }
      blocksInStream = 0;
      await _yield();
      decoder._start_bunzip(source, sink); // the next stream of a multi-stream file
    }
    // Reading may stop after the info/ section: the rest of the file is not
    // decoded, but a file cut short (an interrupted upload) lacks its last
    // stream's end-of-stream trailer.
    if (!await _endsWithStreamTrailer(file, size)) {
      throw new PackageFormatError(
        "Cannot read package: bzip2 stream is truncated (no end-of-stream marker)",
      );
    }
  } catch (error) {
    if (error instanceof _Truncated) {
      throw new PackageFormatError("Cannot read package: bzip2 stream is truncated");
    }
    throw packageError(error, "corrupt bzip2 data");
  }
  return _infoFiles(collector, tar);
}

/** The collected files; refuses a package without `info/index.json`. */
function _infoFiles(collector: InfoCollector, tar: TarReader): Map<string, Uint8Array> {
  if (!collector.hasIndex) {
    throw new PackageFormatError(
      tar.ended
        ? "Cannot read package: info/index.json is missing"
        : "Cannot read package: tar archive is truncated",
    );
  }
  return collector.files;
}
