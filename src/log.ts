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
   * @default {stderr (see {@linkcode writeStderrLine})}
   */
  write?: (line: string) => void;
  /**
   * Drop lines below this level.
   * @default {"info"}
   */
  level?: LogLevel;
}

const LEVEL_RANK: Record<LogLevel, number> = { debug: 0, info: 1, warn: 2, error: 3 };
const LEVEL_TEXT: Record<LogLevel, string> = {
  debug: "DEBUG",
  info: "INFO",
  warn: "WARN",
  error: "ERROR",
};

/** Creates a logger writing text (`key=value`) or JSON lines. */
export function createLogger(options: LoggerOptions = {}): Logger {
  const format = options.format ?? "text";
  const write = options.write ?? writeStderrLine;
  const minimum = LEVEL_RANK[options.level ?? "info"];
  const log = (level: LogLevel, message: string, fields: LogFields = {}) => {
    if (LEVEL_RANK[level] < minimum) return;
    const time = new Date().toISOString();
    if (format === "json") {
      write(JSON.stringify({ time, level, msg: message, ...fields }));
      return;
    }
    let line = `${time} ${LEVEL_TEXT[level]} ${message}`;
    for (const key in fields) {
      const value = fields[key];
      if (value !== undefined) line += ` ${key}=${formatValue(value)}`;
    }
    write(line);
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

/** Lines waiting for the next write to stderr. */
let _pending: string[] = [];
const _ENCODER = new TextEncoder();

/**
 * Writes `line` to stderr: with the other lines logged in the same turn of
 * the event loop, in one write, before anything queued after it runs (a
 * request's line is out before its response is sent).
 */
export function writeStderrLine(line: string): void {
  _pending.push(line);
  if (_pending.length === 1) queueMicrotask(flushStderrLines);
}

/** Writes the lines held by {@linkcode writeStderrLine} now. */
export function flushStderrLines(): void {
  if (_pending.length === 0) return;
  const bytes = _ENCODER.encode(_pending.join("\n") + "\n");
  _pending = [];
  let written = 0;
  try {
    while (written < bytes.length) written += Deno.stderr.writeSync(bytes.subarray(written));
  } catch {
    // stderr is gone (a closed pipe): the lines cannot be written anywhere.
  }
}

// Deno.exit() runs no further microtasks, but "unload" listeners.
globalThis.addEventListener("unload", flushStderrLines);
