/**
 * A single-node Ceph RGW (one monitor, one memstore OSD, one radosgw, no
 * manager, no cephx) on loopback, under one temporary directory, for the
 * object-storage tests and CI. Facts and pitfalls: shared/reference/ceph-rgw.md.
 *
 *   deno run -A scripts/ceph_rgw.ts start [--dir DIR]   start; print `export NAME=value` lines
 *   deno run -A scripts/ceph_rgw.ts stop --dir DIR      stop the daemons by PID, remove DIR
 *   deno run -A scripts/ceph_rgw.ts run -- CMD ARGS...  start, run CMD with the variables, stop
 *
 * `deno task test:s3` is the last form with the tests in tests/object_storage/.
 *
 * Debian's packages (`ceph-mon ceph-osd radosgw ceph-common`) are installed
 * with apt-get when `radosgw` is missing (root only; ~30 s). The daemons
 * daemonize and write PID files under DIR/run; `stop` sends SIGTERM to those
 * PIDs (SIGKILL after 10 s) and nothing else. `start` writes DIR/env (the
 * same `export` lines) and prints them, so a shell can `eval` them:
 *
 *   AUH_S3_TEST_ENDPOINT  http://127.0.0.1:PORT (the RGW endpoint)
 *   AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION
 *   AUH_CEPH_DIR          the directory to pass to `stop`
 *
 * @module
 */

import { parseArgs } from "node:util";
import { join } from "node:path";
import { AwsClient } from "aws4fetch";

const PACKAGES = ["ceph-mon", "ceph-osd", "radosgw", "ceph-common", "uuid-runtime"];
const ACCESS_KEY = "auh-test-access-key";
const SECRET_KEY = "auh-test-secret-key-0123456789abcdef";
const REGION = "us-east-1";
const DAEMONS = ["mon.a", "osd.0", "client.rgw.a"] as const;

/** A running test cluster. */
export interface CephRgw {
  /** Directory holding the configuration, data, logs and PID files. */
  dir: string;
  /** The S3 endpoint, `http://127.0.0.1:PORT`. */
  endpoint: string;
  /** The variables a client needs (endpoint and credentials). */
  env: Record<string, string>;
}

/** Options for {@linkcode startCephRgw}. */
export interface StartOptions {
  /**
   * Directory for the cluster; made when missing.
   * @default {a new temporary directory}
   */
  dir?: string;
  /**
   * Install Debian's packages when `radosgw` is missing.
   * @default {true}
   */
  install?: boolean;
}

/** Thrown when a step of the start fails; the message ends with the tail of its output. */
export class CephRgwError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "CephRgwError";
  }
}

async function run(
  command: string,
  args: string[],
  options: { timeoutMs?: number; allowFailure?: boolean } = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const timeoutMs = options.timeoutMs ?? 30_000;
  let output: Deno.CommandOutput;
  try {
    output = await new Deno.Command(command, {
      args,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      signal: AbortSignal.timeout(timeoutMs),
    }).output();
  } catch (error) {
    if (options.allowFailure) return { code: -1, stdout: "", stderr: String(error) };
    throw new CephRgwError(`Cannot run ${command}: ${String(error)}`);
  }
  const result = {
    code: output.code,
    stdout: new TextDecoder().decode(output.stdout),
    stderr: new TextDecoder().decode(output.stderr),
  };
  if (result.code !== 0 && !options.allowFailure) {
    const tail = (result.stderr || result.stdout).trim().split("\n").slice(-5).join(" | ");
    throw new CephRgwError(
      `Cannot run ${command} ${args.slice(0, 4).join(" ")}: exit ${result.code}: ${tail}`,
    );
  }
  return result;
}

async function hasCommand(name: string): Promise<boolean> {
  const result = await run("sh", ["-c", `command -v ${name}`], { allowFailure: true });
  return result.code === 0;
}

