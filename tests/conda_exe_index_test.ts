/**
 * End-to-end tests of the `-e CONDA_EXE` index path: a real TLS server that
 * runs a stand-in `conda` executable (the one fake at the edge) after each
 * upload.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { STATUS } from "../src/http/status.ts";
import { CondaExeIndex } from "../src/index/conda_exe_index.ts";
import { silentLogger } from "../src/log.ts";
import { ChannelStorage, LOCK_FILE_NAME, SPOOL_DIR_NAME } from "../src/storage/channel_storage.ts";
import { buildPackage, packageFilename, type PackageSpec } from "./helpers/conda_package.ts";
import {
  snapshotDirectory,
  startTestServer,
  type TestServer,
  uploadForm,
} from "./helpers/test_server.ts";

/**
 * The stand-in `conda` (bash, so a run costs milliseconds): appends one JSON
 * line per run to runs.jsonl beside itself (argv, start and end in ms since
 * the epoch, the package files it saw in the channel at start), sleeps for the
 * seconds in `sleep-seconds` if present, writes `linux-64/repodata.json`
 * (`{"run_started": ms}`, renamed into place) while `write-repodata` is
 * present, and fails (stderr message, exit 1) while a `fail` file is present.
 */
const STAND_IN = `#!/usr/bin/env bash
set -u
shopt -s nullglob
start=$(date +%s%3N)
here=$(cd "$(dirname "$0")" && pwd)
json() { local s=\${1//\\\\/\\\\\\\\}; s=\${s//\\"/\\\\\\"}; printf '"%s"' "$s"; }
list() { local out="" item; for item in "$@"; do out+="\${out:+,}$(json "$item")"; done; printf '[%s]' "$out"; }
present=()
if [ -d "\${2:-}" ]; then
  for file in "$2"/*/*.conda "$2"/*/*.tar.bz2; do present+=("\${file#"$2"/}"); done
fi
if [ -f "$here/sleep-seconds" ]; then sleep "$(cat "$here/sleep-seconds")"; fi
if [ -f "$here/write-repodata" ] && [ -d "\${2:-}/linux-64" ]; then
  printf '{"run_started":%s}' "$start" >"$2/linux-64/.repodata.json.conda"
  mv "$2/linux-64/.repodata.json.conda" "$2/linux-64/repodata.json"
fi
failed=false
if [ -f "$here/fail" ]; then failed=true; fi
printf '{"argv":%s,"start":%s,"end":%s,"present":%s,"failed":%s}\\n' \\
  "$(list "$@")" "$start" "$(date +%s%3N)" "$(list "\${present[@]}")" "$failed" >>"$here/runs.jsonl"
if [ "$failed" = true ]; then
  printf 'Loading channel\\nCondaIndexError: simulated index failure\\n' >&2
  exit 1
fi
`;

/** One recorded run of the stand-in. */
interface Run {
  argv: string[];
  start: number;
  end: number;
  present: string[];
  failed: boolean;
}

/** A stand-in `conda` in its own temp dir. */
interface StandIn extends AsyncDisposable {
  /** Path of the executable. */
  path: string;
  /** The runs recorded so far. */
  runs(): Promise<Run[]>;
  /** Makes later runs fail (true) or succeed (false). */
  failing(on: boolean): Promise<void>;
  /** Makes later runs take at least `ms`. */
  sleep(ms: number): Promise<void>;
  /** Makes later runs write `linux-64/repodata.json`. */
  writeRepodata(): Promise<void>;
}

async function makeStandIn(): Promise<StandIn> {
  const dir = await Deno.makeTempDir({ prefix: "conda_exe_index_test_" });
  const path = join(dir, "conda");
  await Deno.writeTextFile(path, STAND_IN);
  await Deno.chmod(path, 0o755);
  return {
    path,
    async runs() {
      const text = await Deno.readTextFile(join(dir, "runs.jsonl")).catch(() => "");
      return text.split("\n").filter((line) => line !== "").map((line) => {
        const run = JSON.parse(line) as Run;
        return { ...run, present: run.present.sort() };
      });
    },
    async failing(on) {
      if (on) await Deno.writeTextFile(join(dir, "fail"), "");
      else await Deno.remove(join(dir, "fail"));
    },
    async sleep(ms) {
      await Deno.writeTextFile(join(dir, "sleep-seconds"), String(ms / 1000));
    },
    async writeRepodata() {
      await Deno.writeTextFile(join(dir, "write-repodata"), "");
    },
    async [Symbol.asyncDispose]() {
      await Deno.remove(dir, { recursive: true });
    },
  };
}

