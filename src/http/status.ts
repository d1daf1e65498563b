/**
 * Named HTTP status codes, so no handler writes a bare number.
 *
 * @module
 */

/** The status codes this server answers with. */
export const STATUS = {
  OK: 200,
  Created: 201,
  NoContent: 204,
  PartialContent: 206,
  MovedPermanently: 301,
  NotModified: 304,
  BadRequest: 400,
  Unauthorized: 401,
  Forbidden: 403,
  NotFound: 404,
  MethodNotAllowed: 405,
  NotAcceptable: 406,
  RequestTimeout: 408,
  Conflict: 409,
  LengthRequired: 411,
  ContentTooLarge: 413,
  UnsupportedMediaType: 415,
  URITooLong: 414,
  RangeNotSatisfiable: 416,
  ExpectationFailed: 417,
  UnprocessableContent: 422,
  TooManyRequests: 429,
  RequestHeaderFieldsTooLarge: 431,
  InternalServerError: 500,
  NotImplemented: 501,
  BadGateway: 502,
  ServiceUnavailable: 503,
  HTTPVersionNotSupported: 505,
  InsufficientStorage: 507,
} as const;

/** One of the status codes in {@linkcode STATUS}. */
export type Status = typeof STATUS[keyof typeof STATUS];
