/* test_json.c - the strict JSON scanner: validation, messages, iteration, decoding, integers. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "sp.h"

typedef struct {
    const char *text;
    size_t len;
    const char *want; /* expected type name for valid cases, a word of the message otherwise */
} jcase_t;

#define J(s, w)                                                                                    \
    {                                                                                              \
        s, sizeof(s) - 1, w                                                                        \
    }

static int parse_n(const char *s, size_t n, sp_json_val_t *v, char *err, size_t errlen)
{
    return sp_json_parse(s, n, SP_JSON_MAX_DEPTH, v, err, errlen);
}

static int parse(const char *s, sp_json_val_t *v)
{
    char err[200];
    return parse_n(s, strlen(s), v, err, sizeof err);
}

/* Asserts that text is rejected with a message containing `word`. */
static void expect_invalid(const char *text, size_t len, const char *word)
{
    sp_json_val_t v;
    char err[200] = "";
    int rc = parse_n(text, len, &v, err, sizeof err);
    if (rc != SP_EINVAL || !strstr(err, word)) {
        print_error("input %.*s: rc %d, message '%s', wanted '%s'\n", (int)len, text, rc, err,
                    word);
        fail();
    }
}

static const char *type_name(sp_json_type_t t)
{
    static const char *const names[] = {"null",   "false", "true",  "number",
                                        "string", "array", "object"};
    return names[t];
}

static void test_valid_documents(void **state)
{
    (void)state;
    static const jcase_t cases[] = {
        J("null", "null"),
        J("true", "true"),
        J("false", "false"),
        J("0", "number"),
        J("-0", "number"),
        J("-0.0e-0", "number"),
        J("1.5E+10", "number"),
        J("123456789012345678901234567890", "number"),
        J("\"\"", "string"),
        J("\"a\\\"b\\\\c\\/d\\b\\f\\n\\r\\t\\u00e9\\uD83D\\uDE00\"", "string"),
        J("\"\\u0000\"", "string"),
        J("\"\x7f\"", "string"),
        J("[]", "array"),
        J("[ ]", "array"),
        J("[1,[2,[3,{}]],\"x\",null,true,false]", "array"),
        J("{}", "object"),
        J("{ \"a\" : 1 , \"b\" : [ ] , \"c\" : { \"d\" : null } }", "object"),
        J(" \t\r\n{\"a\":1}\n\r\t ", "object"),
        J("{\"\":\"\"}", "object"),
    };
    for (size_t i = 0; i < SP_ARRAY_LEN(cases); i++) {
        sp_json_val_t v;
        char err[200] = "";
        int rc = parse_n(cases[i].text, cases[i].len, &v, err, sizeof err);
        if (rc != 0) {
            print_error("case %zu (%s): %s\n", i, cases[i].text, err);
            fail();
        }
        assert_string_equal(type_name(v.type), cases[i].want);
    }
}

static void test_invalid_documents(void **state)
{
    (void)state;
    static const jcase_t cases[] = {
        J("", "empty"),
        J("   ", "empty"),
        J("nul", "expected a value"),
        J("nulll", "after the value"),
        J("True", "expected a value"),
        J("1 2", "after the value"),
        J("{} {}", "after the value"),
        J("[1,]", "expected a value"),
        J("[,1]", "expected a value"),
        J("[1 2]", "expected ',' or ']'"),
        J("[1", "end of input"),
        J("[", "end of input"),
        J("{\"a\":1,}", "key"),
        J("{\"a\" 1}", "':'"),
        J("{\"a\":}", "expected a value"),
        J("{a:1}", "key"),
        J("{'a':1}", "key"),
        J("{\"a\":1 \"b\":2}", "expected ',' or '}'"),
        J("{\"a\":1", "end of input"),
        J("[1}", "expected ',' or ']'"),
        J("{\"a\":1]", "expected ',' or '}'"),
        J("01", "leading zero"),
        J("-01", "leading zero"),
        J("-", "digit"),
        J("+1", "expected a value"),
        J("1.", "decimal point"),
        J(".5", "expected a value"),
        J("1.e5", "decimal point"),
        J("1e", "exponent"),
        J("1e+", "exponent"),
        J("NaN", "expected a value"),
        J("Infinity", "expected a value"),
        J("0x10", "after the value"),
        J("\"abc", "unterminated"),
        J("\"abc\\", "unterminated"),
        J("\"a\nb\"", "control character"),
        J("\"a\tb\"", "control character"),
        J("\"\x01\"", "control character"),
        J("\"\\x41\"", "invalid escape"),
        J("\"\\'\"", "invalid escape"),
        J("\"\\u12\"", "\\u escape"),
        J("\"\\u12G4\"", "\\u escape"),
        J("\"\\U0041\"", "invalid escape"),
        J("\"a\" \x00", "after the value"),
        J("\x00", "expected a value"),
        J("[1]\x0b", "after the value"),
        J("\xc3\xa9", "expected a value"),
        J("/* c */ 1", "expected a value"),
    };
    for (size_t i = 0; i < SP_ARRAY_LEN(cases); i++)
        expect_invalid(cases[i].text, cases[i].len, cases[i].want);
}

