/**
 * The front door of every write: takes the path token out once, matches the
 * route table once, resolves the credentials of the request head once, and
 * carries out the protocol's intent in one order for all protocols:
 *
 * 1. authenticate (head credentials: before any body byte is read and
 *    before an upload slot is taken; the throttle is fed from this result);
 * 2. check what needs no body: channel, subdir, filename, declared length,
 *    and the identity's scope (may it publish this package to this
 *    channel, overwrite, delete?), 403 before any byte is kept; for the
 *    form and prefix.dev bodies the scope is checked when the file part's
 *    header names the package;
 * 3. take an upload slot (503 when all are taken);
 * 4. receive → verify → inspect → publish → index (`UploadService`).
 *
 * A form upload without head credentials carries its token in the body: it
 * waits in the {@linkcode PreAuthPool} (not in an upload slot) under its
 * pre-token budget until the token field arrives, then steps 1 and 3 happen
 * and the artifact is read. If it ends without presenting a token, that
 * counts as a failed attempt.
 *
 * @module
 */

import type { Authenticator, Identity } from "../auth/authenticator.ts";
import { checkScope } from "../auth/token_scope.ts";
import { splitPathToken } from "../auth/path_token.ts";
import { headCredentials } from "../auth/request_credentials.ts";
import { guardBody } from "../http/guarded_body.ts";
import { badRequest, HttpError } from "../http/http_error.ts";
import { STATUS } from "../http/status.ts";
import type { Metrics } from "../observability/metrics.ts";
import { parsePackageFilename } from "../package/package_filename.ts";
import { isSubdirName } from "../package/platforms.ts";
import type { DeletedPackage } from "./delete_protocol.ts";
import { receiveForm } from "./form_body.ts";
import { multipartBoundary } from "./multipart_stream.ts";
import type { PreAuthPool } from "./pre_auth_pool.ts";
import { type ReceivedUpload, receivePrefixForm } from "./prefix_body.ts";
import type { ServedChannel, ServedChannels } from "./served_channels.ts";
import type { UploadGate } from "./upload_gate.ts";
import type { DeleteIntent, UploadIntent } from "./upload_intent.ts";
import { matchWriteRoute } from "./write_routes.ts";

/** What the front door needs. */
export interface FrontDoorContext {
  /** The channels and their upload paths. */
  channels: ServedChannels;
  /** Resolves credentials under the failed-token throttle. */
  authenticator: Authenticator;
  /** Upload slots and the shutdown drain. */
  gate: UploadGate;
  /** Where form uploads wait for their token field. */
  preAuth: PreAuthPool;
  /** Longest wait for the next chunk of a request body, in ms. */
  bodyIdleMs: number;
  /** What `/metrics` reports. */
  metrics: Metrics;
}

/**
 * Carries out a write request (`POST`, `PUT`, `DELETE`) from `client`;
 * undefined when no write route matches its method and path.
 */
export async function handleWrite(
  request: Request,
  client: string,
  context: FrontDoorContext,
): Promise<Response | undefined> {
  const url = new URL(request.url);
  const { token: pathToken, pathname } = splitPathToken(url.pathname);
  const makeIntent = matchWriteRoute(request.method, pathname, request.headers);
  if (makeIntent === undefined) return undefined;
  const credentials = headCredentials(request.headers, pathToken);
  const intent = makeIntent({ request, url, pathname, credentials });
  return intent.action === "delete"
    ? await deletePackage(intent, client, context, request.signal)
    : await uploadPackage(intent, client, context, request.signal);
}

/** `signal`: the client went away (a held failure's wait ends). */
async function deletePackage(
  intent: DeleteIntent,
  client: string,
  context: FrontDoorContext,
  signal: AbortSignal,
): Promise<Response> {
  const identity = await context.authenticator.authenticate(intent.credentials, client, signal);
  const channel = context.channels.resolve(intent.channel, "delete");
  checkSubdir(intent.subdir, "delete");
  channel.uploads.checkFilename(intent.filename);
  checkScope(identity, {
    channel: channel.name,
    packageName: packageName(intent.filename),
    action: "delete",
  });
  const release = enterGate(context);
  let removed: boolean;
  try {
    removed = await channel.uploads.remove(intent.subdir, intent.filename, identity);
  } finally {
    release();
  }
  if (!removed) {
    throw new HttpError(
      STATUS.NotFound,
      `Cannot delete: ${intent.subdir}/${intent.filename} does not exist`,
    );
  }
  const body: DeletedPackage = { subdir: intent.subdir, filename: intent.filename, deleted: true };
  return Response.json(body, { status: STATUS.OK });
}

