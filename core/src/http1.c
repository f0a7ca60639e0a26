/*
 * http1.c - HTTP/1.x request parsing for one connection (see http1.h).
 *
 * llhttp does the tokenizing with all lenient flags off. Two pauses frame every request: the
 * on_headers_complete callback pauses so that the complete raw head can be checked here (bare
 * CR or LF, NUL, obs-fold, which llhttp 8 lets through in places) and copied into the request;
 * on_message_complete pauses so the request can be handled while later pipelined bytes wait.
 *
 * Header spans are recorded as offsets from the start of the head, so the head can be moved to
 * the front of the buffer between reads without fixing up anything. llhttp keeps no pointers
 * into the data between calls to llhttp_execute(), which is what makes that move safe.
 */
#include "http1.h"

#include <stdlib.h>
#include <string.h>

#include "log.h"

typedef rage__http1_span_t span_t;

#define SPANS(p) ((span_t *)(void *)(p)->rbuf->data)
#define DATA(p) ((p)->rbuf->data + (p)->pools->span_size)

static inline rage__http1_t *self(llhttp_t *h) {
  return (rage__http1_t *)h;
}

static int fail(rage__http1_t *p, int status, const char *reason) {
  if (!p->err_status) {
    p->err_status = status;
    p->err_reason = reason;
  }
  return -1;
}

static size_t head_off(rage__http1_t *p, const char *at) {
  return (size_t)(at - DATA(p)) - p->head_start;
}

static void mark_start(rage__http1_t *p, const char *at) {
  if (!p->have_start) {
    p->head_start = (size_t)(at - DATA(p));
    p->have_start = 1;
  }
}

static int on_message_begin(llhttp_t *h) {
  rage__http1_t *p = self(h);
  p->state = RAGE_HTTP1_HEAD;
  p->have_start = 0;
  p->method_len = 0;
  p->url_off = p->url_len = 0;
  p->nspans = 0;
  p->header_bytes = 0;
  p->in_field = 0;
  p->chunk_ext_bytes = 0;
  p->te_seen = 0;
  p->requests++;
  return 0;
}

static int on_method(llhttp_t *h, const char *at, size_t len) {
  rage__http1_t *p = self(h);
  mark_start(p, at);
  p->method_len += len;
  return 0;
}

static int on_url(llhttp_t *h, const char *at, size_t len) {
  rage__http1_t *p = self(h);
  mark_start(p, at);
  if (p->url_len == 0) p->url_off = head_off(p, at);
  p->url_len += len;
  if (p->url_len > p->cfg->max_request_line) return fail(p, 414, "URI Too Long");
  return 0;
}

static int add_header_bytes(rage__http1_t *p, size_t len) {
  p->header_bytes += len;
  if (p->header_bytes > p->cfg->max_header_size)
    return fail(p, 431, "Request Header Fields Too Large");
  return 0;
}

/* in_field: 0 between headers, 1 in a name, 2 name complete, 3 in a value. */
static int on_header_field(llhttp_t *h, const char *at, size_t len) {
  rage__http1_t *p = self(h);
  if (p->in_field != 1) {
    if (p->nspans >= p->cfg->max_headers) return fail(p, 431, "Too Many Header Fields");
    span_t *s = &SPANS(p)[p->nspans++];
    s->name_off = (uint32_t)head_off(p, at);
    s->name_len = 0;
    s->value_off = 0;
    s->value_len = 0;
    p->in_field = 1;
  }
  SPANS(p)[p->nspans - 1].name_len += (uint32_t)len;
  return add_header_bytes(p, len);
}

static int on_header_field_complete(llhttp_t *h) {
  rage__http1_t *p = self(h);
  p->in_field = 2;
  /* llhttp would report a repeated Transfer-Encoding as an unsupported coding (501); it is a
   * framing conflict, answered 400 like a repeated Content-Length. */
  const span_t *s = &SPANS(p)[p->nspans - 1];
  if (rage__strieq(DATA(p) + p->head_start + s->name_off, s->name_len, "transfer-encoding", 17) &&
      p->te_seen++)
    return fail(p, 400, "Bad Request: duplicate Transfer-Encoding header");
  return 0;
}

