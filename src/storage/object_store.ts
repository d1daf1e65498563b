/**
 * What the server needs from an object store (S3, Ceph RGW, MinIO, R2):
 * keyed immutable-until-replaced objects with ETags, range reads, create-only
 * writes, prefix listing and deletes. {@linkcode ObjectStore} is the seam; the
 * S3 implementation is `s3_object_store.ts`.
 *
 * The only conditional write every tested store performs atomically is
 * create-if-absent (`put` with `createOnly`, i.e. `If-None-Match: *`); the
 * coordination built on top (`object_event_log.ts`, `object_lease.ts`) uses
 * nothing else. See docs/object_storage.md.
 *
 * @module
 */

/** An object's metadata as the store reports it. */
export interface ObjectInfo {
  /** Key relative to the store's prefix. */
  key: string;
  /** Size in bytes (the whole object, also for a range read). */
  size: number;
  /** The store's ETag, quoted as the store sends it (`"d41d8..."`). */
  etag: string;
  /** Last modification, by the store's clock. */
  lastModified: Date;
  /** User metadata (`x-amz-meta-*`, names lowercase without the prefix); only from get/head. */
  metadata?: Record<string, string>;
}

/** A byte range to read, both ends inclusive (HTTP `Range: bytes=start-end`). */
export interface ByteRange {
  /** First byte. */
  start: number;
  /** Last byte, inclusive; undefined means to the end. */
  end?: number;
}

/** Options for {@linkcode ObjectStore.get}. */
export interface GetOptions {
  /** Read only these bytes. */
  range?: ByteRange;
  /** Answer "not modified" when the object's ETag is this one. */
  ifNoneMatch?: string;
  /** Fail with {@linkcode PreconditionFailedError} unless the ETag is this one. */
  ifMatch?: string;
  /** Cancels the request. */
  signal?: AbortSignal;
}

/** The result of {@linkcode ObjectStore.get}. */
export type GetResult =
  | {
    kind: "body";
    /** The object's metadata. */
    info: ObjectInfo;
    /** The bytes; the caller reads or cancels it. */
    body: ReadableStream<Uint8Array>;
    /** The range served, when one was asked for. */
    range?: { start: number; end: number };
  }
  | { kind: "not-modified"; etag: string };

/** Options for {@linkcode ObjectStore.put}. */
export interface PutOptions {
  /**
   * Create the object only if no object has the key (`If-None-Match: *`);
   * otherwise throw {@linkcode ObjectExistsError}.
   * @default {false}
   */
  createOnly?: boolean;
  /**
   * Replace the object only if its ETag is this one (`If-Match`); otherwise
   * throw {@linkcode PreconditionFailedError}. Not every store performs it
   * (Ceph RGW 16.2 always refuses a quoted ETag): see `store_capabilities.ts`.
   */
  ifMatch?: string;
  /** `Content-Type` stored with the object. */
  contentType?: string;
  /** User metadata (`x-amz-meta-<name>`), names lowercase. */
  metadata?: Record<string, string>;
}

/** Options for {@linkcode ObjectStore.putFile}. */
export interface PutFileOptions extends PutOptions {
  /**
   * Files up to this size go as one streamed PUT (so `createOnly` is atomic
   * on every store); larger ones as a multipart upload, where `createOnly`
   * is only as good as the store's CompleteMultipartUpload (ignored by Ceph
   * RGW 16.2).
   * @default {5 GiB, the S3 limit of one PUT}
   */
  multipartThreshold?: number;
  /**
   * Part size of a multipart upload (parts are streamed from the file).
   * @default {64 MiB}
   */
  partSize?: number;
  /**
   * Parts in flight at once.
   * @default {2}
   */
  concurrency?: number;
}

