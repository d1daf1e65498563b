/**
 * Measurement 7: serving the channel, against Debian's nginx (one worker,
 * TLS with the same certificate, `sendfile`, gzip) started by this section
 * on the same channel directory: keep-alive request rates of a small index
 * file and a ~100 KiB package at 8 connections and the median latency on one
 * connection (`wrk`), one large download (curl) with the server's resident
 * memory during it; and our GET handler alone, called in process, which
 * shows the handler's own cost whatever the connection layer.
 *
 * The channel: 200 small packages indexed by our `index` command (its
 * `repodata.json.zst` is about 12 KB), one ~100 KiB package and one large
 * package. nginx and wrk are installed with apt-get when missing.
 *
 * @module
 */

import { join } from "node:path";
import { writeLargePackage } from "../../tests/helpers/conda_package.ts";
import { serverPermissionFlags } from "../../src/permissions.ts";
import { type BenchContext, sizeLabel } from "./bench_context.ts";
import { REPO_ROOT, runDeno, startOurServer } from "./bench_process.ts";
import { buildChannelTemplate } from "./channel_template.ts";
import { ensureDebianTools } from "./debian_tools.ts";
import type { HandlerRate } from "./handler_reads.ts";
import { startNginx } from "./nginx_server.ts";
import { curlDownload, runWrk, withRssSamples, type WrkResult } from "./read_clients.ts";
import { figure, percent, times } from "./report_table.ts";
import { buildSmallPackages } from "./small_uploads.ts";
import { median } from "./stats.ts";

const INDEX_PACKAGES = 200;
/** Share of nginx's requests/s at 8 connections. */
const RATE_TARGET = 0.25;
/** Median latency on one keep-alive connection, ms. */
const LATENCY_TARGET_MS = 2;
/** Share of nginx's MB/s for the large download. */
const DOWNLOAD_TARGET = 0.6;
/**
 * Most growth of the server's resident memory during the download: "flat"
 * means independent of the file's size. A streamed body leaves its chunk
 * buffers to the garbage collector, which V8 runs after about 64 MiB of them.
 */
const RSS_GROWTH_TARGET_KIB = 64 * 1024;
const SMALL_FILE = "linux-64/repodata.json.zst";

interface _Paths {
  small: string;
  package: string;
  large: string;
}

interface _ServerRun {
  small8: WrkResult;
  package8: WrkResult;
  small1: WrkResult;
  download: number;
  rssBeforeKiB: number;
  rssMaxKiB: number;
}

/** Measures reads of ours and nginx's and adds their rows. */
export async function benchReads(context: BenchContext): Promise<void> {
  const { plan } = context;
  const tools = await ensureDebianTools([
    { program: "nginx", debianPackage: "nginx" },
    { program: "wrk", debianPackage: "wrk" },
  ], context.progress);
  const root = join(context.tmp, "reads-channel");
  context.progress(`reads: building a channel of ${INDEX_PACKAGES} packages`);
  await buildChannelTemplate(root, INDEX_PACKAGES);
  const [item] = await buildSmallPackages(1);
  await Deno.writeFile(join(root, "linux-64", item!.filename), item!.bytes);
  const largeName = `bench-download-${Math.round(plan.downloadBytes / 2 ** 20)}-0.conda`;
  context.progress(`reads: generating ${largeName}`);
  const largeSize = await writeLargePackage(
    join(root, "linux-64", largeName),
    { name: "bench-download", version: String(Math.round(plan.downloadBytes / 2 ** 20)) },
    plan.downloadBytes,
  );
  const paths: _Paths = {
    small: SMALL_FILE,
    package: `linux-64/${item!.filename}`,
    large: `linux-64/${largeName}`,
  };

  // One start indexes the two new packages, so that both servers then see
  // the same files; the in-process figures are taken with no server running.
  const indexing = await startOurServer(root, { tls: context.tls, tokenHash: context.tokenHash });
  await indexing.stop();
  const smallSize = (await Deno.stat(join(root, SMALL_FILE))).size;
  const packageSize = (await Deno.stat(join(root, paths.package))).size;
  await _benchHandler(context, root, paths, packageSize);

  const ours: _ServerRun[] = [];
  const nginx: _ServerRun[] = [];
  for (let run = 0; run < plan.readRuns; run++) {
    const reference = await startNginx(
      tools.nginx!,
      root,
      join(context.tmp, `nginx-${run}`),
      context.tls,
    );
    try {
      nginx.push(
        await _measureServer(context, tools.wrk!, reference.url, reference.workerPid, paths),
      );
    } finally {
      await reference.stop();
    }
    const server = await startOurServer(root, {
      tls: context.tls,
      tokenHash: context.tokenHash,
      dropRequestLines: true,
      ...(context.profileDir === undefined
        ? {}
        : { cpuProfDir: join(context.profileDir, `reads-run${run}`) }),
    });
    try {
      ours.push(await _measureServer(context, tools.wrk!, server.url, server.pid, paths));
    } finally {
      await server.stop();
    }
    const [o, n] = [ours.at(-1)!, nginx.at(-1)!];
    context.progress(
      `reads run ${run + 1}/${plan.readRuns}: small ${o.small8.requestsPerSecond.toFixed(0)} vs ${
        n.small8.requestsPerSecond.toFixed(0)
      } req/s, package ${o.package8.requestsPerSecond.toFixed(0)} vs ${
        n.package8.requestsPerSecond.toFixed(0)
      } req/s, p50 ${o.small1.p50Ms.toFixed(2)} vs ${n.small1.p50Ms.toFixed(2)} ms, download ${
        o.download.toFixed(0)
      } vs ${n.download.toFixed(0)} MB/s`,
    );
  }

  const rate = (runs: _ServerRun[], pick: (run: _ServerRun) => number) => median(runs.map(pick));
  const rateRow = (what: string, pick: (run: _ServerRun) => number) => {
    const oursRate = rate(ours, pick);
    const nginxRate = rate(nginx, pick);
    context.rows.push({
      what,
      ours: figure(oursRate, "req/s"),
      reference: figure(nginxRate, "req/s"),
      ratio: percent(oursRate / nginxRate),
      target: `≥ ${percent(RATE_TARGET)}`,
      met: oursRate / nginxRate >= RATE_TARGET,
    });
  };
  rateRow(
    `7. GET ${SMALL_FILE} (${sizeLabel(smallSize)}), 8 keep-alive connections (wrk), req/s`,
    (run) => run.small8.requestsPerSecond,
  );
  rateRow(
    `7. GET a ${sizeLabel(packageSize)} package, 8 keep-alive connections (wrk), req/s`,
    (run) => run.package8.requestsPerSecond,
  );
  const oursP50 = rate(ours, (run) => run.small1.p50Ms);
  const nginxP50 = rate(nginx, (run) => run.small1.p50Ms);
  context.rows.push({
    what: `7. GET ${SMALL_FILE}, 1 keep-alive connection (wrk), p50 latency`,
    ours: figure(oursP50, "ms"),
    reference: figure(nginxP50, "ms"),
    ratio: times(oursP50 / nginxP50),
    target: `≤ ${LATENCY_TARGET_MS} ms`,
    met: oursP50 <= LATENCY_TARGET_MS,
  });
  const oursDownload = rate(ours, (run) => run.download);
  const nginxDownload = rate(nginx, (run) => run.download);
  context.rows.push({
    what: `7. download a ${sizeLabel(largeSize)} package (curl, one connection), MB/s`,
    ours: figure(oursDownload, "MB/s"),
    reference: figure(nginxDownload, "MB/s"),
    ratio: percent(oursDownload / nginxDownload),
    target: `≥ ${percent(DOWNLOAD_TARGET)}`,
    met: oursDownload / nginxDownload >= DOWNLOAD_TARGET,
  });
  const growth = (run: _ServerRun) => run.rssMaxKiB - run.rssBeforeKiB;
  const rss = (runs: _ServerRun[]) =>
    `${(median(runs.map((run) => run.rssBeforeKiB)) / 1024).toFixed(1)} → ${
      (median(runs.map((run) => run.rssMaxKiB)) / 1024).toFixed(1)
    } MiB`;
  context.rows.push({
    what: "7. server RSS during that download (before → highest, sampled every 50 ms)",
    ours: rss(ours),
    reference: rss(nginx),
    ratio: "—",
    target: `growth ≤ ${RSS_GROWTH_TARGET_KIB / 1024} MiB`,
    met: Math.max(...ours.map(growth)) <= RSS_GROWTH_TARGET_KIB,
  });
}

