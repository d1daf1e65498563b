/**
 * Reads the few flat XML answers of the S3 API that the object store uses
 * (`ListBucketResult`, `InitiateMultipartUploadResult`, `Error`). Their
 * elements hold text only and never nest an element in one of the same name,
 * so a scan for `<Tag>...</Tag>` with the five XML entities and numeric
 * character references decoded reads them exactly. Keys are asked for with
 * `encoding-type=url`, so no key needs more.
 *
 * @module
 */

const ENTITIES: Record<string, string> = {
  amp: "&",
  lt: "<",
  gt: ">",
  quot: '"',
  apos: "'",
};

/** Decodes XML character data: the five named entities and `&#NN;` / `&#xNN;`. */
export function decodeXmlText(text: string): string {
  return text.replaceAll(/&(#x[0-9a-f]+|#\d+|[a-z]+);/gi, (whole, name: string) => {
    if (name.startsWith("#x") || name.startsWith("#X")) {
      return String.fromCodePoint(parseInt(name.slice(2), 16));
    }
    if (name.startsWith("#")) return String.fromCodePoint(parseInt(name.slice(1), 10));
    return ENTITIES[name] ?? whole;
  });
}

/** The raw contents of every `<tag>...</tag>` element, in document order. */
export function xmlElements(xml: string, tag: string): string[] {
  const pattern = new RegExp(`<${tag}(?:\\s[^>]*)?>([\\s\\S]*?)</${tag}>`, "g");
  return [...xml.matchAll(pattern)].map((match) => match[1] ?? "");
}

/** The decoded text of the first `<tag>` element, or undefined. */
export function xmlText(xml: string, tag: string): string | undefined {
  const raw = xmlElements(xml, tag)[0];
  return raw === undefined ? undefined : decodeXmlText(raw);
}
