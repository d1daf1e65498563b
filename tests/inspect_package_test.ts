import assert from "node:assert/strict";
import { join } from "node:path";
import zlib from "node:zlib";
import { HttpError, httpErrorOf } from "../src/http/http_error.ts";
import { STATUS } from "../src/http/status.ts";
import { type InspectOptions, inspectPackage } from "../src/package/inspect_package.ts";
import type { PackageMetadata } from "../src/package/package_metadata.ts";
import {
  buildPackage,
  bzip2Compress,
  EMPTY_BZIP2_STREAM,
  indexJson,
  packageFilename,
  type PackageSpec,
  writeLargePackage,
  writePackage,
} from "./helpers/conda_package.ts";
import { rejectionOf } from "./helpers/rejection.ts";
import { buildTar, concatBytes } from "./helpers/tar_writer.ts";
import { buildZip } from "./helpers/zip_writer.ts";

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "inspect_package_test_" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/**
 * Inspects `bytes` written to a temp file under `filename`, and from memory
 * (as a small upload and the `index` command do): both must give the same
 * metadata, or the same error.
 */
async function inspectBytes(
  dir: string,
  bytes: Uint8Array,
  filename: string,
  options?: InspectOptions,
): Promise<PackageMetadata> {
  const path = join(dir, "spool-" + crypto.randomUUID());
  await Deno.writeFile(path, bytes);
  const [fromFile, fromMemory] = await Promise.allSettled([
    inspectPackage(path, filename, options),
    inspectPackage(bytes, filename, options),
  ]);
  if (fromFile.status === "fulfilled") {
    assert.equal(fromMemory.status, "fulfilled", "from memory it fails, from the file it does not");
    assert.deepEqual((fromMemory as PromiseFulfilledResult<PackageMetadata>).value, fromFile.value);
    return fromFile.value;
  }
  assert.equal(fromMemory.status, "rejected", "from memory it passes, from the file it does not");
  const [fileError, memoryError] = [fromFile.reason, (fromMemory as PromiseRejectedResult).reason];
  assert.equal(memoryError?.constructor, fileError?.constructor);
  assert.equal(memoryError?.message, fileError?.message);
  throw fileError;
}

/**
 * Asserts that `promise` rejects with one of the package readers' own errors
 * (no HTTP in the readers) that the server's error map answers with `status`,
 * and whose message matches.
 */
async function assertPackageError(
  promise: Promise<unknown>,
  status: number,
  pattern: RegExp,
): Promise<HttpError> {
  const caught = await rejectionOf(promise);
  assert.ok(
    caught instanceof SyntaxError || caught instanceof RangeError || caught instanceof TypeError,
    `expected a package error, got ${String(caught)}`,
  );
  const mapped = httpErrorOf(caught);
  assert.ok(mapped, `not mapped to a status: ${String(caught)}`);
  assert.equal(mapped.status, status, mapped.message);
  assert.match(mapped.message, pattern);
  assert.match(mapped.message, /^Cannot /);
  assert.ok(!/[\r\n]/.test(mapped.message));
  return mapped;
}

/** Runs `command` with `args`; returns its success and stdout. */
async function run(command: string, args: string[]): Promise<{ ok: boolean; stdout: string }> {
  const output = await new Deno.Command(command, { args, stdout: "piped", stderr: "piped" })
    .output();
  return { ok: output.success, stdout: new TextDecoder().decode(output.stdout) };
}

const FOO: PackageSpec = {
  name: "foo",
  version: "1.2.3",
  build: "h1234_0",
  depends: ["python >=3.9", "libzlib"],
  license: "BSD-3-Clause",
};

Deno.test("inspectPackage() reads index.json from a .conda", async () => {
  await withTempDir(async (dir) => {
    const path = await writePackage(dir, FOO);
    const metadata = await inspectPackage(path, "foo-1.2.3-h1234_0.conda");
    assert.equal(metadata.format, ".conda");
    assert.equal(metadata.name, "foo");
    assert.equal(metadata.version, "1.2.3");
    assert.equal(metadata.build, "h1234_0");
    assert.equal(metadata.subdir, "linux-64");
    assert.deepEqual(metadata.index, indexJson(FOO));
    assert.deepEqual(metadata.index.depends, ["python >=3.9", "libzlib"]);
    assert.equal(metadata.index.arch, "x86_64");
    assert.equal(metadata.index.platform, "linux");
    assert.deepEqual(metadata.about, {
      summary: "The foo test package",
      license: "BSD-3-Clause",
      home: "https://example.org/foo",
    });
    assert.equal(metadata.runExports, undefined);
    assert.ok(!("runExports" in metadata));
  });
});

