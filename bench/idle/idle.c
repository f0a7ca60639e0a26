/*
 * idle.c - rage-bench-idle, W6's idle clients.
 *
 * Opens N keep-alive connections to a server, one after another; on each it sends one
 * `GET PATH HTTP/1.1` and reads the whole answer, then leaves the connection idle. Once all are
 * open it prints "ready N" and waits for SIGTERM or SIGINT; then it counts how many the server
 * has kept open (a peek that would block means open; end of file or an error means closed),
 * prints "open K of N" and exits. Each wait is bounded by a receive timeout.
 *
 * usage: rage-bench-idle --port PORT [--host 127.0.0.1] [--count 10000] [--path /json]
 * Exit status: 0 when every connection was opened and answered, 1 otherwise.
 */
#define _POSIX_C_SOURCE 200809L

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#define TIMEOUT_S 10

static volatile sig_atomic_t stop;

static void on_signal(int signum) {
  (void)signum;
  stop = 1;
}

/* Reads one response: the head, then a Content-Length body or a chunked one (until the
 * terminating "0\r\n\r\n"). Returns false on a timeout, a close, or a status other than 2xx. */
static bool read_response(int fd) {
  char buf[8192];
  size_t len = 0, body = 0;
  long need = -1;
  bool head_done = false, chunked = false;
  for (;;) {
    if (len == sizeof buf - 1) {
      if (!head_done)
        return false; /* A head this long is not an answer to GET /json. */
      memmove(buf, buf + len - 8, 8); /* Keep the tail in view for the chunked end. */
      len = 8;
    }
    ssize_t n = recv(fd, buf + len, sizeof buf - 1 - len, 0);
    if (n <= 0)
      return false;
    len += (size_t)n;
    buf[len] = '\0';
    if (!head_done) {
      char *end = strstr(buf, "\r\n\r\n");
      if (end == NULL)
        continue;
      head_done = true;
      if (strncmp(buf, "HTTP/1.1 2", 10) != 0)
        return false;
      for (char *line = strstr(buf, "\r\n"); line != NULL && line < end; line = strstr(line + 2, "\r\n")) {
        if (strncasecmp(line + 2, "content-length:", 15) == 0)
          need = strtol(line + 17, NULL, 10);
        else if (strncasecmp(line + 2, "transfer-encoding:", 18) == 0 && strstr(line, "chunked") != NULL)
          chunked = true;
      }
      if (need < 0 && !chunked)
        return false;
      body = len - (size_t)(end + 4 - buf);
    } else {
      body += (size_t)n;
    }
    if (chunked ? len >= 5 && memcmp(buf + len - 5, "0\r\n\r\n", 5) == 0 : (long)body >= need)
      return true;
  }
}

int main(int argc, char **argv) {
  const char *host = "127.0.0.1", *path = "/json";
  long port = 0, count = 10000;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--host") == 0 && i + 1 < argc)
      host = argv[++i];
    else if (strcmp(argv[i], "--port") == 0 && i + 1 < argc)
      port = strtol(argv[++i], NULL, 10);
    else if (strcmp(argv[i], "--count") == 0 && i + 1 < argc)
      count = strtol(argv[++i], NULL, 10);
    else if (strcmp(argv[i], "--path") == 0 && i + 1 < argc)
      path = argv[++i];
    else {
      fprintf(stderr, "usage: rage-bench-idle --port PORT [--host H] [--count N] [--path P]\n");
      return 2;
    }
  }
  if (port <= 0 || port > 65535 || count <= 0) {
    fprintf(stderr, "rage-bench-idle: --port and a positive --count are required\n");
    return 2;
  }
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
    fprintf(stderr, "rage-bench-idle: bad IPv4 host: %s\n", host);
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  struct sigaction sa = {.sa_handler = on_signal};
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);

  char request[1024];
  int request_len = snprintf(request, sizeof request,
                             "GET %s HTTP/1.1\r\nHost: %s:%ld\r\nUser-Agent: rage-bench-idle\r\n\r\n",
                             path, host, port);
  int *fds = calloc((size_t)count, sizeof *fds);
  if (fds == NULL)
    return 1;
  struct timeval tv = {.tv_sec = TIMEOUT_S};
  long opened = 0;
  const char *failure = NULL;
  int saved_errno = 0;
  for (; opened < count && !stop; opened++) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) {
      failure = "socket";
      saved_errno = errno;
      break;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
      failure = "connect";
      saved_errno = errno;
      close(fd);
      break;
    }
    if (send(fd, request, (size_t)request_len, 0) != request_len) {
      failure = "send";
      saved_errno = errno;
      close(fd);
      break;
    }
    if (!read_response(fd)) {
      failure = "no complete 2xx answer";
      saved_errno = errno;
      close(fd);
      break;
    }
    fds[opened] = fd;
  }
  if (failure == NULL && opened < count)
    failure = "interrupted";
  if (failure != NULL) {
    fprintf(stderr, "rage-bench-idle: connection %ld: %s%s%s\n", opened + 1, failure,
            saved_errno ? ": " : "", saved_errno ? strerror(saved_errno) : "");
    printf("failed %ld of %ld\n", opened, count);
    fflush(stdout);
    return 1;
  }
  printf("ready %ld\n", opened);
  fflush(stdout);

  sigset_t none;
  sigemptyset(&none);
  while (!stop)
    sigsuspend(&none);

  long open = 0;
  for (long i = 0; i < opened; i++) {
    char c;
    ssize_t n = recv(fds[i], &c, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
      open++;
    close(fds[i]);
  }
  printf("open %ld of %ld\n", open, opened);
  return 0;
}