/** `signal`: the client went away (a held failure's wait ends). */
async function uploadPackage(
  intent: UploadIntent,
  client: string,
  context: FrontDoorContext,
  signal: AbortSignal,
): Promise<Response> {
  const { authenticator } = context;
  const tokenInBody = intent.body.format === "form" && intent.credentials.source === undefined;
  const identity = tokenInBody
    ? undefined
    : await authenticator.authenticate(intent.credentials, client, signal);
  const channel = context.channels.resolve(intent.channel, "upload");
  const { uploads } = channel;
  if (intent.subdir !== undefined) checkSubdir(intent.subdir, "upload");
  if (intent.filename !== undefined) uploads.checkFilename(intent.filename);
  if (intent.refusal) throw intent.refusal;
  // Who may publish what: checked as soon as both are known, before any byte is kept.
  const checkArtifact = (who: Identity, filename: string) =>
    checkUploadScope(who, channel, filename, intent.replace);
  if (identity !== undefined && intent.filename !== undefined) {
    checkArtifact(identity, intent.filename);
  }
  uploads.checkDeclaredLength(intent.declaredLength);
  const boundary = intent.body.format === "raw" ? undefined : multipartBoundary(intent.contentType);
  if (intent.body.stream === null) throw badRequest("Cannot upload: the request has no body");
  const body = guardBody(intent.body.stream, {
    idleMs: context.bodyIdleMs,
    signal: context.gate.signal,
    onBytes: (bytes) => context.metrics.bytesReceived += bytes,
  });

  if (identity === undefined) {
    return await uploadFormWithBodyToken(intent, body, boundary!, client, channel, context, signal);
  }
  const release = enterGate(context);
  try {
    const received = intent.body.format === "raw"
      ? { ...intentFields(intent), artifact: await uploads.receive(body) }
      : intent.body.format === "prefix"
      ? await receivePrefixForm(body, boundary!, uploads, {
        onFilename: (filename) => checkArtifact(identity, filename),
      })
      : await receiveForm(body, boundary!, uploads, {
        identity,
        onToken: () => Promise.resolve(identity),
        onArtifact: checkArtifact,
      });
    return await publish(intent, received, identity, channel);
  } finally {
    release();
  }
}

/** The form protocol with its token in the body: pre-token pool, then a slot. */
async function uploadFormWithBodyToken(
  intent: UploadIntent,
  body: ReadableStream<Uint8Array>,
  boundary: string,
  client: string,
  channel: ServedChannel,
  context: FrontDoorContext,
  signal: AbortSignal,
): Promise<Response> {
  const entry = context.preAuth.enter(body);
  let release: (() => void) | undefined;
  try {
    const received = await receiveForm(entry.body, boundary, channel.uploads, {
      identity: undefined,
      onToken: async (token) => {
        entry.leave();
        const identity = await context.authenticator.authenticate(
          { token, source: "form" },
          client,
          signal,
        );
        release = enterGate(context);
        return identity;
      },
      onArtifact: (identity, filename) =>
        checkUploadScope(identity, channel, filename, intent.replace),
    });
    return await publish(intent, received, received.identity, channel);
  } catch (error) {
    const noToken = entry.ended !== undefined ||
      (error instanceof HttpError && error.status === STATUS.Unauthorized);
    if (!entry.authenticated && noToken) {
      // It ended without ever presenting a token (its budget spent, pushed out
      // of the pool, no token field, or the artifact first): a failed attempt.
      // A form that is merely malformed is answered as such, not counted.
      entry.leave();
      await context.authenticator.refuse(entry.ended ?? error as HttpError, client, signal);
    }
    throw error;
  } finally {
    entry.leave();
    release?.();
  }
}

async function publish(
  intent: UploadIntent,
  received: ReceivedUpload,
  identity: Identity,
  channel: ServedChannel,
): Promise<Response> {
  const stored = await channel.uploads.publish(received.artifact, {
    filename: received.filename,
    identity,
    expectedSha256: received.expectedSha256,
    expectedSubdir: received.expectedSubdir,
    replace: intent.replace,
    checksumMismatchStatus: intent.checksumMismatchStatus,
  });
  return Response.json(stored, { status: intent.successStatus });
}

/** What a raw-body intent's head declared about its artifact. */
function intentFields(intent: UploadIntent): Omit<ReceivedUpload, "artifact"> {
  return {
    filename: intent.filename!,
    expectedSha256: intent.expectedSha256,
    expectedSubdir: intent.subdir,
  };
}

/** 404 unless `subdir` is a well-formed subdir name (`src/package/platforms.ts`). */
function checkSubdir(subdir: string, action: string): void {
  if (!isSubdirName(subdir)) {
    throw new HttpError(
      STATUS.NotFound,
      `Cannot ${action}: ${JSON.stringify(subdir.slice(0, 64))} is not a conda subdir`,
    );
  }
}

/**
 * 403 unless `identity` may publish `filename` to `channel` (and, when
 * `replace` is asked for, overwrite it).
 */
function checkUploadScope(
  identity: Identity,
  channel: ServedChannel,
  filename: string,
  replace: boolean,
): void {
  const request = { channel: channel.name, packageName: packageName(filename) };
  checkScope(identity, { ...request, action: "upload" });
  if (replace) checkScope(identity, { ...request, action: "overwrite" });
}

/** The package name in a (checked) package filename `name-version-build.ext`. */
function packageName(filename: string): string {
  const parts = parsePackageFilename(filename).stem.split("-");
  return parts.length >= 3 ? parts.slice(0, -2).join("-") : parts.join("-");
}

function enterGate(context: FrontDoorContext): () => void {
  const release = context.gate.enter();
  context.metrics.uploadsInFlight = context.gate.inFlight;
  return () => {
    release();
    context.metrics.uploadsInFlight = context.gate.inFlight;
  };
}
