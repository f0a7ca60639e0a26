/*
 * pg_connect.c - opening a PostgreSQL connection without blocking the loop (see pg.h).
 *
 * Connecting: PQconnectStartParams(), then PQconnectPoll() each time the socket is ready in the
 * direction it asked for (pg.c's poll handle calls rage__pg_connect_step). libpq enforces
 * connect_timeout only in its blocking calls: the pool bounds a connection attempt with its own
 * timer.
 *
 * Host names: libpq resolves them with a blocking getaddrinfo() inside PQconnectStartParams,
 * so a single host name is looked up first with uv_getaddrinfo (libuv's thread pool) and libpq
 * gets the addresses as hostaddr, the name staying as host (see rage__pg_conn_connect in pg.h).
 */
#include "pg.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "rage.h"
#include "util.h"

/* ---- connecting ------------------------------------------------------------------------- */

static void free_params(rage__pg_conn_t *c);

static void connect_done(rage__pg_conn_t *c, int ok) {
  c->connecting = 0;
  if (ok) {
    if (PQsetnonblocking(c->pg, 1) != 0) ok = 0;
  }
  free_params(c);
  if (!ok) c->broken = 1;
  rage__pg_watch_idle(c);
  rage__pg_connect_cb cb = c->on_connect;
  c->on_connect = NULL;
  cb(c, ok, c->data);
}

void rage__pg_connect_step(rage__pg_conn_t *c) {
  PostgresPollingStatusType st = PQconnectPoll(c->pg);
  int r = 0;
  switch (st) {
  case PGRES_POLLING_READING:
    r = rage__pg_watch(c, UV_READABLE);
    break;
  case PGRES_POLLING_WRITING:
    r = rage__pg_watch(c, UV_WRITABLE);
    break;
  case PGRES_POLLING_OK:
    connect_done(c, 1);
    return;
  default:
    rage__pg_check_socket(c);
    connect_done(c, 0);
    return;
  }
  if (r != 0) {
    rage__pg_check_socket(c);
    connect_done(c, 0);
  }
}

/* ---- resolving the host name ------------------------------------------------------------ */

typedef struct rage__pg_resolve_s {
  uv_getaddrinfo_t req;
  rage__pg_conn_t *conn; /* NULL once the connection was abandoned */
} resolve_t;

#define MAX_ADDRS 8

static int is_url(const char *s) {
  return strchr(s, '=') != NULL || strncmp(s, "postgres://", 11) == 0 || strncmp(s, "postgresql://", 13) == 0;
}

/* The host name that the loop should look up before libpq starts, or NULL (an IP address, a
 * socket directory, several hosts, hostaddr given, nothing given). Follows libpq's order: an
 * expanded dbname overrides what comes before it, later parameters override it, and the
 * environment fills what is missing. Returns -1 with a message in `err` for a dbname URL or
 * connection string that libpq would refuse. */
static int host_to_resolve(const char *const *keys, const char *const *values, char **out, char *err,
                           size_t errlen) {
  const char *host = NULL, *hostaddr = NULL, *port = NULL;
  PQconninfoOption *parsed = NULL;
  *out = NULL;
  for (int i = 0; keys[i]; i++) {
    const char *v = values[i];
    if (v == NULL) continue;
    if (strcmp(keys[i], "dbname") == 0 && parsed == NULL && is_url(v)) {
      char *e = NULL;
      parsed = PQconninfoParse(v, &e);
      if (parsed == NULL) {
        snprintf(err, errlen, "%s", e ? e : "out of memory");
        if (e) PQfreemem(e);
        return -1;
      }
      for (PQconninfoOption *o = parsed; o->keyword; o++) {
        if (o->val == NULL || o->val[0] == '\0') continue;
        if (strcmp(o->keyword, "host") == 0) host = o->val;
        else if (strcmp(o->keyword, "hostaddr") == 0) hostaddr = o->val;
        else if (strcmp(o->keyword, "port") == 0) port = o->val;
      }
    } else if (strcmp(keys[i], "host") == 0) {
      host = v;
    } else if (strcmp(keys[i], "hostaddr") == 0) {
      hostaddr = v;
    } else if (strcmp(keys[i], "port") == 0) {
      port = v;
    }
  }
  if (host == NULL) host = getenv("PGHOST");
  if (hostaddr == NULL) hostaddr = getenv("PGHOSTADDR");
  if (port == NULL) port = getenv("PGPORT");
  unsigned char buf[sizeof(struct in6_addr)];
  if ((hostaddr == NULL || hostaddr[0] == '\0') && host && host[0] != '\0' && host[0] != '/' && host[0] != '@' &&
      strchr(host, ',') == NULL && (port == NULL || strchr(port, ',') == NULL) &&
      inet_pton(AF_INET, host, buf) != 1 && inet_pton(AF_INET6, host, buf) != 1)
    *out = rage__strndup(host, strlen(host));
  if (parsed) PQconninfoFree(parsed);
  return 0;
}

static char **copy_strings(const char *const *a, int n) {
  char **out = rage__calloc((size_t)n + 1, sizeof(char *));
  for (int i = 0; i < n; i++) out[i] = a[i] ? rage__strndup(a[i], strlen(a[i])) : NULL;
  return out;
}

static void free_strings(char **a, int n) {
  if (a == NULL) return;
  for (int i = 0; i < n; i++) free(a[i]);
  free(a);
}

static int count_keys(char **keys) {
  int n = 0;
  if (keys)
    while (keys[n]) n++;
  return n;
}

/* Starts libpq on the kept parameters, plus host and hostaddr lists when they were looked up.
 * Returns 0, or a negative error with a message in `err`. */
