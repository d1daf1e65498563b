import assert from "node:assert/strict";
import { join } from "node:path";
import { type TempChannel, tempChannel } from "./helpers/temp_channel.ts";

function tempStorage(): Promise<TempChannel> {
  return tempChannel("channel-storage-");
}

async function names(directory: string): Promise<string[]> {
  const found: string[] = [];
  try {
    for await (const entry of Deno.readDir(directory)) found.push(entry.name);
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
  return found.sort();
}

Deno.test("writeFilesAtomic() puts every file in place, in new directories too, with no temporary file left", async () => {
  await using temp = await tempStorage();
  await temp.storage.writeFilesAtomic([
    { relative: "linux-64/shards/a.msgpack.zst", data: new Uint8Array([1, 2, 3]) },
    { relative: "linux-64/repodata.json", data: '{"a":1}' },
    { relative: "linux-64/index.html", data: "<html>", durable: false },
  ]);
  assert.deepEqual(
    await Deno.readFile(join(temp.root, "linux-64/shards/a.msgpack.zst")),
    new Uint8Array([1, 2, 3]),
  );
  assert.equal(await Deno.readTextFile(join(temp.root, "linux-64/repodata.json")), '{"a":1}');
  assert.equal(await Deno.readTextFile(join(temp.root, "linux-64/index.html")), "<html>");
  assert.deepEqual(await names(join(temp.root, "linux-64")), [
    "index.html",
    "repodata.json",
    "shards",
  ]);

  // A second batch replaces the content of existing files; the replaced
  // versions are removed after the write, off the JS thread (settle() waits).
  await temp.storage.writeFilesAtomic([{ relative: "linux-64/repodata.json", data: '{"a":2}' }]);
  assert.equal(await Deno.readTextFile(join(temp.root, "linux-64/repodata.json")), '{"a":2}');
  await temp.storage.settle();
  assert.deepEqual(await names(join(temp.root, "linux-64")), [
    "index.html",
    "repodata.json",
    "shards",
  ]);
});

Deno.test("writeFilesAtomic() frees a replaced version after the write: a reader that opened it reads it whole", async () => {
  await using temp = await tempStorage();
  const old = new Uint8Array(3 * 1024 * 1024).fill(7);
  await temp.storage.writeFilesAtomic([{ relative: "linux-64/repodata.json", data: old }]);
  using reader = await Deno.open(join(temp.root, "linux-64/repodata.json"));
  await temp.storage.writeFilesAtomic([{ relative: "linux-64/repodata.json", data: '{"a":2}' }]);
  assert.equal(await Deno.readTextFile(join(temp.root, "linux-64/repodata.json")), '{"a":2}');
  await temp.storage.settle();
  // Its name is gone, its bytes stay with the reader.
  assert.deepEqual(await names(join(temp.root, "linux-64")), ["repodata.json"]);
  const read = new Uint8Array(old.length);
  let filled = 0;
  while (filled < read.length) {
    const n = await reader.read(read.subarray(filled));
    if (n === null) break;
    filled += n;
  }
  assert.equal(filled, old.length);
  assert.deepEqual(read, old);
});

Deno.test("writeFilesAtomic() that fails at a rename keeps the files before it, drops the rest and leaves no temporary file", async () => {
  await using temp = await tempStorage();
  await temp.storage.writeFilesAtomic([
    { relative: "linux-64/repodata.json", data: "old" },
    { relative: "linux-64/run_exports.json", data: "old" },
  ]);
  // A directory where a file goes: its rename fails (EISDIR / ENOTEMPTY).
  await Deno.mkdir(join(temp.root, "linux-64/repodata.json.zst/blocker"), { recursive: true });
  await assert.rejects(
    temp.storage.writeFilesAtomic([
      { relative: "linux-64/repodata.json", data: "new" },
      { relative: "linux-64/repodata.json.zst", data: "new" },
      { relative: "linux-64/run_exports.json", data: "new" },
    ]),
  );
  assert.equal(await Deno.readTextFile(join(temp.root, "linux-64/repodata.json")), "new");
  assert.equal(await Deno.readTextFile(join(temp.root, "linux-64/run_exports.json")), "old");
  await temp.storage.settle();
  assert.deepEqual(await names(join(temp.root, "linux-64")), [
    "repodata.json",
    "repodata.json.zst",
    "run_exports.json",
  ]);
});
