/**
 * The benchmark's upload clients: `curl` child processes (one upload each
 * for large artifacts, or many uploads each over one keep-alive connection
 * for small ones), so that the client's CPU is never in a measured process,
 * and keep-alive `fetch` clients in the benchmark process. All speak
 * HTTP/1.1 over TLS to 127.0.0.1, as CI clients do.
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

/** curl's options for HTTP/1.1 to a server with the CA in `caFile`, without `Expect: 100-continue`. */
function _curlHttp(caFile: string): string[] {
  return ["--http1.1", "--cacert", caFile, "-H", "Expect:"];
}

/** curl's form fields of an upload: the `token` first, then `file` as `artifact`. */
function _curlForm(token: string, file: string): string[] {
  return ["--form-string", `token=${token}`, "-F", `artifact=@${file}`];
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
      ..._curlHttp(options.caFile),
      ..._curlForm(options.token, file),
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

/** Options for {@linkcode curlUploadMany}. */
export interface CurlUploadManyOptions {
  /** Concurrent curl processes, each on its own keep-alive connection. */
  concurrency: number;
  /** The upload token (`token` form field, sent first). */
  token: string;
  /** CA certificate file curl trusts. */
  caFile: string;
}

/**
 * Uploads every file once with `concurrency` curl processes, each sending
 * its share one after another over one keep-alive HTTP/1.1 connection
 * (`--next`), after a warm-up `GET /` that opens the connection. Like the
 * CI clients (curl, Python requests, rattler-build's reqwest), curl turns
 * Nagle off. `seconds` is the longest time any client spent uploading (the
 * sum of its uploads' `time_total`), so process start-up and the TLS
 * handshake are not counted. Throws on any answer but 201.
 */
export async function curlUploadMany(
  url: string,
  files: readonly string[],
  options: CurlUploadManyOptions,
): Promise<UploadManyResult> {
  const common = [..._curlHttp(options.caFile), "-o", "/dev/null"];
  const clients = Array.from({ length: options.concurrency }, async (_, client) => {
    const mine = files.filter((_, i) => i % options.concurrency === client);
    const args = ["-sS", ...common, "-w", "warm-up %{http_code}\n", `${url}/`];
    for (const file of mine) {
      args.push(
        "--next",
        ...common,
        "-w",
        "%{http_code} %{time_total}\n",
        ..._curlForm(options.token, file),
        `${url}/`,
      );
    }
    const output = await new Deno.Command("curl", {
      args,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      signal: AbortSignal.timeout(600_000),
    }).output();
    const lines = new TextDecoder().decode(output.stdout).trim().split("\n").slice(1);
    if (!output.success || lines.length !== mine.length) {
      throw new Error(
        `Cannot upload with curl: ${lines.length} of ${mine.length} answered; ${
          new TextDecoder().decode(output.stderr).trim()
        }`,
      );
    }
    return lines.map((line, i) => {
      const [status, seconds] = line.split(" ");
      if (status !== "201") throw new Error(`Cannot upload ${mine[i]}: HTTP ${status}`);
      return Number(seconds) * 1000;
    });
  });
  const perClient = await Promise.all(clients);
  const busyMs = Math.max(...perClient.map((times) => times.reduce((sum, ms) => sum + ms, 0)));
  return { seconds: busyMs / 1000, latenciesMs: perClient.flat() };
}
