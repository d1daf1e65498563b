/**
 * The append-only audit log: one JSON line per publish, replace and delete,
 * with who did it (the token's or trusted publisher's name and, for a
 * publisher, the CI run; never a token).
 *
 * @module
 */

/** One audited event. */
export interface AuditEvent {
  /** What happened. */
  action: "publish" | "replace" | "delete";
  /** Subdir of the package. */
  subdir: string;
  /** Package filename. */
  filename: string;
  /** The channel, when the server holds several. */
  channel?: string;
  /** Who did it: the token's name (or short id) or the trusted publisher's name. */
  by: string;
  /** For a trusted publisher: the CI run's repository. */
  ci_repository?: string;
  /** For a trusted publisher: the CI run's id. */
  ci_run_id?: string;
  /** For a trusted publisher: the CI run's workflow. */
  ci_workflow?: string;
  /** File size, for publish and replace. */
  size?: number;
  /** sha256 of the file, for publish and replace. */
  sha256?: string;
}

/** Appends audit events to a file, one JSON line each, in order. */
export class AuditLog {
  readonly #path: string;
  #tail: Promise<void> = Promise.resolve();

  /** Events are appended to the file at `path`, created if missing. */
  constructor(path: string) {
    this.#path = path;
  }

  /** Checks that the file can be opened for appending (at start-up). */
  async check(): Promise<void> {
    using _file = await Deno.open(this.#path, { append: true, create: true, mode: 0o640 });
  }

  /** Appends one event; resolves once the line is written and synced. */
  record(event: AuditEvent): Promise<void> {
    const line = JSON.stringify({ time: new Date().toISOString(), ...event }) + "\n";
    const write = this.#tail.then(async () => {
      using file = await Deno.open(this.#path, { append: true, create: true, mode: 0o640 });
      const bytes = new TextEncoder().encode(line);
      let written = 0;
      while (written < bytes.length) written += await file.write(bytes.subarray(written));
      await file.syncData();
    });
    this.#tail = write.catch(() => {});
    return write;
  }
}
