/**
 * Concurrency: 200 distinct packages uploaded by 20 concurrent HTTPS clients
 * (keep-alive; half of them HTTP/1.1 only, half allowed HTTP/2), mixed
 * formats and subdirs, interleaved with 20 names each uploaded by 3 clients
 * at once and with readers fetching every subdir's `repodata.json`,
 * `repodata.json.zst` and `channeldata.json` over and over, all against the
 * real program (a subprocess under the shipped permissions). Nothing may be
 * lost or doubled: every acknowledged package is indexed exactly once with
 * its checksums, every racing name has exactly one 201 and 409s, every index
 * file a reader gets is complete, and the channel's invariants hold.
 */

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { join } from "node:path";
import { zstdDecompressSync } from "node:zlib";
import { STATUS } from "../src/http/status.ts";
import { checkChannelInvariants, parseStrictJson } from "./helpers/channel_invariants.ts";
import { buildPackage, packageFilename, type PackageSpec } from "./helpers/conda_package.ts";
import { seededRandom } from "./helpers/hostile_corpus.ts";
import { serverArgs, startServerProcess, writeTestTls } from "./helpers/server_process.ts";

const CLIENTS = 20;
const DISTINCT = 200;
const RACING_NAMES = 20;
const CONTENDERS = 3;
const READERS = 4;
const SUBDIRS = ["linux-64", "noarch", "osx-arm64", "win-64"] as const;
/** Above the number of uploads ever in flight here (20 clients, races of 3): none may get 503. */
const MAX_CONCURRENT_UPLOADS = 64;
const SEED = Number(Deno.env.get("AUH_CONCURRENCY_SEED") ?? Math.floor(Math.random() * 2 ** 31));

interface Artifact {
  filename: string;
  subdir: string;
  bytes: Uint8Array<ArrayBuffer>;
  sha256: string;
  md5: string;
}

interface Answer {
  artifact: Artifact;
  status: number;
  text: string;
}

type Repodata = Record<string, Record<string, { sha256?: unknown; md5?: unknown; size?: unknown }>>;

function hex(algorithm: "sha256" | "md5", bytes: Uint8Array): string {
  return createHash(algorithm).update(bytes).digest("hex");
}

function section(filename: string): "packages" | "packages.conda" {
  return filename.endsWith(".conda") ? "packages.conda" : "packages";
}

/** Builds packages a few at a time (each .tar.bz2 runs bzip2). */
async function buildAll(specs: PackageSpec[]): Promise<Artifact[]> {
  const artifacts: Artifact[] = new Array(specs.length);
  let next = 0;
  await Promise.all(Array.from({ length: 8 }, async () => {
    while (next < specs.length) {
      const i = next++;
      const spec = specs[i]!;
      const bytes = new Uint8Array(await buildPackage(spec));
      artifacts[i] = {
        filename: packageFilename(spec),
        subdir: spec.subdir ?? "linux-64",
        bytes,
        sha256: hex("sha256", bytes),
        md5: hex("md5", bytes),
      };
    }
  }));
  return artifacts;
}

