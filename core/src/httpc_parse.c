/*
 * httpc_parse.c - the response side of an exchange: llhttp in HTTP_RESPONSE mode, without
 * lenient flags, plus the checks llhttp leaves out.
 *
 * The callbacks bound the header section (bytes and field count), a buffered body and chunk
 * extensions, and refuse what could make two parsers disagree on where the response ends: a
 * second Content-Length or Transfer-Encoding, both at once, obs-fold lines, control characters
 * in the status line or a header value, and 101 Switching Protocols. Interim 1xx responses are
 * skipped. Header names are lower-cased into the exchange's hbuf, values appended after them,
 * both addressed by spans; bodies of HEAD, 204 and 304 responses are empty whatever they say.
 *
 * A callback never fails the exchange itself, since that would run inside llhttp: it records a
 * kind and a message and returns -1, and rage__xchg_parse() fails the exchange once llhttp has
 * returned. The parser pauses at the end of the response so that bytes after it are noticed:
 * they make the connection unfit for the pool.
 */
#include <string.h>

#include "httpc_internal.h"

#define X(p) ((rage__xchg_t *)(p)->data)

static int cb_fail(rage__xchg_t *x, const char *kind, const char *msg) {
  if (x->cb_kind == NULL) {
    x->cb_kind = kind;
    x->cb_msg = msg;
  }
  return -1;
}

static int add_head_bytes(rage__xchg_t *x, size_t len) {
  x->header_bytes += len;
  if (x->header_bytes > x->max_header_size)
    return cb_fail(x, "http.too_large", "the response header section is over the limit");
  return 0;
}

static int has_ctl(const char *at, size_t len) {
  for (size_t i = 0; i < len; i++)
    if (at[i] == '\r' || at[i] == '\n' || at[i] == '\0') return 1;
  return 0;
}

static int on_message_begin(llhttp_t *p) {
  rage__xchg_t *x = X(p);
  x->hbuf.len = 0;
  x->nspans = 0;
  x->in_field = x->ncl = x->nte = 0;
  x->header_bytes = 0;
  return 0;
}

static int on_status(llhttp_t *p, const char *at, size_t len) {
  rage__xchg_t *x = X(p);
  if (has_ctl(at, len)) return cb_fail(x, "http.protocol", "invalid character in the status line");
  return add_head_bytes(x, len);
}

