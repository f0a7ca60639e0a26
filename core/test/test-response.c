/*
 * test-response.c - the response head writer: exact bytes, framing headers owned by the core,
 * the request id, and no CR, LF or NUL from application headers ever reaching the output.
 */
#include "response.h"
#include "test.h"

static char *head(rage__response_t *res, int *rc, const char **err) {
  rage__buf_t b = {0};
  *err = NULL;
  *rc = rage__response_head(&b, res, err);
  rage__buf_append(&b, "", 1);
  return b.data;
}

/* The head without its Date line, which changes every second. */
static void strip_date(char *s) {
  char *d = strstr(s, "Date: ");
  ASSERT(d != NULL);
  char *end = strstr(d, "\r\n");
  memmove(d, end + 2, strlen(end + 2) + 1);
}

TEST(basic_head) {
  rage_header_t hs[] = {{"content-type", 12, "application/json", 16}};
  rage__response_t res = {.status = 200, .headers = hs, .nheaders = 1, .chunked = 0,
                          .content_length = 27, .keep_alive = 1, .http_minor = 1};
  int rc;
  const char *err;
  char *s = head(&res, &rc, &err);
  ASSERT_EQ(rc, 0);
  strip_date(s);
  ASSERT_STR(s, "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nContent-Length: 27\r\n\r\n");
  free(s);
}

TEST(request_id_written_once) {
  rage_header_t hs[] = {{"content-type", 12, "text/plain", 10}};
  rage__response_t res = {.status = 200, .headers = hs, .nheaders = 1, .chunked = 0,
                          .content_length = 2, .keep_alive = 1, .http_minor = 1,
                          .request_id = "4f2a-17", .request_id_len = 7};
  int rc;
  const char *err;
  char *s = head(&res, &rc, &err);
  ASSERT_EQ(rc, 0);
  strip_date(s);
  ASSERT_STR(s, "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nx-request-id: 4f2a-17\r\n"
                "Content-Length: 2\r\n\r\n");
  free(s);
  /* The application's own X-Request-Id (any case) wins; the core adds none. */
  rage_header_t own[] = {{"X-Request-ID", 12, "mine", 4}};
  res.headers = own;
  s = head(&res, &rc, &err);
  ASSERT_EQ(rc, 0);
  strip_date(s);
  ASSERT_STR(s, "HTTP/1.1 200 OK\r\nX-Request-ID: mine\r\nContent-Length: 2\r\n\r\n");
  free(s);
}

