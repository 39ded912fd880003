// The words the page shows for the server's error and close codes.

import test from "node:test";
import assert from "node:assert/strict";
import { describeError } from "../src/messages.js";

test("a restarting server is explained, with the promise that changes are kept", () => {
  assert.equal(
    describeError(4503, "gateway restarting; reconnect"),
    "The server is restarting — your changes are safe and will be sent when it is back.",
  );
  assert.match(describeError(4503, "document moved; reconnect"), /your changes are safe/);
});

test("the size limit is told apart from an oversized message, and no code number shows", () => {
  assert.match(describeError(4413, "document larger than 256 KiB"), /size limit/);
  assert.match(describeError(4413, "message larger than 16 KiB"), /too large to send in one go/);
  for (const code of [4400, 4403, 4409, 4410, 4413, 4416, 4429, 4500, 4503, 4508]) {
    assert.doesNotMatch(describeError(code, "x"), /error \d|\d{4}/, `code ${code}`);
  }
});
