/**
 * Several replicas on one bucket: real server processes (shipped flags and
 * permissions, TLS) with `--storage s3://...` on the Ceph RGW of
 * `deno task test:s3`.
 *
 * @module
 */

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { STATUS } from "../../src/http/status.ts";
import type { PackageSpec } from "../helpers/conda_package.ts";
import { solveWithRattler } from "../helpers/rattler_solve.ts";
import {
  type Artifact,
  buildArtifacts,
  eventually,
  freshStorage,
  type ReplicaSet,
  servedRecords,
  startReplica,
  uploadTo,
} from "../helpers/s3_replicas.ts";
import { writeTestTls } from "../helpers/server_process.ts";
import { noS3Engine, openTestStore } from "../helpers/s3_test_store.ts";

const SUBDIRS = ["linux-64", "noarch", "osx-arm64"] as const;

async function replicaSet(name: string): Promise<ReplicaSet & AsyncDisposable> {
  const dir = await Deno.makeTempDir({ prefix: `auh-${name}-` });
  const tls = await writeTestTls(dir);
  const client = Deno.createHttpClient({ caCerts: [await Deno.readTextFile(tls.caFile)] });
  const { storage, prefix } = freshStorage(name);
  await openTestStore(prefix); // makes the bucket
  return {
    storage,
    prefix,
    tls,
    token: "replica-test-token-0123456789abcdef",
    client,
    dir,
    async [Symbol.asyncDispose]() {
      client.close();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
}

function distinctSpecs(count: number, tag: string): PackageSpec[] {
  return Array.from({ length: count }, (_, i) => ({
    name: `${tag}${i}`,
    version: `1.${i % 5}`,
    subdir: SUBDIRS[i % SUBDIRS.length]!,
    format: i % 2 === 0 ? ".conda" : ".tar.bz2",
  } satisfies PackageSpec));
}

Deno.test({
  name:
    "three replicas on one bucket: concurrent uploads and same-name races (one 201, the rest 409), every replica serves every record, Range and store ETags, a delete seen by the others, rattler solves",
  ignore: noS3Engine,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await using set = await replicaSet("three");
    await using a = await startReplica(set, "a");
    await using b = await startReplica(set, "b");
    await using c = await startReplica(set, "c");
    const replicas = [a, b, c];

    const distinct = await buildArtifacts(distinctSpecs(24, "pkg"));
    const racing = await buildArtifacts(Array.from({ length: 6 * 3 }, (_, i) => ({
      name: `race${Math.floor(i / 3)}`,
      version: "1.0",
      subdir: SUBDIRS[Math.floor(i / 3) % SUBDIRS.length]!,
      files: { [`share/race/contender.txt`]: `contender ${i % 3}\n` },
    })));
    const app = await buildArtifacts([{
      name: "app",
      version: "2.0",
      subdir: "noarch",
      depends: ["pkg1 1.1.*"],
    }]);

    // Distinct uploads, 6 at a time, round robin over the replicas.
    const answers: { artifact: Artifact; status: number; text: string }[] = [];
    let next = 0;
    await Promise.all(Array.from({ length: 6 }, async () => {
      while (next < distinct.length) {
        const i = next++;
        const artifact = distinct[i]!;
        answers.push({ artifact, ...await uploadTo(replicas[i % 3]!, set, artifact) });
      }
    }));
    for (const answer of answers) {
      assert.equal(answer.status, STATUS.Created, `${answer.artifact.filename}: ${answer.text}`);
    }

    // Races: the three contenders for a name go at once, one through each replica.
    const winners: Artifact[] = [];
    for (let name = 0; name < 6; name++) {
      const contenders = racing.slice(name * 3, name * 3 + 3);
      const results = await Promise.all(
        contenders.map((artifact, i) => uploadTo(replicas[(name + i) % 3]!, set, artifact)),
      );
      const statuses = results.map((result) => result.status).sort();
      assert.deepEqual(statuses, [STATUS.Created, STATUS.Conflict, STATUS.Conflict], `race${name}`);
      winners.push(contenders[results.findIndex((result) => result.status === STATUS.Created)]!);
    }
    assert.equal((await uploadTo(c, set, app[0]!)).status, STATUS.Created);

    // Every replica serves every acknowledged record (its own writes at once, others' soon).
    const expected = [...distinct, ...winners, ...app[0] ? [app[0]] : []];
    for (const replica of replicas) {
      const complete = await eventually(async () => {
        for (const subdir of SUBDIRS) {
          const records = await servedRecords(replica, set, subdir);
          for (const artifact of expected.filter((artifact) => artifact.subdir === subdir)) {
            if (records.get(artifact.filename) !== artifact.sha256) return false;
          }
          const count = expected.filter((artifact) => artifact.subdir === subdir).length;
          if (records.size !== count) return false;
        }
        return true;
      });
      assert(complete, `replica ${replica.url} serves every record`);
    }

    // A package uploaded through a serves from c: whole, by range, with the store's ETag.
    const store = await openTestStore(set.prefix);
    const sample = distinct[0]!;
    const key = `${sample.subdir}/${sample.filename}`;
    const whole = await fetch(new URL(`/${key}`, c.url), { client: set.client });
    const body = new Uint8Array(await whole.arrayBuffer());
    assert.equal(whole.status, STATUS.OK);
    assert.equal(createHash("sha256").update(body).digest("hex"), sample.sha256);
    assert.equal(whole.headers.get("etag"), (await store.head(key))?.etag);
    const part = await fetch(new URL(`/${key}`, b.url), {
      client: set.client,
      headers: { range: "bytes=10-99" },
    });
    assert.equal(part.status, STATUS.PartialContent);
    assert.deepEqual(new Uint8Array(await part.arrayBuffer()), sample.bytes.subarray(10, 100));
    assert.equal(part.headers.get("content-range"), `bytes 10-99/${sample.bytes.length}`);
    const again = await fetch(new URL(`/${key}`, a.url), {
      client: set.client,
      headers: { "if-none-match": whole.headers.get("etag")! },
    });
    await again.body?.cancel();
    assert.equal(again.status, STATUS.NotModified);
    // The bucket holds the index files under their public names.
    for (const name of ["repodata.json", "repodata.json.zst", "run_exports.json"]) {
      assert((await store.head(`${sample.subdir}/${name}`)) !== undefined, name);
    }
    assert((await store.head(`${sample.subdir}/repodata_shards.msgpack.zst`)) !== undefined);

    // rattler solves from a replica that did not take the uploads.
    const solved = await solveWithRattler(["app"], b.url, ["linux-64", "noarch"], set.tls.caFile);
    assert.deepEqual(
      solved.map((record) => record.filename).sort(),
      [
        app[0]!.filename,
        distinct[1]!.filename,
      ].sort(),
    );

    // A delete through b disappears from a and c within the refresh time.
    const doomed = distinct[3]!;
    const deleted = await fetch(new URL(`/${doomed.subdir}/${doomed.filename}`, b.url), {
      method: "DELETE",
      client: set.client,
      headers: { authorization: `Bearer ${set.token}` },
    });
    assert.equal(deleted.status, STATUS.OK, await deleted.text());
    for (const replica of [a, c]) {
      const gone = await eventually(async () => {
        const records = await servedRecords(replica, set, doomed.subdir);
        const file = await fetch(new URL(`/${doomed.subdir}/${doomed.filename}`, replica.url), {
          client: set.client,
        });
        await file.body?.cancel();
        return !records.has(doomed.filename) && file.status === STATUS.NotFound;
      }, 5_000);
      assert(gone, `the delete is seen by ${replica.url}`);
    }
    assert.equal(await store.head(`${doomed.subdir}/${doomed.filename}`), undefined);
  },
});
