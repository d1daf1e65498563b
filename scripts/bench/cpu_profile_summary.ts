/**
 * Summarises V8 CPU profiles (`deno run --cpu-prof`): the functions that
 * take the most self time and the most total (inclusive) time, summed over
 * every `.cpuprofile` under a directory.
 *
 * ```sh
 * deno run --allow-read scripts/bench/cpu_profile_summary.ts DIR [TOP]
 * ```
 *
 * @module
 */

import { join, relative } from "node:path";

interface _CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}

interface _Node {
  id: number;
  callFrame: _CallFrame;
  children?: number[];
}

interface _Profile {
  nodes: _Node[];
  samples: number[];
  timeDeltas: number[];
}

/** One function's share of the sampled time. */
export interface ProfileEntry {
  /** `name (file:line)`. */
  where: string;
  /** Milliseconds sampled in the function itself. */
  selfMs: number;
  /** Milliseconds sampled in it or anything it called. */
  totalMs: number;
}

/** What {@linkcode summariseProfiles} found. */
export interface ProfileSummary {
  /** Milliseconds sampled, idle included. */
  sampledMs: number;
  /** Milliseconds sampled in `(idle)`. */
  idleMs: number;
  /** Every function, by self time, largest first. */
  entries: ProfileEntry[];
}

function _where(frame: _CallFrame, root: string): string {
  const name = frame.functionName || "(anonymous)";
  if (frame.url === "") return name;
  let file = frame.url.replace(/^file:\/\//, "");
  if (file.startsWith(root)) file = relative(root, file);
  else file = file.replace(/^.*\/(node_modules|npm|ext|deno)\//, "$1/");
  return `${name} (${file}:${frame.lineNumber + 1})`;
}

/** Reads every `.cpuprofile` under `dir` and sums their samples per function. */
export async function summariseProfiles(dir: string, root: string): Promise<ProfileSummary> {
  const self = new Map<string, number>();
  const total = new Map<string, number>();
  let sampledMs = 0;
  let idleMs = 0;
  for (const path of await _profileFiles(dir)) {
    const profile = JSON.parse(await Deno.readTextFile(path)) as _Profile;
    const byId = new Map(profile.nodes.map((node) => [node.id, node]));
    const parent = new Map<number, number>();
    for (const node of profile.nodes) {
      for (const child of node.children ?? []) parent.set(child, node.id);
    }
    for (let i = 0; i < profile.samples.length; i++) {
      const ms = (profile.timeDeltas[i] ?? 0) / 1000;
      sampledMs += ms;
      const node = byId.get(profile.samples[i]!);
      if (!node) continue;
      const where = _where(node.callFrame, root);
      if (node.callFrame.functionName === "(idle)") idleMs += ms;
      self.set(where, (self.get(where) ?? 0) + ms);
      const seen = new Set<string>();
      for (let id: number | undefined = node.id; id !== undefined; id = parent.get(id)) {
        const frame = _where(byId.get(id)!.callFrame, root);
        if (seen.has(frame)) continue;
        seen.add(frame);
        total.set(frame, (total.get(frame) ?? 0) + ms);
      }
    }
  }
  const entries = [...total.keys()].map((where) => ({
    where,
    selfMs: self.get(where) ?? 0,
    totalMs: total.get(where) ?? 0,
  })).sort((a, b) => b.selfMs - a.selfMs);
  return { sampledMs, idleMs, entries };
}

async function _profileFiles(dir: string): Promise<string[]> {
  const files: string[] = [];
  for await (const entry of Deno.readDir(dir)) {
    const path = join(dir, entry.name);
    if (entry.isDirectory) files.push(...await _profileFiles(path));
    else if (entry.name.endsWith(".cpuprofile")) files.push(path);
  }
  return files;
}

/** Formats the top `top` entries by self time and by total time as text. */
export function formatSummary(summary: ProfileSummary, top: number): string {
  const busy = summary.sampledMs - summary.idleMs;
  const share = (ms: number) => `${(100 * ms / Math.max(busy, 1e-9)).toFixed(1)}%`;
  const lines = [
    `sampled ${summary.sampledMs.toFixed(0)} ms, busy ${
      busy.toFixed(0)
    } ms (shares are of busy time)`,
    "top self time:",
  ];
  const skip = new Set(["(idle)", "(root)"]);
  const work = summary.entries.filter((entry) => !skip.has(entry.where));
  for (const entry of work.slice(0, top)) {
    lines.push(
      `  ${share(entry.selfMs).padStart(6)} ${
        entry.selfMs.toFixed(0).padStart(7)
      } ms  ${entry.where}`,
    );
  }
  lines.push("top total time:");
  const byTotal = [...work].sort((a, b) => b.totalMs - a.totalMs);
  for (const entry of byTotal.slice(0, top)) {
    lines.push(
      `  ${share(entry.totalMs).padStart(6)} ${
        entry.totalMs.toFixed(0).padStart(7)
      } ms  ${entry.where}`,
    );
  }
  return lines.join("\n");
}

if (import.meta.main) {
  const [dir, top = "25"] = Deno.args;
  if (dir === undefined) {
    console.error("usage: cpu_profile_summary.ts DIR [TOP]");
    Deno.exit(2);
  }
  console.log(formatSummary(await summariseProfiles(dir, Deno.cwd()), Number(top)));
}
