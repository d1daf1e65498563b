/**
 * The benchmark's upload clients: `curl` child processes for large
 * artifacts (so that the client's CPU is never in a measured process) and
 * keep-alive `fetch` clients in the benchmark process for many small ones.
 * Both speak HTTP/1.1 over TLS to 127.0.0.1, as CI clients do.
 *
 * @module
 */

/** What one curl upload measured. */
export interface CurlUpload {
  /** HTTP status. */
  status: number;
  /** curl's `time_total`: connect to last response byte, in seconds. */
  seconds: number;
  /** Bytes curl sent (`size_upload`). */
  sentBytes: number;
  /** Response body. */
  body: string;
}

/** Options for {@linkcode curlUpload}. */
export interface CurlUploadOptions {
  /** The file sent as the `artifact` field. */
  file: string;
  /** The `token` field, sent first. */
  token: string;
  /** CA certificate file curl trusts. */
  caFile: string;
}

/**
 * Uploads `options.file` as the `artifact` field (after the `token` field)
 * of a multipart POST to `url` with curl, without `Expect: 100-continue`.
 */
export async function curlUpload(url: string, options: CurlUploadOptions): Promise<CurlUpload> {
  const { file } = options;
  const output = await new Deno.Command("curl", {
    args: [
      "-sS",
      "--http1.1",
      "--cacert",
      options.caFile,
      "-H",
      "Expect:",
      "--form-string",
      `token=${options.token}`,
      "-F",
      `artifact=@${file}`,
      "-w",
      "\n%{http_code} %{time_total} %{size_upload}",
      `${url}/`,
    ],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(600_000),
  }).output();
  const text = new TextDecoder().decode(output.stdout);
  const last = text.lastIndexOf("\n");
  const [status = "0", seconds = "0", sent = "0"] = text.slice(last + 1).split(" ");
  if (!output.success) {
    throw new Error(
      `Cannot upload ${file} with curl: ${new TextDecoder().decode(output.stderr).trim()}`,
    );
  }
  return {
    status: Number(status),
    seconds: Number(seconds),
    sentBytes: Number(sent),
    body: text.slice(0, Math.max(0, last)),
  };
}

/** A package to upload from memory. */
export interface UploadItem {
  /** Its filename. */
  filename: string;
  /** Its bytes. */
  bytes: Uint8Array;
}

/** Options for {@linkcode uploadMany}. */
export interface UploadManyOptions {
  /** Concurrent clients, each on its own keep-alive connection. */
  concurrency: number;
  /** The upload token. */
  token: string;
  /** CA certificate (PEM) the clients trust. */
  caPem: string;
}

/** What {@linkcode uploadMany} measured. */
export interface UploadManyResult {
  /** Seconds from the first request to the last response. */
  seconds: number;
  /** Each upload's latency: request sent to response read, in ms. */
  latenciesMs: number[];
}

/**
 * Uploads every item once, `concurrency` at a time, each client on its own
 * warmed-up keep-alive HTTP/1.1 connection. Throws on any answer but 201.
 */
export async function uploadMany(
  url: string,
  items: readonly UploadItem[],
  options: UploadManyOptions,
): Promise<UploadManyResult> {
  const clients = Array.from(
    { length: options.concurrency },
    () =>
      Deno.createHttpClient({
        caCerts: [options.caPem],
        http1: true,
        http2: false,
        poolMaxIdlePerHost: 1,
      }),
  );
  try {
    // Open every connection (TLS handshake) before the clock starts.
    await Promise.all(clients.map(async (client) => {
      const response = await fetch(`${url}/`, { client });
      await response.body?.cancel();
    }));
    const latenciesMs: number[] = [];
    let next = 0;
    const worker = async (client: Deno.HttpClient) => {
      while (next < items.length) {
        const item = items[next++]!;
        const form = new FormData();
        form.set("token", options.token);
        form.set("artifact", new Blob([item.bytes as Uint8Array<ArrayBuffer>]), item.filename);
        const sent = performance.now();
        const response = await fetch(`${url}/`, { method: "POST", body: form, client });
        const body = await response.text();
        latenciesMs.push(performance.now() - sent);
        if (response.status !== 201) {
          throw new Error(
            `Cannot upload ${item.filename}: HTTP ${response.status} ${body.slice(0, 300)}`,
          );
        }
      }
    };
    const started = performance.now();
    await Promise.all(clients.map(worker));
    return { seconds: (performance.now() - started) / 1000, latenciesMs };
  } finally {
    for (const client of clients) client.close();
  }
}