static int on_header_field(llhttp_t *p, const char *at, size_t len) {
  rage__xchg_t *x = X(p);
  if (x->in_field != 1) {
    if (x->nspans >= x->max_headers)
      return cb_fail(x, "http.too_large", "the response has too many header fields");
    if (x->nspans == x->capspans) {
      x->capspans = x->capspans ? x->capspans * 2 : 16;
      x->spans = rage__realloc(x->spans, x->capspans * sizeof(*x->spans));
    }
    rage__httpc_span_t *s = &x->spans[x->nspans++];
    s->name_off = (uint32_t)x->hbuf.len;
    s->name_len = 0;
    s->value_off = 0;
    s->value_len = 0;
    x->in_field = 1;
  }
  if (add_head_bytes(x, len)) return -1;
  rage__buf_reserve(&x->hbuf, len);
  char *d = x->hbuf.data + x->hbuf.len;
  for (size_t i = 0; i < len; i++) {
    char c = at[i];
    d[i] = (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c;
  }
  x->hbuf.len += len;
  x->spans[x->nspans - 1].name_len += (uint32_t)len;
  return 0;
}

static int on_header_field_complete(llhttp_t *p) {
  rage__xchg_t *x = X(p);
  rage__httpc_span_t *s = &x->spans[x->nspans - 1];
  const char *name = x->hbuf.data + s->name_off;
  if (s->name_len == 14 && memcmp(name, "content-length", 14) == 0 && x->ncl++)
    return cb_fail(x, "http.protocol", "the response has more than one Content-Length header");
  if (s->name_len == 17 && memcmp(name, "transfer-encoding", 17) == 0 && x->nte++)
    return cb_fail(x, "http.protocol", "the response has more than one Transfer-Encoding header");
  x->in_field = 2;
  s->value_off = (uint32_t)x->hbuf.len;
  return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len) {
  rage__xchg_t *x = X(p);
  rage__httpc_span_t *s = &x->spans[x->nspans - 1];
  if (x->in_field != 3) {
    s->value_off = (uint32_t)x->hbuf.len;
    x->in_field = 3;
  } else if (!(at == x->exec_data && x->value_at_end)) {
    /* llhttp reports one span per value per buffer. A second span of the same value that does
     * not simply continue a read boundary means bytes were skipped: an obs-fold line. */
    return cb_fail(x, "http.protocol", "obsolete line folding in a response header");
  }
  x->value_at_end = at + len == x->exec_end;
  if (has_ctl(at, len))
    return cb_fail(x, "http.protocol", "invalid character in a response header value");
  if (add_head_bytes(x, len)) return -1;
  rage__buf_append(&x->hbuf, at, len);
  s->value_len += (uint32_t)len;
  return 0;
}

static int on_header_value_complete(llhttp_t *p) {
  X(p)->in_field = 0;
  return 0;
}

static int on_headers_complete(llhttp_t *p) {
  rage__xchg_t *x = X(p);
  int status = p->status_code;
  if (status >= 100 && status < 200) {
    if (status == 101) return cb_fail(x, "http.protocol", "unexpected 101 Switching Protocols");
    x->interim = 1; /* 100 Continue, 103 Early Hints: the real response follows */
    return 0;
  }
  if ((p->flags & F_CONTENT_LENGTH) && (p->flags & F_TRANSFER_ENCODING))
    return cb_fail(x, "http.protocol",
                   "the response has both Content-Length and Transfer-Encoding");
  /* Responses to HEAD, 204 and 304 never have a body, whatever their Content-Length says. */
  int no_body = x->method_head || status == 204 || status == 304;
  if (x->max_body && !no_body && (p->flags & F_CONTENT_LENGTH) && p->content_length > x->max_body)
    return cb_fail(x, "http.too_large", "the response body is over the limit");
  x->status = status;
  x->head_done = 1;
  x->state = RAGE_XCHG_BODY;
  return no_body ? 1 : 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len) {
  rage__xchg_t *x = X(p);
  x->body_total += len;
  if (x->max_body && x->body_total > x->max_body)
    return cb_fail(x, "http.too_large", "the response body is over the limit");
  rage__buf_append(&x->body, at, len);
  if (x->stream && x->body.len >= RAGE_HTTPC_STREAM_HIGH_WATER) x->want_pause = 1;
  return 0;
}

static int on_chunk_header(llhttp_t *p) {
  X(p)->chunk_ext = 0;
  return 0;
}

static int on_chunk_ext(llhttp_t *p, const char *at, size_t len) {
  rage__xchg_t *x = X(p);
  x->chunk_ext += len;
  if (x->chunk_ext > RAGE_HTTPC_MAX_CHUNK_EXT)
    return cb_fail(x, "http.protocol", "chunk extensions are too long");
  return 0;
}

static int on_message_complete(llhttp_t *p) {
  rage__xchg_t *x = X(p);
  if (x->interim) {
    x->interim = 0;
    return 0;
  }
  x->msg_done = 1;
  x->keep_alive = llhttp_should_keep_alive(p);
  return HPE_PAUSED;
}

static const llhttp_settings_t settings = {
    .on_message_begin = on_message_begin,
    .on_status = on_status,
    .on_header_field = on_header_field,
    .on_header_field_complete = on_header_field_complete,
    .on_header_value = on_header_value,
    .on_header_value_complete = on_header_value_complete,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_chunk_header = on_chunk_header,
    .on_chunk_extension_name = on_chunk_ext,
    .on_chunk_extension_value = on_chunk_ext,
    .on_message_complete = on_message_complete,
};

void rage__xchg_parse_reset(rage__xchg_t *x) {
  llhttp_init(&x->parser, HTTP_RESPONSE, &settings);
  x->parser.data = x;
  x->head_done = x->msg_done = x->keep_alive = x->interim = x->want_pause = 0;
  x->clean = 1;
  x->status = 0;
  x->hbuf.len = 0;
  x->nspans = 0;
  x->in_field = x->ncl = x->nte = 0;
  x->header_bytes = x->chunk_ext = 0;
  x->body.len = 0;
  x->body_total = x->resp_bytes = 0;
  x->cb_kind = x->cb_msg = NULL;
}

void rage__xchg_parse(rage__xchg_t *x, const char *data, size_t len) {
  if (x->msg_done) {
    if (len) x->clean = 0; /* bytes after the response: the connection is not reusable */
    return;
  }
  if (x->state != RAGE_XCHG_HEAD && x->state != RAGE_XCHG_BODY) return;
  x->resp_bytes += len;
  x->exec_data = data;
  x->exec_end = data + len;
  llhttp_errno_t e = llhttp_execute(&x->parser, data, len);
  if (e == HPE_OK) return;
  if (e == HPE_PAUSED && x->msg_done) {
    if (llhttp_get_error_pos(&x->parser) < data + len) x->clean = 0;
    return;
  }
  if (x->cb_kind) {
    rage__xchg_fail(x, x->cb_kind, NULL, "%s (%s:%d)", x->cb_msg, x->host, x->port);
  } else {
    rage__xchg_fail(x, "http.protocol", NULL, "malformed response from %s:%d: %s", x->host,
                    x->port, llhttp_get_error_reason(&x->parser));
  }
}

void rage__xchg_parse_eof(rage__xchg_t *x) {
  if (x->state == RAGE_XCHG_HANDSHAKE) {
    rage__xchg_fail(x, "http.tls", NULL, "%s:%d closed the connection during the TLS handshake",
                    x->host, x->port);
    return;
  }
  if (x->state != RAGE_XCHG_HEAD && x->state != RAGE_XCHG_BODY) return;
  if (x->resp_bytes > 0) {
    /* A body delimited by the end of the connection ends here. */
    llhttp_errno_t e = llhttp_finish(&x->parser);
    if (x->msg_done) {
      x->keep_alive = 0;
      return;
    }
    if (e != HPE_OK && e != HPE_PAUSED && x->cb_kind) {
      rage__xchg_fail(x, x->cb_kind, NULL, "%s (%s:%d)", x->cb_msg, x->host, x->port);
      return;
    }
  }
  if (x->resp_bytes == 0)
    rage__xchg_fail(x, "http.closed", NULL, "%s:%d closed the connection without responding",
                    x->host, x->port);
  else
    rage__xchg_fail(x, "http.closed", NULL,
                    "%s:%d closed the connection before the response was complete", x->host,
                    x->port);
}
