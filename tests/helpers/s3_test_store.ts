/**
 * The real S3 engine for the object-storage tests: the Ceph RGW that
 * `scripts/ceph_rgw.ts` starts (`deno task test:s3`) announces itself with
 * `AUH_S3_TEST_ENDPOINT` and the `AWS_*` credentials. Without them the S3
 * tests are ignored and say so once.
 *
 * @module
 */

import { S3ObjectStore, type S3ObjectStoreOptions } from "../../src/storage/s3_object_store.ts";
import { type S3Settings, s3SettingsFromEnv } from "../../src/storage/s3_location.ts";

/** The bucket every S3 test works in, each test under its own prefix. */
export const TEST_BUCKET = "auh-test";

function settingsFromEnv(): S3Settings | undefined {
  if (!Deno.env.get("AUH_S3_TEST_ENDPOINT")) return undefined;
  return s3SettingsFromEnv({
    ...Deno.env.toObject(),
    AWS_ENDPOINT_URL: Deno.env.get("AUH_S3_TEST_ENDPOINT") ?? "",
  });
}

/** The test engine's settings, or undefined when none is running. */
export const s3TestSettings: S3Settings | undefined = settingsFromEnv();

/** True when the S3 tests must be ignored (no engine). */
export const noS3Engine: boolean = s3TestSettings === undefined;

if (noS3Engine) {
  console.warn(
    "S3 tests ignored: AUH_S3_TEST_ENDPOINT is not set (run `deno task test:s3` to start Ceph RGW and run them)",
  );
}

let bucketReady: Promise<void> | undefined;

/**
 * A store on the test bucket under a fresh prefix (the bucket is made once).
 * Throws when no engine is running; guard the test with `ignore: noS3Engine`.
 */
export async function newTestStore(
  name: string,
  options: S3ObjectStoreOptions = {},
): Promise<S3ObjectStore> {
  return await openTestStore(`${name}-${crypto.randomUUID().slice(0, 8)}`, options);
}

/** A store on the test bucket under the given prefix (shared with a subprocess). */
export async function openTestStore(
  prefix: string,
  options: S3ObjectStoreOptions = {},
): Promise<S3ObjectStore> {
  if (s3TestSettings === undefined) throw new TypeError("Cannot run: no S3 test engine");
  const store = new S3ObjectStore(s3TestSettings, { bucket: TEST_BUCKET, prefix }, options);
  bucketReady ??= store.createBucket();
  await bucketReady;
  return store;
}