async function _measureServer(
  context: BenchContext,
  wrk: string,
  url: string,
  pid: number,
  paths: _Paths,
): Promise<_ServerRun> {
  const seconds = context.plan.readSeconds;
  // Warm-up: connections, TLS sessions, page cache and the server's caches.
  await runWrk(wrk, `${url}/${paths.small}`, { connections: 8, seconds: 1 });
  await runWrk(wrk, `${url}/${paths.package}`, { connections: 8, seconds: 1 });
  const small8 = await runWrk(wrk, `${url}/${paths.small}`, { connections: 8, seconds });
  const package8 = await runWrk(wrk, `${url}/${paths.package}`, { connections: 8, seconds });
  const small1 = await runWrk(wrk, `${url}/${paths.small}`, { connections: 1, seconds });
  const expected = (await Deno.stat(join(context.tmp, "reads-channel", paths.large))).size;
  const sampled = await withRssSamples(
    pid,
    50,
    () => curlDownload(`${url}/${paths.large}`, context.tls.caFile),
  );
  const download = sampled.result;
  if (download.status !== 200 || download.bytes !== expected) {
    throw new Error(
      `Cannot download ${paths.large} from ${url}: HTTP ${download.status}, ${download.bytes} of ${expected} bytes`,
    );
  }
  return {
    small8,
    package8,
    small1,
    download: download.mbPerSecond,
    rssBeforeKiB: sampled.beforeKiB,
    rssMaxKiB: sampled.maxKiB,
  };
}

/**
 * Requests/s of `serveChannel()` alone (scripts/bench/handler_reads.ts, a
 * process of its own under the server's flags), one row per case.
 */
async function _benchHandler(
  context: BenchContext,
  root: string,
  paths: _Paths,
  packageSize: number,
): Promise<void> {
  const result = await runDeno([
    "run",
    ...serverPermissionFlags({ channelRoot: root }),
    "--config",
    join(REPO_ROOT, "deno.json"),
    join(REPO_ROOT, "scripts", "bench", "handler_reads.ts"),
    "--root",
    root,
    "--package",
    paths.package,
    "--seconds",
    String(context.plan.handlerSeconds),
  ], 600_000);
  if (result.code !== 0) {
    throw new Error(`Cannot measure the handler alone: ${result.stderr.slice(-2000)}`);
  }
  for (const line of result.stdout.trim().split("\n")) {
    const rate = JSON.parse(line) as HandlerRate;
    const what = rate.what === "the package" ? `a ${sizeLabel(packageSize)} package` : rate.what;
    context.progress(`reads: handler alone, ${what}: ${rate.perSecond.toFixed(0)} req/s`);
    context.rows.push({
      what: `7. GET handler alone (serveChannel() in process, body read): ${what}, req/s`,
      ours: figure(rate.perSecond, "req/s"),
      reference: "—",
      ratio: "—",
      target: "—",
      met: undefined,
    });
  }
}
