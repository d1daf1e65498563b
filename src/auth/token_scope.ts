/**
 * Who is uploading and what they may do: an {@linkcode Identity} (a named
 * token or a trusted publisher with its CI run) carries a {@linkcode Scope}
 * (channels, package-name globs, actions), and {@linkcode checkScope} turns
 * a request outside it into a 403 with a one-line reason, before anything is
 * kept.
 *
 * @module
 */

import { HttpError } from "../http/http_error.ts";
import { STATUS } from "../http/status.ts";
import { matchGlob } from "./glob_pattern.ts";

/** The actions a scope can allow, in the order they are listed. */
export const SCOPE_ACTIONS = ["upload", "overwrite", "delete"] as const;

/**
 * `upload` publishes a new file, `overwrite` replaces an existing one (an
 * upload with force; the server's `--allow_overwrite` must allow it too),
 * `delete` removes one.
 */
export type ScopeAction = typeof SCOPE_ACTIONS[number];

/** What an identity may do. An absent list means "any". */
export interface Scope {
  /** Channel names it may touch; undefined: every channel. */
  channels?: readonly string[];
  /** Package-name globs (lowercase) it may touch; undefined: every package. */
  packages?: readonly string[];
  /** The actions it may take. */
  can: ReadonlySet<ScopeAction>;
}

/** The scope of a bare token hash (and of `-t`): everything. */
export const UNRESTRICTED_SCOPE: Scope = Object.freeze({ can: new Set(SCOPE_ACTIONS) });

/** The CI run behind a trusted publisher's upload, from the OIDC token's claims. */
export interface CiRun {
  /** `owner/name` (GitHub `repository`, GitLab `project_path`). */
  repository?: string;
  /** The run (GitHub `run_id`, GitLab `pipeline_id`). */
  runId?: string;
  /** The workflow (GitHub `workflow`, GitLab `ci_config_ref_uri`). */
  workflow?: string;
}

/** Who sent a request; logs, the audit log and metrics name it, never a secret. */
export interface Identity {
  /** A configured token, or a token minted for a trusted publisher. */
  kind: "token" | "publisher";
  /** The token's `name=` (or `token:<8 hex>` for a bare hash), or the publisher's name. */
  name: string;
  /** What it may do. */
  scope: Scope;
  /** For a trusted publisher: the CI run that asked for the token. */
  run?: CiRun;
}

/**
 * The fields that name `identity` in a log line, the audit log and metrics:
 * `by` (the token's or publisher's name) and, for a trusted publisher, the
 * CI run (`ci_repository`, `ci_run_id`, `ci_workflow`). Never a secret.
 *
 * @example Usage
 * ```ts
 * import { identityFields, UNRESTRICTED_SCOPE } from "./token_scope.ts";
 * console.log(identityFields({
 *   kind: "publisher",
 *   name: "mylib-release",
 *   scope: UNRESTRICTED_SCOPE,
 *   run: { repository: "acme/mylib", runId: "42" },
 * }));
 * // { by: "mylib-release", ci_repository: "acme/mylib", ci_run_id: "42" }
 * ```
 */
export function identityFields(identity: Identity): Record<string, string> {
  const fields: Record<string, string> = { by: identity.name };
  const run = identity.run;
  if (run?.repository !== undefined) fields.ci_repository = run.repository;
  if (run?.runId !== undefined) fields.ci_run_id = run.runId;
  if (run?.workflow !== undefined) fields.ci_workflow = run.workflow;
  return fields;
}

/** One thing a request wants to do, checked against a scope. */
export interface ScopeRequest {
  /** The channel's name. */
  channel: string;
  /** The package's name (as in its file name). */
  packageName: string;
  /** What it wants to do. */
  action: ScopeAction;
}

const VERB: Record<ScopeAction, string> = {
  upload: "upload",
  overwrite: "upload",
  delete: "delete",
};
const DOING: Record<ScopeAction, string> = {
  upload: "publish",
  overwrite: "overwrite",
  delete: "delete",
};

/**
 * Why `identity` may not do `request`, as a "Cannot <action>: ..." line, or
 * undefined when it may. An overwrite is checked on its own: the caller
 * checks the upload first and the overwrite when a file would be replaced.
 *
 * @example Usage
 * ```ts
 * import { scopeViolation } from "./token_scope.ts";
 * const identity = {
 *   kind: "token" as const,
 *   name: "ci-mylib",
 *   scope: { packages: ["mylib", "mylib-*"], can: new Set(["upload" as const]) },
 * };
 * console.log(scopeViolation(identity, { channel: "main", packageName: "other", action: "upload" }));
 * // Cannot upload: token 'ci-mylib' may not publish package 'other'
 * ```
 */
