/**
 * The append-only audit log: one JSON line per publish, replace and delete,
 * with who did it (a short token id, never the token).
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
  /** Who did it (a short token id). */
  by: string;
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
