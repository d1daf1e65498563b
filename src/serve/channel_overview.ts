/**
 * The HTML page answered at the channel root: the channel's name, its
 * subdirs and the command lines that install from it.
 *
 * @module
 */

import type { ChannelStore } from "../storage/channel_store.ts";
import { isKnownSubdir, isSubdirName } from "../package/platforms.ts";

/** Options for {@linkcode renderChannelOverview}. */
export interface ChannelOverviewOptions {
  /**
   * Name shown as the page title.
   * @default {the basename of the channel root}
   */
  channelName?: string;
}

interface SubdirSummary {
  name: string;
  hasIndexHtml: boolean;
  repodata: { size: number; mtimeMs: number } | undefined;
}

/**
 * Renders the overview page of the channel in `storage`, reachable at
 * `channelUrl`: every known subdir present (with links to its `index.html`
 * and `repodata.json` when they exist) and the `conda`, `mamba` and `pixi`
 * command lines that use the channel. Everything interpolated is
 * HTML-escaped.
 */
export async function renderChannelOverview(
  storage: ChannelStore,
  channelUrl: string,
  options: ChannelOverviewOptions = {},
): Promise<string> {
  const name = options.channelName ?? basename(storage.root);
  const subdirs: SubdirSummary[] = [];
  for (const subdir of await storage.listDirectories()) {
    // A new subdir name counts once the index has written it.
    const indexed = isSubdirName(subdir) && await storage.stat(`${subdir}/repodata.json`);
    if (!isKnownSubdir(subdir) && !indexed) continue;
    const [indexHtml, repodata] = await Promise.all([
      storage.stat(`${subdir}/index.html`),
      storage.stat(`${subdir}/repodata.json`),
    ]);
    subdirs.push({ name: subdir, hasIndexHtml: indexHtml !== undefined, repodata });
  }
  return page(name, channelUrl, subdirs);
}

function page(name: string, channelUrl: string, subdirs: SubdirSummary[]): string {
  const url = escapeHtml(channelUrl);
  const rows = subdirs.map((subdir) => {
    const href = escapeHtml(encodeURIComponent(subdir.name));
    const label = escapeHtml(subdir.name);
    const title = subdir.hasIndexHtml ? `<a href="${href}/">${label}</a>` : label;
    const repodata = subdir.repodata
      ? `<a href="${href}/repodata.json">repodata.json</a> (${
        formatSize(subdir.repodata.size)
      }, updated ${escapeHtml(new Date(subdir.repodata.mtimeMs).toISOString())})`
      : "no repodata.json yet";
    return `      <li>${title}: ${repodata}</li>`;
  });
  const list = rows.length > 0
    ? `    <ul>\n${rows.join("\n")}\n    </ul>`
    : "    <p>No packages have been published yet.</p>";
  return `<!DOCTYPE html>
<html lang="en">
  <head>
    <meta charset="utf-8">
    <meta name="viewport" content="width=device-width, initial-scale=1">
    <title>${escapeHtml(name)} conda channel</title>
    <style>
      body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 52rem; padding: 0 1rem; }
      pre { background: #f4f4f4; padding: 0.75rem; overflow-x: auto; }
    </style>
  </head>
  <body>
    <h1>${escapeHtml(name)}</h1>
    <p>A conda channel at <code>${url}</code>.</p>
    <h2>Subdirs</h2>
${list}
    <h2>Use this channel</h2>
    <p>conda:</p>
    <pre>conda install -c ${url} &lt;package&gt;</pre>
    <p>mamba:</p>
    <pre>mamba install -c ${url} &lt;package&gt;</pre>
    <p>pixi (add the channel to the workspace, then the package):</p>
    <pre>pixi workspace channel add ${url}
pixi add &lt;package&gt;</pre>
    <p>pixi global:</p>
    <pre>pixi global install --channel ${url} &lt;package&gt;</pre>
  </body>
</html>
`;
}

const HTML_ESCAPES: Record<string, string> = {
  "&": "&amp;",
  "<": "&lt;",
  ">": "&gt;",
  '"': "&quot;",
  "'": "&#39;",
};

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (character) => HTML_ESCAPES[character] ?? character);
}

function formatSize(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KiB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

function basename(path: string): string {
  const trimmed = path.replace(/\/+$/, "");
  return trimmed.slice(trimmed.lastIndexOf("/") + 1) || trimmed;
}
