/*
 * fuzz-http1.c - libFuzzer target for the request path: arbitrary bytes, split into reads at
 * arbitrary points, through the same parser glue the server uses (alloc, feed, pause, resume).
 *
 * Input layout: byte 0 picks the limits (defaults or tiny ones, so that every limit is reached)
 * and the number of split points (0-7); the next bytes give the split points; the rest is the
 * data. Build with `make fuzz` (clang's libFuzzer) and let it run.
 */
#include <stdint.h>
#include <string.h>

#include "http1.h"

static int paused;

static void on_head(rage__http1_t *p, rage__req_t *req) {
}

static void on_request(rage__http1_t *p, rage__req_t *req) {
  /* Touch what a handler would read, so an over-read shows up under ASan. */
  volatile size_t sum = req->target_len + req->body_len;
  for (unsigned i = 0; i < req->nheaders; i++) sum += req->headers[i].name_len + req->headers[i].value_len;
  (void)sum;
  rage__req_free(req);
  paused = 1;
}

static void on_error(rage__http1_t *p, int status, const char *reason) {
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

  rage__pools_t pools;
  rage__http1_t p;
  rage__pools_init(&pools, &cfg);
  rage__http1_init(&p, &cfg, &pools, &cbs, NULL);
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
  return 0;
}
