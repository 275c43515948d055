/*
 * json.h - a strict, allocation-free JSON scanner over the client's own bytes.
 *
 * Spool stores payloads and results as the exact JSON text a client sent, so that big integers,
 * long decimals and every code point come back unchanged. This module validates a text against
 * RFC 8259 (strictly: valid UTF-8, no byte-order mark, no lone surrogate escapes, no leading
 * zeros, no trailing commas, depth capped) and then walks it by spans: a value is a pointer and
 * a length into the caller's buffer, never a copy. Nothing here allocates.
 *
 * Iteration functions assume the text was validated by sp_json_parse first.
 */
#ifndef SP_JSON_H
#define SP_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum {
    SP_JSON_NULL,
    SP_JSON_FALSE,
    SP_JSON_TRUE,
    SP_JSON_NUMBER,
    SP_JSON_STRING, /* the span includes the quotes */
    SP_JSON_ARRAY,
    SP_JSON_OBJECT,
} sp_json_type_t;

/* One value: its type and its raw text (start, len) inside the validated buffer. */
typedef struct {
    sp_json_type_t type;
    const char *start;
    size_t len;
} sp_json_val_t;

#define SP_JSON_MAX_DEPTH 64

/* Validates that text[0..len) is exactly one JSON value, optionally surrounded by whitespace,
 * nested at most max_depth deep. On success returns 0 and sets *out to the value (whitespace
 * trimmed). On failure returns SP_EINVAL and writes a message naming what and where
 * ("invalid JSON at byte 17: expected ',' or '}'", "invalid UTF-8 at byte 3", "lone surrogate
 * escape at byte 9", "nesting deeper than 64", "byte-order mark not allowed") into err. */
int sp_json_parse(const char *text, size_t len, int max_depth, sp_json_val_t *out, char *err,
                  size_t errlen);

/* Checks, for an object value, that no key occurs twice among its direct members (keys compared
 * after unescaping). Returns 0, or SP_EINVAL with "duplicate key 'name'" in err. */
int sp_json_check_unique_keys(sp_json_val_t obj, char *err, size_t errlen);

/* Iterates an array's elements or an object's members. */
typedef struct {
    const char *p;
    const char *end;
} sp_json_iter_t;

void sp_json_iter_init(sp_json_iter_t *it, sp_json_val_t container);
/* Next element of an array: returns true and sets *val, or false at the end. */
bool sp_json_arr_next(sp_json_iter_t *it, sp_json_val_t *val);
/* Next member of an object: returns true and sets *key (a STRING value) and *val. */
bool sp_json_obj_next(sp_json_iter_t *it, sp_json_val_t *key, sp_json_val_t *val);

/* Counts an array's elements (0 for an empty array). */
size_t sp_json_arr_len(sp_json_val_t arr);

/* Decodes a STRING value into UTF-8 bytes (escapes resolved; "\u0000" yields a NUL byte).
 * Writes at most cap bytes to out; always sets *outlen to the full decoded length. Returns 0,
 * or SP_ETOOBIG when the decoded length exceeds cap (out then holds the first cap bytes). */
int sp_json_str_decode(sp_json_val_t str, char *out, size_t cap, size_t *outlen);

/* The decoded length of a STRING value. */
size_t sp_json_str_len(sp_json_val_t str);

/* True when the STRING value decodes to exactly the NUL-terminated literal `lit`. */
bool sp_json_str_eq(sp_json_val_t str, const char *lit);

/* A NUMBER value that is a plain integer (no fraction, no exponent: "5.0" and "1e1" are not)
 * within int64_t. Returns 0, or SP_EINVAL when it is not an integer or out of range. */
int sp_json_int(sp_json_val_t num, int64_t *out);

/* Looks up a member by key in an object (first match); returns true and sets *val. */
bool sp_json_obj_get(sp_json_val_t obj, const char *key, sp_json_val_t *val);

/* Decodes a STRING value for quoting in an error message: NUL-terminated in out (cap > 0),
 * control characters shown as '?', cut at a character boundary with "..." when longer than
 * cap - 1 bytes. Returns the length written. */
size_t sp_json_str_preview(sp_json_val_t str, char *out, size_t cap);

/* The length of the longest prefix of s[0..len) that is well-formed UTF-8 (len when all of it
 * is): no overlongs, no surrogates, nothing past U+10FFFF. */
size_t sp_json_utf8_span(const char *s, size_t len);

#endif
