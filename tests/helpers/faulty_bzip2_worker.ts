/**
 * A stand-in for `src/package/bzip2_worker.ts` that misbehaves on request,
 * for the pool's failure tests: the first byte of the request's file says
 * what it does. 0x01: throws (an uncaught error in the worker); 0x02: exits
 * the thread; 0x03: never answers (a busy loop); anything else: answers
 * "not verified" with its thread id, so a test can tell workers apart.
 *
 * @module
 */

import { parentPort, threadId } from "node:worker_threads";

parentPort?.on("message", (request: { bytes: Uint8Array }) => {
  switch (request.bytes[0]) {
    case 0x01:
      throw new Error("faulty worker asked to throw\nsecond line");
    case 0x02:
      // deno-lint-ignore no-process-global
      process.exit(7);
      break;
    case 0x03:
      for (;;) {
        // a decoder that never returns
      }
    default:
      parentPort?.postMessage({ verified: false, reason: `thread ${threadId}`, heapBytes: 0 });
  }
});