Deno.test("200 uploads from 20 clients, racing duplicates and index readers lose and double nothing", async () => {
  console.log(`concurrency seed: ${SEED} (replay with AUH_CONCURRENCY_SEED=${SEED})`);
  const random = seededRandom(SEED);
  const dir = await Deno.makeTempDir({ prefix: "auh-concurrency-" });
  const clients: Deno.HttpClient[] = [];
  try {
    const channel = join(dir, "channel");
    await Deno.mkdir(channel);
    const tls = await writeTestTls(dir);
    const token = `concurrency-${crypto.randomUUID()}`;
    await using server = await startServerProcess([
      ...await serverArgs(channel, tls, token),
      "--max_concurrent_uploads",
      String(MAX_CONCURRENT_UPLOADS),
    ]);
    const ca = await Deno.readTextFile(tls.caFile);
    for (let i = 0; i < CLIENTS + READERS; i++) {
      clients.push(Deno.createHttpClient({ caCerts: [ca], http1: true, http2: i % 2 === 1 }));
    }

    const distinct = await buildAll(Array.from({ length: DISTINCT }, (_, i) => ({
      name: `distinct${i}`,
      version: `1.${i % 7}`,
      build: `b${i % 3}`,
      subdir: SUBDIRS[i % SUBDIRS.length]!,
      format: Math.floor(i / SUBDIRS.length) % 2 === 0 ? ".conda" : ".tar.bz2",
    } satisfies PackageSpec)));
    const racing = await buildAll(
      Array.from({ length: RACING_NAMES * CONTENDERS }, (_, i) => {
        const name = Math.floor(i / CONTENDERS);
        return {
          name: `race${name}`,
          version: "1.0",
          subdir: SUBDIRS[name % SUBDIRS.length]!,
          format: name % 2 === 0 ? ".conda" : ".tar.bz2",
          files: { [`share/race${name}/contender.txt`]: `contender ${i % CONTENDERS}\n` },
        } satisfies PackageSpec;
      }),
    );
    assert.equal(new Set(racing.map((artifact) => artifact.sha256)).size, racing.length);

    type Job = { kind: "one"; artifact: Artifact } | { kind: "race"; contenders: Artifact[] };
    const jobs: Job[] = [
      ...distinct.map((artifact) => ({ kind: "one", artifact }) as const),
      ...Array.from({ length: RACING_NAMES }, (_, name) =>
        ({
          kind: "race",
          contenders: racing.slice(name * CONTENDERS, (name + 1) * CONTENDERS),
        }) as const),
    ];
    for (let i = jobs.length - 1; i > 0; i--) {
      const j = Math.floor(random() * (i + 1));
      [jobs[i], jobs[j]] = [jobs[j]!, jobs[i]!];
    }

    const url = (path: string) => new URL(path, server.url);
    const answers: Answer[] = [];
    const readYourWrites: string[] = [];
    const upload = async (artifact: Artifact, client: Deno.HttpClient): Promise<Answer> => {
      const form = new FormData();
      form.append("token", token);
      form.append("artifact", new Blob([artifact.bytes]), artifact.filename);
      const response = await fetch(url("/"), { method: "POST", body: form, client });
      const answer = { artifact, status: response.status, text: await response.text() };
      answers.push(answer);
      if (answer.status === STATUS.Created) {
        // Acknowledged means indexed: the next read of the subdir's index has it.
        const index = await fetch(url(`/${artifact.subdir}/repodata.json`), { client });
        const repodata = JSON.parse(await index.text()) as Repodata;
        const record = repodata[section(artifact.filename)]?.[artifact.filename];
        if (record?.sha256 !== artifact.sha256) {
          readYourWrites.push(`${artifact.subdir}/${artifact.filename}`);
        }
      }
      return answer;
    };

    let next = 0;
    let uploading = true;
    const started = performance.now();
    const uploaders = Array.from({ length: CLIENTS }, async (_, worker) => {
      while (next < jobs.length) {
        const job = jobs[next++]!;
        if (job.kind === "one") {
          await upload(job.artifact, clients[worker]!);
        } else {
          await Promise.all(
            job.contenders.map((artifact, i) => upload(artifact, clients[(worker + i) % CLIENTS]!)),
          );
        }
      }
    });

    const reads = { repodata: 0, zst: 0, channeldata: 0, notYet: 0 };
    const readProblems: string[] = [];
    const readers = Array.from({ length: READERS }, async (_, reader) => {
      const client = clients[CLIENTS + reader]!;
      const seen = new Map<string, Set<string>>();
      while (uploading) {
        for (const subdir of SUBDIRS) {
          const response = await fetch(url(`/${subdir}/repodata.json`), { client });
          const text = await response.text();
          if (response.status === STATUS.NotFound && !seen.has(subdir)) {
            reads.notYet++;
            continue;
          }
          if (response.status !== STATUS.OK) {
            readProblems.push(`${subdir}/repodata.json: ${response.status}`);
            continue;
          }
          reads.repodata++;
          let names: Set<string>;
          try {
            const repodata = parseStrictJson(text) as Repodata;
            names = new Set([
              ...Object.keys(repodata.packages ?? {}),
              ...Object.keys(repodata["packages.conda"] ?? {}),
            ]);
          } catch (error) {
            readProblems.push(`${subdir}/repodata.json: ${error} (${text.length} bytes)`);
            continue;
          }
          // Packages are only ever added here, and index writes are atomic and
          // ordered: one reader never sees one disappear.
          for (const name of seen.get(subdir) ?? []) {
            if (!names.has(name)) readProblems.push(`${subdir}: ${name} disappeared`);
          }
          seen.set(subdir, names);
          const zst = await fetch(url(`/${subdir}/repodata.json.zst`), { client });
          const compressed = new Uint8Array(await zst.arrayBuffer());
          if (zst.status !== STATUS.OK) {
            readProblems.push(`${subdir}/repodata.json.zst: ${zst.status}`);
            continue;
          }
          reads.zst++;
          try {
            parseStrictJson(new TextDecoder().decode(zstdDecompressSync(compressed)));
          } catch (error) {
            readProblems.push(`${subdir}/repodata.json.zst: ${error}`);
          }
        }
        const channeldata = await fetch(url("/channeldata.json"), { client });
        const text = await channeldata.text();
        reads.channeldata++;
        try {
          parseStrictJson(text);
        } catch (error) {
          readProblems.push(`channeldata.json: ${channeldata.status} ${error}`);
        }
      }
    });

    await Promise.all(uploaders);
    const uploadMs = performance.now() - started;
    uploading = false;
    await Promise.all(readers);

    // Statuses: every distinct package 201, every racing name one 201 and 409s.
    const unexpected = answers.filter((answer) =>
      !(answer.status === STATUS.Created ||
        (answer.status === STATUS.Conflict && answer.artifact.filename.startsWith("race")))
    ).map((answer) => `${answer.artifact.filename}: ${answer.status} ${answer.text.trim()}`);
    assert.deepEqual(unexpected, []);
    const accepted = new Map<string, Artifact>();
    for (const answer of answers.filter((answer) => answer.status === STATUS.Created)) {
      const key = `${answer.artifact.subdir}/${answer.artifact.filename}`;
      assert.ok(!accepted.has(key), `${key} was acknowledged twice`);
      accepted.set(key, answer.artifact);
      const body = JSON.parse(answer.text) as { sha256: string; md5: string; size: number };
      assert.deepEqual(
        [body.sha256, body.md5, body.size],
        [answer.artifact.sha256, answer.artifact.md5, answer.artifact.bytes.length],
      );
    }
    assert.equal(accepted.size, DISTINCT + RACING_NAMES);
    for (let name = 0; name < RACING_NAMES; name++) {
      const statuses = answers.filter((answer) =>
        answer.artifact.filename.startsWith(`race${name}-`)
      ).map((answer) => answer.status).sort();
      assert.deepEqual(statuses, [STATUS.Created, STATUS.Conflict, STATUS.Conflict], `race${name}`);
    }
    assert.deepEqual(readYourWrites, [], "acknowledged but missing from the next index read");
    assert.deepEqual(readProblems.slice(0, 20), [], `${readProblems.length} bad index reads`);
    assert.ok(reads.repodata >= READERS * SUBDIRS.length, `only ${reads.repodata} index reads`);

    // On disk: exactly the acknowledged packages, each once, with the winner's bytes.
    for (const subdir of SUBDIRS) {
      const raw = await Deno.readTextFile(join(channel, subdir, "repodata.json"));
      const repodata = parseStrictJson(raw) as Repodata;
      const listed = [
        ...Object.keys(repodata.packages ?? {}),
        ...Object.keys(repodata["packages.conda"] ?? {}),
      ].sort();
      const expected = [...accepted.values()].filter((artifact) => artifact.subdir === subdir);
      assert.deepEqual(listed, expected.map((artifact) => artifact.filename).sort(), subdir);
      for (const artifact of expected) {
        const record = repodata[section(artifact.filename)]![artifact.filename]!;
        assert.deepEqual(
          [record.sha256, record.md5, record.size],
          [artifact.sha256, artifact.md5, artifact.bytes.length],
          artifact.filename,
        );
      }
    }
    assert.deepEqual(await checkChannelInvariants(channel), []);
    const errors = server.stderr.filter((line) => /\bERROR\b|Uncaught/.test(line));
    assert.deepEqual(errors.slice(0, 10), [], "the server logged errors");
    console.log(
      `${answers.length} uploads (${accepted.size} accepted, ` +
        `${answers.length - accepted.size} racing duplicates refused with 409) by ${CLIENTS} ` +
        `clients in ${Math.round(uploadMs)} ms; ${READERS} readers read repodata.json ` +
        `${reads.repodata} times, repodata.json.zst ${reads.zst} times, channeldata.json ` +
        `${reads.channeldata} times (${reads.notYet} reads before a subdir's first package)`,
    );
  } finally {
    for (const client of clients) client.close();
    await Deno.remove(dir, { recursive: true });
  }
});
