/**
 * conda's version order (conda's `VersionOrder`), to find a package's newest
 * version without loading a solver.
 *
 * @module
 */

type Part = number | string;

interface ParsedVersion {
  epoch: Part[][];
  main: Part[][];
  local: Part[][];
}

const PART = /\d+|\*+|[^\d*]+/g;

/** Parses one dotted run (main version or local version) into components. */
function components(text: string): Part[][] {
  // A trailing underscore (openssl-like `1.1_`) stays a string part; others are dots.
  const dotted = text.endsWith("_")
    ? text.slice(0, -1).replaceAll("_", ".") + "_"
    : text.replaceAll("_", ".");
  return dotted.split(".").map((component) => {
    const parts: Part[] = (component.match(PART) ?? []).map((part) =>
      /^\d+$/.test(part)
        ? Number(part)
        : part === "post"
        ? Number.POSITIVE_INFINITY
        : part === "dev"
        ? "DEV"
        : part
    );
    return typeof parts[0] === "number" ? parts : [0, ...parts];
  });
}

function parse(version: string): ParsedVersion {
  let rest = version.trim().toLowerCase();
  let epoch = "0";
  const bang = rest.indexOf("!");
  if (bang >= 0) {
    epoch = rest.slice(0, bang);
    rest = rest.slice(bang + 1);
  }
  const plus = rest.indexOf("+");
  const local = plus >= 0 ? rest.slice(plus + 1) : "";
  if (plus >= 0) rest = rest.slice(0, plus);
  return {
    epoch: [[/^\d+$/.test(epoch) ? Number(epoch) : 0]],
    main: components(rest),
    local: local === "" ? [] : components(local),
  };
}

function compareParts(a: Part, b: Part): number {
  if (a === b) return 0;
  if (typeof a === "string" && typeof b !== "string") return -1;
  if (typeof b === "string" && typeof a !== "string") return 1;
  return a < b ? -1 : 1;
}

function compareRuns(a: Part[][], b: Part[][]): number {
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    const left = a[i] ?? [];
    const right = b[i] ?? [];
    for (let j = 0; j < Math.max(left.length, right.length); j++) {
      const order = compareParts(left[j] ?? 0, right[j] ?? 0);
      if (order !== 0) return order;
    }
  }
  return 0;
}

/**
 * Compares two conda version strings: negative when `a` is older, positive
 * when newer, 0 when equal in conda's order (`1.0` equals `1.0.0`; `dev` <
 * `a` < `b` < `rc` < numbers < `post`; epochs `N!` first, `+local` last).
 *
 * @example Usage
 * ```ts
 * import { compareCondaVersions } from "./conda_version.ts";
 * console.log(compareCondaVersions("1.10", "1.9") > 0); // true
 * console.log(compareCondaVersions("1.0rc1", "1.0") < 0); // true
 * ```
 */
export function compareCondaVersions(a: string, b: string): number {
  const left = parse(a);
  const right = parse(b);
  return compareRuns(left.epoch, right.epoch) || compareRuns(left.main, right.main) ||
    compareRuns(left.local, right.local);
}