Deno.test("inspectPackage() reads a noarch .tar.bz2 with run_exports", async () => {
  await withTempDir(async (dir) => {
    const spec: PackageSpec = {
      name: "bar-baz",
      version: "0.1",
      build: "pyhd8ed1ab_2",
      buildNumber: 2,
      subdir: "noarch",
      format: ".tar.bz2",
      runExports: { weak: ["bar-baz >=0.1,<0.2"] },
      about: { summary: "Bar", description: "multi\nline" },
    };
    const path = await writePackage(dir, spec);
    const metadata = await inspectPackage(path, packageFilename(spec));
    assert.equal(metadata.format, ".tar.bz2");
    assert.equal(metadata.name, "bar-baz");
    assert.equal(metadata.subdir, "noarch");
    assert.equal(metadata.index.noarch, "generic");
    assert.equal(metadata.index.arch, null);
    assert.equal(metadata.index.build_number, 2);
    assert.deepEqual(metadata.runExports, { weak: ["bar-baz >=0.1,<0.2"] });
    assert.deepEqual(metadata.about, { summary: "Bar", description: "multi\nline" });
  });
});

Deno.test("inspectPackage() reads both formats, both orders, for every layout", async () => {
  await withTempDir(async (dir) => {
    const variants: PackageSpec[] = [
      { ...FOO, format: ".tar.bz2" },
      { ...FOO, format: ".tar.bz2", infoLast: true },
      { ...FOO, format: ".tar.bz2", infoLast: true, runExports: { strong: ["foo"] } },
      { ...FOO, format: ".conda", condaInfoFirst: true },
      { ...FOO, format: ".conda", zip: { zip64: true, comment: "a zip comment" } },
      { ...FOO, format: ".conda", runExports: { weak: ["foo"] }, subdir: "osx-arm64" },
      {
        ...FOO,
        format: ".tar.bz2",
        infoLast: true,
        files: {
          ["deep/".repeat(40) + "pax.txt"]: "long pax name",
          "bin/foo": "#!/bin/sh\n",
          "lib/libfoo.so": new Uint8Array(300_000).map((_, i) => (i * 31) & 0xff),
        },
      },
    ];
    for (const spec of variants) {
      const path = await writePackage(dir, spec);
      const metadata = await inspectPackage(path, packageFilename(spec));
      const label = JSON.stringify({ ...spec, files: undefined });
      assert.deepEqual(metadata.index, indexJson(spec), label);
      assert.equal(metadata.subdir, spec.subdir ?? "linux-64", label);
      assert.equal(metadata.about?.license, "BSD-3-Clause", label);
      assert.deepEqual(metadata.runExports, spec.runExports, label);
    }
  });
});

Deno.test("inspectPackage() reads a .conda whose info member is deflated", async () => {
  await withTempDir(async (dir) => {
    const info = buildTar([{ name: "info/index.json", data: JSON.stringify(indexJson(FOO)) }]);
    const zip = buildZip([
      { name: "metadata.json", data: '{"conda_pkg_format_version": 2}' },
      { name: "info-foo-1.2.3-h1234_0.tar.zst", data: zlib.zstdCompressSync(info), deflate: true },
    ]);
    const metadata = await inspectBytes(dir, zip, "foo-1.2.3-h1234_0.conda");
    assert.equal(metadata.name, "foo");
    assert.equal(metadata.about, undefined);
  });
});

Deno.test("inspectPackage() refuses a .conda whose pkg member fails its CRC-32, and never decodes it", async () => {
  await withTempDir(async (dir) => {
    const bytes = await buildPackage(FOO);
    const name = new TextEncoder().encode("pkg-foo-1.2.3-h1234_0.tar.zst");
    const at = bytes.findIndex((_, i) => name.every((byte, j) => bytes[i + j] === byte));
    assert.ok(at > 0);
    // the local header's name is followed by the member's data: wreck its zstd frame
    bytes.fill(0xaa, at + name.length, at + name.length + 24);
    await assertPackageError(
      inspectBytes(dir, bytes, "foo-1.2.3-h1234_0.conda"),
      422,
      /zip member pkg-foo-1\.2\.3-h1234_0\.tar\.zst is corrupt/,
    );
    // without the checksum pass the pkg member is not even looked at
    const metadata = await inspectBytes(dir, bytes, "foo-1.2.3-h1234_0.conda", {
      verifyChecksums: false,
    });
    assert.equal(metadata.name, "foo");
    const path = join(dir, "wrecked.conda");
    await Deno.writeFile(path, bytes);
    assert.ok(!(await run("unzip", ["-tq", path])).ok, "the pkg member really is broken");
  });
});

