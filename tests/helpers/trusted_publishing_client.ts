/**
 * Trusted publishing as rattler-build and pixi do it (rattler's
 * `rattler_upload` trusted publishing): ask the GitHub Actions runtime for an
 * ID token of an audience (`prefix.dev` in older releases, the server's host
 * name in newer ones), `POST {"token": "<JWT>"}` as JSON to
 * `<server>/api/oidc/mint_token`, and take the whole response body as the
 * upload token for `Authorization: Bearer`.
 *
 * @module
 */

/** The two variables a GitHub Actions job with `id-token: write` gets. */
export interface ActionsIdTokenEnv {
  ACTIONS_ID_TOKEN_REQUEST_URL: string;
  ACTIONS_ID_TOKEN_REQUEST_TOKEN: string;
}

/** Request 1: the job's ID token for `audience`, as rattler asks for it. */
export async function actionsIdToken(
  env: ActionsIdTokenEnv,
  audience: string,
  fetcher: typeof fetch,
): Promise<string> {
  const url = new URL(env.ACTIONS_ID_TOKEN_REQUEST_URL);
  url.searchParams.append("audience", audience);
  const response = await fetcher(url, {
    headers: { authorization: `bearer ${env.ACTIONS_ID_TOKEN_REQUEST_TOKEN}` },
  });
  if (!response.ok) {
    throw new Error(`Cannot get an ID token: ${response.status} ${await response.text()}`);
  }
  const { value } = await response.json() as { value: string };
  return value;
}

/** What the server answered to the mint request. */
export interface MintAnswer {
  /** HTTP status. */
  status: number;
  /** The whole body: the upload token on success, the reason otherwise. */
  body: string;
  /** Content type of the answer. */
  contentType: string | null;
}

/** Request 2: exchange the ID token at `<server>/api/oidc/mint_token`, as rattler does. */
export async function postMintToken(
  serverUrl: string,
  idToken: string,
  fetcher: typeof fetch,
): Promise<MintAnswer> {
  // rattler joins "/api/oidc/mint_token" onto the server URL: the path is absolute
  const response = await fetcher(new URL("/api/oidc/mint_token", serverUrl), {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ token: idToken }),
  });
  return {
    status: response.status,
    body: await response.text(),
    contentType: response.headers.get("content-type"),
  };
}
