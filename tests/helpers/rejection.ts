/** What a promise rejects with, for tests that then check the error itself. */

/** Awaits `promise` and returns what it rejected with; undefined when it resolved. */
export async function rejectionOf(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  return undefined;
}
