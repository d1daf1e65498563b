/**
 * A throwaway channel directory with its storage, and real packages published
 * into it the way the upload path hands them to the index.
 */

import { createHash } from "node:crypto";
import { dirname, join } from "node:path";
import { inspectPackage } from "../../src/package/inspect_package.ts";
import type { PackageRecordSource } from "../../src/package/package_metadata.ts";
import { ChannelStorage } from "../../src/storage/channel_storage.ts";
import { packageFilename, type PackageSpec, writePackage } from "./conda_package.ts";

/** A temporary channel root and its storage; removed on dispose. */
export interface TempChannel extends AsyncDisposable {
  root: string;
  storage: ChannelStorage;
}

/**
 * Makes a channel in a new temporary directory named after `prefix`, holding
 * `files` (channel-relative path to text; their directories are made).
 */
export async function tempChannel(
  prefix: string,
  files: Record<string, string> = {},
): Promise<TempChannel> {
  const root = await Deno.makeTempDir({ prefix });
  for (const [path, text] of Object.entries(files)) {
    await Deno.mkdir(dirname(join(root, path)), { recursive: true });
    await Deno.writeTextFile(join(root, path), text);
  }
  const storage = await ChannelStorage.open(root);
  return {
    root,
    storage,
    async [Symbol.asyncDispose]() {
      await storage.settle();
      storage.close();
      await Deno.remove(root, { recursive: true });
    },
  };
}

/** The hex digest of `bytes` (`sha256`, `md5`, ...). */
export function hexDigest(algorithm: string, bytes: Uint8Array): string {
  return createHash(algorithm).update(bytes).digest("hex");
}

/** Writes a real package into its subdir and returns what the upload path would hand to add(). */
export async function publish(
  channel: TempChannel,
  spec: PackageSpec,
): Promise<PackageRecordSource> {
  const dir = join(channel.root, spec.subdir ?? "linux-64");
  await Deno.mkdir(dir, { recursive: true });
  const path = await writePackage(dir, spec);
  const filename = packageFilename(spec);
  const bytes = await Deno.readFile(path);
  return {
    filename,
    size: bytes.length,
    sha256: hexDigest("sha256", bytes),
    md5: hexDigest("md5", bytes),
    metadata: await inspectPackage(path, filename),
  };
}
