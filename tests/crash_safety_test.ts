/**
 * Crash safety: the real program (a subprocess under the shipped
 * permissions) is killed with SIGKILL at random moments while clients upload
 * to it — small packages back to back, so that kills land while one is being
 * spooled, published or indexed, and now and then a 20 MiB package streamed
 * slowly, so that kills land mid-body — and sometimes again while it starts
 * up. After each kill it is restarted on the same channel, and once it
 * listens the channel must hold every invariant of
 * {@linkcode checkChannelInvariants} and every upload acknowledged with a 201
 * before any kill must still be indexed with its checksums.
 *
 * The moments are drawn from a seeded generator; the seed is printed, and
 * `AUH_CRASH_SEED=<n>` replays it. The suite runs 50 trials (about a minute on
 * 2 cores, most of it the restarts); `AUH_CRASH_TRIALS=<n>` runs n instead, for
 * a long soak, e.g.
 *
 *     AUH_CRASH_TRIALS=2000 npx deno@2.9.6 test --allow-all tests/crash_safety_test.ts
 *
 * The first tests check the checker: each kind of damage it must report.
 */

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { join } from "node:path";
import { zstdCompressSync } from "node:zlib";
import { STATUS } from "../src/http/status.ts";
import { SPOOL_DIR_NAME } from "../src/storage/channel_storage.ts";
import {
  checkChannelInvariants,
  type PackageFacts,
  parseStrictJson,
} from "./helpers/channel_invariants.ts";
import {
  buildPackage,
  packageFilename,
  type PackageSpec,
  writeLargePackage,
} from "./helpers/conda_package.ts";
import { seededRandom } from "./helpers/hostile_corpus.ts";
import {
  DENO_JSON,
  MAIN_TS,
  programPermissions,
  serverArgs,
  type ServerProcess,
  startServerProcess,
  writeTestTls,
} from "./helpers/server_process.ts";

const TRIALS = Number(Deno.env.get("AUH_CRASH_TRIALS") ?? 50);
const SEED = Number(Deno.env.get("AUH_CRASH_SEED") ?? Math.floor(Math.random() * 2 ** 31));
const SUBDIRS = ["linux-64", "noarch", "osx-arm64", "win-64"] as const;
const MiB = 1024 * 1024;
/** Payload of the large packages, streamed in slowly. */
const LARGE_PAYLOAD = 20 * MiB;
/** The large body arrives in chunks of this size... */
const LARGE_CHUNK = 256 * 1024;
/** ...one every this many ms (about 0.6 s for the whole body). */
const LARGE_CHUNK_DELAY_MS = 6;

const encoder = new TextEncoder();

interface Artifact {
  filename: string;
  subdir: string;
  bytes: Uint8Array<ArrayBuffer>;
  sha256: string;
}

