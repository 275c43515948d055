/* test_backoff.c - the retry delays of common/backoff.c: doubling, cap, jitter bounds, reset. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "backoff.h"

static void test_doubles_to_the_cap(void **state)
{
    (void)state;
    sp_backoff_t b;
    sp_backoff_init(&b, 100, 5000, 0);
    int64_t want[] = {100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        assert_int_equal(sp_backoff_next(&b), want[i]);
}

static void test_jitter_within_bounds(void **state)
{
    (void)state;
    sp_backoff_t b;
    sp_backoff_init(&b, 1000, 8000, 25);
    int64_t base = 1000;
    bool saw_jitter = false;
    for (int round = 0; round < 200; round++) {
        int64_t d = sp_backoff_next(&b);
        assert_true(d >= base);
        assert_true(d <= base + base / 4);
        if (d != base) saw_jitter = true;
        base = base * 2 > 8000 ? 8000 : base * 2;
    }
    assert_true(saw_jitter);
}

static void test_reset_starts_over(void **state)
{
    (void)state;
    sp_backoff_t b;
    sp_backoff_init(&b, 50, 1000, 0);
    sp_backoff_next(&b);
    sp_backoff_next(&b);
    assert_int_equal(sp_backoff_next(&b), 200);
    sp_backoff_reset(&b);
    assert_int_equal(sp_backoff_next(&b), 50);
}

static void test_never_overflows(void **state)
{
    (void)state;
    sp_backoff_t b;
    sp_backoff_init(&b, 1, INT64_MAX / 2, 10);
    for (int i = 0; i < 200; i++) assert_true(sp_backoff_next(&b) > 0);
}

static void test_bad_bounds_are_sane(void **state)
{
    (void)state;
    sp_backoff_t b;
    sp_backoff_init(&b, 0, -5, 0);
    assert_int_equal(sp_backoff_next(&b), 1);
    assert_int_equal(sp_backoff_next(&b), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_doubles_to_the_cap),  cmocka_unit_test(test_jitter_within_bounds),
        cmocka_unit_test(test_reset_starts_over),   cmocka_unit_test(test_never_overflows),
        cmocka_unit_test(test_bad_bounds_are_sane),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