static void test_messages_name_the_offset(void **state)
{
    (void)state;
    expect_invalid("[1,]", 4, "invalid JSON at byte 3");
    expect_invalid("{\"a\":1 x", 8, "at byte 7: expected ',' or '}'");
    expect_invalid("\"ab\xff\"", 5, "invalid UTF-8 at byte 3");
    expect_invalid("  [\"\\uDC00\"]", 12, "lone surrogate escape at byte 4");

    /* A NULL or zero-sized err buffer is allowed. */
    sp_json_val_t v;
    assert_int_equal(sp_json_parse("[", 1, 8, &v, NULL, 0), SP_EINVAL);
    char tiny[4];
    assert_int_equal(sp_json_parse("[", 1, 8, &v, tiny, sizeof tiny), SP_EINVAL);
    assert_int_equal(strlen(tiny), 3);
}

static void test_value_span_trimmed(void **state)
{
    (void)state;
    sp_json_val_t v;
    assert_int_equal(parse("  \n{\"a\": [1, 2]}\t ", &v), 0);
    assert_int_equal(v.type, SP_JSON_OBJECT);
    assert_int_equal(v.len, strlen("{\"a\": [1, 2]}"));
    assert_memory_equal(v.start, "{\"a\": [1, 2]}", v.len);

    /* Only len bytes are read: no terminator needed. */
    char buf[3] = {'4', '2', '7'};
    assert_int_equal(parse_n(buf, 2, &v, NULL, 0), 0);
    assert_int_equal(v.len, 2);
    assert_int_equal(parse_n(NULL, 0, &v, NULL, 0), SP_EINVAL);
}

static void test_big_numbers_kept_verbatim(void **state)
{
    (void)state;
    static const char *const nums[] = {
        "123456789012345678901234567890123456789012345678901234567890",
        "-0.000000000000000000000000000000000000000000000000000000000001",
        "3.14159265358979323846264338327950288419716939937510582097494459",
        "1E+400",
        "-9223372036854775809",
        "18446744073709551616",
        "2.5e-999",
    };
    char doc[1024];
    size_t n = 0;
    doc[n++] = '[';
    for (size_t i = 0; i < SP_ARRAY_LEN(nums); i++) {
        n += (size_t)snprintf(doc + n, sizeof doc - n, "%s%s", i ? " , " : "", nums[i]);
    }
    doc[n++] = ']';
    sp_json_val_t arr, v;
    assert_int_equal(parse_n(doc, n, &arr, NULL, 0), 0);
    assert_int_equal(sp_json_arr_len(arr), SP_ARRAY_LEN(nums));
    sp_json_iter_t it;
    sp_json_iter_init(&it, arr);
    for (size_t i = 0; i < SP_ARRAY_LEN(nums); i++) {
        assert_true(sp_json_arr_next(&it, &v));
        assert_int_equal(v.type, SP_JSON_NUMBER);
        assert_int_equal(v.len, strlen(nums[i]));
        assert_memory_equal(v.start, nums[i], v.len);
    }
    assert_false(sp_json_arr_next(&it, &v));
}

static char *nested(int depth, char open, char close)
{
    char *s = malloc((size_t)depth * 2 + 1);
    assert_non_null(s);
    memset(s, open, (size_t)depth);
    memset(s + depth, close, (size_t)depth);
    s[depth * 2] = '\0';
    return s;
}

