/*
 * log.h - the core's logger: one line per event on stderr (or a file descriptor the host
 * picks), with a timestamp, the level and the worker's pid. Lua's rage.log writes through it,
 * so C and Lua lines interleave in order.
 */
#ifndef RAGE_LOG_H
#define RAGE_LOG_H

#include <stddef.h>

void rage__log_set_level(int level);
int rage__log_level(void);
void rage__log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void rage__log_write(int level, const char *msg, size_t len);

#define RAGE_LOG_ENABLED(level) ((level) >= rage__log_level())

#endif /* RAGE_LOG_H */
