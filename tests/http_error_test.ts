import assert from "node:assert/strict";
import { errorResponse, HttpError, httpErrorOf } from "../src/http/http_error.ts";
import { STATUS } from "../src/http/status.ts";
import {
  PackageExtensionError,
  PackageFilenameError,
  PackageFormatError,
  PackageLimitError,
  PackageReadError,
} from "../src/package/package_errors.ts";

Deno.test("httpErrorOf() maps the package readers' errors to their statuses in one place", async () => {
  const cases: [Error, number][] = [
    [new PackageFormatError("Cannot read package: not a zip file"), STATUS.UnprocessableContent],
    [new PackageLimitError("Cannot read package: too large"), STATUS.UnprocessableContent],
    [new PackageFilenameError("Cannot accept filename: it is empty"), STATUS.BadRequest],
    [new PackageExtensionError("Cannot accept filename: extension"), STATUS.UnsupportedMediaType],
    [
      new PackageReadError("Cannot read package: spool file is unreadable"),
      STATUS.InternalServerError,
    ],
  ];
  for (const [error, status] of cases) {
    assert.equal(httpErrorOf(error)?.status, status, error.name);
    const response = errorResponse(error);
    assert.equal(response.status, status);
    assert.equal(await response.text(), `${error.message}\n`);
  }
  assert.ok(new PackageFormatError("x") instanceof SyntaxError);
  assert.ok(new PackageLimitError("x") instanceof RangeError);
});

Deno.test("errorResponse() answers anything else with a generic 500", async () => {
  const kept = new HttpError(STATUS.Conflict, "Cannot publish package: it exists");
  assert.equal(httpErrorOf(kept), kept);
  for (const error of [new SyntaxError("internal parse detail"), new TypeError("x"), "boom"]) {
    assert.equal(httpErrorOf(error), undefined);
    const response = errorResponse(error);
    assert.equal(response.status, 500);
    assert.equal(await response.text(), "Internal server error\n");
  }
});