static int on_header_value(llhttp_t *h, const char *at, size_t len) {
  rage__http1_t *p = self(h);
  span_t *s = &SPANS(p)[p->nspans - 1];
  if (p->in_field != 3) {
    s->value_off = (uint32_t)head_off(p, at);
    p->in_field = 3;
  }
  s->value_len += (uint32_t)len;
  return add_header_bytes(p, len);
}

static int on_header_value_complete(llhttp_t *h) {
  self(h)->in_field = 0;
  return 0;
}

static int on_headers_complete(llhttp_t *h) {
  self(h)->pause_head = 1;
  return HPE_PAUSED;
}

static int on_chunk_ext(llhttp_t *h, const char *at, size_t len) {
  rage__http1_t *p = self(h);
  p->chunk_ext_bytes += len;
  if (p->chunk_ext_bytes > p->cfg->max_chunk_ext) return fail(p, 413, "Chunk Extensions Too Large");
  return 0;
}

static int on_chunk_complete(llhttp_t *h) {
  self(h)->chunk_ext_bytes = 0;
  return 0;
}

static int body_store_failed(rage__http1_t *p, int err) {
  rage__log(RAGE_LOG_ERROR, "cannot store a request body in a temporary file: %s", strerror(-err));
  return fail(p, 500, "Internal Server Error: cannot store the request body");
}

static int on_body(llhttp_t *h, const char *at, size_t len) {
  rage__http1_t *p = self(h);
  rage__req_t *req = p->req;
  if (req->body_len + len > p->max_body) return fail(p, 413, "Payload Too Large");
  int r = rage__req_body_append(req, at, len, p->cfg->body_buffer);
  if (r != 0) return body_store_failed(p, r);
  return 0;
}

static int on_message_complete(llhttp_t *h) {
  self(h)->pause_head = 0;
  return HPE_PAUSED;
}

