/*
 * log.h - one log line per event on standard error: time, level, message.
 *
 * Standard output is kept for what scripts read (the "listening on" line); logs go to stderr.
 */
#ifndef SP_LOG_H
#define SP_LOG_H

typedef enum { SP_LOG_DEBUG, SP_LOG_INFO, SP_LOG_WARN, SP_LOG_ERROR } sp_log_level_t;

/* Lines below this level are dropped; default SP_LOG_INFO. */
void sp_log_set_level(sp_log_level_t level);
/* Parses "debug", "info", "warn", "error"; returns 0 or -1. */
int sp_log_parse_level(const char *s, sp_log_level_t *out);
void sp_log(sp_log_level_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define sp_debug(...) sp_log(SP_LOG_DEBUG, __VA_ARGS__)
#define sp_info(...) sp_log(SP_LOG_INFO, __VA_ARGS__)
#define sp_warn(...) sp_log(SP_LOG_WARN, __VA_ARGS__)
#define sp_error(...) sp_log(SP_LOG_ERROR, __VA_ARGS__)

#endif
