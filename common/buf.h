/*
 * buf.h - a growable byte buffer for building responses and JSON.
 *
 * Appends never fail loudly: on allocation failure the buffer sets `oom` and ignores further
 * appends, so a caller builds a whole answer and checks `oom` once at the end.
 */
#ifndef SP_BUF_H
#define SP_BUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    char *data; /* owned; NUL-terminated when len > 0 (for convenience, not counted in len) */
    size_t len;
    size_t cap;
    bool oom;
} sp_buf_t;

#define SP_BUF_INIT                                                                                \
    {                                                                                              \
        NULL, 0, 0, false                                                                          \
    }

void sp_buf_init(sp_buf_t *b);
void sp_buf_free(sp_buf_t *b);
/* Empties the buffer, keeping its memory. */
void sp_buf_reset(sp_buf_t *b);
/* Makes room for `extra` more bytes; returns false (and sets oom) on failure. */
bool sp_buf_reserve(sp_buf_t *b, size_t extra);
void sp_buf_append(sp_buf_t *b, const void *p, size_t n);
void sp_buf_puts(sp_buf_t *b, const char *s);
void sp_buf_putc(sp_buf_t *b, char c);
void sp_buf_printf(sp_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void sp_buf_u64(sp_buf_t *b, uint64_t v);
void sp_buf_i64(sp_buf_t *b, int64_t v);
/* Appends `s` as a quoted JSON string, escaping what RFC 8259 requires (NUL included). The
 * input is taken as UTF-8 already validated by the caller. */
void sp_buf_json_str(sp_buf_t *b, const char *s, size_t n);
/* Takes the buffer's memory (caller frees with free()); the buffer is left empty. */
char *sp_buf_steal(sp_buf_t *b, size_t *len);

#endif
