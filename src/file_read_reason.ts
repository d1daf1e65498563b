/**
 * The one wording for why a file could not be read, used in the
 * "Cannot read <what> <path>: <reason>" errors of start-up and reloads.
 *
 * @module
 */

/** "no such file", "permission denied", or the error's own message. */
export function fileReadReason(error: unknown): string {
  if (error instanceof Deno.errors.NotFound) return "no such file";
  if (error instanceof Deno.errors.PermissionDenied) return "permission denied";
  return error instanceof Error ? error.message : String(error);
}
