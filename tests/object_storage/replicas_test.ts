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
import { SPOOL_DIR_NAME } from "../../src/storage/channel_storage.ts";
import type { PackageSpec } from "../helpers/conda_package.ts";
import { join } from "node:path";
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
import { curlUpload, runProgram, serverArgs, writeTestTls } from "../helpers/server_process.ts";
import { packageFilename, writeLargePackage } from "../helpers/conda_package.ts";
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

Deno.test({
  name:
    "kill -9 of a replica mid-run loses no acknowledged upload and leaves no orphan; a replica with an empty work directory starts from the bucket alone",
  ignore: noS3Engine,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await using set = await replicaSet("crash");
    const env = { AUH_S3_ORPHAN_GRACE_S: "3" };
    const a = await startReplica(set, "a", env);
    await using b = await startReplica(set, "b", env);
    const store = await openTestStore(set.prefix);

    // Left by "crashes" on purpose, so that both cases are certain to occur: an
    // object of an upload that never got its record (an orphan), and a package
    // copied into the bucket by hand (no upload id: to be indexed).
    const [orphan, byHand] = await buildArtifacts([
      { name: "orphan", version: "1.0", subdir: "linux-64" },
      { name: "byhand", version: "1.0", subdir: "noarch" },
    ]);
    await store.put(`linux-64/${orphan!.filename}`, orphan!.bytes, {
      createOnly: true,
      metadata: { "auh-upload": crypto.randomUUID() },
    });
    await store.put(`noarch/${byHand!.filename}`, byHand!.bytes, { createOnly: true });

    const artifacts = await buildArtifacts(distinctSpecs(40, "crash"));
    const acknowledged: Artifact[] = [];
    let next = 0;
    let killed = false;
    const uploads = Array.from({ length: 6 }, async (_, worker) => {
      while (next < artifacts.length) {
        const artifact = artifacts[next++]!;
        const replica = worker % 2 === 0 && !killed ? a : b;
        try {
          const answer = await uploadTo(replica, set, artifact);
          if (answer.status === STATUS.Created) acknowledged.push(artifact);
          else assert.equal(replica, a, `${artifact.filename} through b: ${answer.status}`);
        } catch {
          assert.equal(replica, a); // the killed replica's connections break
        }
        if (acknowledged.length === 8 && !killed) {
          killed = true;
          a.kill("SIGKILL");
        }
      }
    });
    await Promise.all(uploads);
    await a.status;
    assert(killed);
    assert(acknowledged.length >= 30, `acknowledged ${acknowledged.length}`);

    // A new replica with an empty work directory.
    await using c = await startReplica(set, "c-empty", env);
    const inBucket = async () => {
      const keys = new Map<string, string>();
      for await (const info of store.list("")) {
        if (/^[^./][^/]*\/[^/]+\.(conda|tar\.bz2)$/.test(info.key)) keys.set(info.key, info.etag);
      }
      return keys;
    };
    const settled = await eventually(async () => {
      const objects = await inBucket();
      const recorded = new Set<string>();
      for (const subdir of SUBDIRS) {
        for (const filename of (await servedRecords(c, set, subdir)).keys()) {
          recorded.add(`${subdir}/${filename}`);
        }
      }
      // Every object has a record and every record an object: no orphan, nothing lost.
      return objects.size === recorded.size && [...objects.keys()].every((k) => recorded.has(k));
    }, 30_000);
    assert(settled, "the bucket's packages and the index agree");
    for (const replica of [b, c]) {
      const records = new Map<string, string>();
      for (const subdir of SUBDIRS) {
        for (const [filename, sha256] of await servedRecords(replica, set, subdir)) {
          records.set(`${subdir}/${filename}`, sha256);
        }
      }
      for (const artifact of acknowledged) {
        assert.equal(records.get(`${artifact.subdir}/${artifact.filename}`), artifact.sha256);
      }
      assert.equal(records.get(`noarch/${byHand!.filename}`), byHand!.sha256);
      assert.equal(records.has(`linux-64/${orphan!.filename}`), false);
    }
    assert.equal(await store.head(`linux-64/${orphan!.filename}`), undefined, "orphan swept");
    // Every record's bytes are in the bucket.
    for (const [key] of await inBucket()) {
      const response = await fetch(new URL(`/${key}`, c.url), { client: set.client });
      const hash = createHash("sha256").update(new Uint8Array(await response.arrayBuffer()));
      const subdir = key.slice(0, key.indexOf("/"));
      const records = await servedRecords(c, set, subdir);
      assert.equal(hash.digest("hex"), records.get(key.slice(subdir.length + 1)), key);
    }
    // Uploads go on through the new replica.
    const [after] = await buildArtifacts([{ name: "after", version: "1.0" }]);
    assert.equal((await uploadTo(c, set, after!)).status, STATUS.Created);
  },
});