static void test_depth_limit(void **state)
{
    (void)state;
    sp_json_val_t v;
    char err[200];
    char *ok = nested(SP_JSON_MAX_DEPTH, '[', ']');
    assert_int_equal(parse_n(ok, strlen(ok), &v, err, sizeof err), 0);
    free(ok);

    char *deep = nested(SP_JSON_MAX_DEPTH + 1, '[', ']');
    assert_int_equal(parse_n(deep, strlen(deep), &v, err, sizeof err), SP_EINVAL);
    assert_non_null(strstr(err, "nesting deeper than 64"));
    assert_non_null(strstr(err, "at byte 64"));
    free(deep);

    /* Objects and arrays mixed count alike. */
    const char *mix = "{\"a\":[{\"b\":[1]}]}";
    assert_int_equal(sp_json_parse(mix, strlen(mix), 4, &v, err, sizeof err), 0);
    assert_int_equal(sp_json_parse(mix, strlen(mix), 3, &v, err, sizeof err), SP_EINVAL);
    assert_non_null(strstr(err, "nesting deeper than 3"));

    /* Depth 0 allows scalars only. */
    assert_int_equal(sp_json_parse("7", 1, 0, &v, err, sizeof err), 0);
    assert_int_equal(sp_json_parse("[]", 2, 0, &v, err, sizeof err), SP_EINVAL);

    /* Hostile depth costs nothing: the scanner stops at the limit without recursing. */
    size_t big = 1000000;
    char *hostile = malloc(big);
    assert_non_null(hostile);
    memset(hostile, '[', big);
    assert_int_equal(parse_n(hostile, big, &v, err, sizeof err), SP_EINVAL);
    assert_non_null(strstr(err, "nesting"));
    /* A huge max_depth is clamped rather than trusted. */
    assert_int_equal(sp_json_parse(hostile, big, 1 << 30, &v, err, sizeof err), SP_EINVAL);
    assert_non_null(strstr(err, "nesting"));
    free(hostile);

    /* Closing brackets restore the right container kind across the 64-bit word boundary. */
    char mixed[400];
    size_t n = 0;
    for (int i = 0; i < 70; i++)
        n += (size_t)snprintf(mixed + n, sizeof mixed - n, "%s", i % 2 ? "[" : "{\"k\":");
    for (int i = 69; i >= 0; i--) mixed[n++] = i % 2 ? ']' : '}';
    assert_int_equal(sp_json_parse(mixed, n, 100, &v, err, sizeof err), 0);
    mixed[n - 1] = ']';
    assert_int_equal(sp_json_parse(mixed, n, 100, &v, err, sizeof err), SP_EINVAL);
}

static void test_utf8_edges(void **state)
{
    (void)state;
    static const jcase_t good[] = {
        J("\"\xc2\x80\"", "U+0080"),
        J("\"\xdf\xbf\"", "U+07FF"),
        J("\"\xe0\xa0\x80\"", "U+0800"),
        J("\"\xed\x9f\xbf\"", "U+D7FF"),
        J("\"\xee\x80\x80\"", "U+E000"),
        J("\"\xef\xbf\xbf\"", "U+FFFF"),
        J("\"\xef\xbb\xbf\"", "BOM inside a string"),
        J("\"\xf0\x90\x80\x80\"", "U+10000"),
        J("\"\xf4\x8f\xbf\xbf\"", "U+10FFFF"),
        J("\"\xe4\xb8\xad\xe6\x96\x87\"", "CJK"),
    };
    for (size_t i = 0; i < SP_ARRAY_LEN(good); i++) {
        sp_json_val_t v;
        char err[200] = "";
        if (parse_n(good[i].text, good[i].len, &v, err, sizeof err) != 0) {
            print_error("%s: %s\n", good[i].want, err);
            fail();
        }
    }
    static const jcase_t bad[] = {
        J("\"\xc0\x80\"", "overlong NUL"),
        J("\"\xc1\xbf\"", "overlong 2-byte"),
        J("\"\xe0\x80\x80\"", "overlong 3-byte"),
        J("\"\xe0\x9f\xbf\"", "overlong 3-byte max"),
        J("\"\xf0\x80\x80\x80\"", "overlong 4-byte"),
        J("\"\xf0\x8f\xbf\xbf\"", "overlong 4-byte max"),
        J("\"\xed\xa0\x80\"", "UTF-8 encoded high surrogate"),
        J("\"\xed\xbf\xbf\"", "UTF-8 encoded low surrogate"),
        J("\"\xf4\x90\x80\x80\"", "past U+10FFFF"),
        J("\"\xf5\x80\x80\x80\"", "lead F5"),
        J("\"\xff\"", "FF"),
        J("\"\x80\"", "lone continuation"),
        J("\"\xe2\x82\"", "truncated 3-byte"),
        J("\"\xe2\x82", "truncated at the end"),
        J("\"\xf0\x9f\x98\"", "truncated 4-byte"),
        J("\"\xc3\x28\"", "bad continuation"),
    };
    for (size_t i = 0; i < SP_ARRAY_LEN(bad); i++) {
        sp_json_val_t v;
        char err[200] = "";
        if (parse_n(bad[i].text, bad[i].len, &v, err, sizeof err) != SP_EINVAL ||
            strcmp(err, "invalid UTF-8 at byte 1") != 0) {
            print_error("%s: '%s'\n", bad[i].want, err);
            fail();
        }
    }
}

