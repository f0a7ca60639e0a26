/*
 * response.c - response heads (see response.h).
 *
 * The head is built in one buffer: a precomputed status line, the application's headers after
 * validation, then Content-Length or Transfer-Encoding, Connection when it differs from the
 * protocol's default, and a Date line formatted at most once per second.
 */
#include "response.h"

#include <string.h>
#include <time.h>

const char *rage__status_reason(int status) {
  switch (status) {
  case 100: return "Continue";
  case 101: return "Switching Protocols";
  case 200: return "OK";
  case 201: return "Created";
  case 202: return "Accepted";
  case 203: return "Non-Authoritative Information";
  case 204: return "No Content";
  case 205: return "Reset Content";
  case 206: return "Partial Content";
  case 300: return "Multiple Choices";
  case 301: return "Moved Permanently";
  case 302: return "Found";
  case 303: return "See Other";
  case 304: return "Not Modified";
  case 307: return "Temporary Redirect";
  case 308: return "Permanent Redirect";
  case 400: return "Bad Request";
  case 401: return "Unauthorized";
  case 402: return "Payment Required";
  case 403: return "Forbidden";
  case 404: return "Not Found";
  case 405: return "Method Not Allowed";
  case 406: return "Not Acceptable";
  case 408: return "Request Timeout";
  case 409: return "Conflict";
  case 410: return "Gone";
  case 411: return "Length Required";
  case 412: return "Precondition Failed";
  case 413: return "Payload Too Large";
  case 414: return "URI Too Long";
  case 415: return "Unsupported Media Type";
  case 416: return "Range Not Satisfiable";
  case 417: return "Expectation Failed";
  case 418: return "I'm a teapot";
  case 422: return "Unprocessable Entity";
  case 425: return "Too Early";
  case 426: return "Upgrade Required";
  case 428: return "Precondition Required";
  case 429: return "Too Many Requests";
  case 431: return "Request Header Fields Too Large";
  case 451: return "Unavailable For Legal Reasons";
  case 500: return "Internal Server Error";
  case 501: return "Not Implemented";
  case 502: return "Bad Gateway";
  case 503: return "Service Unavailable";
  case 504: return "Gateway Timeout";
  case 505: return "HTTP Version Not Supported";
  default: return "Unknown";
  }
}

/* tchar from RFC 9110: "!#$%&'*+-.^_`|~" DIGIT ALPHA */
const unsigned char rage__tchar[256] = {
    ['!'] = 1, ['#'] = 1, ['$'] = 1, ['%'] = 1, ['&'] = 1, ['\''] = 1, ['*'] = 1, ['+'] = 1,
    ['-'] = 1, ['.'] = 1, ['^'] = 1, ['_'] = 1, ['`'] = 1, ['|'] = 1, ['~'] = 1,
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

/* Four bytes a step, with one branch for the four. */
int rage__valid_token(const char *s, size_t len) {
  const unsigned char *u = (const unsigned char *)s;
  size_t i = 0;
  if (len == 0) return 0;
  for (; i + 4 <= len; i += 4)
    if (!(rage__tchar[u[i]] & rage__tchar[u[i + 1]] & rage__tchar[u[i + 2]] & rage__tchar[u[i + 3]])) return 0;
  for (; i < len; i++)
    if (!rage__tchar[u[i]]) return 0;
  return 1;
}

/* Bytes allowed in a field value: HTAB, SP through '~', and obs-text (0x80-0xff). */
static const unsigned char field_ok[256] = {
    ['\t'] = 1,
#define R16(b) [b] = 1, [b + 1] = 1, [b + 2] = 1, [b + 3] = 1, [b + 4] = 1, [b + 5] = 1, [b + 6] = 1, \
               [b + 7] = 1, [b + 8] = 1, [b + 9] = 1, [b + 10] = 1, [b + 11] = 1, [b + 12] = 1, \
               [b + 13] = 1, [b + 14] = 1, [b + 15] = 1
    R16(0x20), R16(0x30), R16(0x40), R16(0x50), R16(0x60),
    [0x70] = 1, [0x71] = 1, [0x72] = 1, [0x73] = 1, [0x74] = 1, [0x75] = 1, [0x76] = 1, [0x77] = 1,
    [0x78] = 1, [0x79] = 1, [0x7a] = 1, [0x7b] = 1, [0x7c] = 1, [0x7d] = 1, [0x7e] = 1,
    R16(0x80), R16(0x90), R16(0xa0), R16(0xb0), R16(0xc0), R16(0xd0), R16(0xe0), R16(0xf0),
#undef R16
};

/* Whether none of the 8 bytes at s is below 0x20 or DEL: all are allowed in a field value. */
static inline int field_word_plain(const unsigned char *s) {
  uint64_t x = rage__swar_load(s);
  return !(rage__swar_below(x, 0x20) | rage__swar_eq(x, 0x7f));
}

/* Eight bytes at a time, the last word overlapping the one before it, while no byte is below 0x20
 * or DEL; a tab or a false alarm sends the rest to the byte table. */
int rage__valid_field_value(const char *s, size_t len) {
  const unsigned char *u = (const unsigned char *)s;
  size_t i = 0;
  if (len >= 8) {
    size_t last = len - 8;
    while (i < last && field_word_plain(u + i)) i += 8;
    if (i >= last) {
      if (field_word_plain(u + last)) return 1;
      i = last;
    }
  }
  unsigned char ok = 1;
  for (; i < len; i++) ok &= field_ok[u[i]];
  return ok;
}

/* Writes `v` in decimal at `w`; returns the end. */
static char *put_size(char *w, size_t v) {
  char tmp[24];
  int n = 0;
  do {
    tmp[n++] = (char)('0' + v % 10);
    v /= 10;
  } while (v);
  while (n) *w++ = tmp[--n];
  return w;
}

/* "HTTP/1.1 NNN Reason\r\n" into `w`; returns the end. */
static char *put_status_line(char *w, int status) {
  static const char ok[] = "HTTP/1.1 200 OK\r\n";
  if (status == 200) { /* most responses: no formatting */
    memcpy(w, ok, sizeof(ok) - 1);
    return w + sizeof(ok) - 1;
  }
  const char *reason = rage__status_reason(status);
  memcpy(w, "HTTP/1.1 ", 9);
  w += 9;
  *w++ = (char)('0' + status / 100);
  *w++ = (char)('0' + status / 10 % 10);
  *w++ = (char)('0' + status % 10);
  *w++ = ' ';
  size_t rl = strlen(reason);
  memcpy(w, reason, rl);
  w += rl;
  *w++ = '\r';
  *w++ = '\n';
  return w;
}

const char *rage__date_line(size_t *len) {
  static char line[64];
  static size_t line_len;
  static time_t cached = -1;
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME_COARSE, &ts);
  if (ts.tv_sec != cached) {
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    line_len = strftime(line, sizeof(line), "Date: %a, %d %b %Y %H:%M:%S GMT\r\n", &tm);
    cached = ts.tv_sec;
  }
  *len = line_len;
  return line;
}

