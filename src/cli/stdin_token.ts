/**
 * Reads a token from standard input, so that it never lands in shell
 * history or the process list.
 *
 * @module
 */

/** Reads standard input to its end (at most 64 KiB) and returns the first line, trimmed. */
export async function readStdinToken(): Promise<string> {
  if (Deno.stdin.isTerminal()) {
    console.error("Token (input hidden is not supported; end with Enter, then Ctrl-D):");
  }
  const chunks: Uint8Array[] = [];
  let total = 0;
  for await (const chunk of Deno.stdin.readable) {
    chunks.push(chunk);
    total += chunk.byteLength;
    if (total > 65536) break;
  }
  const bytes = new Uint8Array(total);
  let offset = 0;
  for (const chunk of chunks) {
    bytes.set(chunk.subarray(0, total - offset), offset);
    offset += chunk.byteLength;
  }
  return new TextDecoder().decode(bytes).split(/\r?\n/)[0]!.trim();
}