Deno.test("inspectPackage() ignores about.json and run_exports.json that are not JSON objects", async () => {
  await withTempDir(async (dir) => {
    for (const format of [".conda", ".tar.bz2"] as const) {
      const spec: PackageSpec = {
        ...FOO,
        format,
        infoFiles: { "info/about.json": "{not json", "info/run_exports.json": "[1, 2]" },
      };
      const metadata = await inspectBytes(dir, await buildPackage(spec), packageFilename(spec));
      assert.equal(metadata.name, "foo");
      assert.ok(!("about" in metadata), format);
      assert.ok(!("runExports" in metadata), format);
    }
  });
});

Deno.test("inspectPackage() refuses a wrong extension and path-like names before reading", async () => {
  await withTempDir(async (dir) => {
    const bytes = await buildPackage(FOO);
    await assertPackageError(inspectBytes(dir, bytes, "foo-1.2.3-h1234_0.zip"), 415, /extension/);
    await assertPackageError(
      inspectBytes(dir, bytes, "../foo-1.2.3-h1234_0.conda"),
      400,
      /separator/,
    );
    await assertPackageError(inspectBytes(dir, bytes, ".foo-1.2.3-h1234_0.conda"), 400, /dot/);
    await assertPackageError(inspectBytes(dir, bytes, "foo\0-1.2.3-h1234_0.conda"), 400, /control/);
  });
});

Deno.test("inspectPackage() refuses content that does not match the extension's magic", async () => {
  await withTempDir(async (dir) => {
    const conda = await buildPackage(FOO);
    const bz2 = await buildPackage({ ...FOO, format: ".tar.bz2" });
    await assertPackageError(
      inspectBytes(dir, conda, "foo-1.2.3-h1234_0.tar.bz2"),
      STATUS.UnprocessableContent,
      /not a bzip2 file/,
    );
    await assertPackageError(
      inspectBytes(dir, bz2, "foo-1.2.3-h1234_0.conda"),
      STATUS.UnprocessableContent,
      /not a zip file/,
    );
    for (const filename of ["foo-1.2.3-h1234_0.conda", "foo-1.2.3-h1234_0.tar.bz2"]) {
      await assertPackageError(inspectBytes(dir, new Uint8Array(), filename), 422, /not a/);
      await assertPackageError(
        inspectBytes(dir, new Uint8Array([0x42, 0x5a]), filename),
        422,
        /not a/,
      );
      const html = new TextEncoder().encode("<html>hello</html>");
      await assertPackageError(inspectBytes(dir, html, filename), 422, /not a/);
    }
    // right magic, garbage after it
    const garbage = new Uint8Array(5000).map((_, i) => (i * 7919) & 0xff);
    garbage.set([0x42, 0x5a, 0x68, 0x39]);
    await assertPackageError(
      inspectBytes(dir, garbage, "foo-1.2.3-h1234_0.tar.bz2"),
      422,
      /corrupt/,
    );
    garbage.set([0x50, 0x4b, 0x03, 0x04]);
    await assertPackageError(inspectBytes(dir, garbage, "foo-1.2.3-h1234_0.conda"), 422, /zip/);
  });
});

Deno.test("inspectPackage() refuses an index.json that lies about name, version or build", async () => {
  await withTempDir(async (dir) => {
    for (const format of [".conda", ".tar.bz2"] as const) {
      const cases: [Record<string, unknown>, RegExp][] = [
        [
          { name: "other" },
          /index\.json name "other" does not match filename "foo-1\.2\.3-h1234_0"/,
        ],
        [{ name: "fo" }, /name "fo"/],
        [{ version: "1.2.4" }, /version "1\.2\.4"/],
        [{ version: "1.2" }, /version "1\.2"/],
        [{ build: "h1234_1" }, /build "h1234_1"/],
        [{ build: "h1234" }, /build "h1234"/],
      ];
      for (const [extraIndex, pattern] of cases) {
        const bytes = await buildPackage({ ...FOO, format, extraIndex });
        await assertPackageError(
          inspectBytes(dir, bytes, `foo-1.2.3-h1234_0${format}`),
          422,
          pattern,
        );
      }
      // a dash inside the name is fine when everything agrees
      const dashed: PackageSpec = { name: "foo-bar", version: "1", build: "0", format };
      const metadata = await inspectBytes(dir, await buildPackage(dashed), "foo-bar-1-0" + format);
      assert.equal(metadata.name, "foo-bar");
      // the same package uploaded under another name
      await assertPackageError(
        inspectBytes(dir, await buildPackage(dashed), "foo-bar-2-0" + format),
        422,
        /version "1"/,
      );
    }
  });
});