function sha256(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

async function artifact(spec: PackageSpec): Promise<Artifact> {
  const bytes = new Uint8Array(await buildPackage(spec));
  return {
    filename: packageFilename(spec),
    subdir: spec.subdir ?? "linux-64",
    bytes,
    sha256: sha256(bytes),
  };
}

/** The environment without `AUH_*` variables, which the program would read as flags. */
function withoutAuhVariables(): Record<string, string> {
  return Object.fromEntries(
    Object.entries(Deno.env.toObject()).filter(([key]) => !key.startsWith("AUH_")),
  );
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// ------------------------------------------------------- the checker itself

/** A channel with two published, indexed packages, written as the built-in index writes it. */
async function soundChannel(root: string): Promise<Artifact[]> {
  const artifacts = await Promise.all([
    artifact({ name: "a", version: "1.0" }),
    artifact({ name: "b", version: "1.0", format: ".tar.bz2" }),
  ]);
  await Deno.mkdir(join(root, "linux-64"), { recursive: true });
  await Deno.mkdir(join(root, SPOOL_DIR_NAME));
  const repodata: Record<string, Record<string, unknown>> = { packages: {}, "packages.conda": {} };
  for (const { filename, bytes, sha256 } of artifacts) {
    await Deno.writeFile(join(root, "linux-64", filename), bytes);
    repodata[filename.endsWith(".conda") ? "packages.conda" : "packages"]![filename] = {
      build: "0",
      md5: createHash("md5").update(bytes).digest("hex"),
      name: filename.slice(0, 1),
      sha256,
      size: bytes.length,
      subdir: "linux-64",
      version: "1.0",
    };
  }
  await writeRepodata(
    root,
    "linux-64",
    JSON.stringify({ info: { subdir: "linux-64" }, ...repodata }),
  );
  await Deno.writeTextFile(join(root, "linux-64", "index.html"), "<html></html>");
  await Deno.writeTextFile(join(root, "channeldata.json"), "{}");
  return artifacts;
}

async function writeRepodata(root: string, subdir: string, text: string): Promise<void> {
  const bytes = encoder.encode(text);
  await Deno.writeFile(join(root, subdir, "repodata.json"), bytes);
  await Deno.writeFile(join(root, subdir, "repodata.json.zst"), zstdCompressSync(bytes));
}

async function withChannel(fn: (root: string, artifacts: Artifact[]) => Promise<void>) {
  const root = await Deno.makeTempDir({ prefix: "auh-invariants-" });
  try {
    await fn(root, await soundChannel(root));
  } finally {
    await Deno.remove(root, { recursive: true });
  }
}

Deno.test("checkChannelInvariants() finds nothing wrong with a sound channel", async () => {
  await withChannel(async (root) => {
    assert.deepEqual(await checkChannelInvariants(root), []);
  });
});

Deno.test("checkChannelInvariants() reports each kind of damage", async () => {
  const cases: [RegExp, (root: string, artifacts: Artifact[]) => Promise<void>][] = [
    [/a-1\.0-0\.conda: not a complete, readable package/, async (root, [a]) => {
      await Deno.writeFile(join(root, "linux-64", a!.filename), a!.bytes.subarray(0, 600));
    }],
    [/b-1\.0-0\.tar\.bz2: not a complete, readable package/, async (root, [, b]) => {
      await Deno.writeFile(
        join(root, "linux-64", b!.filename),
        b!.bytes.subarray(0, b!.bytes.length - 4),
      );
    }],
    [/c-1\.0-0\.conda: package file not in repodata\.json/, async (root) => {
      const c = await artifact({ name: "c", version: "1.0" });
      await Deno.writeFile(join(root, "linux-64", c.filename), c.bytes);
    }],
    [/a-1\.0-0\.conda: indexed but its file is missing/, async (root, [a]) => {
      await Deno.remove(join(root, "linux-64", a!.filename));
    }],
    [/a-1\.0-0\.conda: record sha256 .* but the file has/, async (root, [a]) => {
      const other = await artifact({ name: "a", version: "1.0", files: { "x.txt": "other" } });
      await Deno.writeFile(join(root, "linux-64", a!.filename), other.bytes);
    }],
    [/repodata\.json: does not parse: duplicate key "a-1\.0-0\.conda"/, async (root) => {
      const path = join(root, "linux-64", "repodata.json");
      const text = await Deno.readTextFile(path);
      const member = /"a-1\.0-0\.conda":\{[^}]*\}/.exec(text)![0];
      await writeRepodata(root, "linux-64", text.replace(member, `${member},${member}`));
    }],
    [/a-1\.0-0\.conda: listed under "packages", which is not its section/, async (root) => {
      const path = join(root, "linux-64", "repodata.json");
      const repodata = JSON.parse(await Deno.readTextFile(path));
      repodata.packages["a-1.0-0.conda"] = repodata["packages.conda"]["a-1.0-0.conda"];
      delete repodata["packages.conda"]["a-1.0-0.conda"];
      await writeRepodata(root, "linux-64", JSON.stringify(repodata));
    }],
    [/linux-64\/repodata\.json: does not parse/, async (root) => {
      await writeRepodata(root, "linux-64", '{"packages":{');
    }],
    [/repodata\.json\.zst: does not decompress to repodata\.json's bytes/, async (root) => {
      const path = join(root, "linux-64", "repodata.json");
      await Deno.writeTextFile(path, (await Deno.readTextFile(path)) + " ");
    }],
    [/channeldata\.json: does not parse/, async (root) => {
      await Deno.writeTextFile(join(root, "channeldata.json"), "{");
    }],
    [/\.upload-spool\/1-x\.part: spool file left after start-up/, async (root) => {
      await Deno.writeTextFile(join(root, SPOOL_DIR_NAME, "1-x.part"), "partial");
    }],
    [/linux-64\/\.repodata\.json\.1234\.tmp: temporary file left after start-up/, async (root) => {
      await Deno.writeTextFile(join(root, "linux-64", ".repodata.json.1234.tmp"), "{");
    }],
    [/plan9-64\/a-1\.0-0\.conda: package file outside an indexed subdir/, async (root, [a]) => {
      await Deno.mkdir(join(root, "plan9-64"));
      await Deno.writeFile(join(root, "plan9-64", a!.filename), a!.bytes);
    }],
  ];
  for (const [expected, damage] of cases) {
    await withChannel(async (root, artifacts) => {
      await damage(root, artifacts);
      const violations = await checkChannelInvariants(root);
      assert.ok(violations.some((line) => expected.test(line)), `${expected}: ${violations}`);
    });
  }
});

