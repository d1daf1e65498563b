import assert from "node:assert/strict";
import { httpErrorOf } from "../src/http/http_error.ts";
import { PackageFormatError } from "../src/package/package_errors.ts";
import { type TarEntryHeader, TarReader } from "../src/package/tar_reader.ts";
import { buildTar, concatBytes, tarEnd, type TarEntry } from "./helpers/tar_writer.ts";

const decoder = new TextDecoder();

interface Seen {
  entries: TarEntryHeader[];
  files: Map<string, string>;
}

/** Reads `tar` in chunks of `chunkSize`, collecting every regular file. */
function readAll(tar: Uint8Array, chunkSize: number): Seen & { reader: TarReader } {
  const seen: Seen = { entries: [], files: new Map() };
  const reader = new TarReader({
    onEntry(entry) {
      seen.entries.push(entry);
      return entry.type === "0" ? "collect" : "skip";
    },
    onFile(entry, data) {
      seen.files.set(entry.name, decoder.decode(data));
      return false;
    },
  });
  for (let at = 0; at < tar.length; at += chunkSize) {
    reader.push(tar.subarray(at, at + chunkSize));
  }
  return { ...seen, reader };
}

const longDir = "very/long/directory/name/".repeat(6);
const entries: TarEntry[] = [
  { name: "info/index.json", data: '{"name":"foo"}' },
  { name: "empty.txt", data: "" },
  { name: `${longDir}pax-named-file.txt`, data: "pax", options: { longNames: "pax" } },
  { name: `${longDir}gnu-named-file.txt`, data: "gnu", options: { longNames: "gnu" } },
  { name: "x".repeat(120) + "/prefixed.txt", data: "prefix", options: { forcePrefix: true } },
  { name: "share/dir", data: "", options: { type: "5" } },
  { name: "./dot-slash.txt", data: "dot" },
  { name: "big.bin", data: new Uint8Array(1500).fill(7) },
];

Deno.test("TarReader reads ustar prefixes, pax paths and GNU long names in any chunking", () => {
  const tar = buildTar(entries);
  for (const chunkSize of [1, 7, 511, 512, 513, 4096, tar.length]) {
    const { entries: seen, files, reader } = readAll(tar, chunkSize);
    assert.ok(reader.ended, `ended with chunk size ${chunkSize}`);
    assert.deepEqual(seen.map((e) => e.name), [
      "info/index.json",
      "empty.txt",
      `${longDir}pax-named-file.txt`,
      `${longDir}gnu-named-file.txt`,
      "x".repeat(120) + "/prefixed.txt",
      "share/dir",
      "dot-slash.txt",
      "big.bin",
    ]);
    assert.equal(files.get("info/index.json"), '{"name":"foo"}');
    assert.equal(files.get("empty.txt"), "");
    assert.equal(files.get(`${longDir}pax-named-file.txt`), "pax");
    assert.equal(files.get(`${longDir}gnu-named-file.txt`), "gnu");
    assert.equal(files.get("x".repeat(120) + "/prefixed.txt"), "prefix");
    assert.equal(files.get("big.bin")?.length, 1500);
    assert.equal(seen.find((e) => e.name === "share/dir")?.type, "5");
  }
});

Deno.test("TarReader stops as soon as the visitor says so", () => {
  const names: string[] = [];
  const reader = new TarReader({
    onEntry(entry) {
      names.push(entry.name);
      return entry.name === "info/index.json" ? "collect" : "stop";
    },
    onFile: () => false,
  });
  reader.push(buildTar(entries));
  assert.deepEqual(names, ["info/index.json", "empty.txt"]);
  assert.ok(reader.done);
  assert.ok(!reader.ended);
  // further input is ignored
  reader.push(buildTar(entries));
  assert.equal(names.length, 2);
});

Deno.test("TarReader stops when onFile returns true", () => {
  const names: string[] = [];
  const reader = new TarReader({
    onEntry(entry) {
      names.push(entry.name);
      return "collect";
    },
    onFile: (entry) => entry.name === "empty.txt",
  });
  reader.push(buildTar(entries));
  assert.deepEqual(names, ["info/index.json", "empty.txt"]);
  assert.ok(reader.done);
});

Deno.test("TarReader refuses a header with a bad checksum with a 422", () => {
  const tar = buildTar([{ name: "info/index.json", data: "{}" }]);
  tar[0] = "j".charCodeAt(0); // name changed, checksum not
  const reader = new TarReader({ onEntry: () => "collect", onFile: () => false });
  assert.throws(() => reader.push(tar), (error: unknown) => {
    assert.ok(error instanceof PackageFormatError);
    assert.equal(httpErrorOf(error)?.status, 422);
    assert.match(error.message, /bad tar header checksum/);
    return true;
  });
});

Deno.test("TarReader refuses a bad size field and an oversized pax header with a 422", () => {
  const tar = buildTar([{ name: "a.txt", data: "abc" }]);
  tar.set(new TextEncoder().encode("00000000zz3\0"), 124);
  let sum = 0;
  for (let i = 0; i < 512; i++) sum += i >= 148 && i < 156 ? 0x20 : tar[i]!;
  tar.set(new TextEncoder().encode(sum.toString(8).padStart(6, "0") + "\0 "), 148);
  const reader = new TarReader({ onEntry: () => "collect", onFile: () => false });
  assert.throws(() => reader.push(tar), /bad tar size field/);

  const pax = buildTar([{ name: "p".repeat(300), data: "x", options: { longNames: "pax" } }]);
  const small = new TarReader({ onEntry: () => "collect", onFile: () => false }, {
    maxMetaBytes: 16,
  });
  assert.throws(() => small.push(pax), /extended header too large/);
});

Deno.test("TarReader reports a member cut short as not at a boundary", () => {
  const tar = concatBytes([buildTar([{ name: "a.bin", data: new Uint8Array(2000) }], {
    omitEnd: true,
  })]);
  const reader = new TarReader({ onEntry: () => "skip", onFile: () => false });
  reader.push(tar.subarray(0, 1000));
  assert.ok(!reader.atBoundary);
  assert.ok(!reader.done);
  reader.push(tar.subarray(1000));
  assert.ok(reader.atBoundary);
  reader.push(tarEnd());
  assert.ok(reader.ended);
});
