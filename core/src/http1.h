/*
 * http1.h - the HTTP/1.x request parser of a connection: llhttp with every lenient flag off,
 * plus the checks llhttp leaves to its user (sizes, counts, Host, versions, duplicated framing
 * headers, bare CR/LF and NUL in the head, chunk extension sizes).
 *
 * Bytes are read straight into a buffer the parser lends (rage__http1_alloc) and parsed in
 * place. When a request head is complete it is validated against the raw bytes and copied into
 * a rage__req_t; when the whole message is in, parsing pauses and on_request runs. The owner
 * calls rage__http1_resume() once that request's response is complete, which parses any
 * pipelined bytes already buffered. The parser holds a read buffer only while an incomplete
 * request or unparsed pipelined bytes are buffered: an idle keep-alive connection holds none.
 *
 * Errors are sticky: on_error is called once with the status to answer (400, 408, 413, 414,
 * 417, 431, 501, 505) and the parser ignores everything after it.
 */
#ifndef RAGE_HTTP1_H
#define RAGE_HTTP1_H

#include <llhttp.h>
#include <uv.h>

#include "request.h"

typedef struct rage__http1_s rage__http1_t;

typedef struct rage__http1_cbs_s {
  /* The head of `req` is complete and valid and a body follows (to send 100 Continue). */
  void (*on_head)(rage__http1_t *p, rage__req_t *req);
  /* `req` is complete; ownership passes to the callee. Parsing is paused until resume. */
  void (*on_request)(rage__http1_t *p, rage__req_t *req);
  /* The input is invalid: answer `status` with `reason` and close. */
  void (*on_error)(rage__http1_t *p, int status, const char *reason);
} rage__http1_cbs_t;

enum {
  RAGE_HTTP1_IDLE,    /* between requests, nothing buffered of the next one */
  RAGE_HTTP1_HEAD,    /* receiving a request head */
  RAGE_HTTP1_BODY,    /* receiving a request body */
  RAGE_HTTP1_PAUSED,  /* a complete request is being handled */
  RAGE_HTTP1_DEAD     /* an error was reported; the connection is closing */
};

struct rage__http1_s {
  llhttp_t parser;
  const rage_server_config_t *cfg;
  const rage__http1_cbs_t *cbs;
  rage__pools_t *pools;
  void *data;              /* the owner's */
  rage__rbuf_t *rbuf;      /* NULL when nothing is buffered */
  size_t len;              /* bytes in the buffer */
  size_t pos;              /* bytes parsed */
  int state;
  /* The head being parsed; offsets are relative to head_start so the head can be moved. */
  size_t head_start;
  int have_start;
  size_t method_len;
  size_t url_off, url_len;
  int url_done;            /* the request target is complete */
  size_t header_count;     /* header and trailer fields so far, and their bytes */
  size_t header_bytes;
  int in_trailer_name;     /* the last trailer span was a field name */
  size_t chunk_ext_bytes;
  size_t max_body;         /* this request's body limit (max_body or a body_limits override) */
  int pause_head;          /* the pending pause is the one after the head */
  int err_status;          /* set by a callback that fails */
  const char *err_reason;
  unsigned requests;       /* messages begun on this connection */
  int plain;               /* at a message boundary where plain heads may be read without llhttp
                              (0 to have llhttp parse every head, as fuzz-http1 does to compare) */
  rage__req_t *req;        /* the request being received */
};

void rage__http1_init(rage__http1_t *p, const rage_server_config_t *cfg, rage__pools_t *pools,
                      const rage__http1_cbs_t *cbs, void *data);
/* Releases the buffer and any partially received request. */
void rage__http1_free(rage__http1_t *p);
/* Lends the space to read into. Returns 0 when the buffer is full (stop reading for now). */
int rage__http1_alloc(rage__http1_t *p, uv_buf_t *out);
/* `nread` bytes were read into the space lent last (0 is allowed and releases it if unused). */
void rage__http1_feed(rage__http1_t *p, size_t nread);
/* The paused request's response is complete: parse what is buffered. */
void rage__http1_resume(rage__http1_t *p);
/* Bytes buffered but not parsed (pipelined input while a request runs). */
size_t rage__http1_pending(const rage__http1_t *p);
/* Reports an error (used by the owner's timers, e.g. 408) unless one was reported already. */
void rage__http1_fail(rage__http1_t *p, int status, const char *reason);

#endif /* RAGE_HTTP1_H */
