/**
 * The log as a process writes it to stderr: lines are gathered and written
 * in batches, yet every line arrives, in order, when the process exits with
 * `Deno.exit`, and an info line arrives while the process goes on running.
 */

import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";

const LOG_TS = fileURLToPath(new URL("../src/log.ts", import.meta.url));

/** Runs `code` (which has `createLogger` in scope) in a process of its own. */
function spawnLogging(code: string, stdin: "piped" | "null" = "null"): Deno.ChildProcess {
  const script = `import { createLogger } from ${JSON.stringify(LOG_TS)};\n${code}`;
  return new Deno.Command(Deno.execPath(), {
    args: ["eval", "--no-check", script],
    stdin,
    stdout: "null",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).spawn();
}

Deno.test("createLogger() writes every line in order before Deno.exit(), warnings in their place", async () => {
  const child = spawnLogging(`
    const logger = createLogger();
    for (let i = 0; i < 2000; i++) logger.info("request", { n: i });
    logger.warn("refused", { n: 2000 });
    for (let i = 2001; i < 2100; i++) logger.info("request", { n: i });
    Deno.exit(0);
  `);
  const { code, stderr } = await child.output();
  assert.equal(code, 0);
  const lines = new TextDecoder().decode(stderr).trimEnd().split("\n");
  assert.equal(lines.length, 2100);
  lines.forEach((line, index) => {
    assert.match(line, new RegExp(` (INFO request|WARN refused) n=${index}$`));
  });
  assert.match(lines[2000]!, /WARN refused n=2000$/);
});

Deno.test("createLogger() writes a line at once while the process goes on running", async () => {
  const child = spawnLogging(
    `
    createLogger().info("ready", { port: 1 });
    for await (const _ of Deno.stdin.readable) break; // runs until its stdin closes
  `,
    "piped",
  );
  const reader = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
  try {
    let text = "";
    const deadline = AbortSignal.timeout(10_000);
    while (!text.includes("\n") && !deadline.aborted) {
      const { done, value } = await reader.read();
      if (done) break;
      text += value;
    }
    assert.match(text, /INFO ready port=1\n$/);
  } finally {
    await child.stdin.close();
    await reader.cancel();
    await child.status;
  }
});
