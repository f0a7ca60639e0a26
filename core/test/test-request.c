/*
 * test-request.c - request objects: the ids the core makes, counted up in decimal after a
 * per-process prefix, and the ids it adopts from the client.
 */
#include <sys/wait.h>
#include <unistd.h>

#include "request.h"
#include "test.h"

/* The id of a new request, copied out. */
static void make_id(rage__pools_t *pools, char *out, size_t size) {
  rage__req_t *req = rage__req_new(pools);
  size_t len;
  const char *id = rage__req_id(req, &len);
  ASSERT(len > 0 && len < size && strlen(id) == len);
  ASSERT(rage__req_id(req, &len) == id); /* made once */
  memcpy(out, id, len + 1);
  rage__req_free(req);
}

TEST(ids_count_up) {
  rage_server_config_t cfg;
  rage_server_config_init(&cfg);
  rage__pools_t pools;
  rage__pools_init(&pools, &cfg);
  char first[64], id[64], want[64];
  make_id(&pools, first, sizeof(first));
  char *dash = strchr(first, '-');
  ASSERT(dash != NULL);
  size_t prefix = (size_t)(dash + 1 - first);
  unsigned long start = strtoul(dash + 1, NULL, 10);
  /* Past 9, 99 and 999: the counter grows a digit in place. */
  for (unsigned long n = start + 1; n <= 1200; n++) {
    make_id(&pools, id, sizeof(id));
    snprintf(want, sizeof(want), "%.*s%lu", (int)prefix, first, n);
    ASSERT_STR(id, want);
  }
  /* A forked child makes ids of its own prefix, counting from 1. */
  pid_t pid = fork();
  ASSERT(pid >= 0);
  if (pid == 0) {
    make_id(&pools, id, sizeof(id));
    dash = strchr(id, '-');
    int ok = dash != NULL && strcmp(dash, "-1") == 0 && strncmp(id, first, prefix) != 0;
    _exit(ok ? 0 : 1);
  }
  int st;
  ASSERT_EQ(waitpid(pid, &st, 0), pid);
  ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
  make_id(&pools, id, sizeof(id));
  snprintf(want, sizeof(want), "%.*s1201", (int)prefix, first);
  ASSERT_STR(id, want);
  rage__pools_free(&pools);
}

TEST(ids_adopted) {
  rage_server_config_t cfg;
  rage_server_config_init(&cfg);
  rage__pools_t pools;
  rage__pools_init(&pools, &cfg);
  rage__req_t *req = rage__req_new(&pools);
  size_t len;
  rage__req_take_id(req, "abc-1.2:x@y_Z", 13);
  ASSERT_STR(rage__req_id(req, &len), "abc-1.2:x@y_Z");
  ASSERT_EQ(len, 13);
  rage__req_free(req);
  req = rage__req_new(&pools);
  rage__req_take_id(req, "bad id", 6); /* refused: a made id instead */
  const char *id = rage__req_id(req, &len);
  ASSERT(strchr(id, '-') != NULL && strcmp(id, "bad id") != 0);
  rage__req_free(req);
  rage__pools_free(&pools);
}

int main(int argc, char **argv) {
  static const test_entry_t tests[] = {TEST_ENTRY(ids_count_up), TEST_ENTRY(ids_adopted),
                                       {NULL, NULL}};
  return test_main(argc, argv, tests);
}
