/**
 * The invariants a channel directory must satisfy whatever happened to the
 * server (concurrent uploads, a SIGKILL at any moment, hostile input): no
 * partial package under a final name, every package file indexed exactly
 * once with its true digests, every record backed by its file, parseable
 * index files, and, once a server has started up on the channel, no
 * leftovers of interrupted work.
 *
 * @module
 */

import { createHash } from "node:crypto";
import { join } from "node:path";
import { zstdDecompressSync } from "node:zlib";
import { AUXILIARY_INTERVAL_MS } from "../../src/index/index_write_cycle.ts";
import { inspectPackage } from "../../src/package/inspect_package.ts";
import { isKnownSubdir, isSubdirName } from "../../src/package/platforms.ts";
import { LOCK_FILE_NAME, SPOOL_DIR_NAME } from "../../src/storage/channel_storage.ts";

/** Options for {@linkcode checkChannelInvariants}. */
export interface ChannelInvariantOptions {
  /**
   * Whether a server has finished starting up on the channel since the last
   * interruption and no request is in flight. Only then are these checked:
   * `repodata.json.zst` decompresses to exactly `repodata.json` (the index
   * writes the `.zst` second, so a crash may leave it behind until start-up
   * repairs it), `channeldata.json` and `index.html` exist, the spool
   * directory is empty and no `.*.tmp` file is left (one seen is looked at
   * again a moment later: a write still in progress has them).
   * @default {true}
   */
  settled?: boolean;
  /**
   * What earlier checks learned about package files, reused for a file whose
   * inode, size, mtime and ctime are unchanged (so that a long run of checks
   * reads each package once); filled by this check.
   * @default {a new, empty cache}
   */
  cache?: Map<string, PackageFacts>;
}

/** What a check learned about one package file. */
export interface PackageFacts {
  /** Inode, size, mtime and ctime of the file these facts are about. */
  stat: string;
  /** Size in bytes. */
  size: number;
  /** Lowercase hex sha256. */
  sha256: string;
  /** Lowercase hex md5. */
  md5: string;
  /** What inspection read, or why it failed. */
  inspected: { name: string; version: string; build: string; subdir: string } | { error: string };
}

const PACKAGE_SECTIONS = ["packages", "packages.conda"] as const;
type _Section = typeof PACKAGE_SECTIONS[number];
const TEMPORARY = /^\..*\.tmp$/;
const decoder = new TextDecoder("utf-8", { fatal: true });

/** The repodata section a package file belongs in, or undefined for other files. */
export function packageSection(filename: string): _Section | undefined {
  if (filename.startsWith(".")) return undefined;
  if (filename.endsWith(".conda") && filename.length > ".conda".length) return "packages.conda";
  if (filename.endsWith(".tar.bz2") && filename.length > ".tar.bz2".length) return "packages";
  return undefined;
}

/**
 * Checks every invariant of the channel at `channelRoot` and returns the
 * violations, one line each (`"<path>: <problem>"`); an empty list means the
 * channel is sound. Reads every package file in full.
 */
export async function checkChannelInvariants(
  channelRoot: string,
  options: ChannelInvariantOptions = {},
): Promise<string[]> {
  const settled = options.settled ?? true;
  const cache = options.cache ?? new Map<string, PackageFacts>();
  const violations: string[] = [];
  const report = (path: string, problem: string) => violations.push(`${path}: ${problem}`);
  // Temporary files seen, judged at the end: a write in progress has them too.
  const temporaries: string[] = [];
  const temporary = (path: string) => temporaries.push(path);

  const top = await _list(channelRoot);
  for (const entry of top) {
    if (entry.isDirectory) {
      if (entry.name === SPOOL_DIR_NAME) continue;
      // A new subdir name (linux-fake) is a subdir once the index has written it.
      const indexed = isSubdirName(entry.name) &&
        await _readOptional(join(channelRoot, entry.name, "repodata.json")) !== undefined;
      if (isKnownSubdir(entry.name) || indexed) {
        await _checkSubdir(channelRoot, entry.name, { settled, cache, report, temporary });
      } else {
        for (const inner of await _list(join(channelRoot, entry.name))) {
          if (packageSection(inner.name)) {
            report(`${entry.name}/${inner.name}`, "package file outside an indexed subdir");
          }
        }
      }
    } else if (packageSection(entry.name)) {
      report(entry.name, "package file at the channel root");
    } else if (settled && TEMPORARY.test(entry.name)) {
      temporary(entry.name);
    }
  }

  const channeldata = await _readOptional(join(channelRoot, "channeldata.json"));
  if (channeldata === undefined) {
    if (settled) report("channeldata.json", "missing");
  } else {
    try {
      const value = parseStrictJson(decoder.decode(channeldata));
      if (!_isObject(value)) report("channeldata.json", "not a JSON object");
    } catch (error) {
      report("channeldata.json", `does not parse: ${_describe(error)}`);
    }
  }

  if (settled) {
    for (const entry of await _list(join(channelRoot, SPOOL_DIR_NAME))) {
      report(`${SPOOL_DIR_NAME}/${entry.name}`, "spool file left after start-up");
    }
  }
  if (temporaries.length > 0) {
    // A write in progress (index.html and channeldata.json follow uploads by
    // up to AUXILIARY_INTERVAL_MS; a replaced version goes just after its
    // write) is done a moment later; a name still there was left behind.
    await new Promise((resolve) => setTimeout(resolve, AUXILIARY_INTERVAL_MS + 250));
    for (const path of temporaries) {
      const left = await Deno.lstat(join(channelRoot, path)).then(() => true, () => false);
      if (left) report(path, "temporary file left after start-up");
    }
  }
  return violations;
}