static int owned_by_core(const char *name, size_t len) {
  switch (len) {
  case 4: return rage__strieq(name, len, "date", 4);
  case 10: return rage__strieq(name, len, "connection", 10);
  case 14: return rage__strieq(name, len, "content-length", 14);
  case 17: return rage__strieq(name, len, "transfer-encoding", 17);
  default: return 0;
  }
}

/* Whether a header name is "content-type" as the framework writes it, which nearly every response
 * carries: a token, and neither X-Request-Id nor a header the core owns, so it needs none of the
 * checks a name from the application goes through. */
static int is_content_type(const char *name, size_t len) {
  return len == 12 && memcmp(name, "content-type", 12) == 0;
}

int rage__response_wants_close(const rage__response_t *res) {
  for (size_t i = 0; i < res->nheaders; i++) {
    const rage_header_t *h = &res->headers[i];
    if (h->name_len == 10 && rage__strieq(h->name, 10, "connection", 10) &&
        rage__strieq(h->value, h->value_len, "close", 5))
      return 1;
  }
  return 0;
}

int rage__response_head(rage__buf_t *out, const rage__response_t *res, const char **err) {
  if (res->status < 200 || res->status > 999) {
    /* A 1xx is interim: sent as the answer, the client would pair the next response with it. */
    *err = "invalid status code for a response (must be 200-999)";
    return RAGE_EINVAL;
  }
  size_t need = 64 + 64 + 40;
  const char *id = res->request_id;
  for (size_t i = 0; i < res->nheaders; i++) {
    const rage_header_t *h = &res->headers[i];
    if (!is_content_type(h->name, h->name_len)) {
      if (id && h->name_len == 12 && rage__strieq(h->name, 12, "x-request-id", 12)) id = NULL;
      if (!rage__valid_token(h->name, h->name_len)) {
        *err = "invalid header name (must be a token: no spaces, CR, LF, NUL or separators)";
        return RAGE_EINVAL;
      }
    }
    if (!rage__valid_field_value(h->value, h->value_len)) {
      *err = "invalid header value (CR, LF, NUL and control characters are not allowed)";
      return RAGE_EINVAL;
    }
    need += h->name_len + h->value_len + 4;
  }
  if (id) need += 16 + res->request_id_len;
  rage__buf_reserve(out, need);
  char *w = out->data + out->len;
  w = put_status_line(w, res->status);
  for (size_t i = 0; i < res->nheaders; i++) {
    const rage_header_t *h = &res->headers[i];
    if (owned_by_core(h->name, h->name_len)) continue;
    memcpy(w, h->name, h->name_len);
    w += h->name_len;
    *w++ = ':';
    *w++ = ' ';
    memcpy(w, h->value, h->value_len);
    w += h->value_len;
    *w++ = '\r';
    *w++ = '\n';
  }
  if (id) {
    memcpy(w, "x-request-id: ", 14);
    memcpy(w + 14, id, res->request_id_len);
    w += 14 + res->request_id_len;
    *w++ = '\r';
    *w++ = '\n';
  }
  if (res->status == 205) {
    memcpy(w, "Content-Length: 0\r\n", 19);
    w += 19;
  } else if (!rage__response_bodyless(res->status)) {
    if (res->chunked) {
      if (res->http_minor >= 1) {
        memcpy(w, "Transfer-Encoding: chunked\r\n", 28);
        w += 28;
      }
    } else {
      memcpy(w, "Content-Length: ", 16);
      w = put_size(w + 16, res->content_length);
      *w++ = '\r';
      *w++ = '\n';
    }
  }
  if (!res->keep_alive) {
    memcpy(w, "Connection: close\r\n", 19);
    w += 19;
  } else if (res->http_minor == 0) {
    memcpy(w, "Connection: keep-alive\r\n", 24);
    w += 24;
  }
  size_t dlen;
  const char *date = rage__date_line(&dlen);
  memcpy(w, date, dlen);
  w += dlen;
  *w++ = '\r';
  *w++ = '\n';
  out->len = (size_t)(w - out->data);
  return 0;
}