static const llhttp_settings_t settings = {
    .on_message_begin = on_message_begin,
    .on_method = on_method,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_field_complete = on_header_field_complete,
    .on_header_value = on_header_value,
    .on_header_value_complete = on_header_value_complete,
    .on_headers_complete = on_headers_complete,
    .on_chunk_extension_name = on_chunk_ext,
    .on_chunk_extension_value = on_chunk_ext,
    .on_chunk_complete = on_chunk_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

void rage__http1_init(rage__http1_t *p, const rage_server_config_t *cfg, rage__pools_t *pools,
                      const rage__http1_cbs_t *cbs, void *data) {
  memset(p, 0, sizeof(*p));
  llhttp_init(&p->parser, HTTP_REQUEST, &settings);
  p->cfg = cfg;
  p->pools = pools;
  p->cbs = cbs;
  p->data = data;
  p->state = RAGE_HTTP1_IDLE;
}

static void drop_buffer(rage__http1_t *p) {
  if (p->rbuf) rage__rbuf_put(p->pools, p->rbuf);
  p->rbuf = NULL;
  p->len = p->pos = 0;
  p->head_start = 0;
}

void rage__http1_free(rage__http1_t *p) {
  drop_buffer(p);
  if (p->req) rage__req_free(p->req);
  p->req = NULL;
  p->state = RAGE_HTTP1_DEAD;
}

void rage__http1_fail(rage__http1_t *p, int status, const char *reason) {
  if (p->state == RAGE_HTTP1_DEAD) return;
  p->state = RAGE_HTTP1_DEAD;
  if (p->req) rage__req_free(p->req);
  p->req = NULL;
  drop_buffer(p);
  p->cbs->on_error(p, status, reason);
}

int rage__http1_alloc(rage__http1_t *p, uv_buf_t *out) {
  if (p->rbuf == NULL) {
    p->rbuf = rage__rbuf_get(p->pools);
    p->len = p->pos = 0;
    p->head_start = 0;
  }
  size_t room = p->pools->rbuf_size - p->len;
  if (p->state == RAGE_HTTP1_PAUSED) {
    size_t pending = p->len - p->pos;
    room = pending >= RAGE_PIPELINE_HIGH_WATER ? 0 : RAGE_PIPELINE_HIGH_WATER - pending;
    if (room > p->pools->rbuf_size - p->len) room = p->pools->rbuf_size - p->len;
  }
  if (room == 0) return 0;
  out->base = DATA(p) + p->len;
  out->len = room;
  return 1;
}

size_t rage__http1_pending(const rage__http1_t *p) {
  return p->len - p->pos;
}

static int is_token(const char *s, size_t len, const char *word) {
  /* `s` trimmed of optional white space equals `word`, ignoring ASCII case. */
  while (len && (*s == ' ' || *s == '\t')) s++, len--;
  while (len && (s[len - 1] == ' ' || s[len - 1] == '\t')) len--;
  return rage__strieq(s, len, word, strlen(word));
}

/* The body limit for a request target: the longest body_limits prefix of its path that ends on a
 * segment boundary, else max_body. */
static size_t body_limit(const rage_server_config_t *cfg, const char *url, size_t url_len) {
  size_t best_len = 0, limit = cfg->max_body;
  const char *q = memchr(url, '?', url_len);
  size_t path_len = q ? (size_t)(q - url) : url_len;
  for (unsigned i = 0; i < cfg->nbody_limits; i++) {
    const char *prefix = cfg->body_limits[i].prefix;
    size_t n = strlen(prefix);
    if (n > path_len || memcmp(url, prefix, n) != 0 || n <= best_len) continue;
    if (n < path_len && url[n] != '/' && prefix[n - 1] != '/') continue;
    best_len = n;
    limit = cfg->body_limits[i].max_body;
  }
  return limit;
}

/* reg-name characters (RFC 3986): unreserved, sub-delims and '%' of pct-encoded. */
static const unsigned char host_char[256] = {
    ['-'] = 1, ['.'] = 1, ['_'] = 1, ['~'] = 1, ['!'] = 1, ['$'] = 1, ['&'] = 1, ['\''] = 1,
    ['('] = 1, [')'] = 1, ['*'] = 1, ['+'] = 1, [','] = 1, [';'] = 1, ['='] = 1, ['%'] = 1,
    ['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1, ['6'] = 1, ['7'] = 1,
    ['8'] = 1, ['9'] = 1,
    ['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1, ['F'] = 1, ['G'] = 1, ['H'] = 1,
    ['I'] = 1, ['J'] = 1, ['K'] = 1, ['L'] = 1, ['M'] = 1, ['N'] = 1, ['O'] = 1, ['P'] = 1,
    ['Q'] = 1, ['R'] = 1, ['S'] = 1, ['T'] = 1, ['U'] = 1, ['V'] = 1, ['W'] = 1, ['X'] = 1,
    ['Y'] = 1, ['Z'] = 1,
    ['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1, ['e'] = 1, ['f'] = 1, ['g'] = 1, ['h'] = 1,
    ['i'] = 1, ['j'] = 1, ['k'] = 1, ['l'] = 1, ['m'] = 1, ['n'] = 1, ['o'] = 1, ['p'] = 1,
    ['q'] = 1, ['r'] = 1, ['s'] = 1, ['t'] = 1, ['u'] = 1, ['v'] = 1, ['w'] = 1, ['x'] = 1,
    ['y'] = 1, ['z'] = 1,
};

/* A Host value or authority: reg-name / IPv4 / [IPv6] with an optional :port (RFC 3986). */
static int valid_host(const char *s, size_t len) {
  size_t i = 0;
  if (len > 255) return 0;
  if (len > 0 && s[0] == '[') {
    while (i < len && s[i] != ']') {
      char c = s[i];
      if (!(c == '[' || c == ':' || c == '.' || (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') ||
            (c >= 'A' && c <= 'F')))
        return 0;
      i++;
    }
    if (i == len) return 0;
    i++;
  } else {
    for (; i < len && s[i] != ':'; i++)
      if (!host_char[(unsigned char)s[i]]) return 0;
  }
  if (i < len) {
    if (s[i] != ':') return 0;
    for (i++; i < len; i++)
      if (s[i] < '0' || s[i] > '9') return 0;
  }
  return 1;
}

/* Checks the raw head [head_start, pos) and copies it into a new request. */
static int head_complete(rage__http1_t *p) {
  const char *base = DATA(p) + p->head_start;
  size_t hlen = p->pos - p->head_start;
  llhttp_t *h = &p->parser;

  /* Line ends: every LF must follow a CR, every CR must precede an LF, and no line may start
   * with white space (obs-fold). memchr keeps this to a few instructions per byte. */
  if (memchr(base, '\0', hlen)) return fail(p, 400, "Bad Request: NUL in request head");
  size_t lfs = 0, crs = 0;
  for (const char *lf = memchr(base, '\n', hlen); lf; lf = memchr(lf + 1, '\n', (size_t)(base + hlen - lf - 1))) {
    if (lf == base || lf[-1] != '\r') return fail(p, 400, "Bad Request: bare LF in request head");
    if (lf + 1 < base + hlen && (lf[1] == ' ' || lf[1] == '\t'))
      return fail(p, 400, "Bad Request: obsolete line folding");
    lfs++;
  }
  for (const char *cr = memchr(base, '\r', hlen); cr; cr = memchr(cr + 1, '\r', (size_t)(base + hlen - cr - 1)))
    crs++;
  if (crs != lfs) return fail(p, 400, "Bad Request: bare CR in request head");
  if (h->http_major != 1 || h->http_minor > 1) return fail(p, 505, "HTTP Version Not Supported");

  const span_t *spans = SPANS(p);
  int nhost = 0, ncl = 0, nte = 0, nexpect = 0, rid = -1;
  const span_t *te = NULL, *expect = NULL, *host = NULL;
  for (unsigned i = 0; i < p->nspans; i++) {
    const char *name = base + spans[i].name_off;
    size_t nlen = spans[i].name_len;
    if (rage__strieq(name, nlen, "host", 4)) {
      nhost++;
      host = &spans[i];
    } else if (rage__strieq(name, nlen, "content-length", 14)) {
      ncl++;
    } else if (rage__strieq(name, nlen, "transfer-encoding", 17)) {
      nte++;
      te = &spans[i];
    } else if (rage__strieq(name, nlen, "expect", 6)) {
      nexpect++;
      expect = &spans[i];
    } else if (rid < 0 && rage__strieq(name, nlen, "x-request-id", 12)) {
      rid = (int)i;
    }
  }
  if (nhost > 1) return fail(p, 400, "Bad Request: duplicate Host header");
  if (nhost == 0 && h->http_minor == 1) return fail(p, 400, "Bad Request: missing Host header");
  if (host && !valid_host(base + host->value_off, host->value_len))
    return fail(p, 400, "Bad Request: invalid Host header");
  const char *url = base + p->url_off;
  size_t url_len = p->url_len;
  if (memchr(url, '#', url_len)) return fail(p, 400, "Bad Request: fragment in request target");
  /* absolute-form (RFC 9112 3.2.2): keep the path; the authority was checked like a Host. */
  if (url_len > 7 && (rage__strieq(url, 7, "http://", 7) ||
                      (url_len > 8 && rage__strieq(url, 8, "https://", 8)))) {
    size_t skip = url[4] == ':' ? 7 : 8;
    const char *auth = url + skip;
    const char *end = url + url_len;
    const char *slash = auth;
    while (slash < end && *slash != '/' && *slash != '?') slash++;
    if (slash == auth || !valid_host(auth, (size_t)(slash - auth)))
      return fail(p, 400, "Bad Request: invalid authority in request target");
    p->url_off += (size_t)(slash - url);
    p->url_len = (size_t)(end - slash);
  } else if (url_len == 0 || (url[0] != '/' && !(url_len == 1 && url[0] == '*') &&
                              h->method != HTTP_CONNECT)) {
    return fail(p, 400, "Bad Request: invalid request target");
  }
  if (ncl > 1) return fail(p, 400, "Bad Request: duplicate Content-Length header");
  if (nte > 1) return fail(p, 400, "Bad Request: duplicate Transfer-Encoding header");
  if (ncl && nte) return fail(p, 400, "Bad Request: both Content-Length and Transfer-Encoding");
  if (te && !is_token(base + te->value_off, te->value_len, "chunked"))
    return fail(p, 501, "Not Implemented: unsupported transfer coding");
  int expect_continue = 0;
  if (nexpect > 1) return fail(p, 400, "Bad Request: duplicate Expect header");
  if (expect) {
    if (!is_token(base + expect->value_off, expect->value_len, "100-continue"))
      return fail(p, 417, "Expectation Failed");
    expect_continue = h->http_minor == 1;
  }
  p->max_body = body_limit(p->cfg, base + p->url_off, p->url_len);
  if (ncl && h->content_length > p->max_body) return fail(p, 413, "Payload Too Large");

  rage__req_t *req = rage__req_new(p->pools);
  req->method_id = h->method;
  req->method = llhttp_method_name((llhttp_method_t)h->method);
  req->method_len = strlen(req->method);
  /* One copy of the head holds the target, the names and the values. Each is NUL-terminated in
   * place, over the byte that follows it in the raw head: the space after the target, the colon
   * after a name, the white space or CR after a (trimmed) value. */
  char *copy = rage__arena_alloc(&req->arena, hlen + 1);
  memcpy(copy, base, hlen);
  copy[hlen] = '\0';
  if (p->url_len == 0) { /* absolute-form with an empty path means "/" */
    req->target = rage__arena_strndup(&req->arena, "/", 1);
    req->target_len = 1;
  } else {
    req->target = copy + p->url_off;
    req->target_len = p->url_len;
    req->target[p->url_len] = '\0';
  }
  const char *q = memchr(req->target, '?', req->target_len);
  req->path_len = q ? (size_t)(q - req->target) : req->target_len;
  req->headers = rage__arena_alloc(&req->arena, (p->nspans ? p->nspans : 1) * sizeof(rage_header_t));
  req->nheaders = p->nspans;
  for (unsigned i = 0; i < p->nspans; i++) {
    char *name = copy + spans[i].name_off;
    name[spans[i].name_len] = '\0';
    req->headers[i].name = name;
    req->headers[i].name_len = spans[i].name_len;
    size_t vlen = spans[i].value_len;
    if (vlen == 0) { /* no value callback: value_off is not a position in the head */
      req->headers[i].value = "";
      req->headers[i].value_len = 0;
      continue;
    }
    char *v = copy + spans[i].value_off;
    while (vlen && (v[vlen - 1] == ' ' || v[vlen - 1] == '\t')) vlen--;
    v[vlen] = '\0';
    req->headers[i].value = v;
    req->headers[i].value_len = vlen;
  }
  req->want_id = p->cfg->request_id != 0;
  if (rid >= 0) rage__req_take_id(req, req->headers[rid].value, req->headers[rid].value_len);
  req->http_major = h->http_major;
  req->http_minor = h->http_minor;
  req->keep_alive = llhttp_should_keep_alive(h) && !(h->flags & F_UPGRADE) &&
                    h->method != HTTP_CONNECT;
  req->head_only = h->method == HTTP_HEAD;
  req->expect_continue = (uint8_t)expect_continue;
  p->req = req;
  if (ncl && h->content_length > p->cfg->body_buffer) {
    int r = rage__req_body_spool(req);
    if (r != 0) return body_store_failed(p, r);
  } else if (ncl && h->content_length > 0) {
    rage__buf_reserve(&req->body, (size_t)h->content_length);
  }
  p->state = RAGE_HTTP1_BODY;
  int has_body = (ncl && h->content_length > 0) || nte;
  if (has_body && p->cbs->on_head) p->cbs->on_head(p, req);
  return 0;
}

static int status_for(rage__http1_t *p, llhttp_errno_t err) {
  if (p->err_status) return p->err_status;
  switch (err) {
  case HPE_INVALID_METHOD:
    return 501;
  case HPE_INVALID_VERSION:
    return 505;
  case HPE_INVALID_TRANSFER_ENCODING:
    return 501;
  default:
    return 400;
  }
}

static void compact(rage__http1_t *p) {
  if (p->rbuf == NULL) return;
  size_t live = (p->state == RAGE_HTTP1_HEAD && p->have_start) ? p->head_start : p->pos;
  if (live >= p->len) {
    drop_buffer(p);
    return;
  }
  if (live > 0) {
    memmove(DATA(p), DATA(p) + live, p->len - live);
    p->len -= live;
    p->pos -= live;
    if (p->state == RAGE_HTTP1_HEAD && p->have_start) p->head_start = 0;
  }
}

static void parse(rage__http1_t *p) {
  /* After the pause that ends a head, llhttp must run once more even with no bytes left: a
   * request without a body completes without consuming input. */
  int again = 0;
  while (p->state != RAGE_HTTP1_PAUSED && p->state != RAGE_HTTP1_DEAD && (p->pos < p->len || again)) {
    again = 0;
    const char *start = DATA(p) + p->pos;
    llhttp_errno_t err = llhttp_execute(&p->parser, start, p->len - p->pos);
    if (err == HPE_OK) {
      p->pos = p->len;
      break;
    }
    if (err == HPE_PAUSED || err == HPE_PAUSED_UPGRADE) {
      p->pos = (size_t)(llhttp_get_error_pos(&p->parser) - DATA(p));
      if (err == HPE_PAUSED) llhttp_resume(&p->parser);
      else llhttp_resume_after_upgrade(&p->parser);
      if (p->pause_head) {
        p->pause_head = 0;
        if (head_complete(p) != 0) {
          rage__http1_fail(p, p->err_status, p->err_reason);
          return;
        }
        again = 1;
        continue;
      }
      p->state = RAGE_HTTP1_PAUSED;
      break;
    }
    rage__http1_fail(p, status_for(p, err), p->err_status ? p->err_reason : llhttp_get_error_reason(&p->parser));
    return;
  }
  compact(p);
  if (p->state == RAGE_HTTP1_HEAD && p->rbuf && p->len >= p->pools->rbuf_size) {
    if (p->nspans == 0) rage__http1_fail(p, 414, "URI Too Long");
    else rage__http1_fail(p, 431, "Request Header Fields Too Large");
    return;
  }
  if (p->state == RAGE_HTTP1_PAUSED) {
    rage__req_t *req = p->req;
    p->req = NULL;
    p->cbs->on_request(p, req);
  }
}

void rage__http1_feed(rage__http1_t *p, size_t nread) {
  if (p->rbuf == NULL) return;
  p->len += nread;
  if (p->state == RAGE_HTTP1_DEAD) {
    drop_buffer(p);
    return;
  }
  if (p->state == RAGE_HTTP1_PAUSED) {
    if (p->len == p->pos) compact(p);
    return;
  }
  parse(p);
}

void rage__http1_resume(rage__http1_t *p) {
  if (p->state != RAGE_HTTP1_PAUSED) return;
  p->state = RAGE_HTTP1_IDLE;
  parse(p);
}
