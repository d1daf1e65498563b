/**
 * The development server (`--dev`): a channel in `./channel`, a throw-away
 * CA and certificate made at start, a random token, loopback only, and a
 * banner with ready-to-paste commands.
 *
 * @module
 */

import { join, resolve } from "node:path";
import type { TlsPem } from "../app.ts";
import { generateToken, hashToken } from "../auth/token_hash.ts";
import { createSelfSignedCertificate } from "../tls/self_signed_certificate.ts";
import type { ServerFlags } from "./command_line.ts";

/** What `--dev` prepared. */
export interface Development {
  /** The flags with the development defaults filled in. */
  flags: ServerFlags;
  /** The generated server certificate and key. */
  tls: TlsPem;
  /** The generated token (printed once, never logged). */
  token: string;
  /** Path of the CA certificate clients trust. */
  caFile: string;
  /** The channel root. */
  channelRoot: string;
}

/** Directory (in the working directory) holding the development CA certificate. */
export const DEV_STATE_DIR = ".artifact-upload-handler-dev";

/** Fills in development defaults, creates the channel and the certificate. */
export async function prepareDevelopment(flags: ServerFlags): Promise<Development> {
  const channelRoot = resolve(flags.writeDir ?? "channel");
  await Deno.mkdir(channelRoot, { recursive: true });
  const token = generateToken();
  const hosts = ["localhost", "127.0.0.1", "::1"];
  if (flags.host !== undefined && !hosts.includes(flags.host)) hosts.push(flags.host);
  const { cert, key, ca } = await createSelfSignedCertificate({ hosts });
  const stateDir = resolve(DEV_STATE_DIR);
  await Deno.mkdir(stateDir, { recursive: true });
  const caFile = join(stateDir, "ca.pem");
  await Deno.writeTextFile(caFile, ca);
  return {
    flags: {
      ...flags,
      writeDir: channelRoot,
      host: flags.host ?? "127.0.0.1",
      tokenHashes: [...flags.tokenHashes, await hashToken(token, flags.salt)],
    },
    tls: { cert, key },
    token,
    caFile,
    channelRoot,
  };
}

/** Prints the development banner with the URL, token and commands to stdout. */
export function printDevelopmentBanner(url: string, development: Development): void {
  const rule = "=".repeat(78);
  console.log([
    rule,
    "  DEVELOPMENT SERVER - self-signed certificate, random token. NOT FOR PRODUCTION.",
    rule,
    `  URL:      ${url}`,
    `  Channel:  ${development.channelRoot}`,
    `  Token:    ${development.token}`,
    `  CA cert:  ${development.caFile}`,
    "",
    "  Upload a package:",
    `    curl --cacert ${development.caFile} -F token=${development.token} \\`,
    `         -F artifact=@my-package-1.0-0.conda ${url}/`,
    "",
    "  Install from the channel:",
    `    conda install --channel ${url} my-package   (with ssl_verify: ${development.caFile})`,
    `    pixi workspace channel add ${url} && pixi add my-package`,
    `    (pixi/rattler: SSL_CERT_FILE=${development.caFile})`,
    rule,
  ].join("\n"));
}