static void test_bom_rejected(void **state)
{
    (void)state;
    expect_invalid("\xef\xbb\xbf{}", 5, "byte-order mark");
    expect_invalid("\xef\xbb\xbf", 3, "byte-order mark");
    /* Not a BOM: the first two bytes only. */
    expect_invalid("\xef\xbb", 2, "expected a value");
}

static void test_surrogate_escapes(void **state)
{
    (void)state;
    static const jcase_t lone[] = {
        J("\"\\uD800\"", "high alone"),
        J("\"\\uDBFF\"", "highest high alone"),
        J("\"\\uDC00\"", "low alone"),
        J("\"\\uDFFF\"", "highest low alone"),
        J("\"\\uD800\\u0041\"", "high then not a low"),
        J("\"\\uD800\\uD800\"", "high then high"),
        J("\"\\uD800x\"", "high then a plain char"),
        J("\"\\uD800\\n\"", "high then another escape"),
        J("\"\\uDC00\\uD800\"", "low then high"),
        J("\"\\ud800\"", "lowercase hex"),
    };
    for (size_t i = 0; i < SP_ARRAY_LEN(lone); i++) {
        sp_json_val_t v;
        char err[200] = "";
        if (parse_n(lone[i].text, lone[i].len, &v, err, sizeof err) != SP_EINVAL ||
            strcmp(err, "lone surrogate escape at byte 1") != 0) {
            print_error("%s: '%s'\n", lone[i].want, err);
            fail();
        }
    }
    sp_json_val_t v;
    assert_int_equal(parse("\"\\uD800\\uDC00\"", &v), 0);
    assert_int_equal(parse("\"\\udbff\\udfff\"", &v), 0);
    assert_int_equal(parse("\"\\uD83D\\uDE00\\uD83D\\uDE00\"", &v), 0);
}

/* Strings are scanned 8 bytes at a time: put each kind of byte at every position and
 * alignment, and check both the validator and the skipping iterator. */
static void test_string_scan_alignment(void **state)
{
    (void)state;
    static const struct {
        const char *bytes;
        const char *word; /* NULL when valid */
    } kinds[] = {
        {"\x01", "control character"},
        {"\x1f", "control character"},
        {"\xff", "invalid UTF-8"},
        {"\xed\xa0\x80", "invalid UTF-8"},
        {"\x7f", NULL},
        {" ", NULL},
        {"\xc3\xa9", NULL},
        {"\\n", NULL},
        {"\\\"", NULL},
        {"\\\\", NULL},
        {"]}[{,", NULL},
    };
    char doc[128], err[200], want[64];
    for (size_t len = 0; len < 40; len++) {
        for (size_t pos = 0; pos <= len; pos++) {
            for (size_t k = 0; k < SP_ARRAY_LEN(kinds); k++) {
                size_t n = 0, kl = strlen(kinds[k].bytes);
                doc[n++] = '[';
                doc[n++] = '"';
                memset(doc + n, 'a', pos);
                n += pos;
                memcpy(doc + n, kinds[k].bytes, kl);
                n += kl;
                memset(doc + n, 'b', len - pos);
                n += len - pos;
                doc[n++] = '"';
                memcpy(doc + n, ",17]", 4);
                n += 4;
                sp_json_val_t arr, v;
                int rc = parse_n(doc, n, &arr, err, sizeof err);
                if (kinds[k].word) {
                    if (strstr(kinds[k].word, "UTF-8"))
                        snprintf(want, sizeof want, "invalid UTF-8 at byte %zu", pos + 2);
                    else
                        snprintf(want, sizeof want, "invalid JSON at byte %zu: control", pos + 2);
                    if (rc != SP_EINVAL || strncmp(err, want, strlen(want)) != 0) {
                        print_error("len %zu pos %zu kind %zu: rc %d '%s'\n", len, pos, k, rc, err);
                        fail();
                    }
                    continue;
                }
                if (rc != 0) {
                    print_error("len %zu pos %zu kind %zu: %s\n", len, pos, k, err);
                    fail();
                }
                sp_json_iter_t it;
                sp_json_iter_init(&it, arr);
                assert_true(sp_json_arr_next(&it, &v));
                assert_int_equal(v.type, SP_JSON_STRING);
                assert_int_equal(v.len, len + kl + 2);
                assert_true(sp_json_arr_next(&it, &v));
                assert_int_equal(v.len, 2);
                assert_memory_equal(v.start, "17", 2);
                assert_false(sp_json_arr_next(&it, &v));
            }
        }
    }
}

