import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { join } from "node:path";
import { digestChannelFile } from "../src/index/file_digest.ts";
import { ChannelStorage } from "../src/storage/channel_storage.ts";

Deno.test("digestChannelFile() measures size, sha256 and md5 of a channel file in one pass", async () => {
  const root = await Deno.makeTempDir();
  try {
    const storage = await ChannelStorage.open(root);
    await Deno.mkdir(join(root, "noarch"));
    // Several read chunks' worth of bytes.
    const bytes = new Uint8Array(300_000).map((_, i) => (i * 31 + 7) & 0xff);
    await Deno.writeFile(join(root, "noarch/foo-1.0-0.conda"), bytes);
    const digest = await digestChannelFile(storage, "noarch/foo-1.0-0.conda");
    assert.deepEqual(digest, {
      size: bytes.length,
      sha256: createHash("sha256").update(bytes).digest("hex"),
      md5: createHash("md5").update(bytes).digest("hex"),
    });
    await Deno.writeFile(join(root, "noarch/empty-1.0-0.conda"), new Uint8Array());
    assert.deepEqual(await digestChannelFile(storage, "noarch/empty-1.0-0.conda"), {
      size: 0,
      sha256: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
      md5: "d41d8cd98f00b204e9800998ecf8427e",
    });
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("digestChannelFile() refuses a missing file and a path outside the channel", async () => {
  const root = await Deno.makeTempDir();
  try {
    const storage = await ChannelStorage.open(root);
    await assert.rejects(digestChannelFile(storage, "noarch/missing-1.0-0.conda"), /Cannot digest/);
    await assert.rejects(digestChannelFile(storage, "../etc/passwd"), /Cannot digest/);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
