/**
 * Structured logging: one line per event, as text or as JSON lines.
 * Never pass a secret in `fields`.
 *
 * @module
 */

/** Severity of a log line. */
export type LogLevel = "debug" | "info" | "warn" | "error";
/** Output format of a log line. */
export type LogFormat = "text" | "json";
/** Extra key/values of a log line. */
export type LogFields = Record<string, string | number | boolean | undefined>;

/** Where log lines go. */
export interface Logger {
  /** Logs one line at `level`. */
  log(level: LogLevel, message: string, fields?: LogFields): void;
  /** Logs at info. */
  info(message: string, fields?: LogFields): void;
  /** Logs at warn. */
  warn(message: string, fields?: LogFields): void;
  /** Logs at error. */
  error(message: string, fields?: LogFields): void;
}

/** Options for {@linkcode createLogger}. */
export interface LoggerOptions {
  /**
   * Line format.
   * @default {"text"}
   */
  format?: LogFormat;
  /**
   * Where lines are written.
   * @default {console.error}
   */
  write?: (line: string) => void;
  /**
   * Drop lines below this level.
   * @default {"info"}
   */
  level?: LogLevel;
}

const LEVEL_RANK: Record<LogLevel, number> = { debug: 0, info: 1, warn: 2, error: 3 };

/** Creates a logger writing text (`key=value`) or JSON lines. */
export function createLogger(options: LoggerOptions = {}): Logger {
  const format = options.format ?? "text";
  const write = options.write ?? ((line: string) => console.error(line));
  const minimum = LEVEL_RANK[options.level ?? "info"];
  const log = (level: LogLevel, message: string, fields: LogFields = {}) => {
    if (LEVEL_RANK[level] < minimum) return;
    const time = new Date().toISOString();
    if (format === "json") {
      write(JSON.stringify({ time, level, msg: message, ...fields }));
      return;
    }
    const pairs = Object.entries(fields)
      .filter(([, value]) => value !== undefined)
      .map(([key, value]) => `${key}=${formatValue(value)}`);
    write([time, level.toUpperCase(), message, ...pairs].join(" "));
  };
  return {
    log,
    info: (message, fields) => log("info", message, fields),
    warn: (message, fields) => log("warn", message, fields),
    error: (message, fields) => log("error", message, fields),
  };
}

/** A logger that drops everything (for library use without output). */
export const silentLogger: Logger = createLogger({ write: () => {} });

function formatValue(value: string | number | boolean | undefined): string {
  const text = String(value);
  return /^[\w.:/@+-]*$/.test(text) && text !== "" ? text : JSON.stringify(text);
}