static int check_keys(const char *doc, char *err, size_t errlen)
{
    sp_json_val_t v;
    assert_int_equal(parse(doc, &v), 0);
    return sp_json_check_unique_keys(v, err, errlen);
}

static void test_duplicate_keys_small(void **state)
{
    (void)state;
    char err[200];
    assert_int_equal(check_keys("{}", err, sizeof err), 0);
    assert_int_equal(check_keys("{\"a\":1,\"b\":2,\"ab\":3,\"\":4}", err, sizeof err), 0);
    assert_int_equal(check_keys("{\"a\":1,\"b\":2,\"a\":3}", err, sizeof err), SP_EINVAL);
    assert_string_equal(err, "duplicate key 'a'");
    /* Keys are compared decoded. */
    assert_int_equal(check_keys("{\"a\":1,\"\\u0061\":2}", err, sizeof err), SP_EINVAL);
    assert_string_equal(err, "duplicate key 'a'");
    assert_int_equal(check_keys("{\"\\u00e9\":1,\"\xc3\xa9\":2}", err, sizeof err), SP_EINVAL);
    assert_int_equal(check_keys("{\"\\/\":1,\"/\":2}", err, sizeof err), SP_EINVAL);
    assert_int_equal(check_keys("{\"\\uD83D\\uDE00\":1,\"\xf0\x9f\x98\x80\":2}", err, sizeof err),
                     SP_EINVAL);
    assert_int_equal(check_keys("{\"a\\u0000\":1,\"a\":2}", err, sizeof err), 0);
    assert_int_equal(check_keys("{\"a\\u0000\":1,\"a\\u0000\":2}", err, sizeof err), SP_EINVAL);
    assert_string_equal(err, "duplicate key 'a?'");
    assert_int_equal(check_keys("{\"\":1,\"\":2}", err, sizeof err), SP_EINVAL);
    /* Only direct members count. */
    assert_int_equal(check_keys("{\"x\":{\"a\":1},\"y\":{\"a\":1}}", err, sizeof err), 0);
    /* Not an object: nothing to check. */
    assert_int_equal(check_keys("[1,1]", err, sizeof err), 0);
}

/* An object of n members "k0".."k{n-1}"; escaped keys spelled with \u0030 for '0' when asked. */
static char *many_keys(size_t n, long dup_of, bool escape_dup)
{
    size_t cap = n * 24 + 64;
    char *s = malloc(cap);
    assert_non_null(s);
    size_t len = 0;
    s[len++] = '{';
    for (size_t i = 0; i < n; i++)
        len += (size_t)snprintf(s + len, cap - len, "%s\"k%zu\":%zu", i ? "," : "", i, i);
    if (dup_of >= 0) {
        if (escape_dup)
            len += (size_t)snprintf(s + len, cap - len, ",\"\\u006b%ld\":0", dup_of);
        else
            len += (size_t)snprintf(s + len, cap - len, ",\"k%ld\":0", dup_of);
    }
    s[len++] = '}';
    s[len] = '\0';
    return s;
}