Deno.test("checkChannelInvariants() skips start-up checks unless settled, and reuses cached facts", async () => {
  await withChannel(async (root, [a]) => {
    await Deno.writeTextFile(join(root, SPOOL_DIR_NAME, "1-x.part"), "partial");
    await Deno.writeTextFile(join(root, "linux-64", ".index.html.1.tmp"), "");
    const path = join(root, "linux-64", "repodata.json");
    await Deno.writeTextFile(path, (await Deno.readTextFile(path)) + " ");
    assert.deepEqual(await checkChannelInvariants(root, { settled: false }), []);
    assert.equal((await checkChannelInvariants(root)).length, 3);

    const cache = new Map<string, PackageFacts>();
    await checkChannelInvariants(root, { settled: false, cache });
    assert.equal(cache.size, 2);
    // Any change to the file (here: its content, same size) is noticed despite the cache.
    const file = join(root, "linux-64", a!.filename);
    const bytes = await Deno.readFile(file);
    bytes[bytes.length - 30]! ^= 0xff;
    await Deno.writeFile(file, bytes);
    const violations = await checkChannelInvariants(root, { settled: false, cache });
    assert.ok(
      violations.some((line) => /a-1\.0-0\.conda: record sha256/.test(line)),
      `${violations}`,
    );
  });
});

// ------------------------------------------------------ start-up repair

/** The server's arguments for `channel`, with TLS files in `dir` and the token's hash. */
async function crashServerArgs(dir: string, channel: string, token: string): Promise<string[]> {
  return await serverArgs(channel, await writeTestTls(dir), token);
}

