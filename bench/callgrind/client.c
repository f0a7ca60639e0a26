/*
 * client.c - a fixed number of keep-alive GET requests for instruction counts (bench/callgrind/run).
 *
 *   client PORT COUNT PATH [CONNECTIONS]
 *
 * Keeps one request in flight on each of CONNECTIONS (default 4) connections until COUNT responses
 * have arrived, and opens a new connection every 900 requests, before the server's default limit
 * of 1000 per connection closes one. Responses are small: one read holds whole responses, which
 * are counted by their status lines.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_CONNS 64
#define PER_CONN 900

static int port;

static int open_conn(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a;
  memset(&a, 0, sizeof(a));
  a.sin_family = AF_INET;
  a.sin_port = htons((unsigned short)port);
  a.sin_addr.s_addr = htonl(0x7f000001);
  if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
    perror("connect");
    exit(1);
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  return fd;
}

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: client PORT COUNT PATH [CONNECTIONS]\n");
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  port = atoi(argv[1]);
  long total = atol(argv[2]), sent = 0, done = 0;
  int nconns = argc > 4 ? atoi(argv[4]) : 4;
  if (nconns < 1 || nconns > MAX_CONNS) nconns = 4;
  char req[512];
  int rl = snprintf(req, sizeof(req),
                    "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\n", argv[3]);
  int fds[MAX_CONNS], per[MAX_CONNS];
  struct pollfd pfd[MAX_CONNS];
  static char buf[65536];
  for (int i = 0; i < nconns; i++) {
    fds[i] = open_conn();
    per[i] = 0;
    if (sent < total && write(fds[i], req, (size_t)rl) == rl) sent++;
  }
  while (done < total) {
    for (int i = 0; i < nconns; i++) {
      pfd[i].fd = fds[i];
      pfd[i].events = POLLIN;
    }
    if (poll(pfd, (nfds_t)nconns, 10000) <= 0) {
      fprintf(stderr, "client: no response for 10 s (%ld of %ld)\n", done, total);
      return 1;
    }
    for (int i = 0; i < nconns; i++) {
      if (!(pfd[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      ssize_t r = read(fds[i], buf, sizeof(buf));
      if (r <= 0) {
        fprintf(stderr, "client: the server closed a connection\n");
        return 1;
      }
      long n = 0;
      for (ssize_t k = 0; k + 9 <= r; k++)
        if (memcmp(buf + k, "HTTP/1.1 ", 9) == 0) n++;
      if (n == 0) continue; /* the rest of a response */
      done += n;
      per[i] += (int)n;
      if (per[i] >= PER_CONN) {
        close(fds[i]);
        fds[i] = open_conn();
        per[i] = 0;
      }
      for (long j = 0; j < n && sent < total; j++)
        if (write(fds[i], req, (size_t)rl) == rl) sent++;
    }
  }
  return 0;
}
