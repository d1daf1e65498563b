/**
 * The development server as the README's first command starts it
 * (`deno task start`, i.e. `main.ts --dev`), run as a subprocess with the
 * task's own permissions: its banner, the upload command it prints, and
 * that it stays on the loopback interface.
 */

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { join } from "node:path";
import { serverPermissionFlags } from "../src/permissions.ts";
import { writePackage } from "./helpers/conda_package.ts";
import { DENO_JSON, type ServerProcess, startServerProcess } from "./helpers/server_process.ts";

/** The permissions and program arguments of deno.json's `start` task. */
async function startTask(): Promise<{ permissions: string[]; args: string[] }> {
  const config = JSON.parse(await Deno.readTextFile(DENO_JSON)) as {
    tasks: Record<string, string>;
  };
  const words = config.tasks.start!.trim().split(/\s+/);
  const main = words.indexOf("main.ts");
  assert.deepEqual(words.slice(0, 2), ["deno", "run"], config.tasks.start);
  assert.ok(main > 0, config.tasks.start);
  const permissions = words.slice(2, main);
  // The task's flags are the one shipped list, scoped to the working directory.
  assert.deepEqual(permissions, serverPermissionFlags({ channelRoot: "." }), config.tasks.start);
  return { permissions, args: words.slice(main + 1) };
}

/** The banner on stdout, once its closing rule has been printed. */
async function banner(server: ServerProcess): Promise<string[]> {
  await server.waitForLine(/SSL_CERT_FILE=/, { stream: "stdout" });
  const deadline = Date.now() + 5_000;
  while (!/^=+$/.test(server.stdout.at(-1) ?? "")) {
    assert.ok(Date.now() < deadline, `banner did not end:\n${server.stdout.join("\n")}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return [...server.stdout];
}

function field(lines: string[], name: string): string {
  const line = lines.find((line) => line.startsWith(`  ${name}:`));
  assert.ok(line, `no ${name} in the banner:\n${lines.join("\n")}`);
  return line.slice(line.indexOf(":") + 1).trim();
}

/** The machine's first non-loopback address (`hostname -I`), if any. */
async function otherLocalAddress(): Promise<string | undefined> {
  try {
    const output = await new Deno.Command("hostname", { args: ["-I"] }).output();
    if (!output.success) return undefined;
    return new TextDecoder().decode(output.stdout).trim().split(/\s+/)
      .find((address) => address !== "" && !address.startsWith("127.") && address !== "::1");
  } catch {
    return undefined;
  }
}

Deno.test("--dev -p 0 prints a banner whose curl command uploads for real", async (t) => {
  const cwd = await Deno.makeTempDir({ prefix: "auh-dev-" });
  try {
    const task = await startTask();
    assert.ok(task.args.includes("--dev"), `the start task does not pass --dev`);
    // the file name the banner's upload line names
    const file = await writePackage(cwd, { name: "my-package", version: "1.0" });
    await using server = await startServerProcess([...task.args, "-p", "0"], {
      cwd,
      permissions: task.permissions,
    });
    const lines = await banner(server);
    const text = lines.join("\n");
    const url = field(lines, "URL");
    const token = field(lines, "Token");
    const caFile = field(lines, "CA cert");
    const port = Number(new URL(url).port);

    await t.step("the banner says DEVELOPMENT loudly and shows the real port", () => {
      assert.match(text, /DEVELOPMENT SERVER/);
      assert.match(text, /NOT FOR PRODUCTION/);
      assert.equal(url, server.url);
      assert.ok(port > 0 && port !== 8443, url);
      assert.equal(field(lines, "Channel"), join(cwd, "channel"));
      assert.equal(caFile, join(cwd, ".artifact-upload-handler-dev", "ca.pem"));
      assert.match(token, /^[A-Za-z0-9_-]{43}$/);
    });

    await t.step("the printed curl command uploads the package (201)", async () => {
      const start = lines.findIndex((line) => line.includes("Upload a package:"));
      const end = lines.findIndex((line, index) => index > start && line.trim() === "");
      const command = lines.slice(start + 1, end).join("\n").trim();
      assert.match(command, /^curl .*\\\n\s+-F artifact=@my-package-1\.0-0\.conda /);
      const output = await new Deno.Command("bash", {
        // as pasted into a shell, with the status written after the body
        args: ["-c", `${command} --silent --show-error --write-out '\\n%{http_code}'`],
        cwd,
        stdin: "null",
      }).output();
      const stdout = new TextDecoder().decode(output.stdout);
      assert.ok(output.success, new TextDecoder().decode(output.stderr));
      const [body, status] = [stdout.slice(0, stdout.lastIndexOf("\n")), stdout.split("\n").at(-1)];
      assert.equal(status, "201", body);
      const stored = JSON.parse(body) as { filename: string; subdir: string; sha256: string };
      const bytes = await Deno.readFile(file);
      assert.equal(stored.filename, "my-package-1.0-0.conda");
      assert.equal(stored.sha256, createHash("sha256").update(bytes).digest("hex"));
      assert.deepEqual(
        await Deno.readFile(join(cwd, "channel", "linux-64", stored.filename)),
        bytes,
      );
    });

    await t.step("the channel is served over TLS trusting the printed CA", async () => {
      using client = Deno.createHttpClient({ caCerts: [await Deno.readTextFile(caFile)] });
      const response = await fetch(`https://127.0.0.1:${port}/linux-64/repodata.json`, {
        client,
      });
      assert.equal(response.status, 200);
      const repodata = await response.json() as { "packages.conda": Record<string, unknown> };
      assert.deepEqual(Object.keys(repodata["packages.conda"]), ["my-package-1.0-0.conda"]);
    });

    await t.step("the token is not in the log", async () => {
      await server.waitForLine(/INFO published package=my-package-1\.0-0\.conda/);
      assert.ok(server.stderr.some((line) => /INFO request method=POST .*status=201/.test(line)));
      assert.ok(!server.stderr.join("\n").includes(token), server.stderr.join("\n"));
    });

    const other = await otherLocalAddress();
    if (other === undefined) console.log("skipping the loopback check: no non-loopback address");
    await t.step({
      name: "it listens on 127.0.0.1 only",
      ignore: other === undefined,
      fn: async () => {
        const loopback = await Deno.connect({ hostname: "127.0.0.1", port });
        loopback.close();
        await assert.rejects(
          Deno.connect({ hostname: other!, port }),
          Deno.errors.ConnectionRefused,
        );
        assert.ok(server.stderr.some((line) => / address=127\.0\.0\.1 /.test(line)));
      },
    });
  } finally {
    await Deno.remove(cwd, { recursive: true });
  }
});
