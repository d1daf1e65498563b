import assert from "node:assert/strict";
import { parseCommandLine } from "../src/cli/command_line.ts";
import { ConfigError, resolveObjectStorage, resolveServerConfig } from "../src/config.ts";
import { parseS3Url, s3SettingsFromEnv } from "../src/storage/s3_location.ts";
import { decodeXmlText, xmlElements, xmlText } from "../src/storage/s3_xml.ts";

const CREDENTIALS = { AWS_ACCESS_KEY_ID: "AKID", AWS_SECRET_ACCESS_KEY: "secret" };

Deno.test("parseS3Url() reads a bucket and a prefix without surrounding slashes", () => {
  assert.deepEqual(parseS3Url("s3://conda"), { bucket: "conda", prefix: "" });
  assert.deepEqual(parseS3Url("s3://conda/"), { bucket: "conda", prefix: "" });
  assert.deepEqual(parseS3Url("s3://conda.example/channels/main/"), {
    bucket: "conda.example",
    prefix: "channels/main",
  });
});

Deno.test("parseS3Url() refuses other schemes, bad bucket names and dot segments", () => {
  for (
    const [url, reason] of [
      ["https://conda/main", /is not like s3:\/\/BUCKET\/PREFIX/],
      ["s3://", /is not like/],
      ["s3://Conda/main", /Conda is not a valid bucket name/],
      ["s3://a/main", /a is not a valid bucket name/],
      ["s3://conda/a/../b", /empty, \. or \.\. segment/],
      ["s3://conda/a//b", /empty, \. or \.\. segment/],
    ] as const
  ) {
    assert.throws(() => parseS3Url(url), (error: Error) => {
      assert(error instanceof SyntaxError);
      assert.match(error.message, reason);
      return true;
    });
  }
});

Deno.test("s3SettingsFromEnv() takes the standard AWS variables, us-east-1 by default", () => {
  assert.deepEqual(s3SettingsFromEnv(CREDENTIALS), {
    accessKeyId: "AKID",
    secretAccessKey: "secret",
    region: "us-east-1",
  });
  assert.deepEqual(
    s3SettingsFromEnv({
      ...CREDENTIALS,
      AWS_SESSION_TOKEN: "token",
      AWS_REGION: "eu-west-1",
      AWS_ENDPOINT_URL: "http://127.0.0.1:7480/",
    }),
    {
      accessKeyId: "AKID",
      secretAccessKey: "secret",
      sessionToken: "token",
      region: "eu-west-1",
      endpoint: "http://127.0.0.1:7480",
    },
  );
  assert.throws(() => s3SettingsFromEnv({ AWS_SECRET_ACCESS_KEY: "s" }), /AWS_ACCESS_KEY_ID/);
  assert.throws(() => s3SettingsFromEnv({ AWS_ACCESS_KEY_ID: "a" }), /AWS_SECRET_ACCESS_KEY/);
  assert.throws(
    () => s3SettingsFromEnv({ ...CREDENTIALS, AWS_ENDPOINT_URL: "ftp://x" }),
    /must be http/,
  );
});

Deno.test("--storage is parsed from the flag and AUH_STORAGE (also for index) and checked, with its tuning variables", async () => {
  const fromFlag = parseCommandLine(["--storage", "s3://conda/main", "-d", "work"]);
  assert(fromFlag.kind === "serve");
  assert.equal(fromFlag.flags.storage, "s3://conda/main");
  const fromEnv = parseCommandLine(["-d", "work"], { AUH_STORAGE: "s3://conda/env" });
  assert(fromEnv.kind === "serve");
  assert.equal(fromEnv.flags.storage, "s3://conda/env");

  assert.deepEqual(resolveObjectStorage("s3://conda/main", CREDENTIALS).location, {
    bucket: "conda",
    prefix: "main",
  });
  assert.throws(
    () => resolveObjectStorage("s3://conda/main", {}),
    (error: Error) =>
      error instanceof ConfigError &&
      error.message === "Cannot start: AWS_ACCESS_KEY_ID is not set",
  );
  assert.throws(
    () => resolveObjectStorage("gs://conda", CREDENTIALS),
    (error: Error) =>
      error instanceof ConfigError &&
      error.message === "Cannot start: gs://conda is not like s3://BUCKET/PREFIX",
  );
  await assert.rejects(
    resolveServerConfig({ ...fromFlag.flags, storage: "gs://conda" }),
    /gs:\/\/conda is not like/,
  );
  const tuned = resolveObjectStorage("s3://conda/main", {
    ...CREDENTIALS,
    AUH_S3_REFRESH_MS: "250",
    AUH_S3_ORPHAN_GRACE_S: "7",
    AUH_S3_MULTIPART_MIB: "64",
  });
  assert.equal(tuned.refreshMs, 250);
  assert.equal(tuned.orphanGraceMs, 7000);
  assert.equal(tuned.multipartThreshold, 64 * 1024 * 1024);
  assert.throws(
    () => resolveObjectStorage("s3://conda/main", { ...CREDENTIALS, AUH_S3_REFRESH_MS: "soon" }),
    (error: Error) =>
      error instanceof ConfigError &&
      error.message === "Cannot start: AUH_S3_REFRESH_MS must be a whole number from 1, not soon",
  );
  const index = parseCommandLine(["index", "work", "--storage", "s3://conda/main"]);
  assert.deepEqual(index, {
    kind: "index",
    root: "work",
    condaExe: undefined,
    storage: "s3://conda/main",
  });
});

Deno.test("the S3 XML reader decodes entities and finds elements in order", () => {
  assert.equal(decodeXmlText("&quot;a&amp;b&quot; &#60;&#x3e;&apos;"), `"a&b" <>'`);
  const xml = "<R><Contents><Key>a%2Fb</Key><ETag>&quot;x&quot;</ETag></Contents>" +
    "<Contents><Key>c</Key></Contents><IsTruncated>false</IsTruncated></R>";
  assert.deepEqual(xmlElements(xml, "Contents").map((c) => xmlText(c, "Key")), ["a%2Fb", "c"]);
  assert.equal(xmlText(xml, "ETag"), '"x"');
  assert.equal(xmlText(xml, "Missing"), undefined);
});
