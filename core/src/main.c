/*
 * main.c - the rage-lua command line. It is an ordinary embedder of rage.h: everything it does
 * goes through the public API, which keeps that API complete and honest.
 *
 *   rage-lua run DIR [--port N] [--host H] [--workers N] [--env ENV]
 *   rage-lua new NAME
 *   rage-lua routes DIR
 *   rage-lua console DIR
 *   rage-lua db create|migrate|rollback|status DIR
 *   rage-lua test [DIR|PATH...]
 *   rage-lua --version | --help
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "rage.h"

static const char usage[] =
    "Usage: rage-lua <command> [options]\n"
    "\n"
    "Commands:\n"
    "  new NAME           create a new app in NAME\n"
    "  run DIR            serve the app in DIR\n"
    "  routes DIR         print the app's routes\n"
    "  console DIR        a Lua console inside the runtime with the app loaded\n"
    "  db CMD DIR         the app's database: create, migrate, rollback [STEPS], status\n"
    "  test [DIR|PATH...] run busted specs inside the runtime: an app's spec/, or the\n"
    "                     given paths (default: spec/ in the current directory)\n"
    "\n"
    "Options for run:\n"
    "  --port N           TCP port (default: $PORT or 3000; 0 picks a free port)\n"
    "  --host H           address to bind (default: 127.0.0.1, or 0.0.0.0 in production)\n"
    "  --workers N        worker processes (default: 1 in development, one per core in\n"
    "                     production)\n"
    "  --env ENV          development, production or test (default: $RAGE_ENV or development)\n"
    "\n"
    "  --version          print the version\n"
    "  --help             print this help\n";

typedef struct {
  const char *dir;
  const char *host;
  const char *env;
  int port;
  int workers;
} run_opts_t;

static int die(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int die(const char *fmt, ...) {
  va_list ap;
  fprintf(stderr, "rage-lua: ");
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  return 1;
}

static int parse_int(const char *s, int lo, int hi, int *out) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || *s == '\0' || *end != '\0' || v < lo || v > hi) return -1;
  *out = (int)v;
  return 0;
}

static int is_dir(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static int check_app_dir(const char *dir) {
  char path[4096];
  if (!is_dir(dir)) return die("no such app directory: %s", dir);
  snprintf(path, sizeof(path), "%s/config/routes.lua", dir);
  if (access(path, R_OK) != 0)
    return die("%s does not look like a rage-lua app (missing %s)", dir, path);
  return 0;
}

static rage_runtime_t *boot(const run_opts_t *o) {
  rage_options_t ropts = {0};
  ropts.env = o->env;
  rage_runtime_t *rt;
  if (rage_runtime_new(&rt, NULL, &ropts) != 0) {
    die("%s", rage_runtime_error(NULL));
    return NULL;
  }
  if (rage_runtime_load_app(rt, o->dir) != 0) {
    die("the app failed to boot: %s", rage_runtime_error(rt));
    rage_runtime_free(rt);
    return NULL;
  }
  return rt;
}

static int serve(const run_opts_t *o, int reuseport, int announce) {
  rage_runtime_t *rt = boot(o);
  if (rt == NULL) return RAGE_WORKER_EXIT_FATAL;
  int r = rage_runtime_listen(rt, o->host, o->port, reuseport);
  if (r != 0) {
    char port[16];
    snprintf(port, sizeof(port), "%d", o->port);
    if (r == UV_EADDRINUSE) die("port %s is already in use on %s", port, o->host);
    else die("cannot listen: %s (%s)", rage_strerror(r), o->host);
    rage_runtime_free(rt);
    return RAGE_WORKER_EXIT_FATAL;
  }
  rage_runtime_handle_signals(rt);
  if (reuseport) rage_worker_ready(rt);
  if (announce) {
    const char *h = o->host;
    int v6 = strchr(h, ':') != NULL;
    fprintf(stderr, "rage-lua %s listening on http://%s%s%s:%d (env %s, pid %d)\n", rage_version(),
            v6 ? "[" : "", h, v6 ? "]" : "", rage_runtime_port(rt), o->env, (int)getpid());
  }
  rage_runtime_run(rt);
  rage_runtime_free(rt);
  return 0;
}

/* The master announces the server once every worker accepts connections. */
static void announce_master(void *data) {
  const run_opts_t *o = data;
  int v6 = strchr(o->host, ':') != NULL;
  fprintf(stderr, "rage-lua %s listening on http://%s%s%s:%d (env %s, %d workers, master pid %d)\n",
          rage_version(), v6 ? "[" : "", o->host, v6 ? "]" : "", o->port, o->env, o->workers,
          (int)getpid());
}

static int worker_main(int index, void *data) {
  return serve(data, 1, 0);
}