async function upload(server: TestServer, spec: PackageSpec): Promise<{
  status: number;
  text: string;
  path: string;
  receivedAt: number;
}> {
  const filename = packageFilename(spec);
  const response = await server.fetch("/", {
    method: "POST",
    body: uploadForm(server.token, filename, await buildPackage(spec)),
  });
  const receivedAt = Date.now();
  return {
    status: response.status,
    text: await response.text(),
    path: `${spec.subdir ?? "linux-64"}/${filename}`,
    receivedAt,
  };
}

async function spoolFiles(server: TestServer): Promise<string[]> {
  const names: string[] = [];
  for await (const entry of Deno.readDir(join(server.channelRoot, SPOOL_DIR_NAME))) {
    names.push(entry.name);
  }
  return names;
}

Deno.test("POST / with -e runs CONDA_EXE index <channel root> after publishing", async () => {
  await using conda = await makeStandIn();
  await using server = await startTestServer({ flags: { condaExe: conda.path } });
  assert.deepEqual(await conda.runs(), [], "no run at start-up");
  const first = await upload(server, { name: "exe", version: "1.0" });
  assert.equal(first.status, STATUS.Created, first.text);
  let runs = await conda.runs();
  assert.equal(runs.length, 1);
  assert.deepEqual(runs[0]!.argv, ["index", server.channelRoot]);
  assert.ok(runs[0]!.present.includes(first.path), "the package was in place when the run began");
  assert.ok(runs[0]!.end <= first.receivedAt, "the answer came after the run");
  const second = await upload(server, {
    name: "exe",
    version: "2.0",
    subdir: "noarch",
    format: ".tar.bz2",
  });
  assert.equal(second.status, STATUS.Created, second.text);
  runs = await conda.runs();
  assert.equal(runs.length, 2);
  assert.deepEqual(runs[1]!.argv, ["index", server.channelRoot]);
  assert.deepEqual(runs[1]!.present, [first.path, second.path].sort());
  assert.equal(
    await Deno.stat(join(server.channelRoot, "linux-64", "repodata.json")).catch(() => 0),
    0,
    "the built-in index is not used",
  );
  assert.ok(
    server.logs.some((line) => / INFO conda index done /.test(line)),
    server.logs.join("\n"),
  );
});

Deno.test("POST / with -e serves what conda index wrote as soon as the upload is answered", async () => {
  await using conda = await makeStandIn();
  await using server = await startTestServer({ flags: { condaExe: conda.path } });
  await Deno.mkdir(join(server.channelRoot, "linux-64"), { recursive: true });
  await Deno.writeTextFile(join(server.channelRoot, "linux-64", "repodata.json"), '{"before":1}');
  await conda.sleep(300);
  await conda.writeRepodata();
  // Readers keep fetching repodata.json while conda runs, so the server has
  // just looked at the old file when the upload is answered.
  let answered = false;
  const reading = (async () => {
    while (!answered) {
      const response = await server.fetch("/linux-64/repodata.json");
      await response.body?.cancel();
    }
  })();
  const uploaded = await upload(server, { name: "exe", version: "3.0" });
  answered = true;
  await reading;
  assert.equal(uploaded.status, STATUS.Created, uploaded.text);
  const response = await server.fetch("/linux-64/repodata.json");
  const body = await response.json();
  const [run] = await conda.runs();
  assert.deepEqual(body, { run_started: run!.start }, "the file conda wrote, not the one before");
});