Deno.test("inspectPackage() refuses missing or mistyped name, version, build and subdir", async () => {
  await withTempDir(async (dir) => {
    const filename = "foo-1.2.3-h1234_0.conda";
    const cases: [Record<string, unknown>, RegExp][] = [
      [{ name: undefined }, /no valid "name"/],
      [{ name: "" }, /no valid "name"/],
      [{ name: 42 }, /no valid "name"/],
      [{ version: null }, /no valid "version"/],
      [{ version: 1.2 }, /no valid "version"/],
      [{ build: ["h1234_0"] }, /no valid "build"/],
      [{ subdir: "Linux-64" }, /"Linux-64" is not a subdir name/],
      [{ subdir: undefined, platform: null, arch: null }, /no subdir and no platform/],
      [{ subdir: 64 }, /"" is not a subdir name/],
      [{ subdir: "../../etc" }, /"..\/..\/etc" is not a subdir name/],
      [{ subdir: undefined, platform: "osx", arch: "../x" }, /"osx-..\/x" is not a subdir name/],
    ];
    for (const [extraIndex, pattern] of cases) {
      await assertPackageError(
        inspectBytes(dir, await buildPackage({ ...FOO, extraIndex }), filename),
        422,
        pattern,
      );
    }
  });
});

Deno.test("inspectPackage() refuses an index.json that is not a JSON object", async () => {
  await withTempDir(async (dir) => {
    for (const format of [".conda", ".tar.bz2"] as const) {
      const filename = `foo-1.2.3-h1234_0${format}`;
      const cases: [string | Uint8Array, RegExp][] = [
        ["{not json", /not valid JSON/],
        ["", /not valid JSON/],
        [new Uint8Array([0x7b, 0xff, 0xfe, 0x7d]), /not valid JSON/],
        ["[1, 2, 3]", /not a JSON object/],
        ["null", /not a JSON object/],
        ['"foo-1.2.3-h1234_0"', /not a JSON object/],
      ];
      for (const [content, pattern] of cases) {
        const spec: PackageSpec = { ...FOO, format, infoFiles: { "info/index.json": content } };
        await assertPackageError(
          inspectBytes(dir, await buildPackage(spec), filename),
          422,
          pattern,
        );
      }
    }
  });
});

Deno.test("inspectPackage() refuses a package without info/index.json", async () => {
  await withTempDir(async (dir) => {
    for (
      const spec of [
        { ...FOO, format: ".conda" },
        { ...FOO, format: ".tar.bz2" },
        { ...FOO, format: ".tar.bz2", infoLast: true },
      ] satisfies PackageSpec[]
    ) {
      const bytes = await buildPackage({ ...spec, infoFiles: { "info/index.json": null } });
      await assertPackageError(
        inspectBytes(dir, bytes, packageFilename(spec)),
        422,
        /info\/index\.json is missing/,
      );
    }
  });
});

Deno.test("inspectPackage() refuses a .conda without an info member", async () => {
  await withTempDir(async (dir) => {
    const pkg = zlib.zstdCompressSync(buildTar([{ name: "bin/foo", data: "x" }]));
    const zip = buildZip([
      { name: "metadata.json", data: '{"conda_pkg_format_version": 2}' },
      { name: "pkg-foo-1.2.3-h1234_0.tar.zst", data: pkg },
    ]);
    await assertPackageError(
      inspectBytes(dir, zip, "foo-1.2.3-h1234_0.conda"),
      422,
      /no info-\*\.tar\.zst member/,
    );
    // an info member that is not zstd
    const notZstd = buildZip([{ name: "info-foo-1.2.3-h1234_0.tar.zst", data: "plain text" }]);
    await assertPackageError(inspectBytes(dir, notZstd, "foo-1.2.3-h1234_0.conda"), 422, /corrupt/);
    // an info member whose tar is garbage
    const badTar = buildZip([{
      name: "info-foo-1.2.3-h1234_0.tar.zst",
      data: zlib.zstdCompressSync(new Uint8Array(2048).fill(0x41)),
    }]);
    await assertPackageError(inspectBytes(dir, badTar, "foo-1.2.3-h1234_0.conda"), 422, /tar/);
  });
});

