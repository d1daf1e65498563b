/**
 * A stand-in for `src/package/bzip2_worker.ts` that misbehaves on request,
 * for the pool's failure tests: the first byte of the request's file says
 * what it does. 0x01: throws (an uncaught error in the worker); 0x02: closes
 * itself without answering; 0x03: never answers (a busy loop); anything
 * else: answers "not verified" with this worker's own id, so that a test can
 * tell workers apart.
 *
 * @module
 */

const id = crypto.randomUUID();
const scope = globalThis as unknown as {
  onmessage: (event: MessageEvent<{ bytes: Uint8Array }>) => void;
  postMessage(message: unknown): void;
  close(): void;
};

scope.onmessage = (event) => {
  switch (event.data.bytes[0]) {
    case 0x01:
      throw new Error("faulty worker asked to throw\nsecond line");
    case 0x02:
      scope.close();
      break;
    case 0x03:
      for (;;) {
        // a decoder that never returns
      }
    default:
      scope.postMessage({ verified: false, reason: `worker ${id}`, heapBytes: 0 });
  }
};
