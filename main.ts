/**
 * artifact-upload-handler: parse the command line, run it, exit with a code.
 * Everything else lives in `src/`.
 *
 * @module
 */

import { generateToken, hashToken } from "./src/auth/token_hash.ts";
import { type Command, helpText, parseCommandLine, UsageError } from "./src/cli/command_line.ts";
import { readStdinToken } from "./src/cli/stdin_token.ts";
import { ConfigError, resolveServerConfig } from "./src/config.ts";
import { startApplication } from "./src/app.ts";
import { runIndexCommand } from "./src/cli/index_command.ts";
import { createLogger } from "./src/log.ts";
import { VERSION } from "./src/version.ts";

async function run(command: Command): Promise<number> {
  switch (command.kind) {
    case "help":
      console.log(helpText(VERSION));
      return 0;
    case "version":
      console.log(`artifact-upload-handler ${VERSION}`);
      return 0;
    case "hash-token": {
      const token = command.token ?? await readStdinToken();
      if (token === "") throw new UsageError("hash-token needs a TOKEN (argument or stdin)");
      console.log(await hashToken(token, command.salt));
      return 0;
    }
    case "generate-token": {
      const token = generateToken();
      console.log(`token:      ${token}`);
      console.log(`token hash: ${await hashToken(token, command.salt)}`);
      return 0;
    }
    case "index": {
      const logger = createLogger();
      const report = await runIndexCommand(
        command.root,
        command.condaExe,
        logger,
        command.storage,
      );
      return report.failed.length > 0 ? 3 : 0;
    }
    case "serve": {
      // Loaded only for --dev: the X.509 builder costs memory a production server does not need.
      const developmentModule = command.flags.dev
        ? await import("./src/cli/development.ts")
        : undefined;
      const development = await developmentModule?.prepareDevelopment(command.flags);
      const config = await resolveServerConfig(development?.flags ?? command.flags);
      const logger = createLogger({ format: config.logFormat });
      const server = await startApplication(
        config,
        development ? { logger, tls: development.tls } : { logger },
      );
      if (development) developmentModule?.printDevelopmentBanner(server.url, development);
      const stop = () => {
        logger.info("shutting down: no new uploads; waiting for running ones", {
          deadline_s: config.shutdownMs / 1000,
        });
        server.shutdown();
      };
      Deno.addSignalListener("SIGINT", stop);
      Deno.addSignalListener("SIGTERM", stop);
      if (Deno.build.os !== "windows") {
        Deno.addSignalListener("SIGHUP", () => server.reload());
      }
      await server.finished;
      logger.info("stopped");
      return 0;
    }
  }
}

if (import.meta.main) {
  let code: number;
  try {
    code = await run(parseCommandLine(Deno.args, Deno.env.toObject()));
  } catch (error) {
    if (error instanceof UsageError) {
      console.error(`artifact-upload-handler: ${error.message} (see --help)`);
      code = 2;
    } else if (error instanceof ConfigError) {
      console.error(`artifact-upload-handler: ${error.message}`);
      code = 1;
    } else {
      console.error(
        `artifact-upload-handler: ${error instanceof Error ? error.message : String(error)}`,
      );
      code = 1;
    }
  }
  Deno.exit(code);
}
