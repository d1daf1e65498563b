/**
 * The conda platforms ("subdirs") a channel may hold.
 *
 * @module
 */

/** Every subdir name conda, mamba and rattler know. */
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

/** Whether `name` is a conda subdir this server accepts. */
export function isKnownSubdir(name: string): boolean {
  return KNOWN_SUBDIRS.has(name);
}
