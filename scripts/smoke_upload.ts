/**
 * One upload through a built executable: start it on a temp channel, upload
 * a real package with curl, check the 201 and the index. Used by
 * `compile.ts --smoke-test`.
 *
 * @module
 */

import { join } from "node:path";
import { hashToken } from "../src/auth/token_hash.ts";
import { writePackage } from "../tests/helpers/conda_package.ts";

/** Starts `binary`, uploads one package, checks it is indexed, stops it. */
export async function smokeUpload(binary: string): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "auh-smoke-" });
  const channel = join(dir, "channel");
  await Deno.mkdir(channel);
  const token = crypto.randomUUID();
  const child = new Deno.Command(binary, {
    args: ["-d", channel, "-p", "0", "--host", "127.0.0.1", "--insecure_no_tls"],
    env: { AUH_TOKEN_HASH: await hashToken(token) },
    stdout: "null",
    stderr: "piped",
  }).spawn();
  try {
    const url = await listeningUrl(child.stderr);
    const file = await writePackage(dir, { name: "smoke", version: "1.0", build: "0" });
    const curl = await new Deno.Command("curl", {
      args: [
        "-sS",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-F",
        `token=${token}`,
        "-F",
        `artifact=@${file}`,
        `${url}/`,
      ],
    }).output();
    const status = new TextDecoder().decode(curl.stdout);
    if (status !== "201") throw new Error(`Cannot upload to the compiled binary: HTTP ${status}`);
    const repodata = await (await fetch(`${url}/linux-64/repodata.json`)).json();
    if (!repodata["packages.conda"]?.["smoke-1.0-0.conda"]) {
      throw new Error("Cannot find the uploaded package in the compiled binary's index");
    }
  } finally {
    child.kill("SIGTERM");
    await child.status;
    await Deno.remove(dir, { recursive: true });
  }
}

async function listeningUrl(stderr: ReadableStream<Uint8Array>): Promise<string> {
  const decoder = new TextDecoder();
  let text = "";
  for await (const chunk of stderr) {
    text += decoder.decode(chunk);
    const match = /listening url=(\S+)/.exec(text);
    if (match) {
      stderr.pipeTo(new WritableStream()).catch(() => {});
      return match[1]!;
    }
  }
  throw new Error(`Cannot start the compiled binary: ${text.trim().split("\n").at(-1)}`);
}
