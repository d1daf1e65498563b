/**
 * The conda platforms ("subdirs") a channel may hold: conda's well-known
 * list, any other name of the same shape (new platforms appear over time:
 * `emscripten-wasm32`, `wasi-wasm32`, `linux-riscv64`, `zos-z`, ...), and a
 * package's subdir derived from `platform`/`arch` when its `info/index.json`
 * has none (packages built before conda-build wrote `subdir`).
 *
 * @module
 */

/** The subdir names conda, mamba and rattler know today. */
export const KNOWN_SUBDIRS: ReadonlySet<string> = new Set([
  "noarch",
  "linux-32",
  "linux-64",
  "linux-aarch64",
  "linux-armv6l",
  "linux-armv7l",
  "linux-ppc64",
  "linux-ppc64le",
  "linux-riscv32",
  "linux-riscv64",
  "linux-s390x",
  "osx-64",
  "osx-arm64",
  "win-32",
  "win-64",
  "win-arm64",
  "emscripten-wasm32",
  "wasi-wasm32",
  "freebsd-64",
  "zos-z",
]);

/**
 * What a subdir name looks like: `noarch`, or `<platform>-<arch>` in lower
 * case ASCII letters and digits (`_` allowed in the arch), at most 40
 * characters. Safe as a path segment and a URL segment, never a dotfile.
 */
const SUBDIR_NAME = /^(?:noarch|[a-z][a-z0-9]{0,19}-[a-z0-9][a-z0-9_]{0,19})$/;

/**
 * Whether `name` is one of conda's well-known subdirs. Use it where a
 * directory name must be recognised as a subdir without further evidence
 * (e.g. `-d .../channel/linux-64`).
 */
export function isKnownSubdir(name: string): boolean {
  return KNOWN_SUBDIRS.has(name);
}

/**
 * Whether `name` is a well-formed subdir name (see the pattern above): the
 * known ones and any new `<platform>-<arch>`.
 *
 * @example Usage
 * ```ts
 * import { isSubdirName } from "./platforms.ts";
 * console.log(isSubdirName("linux-riscv64"), isSubdirName("../etc")); // true false
 * ```
 */
export function isSubdirName(name: string): boolean {
  return SUBDIR_NAME.test(name);
}

/**
 * The subdir of a package from its `info/index.json`: its `subdir` field,
 * or, when that is missing, conda's own derivation from `platform` and
 * `arch` (`platform` without `arch` is `noarch`; an `x86` arch becomes `64`
 * or `32`: `osx` + `x86_64` is `osx-64`). A package with neither `subdir`
 * nor `platform` but a `noarch` field is `noarch`. Returns undefined when
 * nothing tells; the caller checks the result with {@linkcode isSubdirName}.
 *
 * @example Usage
 * ```ts
 * import { subdirOf } from "./platforms.ts";
 * console.log(subdirOf({ platform: "osx", arch: "x86_64" })); // "osx-64"
 * ```
 */
export function subdirOf(index: Readonly<Record<string, unknown>>): string | undefined {
  const { subdir, platform, noarch } = index;
  if (subdir !== undefined && subdir !== null) return typeof subdir === "string" ? subdir : "";
  let arch = index.arch;
  if (typeof platform === "string" && platform !== "") {
    if (arch === undefined || arch === null || arch === "") return "noarch";
    if (typeof arch !== "string") return undefined;
    if (arch.includes("x86")) arch = arch.includes("64") ? "64" : "32";
    return `${platform}-${arch}`;
  }
  if (typeof noarch === "string" && noarch !== "") return "noarch";
  return undefined;
}
