/*
 * log.c - see log.h. A line is formatted into one buffer and written with a single write(2),
 * so lines from several worker processes sharing stderr never interleave mid-line.
 */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "rage.h"

static int log_level = RAGE_LOG_INFO;

static const char *const level_names[] = {"", "DEBUG", "INFO", "WARN", "ERROR"};

void rage__log_set_level(int level) {
  if (level >= RAGE_LOG_DEBUG && level <= RAGE_LOG_ERROR) log_level = level;
}

int rage__log_level(void) {
  return log_level;
}

void rage__log_write(int level, const char *msg, size_t len) {
  char line[4096];
  struct timeval tv;
  struct tm tm;
  if (level < log_level) return;
  if (level < RAGE_LOG_DEBUG || level > RAGE_LOG_ERROR) level = RAGE_LOG_INFO;
  gettimeofday(&tv, NULL);
  localtime_r(&tv.tv_sec, &tm);
  int n = snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%03d [%d] %s ",
                   tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                   tm.tm_sec, (int)(tv.tv_usec / 1000), (int)getpid(), level_names[level]);
  if (n < 0) return;
  size_t room = sizeof(line) - (size_t)n - 1;
  if (len <= room) {
    memcpy(line + n, msg, len);
    line[n + len] = '\n';
    (void)!write(STDERR_FILENO, line, (size_t)n + len + 1);
    return;
  }
  /* A long message (a traceback) goes out in pieces; the prefix stays on its first line. */
  (void)!write(STDERR_FILENO, line, (size_t)n);
  (void)!write(STDERR_FILENO, msg, len);
  (void)!write(STDERR_FILENO, "\n", 1);
}

void rage__log(int level, const char *fmt, ...) {
  char msg[2048];
  va_list ap;
  if (level < log_level) return;
  va_start(ap, fmt);
  int n = vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  if (n < 0) return;
  if ((size_t)n >= sizeof(msg)) n = sizeof(msg) - 1;
  rage__log_write(level, msg, (size_t)n);
}
