/*
 * http1.c - HTTP/1.x request parsing for one connection (see http1.h).
 *
 * llhttp does the tokenizing with all lenient flags off. Two pauses frame every request: the
 * on_headers_complete callback pauses so that the complete raw head can be checked here (bare
 * CR or LF, NUL, obs-fold, which llhttp 8 lets through in places), split into its header lines
 * and copied into the request; on_message_complete pauses so the request can be handled while
 * later pipelined bytes wait. llhttp reports no header spans: the head it has accepted is split
 * once it is complete, in one pass, which costs less than a callback per name and value.
 *
 * The target is recorded as an offset from the start of the head, so the head can be moved to
 * the front of the buffer between reads without fixing up anything. llhttp keeps no pointers
 * into the data between calls to llhttp_execute(), which is what makes that move safe.
 */
#include "http1.h"

#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "response.h"

#define DATA(p) ((p)->rbuf->data)

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
  p->url_done = 0;
  p->chunk_ext_bytes = 0;
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

static int on_url_complete(llhttp_t *h) {
  self(h)->url_done = 1;
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

/* Trailer fields of a chunked body, which llhttp reports as header spans: nothing keeps them,
 * but they count against the same limits as the head's headers. Only a chunked body's parse
 * has these callbacks (settings_chunked); a head's lines are split in head_complete. */
static int add_trailer_bytes(rage__http1_t *p, size_t len) {
  p->header_bytes += len;
  if (p->header_bytes > p->cfg->max_header_size)
    return fail(p, 431, "Request Header Fields Too Large");
  return 0;
}

static int on_trailer_field(llhttp_t *h, const char *at, size_t len) {
  rage__http1_t *p = self(h);
  (void)at;
  if (!p->in_trailer_name) {
    p->in_trailer_name = 1;
    if (++p->header_count > p->cfg->max_headers) return fail(p, 431, "Too Many Header Fields");
  }
  return add_trailer_bytes(p, len);
}

static int on_trailer_value(llhttp_t *h, const char *at, size_t len) {
  rage__http1_t *p = self(h);
  (void)at;
  p->in_trailer_name = 0;
  return add_trailer_bytes(p, len);
}

static const llhttp_settings_t settings;

static int on_message_complete(llhttp_t *h) {
  self(h)->pause_head = 0;
  h->settings = (void *)&settings;
  return HPE_PAUSED;
}

#define RAGE_HTTP1_SETTINGS                               \
  .on_message_begin = on_message_begin,                   \
  .on_method = on_method,                                 \
  .on_url = on_url,                                       \
  .on_url_complete = on_url_complete,                     \
  .on_headers_complete = on_headers_complete,             \
  .on_chunk_extension_name = on_chunk_ext,                \
  .on_chunk_extension_value = on_chunk_ext,               \
  .on_chunk_complete = on_chunk_complete,                 \
  .on_body = on_body,                                     \
  .on_message_complete = on_message_complete

static const llhttp_settings_t settings = {RAGE_HTTP1_SETTINGS};
static const llhttp_settings_t settings_chunked = {
    RAGE_HTTP1_SETTINGS,
    .on_header_field = on_trailer_field,
    .on_header_value = on_trailer_value,
};
#undef RAGE_HTTP1_SETTINGS

void rage__http1_init(rage__http1_t *p, const rage_server_config_t *cfg, rage__pools_t *pools,
                      const rage__http1_cbs_t *cbs, void *data) {
  memset(p, 0, sizeof(*p));
  llhttp_init(&p->parser, HTTP_REQUEST, &settings);
  p->cfg = cfg;
  p->pools = pools;
  p->cbs = cbs;
  p->data = data;
  p->state = RAGE_HTTP1_IDLE;
  p->plain = 1;
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

/* The body limit for a request target whose path is its first path_len bytes: the longest
 * body_limits prefix of the path that ends on a segment boundary, else max_body. */
static size_t body_limit(const rage_server_config_t *cfg, const char *url, size_t path_len) {
  size_t best_len = 0, limit = cfg->max_body;
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

/* Classes of URL bytes (RFC 3986). HOST: reg-name, i.e. unreserved, sub-delims and '%' of
 * pct-encoded. TARGET: what the origin-form target of a plain head may hold, pchar (reg-name,
 * ':' and '@'), '/' and '?'. */
enum { HOST = 1, TARGET = 2 };
#define R (HOST | TARGET)
static const unsigned char url_byte[256] = {
    ['-'] = R, ['.'] = R, ['_'] = R, ['~'] = R, ['!'] = R, ['$'] = R, ['&'] = R, ['\''] = R,
    ['('] = R, [')'] = R, ['*'] = R, ['+'] = R, [','] = R, [';'] = R, ['='] = R, ['%'] = R,
    ['0'] = R, ['1'] = R, ['2'] = R, ['3'] = R, ['4'] = R, ['5'] = R, ['6'] = R, ['7'] = R,
    ['8'] = R, ['9'] = R,
    ['A'] = R, ['B'] = R, ['C'] = R, ['D'] = R, ['E'] = R, ['F'] = R, ['G'] = R, ['H'] = R,
    ['I'] = R, ['J'] = R, ['K'] = R, ['L'] = R, ['M'] = R, ['N'] = R, ['O'] = R, ['P'] = R,
    ['Q'] = R, ['R'] = R, ['S'] = R, ['T'] = R, ['U'] = R, ['V'] = R, ['W'] = R, ['X'] = R,
    ['Y'] = R, ['Z'] = R,
    ['a'] = R, ['b'] = R, ['c'] = R, ['d'] = R, ['e'] = R, ['f'] = R, ['g'] = R, ['h'] = R,
    ['i'] = R, ['j'] = R, ['k'] = R, ['l'] = R, ['m'] = R, ['n'] = R, ['o'] = R, ['p'] = R,
    ['q'] = R, ['r'] = R, ['s'] = R, ['t'] = R, ['u'] = R, ['v'] = R, ['w'] = R, ['x'] = R,
    ['y'] = R, ['z'] = R,
    [':'] = TARGET, ['@'] = TARGET, ['/'] = TARGET, ['?'] = TARGET,
};
#undef R

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
    /* Up to a ':', checked below: four bytes a step, with one branch for the four. */
    const unsigned char *u = (const unsigned char *)s;
    while (i + 4 <= len &&
           (url_byte[u[i]] & url_byte[u[i + 1]] & url_byte[u[i + 2]] & url_byte[u[i + 3]] & HOST))
      i += 4;
    while (i < len && (url_byte[u[i]] & HOST)) i++;
  }
  if (i < len) {
    if (s[i] != ':') return 0;
    for (i++; i < len; i++)
      if (s[i] < '0' || s[i] > '9') return 0;
  }
  return 1;
}

/* The line ends of the first HEAD_LINES lines of a head are recorded while the head is checked,
 * so that splitting it needs no second search for them; enough for the default max_headers. The
 * lines of a larger head past these are found again with memchr. */
#define HEAD_LINES (RAGE_DEFAULT_MAX_HEADERS + 2)

/* The copy of a head is followed by this many NUL bytes, so that the scans below, which load 8
 * bytes at a time, need no byte-wise tail: the first NUL stops a scan for control bytes, and a
 * word that starts inside the head ends inside the padding. */
#define HEAD_PAD 8

/* The first byte at or after s below 14 (NUL, TAB, LF, CR and the like): there is one at the end
 * of a padded head at the latest. */
static inline const char *next_ctl(const char *s) {
  for (;; s += 8) {
    uint64_t m = rage__swar_below(rage__swar_load(s), 14);
    if (m) return s + rage__swar_first(m);
  }
}

/* The line ends of a padded head: every CR must precede an LF and every LF follow a CR, no line
 * may start with white space (obs-fold), and no byte may be NUL. Counts the lines in *lines and
 * stores the offset of the CR of each of the first HEAD_LINES in ends[], or returns the reason
 * the head is refused. Stops only at bytes below 14: the two of each line end, and tabs. The
 * padding makes the bytes after a CR readable even at the end of the head. */
static const char *check_line_ends(const char *head, size_t len, size_t *ends, size_t *lines) {
  const char *s = head, *end = head + len;
  size_t n = 0;
  while ((s = next_ctl(s)) < end) {
    char c = *s;
    if (c == '\r') {
      if (s[1] != '\n') return "Bad Request: bare CR in request head";
      if (n < HEAD_LINES) ends[n] = (size_t)(s - head);
      n++;
      s += 2;
      if (*s == ' ' || *s == '\t') return "Bad Request: obsolete line folding";
    } else if (c == '\n') {
      return "Bad Request: bare LF in request head";
    } else if (c == '\0') {
      return "Bad Request: NUL in request head";
    } else {
      s++; /* a tab, or a control byte llhttp has judged */
    }
  }
  *lines = n;
  return NULL;
}

/* The end of the header name at s in a padded head: its first byte that is not a token byte, the
 * colon of a well-formed line (the line's CR at the latest). Four bytes a step: a step may read
 * into the next line or the padding, never past it. Finding the colon this way also checks the
 * name. */
static char *name_end(char *s) {
  const unsigned char *u = (const unsigned char *)s;
  while (rage__tchar[u[0]] & rage__tchar[u[1]] & rage__tchar[u[2]] & rage__tchar[u[3]]) u += 4;
  while (rage__tchar[*u]) u++;
  return (char *)u;
}

/* The first '?' or '#' in [s, end) of a padded head, or end. */
static const char *find_query(const char *s, const char *end) {
  for (; s < end; s += 8) {
    uint64_t x = rage__swar_load(s);
    uint64_t m = rage__swar_eq(x, '?') | rage__swar_eq(x, '#');
    if (m) {
      s += rage__swar_first(m);
      return s < end ? s : end;
    }
  }
  return end;
}

/* Whether the header name s (a token, as llhttp checked) is `lower`, ignoring ASCII case: the
 * bytes of a token that OR 0x20 maps onto a lower-case letter or '-' are that letter in either
 * case, or that '-'. */
static int name_is(const char *s, size_t len, const char *lower, size_t lower_len) {
  if (len != lower_len) return 0;
  for (size_t i = 0; i < len; i++)
    if ((s[i] | 0x20) != lower[i]) return 0;
  return 1;
}

/* Whether [s, end) holds only visible ASCII, spaces and tabs: a plain head's field value with
 * the white space around it (no obs-text, no control byte). Eight bytes a step, the bytes of the
 * last word that lie past `end` (the rest of the padded head) left out; a flagged byte, a tab
 * most likely, sends the rest to the byte loop. */
static int plain_value(const char *s, const char *end) {
  for (;; s += 8) {
    uint64_t x = rage__swar_load(s);
    uint64_t m = rage__swar_below(x, 0x20) | rage__swar_eq(x, 0x7f) | (x & RAGE_SWAR_HIGH);
    size_t left = (size_t)(end - s);
    if (left < 8) m &= ((uint64_t)1 << (8 * left)) - 1;
    if (m) break;
    if (left <= 8) return 1;
  }
  for (; s < end; s++) {
    unsigned char c = (unsigned char)*s;
    if ((c < 0x20 && c != '\t') || c >= 0x7f) return 0;
  }
  return 1;
}

/* What the request line and the framing say about a head: llhttp's reading of it, or the plain
 * scan's (plain_head), which leaves the rest to head_complete. */
typedef struct {
  int method; /* llhttp_method_t */
  int major, minor;
  int keep_alive;          /* llhttp's (a plain head always keeps the connection) */
  uint64_t content_length; /* with a Content-Length header */
  int plain;               /* give the head back to llhttp (PLAIN_NO) instead of refusing it */
} head_t;

#define PLAIN_NO 1

/* Copies the raw head [head_start, pos) into a new request, checks it and splits it into its
 * target and header lines. A head llhttp has accepted is refused here with a status; a plain
 * head (m->plain) that needs anything but the simplest reading goes back to llhttp instead
 * (returns PLAIN_NO, having changed nothing that llhttp's parse would not set again), so that
 * every error and every unusual head gets llhttp's answer. */
static int head_complete(rage__http1_t *p, const head_t *m) {
  const char *base = DATA(p) + p->head_start;
  size_t hlen = p->pos - p->head_start;

  rage__req_t *req = rage__req_new(p->pools);
  /* One copy of the head holds the target, the names and the values. Each is NUL-terminated in
   * place, over the byte that follows it in the raw head: the space after the target, the colon
   * after a name, the white space or CR after a (trimmed) value. */
  char *copy = rage__arena_alloc(&req->arena, hlen + HEAD_PAD);
  memcpy(copy, base, hlen);
  memset(copy + hlen, 0, HEAD_PAD);
  int status = 400;
  size_t lines = 0, ends[HEAD_LINES];
  const char *reason = check_line_ends(copy, hlen, ends, &lines);
  if (reason) goto reject;
  if (m->major != 1 || m->minor > 1) {
    status = 505;
    reason = "HTTP Version Not Supported";
    goto reject;
  }
  size_t nheaders = lines > 2 ? lines - 2 : 0; /* less the request line and the empty line */
  if (nheaders > p->cfg->max_headers) {
    status = 431;
    reason = "Too Many Header Fields";
    goto reject;
  }
  rage_header_t *hs = rage__arena_alloc(&req->arena, (nheaders ? nheaders : 1) * sizeof(*hs));
  size_t header_bytes = 0;
  int nhost = 0, ncl = 0, nte = 0, nexpect = 0, nother = 0, nconn = 0;
  const rage_header_t *te = NULL, *expect = NULL, *host = NULL, *rid = NULL;
  /* Header line i runs from the end of line i (the request line is line 0) to line i + 1's CR. */
  char *line = nheaders ? copy + ends[0] + 2 : NULL;
  for (size_t i = 0; i < nheaders; i++) {
    char *cr =
        i + 1 < HEAD_LINES ? copy + ends[i + 1] : memchr(line, '\r', (size_t)(copy + hlen - line));
    /* llhttp has checked the names of its heads (but lets an empty one through); a plain head's
     * name is checked here, and any byte before its colon that is not a token byte sends it back
     * to llhttp. */
    char *colon = name_end(line);
    if (*colon != ':' || colon == line) {
      reason = "Bad Request: malformed header line";
      goto reject;
    }
    /* Either loop stops at a byte other than white space: the CR, or the first byte of v. */
    char *v = colon + 1, *vend = cr;
    while (*v == ' ' || *v == '\t') v++;
    if (v < vend)
      while (vend[-1] == ' ' || vend[-1] == '\t') vend--;
    *colon = '\0';
    *vend = '\0';
    rage_header_t *x = &hs[i];
    x->name = line;
    x->name_len = (size_t)(colon - line);
    x->value = v;
    x->value_len = (size_t)(vend - v);
    header_bytes += x->name_len + x->value_len;
    line = cr + 2;
    /* llhttp checked the values of its heads; a plain head's is checked here, with the white
     * space around it. */
    if (m->plain && !plain_value(colon + 1, cr)) goto reject;
    switch (x->name_len) {
    case 4:
      if (name_is(x->name, 4, "host", 4)) nhost++, host = x;
      break;
    case 6:
      if (name_is(x->name, 6, "expect", 6)) nexpect++, expect = x;
      break;
    case 7: /* the headers llhttp reads for the connection's state: a plain head may only have
               one Connection header saying keep-alive, what HTTP/1.1 means without it */
      if (name_is(x->name, 7, "upgrade", 7)) nother++;
      break;
    case 10:
      if (name_is(x->name, 10, "connection", 10) &&
          (nconn++ || !rage__strieq(x->value, x->value_len, "keep-alive", 10)))
        nother++;
      break;
    case 16:
      if (name_is(x->name, 16, "proxy-connection", 16)) nother++;
      break;
    case 12:
      if (rid == NULL && name_is(x->name, 12, "x-request-id", 12)) rid = x;
      break;
    case 14:
      if (name_is(x->name, 14, "content-length", 14)) ncl++;
      break;
    case 17:
      if (name_is(x->name, 17, "transfer-encoding", 17)) nte++, te = x;
      break;
    default:
      break;
    }
  }
  req->headers = hs;
  req->nheaders = (unsigned)nheaders;
  if (m->plain && (ncl | nte | nexpect | nother)) goto reject;
  if (header_bytes > p->cfg->max_header_size) {
    status = 431;
    reason = "Request Header Fields Too Large";
    goto reject;
  }

  reason = "Bad Request: duplicate Host header";
  if (nhost > 1) goto reject;
  reason = "Bad Request: missing Host header";
  if (nhost == 0 && m->minor == 1) goto reject;
  reason = "Bad Request: invalid Host header";
  if (host && !valid_host(host->value, host->value_len)) goto reject;
  const char *url = copy + p->url_off;
  size_t url_len = p->url_len;
  const char *uend = url + url_len;
  /* With no fragment, q is where the query starts: in the path of either form of target, since
   * an authority ends at a '?' and a scheme has none. */
  const char *q = find_query(url, uend);
  reason = "Bad Request: fragment in request target";
  if (q < uend && (*q == '#' || memchr(q, '#', (size_t)(uend - q)))) goto reject;
  /* absolute-form (RFC 9112 3.2.2): keep the path; the authority was checked like a Host. */
  if (url_len > 7 && (rage__strieq(url, 7, "http://", 7) ||
                      (url_len > 8 && rage__strieq(url, 8, "https://", 8)))) {
    size_t skip = url[4] == ':' ? 7 : 8;
    const char *auth = url + skip;
    const char *slash = auth;
    while (slash < uend && *slash != '/' && *slash != '?') slash++;
    reason = "Bad Request: invalid authority in request target";
    if (slash == auth || !valid_host(auth, (size_t)(slash - auth))) goto reject;
    p->url_off += (size_t)(slash - url);
    p->url_len = (size_t)(uend - slash);
  } else if (url_len == 0 || (url[0] != '/' && !(url_len == 1 && url[0] == '*') &&
                              m->method != HTTP_CONNECT)) {
    reason = "Bad Request: invalid request target";
    goto reject;
  }
  reason = "Bad Request: duplicate Content-Length header";
  if (ncl > 1) goto reject;
  reason = "Bad Request: duplicate Transfer-Encoding header";
  if (nte > 1) goto reject;
  reason = "Bad Request: both Content-Length and Transfer-Encoding";
  if (ncl && nte) goto reject;
  if (te && !is_token(te->value, te->value_len, "chunked")) {
    status = 501;
    reason = "Not Implemented: unsupported transfer coding";
    goto reject;
  }
  int expect_continue = 0;
  reason = "Bad Request: duplicate Expect header";
  if (nexpect > 1) goto reject;
  if (expect) {
    if (!is_token(expect->value, expect->value_len, "100-continue")) {
      status = 417;
      reason = "Expectation Failed";
      goto reject;
    }
    expect_continue = m->minor == 1;
  }
  const char *target = copy + p->url_off;
  size_t path_len = (size_t)(q - target);
  p->max_body = body_limit(p->cfg, target, path_len);
  if (ncl && m->content_length > p->max_body) {
    status = 413;
    reason = "Payload Too Large";
    goto reject;
  }

  req->method_id = m->method;
  req->method = llhttp_method_name((llhttp_method_t)m->method);
  req->method_len = strlen(req->method);
  if (p->url_len == 0) { /* absolute-form with an empty path means "/" */
    req->target = rage__arena_strndup(&req->arena, "/", 1);
    req->target_len = req->path_len = 1;
  } else {
    req->target = copy + p->url_off;
    req->target_len = p->url_len;
    req->target[p->url_len] = '\0';
    req->path_len = path_len;
  }
  req->want_id = p->cfg->request_id != 0;
  if (rid) rage__req_take_id(req, rid->value, rid->value_len);
  p->header_count = nheaders;
  p->header_bytes = header_bytes;
  if (nte) {
    p->in_trailer_name = 0;
    p->parser.settings = (void *)&settings_chunked; /* until the message completes */
  }
  req->http_major = (uint8_t)m->major;
  req->http_minor = (uint8_t)m->minor;
  req->keep_alive = (m->plain || m->keep_alive) && m->method != HTTP_CONNECT;
  req->head_only = m->method == HTTP_HEAD;
  req->expect_continue = (uint8_t)expect_continue;
  p->req = req;
  if (ncl && m->content_length > p->cfg->body_buffer) {
    int r = rage__req_body_spool(req);
    if (r != 0) return body_store_failed(p, r);
  } else if (ncl && m->content_length > 0) {
    rage__buf_reserve(&req->body, (size_t)m->content_length);
  }
  p->state = RAGE_HTTP1_BODY;
  int has_body = (ncl && m->content_length > 0) || nte;
  if (has_body && p->cbs->on_head) p->cbs->on_head(p, req);
  return 0;

reject:
  rage__req_free(req);
  if (m->plain) return PLAIN_NO;
  return fail(p, status, reason);
}

/* The first "\r\n\r\n" in [s, end), or NULL: a head's end, found by its LFs a word at a time
 * (glibc's memmem costs several times more for a needle of four bytes). */
static const char *head_end(const char *s, const char *end) {
  const char *w = s;
  for (; end - w >= 8; w += 8) {
    /* The lowest flag is exact and any above it are checked: every LF is flagged. */
    for (uint64_t m = rage__swar_eq(rage__swar_load(w), '\n'); m; m &= m - 1) {
      const char *lf = w + rage__swar_first(m);
      if (*lf == '\n' && lf - s >= 3 && lf[-1] == '\r' && lf[-2] == '\n' && lf[-3] == '\r')
        return lf - 3;
    }
  }
  for (; w < end; w++)
    if (*w == '\n' && w - s >= 3 && w[-1] == '\r' && w[-2] == '\n' && w[-3] == '\r') return w - 3;
  return NULL;
}

/*
 * The plain head: most requests are a GET or HEAD of HTTP/1.1 with an origin-form target and a
 * few ordinary headers, and nothing in them needs llhttp's state machine (about 1,100
 * instructions of a W1 request's 7,000). A head that is whole in the buffer and of exactly that
 * shape is read here and by head_complete in one pass: request line "GET " or "HEAD ", a target
 * of pchar, '/' and '?' (no fragment, no absolute-form), " HTTP/1.1"; header names that are
 * tokens, values of visible ASCII, space and tab; no Content-Length, Transfer-Encoding, Expect,
 * Upgrade or Proxy-Connection, and at most one Connection header, saying keep-alive: the request
 * keeps the connection, and llhttp, which never saw it, can take the next one as it would.
 * Anything else, an error included, returns PLAIN_NO and llhttp parses the same bytes as if
 * this function did not exist: the plain head is a subset of what llhttp accepts, read the same
 * way (test-http1 and fuzz-http1 compare the two on the same input). Only tried at a message
 * boundary where llhttp would start a new message (p->plain).
 */
static int plain_head(rage__http1_t *p) {
  const char *s = DATA(p) + p->pos, *end = DATA(p) + p->len;
  int method;
  size_t mlen;
  if (end - s < 18) return PLAIN_NO; /* "GET / HTTP/1.1\r\n\r\n" */
  if (memcmp(s, "GET /", 5) == 0) {
    method = HTTP_GET;
    mlen = 3;
  } else if (memcmp(s, "HEAD /", 6) == 0) {
    method = HTTP_HEAD;
    mlen = 4;
  } else {
    return PLAIN_NO;
  }
  const char *target = s + mlen + 1, *t = target;
  while (t < end && (url_byte[(unsigned char)*t] & TARGET)) t++;
  if (end - t < 13 || memcmp(t, " HTTP/1.1\r\n", 11) != 0) return PLAIN_NO;
  size_t tlen = (size_t)(t - target);
  if (tlen > p->cfg->max_request_line) return PLAIN_NO;
  const char *last = head_end(t + 9, end);
  if (last == NULL) return PLAIN_NO; /* not whole yet */
  size_t pos = p->pos;
  p->head_start = pos;
  p->url_off = mlen + 1;
  p->url_len = tlen;
  p->pos = (size_t)(last + 4 - DATA(p));
  head_t m = {.method = method, .major = 1, .minor = 1, .plain = 1};
  if (head_complete(p, &m) == PLAIN_NO) {
    p->pos = pos;
    p->head_start = 0;
    p->url_off = p->url_len = 0;
    return PLAIN_NO;
  }
  p->url_done = 1;
  p->requests++;
  return 0;
}

/* How many header lines of the head received so far are named `name` (any case): up to the empty
 * line that ends the head, so that a trailer of the same name, when buffered, does not count. */
static unsigned count_header(rage__http1_t *p, const char *name) {
  size_t nlen = strlen(name);
  const char *s = DATA(p) + p->head_start, *end = DATA(p) + p->len;
  unsigned n = 0;
  const char *lf = memchr(s, '\n', (size_t)(end - s));
  while (lf && lf + 1 < end) {
    const char *line = lf + 1;
    if (*line == '\r' || *line == '\n') break;
    const char *colon = memchr(line, ':', (size_t)(end - line));
    lf = memchr(line, '\n', (size_t)(end - line));
    if (colon && (!lf || colon < lf) && rage__strieq(line, (size_t)(colon - line), name, nlen)) n++;
  }
  return n;
}

/* The status for an error llhttp reports, and its reason (llhttp's, unless a callback set one). */
static int status_for(rage__http1_t *p, llhttp_errno_t err, const char **reason) {
  *reason = p->err_status ? p->err_reason : llhttp_get_error_reason(&p->parser);
  if (p->err_status) return p->err_status;
  switch (err) {
  case HPE_INVALID_METHOD:
    return 501;
  case HPE_INVALID_VERSION:
    return 505;
  case HPE_INVALID_TRANSFER_ENCODING:
    /* llhttp takes a repeated Transfer-Encoding for an unsupported coding; it is a framing
     * conflict, answered as a repeated Content-Length is. */
    if (count_header(p, "transfer-encoding") > 1) {
      *reason = "Bad Request: duplicate Transfer-Encoding header";
      return 400;
    }
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
    if (p->state == RAGE_HTTP1_IDLE && p->plain && plain_head(p) == 0) {
      p->state = RAGE_HTTP1_PAUSED;
      break;
    }
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
        llhttp_t *h = &p->parser;
        head_t m = {.method = h->method, .major = h->http_major, .minor = h->http_minor,
                    .keep_alive = llhttp_should_keep_alive(h) && !(h->flags & F_UPGRADE),
                    .content_length = h->content_length};
        if (head_complete(p, &m) != 0) {
          rage__http1_fail(p, p->err_status, p->err_reason);
          return;
        }
        again = 1;
        continue;
      }
      p->state = RAGE_HTTP1_PAUSED;
      break;
    }
    const char *reason;
    int status = status_for(p, err, &reason);
    rage__http1_fail(p, status, reason);
    return;
  }
  compact(p);
  if (p->state == RAGE_HTTP1_HEAD && p->rbuf && p->len >= p->pools->rbuf_size) {
    if (!p->url_done) rage__http1_fail(p, 414, "URI Too Long");
    else rage__http1_fail(p, 431, "Request Header Fields Too Large");
    return;
  }
  if (p->state == RAGE_HTTP1_PAUSED) {
    rage__req_t *req = p->req;
    p->req = NULL;
    /* After a request that does not keep the connection, llhttp refuses what follows. */
    p->plain = req->keep_alive;
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
