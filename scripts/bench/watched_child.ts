/**
 * A benchmark server's child process with its end watched, and the one way
 * such a child is stopped: a polite signal, then SIGKILL after a grace time.
 *
 * @module
 */

/** A spawned child whose end is watched. */
export interface WatchedChild {
  /** True once the child has ended. */
  readonly exited: boolean;
  /** The child's exit status (resolves when it ends). */
  readonly status: Promise<Deno.CommandStatus>;
  /**
   * Sends `signal` (unless the child already ended), sends SIGKILL if it
   * has not ended `graceMs` later, and resolves once it has ended.
   */
  stop(signal: Deno.Signal, graceMs: number): Promise<void>;
}

/** Starts watching `child`'s end. */
export function watchChild(child: Deno.ChildProcess): WatchedChild {
  let exited = false;
  const status = child.status.then((status) => {
    exited = true;
    return status;
  });
  const kill = (signal: Deno.Signal) => {
    if (exited) return;
    try {
      child.kill(signal);
    } catch {
      // exited meanwhile
    }
  };
  return {
    get exited() {
      return exited;
    },
    status,
    async stop(signal, graceMs) {
      kill(signal);
      const timer = setTimeout(() => kill("SIGKILL"), graceMs);
      await status;
      clearTimeout(timer);
    },
  };
}