Deno.test("inspectPackage() gives a 4xx package error for every truncation of a package", async () => {
  await withTempDir(async (dir) => {
    for (
      const spec of [
        { ...FOO, format: ".conda" },
        { ...FOO, format: ".conda", condaInfoFirst: true, zip: { zip64: true } },
        { ...FOO, format: ".tar.bz2" },
        { ...FOO, format: ".tar.bz2", infoLast: true, runExports: { weak: ["foo"] } },
      ] satisfies PackageSpec[]
    ) {
      const bytes = await buildPackage(spec);
      const filename = packageFilename(spec);
      const path = join(dir, "truncated");
      let refused = 0;
      for (let length = 0; length < bytes.length; length++) {
        await Deno.writeFile(path, bytes.subarray(0, length));
        try {
          const metadata = await inspectPackage(path, filename);
          // only a .tar.bz2 cut inside its end-of-stream trailer (magic + CRC, 10 bytes),
          // after every info/ file was read and block-CRC-checked, may still inspect
          assert.equal(spec.format, ".tar.bz2", `${filename} cut at ${length} inspected`);
          assert.ok(length >= bytes.length - 10, `${filename} cut at ${length} inspected`);
          assert.deepEqual(metadata.index, indexJson(spec));
        } catch (error) {
          const status = httpErrorOf(error)?.status ?? 500;
          assert.ok(status >= 400 && status < 500, `${filename} cut at ${length}: ${error}`);
          refused++;
        }
      }
      assert.ok(refused >= bytes.length - 10, `${filename}: ${refused} of ${bytes.length}`);
    }
  });
});

Deno.test("inspectPackage() gives a 4xx package error or the right metadata for corrupted bytes", async () => {
  await withTempDir(async (dir) => {
    for (const format of [".conda", ".tar.bz2"] as const) {
      const spec: PackageSpec = { ...FOO, format };
      const bytes = await buildPackage(spec);
      const path = join(dir, "corrupt");
      for (let at = 0; at < bytes.length; at++) {
        // one flipped bit (its position cycling with the offset), and at every third offset
        // a whole flipped byte
        for (const mask of at % 3 === 0 ? [1 << (at % 8), 0xff] : [1 << (at % 8)]) {
          const copy = bytes.slice();
          copy[at]! ^= mask;
          await Deno.writeFile(path, copy);
          try {
            const metadata = await inspectPackage(path, packageFilename(spec));
            // the flip hit something inspection does not read or check (zip metadata, pkg member)
            assert.equal(metadata.name, "foo");
          } catch (error) {
            const status = httpErrorOf(error)?.status ?? 500;
            assert.ok(status >= 400 && status < 500, `${format} flip at ${at}: ${error}`);
          }
        }
      }
    }
  });
});

Deno.test("inspectPackage() stops a bzip2 bomb at maxScannedBytes", async () => {
  await withTempDir(async (dir) => {
    // 32 MiB of zeros before info/: a few hundred bytes of bzip2
    const tar = buildTar([
      { name: "lib/zeros.bin", data: new Uint8Array(32 * 1024 * 1024) },
      { name: "info/index.json", data: JSON.stringify(indexJson(FOO)) },
    ]);
    const bomb = await bzip2Compress(tar);
    assert.ok(bomb.length < 4096, `bomb is ${bomb.length} bytes`);
    const filename = "foo-1.2.3-h1234_0.tar.bz2";
    const started = performance.now();
    await assertPackageError(
      inspectBytes(dir, bomb, filename, { maxScannedBytes: 1024 * 1024 }),
      422,
      /no complete info\/ section in the first 1048576 decompressed bytes/,
    );
    const elapsed = performance.now() - started;
    // the same file is fine under the default bound: the limit is what refused it
    const metadata = await inspectBytes(dir, bomb, filename);
    assert.equal(metadata.name, "foo");
    console.log(`bzip2 bomb refused after 1 MiB in ${elapsed.toFixed(0)} ms`);
  });
});

Deno.test("inspectPackage() stops a zstd bomb in the .conda info member at maxScannedBytes", async () => {
  await withTempDir(async (dir) => {
    const info = buildTar([
      { name: "info/zeros.bin", data: new Uint8Array(64 * 1024 * 1024) },
      { name: "info/index.json", data: JSON.stringify(indexJson(FOO)) },
    ]);
    const compressed = zlib.zstdCompressSync(info);
    assert.ok(compressed.length < 64 * 1024, `bomb is ${compressed.length} bytes`);
    const zip = buildZip([
      { name: "metadata.json", data: '{"conda_pkg_format_version": 2}' },
      { name: "info-foo-1.2.3-h1234_0.tar.zst", data: compressed },
    ]);
    const filename = "foo-1.2.3-h1234_0.conda";
    await assertPackageError(
      inspectBytes(dir, zip, filename, { maxScannedBytes: 1024 * 1024 }),
      422,
      /info member decompresses to more than 1048576 bytes/,
    );
    const metadata = await inspectBytes(dir, zip, filename);
    assert.equal(metadata.name, "foo");
  });
});

