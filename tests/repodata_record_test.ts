import assert from "node:assert/strict";
import type { PackageRecordSource } from "../src/package/package_metadata.ts";
import {
  canonicalJson,
  DROPPED_INDEX_KEYS,
  recordFragment,
  repodataRecord,
  repodataSection,
} from "../src/index/repodata_record.ts";

function source(index: Record<string, unknown>, filename = "foo-1.0-0.conda"): PackageRecordSource {
  return {
    filename,
    size: 1234,
    sha256: "ab".repeat(32),
    md5: "cd".repeat(16),
    metadata: {
      format: ".conda",
      name: "foo",
      version: "1.0",
      build: "0",
      subdir: "linux-64",
      index,
    },
  };
}

Deno.test("repodataRecord() drops the keys conda-index drops and adds md5, sha256 and size", () => {
  const kept = {
    name: "foo",
    version: "1.0",
    build: "0",
    build_number: 0,
    depends: ["python >=3.9"],
    subdir: "linux-64",
    timestamp: 1700000000000,
    license: "MIT",
  };
  const index: Record<string, unknown> = { ...kept };
  for (const key of DROPPED_INDEX_KEYS) index[key] = "dropped";
  const record = repodataRecord(source(index));
  for (const key of DROPPED_INDEX_KEYS) assert.equal(key in record, false, key);
  assert.deepEqual(record, {
    ...kept,
    md5: "cd".repeat(16),
    sha256: "ab".repeat(32),
    size: 1234,
  });
  assert.equal(DROPPED_INDEX_KEYS.size, 10);
});

Deno.test("repodataRecord() lets the measured digests win over index.json", () => {
  const record = repodataRecord(source({ name: "foo", md5: "lie", sha256: "lie", size: 1 }));
  assert.equal(record.md5, "cd".repeat(16));
  assert.equal(record.sha256, "ab".repeat(32));
  assert.equal(record.size, 1234);
});

Deno.test("canonicalJson() matches Python json.dumps(sort_keys=True, separators=(',', ':'))", () => {
  const value = {
    z: 1,
    a: { y: [3, "é", null, true], b: 'tab\there "q" \\ \u007f \u{1F600} \u2028' },
    m: -0.5,
    n: 12345678901,
  };
  // Produced by CPython 3: json.dumps(value, sort_keys=True, separators=(",", ":"))
  const python = String
    .raw`{"a":{"b":"tab\there \"q\" \\ \u007f \ud83d\ude00 \u2028","y":[3,"\u00e9",null,true]},"m":-0.5,"n":12345678901,"z":1}`;
  assert.equal(canonicalJson(value), python);
  assert.deepEqual(JSON.parse(canonicalJson(value)), value);
});

Deno.test("canonicalJson() sorts keys at every level and leaves out undefined", () => {
  assert.equal(
    canonicalJson({ b: { d: 1, c: [{ f: 1, e: 2 }] }, a: undefined, "a.b": 0, A: false }),
    '{"A":false,"a.b":0,"b":{"c":[{"e":2,"f":1}],"d":1}}',
  );
});

Deno.test("recordFragment() is the serialized member of a repodata section", () => {
  const fragment = recordFragment("foo-1.0-0.conda", { size: 1, name: "foo" });
  assert.equal(fragment, '"foo-1.0-0.conda":{"name":"foo","size":1}');
  assert.deepEqual(JSON.parse(`{${fragment}}`), { "foo-1.0-0.conda": { name: "foo", size: 1 } });
});

Deno.test("repodataSection() sorts .tar.bz2 into packages and .conda into packages.conda", () => {
  assert.equal(repodataSection("foo-1.0-0.tar.bz2"), "packages");
  assert.equal(repodataSection("foo-1.0-0.conda"), "packages.conda");
  assert.equal(repodataSection("foo-1.0-0.zip"), undefined);
  assert.equal(repodataSection(".conda"), undefined);
  assert.equal(repodataSection("repodata.json"), undefined);
});
