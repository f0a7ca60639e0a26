/*
 * rage.h - the whole public API of librage, the C core of rage-lua.
 *
 * A host program creates a runtime (one libuv loop and one LuaJIT VM), loads an app directory
 * into it, then either listens on a TCP address or hands requests in without sockets. The
 * rage-lua executable is one such host; apps/embed-host is another.
 *
 * Conventions, as in libuv:
 * - Functions that can fail return 0 or a negative error code: a RAGE_E* value from
 *   RAGE_ERRNO_MAP below, or a libuv UV_E* code passed through. rage_strerror() names both.
 * - The caller owns every options struct it passes in; librage copies what it keeps.
 * - A runtime belongs to one thread. Nothing here is thread-safe.
 * - "May yield" marks functions that may run Lua code which waits (for example a rage.sleep in
 *   an app's boot code); such functions drive the loop until that code finishes, so they must
 *   not be called from inside a libuv callback of the same loop.
 */
#ifndef RAGE_H
#define RAGE_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>
#include <lua.h>

#ifdef __cplusplus
extern "C" {
#endif

#define RAGE_VERSION_MAJOR 0
#define RAGE_VERSION_MINOR 1
#define RAGE_VERSION_PATCH 0

/* Error codes. Each one is negative and distinct from every libuv code. */
#define RAGE_ERRNO_MAP(XX)                                                   \
  XX(ELUA, -30001, "Lua error")                                              \
  XX(EBOOT, -30002, "app failed to boot")                                    \
  XX(ECANCELED, -30003, "operation cancelled")                               \
  XX(ETIMEDOUT, -30004, "operation timed out")                               \
  XX(ESTATE, -30005, "call not allowed in the current state")                \
  XX(EINVAL, -30006, "invalid argument")                                     \
  XX(ECLOSED, -30007, "runtime is closed")

typedef enum {
#define XX(name, value, msg) RAGE_##name = (value),
  RAGE_ERRNO_MAP(XX)
#undef XX
} rage_errno_t;

/* Returns a static, human-readable message for a RAGE_E* or UV_E* code. Never NULL. */
const char *rage_strerror(int err);

/* Returns the version string, e.g. "0.1.0". Static storage. */
const char *rage_version(void);

/*
 * Server limits and timeouts. rage_server_config_init() fills in the defaults of
 * shared/RELIABILITY.md; an app's config/application.lua (`server = {...}`) and the host may
 * change any field before rage_runtime_listen(). Sizes are bytes, times are milliseconds.
 */
/* A body limit for the request paths under `prefix` (a path, matched on segment boundaries). */
typedef struct rage_body_limit_s {
  const char *prefix;
  size_t max_body;
} rage_body_limit_t;

typedef struct rage_server_config_s {
  size_t max_request_line;    /* request target length; over it: 414 and close */
  size_t max_header_size;     /* sum of header name and value bytes; over it: 431 and close */
  unsigned max_headers;       /* header count; over it: 431 and close */
  size_t max_body;            /* Content-Length or de-chunked body; over it: 413 */
  size_t body_buffer;         /* bodies up to this size stay in memory; larger ones are written
                                 to an unlinked temporary file in $TMPDIR as they arrive */
  size_t max_chunk_ext;       /* chunk extension bytes per chunk; over it: 413 and close */
  uint64_t header_timeout;    /* time to receive complete headers; then 408 and close */
  uint64_t body_idle_timeout; /* time between two reads of a body; then 408 and close */
  uint64_t request_timeout;   /* whole request from first byte to last body byte; then 408 */
  uint64_t keepalive_timeout; /* idle keep-alive connection; then close silently */
  unsigned max_requests;      /* requests per connection; the last gets Connection: close */
  uint64_t send_timeout;      /* no write progress for this long; then close */
  size_t output_high_water;   /* queued output per connection before reading/writers pause */
  unsigned max_connections;   /* per worker; past it, accepting pauses until some close */
  uint64_t drain_timeout;     /* graceful shutdown bound; then in-flight requests are cut */
  int request_id;             /* 1: every response carries X-Request-Id, the request's own when it
                                 is safe (at most 128 of A-Z a-z 0-9 - _ . : @), else a new one */
  /* Per-route overrides of max_body: the longest matching prefix wins. The array and its strings
   * must outlive the server; for limits set by an app's config the runtime owns them. */
  const rage_body_limit_t *body_limits;
  unsigned nbody_limits;
} rage_server_config_t;

void rage_server_config_init(rage_server_config_t *cfg);

/* Options for rage_runtime_new(). Zero-initialize, then set what you need. */
typedef struct rage_options_s {
  const char *env;      /* "development", "production" or "test"; NULL: $RAGE_ENV or development */
  const char *lua_path; /* directory holding the rage Lua modules; NULL: $RAGE_LUA_PATH or the built-in one */
  int log_level;        /* one of RAGE_LOG_*; 0 means the default for env */
} rage_options_t;

enum {
  RAGE_LOG_DEBUG = 1,
  RAGE_LOG_INFO = 2,
  RAGE_LOG_WARN = 3,
  RAGE_LOG_ERROR = 4
};

typedef struct rage_runtime_s rage_runtime_t;

/*
 * Creates a runtime on `loop`, or on a loop of its own when `loop` is NULL. Loads the rage Lua
 * framework and defines the global `rage`. On success stores the runtime in *out and returns 0;
 * on failure returns a negative code and writes a message to the log. The host frees the runtime
 * with rage_runtime_free().
 */
int rage_runtime_new(rage_runtime_t **out, uv_loop_t *loop, const rage_options_t *opts);

/*
 * The message of the last failure of rage_runtime_new(), rage_runtime_load_app() or
 * rage_runtime_exec() (for example "app/controllers/todos.lua:3: '=' expected near 'x'").
 * Static storage, overwritten by the next failure.
 */
const char *rage_runtime_error(rage_runtime_t *rt);

/* The loop the runtime runs on (its own or the host's). Valid until rage_runtime_free(). */
uv_loop_t *rage_runtime_loop(rage_runtime_t *rt);

/*
 * The runtime's Lua state, for hosts that want to push their own globals or modules. Do not
 * resume coroutines on it: only the rage scheduler does that.
 */
lua_State *rage_runtime_lua(rage_runtime_t *rt);

/* The server configuration the runtime will listen with. The host may edit it before listening. */
rage_server_config_t *rage_runtime_server_config(rage_runtime_t *rt);

/*
 * Makes `fn` callable from Lua as rage.c.<name>(...). `name` is copied. The function runs inside
 * the calling fiber and must not block; it may raise Lua errors. Returns 0 or RAGE_EINVAL.
 */
int rage_runtime_register(rage_runtime_t *rt, const char *name, lua_CFunction fn);

/*
 * Loads the app in directory `dir`: config/application.lua, config/environments/<env>.lua,
 * config/routes.lua and the controllers under app/controllers. Boot code runs in a fiber, so it may wait.
 * May yield. Returns 0, or RAGE_EBOOT after logging a readable message (file and line for a
 * syntax error).
 */
int rage_runtime_load_app(rage_runtime_t *rt, const char *dir);

/*
 * Runs a Lua chunk from `path` in a fiber and drives the loop until it finishes (used by the
 * CLI for `rage-lua test`). The chunk receives `argc` strings from `argv` as its arguments.
 * May yield. On success stores the chunk's first result, converted to an integer (0 when it
 * returns nothing), in *status and returns 0.
 */
int rage_runtime_exec(rage_runtime_t *rt, const char *path, int argc, char **argv, int *status);

/*
 * Calls require(module)[func](argv...) in a fiber and drives the loop until it returns (the CLI
 * runs `rage-lua test`, `routes` and the like this way). May yield. On success stores the first
 * result as an integer (0 when it returns none) in *status and returns 0; on a Lua error returns
 * RAGE_ELUA and rage_runtime_error() tells why.
 */
int rage_runtime_call(rage_runtime_t *rt, const char *module, const char *func, int argc,
                      char **argv, int *status);

/*
 * Starts accepting HTTP connections on host:port (IPv4 or IPv6 literal, or "localhost").
 * `port` 0 picks a free port; rage_runtime_port() tells which. With `reuseport` set, the socket
 * uses SO_REUSEPORT so that several worker processes share the port. Returns 0, UV_EADDRINUSE,
 * or another negative code.
 */
int rage_runtime_listen(rage_runtime_t *rt, const char *host, int port, int reuseport);

/* The bound TCP port after a successful rage_runtime_listen(), else 0. */
int rage_runtime_port(rage_runtime_t *rt);

/*
 * Runs the loop until rage_runtime_stop() has finished draining. Only for runtimes that own their
 * loop; a host with its own loop runs that loop instead. Returns 0.
 */
int rage_runtime_run(rage_runtime_t *rt);

/*
 * Begins a graceful stop: stop accepting, close idle keep-alive connections, let in-flight
 * requests finish (their responses carry Connection: close) for at most the configured
 * drain_timeout, then close whatever remains. Calling it again forces the stop at once.
 * Installs nothing; the host decides which signals call it (see rage_runtime_handle_signals).
 */
void rage_runtime_stop(rage_runtime_t *rt);

/* Makes SIGTERM and SIGINT call rage_runtime_stop() on this runtime's loop. Returns 0 or an error. */
int rage_runtime_handle_signals(rage_runtime_t *rt);

/*
 * Frees the runtime: closes every handle it opened, closes the Lua state, and closes the loop if
 * the runtime owns it. In-flight requests are cut. Must not be called from a callback of the loop.
 */
void rage_runtime_free(rage_runtime_t *rt);

/*
 * Handing requests in without sockets. The request strings need only live until the call
 * returns: librage copies them. The response passed to the callback, and every pointer in it,
 * is valid only during the callback.
 */
typedef struct rage_header_s {
  const char *name;
  size_t name_len;
  const char *value;
  size_t value_len;
} rage_header_t;

typedef struct rage_request_s {
  const char *method; /* "GET", ... */
  const char *target; /* path with optional ?query */
  const rage_header_t *headers;
  size_t nheaders;
  const char *body;
  size_t body_len;
} rage_request_t;

typedef struct rage_response_s {
  int status;
  const rage_header_t *headers;
  size_t nheaders;
  const char *body;
  size_t body_len;
} rage_response_t;

typedef void (*rage_response_cb)(const rage_response_t *res, void *data);

/*
 * Dispatches `req` through the app's router and controllers in a new fiber. Returns 0 and later
 * calls `cb` exactly once, never from inside this call (the fiber starts on the next loop
 * iteration); or returns a negative code and never calls `cb`. The app must be loaded.
 */
int rage_runtime_dispatch(rage_runtime_t *rt, const rage_request_t *req, rage_response_cb cb,
                          void *data);

/*
 * Prefork supervision. rage_workers_run() forks `count` worker processes, each of which calls
 * `worker_main(index, data)` and exits with its return value. The calling process becomes the
 * master: it restarts a worker that dies, forwards SIGTERM/SIGINT to all workers (a second
 * signal kills them), waits for them at most the largest drain timeout the workers reported
 * through rage_worker_ready() (`drain_timeout` ms until one has) plus two grace seconds, then
 * kills what is left, and returns 0 when all workers have exited normally. A worker that exits with RAGE_WORKER_EXIT_FATAL (for
 * example because the app failed to boot) stops the master instead of being restarted, and
 * rage_workers_run() returns RAGE_EBOOT. Call it before creating any runtime in this process.
 */
#define RAGE_WORKER_EXIT_FATAL 78

typedef int (*rage_worker_main_cb)(int index, void *data);
typedef void (*rage_workers_ready_cb)(void *data);

/*
 * `on_ready(data)`, when not NULL, runs in the master once every worker has called
 * rage_worker_ready() (once, for the first full set; restarted workers do not call it again).
 */
int rage_workers_run(int count, uint64_t drain_timeout, rage_worker_main_cb worker_main,
                     rage_workers_ready_cb on_ready, void *data);

/* Tells the master that this worker accepts connections, and how long `rt` (may be NULL) takes
 * to drain, which bounds the master's wait at shutdown. No effect outside a worker. */
void rage_worker_ready(const rage_runtime_t *rt);

/*
 * Checks that host:port can be bound by a process that does not share it, which tells whether
 * another program already uses the port. Returns 0, UV_EADDRINUSE, or another negative code;
 * with `port` 0, returns a free port number the kernel picked (positive).
 */
int rage_probe_port(const char *host, int port);

#ifdef __cplusplus
}
#endif

#endif /* RAGE_H */