Deno.test("inspectPackage() refuses an info file larger than maxInfoFileBytes", async () => {
  await withTempDir(async (dir) => {
    for (const format of [".conda", ".tar.bz2"] as const) {
      const spec: PackageSpec = {
        ...FOO,
        format,
        extraIndex: { padding: "x".repeat(20_000) },
      };
      const bytes = await buildPackage(spec);
      const filename = packageFilename(spec);
      await assertPackageError(
        inspectBytes(dir, bytes, filename, { maxInfoFileBytes: 10_000 }),
        422,
        /info\/index\.json is larger than 10000 bytes/,
      );
      const metadata = await inspectBytes(dir, bytes, filename, { maxInfoFileBytes: 30_000 });
      assert.equal(metadata.index.padding, "x".repeat(20_000));
    }
  });
});

Deno.test("buildPackage() output is accepted by bzip2, tar, unzip and zstd", async () => {
  await withTempDir(async (dir) => {
    const bz2 = await writePackage(dir, {
      ...FOO,
      format: ".tar.bz2",
      runExports: { weak: ["x"] },
    });
    assert.ok((await run("bzip2", ["-t", bz2])).ok);
    const listing = await run("tar", ["-tjf", bz2]);
    assert.ok(listing.ok);
    assert.deepEqual(listing.stdout.trim().split("\n"), [
      "info/index.json",
      "info/about.json",
      "info/paths.json",
      "info/run_exports.json",
      "info/files",
      "share/foo/README.txt",
    ]);
    const index = await run("tar", ["-xjOf", bz2, "info/index.json"]);
    assert.deepEqual(JSON.parse(index.stdout), indexJson(FOO));

    for (const zip of [{}, { zip64: true, comment: "c" }]) {
      const conda = await writePackage(dir, { ...FOO, zip });
      const unzip = await run("unzip", ["-l", conda]);
      assert.ok(unzip.ok);
      assert.match(
        unzip.stdout,
        /metadata\.json[\s\S]*pkg-foo-1\.2\.3-h1234_0\.tar\.zst[\s\S]*info-/,
      );
      assert.ok((await run("unzip", ["-tq", conda])).ok);
      const member = join(dir, "info.tar.zst");
      const extract = await run("sh", [
        "-c",
        `unzip -p '${conda}' info-foo-1.2.3-h1234_0.tar.zst > '${member}'`,
      ]);
      assert.ok(extract.ok);
      assert.ok((await run("zstd", ["-t", "-q", member])).ok);
      const infoListing = await run("sh", ["-c", `zstd -dc '${member}' | tar -t`]);
      assert.ok(infoListing.stdout.includes("info/index.json"));
    }
  });
});

Deno.test("writeLargePackage() output is accepted by bzip2, tar, unzip and zstd", async () => {
  await withTempDir(async (dir) => {
    const payload = 3 * 1024 * 1024 + 12345;
    for (const infoLast of [false, true]) {
      const path = join(dir, `big-1.0-0.tar.bz2`);
      const spec: PackageSpec = { name: "big", version: "1.0", format: ".tar.bz2", infoLast };
      const size = await writeLargePackage(path, spec, payload);
      assert.equal((await Deno.stat(path)).size, size);
      assert.ok((await run("bzip2", ["-t", path])).ok, `bzip2 -t infoLast=${infoLast}`);
      const listing = await run("tar", ["-tvjf", path]);
      assert.ok(listing.ok);
      assert.match(listing.stdout, new RegExp(`${payload} .* lib/big-large\\.bin`));
      const names = listing.stdout.trim().split("\n").map((line) => line.split(" ").at(-1));
      assert.equal(names[0], infoLast ? "share/big/README.txt" : "info/index.json");
      const metadata = await inspectPackage(path, "big-1.0-0.tar.bz2");
      assert.equal(metadata.name, "big");
    }
    const conda = join(dir, "big-1.0-0.conda");
    const size = await writeLargePackage(conda, { name: "big", version: "1.0" }, payload);
    assert.equal((await Deno.stat(conda)).size, size);
    assert.ok(size > payload);
    assert.ok((await run("unzip", ["-tq", conda])).ok);
    const pkg = await run("sh", [
      "-c",
      `unzip -p '${conda}' pkg-big-1.0-0.tar.zst | zstd -dc | tar -tv`,
    ]);
    assert.match(pkg.stdout, new RegExp(`${payload} .* lib/big-large\\.bin`));
  });
});

