/*
 * test-http1.c - the request parser glue: requests, pipelining, bodies, limits at their exact
 * boundary, and hostile framing. Every case is checked with the input whole, one byte at a time
 * and split in two at every offset: the outcome must never depend on how bytes arrive.
 */
#include "http1.h"
#include "test.h"

typedef struct {
  char log[65536];      /* "METHOD target [body] ka=N|" per request */
  int nreq;
  int status;           /* error status, 0 if none */
  int heads;            /* on_head calls */
  int paused;
  int last_expect;
  char xa[64];          /* value of header X-A in the last request */
  char hdrs[16384];     /* "name=value|" for every header of every request */
  int spooled;          /* requests whose body went to a temporary file */
  int llhttp_only;      /* every head through llhttp, none read as a plain head */
} outcome_t;

static void on_head(rage__http1_t *p, rage__req_t *req) {
  outcome_t *o = p->data;
  o->heads++;
  o->last_expect = req->expect_continue;
}

static void on_request(rage__http1_t *p, rage__req_t *req) {
  outcome_t *o = p->data;
  size_t n = strlen(o->log);
  char body[65];
  ssize_t blen = rage__req_body_read(req, 0, body, 64);
  ASSERT(blen >= 0);
  snprintf(o->log + n, sizeof(o->log) - n, "%s %s [%.*s] ka=%d h=%u|", req->method, req->target,
           (int)blen, body, req->keep_alive, req->nheaders);
  if (req->body_fd >= 0) o->spooled++;
  const rage_header_t *h = rage__req_header(req, "x-a", 3);
  if (h) snprintf(o->xa, sizeof(o->xa), "%s", h->value);
  for (unsigned i = 0; i < req->nheaders; i++) {
    const rage_header_t *x = &req->headers[i];
    ASSERT(x->name[x->name_len] == '\0' && x->value[x->value_len] == '\0');
    n = strlen(o->hdrs);
    snprintf(o->hdrs + n, sizeof(o->hdrs) - n, "%s=%s|", x->name, x->value);
  }
  o->nreq++;
  o->paused = 1;
  if (o->llhttp_only) p->plain = 0;
  rage__req_free(req);
}

static void on_error(rage__http1_t *p, int status, const char *reason) {
  outcome_t *o = p->data;
  ASSERT(o->status == 0); /* reported once */
  o->status = status;
}

static const rage__http1_cbs_t cbs = {on_head, on_request, on_error};

/* Feeds `in` cut at the offsets in `cuts` (ascending). */
static void run(const char *in, size_t len, const size_t *cuts, size_t ncuts,
                const rage_server_config_t *cfg, outcome_t *o, int llhttp_only) {
  rage__pools_t pools;
  rage__http1_t p;
  memset(o, 0, sizeof(*o));
  o->llhttp_only = llhttp_only;
  rage__pools_init(&pools, cfg);
  rage__http1_init(&p, cfg, &pools, &cbs, o);
  if (llhttp_only) p.plain = 0;
  size_t off = 0;
  for (size_t i = 0; i <= ncuts && !o->status; i++) {
    size_t end = i < ncuts ? cuts[i] : len;
    while (off < end && !o->status) {
      uv_buf_t b;
      if (!rage__http1_alloc(&p, &b)) {
        o->status = -1; /* buffer full: the parser should have failed first */
        break;
      }
      size_t n = end - off < b.len ? end - off : b.len;
      memcpy(b.base, in + off, n);
      off += n;
      rage__http1_feed(&p, n);
      while (o->paused && !o->status) {
        o->paused = 0;
        rage__http1_resume(&p);
      }
    }
  }
  if (!o->status) {
    /* Everything parsed and handled: nothing may stay buffered. */
    ASSERT(p.rbuf == NULL || p.state == RAGE_HTTP1_HEAD || p.state == RAGE_HTTP1_BODY);
  }
  rage__http1_free(&p);
  rage__pools_free(&pools);
}

