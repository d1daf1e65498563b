/** The failed-token throttle's address key. */

import assert from "node:assert/strict";
import { throttleKey } from "../src/auth/auth_throttle.ts";

Deno.test("throttleKey() counts IPv6 clients per /64 and leaves IPv4 as it is", () => {
  assert.equal(throttleKey("192.0.2.7"), "192.0.2.7");
  assert.equal(throttleKey("2001:db8::1"), throttleKey("2001:db8:0:0:ffff:1:2:3"));
  assert.equal(throttleKey("2001:DB8:0:0:1::2"), "2001:db8:0:0::/64");
  assert.notEqual(throttleKey("2001:db8:0:1::1"), throttleKey("2001:db8:0:2::1"));
  assert.equal(throttleKey("::ffff:192.0.2.7"), "192.0.2.7");
});
