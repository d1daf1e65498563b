import assert from "node:assert/strict";
import { join } from "node:path";
import { ConfigError } from "../src/config.ts";
import { createLogger } from "../src/log.ts";
import { openChannel } from "../src/open_channel.ts";
import { SPOOL_DIR_NAME } from "../src/storage/channel_storage.ts";
import { buildPackage, packageFilename, type PackageSpec } from "./helpers/conda_package.ts";
import { tempDir } from "./helpers/temp_dir.ts";

async function repodataPackages(root: string, subdir: string): Promise<string[]> {
  const repodata = JSON.parse(await Deno.readTextFile(join(root, subdir, "repodata.json")));
  return Object.keys(repodata["packages.conda"] ?? {});
}

Deno.test("openChannel() opens two channels independently: each indexes its own files, cleans its own spool and holds its own lock", async () => {
  await using dir = await tempDir("auh-open-channel-");
  const rootA = join(dir.path, "a");
  const rootB = join(dir.path, "b");
  const spec: PackageSpec = { name: "only-in-a", version: "1.0" };
  await Deno.mkdir(join(rootA, "linux-64"), { recursive: true });
  await Deno.writeFile(join(rootA, "linux-64", packageFilename(spec)), await buildPackage(spec));
  await Deno.mkdir(join(rootB, SPOOL_DIR_NAME), { recursive: true });
  await Deno.writeTextFile(join(rootB, SPOOL_DIR_NAME, "upload-1.part"), "half an upload");
  const logs: string[] = [];
  const logger = createLogger({ write: (line) => logs.push(line) });

  const a = await openChannel({ name: "a", root: rootA }, { logger });
  const b = await openChannel({ name: "b", root: rootB }, { logger });
  try {
    assert.equal(a.name, "a");
    assert.equal(b.name, "b");
    assert.deepEqual(await repodataPackages(rootA, "linux-64"), [packageFilename(spec)]);
    await assert.rejects(Deno.stat(join(rootB, "linux-64")), Deno.errors.NotFound);
    assert.deepEqual(await repodataPackages(rootA, "noarch"), []);
    assert.deepEqual(await repodataPackages(rootB, "noarch"), [], "each channel has its noarch");
    assert.deepEqual([...Deno.readDirSync(join(rootB, SPOOL_DIR_NAME))], []);
    assert.ok(
      logs.some((line) => /WARN removed leftover spool files .*count=1 channel=b/.test(line)),
    );
    assert.ok(logs.some((line) => /INFO index reconciled channel=a .*added=1/.test(line)));

    // a's lock held does not hold b up
    let releaseA!: () => void;
    let aHeld!: () => void;
    const aIsHeld = new Promise<void>((resolve) => aHeld = resolve);
    const holdingA = a.storage.withLock(() =>
      new Promise<void>((resolve) => {
        releaseA = resolve;
        aHeld();
      })
    );
    await aIsHeld;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const inB = await Promise.race([
      b.storage.withLock(() => Promise.resolve("b locked")),
      new Promise((resolve) => timer = setTimeout(() => resolve("b waited"), 10_000)),
    ]);
    clearTimeout(timer);
    assert.equal(inB, "b locked");
    releaseA();
    await holdingA;
  } finally {
    a.storage.close();
    b.storage.close();
  }
});

Deno.test("openChannel() answers ConfigError for a directory it cannot use", async () => {
  await using dir = await tempDir("auh-open-channel-");
  const file = join(dir.path, "not-a-directory");
  await Deno.writeTextFile(file, "");
  await assert.rejects(
    openChannel({ name: "x", root: file }, { logger: createLogger({ write: () => {} }) }),
    ConfigError,
  );
});
