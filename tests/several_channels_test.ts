/**
 * Several channels from one server: `-d` at `/`, `--channel staging=DIR` at
 * `/staging/`, each with its own files, index, 409s and `noarch`; every
 * protocol that names a channel reaches it, the form protocol at
 * `POST /staging/`, and rattler solves from each independently.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { buildPackage, packageFilename, type PackageSpec } from "./helpers/conda_package.ts";
import { solveFromServer, solveWithRattler } from "./helpers/rattler_solve.ts";
import { startTestServer, type TestServer, uploadForm } from "./helpers/test_server.ts";
import { channelPackages, rattlerPrefixForm } from "./helpers/upload_clients.ts";

async function twoChannelServer(): Promise<TestServer & { staging: string }> {
  const dir = await Deno.makeTempDir({ prefix: "auh-channels-" });
  const staging = join(dir, "staging");
  await Deno.mkdir(staging);
  const server = await startTestServer({ flags: { channels: [`staging=${staging}`] } });
  const stop = server[Symbol.asyncDispose].bind(server);
  return Object.assign(server, {
    staging,
    async [Symbol.asyncDispose]() {
      await stop();
      await Deno.remove(dir, { recursive: true });
    },
  });
}

async function repodataNames(server: TestServer, path: string): Promise<string[]> {
  const response = await server.fetch(path);
  assert.equal(response.status, 200, path);
  const repodata = await response.json();
  return [
    ...Object.keys(repodata.packages ?? {}),
    ...Object.keys(repodata["packages.conda"] ?? {}),
  ].sort();
}

Deno.test("two channels keep their own files, index and 409s, and every protocol reaches the one it names", async () => {
  await using server = await twoChannelServer();
  const auth = { authorization: `Bearer ${server.token}` };
  const app: PackageSpec = { name: "app", version: "1.0" };
  const appBytes = await buildPackage(app);
  const appFile = packageFilename(app);

  // the same package in both channels: two 201s, then a 409 in each, each channel alone
  const toRoot = await server.fetch(`/linux-64/${appFile}`, {
    method: "PUT",
    headers: auth,
    body: appBytes as Uint8Array<ArrayBuffer>,
  });
  assert.equal(toRoot.status, 201, await toRoot.text());
  const prefix = rattlerPrefixForm(appFile, appBytes);
  const toStaging = await server.fetch("/api/v1/upload/staging", {
    method: "POST",
    headers: { ...auth, "content-type": prefix.contentType },
    body: prefix.body as Uint8Array<ArrayBuffer>,
  });
  assert.equal(toStaging.status, 201, await toStaging.text());
  for (const path of [`/linux-64/${appFile}`, `/staging/linux-64/${appFile}`]) {
    const again = await server.fetch(path, {
      method: "PUT",
      headers: auth,
      body: appBytes as Uint8Array<ArrayBuffer>,
    });
    assert.equal(again.status, 409, path);
    await again.body?.cancel();
  }

  // the form at POST /staging/, quetz and Artifactory naming staging
  const lib: PackageSpec = { name: "lib", version: "2.0", subdir: "noarch" };
  const form = await server.fetch("/staging/", {
    method: "POST",
    body: uploadForm(server.token, packageFilename(lib), await buildPackage(lib)),
  });
  assert.equal(form.status, 201, await form.text());
  const tool: PackageSpec = { name: "tool", version: "3.0" };
  const quetz = await server.fetch(`/api/channels/staging/upload/${packageFilename(tool)}`, {
    method: "POST",
    headers: { "x-api-key": server.token },
    body: await buildPackage(tool) as Uint8Array<ArrayBuffer>,
  });
  assert.equal(quetz.status, 201, await quetz.text());

  assert.deepEqual(await channelPackages(server.channelRoot), [`linux-64/${appFile}`]);
  assert.deepEqual(await channelPackages(server.staging), [
    `linux-64/${appFile}`,
    `linux-64/${packageFilename(tool)}`,
    `noarch/${packageFilename(lib)}`,
  ]);
  assert.deepEqual(await repodataNames(server, "/linux-64/repodata.json"), [appFile]);
  assert.deepEqual(await repodataNames(server, "/noarch/repodata.json"), []);
  assert.deepEqual(await repodataNames(server, "/staging/linux-64/repodata.json"), [
    appFile,
    packageFilename(tool),
  ]);
  assert.deepEqual(await repodataNames(server, "/staging/noarch/repodata.json"), [
    packageFilename(lib),
  ]);
  const served = await server.fetch(`/staging/noarch/${packageFilename(lib)}`);
  assert.equal(served.status, 200);
  await served.body?.cancel();
  const redirect = await server.fetch("/staging", { redirect: "manual" });
  assert.equal(redirect.status, 301);
  assert.equal(redirect.headers.get("location"), "/staging/");
  await redirect.body?.cancel();

  // a channel not held here is a 404, and nothing is kept
  const nowhere = await server.fetch("/api/v1/upload/nope", {
    method: "POST",
    headers: { ...auth, "content-type": prefix.contentType },
    body: prefix.body as Uint8Array<ArrayBuffer>,
  });
  assert.equal(nowhere.status, 404);
  assert.equal((await nowhere.text()).trim(), 'Cannot upload: no channel named "nope" here');

  // deleting in staging leaves the channel at / alone
  const deleted = await server.fetch(`/staging/linux-64/${appFile}`, {
    method: "DELETE",
    headers: auth,
  });
  assert.equal(deleted.status, 200, await deleted.text());
  assert.deepEqual(await repodataNames(server, "/linux-64/repodata.json"), [appFile]);
  assert.deepEqual(await repodataNames(server, "/staging/linux-64/repodata.json"), [
    packageFilename(tool),
  ]);
});

Deno.test("rattler solves from each of two channels on one server independently", async () => {
  await using server = await twoChannelServer();
  const auth = { authorization: `Bearer ${server.token}` };
  const stable: PackageSpec = { name: "pick", version: "1.0" };
  const candidate: PackageSpec = { name: "pick", version: "2.0" };
  for (const [path, spec] of [["", stable], ["/staging", candidate]] as const) {
    const response = await server.fetch(`${path}/linux-64/${packageFilename(spec)}`, {
      method: "PUT",
      headers: auth,
      body: await buildPackage(spec) as Uint8Array<ArrayBuffer>,
    });
    assert.equal(response.status, 201, await response.text());
  }
  const fromRoot = await solveFromServer(server, ["pick"]);
  assert.deepEqual(fromRoot.map((record) => record.version), ["1.0"]);
  assert.equal(fromRoot[0]!.url, `${server.url}/linux-64/${packageFilename(stable)}`);
  const fromStaging = await solveWithRattler(
    ["pick"],
    `${server.url}/staging`,
    ["linux-64", "noarch"],
    server.caFile,
  );
  assert.deepEqual(fromStaging.map((record) => record.version), ["2.0"]);
  assert.equal(fromStaging[0]!.url, `${server.url}/staging/linux-64/${packageFilename(candidate)}`);
  await assert.rejects(
    solveFromServer(server, ["pick >=2"]),
    /Cannot solve with rattler/,
  );
});

Deno.test("a package for a subdir named like another channel is refused by the channel at / with 409, and nothing is kept", async () => {
  const dir = await Deno.makeTempDir({ prefix: "auh-channels-" });
  const teamA = join(dir, "team-a");
  await Deno.mkdir(teamA);
  try {
    await using server = await startTestServer({ flags: { channels: [`team-a=${teamA}`] } });
    const shadowed: PackageSpec = { name: "shadowed", version: "1.0", subdir: "team-a" };
    const response = await server.fetch("/", {
      method: "POST",
      body: uploadForm(server.token, packageFilename(shadowed), await buildPackage(shadowed)),
    });
    assert.equal(response.status, 409);
    assert.match(await response.text(), /subdir team-a is the name of another channel/);
    await assert.rejects(Deno.stat(join(server.channelRoot, "team-a")), Deno.errors.NotFound);
    assert.deepEqual(await repodataNames(server, "/team-a/noarch/repodata.json"), []);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