Deno.test("inspectPackage() reads ~200 MB packages without reading their payload", async () => {
  await withTempDir(async (dir) => {
    const payload = 200 * 1024 * 1024;
    for (const format of [".conda", ".tar.bz2"] as const) {
      const spec: PackageSpec = { name: "large", version: "2.0", build: "h0_0", format };
      const path = join(dir, packageFilename(spec));
      const size = await writeLargePackage(path, spec, payload);
      assert.ok(size > payload);
      const started = performance.now();
      const metadata = await inspectPackage(path, packageFilename(spec));
      const elapsed = performance.now() - started;
      assert.deepEqual(metadata.index, indexJson(spec));
      console.log(`inspected ${(size / 1e6).toFixed(0)} MB ${format} in ${elapsed.toFixed(0)} ms`);
      await Deno.remove(path);
    }
  });
});

Deno.test("inspectPackage() bounds an info-last .tar.bz2 by maxScannedBytes", async () => {
  await withTempDir(async (dir) => {
    const spec: PackageSpec = { name: "late", version: "1", format: ".tar.bz2", infoLast: true };
    const path = join(dir, packageFilename(spec));
    await writeLargePackage(path, spec, 8 * 1024 * 1024);
    await assertPackageError(
      inspectPackage(path, packageFilename(spec), { maxScannedBytes: 2 * 1024 * 1024 }),
      422,
      /no complete info\/ section/,
    );
    const metadata = await inspectPackage(path, packageFilename(spec));
    assert.equal(metadata.name, "late");
  });
});

Deno.test("inspectPackage() refuses a .tar.bz2 behind thousands of empty bzip2 streams, and accepts a few", async () => {
  await withTempDir(async (dir) => {
    const spec: PackageSpec = { ...FOO, format: ".tar.bz2" };
    const bytes = await buildPackage(spec);
    const filename = packageFilename(spec);
    const padded = (count: number) => {
      const out = new Uint8Array(count * EMPTY_BZIP2_STREAM.length + bytes.length);
      for (let i = 0; i < count; i++) out.set(EMPTY_BZIP2_STREAM, i * EMPTY_BZIP2_STREAM.length);
      out.set(bytes, count * EMPTY_BZIP2_STREAM.length);
      return out;
    };
    // 75,000 empty streams: 1 MiB that once cost ~0.2 s of CPU before any output
    const started = performance.now();
    await assertPackageError(
      inspectBytes(dir, padded(75_000), filename),
      422,
      /more than 8 empty bzip2 streams in a row/,
    );
    console.log(
      `75,000 empty bzip2 streams refused in ${(performance.now() - started).toFixed(1)} ms`,
    );
    // a few empty streams (a concatenation tool's padding) stay readable
    const metadata = await inspectBytes(dir, padded(8), filename);
    assert.equal(metadata.name, "foo");
  });
});

Deno.test("inspectPackage() derives the subdir from platform and arch, as conda does, and takes any well-formed subdir", async () => {
  await withTempDir(async (dir) => {
    const cases: [Record<string, unknown>, string][] = [
      // a genuine nano-2.4.1's index.json: no subdir
      [{ subdir: undefined, platform: "osx", arch: "x86_64" }, "osx-64"],
      [{ subdir: undefined, platform: "linux", arch: "x86" }, "linux-32"],
      [{ subdir: undefined, platform: "linux", arch: "aarch64" }, "linux-aarch64"],
      [{ subdir: undefined, platform: "linux", arch: null }, "noarch"],
      [{ subdir: undefined, platform: null, arch: null, noarch: "python" }, "noarch"],
      [{ subdir: "linux-fake" }, "linux-fake"],
      [{ subdir: "emscripten-wasm32" }, "emscripten-wasm32"],
      [{ subdir: "zos-z" }, "zos-z"],
    ];
    for (const [extraIndex, subdir] of cases) {
      for (const format of [".conda", ".tar.bz2"] as const) {
        const spec: PackageSpec = { ...FOO, format, extraIndex };
        const metadata = await inspectBytes(dir, await buildPackage(spec), packageFilename(spec));
        assert.equal(metadata.subdir, subdir, JSON.stringify(extraIndex));
      }
    }
  });
});

