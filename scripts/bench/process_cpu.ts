/**
 * CPU time of processes, read from `/proc/<pid>/stat` (Linux): what a
 * measured window cost each process involved, so that a benchmark can show
 * the bound the machine's cores put on a throughput in the same run.
 *
 * A process's own time (`utime + stime`) covers all its threads; the time of
 * its waited-for children (`cutime + cstime`) grows when a child it spawned
 * (e.g. a `curl` run by `Deno.Command`) is reaped, so the benchmark's own
 * children-time delta over a window is the CPU of the clients that ran and
 * ended in it.
 *
 * @module
 */

/** CPU seconds of one process so far. */
export interface ProcessCpu {
  /** utime + stime of the process (all its threads), in seconds. */
  own: number;
  /** cutime + cstime: its reaped children's, in seconds. */
  children: number;
}

/** Clock ticks per second of `/proc/<pid>/stat` (`getconf CLK_TCK`: 100 on Linux). */
const CLOCK_TICKS = 100;

/**
 * Reads the CPU seconds of `pid` (`"self"` for this process); undefined
 * when the process is gone or `/proc` is missing.
 *
 * @example Usage
 * ```ts
 * import { readProcessCpu } from "./process_cpu.ts";
 * const cpu = readProcessCpu("self");
 * console.log(cpu === undefined || cpu.own >= 0); // true
 * ```
 */
export function readProcessCpu(pid: number | "self"): ProcessCpu | undefined {
  let text: string;
  try {
    text = Deno.readTextFileSync(`/proc/${pid}/stat`);
  } catch {
    return undefined;
  }
  // The command name (field 2) is in parentheses and may hold spaces.
  const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
  // fields[0] is field 3 (state): utime is field 14, cstime field 17.
  const tick = (field: number) => Number(fields[field - 3] ?? "0") / CLOCK_TICKS;
  return { own: tick(14) + tick(15), children: tick(16) + tick(17) };
}

/** CPU seconds of the whole machine so far (`/proc/stat`, all cores). */
export interface MachineCpu {
  /** Seconds the cores spent busy (everything but idle and I/O wait). */
  busy: number;
  /** Seconds of all cores together (busy + idle + I/O wait). */
  total: number;
}

/** Reads the machine's CPU seconds; undefined without `/proc/stat`. */
export function readMachineCpu(): MachineCpu | undefined {
  let text: string;
  try {
    text = Deno.readTextFileSync("/proc/stat");
  } catch {
    return undefined;
  }
  // "cpu  user nice system idle iowait irq softirq steal guest guest_nice"
  const ticks = (text.split("\n")[0] ?? "").trim().split(/\s+/).slice(1, 9).map(Number);
  const total = ticks.reduce((sum, value) => sum + value, 0) / CLOCK_TICKS;
  const idle = ((ticks[3] ?? 0) + (ticks[4] ?? 0)) / CLOCK_TICKS;
  return { busy: total - idle, total };
}

/** A process to account for: its group (e.g. "RGW") and how its time counts. */
export interface AccountedProcess {
  /** Row label, e.g. "replica" or "RGW daemons"; processes of one group add up. */
  group: string;
  /** Process id, or `"self"`. */
  pid: number | "self";
  /** Count the process's own time, or its reaped children's. @default {"own"} */
  count?: "own" | "children";
}

/** CPU seconds per group over a window, in the order the groups were first named. */
export type GroupCpu = [group: string, seconds: number][];

/** What {@linkcode startCpuWindow}'s stop function returns. */
export interface CpuWindow {
  /** CPU seconds of each group of the accounted processes. */
  groups: GroupCpu;
  /** The machine's busy CPU seconds in the window (all processes, ours and others'). */
  machineBusy: number;
  /** The machine's CPU seconds in the window (cores × wall time). */
  machineTotal: number;
}

/**
 * Snapshots the CPU of `processes` now; the returned function snapshots
 * again and returns each group's CPU seconds in between (a process gone by
 * then counts as its last reading, i.e. 0 for the window's end: take the
 * second snapshot before stopping a process).
 *
 * @example Usage
 * ```ts
 * import { startCpuWindow } from "./process_cpu.ts";
 * const stop = startCpuWindow([{ group: "bench", pid: "self" }]);
 * let x = 0;
 * for (let i = 0; i < 1e6; i++) x += i;
 * const [[group, seconds]] = stop().groups as [[string, number]];
 * console.log(group === "bench" && seconds >= 0 && x > 0); // true
 * ```
 */
export function startCpuWindow(processes: readonly AccountedProcess[]): () => CpuWindow {
  const read = (process: AccountedProcess) => {
    const cpu = readProcessCpu(process.pid);
    return cpu === undefined ? undefined : process.count === "children" ? cpu.children : cpu.own;
  };
  const before = processes.map(read);
  const machineBefore = readMachineCpu();
  return () => {
    const groups = new Map<string, number>();
    processes.forEach((process, i) => {
      const start = before[i];
      const end = read(process);
      const spent = start === undefined || end === undefined ? 0 : Math.max(0, end - start);
      groups.set(process.group, (groups.get(process.group) ?? 0) + spent);
    });
    const machineAfter = readMachineCpu();
    const delta = (field: keyof MachineCpu) =>
      machineBefore === undefined || machineAfter === undefined
        ? 0
        : machineAfter[field] - machineBefore[field];
    return { groups: [...groups], machineBusy: delta("busy"), machineTotal: delta("total") };
  };
}

/** The sum of a window's groups. */
export function totalCpu(groups: GroupCpu): number {
  return groups.reduce((sum, [, seconds]) => sum + seconds, 0);
}

/** Options for {@linkcode waitUntilIdle}. */
export interface WaitUntilIdleOptions {
  /** CPU seconds per second (all processes together) below which they count as idle. @default {0.05} */
  threshold?: number;
  /** Longest wait, in ms; returns false when they were still busy then. @default {60000} */
  timeoutMs?: number;
}

/**
 * Waits until `processes` together spend less than `threshold` CPU seconds
 * in a second (e.g. the store's garbage collection after a benchmark deleted
 * its objects), so that the next measured window holds only its own work.
 * Returns whether they went idle in time.
 */
export async function waitUntilIdle(
  processes: readonly AccountedProcess[],
  options: WaitUntilIdleOptions = {},
): Promise<boolean> {
  const threshold = options.threshold ?? 0.05;
  const deadline = Date.now() + (options.timeoutMs ?? 60_000);
  while (Date.now() < deadline) {
    const window = startCpuWindow(processes);
    await new Promise((resolve) => setTimeout(resolve, 1000));
    if (totalCpu(window().groups) < threshold) return true;
  }
  return false;
}