static void expect_same(const outcome_t *a, const outcome_t *b, const char *how) {
  if (a->status != b->status || a->nreq != b->nreq || strcmp(a->log, b->log) != 0 ||
      strcmp(a->hdrs, b->hdrs) != 0) {
    fprintf(stderr, "outcome differs when fed %s:\n whole: status=%d n=%d %s\n split: status=%d n=%d %s\n",
            how, a->status, a->nreq, a->log, b->status, b->nreq, b->log);
    exit(1);
  }
}

/* Checks the outcome whole, byte by byte and at every two-piece split, and whole again with every
 * head through llhttp: a plain head (read without llhttp when it arrives whole) must come out as
 * llhttp's parse of it does. */
static void check(const char *in, size_t len, const rage_server_config_t *cfg, int want_status,
                  int want_nreq, const char *want_log) {
  static outcome_t whole, other;
  rage_server_config_t defaults;
  if (cfg == NULL) {
    rage_server_config_init(&defaults);
    cfg = &defaults;
  }
  run(in, len, NULL, 0, cfg, &whole, 0);
  if (whole.status != want_status || whole.nreq != want_nreq ||
      (want_log && strcmp(whole.log, want_log) != 0)) {
    fprintf(stderr, "input: %.200s\nwanted status=%d n=%d log=%s\ngot    status=%d n=%d log=%s\n", in,
            want_status, want_nreq, want_log ? want_log : "*", whole.status, whole.nreq, whole.log);
    exit(1);
  }
  size_t *cuts = calloc(len + 1, sizeof(size_t));
  for (size_t i = 0; i < len; i++) cuts[i] = i + 1;
  run(in, len, NULL, 0, cfg, &other, 1);
  expect_same(&whole, &other, "whole, every head through llhttp");
  run(in, len, cuts, len ? len - 1 : 0, cfg, &other, 0);
  expect_same(&whole, &other, "one byte at a time");
  size_t step = len > 4096 ? len / 512 : 1;
  for (size_t k = 1; k < len; k += step) {
    run(in, len, &k, 1, cfg, &other, 0);
    char how[64];
    snprintf(how, sizeof(how), "split at %zu", k);
    expect_same(&whole, &other, how);
  }
  free(cuts);
}

#define CHECK(in, status, nreq, log) check(in, sizeof(in) - 1, NULL, status, nreq, log)

TEST(simple_get) {
  CHECK("GET /a?b=1 HTTP/1.1\r\nHost: x\r\nX-A:  v \t\r\n\r\n", 0, 1, "GET /a?b=1 [] ka=1 h=2|");
}

TEST(header_values_trimmed) {
  static outcome_t o;
  rage_server_config_t cfg;
  rage_server_config_init(&cfg);
  const char in[] = "GET / HTTP/1.1\r\nHost: x\r\nX-A:  v w \t\r\n\r\n";
  run(in, sizeof(in) - 1, NULL, 0, &cfg, &o, 0);
  ASSERT_EQ(o.nreq, 1);
  ASSERT_STR(o.xa, "v w");
  /* Tabs inside a value stay; empty values are empty; a long line spans many 8-byte words. */
  const char tabs[] = "GET / HTTP/1.1\r\nHost: x\r\nX-E:\r\nX-A:\ta\tb\t\r\nX-Z: 0123456789abcdef"
                      "0123456789abcdef0123456789abcdef\r\n\r\n";
  run(tabs, sizeof(tabs) - 1, NULL, 0, &cfg, &o, 0);
  ASSERT_EQ(o.nreq, 1);
  ASSERT_STR(o.xa, "a\tb");
  CHECK("GET / HTTP/1.1\r\nHost: x\r\nX-E:\r\nX-F:  \r\n\r\n", 0, 1, "GET / [] ka=1 h=3|");
}

