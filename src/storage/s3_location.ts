/**
 * Where an S3 channel lives: `--storage s3://BUCKET/PREFIX` and the standard
 * AWS variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
 * `AWS_SESSION_TOKEN`, `AWS_REGION`, `AWS_ENDPOINT_URL`).
 *
 * @module
 */

/** A bucket and a key prefix inside it. */
export interface S3Location {
  /** Bucket name. */
  bucket: string;
  /** Key prefix without leading or trailing slash; "" for the bucket's root. */
  prefix: string;
}

/** Credentials, region and endpoint of an S3-compatible store. */
export interface S3Settings {
  /** Access key id. */
  accessKeyId: string;
  /** Secret access key. */
  secretAccessKey: string;
  /** Session token of temporary credentials. */
  sessionToken?: string;
  /** Signing region; `us-east-1` unless AWS_REGION says otherwise. */
  region: string;
  /**
   * Endpoint such as `http://127.0.0.1:7480` (Ceph RGW, MinIO), addressed
   * path-style (`ENDPOINT/BUCKET/KEY`); undefined for AWS S3 itself,
   * addressed virtual-host style (`https://BUCKET.s3.REGION.amazonaws.com/KEY`).
   */
  endpoint?: string;
}

/** The region used when AWS_REGION is not set. */
export const DEFAULT_S3_REGION = "us-east-1";

// S3 bucket naming rules (3-63 lowercase letters, digits, dots, hyphens).
const BUCKET = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;

/**
 * Parses `s3://BUCKET` or `s3://BUCKET/PREFIX`; throws `SyntaxError` for
 * anything else.
 *
 * @example Usage
 * ```ts
 * import { parseS3Url } from "./s3_location.ts";
 * console.log(parseS3Url("s3://conda/channels/main")); // { bucket: "conda", prefix: "channels/main" }
 * ```
 */
export function parseS3Url(url: string): S3Location {
  const match = /^s3:\/\/([^/]+)(?:\/(.*))?$/.exec(url);
  if (!match) {
    throw new SyntaxError(`Cannot parse storage URL: ${url} is not like s3://BUCKET/PREFIX`);
  }
  const bucket = match[1] ?? "";
  if (!BUCKET.test(bucket) || bucket.includes("..")) {
    throw new SyntaxError(`Cannot parse storage URL: ${bucket} is not a valid bucket name`);
  }
  const prefix = (match[2] ?? "").replace(/^\/+|\/+$/g, "");
  const segments = prefix === "" ? [] : prefix.split("/");
  if (segments.some((segment) => segment === "" || segment === "." || segment === "..")) {
    throw new SyntaxError(
      `Cannot parse storage URL: the prefix of ${url} has an empty, . or .. segment`,
    );
  }
  return { bucket, prefix };
}

/**
 * Reads the settings from the standard AWS variables; throws `TypeError`
 * naming the missing variable.
 */
export function s3SettingsFromEnv(env: Readonly<Record<string, string>>): S3Settings {
  const accessKeyId = env.AWS_ACCESS_KEY_ID;
  const secretAccessKey = env.AWS_SECRET_ACCESS_KEY;
  if (!accessKeyId) throw new TypeError("Cannot use S3 storage: AWS_ACCESS_KEY_ID is not set");
  if (!secretAccessKey) {
    throw new TypeError("Cannot use S3 storage: AWS_SECRET_ACCESS_KEY is not set");
  }
  const settings: S3Settings = {
    accessKeyId,
    secretAccessKey,
    region: env.AWS_REGION || DEFAULT_S3_REGION,
  };
  if (env.AWS_SESSION_TOKEN) settings.sessionToken = env.AWS_SESSION_TOKEN;
  if (env.AWS_ENDPOINT_URL) {
    let endpoint: URL;
    try {
      endpoint = new URL(env.AWS_ENDPOINT_URL);
    } catch {
      throw new TypeError(
        `Cannot use S3 storage: AWS_ENDPOINT_URL ${env.AWS_ENDPOINT_URL} is not a URL`,
      );
    }
    if (endpoint.protocol !== "http:" && endpoint.protocol !== "https:") {
      throw new TypeError("Cannot use S3 storage: AWS_ENDPOINT_URL must be http:// or https://");
    }
    settings.endpoint = endpoint.origin + endpoint.pathname.replace(/\/+$/, "");
  }
  return settings;
}