Deno.test("inspectPackage() reads paths.json flags and the recipe's source in the same pass", async () => {
  await withTempDir(async (dir) => {
    const paths = {
      paths: [
        { _path: "bin/foo", file_mode: "binary", prefix_placeholder: "/opt/anaconda1anaconda2" },
        { _path: "etc/conda/activate.d/foo.sh" },
        { _path: "bin/.foo-post-link.sh" },
      ],
      paths_version: 1,
    };
    const recipe = "package:\n  name: foo\nsource:\n  url: https://example.org/foo-1.2.3.tar.gz\n" +
      "  git_url: https://example.org/foo.git\n";
    for (const format of [".conda", ".tar.bz2"] as const) {
      const spec: PackageSpec = {
        ...FOO,
        format,
        infoFiles: { "info/paths.json": JSON.stringify(paths), "info/recipe/meta.yaml": recipe },
      };
      const metadata = await inspectBytes(dir, await buildPackage(spec), packageFilename(spec));
      assert.deepEqual(metadata.postInstall, {
        "binary_prefix": true,
        "text_prefix": false,
        "activate.d": true,
        "deactivate.d": false,
        "pre_link": false,
        "post_link": true,
        "pre_unlink": false,
      });
      assert.deepEqual(metadata.recipeSource, {
        source_url: "https://example.org/foo-1.2.3.tar.gz",
        source_git_url: "https://example.org/foo.git",
      });
      // a recipe that is not YAML tells nothing and refuses nothing
      const broken = { ...spec, infoFiles: { "info/recipe/meta.yaml": "source: [\n" } };
      const plain = await inspectBytes(dir, await buildPackage(broken), packageFilename(spec));
      assert.deepEqual(plain.recipeSource, {});
      assert.equal(plain.postInstall?.post_link, false);
    }
  });
});

Deno.test("inspectPackage() checks every block CRC of a small .tar.bz2, and only info/ of a larger one", async () => {
  await withTempDir(async (dir) => {
    const spec: PackageSpec = { ...FOO, format: ".tar.bz2" };
    const path = join(dir, packageFilename(spec));
    // 3 MiB: the flip at 60 % lands in a later bzip2 block than info/
    await writeLargePackage(path, spec, 3 * 1024 * 1024);
    const bytes = await Deno.readFile(path);
    const at = Math.floor(bytes.length * 0.6);
    bytes[at]! ^= 0x55;
    await assertPackageError(
      inspectBytes(dir, bytes, packageFilename(spec), { maxWholeBzip2Bytes: bytes.length }),
      422,
      /corrupt bzip2 data .*CRC/,
    );
    // over the size bound (or without checksums) the payload is not decoded
    for (const options of [{ maxWholeBzip2Bytes: bytes.length - 1 }, { verifyChecksums: false }]) {
      const metadata = await inspectBytes(dir, bytes, packageFilename(spec), options);
      assert.equal(metadata.name, "foo");
    }
  });
});

Deno.test("inspectPackage() stops checking, and refuses nothing, when a small .tar.bz2 decompresses to a lot", async () => {
  await withTempDir(async (dir) => {
    // info/ first, then 64 MiB of zeros: a few kB of bzip2
    const tar = buildTar([
      { name: "info/index.json", data: JSON.stringify(indexJson(FOO)) },
      { name: "lib/zeros.bin", data: new Uint8Array(64 * 1024 * 1024) },
    ]);
    const packed = await bzip2Compress(tar);
    assert.ok(packed.length < 64 * 1024, `${packed.length} bytes`);
    const metadata = await inspectBytes(dir, packed, "foo-1.2.3-h1234_0.tar.bz2", {
      maxWholeBzip2Bytes: 256 * 1024,
    });
    assert.equal(metadata.name, "foo");
  });
});

Deno.test("inspectPackage() reads a multi-stream .tar.bz2 (pbzip2 style) and refuses one with a bad later stream or trailing bytes", async () => {
  await withTempDir(async (dir) => {
    // the tar cut in three, each piece its own bzip2 stream, as pbzip2 writes
    const tar = buildTar([
      { name: "info/index.json", data: JSON.stringify(indexJson(FOO)) },
      { name: "lib/data.txt", data: "conda package payload ".repeat(40_000) },
      { name: "lib/more.txt", data: "more payload ".repeat(40_000) },
    ]);
    const cuts = [0, 300_000, 700_000, tar.length];
    const streams: Uint8Array[] = [];
    for (let i = 0; i + 1 < cuts.length; i++) {
      streams.push(await bzip2Compress(tar.subarray(cuts[i], cuts[i + 1])));
    }
    const packed = concatBytes(streams);
    const filename = "foo-1.2.3-h1234_0.tar.bz2";
    assert.equal((await inspectBytes(dir, packed, filename)).name, "foo");
    // a flipped byte in the last stream, far past info/: its block CRC catches it
    const corrupt = packed.slice();
    corrupt[packed.length - streams[2]!.length / 2]! ^= 0x08;
    await assertPackageError(inspectBytes(dir, corrupt, filename), 422, /corrupt bzip2 data/);
    // bytes after the last stream, and bytes between two streams
    const junk = new TextEncoder().encode("not bzip2");
    for (
      const bytes of [
        concatBytes([packed, junk]),
        concatBytes([streams[0]!, junk, streams[1]!, streams[2]!]),
      ]
    ) {
      await assertPackageError(inspectBytes(dir, bytes, filename), 422, /corrupt bzip2 data/);
    }
  });
});