Deno.test("a restart repairs what a kill leaves behind: spool, temporary files, stale .zst, unindexed package, record without its file", async () => {
  const dir = await Deno.makeTempDir({ prefix: "auh-repair-" });
  try {
    const channel = join(dir, "channel");
    await Deno.mkdir(channel);
    const token = `repair-${crypto.randomUUID()}`;
    const args = await crashServerArgs(dir, channel, token);
    const ca = await Deno.readTextFile(join(dir, "ca.pem"));
    using client = Deno.createHttpClient({ caCerts: [ca] });
    const [first, second, unindexed, nameLost] = await Promise.all([
      artifact({ name: "first", version: "1.0" }),
      artifact({ name: "second", version: "1.0", format: ".tar.bz2" }),
      // In another subdir, so that only the stale .zst makes linux-64 be rewritten.
      artifact({ name: "unindexed", version: "1.0", subdir: "noarch" }),
      // Its index write's renames reach the disk, its own name does not (the
      // subdir is synced once, after both): it was never acknowledged.
      artifact({ name: "name-lost", version: "1.0" }),
    ]);
    const zstPath = join(channel, "linux-64", "repodata.json.zst");
    let staleZst: Uint8Array | undefined;
    {
      await using server = await startServerProcess(args);
      for (const item of [first, second, nameLost]) {
        const form = new FormData();
        form.append("token", token);
        form.append("artifact", new Blob([item.bytes]), item.filename);
        const response = await fetch(new URL("/", server.url), {
          method: "POST",
          body: form,
          client,
        });
        assert.equal(response.status, STATUS.Created, await response.text());
        staleZst ??= await Deno.readFile(zstPath);
      }
      server.kill("SIGKILL");
      await server.status;
    }
    // What a kill at the wrong moment leaves: a spool file mid-upload, temporary
    // files mid-index-write, a .zst one write behind repodata.json, a package
    // linked into place but not yet indexed.
    await Deno.writeFile(
      join(channel, SPOOL_DIR_NAME, "1-x.part"),
      unindexed.bytes.subarray(0, 100),
    );
    await Deno.writeTextFile(
      join(channel, "linux-64", `.repodata.json.${crypto.randomUUID()}.tmp`),
      "{",
    );
    await Deno.writeTextFile(join(channel, `.channeldata.json.${crypto.randomUUID()}.tmp`), "");
    await Deno.writeFile(zstPath, staleZst!);
    await Deno.utime(zstPath, new Date(Date.now() - 60_000), new Date(Date.now() - 60_000));
    await Deno.writeFile(join(channel, "noarch", unindexed.filename), unindexed.bytes);
    await Deno.remove(join(channel, "linux-64", nameLost.filename));
    const before = await checkChannelInvariants(channel);
    for (
      const expected of [
        /spool file/,
        /temporary file.*linux-64|linux-64.*temporary file/,
        /\.zst/,
        /unindexed-1\.0-0\.conda: package file not in repodata/,
        /name-lost-1\.0-0\.conda: indexed but its file is missing/,
      ]
    ) {
      assert.ok(before.some((line) => expected.test(line)), `${expected} in ${before}`);
    }

    await using server = await startServerProcess(args);
    assert.deepEqual(await checkChannelInvariants(channel), []);
    const read = async (subdir: string) =>
      parseStrictJson(await Deno.readTextFile(join(channel, subdir, "repodata.json"))) as Record<
        string,
        Record<string, { sha256?: string }>
      >;
    const noarch = await read("noarch");
    assert.equal(noarch["packages.conda"]?.[unindexed.filename]?.sha256, unindexed.sha256);
    const repodata = await read("linux-64");
    assert.equal(repodata["packages.conda"]?.[first.filename]?.sha256, first.sha256);
    assert.equal(repodata.packages?.[second.filename]?.sha256, second.sha256);
    assert.equal(repodata["packages.conda"]?.[nameLost.filename], undefined);
    const served = await fetch(new URL(`/noarch/${unindexed.filename}`, server.url), { client });
    assert.equal(sha256(await served.bytes()), unindexed.sha256);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

// ------------------------------------------------------------ crash trials

/** The multipart body of an upload, streamed in slowly. */
function slowForm(
  token: string,
  artifact: Artifact,
): { body: ReadableStream<Uint8Array>; type: string } {
  const boundary = `crash-${crypto.randomUUID()}`;
  const head = encoder.encode(
    `--${boundary}\r\nContent-Disposition: form-data; name="token"\r\n\r\n${token}\r\n` +
      `--${boundary}\r\nContent-Disposition: form-data; name="artifact"; filename="${artifact.filename}"\r\n` +
      `Content-Type: application/octet-stream\r\n\r\n`,
  );
  const tail = encoder.encode(`\r\n--${boundary}--\r\n`);
  let offset = 0;
  let sentHead = false;
  const body = new ReadableStream<Uint8Array>({
    async pull(controller) {
      if (!sentHead) {
        sentHead = true;
        controller.enqueue(head);
        return;
      }
      if (offset >= artifact.bytes.length) {
        controller.enqueue(tail);
        controller.close();
        return;
      }
      await delay(LARGE_CHUNK_DELAY_MS);
      controller.enqueue(artifact.bytes.slice(offset, offset + LARGE_CHUNK));
      offset += LARGE_CHUNK;
    },
  });
  return { body, type: `multipart/form-data; boundary=${boundary}` };
}

/** What one trial does, drawn from the seeded generator. */
interface Plan {
  /** Clients uploading small packages back to back. */
  workers: number;
  /** Which large package to stream, if any. */
  large: number | undefined;
  /** When the server is killed, in ms after the uploads start. */
  killAfterMs: number;
  /** When a start-up after the kill is killed too, in ms after its spawn, if at all. */
  startupKillMs: number | undefined;
}

Deno.test(`SIGKILL at ${TRIALS} random moments loses no acknowledged upload and leaves a sound channel`, async () => {
  console.log(`crash seed: ${SEED} (replay with AUH_CRASH_SEED=${SEED}); ${TRIALS} trials`);
  const random = seededRandom(SEED);
  const int = (low: number, high: number) => low + Math.floor(random() * (high - low + 1));
  const dir = await Deno.makeTempDir({ prefix: "auh-crash-" });
  let server: ServerProcess | undefined;
  try {
    const channel = join(dir, "channel");
    await Deno.mkdir(channel);
    const token = `crash-${crypto.randomUUID()}`;
    const args = await crashServerArgs(dir, channel, token);
    const ca = await Deno.readTextFile(join(dir, "ca.pem"));
    using client = Deno.createHttpClient({ caCerts: [ca], http2: false });

    const large: Artifact[] = [];
    for (const format of [".conda", ".tar.bz2"] as const) {
      const spec: PackageSpec = { name: "large", version: "1.0", format, subdir: "noarch" };
      const path = join(dir, packageFilename(spec));
      await writeLargePackage(path, spec, LARGE_PAYLOAD);
      const bytes = await Deno.readFile(path);
      await Deno.remove(path);
      large.push({
        filename: packageFilename(spec),
        subdir: "noarch",
        bytes,
        sha256: sha256(bytes),
      });
    }

    const acknowledged = new Map<string, Artifact>();
    const cache = new Map<string, PackageFacts>();
    const stats = {
      uploads: 0,
      acknowledged: 0,
      conflicts: 0,
      interrupted: 0,
      largeStarted: 0,
      largeAcknowledged: 0,
      startupKills: 0,
      spoolLeftovers: 0,
      reconciledAdds: 0,
      unacknowledgedKept: 0,
    };
    const started = performance.now();
    server = await startServerProcess(args);

    for (let trial = 0; trial < TRIALS; trial++) {
      const plan: Plan = {
        workers: int(1, 3),
        large: random() < 0.3 ? int(0, large.length - 1) : undefined,
        killAfterMs: 0,
        startupKillMs: random() < 0.15 ? int(0, 1000) : undefined,
      };
      plan.killAfterMs = plan.large === undefined ? int(0, 250) : int(200, 1400);
      const context = `trial ${trial} of seed ${SEED} (${JSON.stringify(plan)})`;
      const url = new URL("/", server.url);
      let killed = false;
      const problems: string[] = [];
      const sent = new Set<string>();

      const record = (item: Artifact, status: number, text: string) => {
        if (status === STATUS.Created) {
          acknowledged.set(`${item.subdir}/${item.filename}`, item);
          stats.acknowledged++;
          if (item.bytes.length > LARGE_PAYLOAD) stats.largeAcknowledged++;
        } else if (status === STATUS.Conflict && item.bytes.length > LARGE_PAYLOAD) {
          stats.conflicts++;
        } else {
          problems.push(`${item.filename}: ${status} ${text.trim()}`);
        }
      };
      const uploadSmall = async (worker: number) => {
        for (let n = 0; !killed; n++) {
          const item = await artifact({
            name: `t${trial}w${worker}n${n}`,
            version: "1.0",
            subdir: SUBDIRS[int(0, SUBDIRS.length - 1)]!,
            format: random() < 0.5 ? ".conda" : ".tar.bz2",
          });
          if (killed) return;
          sent.add(`${item.subdir}/${item.filename}`);
          stats.uploads++;
          const form = new FormData();
          form.append("token", token);
          form.append("artifact", new Blob([item.bytes]), item.filename);
          try {
            const response = await fetch(url, { method: "POST", body: form, client });
            record(item, response.status, await response.text());
          } catch {
            stats.interrupted++;
            return;
          }
        }
      };
      const uploadLarge = async (item: Artifact) => {
        stats.uploads++;
        stats.largeStarted++;
        const { body, type } = slowForm(token, item);
        try {
          const response = await fetch(url, {
            method: "POST",
            body,
            headers: { "content-type": type },
            client,
          });
          record(item, response.status, await response.text());
        } catch {
          stats.interrupted++;
        }
      };

      const uploads = [
        ...Array.from({ length: plan.workers }, (_, worker) => uploadSmall(worker)),
        ...(plan.large === undefined ? [] : [uploadLarge(large[plan.large]!)]),
      ];
      await delay(plan.killAfterMs);
      server.kill("SIGKILL");
      await server.status;
      killed = true;
      await Promise.all(uploads);
      await server[Symbol.asyncDispose]();
      server = undefined;
      assert.deepEqual(problems, [], `refused before the kill in ${context}`);

      if (plan.startupKillMs !== undefined) {
        // Killed again while starting up: reconciling, repairing or cleaning up.
        const child = new Deno.Command(Deno.execPath(), {
          args: ["run", ...programPermissions(args), "--config", DENO_JSON, MAIN_TS, ...args],
          stdin: "null",
          stdout: "null",
          stderr: "null",
          env: { ...withoutAuhVariables(), NO_COLOR: "1", DENO_NO_UPDATE_CHECK: "1" },
          clearEnv: true,
        }).spawn();
        await delay(plan.startupKillMs);
        try {
          child.kill("SIGKILL");
        } catch {
          // It exited (it cannot: it serves until killed; but never leave a process behind).
        }
        await child.status;
        stats.startupKills++;
      }

      server = await startServerProcess(args);
      const log = server.stderr.join("\n");
      stats.spoolLeftovers += Number(/leftover spool files.*\bcount=(\d+)/.exec(log)?.[1] ?? 0);
      stats.reconciledAdds += Number(/index reconciled.*\badded=(\d+)/.exec(log)?.[1] ?? 0);

      const violations = await checkChannelInvariants(channel, { cache });
      assert.deepEqual(violations, [], `invariants broken after ${context}`);
      const lost: string[] = [];
      const repodata = new Map<string, Record<string, Record<string, { sha256?: string }>>>();
      for (const subdir of SUBDIRS) {
        const text = await Deno.readTextFile(join(channel, subdir, "repodata.json")).catch(() =>
          "{}"
        );
        repodata.set(
          subdir,
          parseStrictJson(text) as Record<string, Record<string, { sha256?: string }>>,
        );
      }
      for (const [key, item] of acknowledged) {
        const sectionName = item.filename.endsWith(".conda") ? "packages.conda" : "packages";
        const record = repodata.get(item.subdir)?.[sectionName]?.[item.filename];
        if (record?.sha256 !== item.sha256) lost.push(key);
      }
      assert.deepEqual(lost, [], `acknowledged uploads lost after ${context}`);
      for (const key of sent) {
        const [subdir, filename] = key.split("/") as [string, string];
        const sectionName = filename.endsWith(".conda") ? "packages.conda" : "packages";
        if (!acknowledged.has(key) && repodata.get(subdir)?.[sectionName]?.[filename]) {
          stats.unacknowledgedKept++;
        }
      }
    }
    const seconds = ((performance.now() - started) / 1000).toFixed(1);
    console.log(
      `${TRIALS} SIGKILL trials in ${seconds} s: ${stats.uploads} uploads started ` +
        `(${stats.largeStarted} of ${LARGE_PAYLOAD / MiB} MiB streamed), ${stats.acknowledged} ` +
        `acknowledged (${stats.largeAcknowledged} large) and all still indexed after every restart; ` +
        `${stats.interrupted} cut off by a kill, ${stats.unacknowledgedKept} of them published and ` +
        `indexed anyway; ${stats.conflicts} large re-uploads answered 409; ${stats.startupKills} ` +
        `kills during start-up; restarts removed ${stats.spoolLeftovers} leftover spool files and ` +
        `indexed ${stats.reconciledAdds} packages published but not indexed before a kill`,
    );
  } finally {
    if (server) await server[Symbol.asyncDispose]();
    await Deno.remove(dir, { recursive: true });
  }
});
