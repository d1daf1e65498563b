/**
 * Replicas for the object-storage tests: real server processes under the
 * shipped flags and permissions, with TLS, each with its own work directory
 * (`-d`) and all on one `--storage s3://auh-test/<prefix>` of the Ceph RGW
 * that `deno task test:s3` starts.
 *
 * @module
 */

import { join } from "node:path";
import type { PackageSpec } from "./conda_package.ts";
import { buildPackage, packageFilename } from "./conda_package.ts";
import { sha256Hex } from "./upload_clients.ts";
import {
  serverArgs,
  type ServerProcess,
  startServerProcess,
  type TestTlsFiles,
} from "./server_process.ts";
import { TEST_BUCKET } from "./s3_test_store.ts";

/** A package built for upload. */
export interface Artifact {
  /** Its spec. */
  spec: PackageSpec;
  /** Archive filename. */
  filename: string;
  /** Subdir. */
  subdir: string;
  /** The bytes. */
  bytes: Uint8Array<ArrayBuffer>;
  /** sha256, lowercase hex. */
  sha256: string;
}

/** Builds the packages of `specs`. */
export async function buildArtifacts(specs: PackageSpec[]): Promise<Artifact[]> {
  return await Promise.all(specs.map(async (spec) => {
    const bytes = new Uint8Array(await buildPackage(spec));
    return {
      spec,
      filename: packageFilename(spec),
      subdir: spec.subdir ?? "linux-64",
      bytes,
      sha256: sha256Hex(bytes),
    };
  }));
}

/** What the replicas of one test share. */
export interface ReplicaSet {
  /** `s3://auh-test/<prefix>`. */
  storage: string;
  /** The key prefix in the test bucket. */
  prefix: string;
  /** TLS files (one certificate for every replica). */
  tls: TestTlsFiles;
  /** The upload token. */
  token: string;
  /** A client trusting the test CA. */
  client: Deno.HttpClient;
  /** Directory for work directories and files. */
  dir: string;
}

/** Environment of every replica: the test engine and short times. */
export function replicaEnv(extra: Record<string, string> = {}): Record<string, string> {
  return {
    AWS_ENDPOINT_URL: Deno.env.get("AUH_S3_TEST_ENDPOINT") ?? "",
    AUH_S3_REFRESH_MS: "300",
    ...extra,
  };
}

/** Starts one replica with work directory `dir/<name>`. */
export async function startReplica(
  set: ReplicaSet,
  name: string,
  env: Record<string, string> = {},
  extraArgs: string[] = [],
): Promise<ServerProcess> {
  const work = join(set.dir, name);
  await Deno.mkdir(work, { recursive: true });
  return await startServerProcess(
    [...await serverArgs(work, set.tls, set.token), "--storage", set.storage, ...extraArgs],
    { env: replicaEnv(env), startTimeoutMs: 60_000 },
  );
}

/** A fresh prefix in the test bucket. */
export function freshStorage(name: string): { storage: string; prefix: string } {
  const prefix = `${name}-${crypto.randomUUID().slice(0, 8)}`;
  return { storage: `s3://${TEST_BUCKET}/${prefix}`, prefix };
}

/** Uploads `artifact` through `replica` (`POST /` with token and artifact); status and text. */
export async function uploadTo(
  replica: ServerProcess,
  set: ReplicaSet,
  artifact: Artifact,
): Promise<{ status: number; text: string }> {
  const form = new FormData();
  form.append("token", set.token);
  form.append("artifact", new Blob([artifact.bytes]), artifact.filename);
  const response = await fetch(new URL("/", replica.url), {
    method: "POST",
    body: form,
    client: set.client,
  });
  return { status: response.status, text: await response.text() };
}

/** The records (filename -> sha256) of `subdir` as `replica` serves them. */
export async function servedRecords(
  replica: ServerProcess,
  set: ReplicaSet,
  subdir: string,
): Promise<Map<string, string>> {
  const response = await fetch(new URL(`/${subdir}/repodata.json`, replica.url), {
    client: set.client,
  });
  const records = new Map<string, string>();
  if (response.status === 404) {
    await response.body?.cancel();
    return records;
  }
  if (response.status !== 200) throw new Error(`repodata.json: ${response.status}`);
  const repodata = await response.json() as Record<string, Record<string, { sha256: string }>>;
  for (const section of ["packages", "packages.conda"]) {
    for (const [filename, record] of Object.entries(repodata[section] ?? {})) {
      records.set(filename, record.sha256);
    }
  }
  return records;
}

/** Polls `check` until it returns true or `timeoutMs` passes; returns the last answer. */
export async function eventually(
  check: () => Promise<boolean>,
  timeoutMs = 15_000,
): Promise<boolean> {
  const deadline = performance.now() + timeoutMs;
  while (true) {
    if (await check()) return true;
    if (performance.now() > deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}