/** Installs Debian's Ceph packages when `radosgw` is not on PATH. */
export async function ensureCephInstalled(): Promise<void> {
  if (await hasCommand("radosgw") && await hasCommand("ceph-mon")) return;
  if (Deno.uid() !== 0) {
    throw new CephRgwError(
      `Cannot install Ceph: not root; run: apt-get install --no-install-recommends ${
        PACKAGES.join(" ")
      }`,
    );
  }
  const apt = ["-o", "DPkg::Lock::Timeout=300", "-q"];
  const install = ["install", "-y", "--no-install-recommends", ...PACKAGES];
  const first = await run("apt-get", [...apt, ...install], {
    timeoutMs: 600_000,
    allowFailure: true,
  });
  if (first.code !== 0) {
    await run("apt-get", [...apt, "update"], { timeoutMs: 300_000 });
    await run("apt-get", [...apt, ...install], { timeoutMs: 600_000 });
  }
}

function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

function cephConf(dir: string, fsid: string, monPort: number, rgwPort: number): string {
  return `[global]
fsid = ${fsid}
mon host = v2:127.0.0.1:${monPort}
mon initial members = a
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind msgr1 = false
auth cluster required = none
auth service required = none
auth client required = none
ms client mode = crc
ms cluster mode = crc
ms service mode = crc
ms mon client mode = crc
ms mon cluster mode = crc
ms mon service mode = crc
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon warn on pool no redundancy = false
run dir = ${dir}/run
pid file = ${dir}/run/$name.pid
admin socket = ${dir}/run/$name.asok
log file = ${dir}/log/$name.log
keyring = ${dir}/keyring
mon data = ${dir}/mon/ceph-$id
osd data = ${dir}/osd/ceph-$id
rgw data = ${dir}/rgw/ceph-$id

[mon]
paxos propose interval = 0.05
paxos min wait = 0.01

[osd]
osd objectstore = memstore
memstore device bytes = 4294967296

[client.rgw.a]
rgw frontends = beast endpoint=127.0.0.1:${rgwPort} tcp_nodelay=1
rgw dynamic resharding = false
rgw gc obj min wait = 10
rgw gc processor period = 10
`;
}