export function scopeViolation(identity: Identity, request: ScopeRequest): string | undefined {
  const { scope } = identity;
  const who = `${identity.kind === "token" ? "token" : "trusted publisher"} ${
    quote(identity.name)
  }`;
  const cannot = `Cannot ${VERB[request.action]}: ${who} may not ${DOING[request.action]}`;
  if (!scope.can.has(request.action)) {
    return `${cannot} packages (it can ${
      scope.can.size === 0 ? "nothing" : [...scope.can].join(", ")
    })`;
  }
  if (scope.channels !== undefined && !scope.channels.includes(request.channel)) {
    return `${cannot} ${request.action === "delete" ? "in" : "to"} channel ${
      quote(request.channel)
    }`;
  }
  const name = request.packageName.toLowerCase();
  if (scope.packages !== undefined && !scope.packages.some((glob) => matchGlob(glob, name))) {
    return `${cannot} package ${quote(request.packageName)}`;
  }
  return undefined;
}

/**
 * Throws a 403 {@linkcode HttpError} with the reason when `identity` may
 * not do `request`.
 *
 * @example Usage
 * ```ts
 * import { checkScope, UNRESTRICTED_SCOPE } from "./token_scope.ts";
 * const identity = { kind: "token" as const, name: "admin", scope: UNRESTRICTED_SCOPE };
 * checkScope(identity, { channel: "main", packageName: "anything", action: "delete" }); // fine
 * ```
 */
export function checkScope(identity: Identity, request: ScopeRequest): void {
  const reason = scopeViolation(identity, request);
  if (reason !== undefined) throw new HttpError(STATUS.Forbidden, reason);
}

/** The lists a scope is written with, in a token file line or a publisher entry. */
export interface ScopeLists {
  /** Channel names. */
  channels?: readonly string[];
  /** Package-name globs. */
  packages?: readonly string[];
  /** Action names. */
  can?: readonly string[];
}

const CHANNEL_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/;
const PACKAGE_GLOB = /^[a-z0-9_.+*?-]{1,200}$/;

/**
 * Builds a scope from its written lists; an absent list means "any".
 * Throws a `SyntaxError` naming the field for a value that cannot be used.
 *
 * @example Usage
 * ```ts
 * import { scopeFromLists } from "./token_scope.ts";
 * const scope = scopeFromLists({ packages: ["mylib", "mylib-*"], can: ["upload"] });
 * console.log(scope.packages, [...scope.can]); // ["mylib", "mylib-*"] ["upload"]
 * ```
 */
export function scopeFromLists(lists: ScopeLists): Scope {
  const scope: { -readonly [K in keyof Scope]: Scope[K] } = {
    can: lists.can === undefined ? new Set(SCOPE_ACTIONS) : parseActions(lists.can),
  };
  if (lists.channels !== undefined) {
    scope.channels = nonEmpty("channels", lists.channels).map((channel) => {
      if (!CHANNEL_NAME.test(channel)) {
        throw new SyntaxError(`channels: ${quote(channel)} is not a channel name`);
      }
      return channel;
    });
  }
  if (lists.packages !== undefined) {
    scope.packages = nonEmpty("packages", lists.packages).map((glob) => {
      const lower = glob.toLowerCase();
      if (!PACKAGE_GLOB.test(lower)) {
        throw new SyntaxError(
          `packages: ${quote(glob)} is not a package name or glob (letters, digits, _.+- and * ?)`,
        );
      }
      return lower;
    });
  }
  return scope;
}

function parseActions(names: readonly string[]): Set<ScopeAction> {
  const actions = new Set<ScopeAction>();
  for (const name of nonEmpty("can", names)) {
    if (!(SCOPE_ACTIONS as readonly string[]).includes(name)) {
      throw new SyntaxError(
        `can: ${quote(name)} is not an action (expected ${SCOPE_ACTIONS.join(", ")})`,
      );
    }
    actions.add(name as ScopeAction);
  }
  if (actions.has("overwrite") && !actions.has("upload")) {
    throw new SyntaxError("can: overwrite needs upload too (an overwrite is an upload)");
  }
  return actions;
}

function nonEmpty(field: string, values: readonly string[]): readonly string[] {
  if (values.length === 0 || values.some((value) => value === "")) {
    throw new SyntaxError(`${field}: a list of names may not be empty or hold an empty name`);
  }
  return values;
}

/** `'value'`, with control characters dropped and at most 100 characters kept. */
export function quote(value: string): string {
  // deno-lint-ignore no-control-regex
  const printable = value.replace(/[\u0000-\u001f\u007f]/g, "");
  return `'${printable.length > 100 ? printable.slice(0, 100) + "…" : printable}'`;
}
