/**
 * The read benchmark's clients: `wrk` for keep-alive request rates and
 * latency, curl for one large download, and a sampler of a process's
 * resident memory while a download runs.
 *
 * @module
 */

/** What one `wrk` run measured. */
export interface WrkResult {
  /** Requests per second over the run. */
  requestsPerSecond: number;
  /** Median latency in ms (from `--latency`). */
  p50Ms: number;
  /** Requests completed. */
  requests: number;
}

/** Options for {@linkcode runWrk}. */
export interface WrkOptions {
  /** Open keep-alive connections. */
  connections: number;
  /** Length of the run in seconds. */
  seconds: number;
}

/**
 * Runs `wrk --latency` with one thread against `url` and parses its report.
 * Throws when a response was not 2xx or 3xx, or a socket error happened.
 */
export async function runWrk(wrk: string, url: string, options: WrkOptions): Promise<WrkResult> {
  const output = await new Deno.Command(wrk, {
    args: [
      "--latency",
      "-t1",
      `-c${options.connections}`,
      `-d${options.seconds}s`,
      "--timeout",
      "10s",
      url,
    ],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout((options.seconds + 60) * 1000),
  }).output();
  const text = new TextDecoder().decode(output.stdout);
  if (!output.success) {
    throw new Error(`Cannot run wrk on ${url}: ${new TextDecoder().decode(output.stderr).trim()}`);
  }
  if (/Non-2xx or 3xx responses|Socket errors/.test(text)) {
    throw new Error(`wrk on ${url} saw failed requests:\n${text}`);
  }
  const perSecond = /^Requests\/sec:\s+([\d.]+)/m.exec(text)?.[1];
  const p50 = /^\s+50%\s+([\d.]+)(us|ms|s)\s*$/m.exec(text);
  const requests = /^\s+(\d+) requests in/m.exec(text)?.[1];
  if (perSecond === undefined || !p50 || requests === undefined) {
    throw new Error(`Cannot read wrk's report:\n${text}`);
  }
  const scale = p50[2] === "us" ? 0.001 : p50[2] === "ms" ? 1 : 1000;
  return {
    requestsPerSecond: Number(perSecond),
    p50Ms: Number(p50[1]) * scale,
    requests: Number(requests),
  };
}

/** What one download measured. */
export interface DownloadResult {
  /** Bytes received. */
  bytes: number;
  /** 10^6 bytes per second of curl's total time. */
  mbPerSecond: number;
  /** HTTP status. */
  status: number;
}

/** Downloads `url` once with curl (HTTP/1.1, verified TLS) into /dev/null. */
export async function curlDownload(url: string, caFile: string): Promise<DownloadResult> {
  const output = await new Deno.Command("curl", {
    args: [
      "-sS",
      "--http1.1",
      "--cacert",
      caFile,
      "-o",
      "/dev/null",
      "-w",
      "%{http_code} %{size_download} %{time_total}",
      url,
    ],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(600_000),
  }).output();
  if (!output.success) {
    throw new Error(`Cannot download ${url}: ${new TextDecoder().decode(output.stderr).trim()}`);
  }
  const [status = "0", size = "0", seconds = "0"] = new TextDecoder().decode(output.stdout)
    .trim().split(" ");
  return {
    status: Number(status),
    bytes: Number(size),
    mbPerSecond: Number(size) / Number(seconds) / 1e6,
  };
}

/** Resident memory of process `pid` (`VmRSS`), in KiB. */
export async function readRssKiB(pid: number): Promise<number> {
  const status = await Deno.readTextFile(`/proc/${pid}/status`);
  const match = /^VmRSS:\s+(\d+)\s+kB$/m.exec(status);
  if (!match) throw new Error(`Cannot read RSS: no VmRSS in /proc/${pid}/status`);
  return Number(match[1]);
}

/**
 * Samples the resident memory of `pid` every `intervalMs` while `work`
 * runs; returns the work's result with the memory before and the highest
 * sample.
 */
export async function withRssSamples<T>(
  pid: number,
  intervalMs: number,
  work: () => Promise<T>,
): Promise<{ result: T; beforeKiB: number; maxKiB: number }> {
  const beforeKiB = await readRssKiB(pid);
  let maxKiB = beforeKiB;
  let running = true;
  const sampling = (async () => {
    while (running) {
      maxKiB = Math.max(maxKiB, await readRssKiB(pid).catch(() => 0));
      await new Promise((resolve) => setTimeout(resolve, intervalMs));
    }
  })();
  try {
    const result = await work();
    return { result, beforeKiB, maxKiB };
  } finally {
    running = false;
    await sampling;
  }
}
