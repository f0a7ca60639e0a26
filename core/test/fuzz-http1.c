/*
 * fuzz-http1.c - libFuzzer target for the request path: arbitrary bytes, split into reads at
 * arbitrary points, through the same parser glue the server uses (alloc, feed, pause, resume).
 *
 * Input layout: byte 0 picks the limits (defaults or tiny ones, so that every limit is reached)
 * and the number of split points (0-7); the next bytes give the split points; the rest is the
 * data. Build with `make fuzz` (clang's libFuzzer) and let it run.
 *
 * Every input is parsed twice, the second time with every head through llhttp, and the two
 * transcripts (requests with their headers, errors with their reasons) must be the same: heads
 * read without llhttp (http1.c's plain heads) must be read as llhttp's parse reads them.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http1.h"

static int paused, llhttp_only;
static char transcript[2][65536];
static size_t tlen[2];
static int which;

static void note(const void *s, size_t n) {
  if (tlen[which] + n > sizeof(transcript[0])) n = sizeof(transcript[0]) - tlen[which];
  memcpy(transcript[which] + tlen[which], s, n);
  tlen[which] += n;
}

static void on_head(rage__http1_t *p, rage__req_t *req) {
}

static void on_request(rage__http1_t *p, rage__req_t *req) {
  /* Touch what a handler would read, so an over-read shows up under ASan. */
  char line[128];
  int n = snprintf(line, sizeof(line), "|%s %zu.%zu ka=%d v=%d.%d n=%u b=%zu ", req->method,
                   req->target_len, req->path_len, req->keep_alive, req->http_major,
                   req->http_minor, req->nheaders, req->body_len);
  note(line, (size_t)n);
  note(req->target, req->target_len);
  for (unsigned i = 0; i < req->nheaders; i++) {
    note("\n", 1);
    note(req->headers[i].name, req->headers[i].name_len);
    note(":", 1);
    note(req->headers[i].value, req->headers[i].value_len);
  }
  rage__req_free(req);
  paused = 1;
  if (llhttp_only) p->plain = 0;
}

static void on_error(rage__http1_t *p, int status, const char *reason) {
  char line[160];
  int n = snprintf(line, sizeof(line), "|error %d %s", status, reason);
  note(line, (size_t)n);
}

static const rage__http1_cbs_t cbs = {on_head, on_request, on_error};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  rage_server_config_t cfg;
  rage_server_config_init(&cfg);
  if (data[0] & 0x80) {
    cfg.max_request_line = 64;
    cfg.max_header_size = 128;
    cfg.max_headers = 4;
    cfg.max_body = 64;
    cfg.max_chunk_ext = 16;
  }
  size_t ncuts = data[0] & 7;
  data++, size--;
  if (size < ncuts) return 0;
  size_t cuts[8];
  const uint8_t *in = data + ncuts;
  size_t len = size - ncuts;
  for (size_t i = 0; i < ncuts; i++) cuts[i] = len ? (data[i] * len) / 256 : 0;
  for (size_t i = 1; i < ncuts; i++)
    if (cuts[i] < cuts[i - 1]) cuts[i] = cuts[i - 1];

  for (which = 0; which < 2; which++) {
    llhttp_only = which;
    tlen[which] = 0;
    rage__pools_t pools;
    rage__http1_t p;
    rage__pools_init(&pools, &cfg);
    rage__http1_init(&p, &cfg, &pools, &cbs, NULL);
    if (llhttp_only) p.plain = 0;
    size_t off = 0;
    for (size_t i = 0; i <= ncuts && p.state != RAGE_HTTP1_DEAD; i++) {
      size_t end = i < ncuts ? cuts[i] : len;
      while (off < end && p.state != RAGE_HTTP1_DEAD) {
        uv_buf_t b;
        if (!rage__http1_alloc(&p, &b)) break;
        size_t n = end - off < b.len ? end - off : b.len;
        memcpy(b.base, in + off, n);
        off += n;
        rage__http1_feed(&p, n);
        while (paused && p.state != RAGE_HTTP1_DEAD) {
          paused = 0;
          rage__http1_resume(&p);
        }
      }
    }
    rage__http1_free(&p);
    rage__pools_free(&pools);
  }
  if (tlen[0] != tlen[1] || memcmp(transcript[0], transcript[1], tlen[0]) != 0) {
    fprintf(stderr, "transcripts differ:\n as it came: %.*s\n  llhttp only: %.*s\n", (int)tlen[0],
            transcript[0], (int)tlen[1], transcript[1]);
    abort();
  }
  return 0;
}
