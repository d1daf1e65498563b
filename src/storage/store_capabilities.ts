/**
 * Finds out which conditional writes a store really performs, on a scratch
 * key, at start-up: create-only (`If-None-Match: *`) is required; replace-if
 * (`If-Match: "<etag>"`) is an optional fast path. Ceph RGW 16.2 refuses
 * every quoted `If-Match` with 412, so it reports `ifMatch: false`; AWS S3,
 * MinIO and R2 are documented to report true.
 *
 * @module
 */

import { ObjectExistsError, type ObjectStore, PreconditionFailedError } from "./object_store.ts";

/** The conditional writes a store performs. */
export interface StoreCapabilities {
  /** A second create-only PUT of a key is refused. */
  createOnly: boolean;
  /** A PUT with the current quoted ETag in `If-Match` succeeds and one with another ETag is refused. */
  ifMatch: boolean;
}

/**
 * Probes the store under `scratchPrefix` (one object, deleted afterwards).
 *
 * @example Usage
 * ```ts ignore
 * const capabilities = await probeStoreCapabilities(store, ".probe");
 * if (!capabilities.createOnly) throw new Error("Cannot use this store");
 * ```
 */
export async function probeStoreCapabilities(
  store: ObjectStore,
  scratchPrefix: string,
): Promise<StoreCapabilities> {
  const key = `${scratchPrefix}/${crypto.randomUUID()}`;
  const bytes = (text: string) => new TextEncoder().encode(text);
  try {
    const etag = await store.put(key, bytes("first"), { createOnly: true });
    let createOnly = false;
    try {
      await store.put(key, bytes("second"), { createOnly: true });
    } catch (error) {
      if (!(error instanceof ObjectExistsError)) throw error;
      createOnly = true;
    }
    let ifMatch = false;
    try {
      await store.put(key, bytes("third"), { ifMatch: etag });
      try {
        await store.put(key, bytes("fourth"), { ifMatch: etag });
      } catch (error) {
        if (!(error instanceof PreconditionFailedError)) throw error;
        ifMatch = true;
      }
    } catch (error) {
      if (!(error instanceof PreconditionFailedError)) throw error;
    }
    return { createOnly, ifMatch };
  } finally {
    await store.delete(key);
  }
}