TEST(pipelined_in_order) {
  CHECK("GET /1 HTTP/1.1\r\nHost: x\r\n\r\n"
        "POST /2 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
        "GET /3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        0, 3, "GET /1 [] ka=1 h=1|POST /2 [abc] ka=1 h=2|GET /3 [] ka=0 h=2|");
}

TEST(leading_empty_lines_ignored) {
  CHECK("\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n", 0, 1, "GET / [] ka=1 h=1|");
}

TEST(chunked_body) {
  CHECK("POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        "5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nTrailer: t\r\n\r\n"
        "GET /after HTTP/1.1\r\nHost: x\r\n\r\n",
        0, 2, "POST /c [hello world] ka=1 h=2|GET /after [] ka=1 h=1|");
}

/* Past body_buffer, a body goes to a temporary file as it arrives, with the same outcome. */
TEST(body_spooled_to_file) {
  static outcome_t o;
  rage_server_config_t cfg;
  rage_server_config_init(&cfg);
  cfg.body_buffer = 4;
  const char in[] = "POST /cl HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello world"
                    "POST /small HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nfour"
                    "POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                    "3\r\nhel\r\n8\r\nlo world\r\n0\r\n\r\n";
  const char *want = "POST /cl [hello world] ka=1 h=2|POST /small [four] ka=1 h=2|"
                     "POST /c [hello world] ka=1 h=2|";
  check(in, sizeof(in) - 1, &cfg, 0, 3, want);
  run(in, sizeof(in) - 1, NULL, 0, &cfg, &o, 0);
  ASSERT_EQ(o.spooled, 2); /* the 4-byte body fits the buffer */

  /* Reads at any offset see the same bytes as a buffered body. */
  rage__pools_t pools;
  rage__pools_init(&pools, &cfg);
  rage__req_t *req = rage__req_new(&pools);
  ASSERT_EQ(rage__req_body_append(req, "abc", 3, 4), 0);
  ASSERT(req->body_fd < 0);
  ASSERT_EQ(rage__req_body_append(req, "defgh", 5, 4), 0);
  ASSERT(req->body_fd >= 0);
  ASSERT_EQ(req->body_len, 8);
  char buf[16];
  ASSERT_EQ(rage__req_body_read(req, 2, buf, 4), 4);
  ASSERT(memcmp(buf, "cdef", 4) == 0);
  ASSERT_EQ(rage__req_body_read(req, 6, buf, 16), 2);
  ASSERT_EQ(rage__req_body_read(req, 8, buf, 16), 0);
  rage__req_free(req);
  rage__pools_free(&pools);

  /* Nowhere to put the body: 500, by Content-Length from the head, or once chunks outgrow it. */
  const char *saved = getenv("TMPDIR");
  char *keep = saved ? strdup(saved) : NULL;
  setenv("TMPDIR", "/nonexistent/rage-test", 1);
  const char cl[] = "POST /cl HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello world";
  run(cl, sizeof(cl) - 1, NULL, 0, &cfg, &o, 0);
  ASSERT_EQ(o.status, 500);
  ASSERT_EQ(o.nreq, 0);
  const char te[] = "POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                    "3\r\nhel\r\n8\r\nlo world\r\n0\r\n\r\n";
  run(te, sizeof(te) - 1, NULL, 0, &cfg, &o, 0);
  ASSERT_EQ(o.status, 500);
  ASSERT_EQ(o.nreq, 0);
  if (keep) setenv("TMPDIR", keep, 1);
  else unsetenv("TMPDIR");
  free(keep);
}

TEST(http10) {
  CHECK("GET / HTTP/1.0\r\n\r\n", 0, 1, "GET / [] ka=0 h=0|");
  CHECK("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /2 HTTP/1.0\r\n\r\n", 0, 2,
        "GET / [] ka=1 h=1|GET /2 [] ka=0 h=0|");
}

TEST(expect_continue) {
  static outcome_t o;
  rage_server_config_t cfg;
  rage_server_config_init(&cfg);
  const char in[] = "PUT /u HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nok";
  run(in, sizeof(in) - 1, NULL, 0, &cfg, &o, 0);
  ASSERT_EQ(o.heads, 1);
  ASSERT_EQ(o.last_expect, 1);
  ASSERT_EQ(o.nreq, 1);
  CHECK("PUT /u HTTP/1.1\r\nHost: x\r\nExpect: something\r\nContent-Length: 2\r\n\r\nok", 417, 0, "");
}

static char *repeat(const char *prefix, char c, size_t n, const char *suffix) {
  size_t pl = strlen(prefix), sl = strlen(suffix);
  char *s = malloc(pl + n + sl + 1);
  memcpy(s, prefix, pl);
  memset(s + pl, c, n);
  memcpy(s + pl + n, suffix, sl + 1);
  return s;
}

TEST(limit_request_target) {
  /* The target is "/" followed by n-1 letters: exactly 8192 bytes passes, 8193 is 414. */
  char *ok = repeat("GET /", 'a', 8191, " HTTP/1.1\r\nHost: x\r\n\r\n");
  check(ok, strlen(ok), NULL, 0, 1, NULL);
  char *over = repeat("GET /", 'a', 8192, " HTTP/1.1\r\nHost: x\r\n\r\n");
  check(over, strlen(over), NULL, 414, 0, "");
  free(ok);
  free(over);
}

TEST(limit_header_bytes) {
  /* Header names plus values: "Host"+"x" = 5, "X-Big" = 5, so the value gets 16384 - 10. */
  char *ok = repeat("GET / HTTP/1.1\r\nHost: x\r\nX-Big: ", 'v', 16384 - 10, "\r\n\r\n");
  check(ok, strlen(ok), NULL, 0, 1, NULL);
  char *over = repeat("GET / HTTP/1.1\r\nHost: x\r\nX-Big: ", 'v', 16384 - 9, "\r\n\r\n");
  check(over, strlen(over), NULL, 431, 0, "");
  free(ok);
  free(over);
}

static char *many_headers(unsigned n) {
  rage__buf_t b = {0};
  rage__buf_append(&b, "GET / HTTP/1.1\r\nHost: x\r\n", 25);
  for (unsigned i = 1; i < n; i++) {
    char line[32];
    int len = snprintf(line, sizeof(line), "X-%u: %u\r\n", i, i);
    rage__buf_append(&b, line, (size_t)len);
  }
  rage__buf_append(&b, "\r\n", 3);
  return b.data;
}

TEST(header_lines_at_every_offset) {
  /* Names and values of every length around the 8-byte steps of the head's scans, so that the
   * colon, the line ends and the end of the head fall at every offset of a word. */
  static outcome_t o;
  rage_server_config_t cfg;
  rage_server_config_init(&cfg);
  static const char *ows[] = {"", " ", " \t "};
  char in[256], want[256], name[32], value[32];
  for (size_t n = 1; n <= 20; n++) {
    for (size_t v = 0; v <= 17; v++) {
      for (size_t w = 0; w < 3; w++) {
        memset(name, 'n', n);
        name[n] = '\0';
        for (size_t i = 0; i < v; i++) value[i] = (char)(i == v / 2 ? ':' : 'a' + i);
        value[v] = '\0';
        snprintf(in, sizeof(in), "GET / HTTP/1.1\r\nHost: x\r\n%s:%s%s%s\r\nX-A: z\r\n\r\n", name,
                 ows[w], value, ows[w]);
        run(in, strlen(in), NULL, 0, &cfg, &o, 0);
        ASSERT_EQ(o.status, 0);
        ASSERT_EQ(o.nreq, 1);
        snprintf(want, sizeof(want), "Host=x|%s=%s|X-A=z|", name, value);
        ASSERT_STR(o.hdrs, want);
      }
    }
  }
}

static char *many_headers(unsigned n);

TEST(many_header_lines) {
  /* Past the line ends the head check records (the default max_headers): the rest are found
   * again while splitting. */
  static outcome_t o;
  rage_server_config_t cfg;
  rage_server_config_init(&cfg);
  cfg.max_headers = 400;
  char *in = many_headers(400);
  run(in, strlen(in), NULL, 0, &cfg, &o, 0);
  ASSERT_EQ(o.status, 0);
  ASSERT_EQ(o.nreq, 1);
  rage__buf_t want = {0};
  rage__buf_append(&want, "Host=x|", 7);
  for (unsigned i = 1; i < 400; i++) {
    char line[32];
    int len = snprintf(line, sizeof(line), "X-%u=%u|", i, i);
    rage__buf_append(&want, line, (size_t)len);
  }
  rage__buf_append(&want, "", 1);
  ASSERT_STR(o.hdrs, want.data);
  check(in, strlen(in), &cfg, 0, 1, "GET / [] ka=1 h=400|");
  free(in);
  in = many_headers(401);
  check(in, strlen(in), &cfg, 431, 0, "");
  free(in);
  rage__buf_free(&want);
}

TEST(limit_header_count) {
  char *ok = many_headers(100);
  check(ok, strlen(ok), NULL, 0, 1, NULL);
  char *over = many_headers(101);
  check(over, strlen(over), NULL, 431, 0, "");
  free(ok);
  free(over);
}

TEST(limit_body) {
  rage_server_config_t cfg;
  rage_server_config_init(&cfg);
  cfg.max_body = 100;
  char *ok = repeat("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n", 'b', 100, "");
  check(ok, strlen(ok), &cfg, 0, 1, NULL);
  /* Over the limit by Content-Length: refused from the head, before any body byte. */
  const char over[] = "POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 101\r\n\r\n";
  static outcome_t o;
  run(over, sizeof(over) - 1, NULL, 0, &cfg, &o, 0);
  ASSERT_EQ(o.status, 413);
  ASSERT_EQ(o.heads, 0); /* no 100 Continue for a body that will be refused */
  /* Chunked: the de-chunked size counts. */
  const char chunked_ok[] = "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                            "32\r\n01234567890123456789012345678901234567890123456789\r\n"
                            "32\r\n01234567890123456789012345678901234567890123456789\r\n0\r\n\r\n";
  check(chunked_ok, sizeof(chunked_ok) - 1, &cfg, 0, 1, NULL);
  const char chunked_over[] = "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                              "32\r\n01234567890123456789012345678901234567890123456789\r\n"
                              "33\r\n012345678901234567890123456789012345678901234567890\r\n0\r\n\r\n";
  check(chunked_over, sizeof(chunked_over) - 1, &cfg, 413, 0, "");
  free(ok);
}

TEST(limit_body_per_route) {
  rage_server_config_t cfg;
  rage_server_config_init(&cfg);
  cfg.max_body = 10;
  rage_body_limit_t limits[] = {{"/uploads", 100}, {"/uploads/tiny", 5}, {"/a/", 50}};
  cfg.body_limits = limits;
  cfg.nbody_limits = 3;
  char *big = repeat("POST /uploads/x HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n", 'b', 100, "");
  check(big, strlen(big), &cfg, 0, 1, NULL);
  free(big);
  const char over[] = "POST /uploads HTTP/1.1\r\nHost: x\r\nContent-Length: 101\r\n\r\n";
  check(over, sizeof(over) - 1, &cfg, 413, 0, "");
  const char tiny[] = "POST /uploads/tiny?q=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\r\n";
  check(tiny, sizeof(tiny) - 1, &cfg, 413, 0, "");
  /* "/uploadsX" is not under "/uploads": the default applies. */
  const char other[] = "POST /uploadsX HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n";
  check(other, sizeof(other) - 1, &cfg, 413, 0, "");
  char *a = repeat("POST /a/b HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n", 'b', 50, "");
  check(a, strlen(a), &cfg, 0, 1, NULL);
  free(a);
}

TEST(limit_chunk_extensions) {
  rage_server_config_t cfg;
  rage_server_config_init(&cfg);
  cfg.max_chunk_ext = 20;
  /* Extension name and value bytes: "name" (4) + 16 = 20 passes; one more is 413. */
  const char ok[] = "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                    "1;name=aaaaaaaaaaaaaaaa\r\nx\r\n0\r\n\r\n";
  check(ok, sizeof(ok) - 1, &cfg, 0, 1, NULL);
  const char over[] = "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                      "1;name=aaaaaaaaaaaaaaaaa\r\nx\r\n0\r\n\r\n";
  check(over, sizeof(over) - 1, &cfg, 413, 0, "");
}

TEST(smuggling_vectors) {
  /* Each is refused with 400 and nothing after it is processed. */
  CHECK("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
        "0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n", 400, 0, "");
  CHECK("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n",
        400, 0, "");
  CHECK("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc", 400, 0, "");
  CHECK("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400, 0, "");
  CHECK("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 3\r\n\r\nabc", 400, 0, "");
  CHECK("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400, 0, "");
  CHECK("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1a\r\n\r\n", 400, 0, "");
  CHECK("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"
        "0\r\n\r\n", 400, 0, "");
  CHECK("GET / HTTP/1.1\r\nHost: x\r\nX-Fold: a\r\n b\r\n\r\n", 400, 0, "");
  CHECK("GET / HTTP/1.1\r\nHost: x\r\nX-Fold: a\r\n\tb\r\n\r\n", 400, 0, "");
  CHECK("GET / HTTP/1.1\nHost: x\r\n\r\n", 400, 0, "");
  CHECK("GET / HTTP/1.1\r\nHost: x\nX-A: b\r\n\r\n", 400, 0, "");
  CHECK("GET / HTTP/1.1\r\nHost: x\r\n\n", 400, 0, "");
  CHECK("GET / HTTP/1.1\r\nHost: x\rX-A: b\r\n\r\n", 400, 0, "");
  CHECK("GET / HTTP/1.1\r\nHost: x\r\nX-A: a\0b\r\n\r\n", 400, 0, "");
  CHECK("GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400, 0, "");
  CHECK("GET / HTTP/1.1\r\n Host: x\r\n\r\n", 400, 0, "");
  CHECK("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n", 400, 0, "");
  CHECK("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        "fffffffffffffffff\r\nabc\r\n0\r\n\r\n", 400, 0, "");
  CHECK("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n0\r\n\r\n", 400, 0, "");
  CHECK("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\n", 400, 0, "");
}

TEST(host_rules) {
  CHECK("GET / HTTP/1.1\r\n\r\n", 400, 0, "");
  CHECK("GET / HTTP/1.1\r\nHost: local host\r\n\r\n", 400, 0, "");
  CHECK("GET / HTTP/1.1\r\nHost: localhost/evil\r\n\r\n", 400, 0, "");
  CHECK("GET / HTTP/1.1\r\nHost: user@localhost\r\n\r\n", 400, 0, "");
  CHECK("GET / HTTP/1.1\r\nHost: localhost:80x\r\n\r\n", 400, 0, "");
  CHECK("GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n", 0, 1, NULL);
  CHECK("GET / HTTP/1.1\r\nHost: example.com:443\r\n\r\n", 0, 1, NULL);
  CHECK("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, 0, "");
  CHECK("GET / HTTP/1.0\r\n\r\n", 0, 1, NULL);
}

TEST(versions_methods_codings) {
  CHECK("GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505, 0, "");
  CHECK("GET / HTTP/1.2\r\nHost: x\r\n\r\n", 505, 0, "");
  CHECK("GET / HTTP/0.9\r\nHost: x\r\n\r\n", 505, 0, "");
  CHECK("FOO / HTTP/1.1\r\nHost: x\r\n\r\n", 501, 0, "");
  CHECK("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501, 0, "");
  CHECK("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501, 0, "");
  CHECK("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n", 501, 0, "");
  CHECK("garbage\r\n\r\n", 501, 0, "");
}

TEST(request_targets) {
  CHECK("GET http://example.com/a/b?c=1 HTTP/1.1\r\nHost: example.com\r\n\r\n", 0, 1,
        "GET /a/b?c=1 [] ka=1 h=1|");
  CHECK("GET https://example.com HTTP/1.1\r\nHost: example.com\r\n\r\n", 0, 1, "GET / [] ka=1 h=1|");
  CHECK("GET http:///a HTTP/1.1\r\nHost: example.com\r\n\r\n", 400, 0, "");
  CHECK("GET /a#frag HTTP/1.1\r\nHost: x\r\n\r\n", 400, 0, "");
  CHECK("OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", 0, 1, "OPTIONS * [] ka=1 h=1|");
  CHECK("GET a/b HTTP/1.1\r\nHost: x\r\n\r\n", 400, 0, "");
}

TEST(error_is_sticky) {
  CHECK("GET /ok HTTP/1.1\r\nHost: x\r\n\r\n"
        "GET /bad HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx"
        "GET /never HTTP/1.1\r\nHost: x\r\n\r\n",
        400, 1, "GET /ok [] ka=1 h=1|");
}

/* Heads read without llhttp when whole (check() compares each with llhttp's reading of it), and
 * the near misses that must go to llhttp: the outcome is the same either way. */
TEST(plain_heads) {
  CHECK("HEAD /a/b;c=d/e:f@g!$&'()*+,%20~?q=1&r=/?x HTTP/1.1\r\nHost: h\r\n\r\n", 0, 1,
        "HEAD /a/b;c=d/e:f@g!$&'()*+,%20~?q=1&r=/?x [] ka=1 h=1|");
  /* After a request that closes the connection, llhttp refuses more. */
  CHECK("GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\nGET /never HTTP/1.1\r\n\r\n", 400,
        1, "GET / [] ka=0 h=2|");
  CHECK("GET / HTTP/1.1\r\nHost: h\r\nConnection: CLOSE\r\n\r\n", 0, 1, "GET / [] ka=0 h=2|");
  CHECK("GET / HTTP/1.1\r\nHost: h\r\nConnection: Keep-Alive\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n",
        0, 2, "GET / [] ka=1 h=2|GET /2 [] ka=1 h=1|");
  CHECK("GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, close\r\n\r\n", 0, 1,
        "GET / [] ka=0 h=2|");
  CHECK("GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n", 0, 1,
        "GET / [] ka=0 h=3|");
  CHECK("GET / HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n", 0, 1,
        "GET / [] ka=0 h=3|");
  CHECK("GET / HTTP/1.1\r\nHost: h\r\nProxy-Connection: close\r\n\r\n", 0, 1, NULL);
  CHECK("GET / HTTP/1.1\r\nHost: h\r\nX-A: caf\xc3\xa9\r\n\r\n", 0, 1, NULL);
  CHECK("GET / HTTP/1.1\r\nHost: h\r\nX-A: a\x7f\r\n\r\n", 400, 0, "");
  CHECK("GET / HTTP/1.1\r\nHost: h\r\nX-A: a\x01b\r\n\r\n", 400, 0, "");
  CHECK("GET / HTTP/1.1\r\nHost: h\r\nX-A:\r\nX-B: \t \r\n\r\n", 0, 1, "GET / [] ka=1 h=3|");
  CHECK("GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nab", 0, 1, "GET / [ab] ka=1 h=2|");
  CHECK("GET / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n", 0, 1, NULL);
  CHECK("GET /a\"b HTTP/1.1\r\nHost: h\r\n\r\n", 0, 1, NULL);
  CHECK("GET /a{b} HTTP/1.1\r\nHost: h\r\n\r\n", 0, 1, NULL);
  CHECK("GET /a\x80 HTTP/1.1\r\nHost: h\r\n\r\n", 400, 0, "");
  CHECK("GET /a?b#c HTTP/1.1\r\nHost: h\r\n\r\n", 400, 0, "");
  CHECK("GET  / HTTP/1.1\r\nHost: h\r\n\r\n", 0, 1, "GET / [] ka=1 h=1|"); /* llhttp allows it */
  CHECK("GET / HTTP/1.1 \r\nHost: h\r\n\r\n", 505, 0, "");
  CHECK("GET / http/1.1\r\nHost: h\r\n\r\n", 400, 0, "");
  CHECK("GET / HTTP/1.0\r\nHost: h\r\n\r\n", 0, 1, "GET / [] ka=0 h=1|");
  CHECK("get / HTTP/1.1\r\nHost: h\r\n\r\n", 501, 0, "");
  CHECK("GET / HTTP/1.1\r\nHost: h\r\nX A: b\r\n\r\n", 400, 0, "");
  CHECK("GET / HTTP/1.1\r\nHost: h\r\n: b\r\n\r\n", 400, 0, "");
  /* A plain head, one that needs llhttp, and a plain one again, pipelined. */
  CHECK("GET /1 HTTP/1.1\r\nHost: h\r\n\r\n"
        "POST /2 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n"
        "GET /3 HTTP/1.1\r\nHost: h\r\n\r\n",
        0, 3, "GET /1 [] ka=1 h=1|POST /2 [ab] ka=1 h=2|GET /3 [] ka=1 h=1|");
}

TEST(idle_holds_no_buffer) {
  static outcome_t o;
  rage_server_config_t cfg;
  rage_server_config_init(&cfg);
  rage__pools_t pools;
  rage__http1_t p;
  memset(&o, 0, sizeof(o));
  rage__pools_init(&pools, &cfg);
  rage__http1_init(&p, &cfg, &pools, &cbs, &o);
  const char in[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHo";
  uv_buf_t b;
  ASSERT(rage__http1_alloc(&p, &b));
  memcpy(b.base, in, sizeof(in) - 1);
  rage__http1_feed(&p, sizeof(in) - 1);
  ASSERT_EQ(o.nreq, 1);
  ASSERT_EQ(p.state, RAGE_HTTP1_PAUSED);
  ASSERT(rage__http1_pending(&p) > 0); /* the next request waits in the buffer */
  o.paused = 0;
  rage__http1_resume(&p);
  ASSERT_EQ(p.state, RAGE_HTTP1_HEAD);
  ASSERT(p.rbuf != NULL);
  ASSERT(rage__http1_alloc(&p, &b));
  memcpy(b.base, "st: x\r\n\r\n", 9);
  rage__http1_feed(&p, 9);
  ASSERT_EQ(o.nreq, 2);
  o.paused = 0;
  rage__http1_resume(&p);
  ASSERT_EQ(p.state, RAGE_HTTP1_IDLE);
  ASSERT(p.rbuf == NULL); /* an idle keep-alive connection holds no read buffer */
  ASSERT_EQ(pools.nrbufs, 1);
  rage__http1_free(&p);
  rage__pools_free(&pools);
}

int main(int argc, char **argv) {
  static const test_entry_t tests[] = {
      TEST_ENTRY(simple_get),          TEST_ENTRY(header_values_trimmed),
      TEST_ENTRY(pipelined_in_order),  TEST_ENTRY(leading_empty_lines_ignored),
      TEST_ENTRY(chunked_body),        TEST_ENTRY(body_spooled_to_file), TEST_ENTRY(http10),
      TEST_ENTRY(expect_continue),     TEST_ENTRY(limit_request_target),
      TEST_ENTRY(limit_header_bytes),  TEST_ENTRY(limit_header_count),
      TEST_ENTRY(header_lines_at_every_offset), TEST_ENTRY(many_header_lines),
      TEST_ENTRY(limit_body),          TEST_ENTRY(limit_body_per_route),
      TEST_ENTRY(limit_chunk_extensions),
      TEST_ENTRY(smuggling_vectors),   TEST_ENTRY(host_rules),
      TEST_ENTRY(versions_methods_codings), TEST_ENTRY(request_targets), TEST_ENTRY(error_is_sticky),
      TEST_ENTRY(plain_heads), TEST_ENTRY(idle_holds_no_buffer), {NULL, NULL}};
  return test_main(argc, argv, tests);
}
