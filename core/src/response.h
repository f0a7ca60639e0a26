/*
 * response.h - serializing a response head: status line, the application's headers (checked so
 * that no CR, LF or NUL from Lua ever reaches the wire), framing and Date headers set by the
 * core. No Lua and no I/O here, so the writer is tested byte for byte.
 */
#ifndef RAGE_RESPONSE_H
#define RAGE_RESPONSE_H

#include <stddef.h>

#include "rage.h"
#include "util.h"

typedef struct rage__response_s {
  int status;
  const rage_header_t *headers;
  size_t nheaders;
  int chunked;          /* a streamed body: Transfer-Encoding: chunked (HTTP/1.1) */
  size_t content_length;
  int keep_alive;       /* the server will keep the connection open afterwards */
  int http_minor;       /* of the request */
  const char *request_id; /* when set, written as X-Request-Id unless a header already is */
  size_t request_id_len;
} rage__response_t;

/*
 * Appends the head of `res` to `out`. Returns 0, or RAGE_EINVAL and sets *err to a static
 * message when the status or a header is invalid (nothing is appended then). Application
 * headers that would change the framing (Content-Length, Transfer-Encoding) or that the core
 * owns (Date, Connection) are dropped: the core writes those itself. An application
 * "Connection: close" is honoured by the caller through rage__response_wants_close().
 */
int rage__response_head(rage__buf_t *out, const rage__response_t *res, const char **err);

/* 1 when the application's headers ask to close the connection. */
int rage__response_wants_close(const rage__response_t *res);

/* 1 when a response with this status has no body (1xx, 204, 205, 304). */
static inline int rage__response_bodyless(int status) {
  return (status >= 100 && status < 200) || status == 204 || status == 205 || status == 304;
}

/* The reason phrase for a status code ("Unknown" for codes without one). Static storage. */
const char *rage__status_reason(int status);

/* Validation used for headers and elsewhere: a token (header name) and a field value. */
int rage__valid_token(const char *s, size_t len);
/* 1 for the bytes of a token (tchar, RFC 9110), 0 for the others. */
extern const unsigned char rage__tchar[256];
int rage__valid_field_value(const char *s, size_t len);

/* The Date header line "Date: ...\r\n" for the current second (cached). Static storage. */
const char *rage__date_line(size_t *len);

#endif /* RAGE_RESPONSE_H */
