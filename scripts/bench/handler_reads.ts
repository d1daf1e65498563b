/**
 * Our GET handler alone: `serveChannel()` called in process, one request at
 * a time, each body read, on a channel directory; no socket, no server. Run
 * as its own process under the server's runtime flags and permissions (a
 * fresh heap, as the server has), it prints one JSON line per case:
 * `{"what": "...", "perSecond": N}`, the median of 200 ms windows (other
 * work on the machine comes in bursts).
 *
 * ```sh
 * deno run <server flags> scripts/bench/handler_reads.ts --root CHANNEL \
 *   --package linux-64/foo-1.0-0.conda --seconds 3
 * ```
 *
 * @module
 */

import { parseArgs } from "node:util";
import { serveChannel } from "../../src/serve/serve_channel.ts";
import { ChannelStorage } from "../../src/storage/channel_storage.ts";
import { median } from "./stats.ts";

/** One measured case. */
export interface HandlerRate {
  /** What was asked. */
  what: string;
  /** Requests per second (median of windows). */
  perSecond: number;
}

/** The cases: the small index file, its gzip sibling, a package, a 304. */
export function handlerCases(
  packagePath: string,
): Array<[what: string, path: string, headers: Record<string, string>]> {
  return [
    ["linux-64/repodata.json.zst", "linux-64/repodata.json.zst", {}],
    ["linux-64/repodata.json, Accept-Encoding: gzip", "linux-64/repodata.json", {
      "accept-encoding": "gzip",
    }],
    ["the package", packagePath, {}],
    ["linux-64/repodata.json.zst, If-None-Match (304)", "linux-64/repodata.json.zst", {
      "if-none-match": "*",
    }],
  ];
}

/** Measures every case on the channel at `root` for `seconds` each. */
export async function measureHandler(
  root: string,
  packagePath: string,
  seconds: number,
): Promise<HandlerRate[]> {
  const storage = await ChannelStorage.open(root);
  const rates: HandlerRate[] = [];
  try {
    for (const [what, path, headers] of handlerCases(packagePath)) {
      const once = async () => {
        const response = await serveChannel(
          new Request(`https://localhost/${path}`, { headers }),
          storage,
        );
        if (response.status >= 400) throw new Error(`Cannot GET ${path}: ${response.status}`);
        if (response.body !== null) await response.arrayBuffer();
      };
      // Warm-up long enough for V8 to optimise the path.
      const warm = performance.now();
      while (performance.now() - warm < 1000) await once();
      const windows: number[] = [];
      for (let window = 0; window < Math.max(5, seconds * 5); window++) {
        let requests = 0;
        const started = performance.now();
        while (performance.now() - started < 200) {
          for (let i = 0; i < 20; i++) await once();
          requests += 20;
        }
        windows.push(requests / ((performance.now() - started) / 1000));
      }
      rates.push({ what, perSecond: median(windows) });
    }
  } finally {
    storage.close();
  }
  return rates;
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      root: { type: "string" },
      package: { type: "string" },
      seconds: { type: "string", default: "3" },
    },
  });
  if (values.root === undefined || values.package === undefined) {
    console.error("Cannot measure: --root and --package are required");
    Deno.exit(2);
  }
  for (const rate of await measureHandler(values.root, values.package, Number(values.seconds))) {
    console.log(JSON.stringify(rate));
  }
}
