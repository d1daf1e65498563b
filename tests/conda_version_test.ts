import { deepStrictEqual } from "node:assert/strict";
import { Version } from "@conda-org/rattler";
import { compareCondaVersions } from "../src/package/conda_version.ts";

const VERSIONS = [
  "0.4",
  "0.4.0",
  "0.4.1.rc",
  "0.4.1.RC",
  "0.4.1",
  "0.5a1",
  "0.5b3",
  "0.5C1",
  "0.5",
  "0.9.6",
  "0.960923",
  "1.0",
  "1.1dev1",
  "1.1_",
  "1.1a1",
  "1.1.0dev1",
  "1.1.a1",
  "1.1.0rc1",
  "1.1.0",
  "1.1.0post1",
  "1.1post1",
  "1996.07.12",
  "1!0.4.1",
  "1!3.1.1.6",
  "2!0.4.1",
  "1.2.3+local",
  "1.2.3",
  "1.10",
  "1.9",
  "2.0.0dev0",
  "2.0.0a0",
  "2.0.0",
];

function sign(value: number): number {
  return value < 0 ? -1 : value > 0 ? 1 : 0;
}

Deno.test("compareCondaVersions() orders versions as rattler's conda Version does", () => {
  for (const a of VERSIONS) {
    for (const b of VERSIONS) {
      const expected = new Version(a).compare(new Version(b));
      deepStrictEqual(
        sign(compareCondaVersions(a, b)),
        sign(expected),
        `${a} vs ${b}`,
      );
    }
  }
});
