import assert from "node:assert/strict";
import { gunzipSync } from "node:zlib";
import { type HotFile, HotFileCache } from "../src/serve/hot_file_cache.ts";
import { ChannelStorage } from "../src/storage/channel_storage.ts";
import { type TempChannel, tempChannel } from "./helpers/temp_channel.ts";

const encoder = new TextEncoder();

async function makeChannel(files: Record<string, string>): Promise<TempChannel> {
  const channel = await tempChannel("hot_file_cache_test_", files);
  await Deno.mkdir(`${channel.root}/linux-64`, { recursive: true });
  return channel;
}

/** The file as the cache gives it, and whether it came from memory (no read). */
async function get(
  cache: HotFileCache,
  storage: ChannelStorage,
  path: string,
): Promise<{ file: HotFile; held: boolean }> {
  const found = storage.servable(path);
  assert.ok(found, `${path} is servable`);
  const result = cache.get(path, found);
  const held = !(result instanceof Promise);
  const file = await result;
  assert.ok(file, `${path} was read`);
  return { file, held };
}

Deno.test("HotFileCache.get() reads a file once per version and shares a read in flight", async () => {
  await using channel = await makeChannel({ "linux-64/repodata.json": '{"packages":{}}' });
  const { storage } = channel;
  const cache = new HotFileCache(storage);
  const found = storage.servable("linux-64/repodata.json")!;
  const [first, second] = await Promise.all([
    cache.get("linux-64/repodata.json", found),
    cache.get("linux-64/repodata.json", found),
  ]);
  assert.ok(first !== undefined && first === second, "one read for both");
  assert.deepEqual(first.bytes, encoder.encode('{"packages":{}}'));
  const again = await get(cache, storage, "linux-64/repodata.json");
  assert.equal(again.held, true);
  assert.equal(again.file, first);

  await storage.writeFileAtomic("linux-64/repodata.json", '{"packages":{"a":1}}');
  const changed = await get(cache, storage, "linux-64/repodata.json");
  assert.equal(changed.held, false);
  assert.deepEqual(changed.file.bytes, encoder.encode('{"packages":{"a":1}}'));
  assert.notEqual(changed.file.etag, first.etag);
});

Deno.test("HotFileCache keeps at most maxTotalBytes, dropping the least recently used first", async () => {
  const hundred = (letter: string) => letter.repeat(100);
  await using channel = await makeChannel({
    "linux-64/a.json": hundred("a"),
    "linux-64/b.json": hundred("b"),
    "linux-64/c.json": hundred("c"),
  });
  const { storage } = channel;
  const cache = new HotFileCache(storage, { maxTotalBytes: 250, maxFileBytes: 150 });
  await get(cache, storage, "linux-64/a.json");
  await get(cache, storage, "linux-64/b.json");
  assert.equal((await get(cache, storage, "linux-64/a.json")).held, true);
  await get(cache, storage, "linux-64/c.json");
  // b was used least recently: it went to make room for c.
  assert.equal((await get(cache, storage, "linux-64/b.json")).held, false);
  assert.equal((await get(cache, storage, "linux-64/b.json")).held, true);
  assert.equal((await get(cache, storage, "linux-64/a.json")).held, false);
});

Deno.test("HotFileCache holds no file above maxFileBytes, but still answers it", async () => {
  await using channel = await makeChannel({ "linux-64/big.json": "x".repeat(200) });
  const { storage } = channel;
  const cache = new HotFileCache(storage, { maxFileBytes: 150 });
  assert.equal(cache.holds(150), true);
  assert.equal(cache.holds(151), false);
  for (let i = 0; i < 2; i++) {
    const { file, held } = await get(cache, storage, "linux-64/big.json");
    assert.equal(held, false);
    assert.equal(file.bytes.length, 200);
  }
});

Deno.test("HotFileCache.gzipped() compresses a version once", async () => {
  const json = JSON.stringify({
    packages: Object.fromEntries([...Array(50)].map((_, i) => [`p${i}`, i])),
  });
  await using channel = await makeChannel({ "linux-64/repodata.json": json });
  const { storage } = channel;
  const cache = new HotFileCache(storage);
  const { file } = await get(cache, storage, "linux-64/repodata.json");
  const [first, second] = await Promise.all([
    cache.gzipped("linux-64/repodata.json", file),
    cache.gzipped("linux-64/repodata.json", file),
  ]);
  assert.equal(first, second);
  assert.equal(await cache.gzipped("linux-64/repodata.json", file), first);
  assert.ok(first.length < json.length);
  assert.equal(new TextDecoder().decode(gunzipSync(first)), json);
});
