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
   * @default {stderr, batched: see {@linkcode writeStderrLine}}
   */
  write?: (line: string, level: LogLevel) => void;
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
  const write = options.write ??
    ((line: string, level: LogLevel) =>
      writeStderrLine(line, level !== "debug" && level !== "info"));
  const minimum = LEVEL_RANK[options.level ?? "info"];
  const log = (level: LogLevel, message: string, fields: LogFields = {}) => {
    if (LEVEL_RANK[level] < minimum) return;
    const time = new Date().toISOString();
    if (format === "json") {
      write(JSON.stringify({ time, level, msg: message, ...fields }), level);
      return;
    }
    let line = `${time} ${LEVEL_TEXT[level]} ${message}`;
    for (const key in fields) {
      const value = fields[key];
      if (value !== undefined) line += ` ${key}=${formatValue(value)}`;
    }
    write(line, level);
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
let _flushTimer: ReturnType<typeof setTimeout> | undefined;
/** Most lines held before they are written at once. */
const _MAX_PENDING_LINES = 512;
const _ENCODER = new TextEncoder();

/**
 * Writes `line` to stderr. Lines are gathered and written together about
 * once a millisecond (a busy server logs a line per request, and a write
 * per line cost more than answering a small file); `urgent` lines (warnings
 * and errors) are written at once, after the lines before them. What is
 * still held is written when the process exits (`Deno.exit` included).
 */
export function writeStderrLine(line: string, urgent = false): void {
  _pending.push(line);
  if (urgent || _pending.length >= _MAX_PENDING_LINES) {
    flushStderrLines();
    return;
  }
  if (_flushTimer === undefined) {
    const timer = setTimeout(flushStderrLines, 0);
    // The timer alone does not keep the process running: "unload" writes what is left.
    Deno.unrefTimer(timer);
    _flushTimer = timer;
  }
}

/** Writes the lines held by {@linkcode writeStderrLine} now. */
export function flushStderrLines(): void {
  if (_flushTimer !== undefined) {
    clearTimeout(_flushTimer);
    _flushTimer = undefined;
  }
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

globalThis.addEventListener("unload", flushStderrLines);