TEST(connection_headers) {
  rage__response_t res = {.status = 404, .headers = NULL, .nheaders = 0, .chunked = 0,
                          .content_length = 0, .keep_alive = 0, .http_minor = 1};
  int rc;
  const char *err;
  char *s = head(&res, &rc, &err);
  strip_date(s);
  ASSERT_STR(s, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
  free(s);
  rage__response_t res10 = {.status = 200, .headers = NULL, .nheaders = 0, .chunked = 0,
                            .content_length = 2, .keep_alive = 1, .http_minor = 0};
  s = head(&res10, &rc, &err);
  strip_date(s);
  ASSERT_STR(s, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\n");
  free(s);
}

TEST(chunked_and_bodyless) {
  rage__response_t res = {.status = 200, .headers = NULL, .nheaders = 0, .chunked = 1,
                          .content_length = 0, .keep_alive = 1, .http_minor = 1};
  int rc;
  const char *err;
  char *s = head(&res, &rc, &err);
  strip_date(s);
  ASSERT_STR(s, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
  free(s);
  rage__response_t r204 = {.status = 204, .headers = NULL, .nheaders = 0, .chunked = 0,
                           .content_length = 10, .keep_alive = 1, .http_minor = 1};
  s = head(&r204, &rc, &err);
  strip_date(s);
  ASSERT_STR(s, "HTTP/1.1 204 No Content\r\n\r\n");
  free(s);
  rage__response_t r205 = {.status = 205, .headers = NULL, .nheaders = 0, .chunked = 0,
                           .content_length = 10, .keep_alive = 1, .http_minor = 1};
  s = head(&r205, &rc, &err);
  strip_date(s);
  ASSERT_STR(s, "HTTP/1.1 205 Reset Content\r\nContent-Length: 0\r\n\r\n");
  free(s);
  rage__response_t r304 = {.status = 304, .headers = NULL, .nheaders = 0, .chunked = 0,
                           .content_length = 10, .keep_alive = 1, .http_minor = 1};
  s = head(&r304, &rc, &err);
  strip_date(s);
  ASSERT_STR(s, "HTTP/1.1 304 Not Modified\r\n\r\n");
  free(s);
}

TEST(framing_headers_from_app_dropped) {
  rage_header_t hs[] = {{"Content-Length", 14, "5", 1},
                        {"Transfer-Encoding", 17, "chunked", 7},
                        {"Date", 4, "yesterday", 9},
                        {"X-Ok", 4, "1", 1}};
  rage__response_t res = {.status = 200, .headers = hs, .nheaders = 4, .chunked = 0,
                          .content_length = 3, .keep_alive = 1, .http_minor = 1};
  int rc;
  const char *err;
  char *s = head(&res, &rc, &err);
  ASSERT_EQ(rc, 0);
  ASSERT(strstr(s, "Content-Length: 3\r\n") != NULL);
  ASSERT(strstr(s, "Content-Length: 5") == NULL);
  ASSERT(strstr(s, "chunked") == NULL);
  ASSERT(strstr(s, "yesterday") == NULL);
  ASSERT(strstr(s, "X-Ok: 1\r\n") != NULL);
  free(s);
}

TEST(crlf_nul_rejected) {
  static const char *bad_values[] = {"a\r\nSet-Cookie: x=1", "a\nb", "a\rb", "ctl\x01"};
  int rc;
  const char *err;
  for (size_t i = 0; i < sizeof(bad_values) / sizeof(bad_values[0]); i++) {
    rage_header_t h = {"X-Test", 6, bad_values[i], strlen(bad_values[i])};
    rage__response_t res = {.status = 200, .headers = &h, .nheaders = 1, .chunked = 0,
                            .content_length = 0, .keep_alive = 1, .http_minor = 1};
    char *s = head(&res, &rc, &err);
    ASSERT_EQ(rc, RAGE_EINVAL);
    ASSERT(err != NULL);
    ASSERT_STR(s, ""); /* nothing written */
    free(s);
  }
  rage_header_t nul = {"X-Test", 6, "a\0b", 3};
  rage__response_t res = {.status = 200, .headers = &nul, .nheaders = 1, .chunked = 0,
                          .content_length = 0, .keep_alive = 1, .http_minor = 1};
  char *s = head(&res, &rc, &err);
  ASSERT_EQ(rc, RAGE_EINVAL);
  free(s);
  static const char *bad_names[] = {"X Test", "X:Test", "X\r\nA", "", "X\x7f"};
  for (size_t i = 0; i < sizeof(bad_names) / sizeof(bad_names[0]); i++) {
    rage_header_t h = {bad_names[i], strlen(bad_names[i]), "v", 1};
    rage__response_t r = {.status = 200, .headers = &h, .nheaders = 1, .chunked = 0,
                          .content_length = 0, .keep_alive = 1, .http_minor = 1};
    s = head(&r, &rc, &err);
    ASSERT_EQ(rc, RAGE_EINVAL);
    free(s);
  }
  rage_header_t tab = {"X-Tab", 5, "a\tb", 3};
  rage__response_t ok = {.status = 200, .headers = &tab, .nheaders = 1, .chunked = 0,
                         .content_length = 0, .keep_alive = 1, .http_minor = 1};
  s = head(&ok, &rc, &err);
  ASSERT_EQ(rc, 0);
  free(s);
}

/* The rules the checks implement, one byte at a time (RFC 9110 tchar and field-value). */
static int token_byte(int c) {
  return c > 0x20 && c < 0x7f && strchr("\"(),/:;<=>?@[\\]{}", c) == NULL;
}

static int field_byte(int c) {
  return c == '\t' || (c >= 0x20 && c != 0x7f);
}

TEST(every_byte_at_every_offset) {
  /* Lengths around the 4- and 8-byte steps of the checks, each in a buffer of exactly that size
   * so that ASan catches a read past it. */
  for (size_t len = 1; len <= 25; len++) {
    char *s = malloc(len);
    for (size_t at = 0; at < len; at++) {
      for (int c = 0; c < 256; c++) {
        memset(s, 'a', len);
        s[at] = (char)c;
        ASSERT_EQ(rage__valid_token(s, len), token_byte(c));
        ASSERT_EQ(rage__valid_field_value(s, len), field_byte(c));
        /* A tab (allowed, but it stops the word-at-a-time test) before a bad byte. */
        if (at > 0) {
          s[at - 1] = '\t';
          ASSERT_EQ(rage__valid_field_value(s, len), field_byte(c));
        }
      }
    }
    free(s);
  }
  ASSERT_EQ(rage__valid_token("", 0), 0);
  ASSERT_EQ(rage__valid_field_value("", 0), 1);
}

TEST(content_type_checked_like_any_name) {
  /* "content-type" skips the name checks; its value is still checked, and other spellings and
   * look-alikes go through the token check. */
  int rc;
  const char *err;
  rage_header_t ct = {"content-type", 12, "text/plain\r\nX-Evil: 1", 22};
  rage__response_t res = {.status = 200, .headers = &ct, .nheaders = 1, .chunked = 0,
                          .content_length = 0, .keep_alive = 1, .http_minor = 1};
  char *s = head(&res, &rc, &err);
  ASSERT_EQ(rc, RAGE_EINVAL);
  free(s);
  static const char *names[] = {"Content-Type", "content-typ\x01", "content type"};
  static const int ok[] = {0, RAGE_EINVAL, RAGE_EINVAL};
  for (size_t i = 0; i < 3; i++) {
    rage_header_t h = {names[i], 12, "text/plain", 10};
    res.headers = &h;
    s = head(&res, &rc, &err);
    ASSERT_EQ(rc, ok[i]);
    free(s);
  }
}

TEST(status_lines) {
  int rc;
  const char *err;
  static const struct {
    int status;
    const char *line;
  } cases[] = {{200, "HTTP/1.1 200 OK\r\n"}, {201, "HTTP/1.1 201 Created\r\n"},
               {404, "HTTP/1.1 404 Not Found\r\n"}, {999, "HTTP/1.1 999 Unknown\r\n"}};
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    rage__response_t res = {.status = cases[i].status, .headers = NULL, .nheaders = 0,
                            .chunked = 0, .content_length = 1234567890, .keep_alive = 1,
                            .http_minor = 1};
    char *s = head(&res, &rc, &err);
    ASSERT_EQ(rc, 0);
    ASSERT(strncmp(s, cases[i].line, strlen(cases[i].line)) == 0);
    ASSERT(strstr(s, "\r\nContent-Length: 1234567890\r\n") != NULL);
    free(s);
  }
  static const size_t lengths[] = {0, 9, 10, 99, 100, 18446744073709551615u};
  static const char *written[] = {"0", "9", "10", "99", "100", "18446744073709551615"};
  for (size_t i = 0; i < sizeof(lengths) / sizeof(lengths[0]); i++) {
    rage__response_t res = {.status = 200, .headers = NULL, .nheaders = 0, .chunked = 0,
                            .content_length = lengths[i], .keep_alive = 1, .http_minor = 1};
    char *s = head(&res, &rc, &err);
    char want[64];
    snprintf(want, sizeof(want), "\r\nContent-Length: %s\r\n", written[i]);
    ASSERT(strstr(s, want) != NULL);
    free(s);
  }
}

TEST(status_validation) {
  int rc;
  const char *err;
  int bad[] = {0, 99, 100, 101, 199, 1000, -1};
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    rage__response_t res = {.status = bad[i], .headers = NULL, .nheaders = 0, .chunked = 0,
                            .content_length = 0, .keep_alive = 1, .http_minor = 1};
    char *s = head(&res, &rc, &err);
    ASSERT_EQ(rc, RAGE_EINVAL);
    free(s);
  }
  rage__response_t odd = {.status = 299, .headers = NULL, .nheaders = 0, .chunked = 0,
                          .content_length = 0, .keep_alive = 1, .http_minor = 1};
  char *s = head(&odd, &rc, &err);
  ASSERT_EQ(rc, 0);
  ASSERT(strncmp(s, "HTTP/1.1 299 Unknown\r\n", 22) == 0);
  free(s);
}

TEST(date_line_format) {
  size_t len;
  const char *d = rage__date_line(&len);
  ASSERT_EQ(len, strlen("Date: Tue, 24 Nov 2026 02:05:07 GMT\r\n"));
  ASSERT(strncmp(d, "Date: ", 6) == 0);
  ASSERT(strcmp(d + len - 6, " GMT\r\n") == 0);
  const char *again = rage__date_line(&len);
  ASSERT(again == d);
}

int main(int argc, char **argv) {
  static const test_entry_t tests[] = {
      TEST_ENTRY(basic_head),     TEST_ENTRY(connection_headers),
      TEST_ENTRY(chunked_and_bodyless), TEST_ENTRY(framing_headers_from_app_dropped),
      TEST_ENTRY(crlf_nul_rejected), TEST_ENTRY(status_validation),
      TEST_ENTRY(date_line_format), TEST_ENTRY(request_id_written_once),
      TEST_ENTRY(every_byte_at_every_offset), TEST_ENTRY(content_type_checked_like_any_name),
      TEST_ENTRY(status_lines), {NULL, NULL}};
  return test_main(argc, argv, tests);
}