interface _Entry {
  name: string;
  isDirectory: boolean;
  isFile: boolean;
}

async function _list(directory: string): Promise<_Entry[]> {
  const entries: _Entry[] = [];
  try {
    for await (const entry of Deno.readDir(directory)) {
      entries.push({ name: entry.name, isDirectory: entry.isDirectory, isFile: entry.isFile });
    }
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
  return entries.sort((a, b) => a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
}

async function _readOptional(path: string): Promise<Uint8Array | undefined> {
  try {
    return await Deno.readFile(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return undefined;
    throw error;
  }
}

interface _SubdirCheck {
  settled: boolean;
  cache: Map<string, PackageFacts>;
  report: (path: string, problem: string) => void;
  /** Notes a temporary file, reported if it is still there at the end. */
  temporary: (path: string) => void;
}

async function _checkSubdir(
  channelRoot: string,
  subdir: string,
  { settled, cache, report, temporary }: _SubdirCheck,
): Promise<void> {
  const directory = join(channelRoot, subdir);
  const entries = await _list(directory);
  const packages = new Map<string, _Section>();
  for (const entry of entries) {
    const path = `${subdir}/${entry.name}`;
    const section = packageSection(entry.name);
    if (section) {
      if (entry.isFile) packages.set(entry.name, section);
      else report(path, "a package name that is not a regular file");
    } else if (settled && TEMPORARY.test(entry.name)) {
      temporary(path);
    } else if (entry.name === LOCK_FILE_NAME) {
      report(path, "lock file inside a subdir");
    }
  }

  const jsonBytes = await _readOptional(join(directory, "repodata.json"));
  let sections: Record<_Section, Record<string, unknown>> | undefined;
  if (jsonBytes === undefined) {
    if (packages.size > 0 || settled) report(`${subdir}/repodata.json`, "missing");
  } else {
    try {
      const repodata = parseStrictJson(decoder.decode(jsonBytes));
      if (!_isObject(repodata)) throw new SyntaxError("not a JSON object");
      const info = repodata.info;
      if (!_isObject(info) || info.subdir !== subdir) {
        report(`${subdir}/repodata.json`, `info.subdir is not ${JSON.stringify(subdir)}`);
      }
      const parsed: Partial<Record<_Section, Record<string, unknown>>> = {};
      for (const name of PACKAGE_SECTIONS) {
        const value = repodata[name] ?? {};
        if (!_isObject(value)) throw new SyntaxError(`"${name}" is not an object`);
        parsed[name] = value;
      }
      sections = parsed as Record<_Section, Record<string, unknown>>;
    } catch (error) {
      report(`${subdir}/repodata.json`, `does not parse: ${_describe(error)}`);
    }
  }

  if (sections) {
    for (const name of PACKAGE_SECTIONS) {
      for (const filename of Object.keys(sections[name])) {
        const path = `${subdir}/${filename}`;
        if (packageSection(filename) !== name) {
          report(path, `listed under "${name}", which is not its section`);
        }
        if (!packages.has(filename)) report(path, "indexed but its file is missing");
      }
    }
  }

  for (const [filename, section] of packages) {
    const path = `${subdir}/${filename}`;
    const file = join(directory, filename);
    const record = sections?.[section][filename];
    const other = section === "packages" ? "packages.conda" : "packages";
    if (sections && sections[other][filename] !== undefined) {
      report(path, `also listed under "${other}"`);
    }
    const facts = await _facts(file, filename, path, cache);
    const metadata = "error" in facts.inspected ? undefined : facts.inspected;
    if ("error" in facts.inspected) {
      report(path, `not a complete, readable package: ${facts.inspected.error}`);
    }
    if (metadata && metadata.subdir !== subdir) {
      report(path, `its index.json is for subdir ${metadata.subdir}`);
    }
    if (!sections) continue;
    if (!_isObject(record)) {
      report(path, "package file not in repodata.json");
      continue;
    }
    for (const key of ["size", "sha256", "md5"] as const) {
      if (record[key] !== facts[key]) {
        report(path, `record ${key} ${JSON.stringify(record[key])} but the file has ${facts[key]}`);
      }
    }
    if (metadata) {
      for (const key of ["name", "version", "build", "subdir"] as const) {
        if (record[key] !== metadata[key]) {
          report(
            path,
            `record ${key} ${JSON.stringify(record[key])}, package says ${metadata[key]}`,
          );
        }
      }
    }
  }

  if (settled && jsonBytes !== undefined) {
    const zst = await _readOptional(join(directory, "repodata.json.zst"));
    if (zst === undefined) {
      report(`${subdir}/repodata.json.zst`, "missing");
    } else {
      let inflated: Uint8Array | undefined;
      try {
        inflated = new Uint8Array(zstdDecompressSync(zst));
      } catch (error) {
        report(`${subdir}/repodata.json.zst`, `does not decompress: ${_describe(error)}`);
      }
      if (inflated && !_sameBytes(inflated, jsonBytes)) {
        report(`${subdir}/repodata.json.zst`, "does not decompress to repodata.json's bytes");
      }
    }
    if (await _readOptional(join(directory, "index.html")) === undefined) {
      report(`${subdir}/index.html`, "missing");
    }
  }
}

/** Inspects and digests a package file, or takes the facts from `cache` if it is unchanged. */
async function _facts(
  file: string,
  filename: string,
  path: string,
  cache: Map<string, PackageFacts>,
): Promise<PackageFacts> {
  const info = await Deno.stat(file);
  const stat = `${info.ino}:${info.size}:${info.mtime?.getTime()}:${info.ctime?.getTime()}`;
  const known = cache.get(path);
  if (known?.stat === stat) return known;
  let inspected: PackageFacts["inspected"];
  try {
    const { name, version, build, subdir } = await inspectPackage(file, filename);
    inspected = { name, version, build, subdir };
  } catch (error) {
    inspected = { error: _describe(error) };
  }
  const facts = { stat, ...await _digest(file), inspected };
  cache.set(path, facts);
  return facts;
}

async function _digest(path: string): Promise<{ size: number; sha256: string; md5: string }> {
  const sha256 = createHash("sha256");
  const md5 = createHash("md5");
  let size = 0;
  using file = await Deno.open(path, { read: true });
  const buffer = new Uint8Array(1 << 20);
  while (true) {
    const n = await file.read(buffer);
    if (n === null) break;
    const chunk = buffer.subarray(0, n);
    sha256.update(chunk);
    md5.update(chunk);
    size += n;
  }
  return { size, sha256: sha256.digest("hex"), md5: md5.digest("hex") };
}

function _sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function _isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function _describe(error: unknown): string {
  return error instanceof Error ? error.message.split("\n")[0]! : String(error);
}

/**
 * `JSON.parse`, except that an object with the same key twice is a
 * `SyntaxError` (`JSON.parse` silently keeps the last one, which would hide a
 * package listed twice).
 */
export function parseStrictJson(text: string): unknown {
  const value = JSON.parse(text);
  _checkDuplicateKeys(text);
  return value;
}

/** Scans valid JSON text and throws on the first object holding a key twice. */
function _checkDuplicateKeys(text: string): void {
  // Each open object's key set; arrays push undefined.
  const stack: (Set<string> | undefined)[] = [];
  let expectKey = false;
  let i = 0;
  while (i < text.length) {
    const c = text[i]!;
    if (c === '"') {
      let end = i + 1;
      while (text[end] !== '"') end += text[end] === "\\" ? 2 : 1;
      const raw = text.slice(i, end + 1);
      i = end + 1;
      const keys = stack.at(-1);
      if (keys && expectKey) {
        const key = JSON.parse(raw) as string;
        if (keys.has(key)) {
          throw new SyntaxError(`duplicate key ${JSON.stringify(key).slice(0, 120)}`);
        }
        keys.add(key);
        expectKey = false;
      }
      continue;
    }
    if (c === "{") {
      stack.push(new Set());
      expectKey = true;
    } else if (c === "[") {
      stack.push(undefined);
    } else if (c === "}" || c === "]") {
      stack.pop();
    } else if (c === ",") {
      expectKey = stack.at(-1) !== undefined;
    }
    i++;
  }
}
