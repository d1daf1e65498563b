/**
 * What the server knows about a package: what inspection read from its
 * `info/` section and what the spool measured of its bytes.
 *
 * @module
 */

/** The two conda package formats. */
export type PackageFormat = ".tar.bz2" | ".conda";

/** A JSON object as parsed from a package's `info/*.json`. */
export type JsonObject = Record<string, unknown>;

/** What inspection reads from a package's `info/` section. */
export interface PackageMetadata {
  /** The package's file format, from its filename. */
  format: PackageFormat;
  /** `name` from `info/index.json`. */
  name: string;
  /** `version` from `info/index.json`. */
  version: string;
  /** `build` from `info/index.json`. */
  build: string;
  /**
   * `subdir` from `info/index.json`, or derived from its `platform` and
   * `arch` when it has none; a well-formed subdir name.
   */
  subdir: string;
  /** The whole `info/index.json`, as parsed. */
  index: JsonObject;
  /** `info/about.json` when the package has one (used for `channeldata.json`). */
  about?: JsonObject;
  /**
   * `info/run_exports.json` when the package has one (used for
   * `run_exports.json`, shards and `channeldata.json`).
   */
  runExports?: JsonObject;
  /** Flags from `info/paths.json` (`text_prefix`, `post_link`, ...), for `channeldata.json`. */
  postInstall?: Record<string, boolean>;
  /** `source_url`/`source_git_url` from `info/recipe/meta.yaml`, for `channeldata.json`. */
  recipeSource?: JsonObject;
}

/** What the spool measured of an uploaded file's bytes. */
export interface FileDigest {
  /** Size in bytes. */
  size: number;
  /** Lowercase hex sha256 of the bytes. */
  sha256: string;
  /** Lowercase hex md5 of the bytes. */
  md5: string;
}

/** A package ready to be indexed: its metadata, its filename and its digests. */
export interface PackageRecordSource extends FileDigest {
  /** The package's basename, e.g. `foo-1.0-0.conda`. */
  filename: string;
  /** What inspection read. */
  metadata: PackageMetadata;
}
