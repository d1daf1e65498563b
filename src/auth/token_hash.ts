/**
 * Token hashing, compatible with the original Python tool: the hash of a
 * token is the hex sha256 of `salt + token`.
 *
 * @module
 */

/** The original tool's salt; existing token hashes were made with it. */
export const DEFAULT_SALT = "42679ad04d44c96ed27470c02bfb28c3";

const HEX_SHA256 = /^[0-9a-f]{64}$/;

/**
 * Returns the hex sha256 of `salt + token`, as the original tool computed it.
 *
 * @example Usage
 * ```ts
 * import { hashToken } from "./token_hash.ts";
 * const hash = await hashToken("mysecuretoken");
 * console.log(hash.length); // 64
 * ```
 */
export async function hashToken(token: string, salt: string = DEFAULT_SALT): Promise<string> {
  return toHex(await sha256(salt + token));
}

/** Whether `value` is a well-formed token hash (64 lowercase or uppercase hex digits). */
export function isTokenHash(value: string): boolean {
  return HEX_SHA256.test(value.toLowerCase());
}

/** Returns a new random token: 32 bytes of CSPRNG output as URL-safe base64. */
export function generateToken(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(32));
  return btoa(String.fromCharCode(...bytes)).replaceAll("+", "-").replaceAll("/", "_")
    .replaceAll("=", "");
}

/** The sha256 of a UTF-8 string, by WebCrypto. */
export async function sha256(text: string): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text)));
}

/** Lowercase hex of bytes. */
export function toHex(bytes: Uint8Array): string {
  let hex = "";
  for (const byte of bytes) hex += byte.toString(16).padStart(2, "0");
  return hex;
}

/** Bytes of a hex string (which must be well-formed). */
export function fromHex(hex: string): Uint8Array {
  const bytes = new Uint8Array(hex.length / 2);
  for (let i = 0; i < bytes.length; i++) bytes[i] = parseInt(hex.slice(i * 2, i * 2 + 2), 16);
  return bytes;
}