Deno.test({
  name:
    "a 512 MiB package is sent to the store while it arrives (multipart to a staging object, then copied under its name) with the replica's peak RSS at most 256 MiB; a second upload of the name is refused; another replica serves it; nothing staged, claimed or spooled is left",
  ignore: noS3Engine,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await using set = await replicaSet("large");
    await using a = await startReplica(set, "a", {}, ["--max_upload_size", "1G"]);
    await using b = await startReplica(set, "b");
    const spec: PackageSpec = { name: "large", version: "1.0", subdir: "linux-64" };
    const file = join(set.dir, packageFilename(spec));
    const size = await writeLargePackage(file, spec, 512 * 1024 * 1024);
    const sha256 = createHash("sha256");
    for await (const chunk of (await Deno.open(file)).readable) sha256.update(chunk);
    const expected = sha256.digest("hex");

    const first = await curlUpload(a.url, { token: set.token, file }, {
      caFile: set.tls.caFile,
      maxTimeSeconds: 600,
    });
    assert.equal(first.status, STATUS.Created, first.body);
    const peakMiB = await a.rssPeakKiB() / 1024;
    assert(peakMiB <= 256, `peak RSS ${peakMiB.toFixed(0)} MiB`);
    const store = await openTestStore(set.prefix);
    const info = await store.head(`linux-64/${packageFilename(spec)}`);
    assert.equal(info?.size, size);
    // Below 5 GiB a package sent after arriving is one PUT (a plain MD5 ETag);
    // one sent while arriving is a multipart object of 64 MiB parts.
    const parts = Math.ceil(size / (64 * 1024 * 1024));
    assert.match(info?.etag ?? "", new RegExp(`-${parts}"$`), `a multipart ETag of ${parts} parts`);
    const second = await curlUpload(a.url, { token: set.token, file }, {
      caFile: set.tls.caFile,
      maxTimeSeconds: 600,
    });
    assert.equal(second.status, STATUS.Conflict, second.body);

    const response = await fetch(new URL(`/linux-64/${packageFilename(spec)}`, b.url), {
      client: set.client,
    });
    assert.equal(response.status, STATUS.OK);
    assert.equal(response.headers.get("content-length"), String(size));
    const served = createHash("sha256");
    for await (const chunk of response.body!) served.update(chunk);
    assert.equal(served.digest("hex"), expected);
    assert.equal((await servedRecords(b, set, "linux-64")).get(packageFilename(spec)), expected);
    const left: string[] = [];
    for await (const object of store.list(".index/staging/")) left.push(object.key);
    for await (const object of store.list(".index/claims/")) left.push(object.key);
    // The spool (scratch, never synced to disk) is gone with the upload.
    for await (const entry of Deno.readDir(join(set.dir, "a", SPOOL_DIR_NAME))) {
      left.push(entry.name);
    }
    assert.deepEqual(left, []);
  },
});

Deno.test({
  name:
    "with --allow_overwrite a replacement through one replica is served by the other (record and bytes); without force the name stays taken",
  ignore: noS3Engine,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await using set = await replicaSet("replace");
    await using a = await startReplica(set, "a", {}, ["--allow_overwrite"]);
    await using b = await startReplica(set, "b", {}, ["--allow_overwrite"]);
    const [first, second] = await buildArtifacts([
      { name: "replaced", version: "1.0", files: { "share/replaced/v.txt": "first\n" } },
      { name: "replaced", version: "1.0", files: { "share/replaced/v.txt": "second\n" } },
    ]);
    assert.notEqual(first!.sha256, second!.sha256);
    assert.equal((await uploadTo(a, set, first!)).status, STATUS.Created);
    assert.equal((await uploadTo(b, set, second!)).status, STATUS.Conflict);
    const replaced = await fetch(
      new URL(`/linux-64/${second!.filename}?force=true`, b.url),
      {
        method: "PUT",
        client: set.client,
        headers: { authorization: `Bearer ${set.token}` },
        body: second!.bytes,
      },
    );
    assert.equal(replaced.status, STATUS.Created, await replaced.text());
    const seen = await eventually(async () => {
      const records = await servedRecords(a, set, "linux-64");
      const response = await fetch(new URL(`/linux-64/${first!.filename}`, a.url), {
        client: set.client,
      });
      const bytes = new Uint8Array(await response.arrayBuffer());
      const hash = createHash("sha256").update(bytes).digest("hex");
      return records.get(first!.filename) === second!.sha256 && hash === second!.sha256;
    }, 5_000);
    assert(seen, "the replacement is seen by the other replica");
  },
});

Deno.test({
  name: "a replica whose store cannot be reached does not start, with one line saying why",
  ignore: noS3Engine,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await using set = await replicaSet("unreachable");
    const work = join(set.dir, "work");
    await Deno.mkdir(work);
    const args = [
      ...await serverArgs(work, set.tls, set.token),
      "--storage",
      set.storage,
    ];
    const result = await runProgram(args, {
      env: { AWS_ENDPOINT_URL: "http://127.0.0.1:9" },
      timeoutMs: 60_000,
    });
    assert.equal(result.code, 1);
    assert.match(result.stderr, /Cannot open channel s3:\/\/auh-test\/unreachable-[0-9a-f]+/);
  },
});

Deno.test({
  name:
    "the index command with --storage indexes packages copied into the bucket by hand and writes the index files there",
  ignore: noS3Engine,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await using set = await replicaSet("index-command");
    const store = await openTestStore(set.prefix);
    const artifacts = await buildArtifacts([
      { name: "copied", version: "1.0", subdir: "linux-64" },
      { name: "copied", version: "1.0", subdir: "noarch", format: ".tar.bz2" },
    ]);
    for (const artifact of artifacts) {
      await store.put(`${artifact.subdir}/${artifact.filename}`, artifact.bytes);
    }
    const work = join(set.dir, "work");
    await Deno.mkdir(work);
    const result = await runProgram(["index", work, "--storage", set.storage], {
      env: { AWS_ENDPOINT_URL: Deno.env.get("AUH_S3_TEST_ENDPOINT") ?? "" },
      timeoutMs: 60_000,
    });
    assert.equal(result.code, 0, result.stderr);
    for (const artifact of artifacts) {
      const read = await store.getBytes(`${artifact.subdir}/repodata.json`);
      const repodata = JSON.parse(new TextDecoder().decode(read!.bytes));
      const section = artifact.filename.endsWith(".conda") ? "packages.conda" : "packages";
      assert.equal(repodata[section][artifact.filename].sha256, artifact.sha256);
      assert(await store.head(`${artifact.subdir}/repodata.json.zst`));
    }
    assert(await store.head("channeldata.json"));
  },
});
