import assert from "node:assert/strict";
import { canonicalJson } from "../src/index/repodata_record.ts";
import { type IndexedPackage, indexedPackage, SubdirIndex } from "../src/index/subdir_index.ts";

const decoder = new TextDecoder();

function pkg(filename: string, extra: Record<string, unknown> = {}): IndexedPackage {
  const name = filename.slice(0, filename.indexOf("-"));
  return indexedPackage(filename, { name, version: "1.0", size: filename.length, ...extra });
}

/** What repodata.json must be for `records`, built independently of the fragment cache. */
function expected(subdir: string, records: Map<string, Record<string, unknown>>): string {
  const packages: Record<string, unknown> = {};
  const conda: Record<string, unknown> = {};
  for (const [filename, record] of records) {
    (filename.endsWith(".conda") ? conda : packages)[filename] = record;
  }
  return canonicalJson({
    info: { subdir },
    packages,
    "packages.conda": conda,
    removed: [],
    repodata_version: 1,
  });
}

Deno.test("SubdirIndex.toRepodataJson() stays sorted and exact through many adds, replaces and removes", () => {
  const index = new SubdirIndex("linux-64");
  const reference = new Map<string, Record<string, unknown>>();
  let seed = 42;
  const random = () => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648;
  // Enough packages to split chunks several times, in random order.
  for (let step = 0; step < 4000; step++) {
    const n = Math.floor(random() * 1500);
    const filename = `p${n}-1.0-0${random() < 0.3 ? ".tar.bz2" : ".conda"}`;
    if (random() < 0.2) {
      const had = reference.delete(filename);
      assert.equal(index.delete(filename) !== undefined, had);
    } else {
      const record = { name: `p${n}`, version: "1.0", size: filename.length, step };
      const previous = index.set(indexedPackage(filename, record));
      assert.equal(previous !== undefined, reference.has(filename));
      reference.set(filename, record);
    }
    if (step % 10 === 0 || step === 3999) {
      assert.equal(decoder.decode(index.toRepodataJson()), expected("linux-64", reference));
    }
  }
  assert.equal(index.size, reference.size);
  assert.ok(reference.size > 1000, `${reference.size}`);
});

Deno.test("SubdirIndex.parse() reads back the exact bytes it wrote", () => {
  const index = new SubdirIndex("noarch");
  for (let i = 0; i < 700; i++) index.set(pkg(`pkg${i}-1.0-0.conda`, { depends: [`dep${i}`] }));
  index.set(pkg("legacy-1.0-0.tar.bz2", { summary: "naïve" }));
  const bytes = index.toRepodataJson();
  const parsed = SubdirIndex.parse("noarch", decoder.decode(bytes));
  assert.equal(parsed.size, 701);
  assert.deepEqual(parsed.toRepodataJson(), bytes);
  assert.deepEqual(parsed.get("legacy-1.0-0.tar.bz2")?.record, {
    name: "legacy",
    version: "1.0",
    size: "legacy-1.0-0.tar.bz2".length,
    summary: "naïve",
  });
  assert.equal(parsed.get("legacy-1.0-0.tar.bz2")?.extras, undefined);
});

Deno.test("SubdirIndex.parse() keeps unchanged packages of the previous index with their extras", () => {
  const previous = new SubdirIndex("linux-64");
  const same = indexedPackage("same-1.0-0.conda", { name: "same", size: 1 }, {
    about: { summary: "kept" },
  });
  const changed = indexedPackage("changed-1.0-0.conda", { name: "changed", size: 1 }, {
    about: { summary: "stale" },
  });
  previous.set(same);
  previous.set(changed);
  const text = canonicalJson({
    info: { subdir: "linux-64" },
    packages: {},
    "packages.conda": {
      "same-1.0-0.conda": { name: "same", size: 1 },
      "changed-1.0-0.conda": { name: "changed", size: 2 },
      "new-1.0-0.conda": { name: "new", size: 3 },
    },
  });
  const parsed = SubdirIndex.parse("linux-64", text, previous);
  assert.equal(parsed.get("same-1.0-0.conda"), same);
  assert.equal(parsed.get("changed-1.0-0.conda")?.extras, undefined);
  assert.equal(parsed.get("changed-1.0-0.conda")?.record.size, 2);
  assert.deepEqual([...parsed.names()].sort(), ["changed", "new", "same"]);
});

Deno.test("SubdirIndex.parse() refuses what is not repodata", () => {
  for (
    const text of [
      "{ not json",
      "[]",
      '{"packages":[]}',
      '{"packages.conda":{"x-1-0.conda":"string"}}',
      '{"packages":{"../evil-1-0.tar.bz2":{}}}',
      '{"packages":{"notes.txt":{}}}',
    ]
  ) {
    assert.throws(() => SubdirIndex.parse("linux-64", text), SyntaxError, text);
  }
  assert.equal(SubdirIndex.parse("linux-64", "{}").size, 0);
});

Deno.test("SubdirIndex.packagesNamed() follows adds, replaces and removes", () => {
  const index = new SubdirIndex("linux-64");
  index.set(pkg("foo-1.0-0.conda"));
  index.set(pkg("foo-1.0-0.tar.bz2"));
  index.set(pkg("bar-1.0-0.conda"));
  assert.deepEqual(index.packagesNamed("foo").map((p) => p.filename).sort(), [
    "foo-1.0-0.conda",
    "foo-1.0-0.tar.bz2",
  ]);
  // A replacement may even change the record's name.
  index.set(indexedPackage("foo-1.0-0.conda", { name: "renamed" }));
  index.delete("foo-1.0-0.tar.bz2");
  assert.deepEqual(index.packagesNamed("foo"), []);
  assert.deepEqual([...index.names()].sort(), ["bar", "renamed"]);
});

Deno.test("SubdirIndex.toIndexHtml() lists every package and escapes what it shows", () => {
  const index = new SubdirIndex("linux-64");
  index.set(indexedPackage("a-1.0-0.conda", {
    name: "a",
    version: "<script>alert(1)</script>",
    size: 2048,
    sha256: "0123456789abcdef".repeat(4),
  }));
  index.set(pkg("b&c-1.0-0.tar.bz2"));
  const html = decoder.decode(index.toIndexHtml());
  assert.ok(!html.includes("<script>"), html);
  assert.ok(html.includes("&lt;script&gt;alert(1)&lt;/script&gt;"));
  assert.ok(html.includes(">b&amp;c-1.0-0.tar.bz2</a>"));
  assert.ok(html.includes('href="b%26c-1.0-0.tar.bz2"'));
  assert.ok(html.includes("2.0 KB"));
  assert.ok(html.includes("<code>0123456789ab</code>"));
  assert.equal(html.match(/<tr><td>/g)?.length, 2);
});

Deno.test("indexedPackage() refuses a filename that is not a plain package name", () => {
  for (const filename of ["foo.zip", "dir/foo-1-0.conda", ".hidden-1-0.conda", ".conda"]) {
    assert.throws(() => indexedPackage(filename, {}), TypeError, filename);
  }
});