static void test_duplicate_keys_large(void **state)
{
    (void)state;
    char err[200];
    static const size_t sizes[] = {32, 33, 40, 255, 256, 300, 5000};
    for (size_t i = 0; i < SP_ARRAY_LEN(sizes); i++) {
        size_t n = sizes[i];
        char *s = many_keys(n, -1, false);
        assert_int_equal(check_keys(s, err, sizeof err), 0);
        free(s);
        s = many_keys(n, (long)n - 1, false);
        assert_int_equal(check_keys(s, err, sizeof err), SP_EINVAL);
        char want[64];
        snprintf(want, sizeof want, "duplicate key 'k%zu'", n - 1);
        assert_string_equal(err, want);
        free(s);
        s = many_keys(n, 0, true);
        assert_int_equal(check_keys(s, err, sizeof err), SP_EINVAL);
        assert_string_equal(err, "duplicate key 'k0'");
        free(s);
    }
}

static void test_iteration(void **state)
{
    (void)state;
    sp_json_val_t arr, obj, v, k;
    sp_json_iter_t it;
    assert_int_equal(parse(" [ 1 , \"a,]\\\"\" , [ 2 , [ ] ] , { \"k\" : \"}\" } , null ] ", &arr),
                     0);
    assert_int_equal(sp_json_arr_len(arr), 5);
    sp_json_iter_init(&it, arr);
    assert_true(sp_json_arr_next(&it, &v));
    assert_int_equal(v.type, SP_JSON_NUMBER);
    assert_memory_equal(v.start, "1", v.len);
    assert_true(sp_json_arr_next(&it, &v));
    assert_int_equal(v.type, SP_JSON_STRING);
    assert_int_equal(v.len, strlen("\"a,]\\\"\""));
    assert_true(sp_json_arr_next(&it, &v));
    assert_int_equal(v.type, SP_JSON_ARRAY);
    assert_int_equal(v.len, strlen("[ 2 , [ ] ]"));
    assert_int_equal(sp_json_arr_len(v), 2);
    assert_true(sp_json_arr_next(&it, &v));
    assert_int_equal(v.type, SP_JSON_OBJECT);
    assert_int_equal(v.len, strlen("{ \"k\" : \"}\" }"));
    assert_true(sp_json_arr_next(&it, &v));
    assert_int_equal(v.type, SP_JSON_NULL);
    assert_int_equal(v.len, 4);
    assert_false(sp_json_arr_next(&it, &v));
    assert_false(sp_json_arr_next(&it, &v));

    assert_int_equal(parse("[]", &arr), 0);
    assert_int_equal(sp_json_arr_len(arr), 0);
    assert_int_equal(parse("[ \n ]", &arr), 0);
    assert_int_equal(sp_json_arr_len(arr), 0);

    assert_int_equal(
        parse("{\"a\":true,\"b\\\\\":false,\"c\":{\"d\":[\"\\\\\"]},\"e\":-1.5e3}", &obj), 0);
    static const char *const keys[] = {"a", "b\\", "c", "e"};
    static const sp_json_type_t types[] = {SP_JSON_TRUE, SP_JSON_FALSE, SP_JSON_OBJECT,
                                           SP_JSON_NUMBER};
    sp_json_iter_init(&it, obj);
    for (size_t i = 0; i < 4; i++) {
        assert_true(sp_json_obj_next(&it, &k, &v));
        assert_int_equal(k.type, SP_JSON_STRING);
        assert_true(sp_json_str_eq(k, keys[i]));
        assert_int_equal(v.type, types[i]);
    }
    assert_false(sp_json_obj_next(&it, &k, &v));

    assert_true(sp_json_obj_get(obj, "e", &v));
    assert_memory_equal(v.start, "-1.5e3", v.len);
    assert_true(sp_json_obj_get(obj, "c", &v));
    assert_true(sp_json_obj_get(v, "d", &v));
    assert_int_equal(sp_json_arr_len(v), 1);
    assert_false(sp_json_obj_get(obj, "d", &v));
    assert_false(sp_json_obj_get(obj, "", &v));

    /* Escaped keys are found by their decoded name; the first match wins. */
    assert_int_equal(parse("{\"\\u0074ype\":\"x\",\"type\":\"y\"}", &obj), 0);
    assert_true(sp_json_obj_get(obj, "type", &v));
    assert_memory_equal(v.start, "\"x\"", 3);

    /* A scalar has nothing to iterate. */
    assert_int_equal(parse("5", &v), 0);
    sp_json_iter_init(&it, v);
    assert_false(sp_json_arr_next(&it, &k));
    assert_int_equal(sp_json_arr_len(v), 0);
    assert_false(sp_json_obj_get(v, "a", &k));
}

