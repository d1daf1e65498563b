/** A temporary directory for one test, removed at the end of its scope. */

/** A temporary directory; `await using` removes it (even if a test made it read-only). */
export interface TempDir extends AsyncDisposable {
  path: string;
}

/** Makes a new temporary directory named after `prefix`. */
export async function tempDir(prefix: string): Promise<TempDir> {
  const path = await Deno.makeTempDir({ prefix });
  return {
    path,
    async [Symbol.asyncDispose]() {
      await Deno.chmod(path, 0o755).catch(() => {});
      await Deno.remove(path, { recursive: true });
    },
  };
}