async function waitFor(
  what: string,
  deadlineMs: number,
  check: () => Promise<boolean>,
): Promise<void> {
  const deadline = Date.now() + deadlineMs;
  while (Date.now() < deadline) {
    if (await check()) return;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new CephRgwError(`Cannot start Ceph RGW: ${what} not ready after ${deadlineMs} ms`);
}

/** Starts the cluster; on failure stops what was started and throws {@linkcode CephRgwError}. */
export async function startCephRgw(options: StartOptions = {}): Promise<CephRgw> {
  if (options.install ?? true) await ensureCephInstalled();
  const dir = options.dir ?? await Deno.makeTempDir({ prefix: "auh-ceph-" });
  for (const sub of ["run", "log", "mon/ceph-a", "osd/ceph-0", "rgw/ceph-rgw.a"]) {
    await Deno.mkdir(join(dir, sub), { recursive: true });
  }
  try {
    return await startIn(dir);
  } catch (error) {
    const logs = join(dir, "log");
    await stopCephRgw(dir, { keepDir: true });
    throw new CephRgwError(
      `${error instanceof Error ? error.message : String(error)} (logs in ${logs})`,
    );
  }
}

async function startIn(dir: string): Promise<CephRgw> {
  const conf = join(dir, "ceph.conf");
  const monPort = freePort();
  const rgwPort = freePort();
  const fsid = crypto.randomUUID();
  await Deno.writeTextFile(conf, cephConf(dir, fsid, monPort, rgwPort));
  const ceph = (args: string[], timeoutMs = 10_000) =>
    run("timeout", [String(timeoutMs / 1000), "ceph", "-c", conf, ...args], {
      timeoutMs: timeoutMs + 2000,
      allowFailure: true,
    });

  const monmap = join(dir, "monmap");
  await run("monmaptool", [
    "--create",
    "--fsid",
    fsid,
    "--addv",
    "a",
    `[v2:127.0.0.1:${monPort}]`,
    monmap,
  ]);
  await run("ceph-mon", ["-c", conf, "--mkfs", "-i", "a", "--monmap", monmap]);
  await run("ceph-mon", ["-c", conf, "-i", "a"]);
  await waitFor("monitor", 30_000, async () => (await ceph(["mon", "stat"], 5000)).code === 0);

  const osdUuid = crypto.randomUUID();
  const created = await ceph(["osd", "new", osdUuid]);
  if (created.code !== 0 || created.stdout.trim() !== "0") {
    throw new CephRgwError(`Cannot create the OSD: ${created.stderr.trim() || created.stdout}`);
  }
  await run("ceph-osd", ["-c", conf, "-i", "0", "--mkfs", "--osd-uuid", osdUuid]);
  await run("ceph-osd", ["-c", conf, "-i", "0"]);
  await waitFor("OSD", 30_000, async () => {
    const stat = await ceph(["osd", "stat", "-f", "json"], 5000);
    if (stat.code !== 0) return false;
    try {
      return JSON.parse(stat.stdout).num_up_osds === 1;
    } catch {
      return false;
    }
  });

  await run("radosgw", ["-c", conf, "-n", "client.rgw.a"]);
  const endpoint = `http://127.0.0.1:${rgwPort}`;
  await waitFor("radosgw", 60_000, async () => {
    try {
      const response = await fetch(endpoint + "/", { signal: AbortSignal.timeout(2000) });
      await response.body?.cancel();
      return response.ok;
    } catch {
      return false;
    }
  });
  await run("radosgw-admin", [
    "-c",
    conf,
    "user",
    "create",
    "--uid=auh-test",
    "--display-name=auh-test",
    `--access-key=${ACCESS_KEY}`,
    `--secret-key=${SECRET_KEY}`,
  ], { timeoutMs: 30_000 });
  const client = new AwsClient({
    accessKeyId: ACCESS_KEY,
    secretAccessKey: SECRET_KEY,
    service: "s3",
    region: REGION,
    retries: 0,
  });
  await waitFor("signed ListBuckets", 30_000, async () => {
    try {
      const response = await client.fetch(endpoint + "/", { signal: AbortSignal.timeout(2000) });
      await response.body?.cancel();
      return response.ok;
    } catch {
      return false;
    }
  });
  const env = {
    AUH_S3_TEST_ENDPOINT: endpoint,
    AWS_ENDPOINT_URL: endpoint,
    AWS_ACCESS_KEY_ID: ACCESS_KEY,
    AWS_SECRET_ACCESS_KEY: SECRET_KEY,
    AWS_REGION: REGION,
    AUH_CEPH_DIR: dir,
  };
  await Deno.writeTextFile(join(dir, "env"), exportLines(env));
  return { dir, endpoint, env };
}

function exportLines(env: Record<string, string>): string {
  return Object.entries(env).map(([name, value]) => `export ${name}='${value}'\n`).join("");
}

/**
 * Runs the gateway's garbage collection now (`radosgw-admin gc process
 * --include-all`): the data of deleted objects is freed at once instead of
 * minutes later, e.g. between a benchmark's measurements.
 */
export async function collectGarbage(dir: string): Promise<void> {
  await run("radosgw-admin", ["-c", join(dir, "ceph.conf"), "gc", "process", "--include-all"], {
    timeoutMs: 120_000,
  });
}

/** The PIDs of the running daemons (monitor, OSD, radosgw) of the cluster in `dir`. */
export async function cephDaemonPids(dir: string): Promise<{ daemon: string; pid: number }[]> {
  const found: { daemon: string; pid: number }[] = [];
  for (const daemon of DAEMONS) {
    const pid = await readPid(dir, daemon);
    if (pid !== undefined && isAlive(pid)) found.push({ daemon, pid });
  }
  return found;
}

async function readPid(dir: string, daemon: string): Promise<number | undefined> {
  try {
    const pid = Number((await Deno.readTextFile(join(dir, "run", `${daemon}.pid`))).trim());
    return Number.isInteger(pid) && pid > 1 ? pid : undefined;
  } catch {
    return undefined;
  }
}

function isAlive(pid: number): boolean {
  try {
    Deno.kill(pid, "SIGCONT");
    return true;
  } catch {
    return false;
  }
}

/** Options for {@linkcode stopCephRgw}. */
export interface StopOptions {
  /**
   * Leave the directory (logs) in place.
   * @default {false}
   */
  keepDir?: boolean;
}

/** Stops the daemons of the cluster in `dir` by their PID files, then removes `dir`. */
export async function stopCephRgw(dir: string, options: StopOptions = {}): Promise<void> {
  const pids: number[] = [];
  for (const daemon of [...DAEMONS].reverse()) {
    const pid = await readPid(dir, daemon);
    if (pid === undefined || !isAlive(pid)) continue;
    Deno.kill(pid, "SIGTERM");
    pids.push(pid);
  }
  const deadline = Date.now() + 10_000;
  while (pids.some(isAlive) && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  for (const pid of pids.filter(isAlive)) Deno.kill(pid, "SIGKILL");
  if (!options.keepDir) await Deno.remove(dir, { recursive: true }).catch(() => {});
}

async function main(args: string[]): Promise<number> {
  const separator = args.indexOf("--");
  const own = separator === -1 ? args : args.slice(0, separator);
  const command = separator === -1 ? [] : args.slice(separator + 1);
  const { values, positionals } = parseArgs({
    args: own,
    options: { dir: { type: "string" }, "no-install": { type: "boolean" } },
    allowPositionals: true,
  });
  const action = positionals[0];
  const install = !values["no-install"];
  if (action === "start") {
    const started = Date.now();
    const rgw = await startCephRgw({ ...(values.dir ? { dir: values.dir } : {}), install });
    console.log(exportLines(rgw.env).trimEnd());
    console.error(`Ceph RGW ${rgw.endpoint} up in ${Date.now() - started} ms (dir ${rgw.dir})`);
    return 0;
  }
  if (action === "stop") {
    const dir = values.dir ?? Deno.env.get("AUH_CEPH_DIR");
    if (!dir) throw new CephRgwError("Cannot stop: no --dir given and AUH_CEPH_DIR is not set");
    await stopCephRgw(dir);
    return 0;
  }
  if (action === "run" && command.length > 0) {
    const started = Date.now();
    const rgw = await startCephRgw({ ...(values.dir ? { dir: values.dir } : {}), install });
    console.error(`Ceph RGW ${rgw.endpoint} up in ${Date.now() - started} ms (dir ${rgw.dir})`);
    const [name, ...rest] = command as [string, ...string[]];
    // `deno` means this Deno (CI runs it through npx, not from PATH).
    const program = name === "deno" ? Deno.execPath() : name;
    try {
      const child = new Deno.Command(program, { args: rest, env: rgw.env }).spawn();
      const onSignal = () => child.kill("SIGTERM");
      Deno.addSignalListener("SIGINT", onSignal);
      Deno.addSignalListener("SIGTERM", onSignal);
      const status = await child.status;
      Deno.removeSignalListener("SIGINT", onSignal);
      Deno.removeSignalListener("SIGTERM", onSignal);
      return status.code;
    } finally {
      await stopCephRgw(rgw.dir);
    }
  }
  console.error("Usage: ceph_rgw.ts start [--dir DIR] | stop --dir DIR | run -- COMMAND ARGS...");
  return 2;
}

if (import.meta.main) {
  try {
    Deno.exit(await main(Deno.args));
  } catch (error) {
    console.error(error instanceof Error ? error.message : String(error));
    Deno.exit(1);
  }
}
