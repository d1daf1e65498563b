/**
 * The human-readable `<subdir>/index.html` listing of a subdir's packages.
 * Each package's table row is rendered once and cached, so a listing is a
 * join of cached rows.
 *
 * @module
 */

import type { JsonObject } from "../package/package_metadata.ts";
import { concatBytes } from "../concat_bytes.ts";

/**
 * Escapes text for use in HTML content and quoted attribute values.
 *
 * @example Usage
 * ```ts
 * import { escapeHtml } from "./subdir_index_html.ts";
 * console.log(escapeHtml(`<a href="x">&</a>`)); // &lt;a href=&quot;x&quot;&gt;&amp;&lt;/a&gt;
 * ```
 */
export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (char) => _ENTITIES[char] ?? char);
}

const _ENTITIES: Record<string, string> = {
  "&": "&amp;",
  "<": "&lt;",
  ">": "&gt;",
  '"': "&quot;",
  "'": "&#39;",
};

/**
 * Formats a byte count for people, e.g. `1.5 MB`.
 *
 * @example Usage
 * ```ts
 * import { humanBytes } from "./subdir_index_html.ts";
 * console.log(humanBytes(1536)); // "1.5 KB"
 * ```
 */
export function humanBytes(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  const units = ["KB", "MB", "GB", "TB"];
  let value = bytes / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value.toFixed(1)} ${units[unit]}`;
}

/** The `<tr>` of one package in a subdir listing. */
export function packageRowHtml(filename: string, record: JsonObject): string {
  const size = typeof record.size === "number" ? record.size : 0;
  const sha256 = typeof record.sha256 === "string" ? record.sha256 : "";
  const version = typeof record.version === "string" ? record.version : "";
  return `<tr><td><a href="${escapeHtml(encodeURIComponent(filename))}">${
    escapeHtml(filename)
  }</a></td><td class="size" title="${size}">${humanBytes(size)}</td><td>${
    escapeHtml(version)
  }</td><td title="${escapeHtml(sha256)}"><code>${
    escapeHtml(sha256.slice(0, 12))
  }</code></td></tr>`;
}

/**
 * Renders a subdir listing around UTF-8 blocks of package rows (each row
 * made by {@linkcode packageRowHtml} and ended by a newline), in the order
 * given.
 *
 * @example Usage
 * ```ts
 * import { packageRowHtml, renderSubdirIndexHtml } from "./subdir_index_html.ts";
 * const row = packageRowHtml("foo-1.0-0.conda", { version: "1.0", size: 10, sha256: "ab" });
 * const html = renderSubdirIndexHtml("noarch", [new TextEncoder().encode(row + "\n")]);
 * console.log(new TextDecoder().decode(html).includes("foo-1.0-0.conda")); // true
 * ```
 */
export function renderSubdirIndexHtml(subdir: string, rows: readonly Uint8Array[]): Uint8Array {
  const title = escapeHtml(subdir);
  const head = [
    "<!DOCTYPE html>",
    '<html lang="en">',
    "<head>",
    '<meta charset="utf-8">',
    `<title>${title}</title>`,
    "<style>body{font-family:sans-serif}td,th{padding:2px 8px;text-align:left}" +
    "td.size{text-align:right}</style>",
    "</head>",
    "<body>",
    `<h1>${title}</h1>`,
    '<p><a href="repodata.json">repodata.json</a> · ' +
    '<a href="repodata.json.zst">repodata.json.zst</a></p>',
    "<table>",
    "<thead><tr><th>Filename</th><th>Size</th><th>Version</th><th>SHA256</th></tr></thead>",
    "<tbody>",
    "",
  ].join("\n");
  const tail = ["</tbody>", "</table>", "</body>", "</html>", ""].join("\n");
  const encoder = new TextEncoder();
  return concatBytes([encoder.encode(head), ...rows, encoder.encode(tail)]);
}
