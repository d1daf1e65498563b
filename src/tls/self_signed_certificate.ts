/**
 * A self-signed TLS certificate made in process (WebCrypto keys and an X.509
 * builder), for the development server and for tests. No openssl needed.
 *
 * @module
 */

import "reflect-metadata";
import * as x509 from "@peculiar/x509";

/** A server certificate, its private key and the CA that signed it, PEM encoded. */
export interface PemKeyPair {
  /** The server certificate. */
  cert: string;
  /** The server's PKCS#8 private key. */
  key: string;
  /** The throw-away CA certificate that clients trust (`curl --cacert`). */
  ca: string;
}

/** Options for {@linkcode createSelfSignedCertificate}. */
export interface SelfSignedOptions {
  /**
   * DNS names and IP addresses the certificate is valid for.
   * @default {["localhost", "127.0.0.1", "::1"]}
   */
  hosts?: string[];
  /**
   * Days of validity from now.
   * @default {30}
   */
  days?: number;
}

const ALGORITHM = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" } as const;

/**
 * Creates a throw-away CA and a server certificate signed by it (TLS
 * libraries refuse a CA certificate used as the server's own), each with a
 * fresh ECDSA P-256 key. The CA key is discarded.
 */
export async function createSelfSignedCertificate(
  options: SelfSignedOptions = {},
): Promise<PemKeyPair> {
  x509.cryptoProvider.set(crypto);
  const hosts = options.hosts ?? ["localhost", "127.0.0.1", "::1"];
  const notBefore = new Date(Date.now() - 60_000);
  const notAfter = new Date(Date.now() + (options.days ?? 30) * 86_400_000);
  const caKeys = await crypto.subtle.generateKey(ALGORITHM, true, ["sign", "verify"]);
  const serverKeys = await crypto.subtle.generateKey(ALGORITHM, true, ["sign", "verify"]);
  const caName = "CN=artifact-upload-handler development CA";
  const ca = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: randomSerial(),
    name: caName,
    notBefore,
    notAfter,
    keys: caKeys,
    signingAlgorithm: ALGORITHM,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(
        x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign,
        true,
      ),
    ],
  });
  const server = await x509.X509CertificateGenerator.create({
    serialNumber: randomSerial(),
    subject: `CN=${hosts[0] ?? "localhost"}`,
    issuer: caName,
    notBefore,
    notAfter,
    publicKey: serverKeys.publicKey,
    signingKey: caKeys.privateKey,
    signingAlgorithm: ALGORITHM,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
      new x509.SubjectAlternativeNameExtension(
        hosts.map((host): x509.JsonGeneralName =>
          /^[\d.]+$|:/.test(host) ? { type: "ip", value: host } : { type: "dns", value: host }
        ),
      ),
    ],
  });
  const pkcs8 = await crypto.subtle.exportKey("pkcs8", serverKeys.privateKey);
  return {
    cert: server.toString("pem"),
    key: x509.PemConverter.encode(pkcs8, "PRIVATE KEY"),
    ca: ca.toString("pem"),
  };
}

function randomSerial(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[0] = bytes[0]! & 0x7f | 0x01;
  return Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");
}