static void test_str_decode(void **state)
{
    (void)state;
    sp_json_val_t v;
    char out[64];
    size_t n;

    assert_int_equal(parse("\"a\\u0000b\"", &v), 0);
    assert_int_equal(sp_json_str_decode(v, out, sizeof out, &n), 0);
    assert_int_equal(n, 3);
    assert_memory_equal(out, "a\0b", 3);
    assert_int_equal(sp_json_str_len(v), 3);

    assert_int_equal(parse("\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"", &v), 0);
    assert_int_equal(sp_json_str_decode(v, out, sizeof out, &n), 0);
    assert_int_equal(n, 8);
    assert_memory_equal(out, "\"\\/\b\f\n\r\t", 8);

    assert_int_equal(parse("\"\\u00e9\\u20AC\\uD83D\\uDE00\\uDBFF\\uDFFF\\u007f\"", &v), 0);
    assert_int_equal(sp_json_str_decode(v, out, sizeof out, &n), 0);
    const char want[] = "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xf4\x8f\xbf\xbf\x7f";
    assert_int_equal(n, sizeof want - 1);
    assert_memory_equal(out, want, n);

    /* Raw UTF-8 passes through unchanged. */
    assert_int_equal(parse("\"\xe4\xb8\xad \xf0\x9f\x98\x80\"", &v), 0);
    assert_int_equal(sp_json_str_decode(v, out, sizeof out, &n), 0);
    assert_int_equal(n, 8);
    assert_memory_equal(out, "\xe4\xb8\xad \xf0\x9f\x98\x80", 8);

    /* Too small: the first cap bytes, the full length, SP_ETOOBIG. */
    assert_int_equal(parse("\"abc\\u00e9def\"", &v), 0);
    memset(out, 'X', sizeof out);
    assert_int_equal(sp_json_str_decode(v, out, 4, &n), SP_ETOOBIG);
    assert_int_equal(n, 8);
    assert_memory_equal(out, "abc\xc3X", 5);
    assert_int_equal(sp_json_str_decode(v, out, 8, &n), 0);
    assert_int_equal(sp_json_str_decode(v, NULL, 0, &n), SP_ETOOBIG);
    assert_int_equal(n, 8);

    assert_int_equal(parse("\"\"", &v), 0);
    assert_int_equal(sp_json_str_decode(v, NULL, 0, &n), 0);
    assert_int_equal(n, 0);

    /* Not a string. */
    assert_int_equal(parse("12", &v), 0);
    assert_int_equal(sp_json_str_decode(v, out, sizeof out, &n), SP_EINVAL);
    assert_int_equal(n, 0);
}

static void test_str_eq(void **state)
{
    (void)state;
    sp_json_val_t v;
    assert_int_equal(parse("\"type\"", &v), 0);
    assert_true(sp_json_str_eq(v, "type"));
    assert_false(sp_json_str_eq(v, "typ"));
    assert_false(sp_json_str_eq(v, "types"));
    assert_false(sp_json_str_eq(v, ""));
    assert_int_equal(parse("\"t\\u0079pe\"", &v), 0);
    assert_true(sp_json_str_eq(v, "type"));
    assert_false(sp_json_str_eq(v, "typ"));
    assert_false(sp_json_str_eq(v, "typex"));
    assert_int_equal(parse("\"a\\u0000\"", &v), 0);
    assert_false(sp_json_str_eq(v, "a"));
    assert_int_equal(parse("\"\"", &v), 0);
    assert_true(sp_json_str_eq(v, ""));
    assert_int_equal(parse("\"\\u00e9\"", &v), 0);
    assert_true(sp_json_str_eq(v, "\xc3\xa9"));
    assert_int_equal(parse("null", &v), 0);
    assert_false(sp_json_str_eq(v, "null"));
}

static void test_str_preview(void **state)
{
    (void)state;
    sp_json_val_t v;
    char out[8];
    assert_int_equal(parse("\"a\\nb\\u0000\"", &v), 0);
    assert_int_equal(sp_json_str_preview(v, out, sizeof out), 4);
    assert_string_equal(out, "a?b?");
    assert_int_equal(parse("\"abcdefghij\"", &v), 0);
    assert_int_equal(sp_json_str_preview(v, out, sizeof out), 7);
    assert_string_equal(out, "abcd...");
    /* A cut never splits a character: 'é' would straddle byte 4. */
    assert_int_equal(parse("\"abc\xc3\xa9xyz\"", &v), 0);
    sp_json_str_preview(v, out, sizeof out);
    assert_string_equal(out, "abc...");
    assert_int_equal(parse("\"1234567\"", &v), 0);
    sp_json_str_preview(v, out, sizeof out);
    assert_string_equal(out, "1234567");
    sp_json_str_preview(v, out, 2);
    assert_string_equal(out, "");
}

static void test_utf8_span(void **state)
{
    (void)state;
    assert_int_equal(sp_json_utf8_span("", 0), 0);
    assert_int_equal(sp_json_utf8_span("abc", 3), 3);
    assert_int_equal(sp_json_utf8_span("a\0b", 3), 3);
    assert_int_equal(sp_json_utf8_span("ab\xc3\xa9", 4), 4);
    assert_int_equal(sp_json_utf8_span("ab\xc3", 3), 2);
    assert_int_equal(sp_json_utf8_span("ab\xed\xa0\x80", 5), 2);
    assert_int_equal(sp_json_utf8_span("\xf4\x8f\xbf\xbf!", 5), 5);
    assert_int_equal(sp_json_utf8_span("\xf4\x90\x80\x80", 4), 0);
}

static int json_int(const char *s, int64_t *out)
{
    sp_json_val_t v;
    assert_int_equal(parse(s, &v), 0);
    return sp_json_int(v, out);
}

static void test_json_int(void **state)
{
    (void)state;
    int64_t x;
    assert_int_equal(json_int("0", &x), 0);
    assert_int_equal(x, 0);
    assert_int_equal(json_int("-0", &x), 0);
    assert_int_equal(x, 0);
    assert_int_equal(json_int("42", &x), 0);
    assert_int_equal(x, 42);
    assert_int_equal(json_int("-17", &x), 0);
    assert_int_equal(x, -17);
    assert_int_equal(json_int("9223372036854775807", &x), 0);
    assert_true(x == INT64_MAX);
    assert_int_equal(json_int("-9223372036854775808", &x), 0);
    assert_true(x == INT64_MIN);
    assert_int_equal(json_int("9223372036854775808", &x), SP_EINVAL);
    assert_int_equal(json_int("-9223372036854775809", &x), SP_EINVAL);
    assert_int_equal(json_int("18446744073709551616", &x), SP_EINVAL);
    assert_int_equal(json_int("99999999999999999999999999", &x), SP_EINVAL);
    assert_int_equal(json_int("5.0", &x), SP_EINVAL);
    assert_int_equal(json_int("1e1", &x), SP_EINVAL);
    assert_int_equal(json_int("1E1", &x), SP_EINVAL);
    assert_int_equal(json_int("-0.0", &x), SP_EINVAL);
    assert_int_equal(json_int("\"5\"", &x), SP_EINVAL);
    assert_int_equal(json_int("true", &x), SP_EINVAL);
    assert_int_equal(json_int("null", &x), SP_EINVAL);
    assert_int_equal(json_int("[1]", &x), SP_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_documents),
        cmocka_unit_test(test_invalid_documents),
        cmocka_unit_test(test_messages_name_the_offset),
        cmocka_unit_test(test_value_span_trimmed),
        cmocka_unit_test(test_big_numbers_kept_verbatim),
        cmocka_unit_test(test_depth_limit),
        cmocka_unit_test(test_utf8_edges),
        cmocka_unit_test(test_bom_rejected),
        cmocka_unit_test(test_surrogate_escapes),
        cmocka_unit_test(test_string_scan_alignment),
        cmocka_unit_test(test_duplicate_keys_small),
        cmocka_unit_test(test_duplicate_keys_large),
        cmocka_unit_test(test_iteration),
        cmocka_unit_test(test_str_decode),
        cmocka_unit_test(test_str_eq),
        cmocka_unit_test(test_str_preview),
        cmocka_unit_test(test_utf8_span),
        cmocka_unit_test(test_json_int),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
