/*
 * request.c - request objects and the free lists of read buffers and requests (see request.h).
 *
 * Both lists are bounded: a burst of connections allocates what it needs, and what the lists
 * cannot keep goes back to malloc, so memory returns to the baseline after the burst.
 */
#include "request.h"

#include "http1.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define RAGE_REQUEST_POOL 256


void rage__pools_init(rage__pools_t *pools, const rage_server_config_t *cfg) {
  memset(pools, 0, sizeof(*pools));
  pools->rbuf_size = RAGE_READ_BUFFER_SIZE;
  /* The buffer must hold the largest head the limits allow, with the syntax around it. */
  size_t need = cfg->max_request_line + cfg->max_header_size + (size_t)cfg->max_headers * 4 + 64;
  if (need > pools->rbuf_size) pools->rbuf_size = need;
}

void rage__pools_free(rage__pools_t *pools) {
  while (pools->rbufs) {
    rage__rbuf_t *b = pools->rbufs;
    pools->rbufs = b->next;
    free(b);
  }
  while (pools->reqs) {
    rage__req_t *r = pools->reqs;
    pools->reqs = r->next;
    free(r);
  }
  pools->nrbufs = pools->nreqs = 0;
}

rage__rbuf_t *rage__rbuf_get(rage__pools_t *pools) {
  rage__rbuf_t *b = pools->rbufs;
  if (b) {
    pools->rbufs = b->next;
    pools->nrbufs--;
    return b;
  }
  return rage__malloc(sizeof(*b) + pools->rbuf_size);
}

void rage__rbuf_put(rage__pools_t *pools, rage__rbuf_t *b) {
  if (pools->nrbufs >= RAGE_READ_BUFFER_POOL) {
    free(b);
    return;
  }
  b->next = pools->rbufs;
  pools->rbufs = b;
  pools->nrbufs++;
}

rage__req_t *rage__req_new(rage__pools_t *pools) {
  rage__req_t *req = pools->reqs;
  if (req) {
    pools->reqs = req->next;
    pools->nreqs--;
  } else {
    req = rage__malloc(sizeof(*req));
  }
  memset(req, 0, offsetof(rage__req_t, arena));
  req->body_fd = -1;
  rage__arena_init(&req->arena);
  req->pools = pools;
  return req;
}

void rage__req_free(rage__req_t *req) {
  rage__pools_t *pools = req->pools;
  rage__arena_reset(&req->arena);
  rage__buf_free(&req->body);
  if (req->body_fd >= 0) close(req->body_fd);
  rage__buf_free(&req->out);
  if (pools == NULL || pools->nreqs >= RAGE_REQUEST_POOL) {
    free(req);
    return;
  }
  req->next = pools->reqs;
  pools->reqs = req;
  pools->nreqs++;
}

static int write_all(int fd, const char *data, size_t len) {
  while (len > 0) {
    ssize_t n = write(fd, data, len);
    if (n < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    data += n;
    len -= (size_t)n;
  }
  return 0;
}

int rage__req_body_spool(rage__req_t *req) {
  if (req->body_fd >= 0) return 0;
  char path[PATH_MAX];
  int fd = rage__mkstemp("rage-body-", path, sizeof(path));
  if (fd < 0) return fd;
  unlink(path);
  int r = req->body.len ? write_all(fd, req->body.data, req->body.len) : 0;
  if (r != 0) {
    close(fd);
    return r;
  }
  rage__buf_free(&req->body);
  req->body_fd = fd;
  return 0;
}

int rage__req_body_append(rage__req_t *req, const char *data, size_t len, size_t buffer) {
  int r = 0;
  if (req->body_fd < 0 && req->body.len + len > buffer) r = rage__req_body_spool(req);
  if (r == 0 && req->body_fd >= 0) r = write_all(req->body_fd, data, len);
  else if (r == 0) rage__buf_append(&req->body, data, len);
  if (r == 0) req->body_len += len;
  return r;
}

ssize_t rage__req_body_read(const rage__req_t *req, size_t off, char *dst, size_t n) {
  if (off >= req->body_len) return 0;
  if (n > req->body_len - off) n = req->body_len - off;
  if (req->body_fd < 0) {
    memcpy(dst, req->body.data + off, n);
    return (ssize_t)n;
  }
  size_t done = 0;
  while (done < n) {
    ssize_t got = pread(req->body_fd, dst + done, n - done, (off_t)(off + done));
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) return -errno;
    if (got == 0) break; /* the file is shorter than recorded: report what is there */
    done += (size_t)got;
  }
  return (ssize_t)done;
}

const rage_header_t *rage__req_header(const rage__req_t *req, const char *name, size_t len) {
  for (unsigned i = 0; i < req->nheaders; i++) {
    if (rage__strieq(req->headers[i].name, req->headers[i].name_len, name, len))
      return &req->headers[i];
  }
  return NULL;
}

/* ---- request ids ------------------------------------------------------------------------ */

/* Letters, digits and - _ . : @: safe in a header, a log line and a URL. */
static int id_char(unsigned char c) {
  unsigned char l = c | 0x20;
  return (c >= '0' && c <= '9') || (l >= 'a' && l <= 'z') || c == '-' || c == '_' || c == '.' ||
         c == ':' || c == '@';
}

void rage__req_take_id(rage__req_t *req, const char *value, size_t len) {
  if (len == 0 || len > 128) return;
  for (size_t i = 0; i < len; i++)
    if (!id_char((unsigned char)value[i])) return;
  req->id = value;
  req->id_len = len;
}

/* The process's next id: its prefix, then a counter kept in decimal at the end and counted up in
 * place, then NULs to the size of a request's id_buf, so that one fixed-size copy gives a request
 * its id. A forked child starts over with a prefix of its own. */
static char id_next[RAGE_REQUEST_ID_SIZE];
static size_t id_len; /* 0 until the prefix is made */
static size_t id_prefix_len;
static pthread_once_t id_once = PTHREAD_ONCE_INIT;

static void id_forget(void) {
  id_len = 0;
}

static void id_count(void) {
  char *digits = id_next + id_prefix_len;
  size_t i = id_len - id_prefix_len;
  while (i > 0 && digits[i - 1] == '9') digits[--i] = '0';
  if (i > 0) {
    digits[i - 1]++;
  } else { /* 99...9 + 1 */
    memmove(digits + 1, digits, id_len - id_prefix_len);
    digits[0] = '1';
    id_len++;
  }
}

static void id_register(void) {
  pthread_atfork(NULL, NULL, id_forget);
}

static void id_make_prefix(void) {
  unsigned short salt = 0;
  pthread_once(&id_once, id_register);
  if (uv_random(NULL, NULL, &salt, sizeof(salt), 0, NULL) != 0) salt = (unsigned short)uv_hrtime();
  memset(id_next, 0, sizeof(id_next));
  int n = snprintf(id_next, sizeof(id_next), "%x%04x-0", (unsigned)getpid(), (unsigned)salt);
  id_prefix_len = (size_t)n - 1;
  id_len = (size_t)n;
}

const char *rage__req_id(rage__req_t *req, size_t *len) {
  if (req->id == NULL) {
    if (id_len == 0) id_make_prefix();
    id_count();
    memcpy(req->id_buf, id_next, sizeof(req->id_buf));
    req->id = req->id_buf;
    req->id_len = id_len;
  }
  *len = req->id_len;
  return req->id;
}
