import assert from "node:assert/strict";
import { join, resolve } from "node:path";
import { parseCommandLine, type ServerFlags } from "../src/cli/command_line.ts";
import { resolveServerConfig } from "../src/config.ts";
import { checkChannels, parseChannelFlag } from "../src/named_channels.ts";

Deno.test("parseChannelFlag() reads NAME=DIR and resolves the directory", () => {
  assert.deepEqual(parseChannelFlag("staging=/srv/conda/staging"), {
    name: "staging",
    root: "/srv/conda/staging",
  });
  assert.deepEqual(parseChannelFlag("My_Chan-2=rel/dir"), {
    name: "My_Chan-2",
    root: resolve("rel/dir"),
  });
  assert.deepEqual(
    parseChannelFlag("a=/x=y"),
    { name: "a", root: "/x=y" },
    "only the first = splits",
  );
});

Deno.test("parseChannelFlag() refuses unsafe, reserved and subdir names with the reason", () => {
  const cases: [string, string][] = [
    ["staging", '--channel "staging" is not NAME=DIR'],
    [
      "=/srv/x",
      '--channel name "" must be letters, digits, _ and - (at most 64, not starting with _ or -)',
    ],
    [
      "../up=/srv/x",
      '--channel name "../up" must be letters, digits, _ and - (at most 64, not starting with _ or -)',
    ],
    [
      "a.b=/srv/x",
      '--channel name "a.b" must be letters, digits, _ and - (at most 64, not starting with _ or -)',
    ],
    [
      "a/b=/srv/x",
      '--channel name "a/b" must be letters, digits, _ and - (at most 64, not starting with _ or -)',
    ],
    [
      "-x=/srv/x",
      '--channel name "-x" must be letters, digits, _ and - (at most 64, not starting with _ or -)',
    ],
    [
      `${"x".repeat(65)}=/srv/x`,
      `--channel name "${
        "x".repeat(65)
      }" must be letters, digits, _ and - (at most 64, not starting with _ or -)`,
    ],
    ["api=/srv/x", '--channel name "api" is taken by the server\'s /api routes'],
    ["API=/srv/x", '--channel name "API" is taken by the server\'s /API routes'],
    ["t=/srv/x", '--channel name "t" is taken by the server\'s /t routes'],
    ["health=/srv/x", '--channel name "health" is taken by the server\'s /health routes'],
    ["metrics=/srv/x", '--channel name "metrics" is taken by the server\'s /metrics routes'],
    [
      "noarch=/srv/x",
      '--channel name "noarch" is a subdir name; /noarch/ belongs to the channel at /',
    ],
    [
      "linux-64=/srv/x",
      '--channel name "linux-64" is a subdir name; /linux-64/ belongs to the channel at /',
    ],
    ["empty=", "--channel empty= has no directory"],
  ];
  for (const [value, message] of cases) {
    assert.throws(() => parseChannelFlag(value), { name: "SyntaxError", message }, value);
  }
});

Deno.test("checkChannels() refuses a name twice (ignoring case) and directories inside each other", () => {
  const main = { name: "main", root: "/srv/conda/main" };
  checkChannels(main, [
    { name: "staging", root: "/srv/conda/staging" },
    { name: "nightly", root: "/srv/conda/main-nightly" },
  ]);
  assert.throws(() => checkChannels(main, [{ name: "Main", root: "/srv/other" }]), {
    message: '--channel name "Main" is already the name of the channel at / (-d)',
  });
  assert.throws(
    () =>
      checkChannels(main, [
        { name: "a", root: "/srv/a" },
        { name: "A", root: "/srv/b" },
      ]),
    { message: '--channel name "A" is already the name of --channel a' },
  );
  assert.throws(() => checkChannels(main, [{ name: "inner", root: "/srv/conda/main/inner" }]), {
    message:
      "--channel inner directory /srv/conda/main/inner overlaps the channel at / (-d) directory /srv/conda/main; each channel needs its own",
  });
  assert.throws(
    () =>
      checkChannels(main, [
        { name: "a", root: "/srv/a/b" },
        { name: "b", root: "/srv/a" },
      ]),
    {
      message:
        "--channel b directory /srv/a overlaps --channel a directory /srv/a/b; each channel needs its own",
    },
  );
  assert.throws(() => checkChannels(main, [{ name: "same", root: "/srv/conda/main" }]), {
    message: /overlaps the channel at \/ \(-d\)/,
  });
});

Deno.test("--channel is repeatable, AUH_CHANNEL holds a comma-separated list, and the config checks them", async () => {
  const command = parseCommandLine(["--channel", "a=/srv/a", "--channel", "b=/srv/b,c"]);
  assert.equal(command.kind, "serve");
  assert.deepEqual(command.kind === "serve" && command.flags.channels, ["a=/srv/a", "b=/srv/b,c"]);
  const fromEnv = parseCommandLine([], { AUH_CHANNEL: "a=/srv/a, b=/srv/b" });
  assert.deepEqual(fromEnv.kind === "serve" && fromEnv.flags.channels, ["a=/srv/a", "b=/srv/b"]);

  const base: ServerFlags = {
    writeDir: "/srv/conda/main",
    tokenHashes: ["a".repeat(64)],
    allowOverwrite: false,
    noServe: false,
    insecureNoTls: true,
    dev: false,
  };
  const config = await resolveServerConfig({
    ...base,
    channels: ["staging=/srv/conda/staging", `nightly=${join("/srv", "nightly")}`],
  });
  assert.deepEqual(config.channels, [
    { name: "staging", root: "/srv/conda/staging" },
    { name: "nightly", root: "/srv/nightly" },
  ]);
  assert.deepEqual((await resolveServerConfig(base)).channels, []);
  await assert.rejects(resolveServerConfig({ ...base, channels: ["main=/srv/x"] }), {
    name: "ConfigError",
    message: 'Cannot start: --channel name "main" is already the name of the channel at / (-d)',
  });
  await assert.rejects(resolveServerConfig({ ...base, channels: ["metrics=/srv/x"] }), {
    name: "ConfigError",
    message: 'Cannot start: --channel name "metrics" is taken by the server\'s /metrics routes',
  });
});
