/**
 * Installs the Debian packages a benchmark section runs (`nginx`, `wrk`)
 * when their programs are missing, with `apt-get` (as root, or through
 * `sudo`), so that a clean machine can run `deno task bench` as is.
 *
 * @module
 */

/** A program and the Debian package that ships it. */
export interface DebianTool {
  /** Program name looked up on `PATH` (or `/usr/sbin`). */
  program: string;
  /** Debian package name. */
  debianPackage: string;
}

/** Absolute path of `program`, or undefined when it is not installed. */
export async function findProgram(program: string): Promise<string | undefined> {
  const path = Deno.env.get("PATH") ?? "";
  for (const directory of [...path.split(":"), "/usr/sbin", "/sbin"]) {
    if (directory === "") continue;
    const candidate = `${directory}/${program}`;
    const info = await Deno.stat(candidate).catch(() => undefined);
    if (info?.isFile && ((info.mode ?? 0) & 0o111) !== 0) return candidate;
  }
  return undefined;
}

/**
 * Returns the absolute path of every tool's program, installing the missing
 * ones first with `apt-get install -y --no-install-recommends`. Throws with
 * the tail of apt-get's output when that fails.
 */
export async function ensureDebianTools(
  tools: readonly DebianTool[],
  progress: (message: string) => void,
): Promise<Record<string, string>> {
  const missing: DebianTool[] = [];
  for (const tool of tools) {
    if (await findProgram(tool.program) === undefined) missing.push(tool);
  }
  if (missing.length > 0) {
    const packages = missing.map((tool) => tool.debianPackage);
    progress(`installing ${packages.join(", ")} with apt-get`);
    const root = Deno.uid() === 0;
    const run = async (args: string[]) => {
      const command = root ? args : ["sudo", "-n", ...args];
      const output = await new Deno.Command(command[0]!, {
        args: command.slice(1),
        // Never start the package's service: the benchmark starts its own.
        env: { DEBIAN_FRONTEND: "noninteractive", RUNLEVEL: "1" },
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
        signal: AbortSignal.timeout(600_000),
      }).output();
      if (!output.success) {
        const text = new TextDecoder().decode(output.stderr) +
          new TextDecoder().decode(output.stdout);
        throw new Error(
          `Cannot install ${packages.join(", ")}: ${args.join(" ")} failed: ${
            text.trim().split("\n").slice(-5).join(" / ")
          }`,
        );
      }
    };
    await run(["apt-get", "update", "-q"]);
    await run(["apt-get", "install", "-y", "-q", "--no-install-recommends", ...packages]);
  }
  const paths: Record<string, string> = {};
  for (const tool of tools) {
    const path = await findProgram(tool.program);
    if (path === undefined) {
      throw new Error(`Cannot find ${tool.program} after installing ${tool.debianPackage}`);
    }
    paths[tool.program] = path;
  }
  return paths;
}