Deno.test("POST / with -e answers 500 with the reason when conda index fails and takes the package back out", async () => {
  await using conda = await makeStandIn();
  await using server = await startTestServer({ flags: { condaExe: conda.path } });
  const kept = await upload(server, { name: "kept", version: "1.0" });
  assert.equal(kept.status, STATUS.Created, kept.text);
  await conda.failing(true);
  const before = await snapshotDirectory(server.channelRoot);
  const spec = { name: "unlucky", version: "1.0", format: ".tar.bz2" } as const;
  const failed = await upload(server, spec);
  assert.equal(failed.status, STATUS.InternalServerError, failed.text);
  assert.match(failed.text, /^Cannot index package: conda index exited with code 1: /);
  assert.match(failed.text, /CondaIndexError: simulated index failure/);
  const runs = await conda.runs();
  assert.equal(runs.length, 2);
  assert.ok(runs[1]!.failed && runs[1]!.present.includes(failed.path), "the failing run saw it");
  assert.equal(await Deno.stat(join(server.channelRoot, failed.path)).catch(() => 0), 0);
  assert.deepEqual(await snapshotDirectory(server.channelRoot), before, "the channel changed");
  assert.deepEqual(await spoolFiles(server), []);
  assert.ok(
    server.logs.some((line) => / ERROR index failed, package taken back out /.test(line)),
    server.logs.join("\n"),
  );
  // Once conda index works again, the same upload goes through.
  await conda.failing(false);
  const retried = await upload(server, spec);
  assert.equal(retried.status, STATUS.Created, retried.text);
  assert.ok((await conda.runs()).at(-1)!.present.includes(retried.path));
});

Deno.test("POST / with -e answers 500 when CONDA_EXE cannot be started, and publishes nothing", async () => {
  await using conda = await makeStandIn();
  const missing = `${conda.path}-missing`;
  await using server = await startTestServer({ flags: { condaExe: missing } });
  // Taking the channel lock for the run creates the (empty) lock file: not a change.
  const channel = async () =>
    (await snapshotDirectory(server.channelRoot)).filter((line) =>
      !line.startsWith(`${LOCK_FILE_NAME} `)
    );
  const before = await channel();
  const result = await upload(server, { name: "orphan", version: "1.0" });
  assert.equal(result.status, STATUS.InternalServerError, result.text);
  assert.match(result.text, /^Cannot index package: .*could not run/);
  assert.deepEqual(await channel(), before, "the channel changed");
  assert.deepEqual(await spoolFiles(server), []);
});

Deno.test("POST / with -e shares conda index runs among concurrent uploads", async () => {
  await using conda = await makeStandIn();
  await conda.sleep(300);
  await using server = await startTestServer({ flags: { condaExe: conda.path } });
  const count = 6;
  const results = await Promise.all(
    Array.from({ length: count }, (_, i) =>
      upload(server, {
        name: `shared${i}`,
        version: "1.0",
        format: i % 2 === 0 ? ".conda" : ".tar.bz2",
      })),
  );
  for (const result of results) assert.equal(result.status, STATUS.Created, result.text);
  const runs = await conda.runs();
  assert.ok(runs.length < count, `${runs.length} runs for ${count} uploads`);
  assert.ok(runs.length >= 1);
  for (const run of runs) assert.deepEqual(run.argv, ["index", server.channelRoot]);
  for (let i = 1; i < runs.length; i++) {
    assert.ok(runs[i]!.start >= runs[i - 1]!.end - 1, "runs never overlap");
  }
  for (const result of results) {
    // A run that began with the package in place and ended before the answer.
    const covering = runs.find((run) =>
      run.present.includes(result.path) && Math.floor(run.end) <= result.receivedAt
    );
    assert.ok(covering, `no run covers ${result.path}: ${JSON.stringify(runs)}`);
  }
});

Deno.test("CondaExeIndex rejects with the signal when a run passes timeoutMs", async () => {
  await using conda = await makeStandIn();
  // exec: the process that gets killed is the one holding stderr.
  const slow = join(conda.path, "..", "slow-conda");
  await Deno.writeTextFile(slow, "#!/usr/bin/env bash\nexec sleep 10\n");
  await Deno.chmod(slow, 0o755);
  const root = await Deno.makeTempDir({ prefix: "conda_exe_index_test_channel_" });
  try {
    const index = new CondaExeIndex(slow, await ChannelStorage.open(root), {
      logger: silentLogger,
      timeoutMs: 200,
    });
    const started = performance.now();
    await assert.rejects(index.reconcile(), /^Error: conda index was killed by SIGTERM/);
    const elapsed = performance.now() - started;
    assert.ok(elapsed < 5000, `took ${elapsed} ms`);
    assert.equal(index.runs, 1);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