static int start_libpq(rage__pg_conn_t *c, const char *hosts, const char *addrs, char *err, size_t errlen) {
  int n = count_keys(c->keys);
  const char **keys = rage__calloc((size_t)n + 3, sizeof(char *));
  const char **values = rage__calloc((size_t)n + 3, sizeof(char *));
  for (int i = 0; i < n; i++) {
    keys[i] = c->keys[i];
    values[i] = c->values[i];
  }
  if (hosts) {
    keys[n] = "host";
    values[n++] = hosts;
    keys[n] = "hostaddr";
    values[n++] = addrs;
  }
  PGconn *pg = PQconnectStartParams(keys, values, 1);
  free(keys);
  free(values);
  if (pg == NULL) {
    snprintf(err, errlen, "out of memory");
    return UV_ENOMEM;
  }
  if (PQstatus(pg) == CONNECTION_BAD) {
    snprintf(err, errlen, "%s", PQerrorMessage(pg));
    PQfinish(pg);
    return RAGE_EINVAL;
  }
  PQsetNoticeProcessor(pg, rage__pg_on_notice, NULL);
  c->pg = pg;
  /* libpq's state machine starts as if PQconnectPoll had asked for writability. */
  int r = rage__pg_watch(c, UV_WRITABLE);
  if (r != 0) {
    snprintf(err, errlen, "cannot poll the connection's socket: %s", uv_strerror(r));
    rage__pg_watch_close(c);
    return r;
  }
  return 0;
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res) {
  resolve_t *rs = (resolve_t *)req;
  rage__pg_conn_t *c = rs->conn;
  free(rs);
  if (c == NULL) {
    uv_freeaddrinfo(res);
    return;
  }
  c->resolve = NULL;
  c->resolved = 1;
  c->dispatching++;
  if (status != 0) {
    snprintf(c->error, sizeof(c->error), "could not translate host name \"%s\" to address: %s", c->host,
             uv_strerror(status));
  } else {
    /* Every address, in getaddrinfo's order, each paired with the name. */
    char addrs[MAX_ADDRS * (INET6_ADDRSTRLEN + 1)];
    size_t hlen = strlen(c->host), alen = 0;
    char *hosts = rage__malloc(MAX_ADDRS * (hlen + 1));
    size_t hused = 0;
    int n = 0;
    addrs[0] = '\0';
    for (struct addrinfo *ai = res; ai && n < MAX_ADDRS; ai = ai->ai_next) {
      char name[INET6_ADDRSTRLEN];
      if (ai->ai_family == AF_INET) uv_ip4_name((struct sockaddr_in *)ai->ai_addr, name, sizeof(name));
      else if (ai->ai_family == AF_INET6) uv_ip6_name((struct sockaddr_in6 *)ai->ai_addr, name, sizeof(name));
      else continue;
      alen += (size_t)snprintf(addrs + alen, sizeof(addrs) - alen, "%s%s", n ? "," : "", name);
      if (n) hosts[hused++] = ',';
      memcpy(hosts + hused, c->host, hlen);
      hused += hlen;
      n++;
    }
    hosts[hused] = '\0';
    if (n == 0) snprintf(c->error, sizeof(c->error), "host name \"%s\" has no IP address", c->host);
    else if (start_libpq(c, hosts, addrs, c->error, sizeof(c->error)) == 0) c->error[0] = '\0';
    free(hosts);
  }
  uv_freeaddrinfo(res);
  if (c->error[0]) connect_done(c, 0);
  if (--c->dispatching == 0 && c->close_pending) rage__pg_conn_free(c);
}

int rage__pg_conn_connect(rage__pg_conn_t **out, uv_loop_t *loop, const char *const *keys,
                          const char *const *values, rage__pg_connect_cb cb, void *data,
                          char *err, size_t errlen) {
  char *host;
  if (host_to_resolve(keys, values, &host, err, errlen) != 0) return RAGE_EINVAL;
  int n = 0;
  while (keys[n]) n++;
  rage__pg_conn_t *c = rage__calloc(1, sizeof(*c));
  c->loop = loop;
  c->fd = -1;
  c->connecting = 1;
  c->max_stmts = RAGE_PG_STATEMENT_CACHE;
  c->on_connect = cb;
  c->data = data;
  c->created_ms = uv_now(loop);
  c->keys = copy_strings(keys, n);
  c->values = copy_strings(values, n);
  c->host = host;
  int r;
  if (host) {
    resolve_t *rs = rage__calloc(1, sizeof(*rs));
    rs->conn = c;
    struct addrinfo hints;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    r = uv_getaddrinfo(loop, &rs->req, on_resolved, host, NULL, &hints);
    if (r == 0) c->resolve = rs;
    else {
      free(rs);
      snprintf(err, errlen, "cannot look up \"%s\": %s", host, uv_strerror(r));
    }
  } else {
    r = start_libpq(c, NULL, NULL, err, errlen);
  }
  if (r != 0) {
    PQfinish(c->pg);
    c->pg = NULL;
    rage__pg_conn_free(c);
    return r;
  }
  *out = c;
  return 0;
}


void rage__pg_connect_abandon(rage__pg_conn_t *c) {
  if (c->resolve) {
    /* The lookup's callback frees it; it may already run on the thread pool. */
    c->resolve->conn = NULL;
    uv_cancel((uv_req_t *)&c->resolve->req);
    c->resolve = NULL;
  }
}

/* The connection parameters are kept until libpq has connected. */
static void free_params(rage__pg_conn_t *c) {
  int n = count_keys(c->keys);
  free_strings(c->keys, n);
  free_strings(c->values, n);
  c->keys = c->values = NULL;
}

void rage__pg_connect_free(rage__pg_conn_t *c) {
  free_params(c);
  free(c->host);
  c->host = NULL;
}