/** Options for {@linkcode ObjectStore.list}. */
export interface ListOptions {
  /** List only keys after this one (lexicographic order). */
  startAfter?: string;
  /**
   * Keys asked for per request (the store may send fewer).
   * @default {1000}
   */
  pageSize?: number;
  /**
   * List only the keys directly under `prefix` (none with this character
   * after the prefix), as with a directory listing.
   */
  delimiter?: string;
}

/** The operations the server uses; every key is relative to the store's prefix. */
export interface ObjectStore {
  /** Reads an object (or a range of it); throws {@linkcode ObjectNotFoundError}. */
  get(key: string, options?: GetOptions): Promise<GetResult>;
  /** Reads a small object whole, or returns undefined when there is none. */
  getBytes(key: string): Promise<{ bytes: Uint8Array; info: ObjectInfo } | undefined>;
  /** The object's metadata, or undefined when there is none. */
  head(key: string): Promise<ObjectInfo | undefined>;
  /** Writes an object from memory; returns its ETag. */
  put(key: string, bytes: Uint8Array, options?: PutOptions): Promise<string>;
  /**
   * Writes an object from a local file, streamed (memory does not grow with
   * the file); multipart above `multipartThreshold`. Returns its ETag.
   */
  putFile(path: string, key: string, options?: PutFileOptions): Promise<string>;
  /** Every object whose key starts with `prefix`, in key order, page by page. */
  list(prefix: string, options?: ListOptions): AsyncIterable<ObjectInfo>;
  /**
   * The "directories" directly under `prefix`: the distinct key parts up to
   * and without the next `/`, in order.
   */
  listPrefixes(prefix: string): AsyncIterable<string>;
  /** Deletes an object; deleting a missing object is not an error. */
  delete(key: string): Promise<void>;
  /**
   * Copies `source` to `target` inside the store (at most 5 GiB), with the
   * metadata and content type of `options`, unconditionally; returns the ETag.
   */
  copy(source: string, target: string, options?: PutOptions): Promise<string>;
  /** Starts a multipart upload to `key` sent part by part from local file ranges. */
  startMultipart(key: string, options?: PutOptions): Promise<StepwiseUpload>;
}

/** A multipart upload sent part by part; see {@linkcode ObjectStore.startMultipart}. */
export interface StepwiseUpload {
  /** Sends part `partNumber` (from 1) from `length` bytes of `path` at `offset`. */
  uploadPart(partNumber: number, path: string, offset: number, length: number): Promise<void>;
  /** Completes the upload with the parts sent; returns the object's ETag. */
  complete(): Promise<string>;
  /** Aborts the upload (its parts are dropped); never throws. */
  abort(): Promise<void>;
}

/** Thrown by a create-only put when the key is taken. */
export class ObjectExistsError extends Error {
  constructor(key: string) {
    super(`Cannot create object ${key}: an object of that name already exists`);
    this.name = "ObjectExistsError";
  }
}

/** Thrown by a read of a key that has no object. */
export class ObjectNotFoundError extends Error {
  constructor(key: string) {
    super(`Cannot read object ${key}: there is no object of that name`);
    this.name = "ObjectNotFoundError";
  }
}

/** Thrown when an `If-Match` precondition does not hold. */
export class PreconditionFailedError extends Error {
  constructor(key: string) {
    super(`Cannot use object ${key}: its ETag does not match`);
    this.name = "PreconditionFailedError";
  }
}

/** Thrown for a range that starts past the end of the object. */
export class RangeNotSatisfiableError extends RangeError {
  constructor(key: string) {
    super(`Cannot read object ${key}: the range starts past its end`);
    this.name = "RangeNotSatisfiableError";
  }
}

/** Any other failure of the store, after retries, with the store's status and error code. */
export class ObjectStoreError extends Error {
  /** HTTP status from the store, or 0 for a network failure. */
  readonly status: number;
  /** The store's error code (`SlowDown`, `InternalError`, ...), if it sent one. */
  readonly code: string | undefined;

  constructor(message: string, status: number, code?: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "ObjectStoreError";
    this.status = status;
    this.code = code;
  }
}