static int cmd_run(int argc, char **argv) {
  run_opts_t o = {0};
  const char *port_env = getenv("PORT");
  o.port = 3000;
  o.workers = 0;
  o.env = getenv("RAGE_ENV");
  if (port_env && parse_int(port_env, 0, 65535, &o.port) != 0)
    return die("PORT must be a number from 0 to 65535, not '%s'", port_env);
  for (int i = 0; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (strcmp(a, "--port") == 0 || strcmp(a, "-p") == 0) {
      if (!v || parse_int(v, 0, 65535, &o.port) != 0)
        return die("--port needs a number from 0 to 65535");
      i++;
    } else if (strcmp(a, "--host") == 0 || strcmp(a, "-b") == 0) {
      if (!v) return die("--host needs an address");
      o.host = v;
      i++;
    } else if (strcmp(a, "--workers") == 0 || strcmp(a, "-w") == 0) {
      if (!v || parse_int(v, 1, 256, &o.workers) != 0)
        return die("--workers needs a number from 1 to 256");
      i++;
    } else if (strcmp(a, "--env") == 0 || strcmp(a, "-e") == 0) {
      if (!v) return die("--env needs a name");
      o.env = v;
      i++;
    } else if (a[0] == '-') {
      return die("unknown option '%s' (see rage-lua --help)", a);
    } else if (o.dir == NULL) {
      o.dir = a;
    } else {
      return die("unexpected argument '%s'", a);
    }
  }
  if (o.dir == NULL) return die("run needs an app directory: rage-lua run DIR");
  if (o.env == NULL || *o.env == '\0') o.env = "development";
  if (strcmp(o.env, "development") && strcmp(o.env, "production") && strcmp(o.env, "test"))
    return die("--env must be development, production or test, not '%s'", o.env);
  int production = strcmp(o.env, "production") == 0;
  if (o.host == NULL) o.host = production ? "0.0.0.0" : "127.0.0.1";
  if (o.workers == 0) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    o.workers = production && n > 0 ? (int)n : 1;
  }
  if (check_app_dir(o.dir) != 0) return 1;
  setenv("RAGE_ENV", o.env, 1);

  int r = rage_probe_port(o.host, o.port);
  if (r < 0) {
    char port[16];
    snprintf(port, sizeof(port), "%d", o.port);
    if (r == UV_EADDRINUSE) return die("port %s is already in use on %s", port, o.host);
    return die("cannot use address %s: %s", o.host, rage_strerror(r));
  }
  if (o.port == 0) o.port = r;

  if (o.workers == 1) {
    r = serve(&o, 0, 1);
    return r == 0 ? 0 : 1;
  }
  /* The workers report the app's drain_timeout when they are ready; until then, the default. */
  r = rage_workers_run(o.workers, 30000, worker_main, announce_master, &o);
  return r == 0 ? 0 : 1;
}

static int cmd_lua(const char *func, int argc, char **argv, const char *env) {
  rage_options_t ropts = {0};
  ropts.env = env;
  rage_runtime_t *rt;
  if (rage_runtime_new(&rt, NULL, &ropts) != 0) return die("%s", rage_runtime_error(NULL));
  int status = 0;
  int r = rage_runtime_call(rt, "rage.cli", func, argc, argv, &status);
  if (r != 0) {
    die("%s", rage_runtime_error(rt));
    status = 1;
  }
  rage_runtime_free(rt);
  return status;
}

int main(int argc, char **argv) {
  if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
      strcmp(argv[1], "help") == 0) {
    fputs(usage, argc < 2 ? stderr : stdout);
    return argc < 2 ? 1 : 0;
  }
  if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "-v") == 0 ||
      strcmp(argv[1], "version") == 0) {
    printf("rage-lua %s\n", rage_version());
    return 0;
  }
  if (strcmp(argv[1], "run") == 0 || strcmp(argv[1], "server") == 0 || strcmp(argv[1], "s") == 0)
    return cmd_run(argc - 2, argv + 2);
  if (strcmp(argv[1], "routes") == 0) {
    if (argc != 3) return die("usage: rage-lua routes DIR");
    if (check_app_dir(argv[2]) != 0) return 1;
    return cmd_lua("routes", argc - 2, argv + 2, NULL);
  }
  if (strcmp(argv[1], "new") == 0) {
    if (argc != 3) return die("usage: rage-lua new NAME");
    return cmd_lua("new", 1, argv + 2, NULL);
  }
  if (strcmp(argv[1], "console") == 0 || strcmp(argv[1], "c") == 0) {
    if (argc != 3) return die("usage: rage-lua console DIR");
    if (check_app_dir(argv[2]) != 0) return 1;
    return cmd_lua("console", 1, argv + 2, NULL);
  }
  if (strcmp(argv[1], "db") == 0) {
    if (argc < 4 || argc > 5) return die("usage: rage-lua db create|migrate|rollback|status DIR [STEPS]");
    if (check_app_dir(argv[3]) != 0) return 1;
    return cmd_lua("db", argc - 2, argv + 2, NULL);
  }
  if (strcmp(argv[1], "test") == 0) {
    const char *env = getenv("RAGE_ENV");
    if (env == NULL || *env == '\0') setenv("RAGE_ENV", "test", 1);
    return cmd_lua("test", argc - 2, argv + 2, NULL);
  }
  return die("unknown command '%s' (see rage-lua --help)", argv[1]);
}
