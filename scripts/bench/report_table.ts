/**
 * The benchmark's one table: a row per measurement with what was measured,
 * our figure, the reference figure measured in the same run, their ratio,
 * the target and whether it was met; rendered as markdown.
 *
 * @module
 */

/** One measurement. */
export interface BenchRow {
  /** What was measured, e.g. "upload 2 GiB .conda, MB/s". */
  what: string;
  /** Our figure, formatted. */
  ours: string;
  /** The reference figure, formatted ("—" when there is none). */
  reference: string;
  /** ours ÷ reference (or the row's own ratio), formatted ("—" when there is none). */
  ratio: string;
  /** The target, formatted ("—" for information only). */
  target: string;
  /** Whether the target was met; undefined for a row without a target. */
  met: boolean | undefined;
}

/** Machine facts and run counts printed above the table. */
export interface BenchHeader {
  /** Title line. */
  title: string;
  /** `key: value` facts, in order. */
  facts: [string, string][];
  /** Notes printed under the table. */
  notes: string[];
}

/**
 * Renders the header, the table and the notes as markdown.
 *
 * @example Usage
 * ```ts
 * import { renderMarkdown } from "./report_table.ts";
 * const text = renderMarkdown({ title: "Bench", facts: [["nproc", "2"]], notes: [] }, [
 *   { what: "x", ours: "1", reference: "2", ratio: "50 %", target: "≥ 40 %", met: true },
 * ]);
 * console.log(text.includes("| x | 1 | 2 | 50 % | ≥ 40 % | yes |")); // true
 * ```
 */
export function renderMarkdown(header: BenchHeader, rows: readonly BenchRow[]): string {
  const lines = [`# ${header.title}`, ""];
  for (const [key, value] of header.facts) lines.push(`- ${key}: ${value}`);
  lines.push("", "| what | ours | reference | ratio | target | met? |");
  lines.push("| --- | ---: | ---: | ---: | --- | --- |");
  for (const row of rows) {
    const met = row.met === undefined ? "—" : row.met ? "yes" : "**NO**";
    const cells = [row.what, row.ours, row.reference, row.ratio, row.target, met];
    lines.push(`| ${cells.map(_cell).join(" | ")} |`);
  }
  if (header.notes.length > 0) {
    lines.push("");
    for (const note of header.notes) lines.push(`- ${note}`);
  }
  return lines.join("\n") + "\n";
}

function _cell(text: string): string {
  return text.replaceAll("|", "\\|").replaceAll("\n", " ");
}

/** Formats a ratio as a percentage, e.g. `71 %`. */
export function percent(ratio: number): string {
  return `${Math.round(ratio * 100)} %`;
}

/** Formats a ratio as a factor, e.g. `×1.9`. */
export function times(ratio: number): string {
  return `×${ratio < 10 ? ratio.toFixed(2) : ratio.toFixed(1)}`;
}

/** Formats a number with a few significant digits and a unit, e.g. `12.3 ms`. */
export function figure(value: number, unit: string): string {
  const digits = Math.abs(value) >= 100 ? 0 : Math.abs(value) >= 10 ? 1 : 2;
  return `${value.toFixed(digits)} ${unit}`;
}
