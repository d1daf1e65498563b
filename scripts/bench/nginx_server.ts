/**
 * The benchmark's read yardstick: Debian's nginx serving a channel
 * directory the way a team would put it in front of one. One worker
 * process, TLS with the benchmark's certificate, `sendfile`, gzip for JSON
 * and HTML, keep-alive, an access log line per request (as ours logs one),
 * dotfiles refused. It runs in the foreground as a child of the benchmark,
 * with every path (pid, logs, temporary files) in its own directory.
 *
 * @module
 */

import { join } from "node:path";
import type { BenchTls } from "./bench_process.ts";
import { watchChild } from "./watched_child.ts";

/** A running nginx. */
export interface NginxServer {
  /** `https://127.0.0.1:PORT`. */
  url: string;
  /** Process id of the worker (the process that serves). */
  workerPid: number;
  /** Stops nginx and waits for it. */
  stop(): Promise<void>;
}

/** A port that was free a moment ago on 127.0.0.1. */
function _freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

/** The configuration file's text. */
export function nginxConfig(options: {
  directory: string;
  channelRoot: string;
  port: number;
  tls: BenchTls;
  asRoot: boolean;
}): string {
  const { directory, channelRoot, port, tls } = options;
  return `# Written by scripts/bench/nginx_server.ts
${options.asRoot ? "user root root;\n" : ""}worker_processes 1;
daemon off;
pid ${join(directory, "nginx.pid")};
error_log ${join(directory, "error.log")} warn;
events { worker_connections 1024; }
http {
  types {
    application/json json;
    application/zstd zst;
    application/x-bzip2 bz2;
    text/html html;
    text/plain txt;
  }
  default_type application/octet-stream;
  access_log ${join(directory, "access.log")};
  client_body_temp_path ${join(directory, "client_body")};
  proxy_temp_path ${join(directory, "proxy")};
  fastcgi_temp_path ${join(directory, "fastcgi")};
  uwsgi_temp_path ${join(directory, "uwsgi")};
  scgi_temp_path ${join(directory, "scgi")};
  sendfile on;
  tcp_nopush on;
  tcp_nodelay on;
  keepalive_timeout 65;
  keepalive_requests 1000000;
  gzip on;
  gzip_types application/json text/html;
  gzip_vary on;
  server {
    listen 127.0.0.1:${port} ssl;
    ssl_certificate ${tls.certFile};
    ssl_certificate_key ${tls.keyFile};
    root ${channelRoot};
    location ~ /\\. { return 404; }
  }
}
`;
}

/**
 * Starts nginx on `channelRoot` (its files under `directory`) and waits
 * until it answers.
 */
export async function startNginx(
  nginx: string,
  channelRoot: string,
  directory: string,
  tls: BenchTls,
): Promise<NginxServer> {
  await Deno.mkdir(directory, { recursive: true });
  const port = _freePort();
  const config = join(directory, "nginx.conf");
  await Deno.writeTextFile(
    config,
    nginxConfig({ directory, channelRoot, port, tls, asRoot: Deno.uid() === 0 }),
  );
  const child = new Deno.Command(nginx, {
    args: ["-p", directory, "-e", join(directory, "error.log"), "-c", config],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const stderr = new Response(child.stderr).text();
  const watched = watchChild(child);
  const stop = async () => {
    await watched.stop("SIGQUIT", 10_000);
    await stderr;
  };
  const url = `https://127.0.0.1:${port}`;
  const deadline = Date.now() + 20_000;
  for (;;) {
    if (watched.exited) {
      const log = await Deno.readTextFile(join(directory, "error.log")).catch(() => "");
      throw new Error(`Cannot start nginx: it exited: ${(await stderr).trim()} ${log.trim()}`);
    }
    const workerPid = await _workerPid(child.pid);
    const up = await Deno.connect({ hostname: "127.0.0.1", port }).then((connection) => {
      connection.close();
      return true;
    }, () => false);
    if (up && workerPid !== undefined) return { url, workerPid, stop };
    if (Date.now() > deadline) {
      await stop();
      throw new Error("Cannot start nginx: it did not listen within 20 s");
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** The first child process of `pid` (nginx's worker). */
async function _workerPid(pid: number): Promise<number | undefined> {
  const text = await Deno.readTextFile(`/proc/${pid}/task/${pid}/children`).catch(() => "");
  const first = text.trim().split(/\s+/)[0];
  return first ? Number(first) : undefined;
}
