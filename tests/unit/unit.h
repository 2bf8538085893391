/* unit: a tiny test harness. Each test file defines tests with UNIT_TEST and ends with
 * UNIT_MAIN(); the runner prints "N passed, M failed" and exits non-zero on failure. */
#ifndef PORTERO_UNIT_H
#define PORTERO_UNIT_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct unit_test {
    const char *name;
    void (*fn)(int *failed);
};

#define UNIT_MAX_TESTS 512
extern struct unit_test unit_tests[UNIT_MAX_TESTS];
extern int unit_n_tests;

#define UNIT_TEST(name)                                                                 \
    static void name(int *unit_failed);                                                 \
    __attribute__((constructor)) static void name##_register(void)                      \
    {                                                                                   \
        unit_tests[unit_n_tests++] = (struct unit_test){ #name, name };                 \
    }                                                                                   \
    static void name(int *unit_failed)

#define CHECK(cond)                                                                     \
    do {                                                                                \
        if (!(cond)) {                                                                  \
            fprintf(stderr, "  %s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);  \
            *unit_failed = 1;                                                           \
        }                                                                               \
    } while (0)

#define CHECK_EQ_INT(a, b)                                                              \
    do {                                                                                \
        long long unit_a = (long long)(a), unit_b = (long long)(b);                     \
        if (unit_a != unit_b) {                                                         \
            fprintf(stderr, "  %s:%d: %s == %lld, expected %lld\n", __FILE__, __LINE__, \
                    #a, unit_a, unit_b);                                                \
            *unit_failed = 1;                                                           \
        }                                                                               \
    } while (0)

#define UNIT_MAIN()                                                                     \
    struct unit_test unit_tests[UNIT_MAX_TESTS];                                        \
    int unit_n_tests;                                                                   \
    int main(void)                                                                      \
    {                                                                                   \
        int passed = 0, failed = 0;                                                     \
        for (int i = 0; i < unit_n_tests; i++) {                                        \
            int f = 0;                                                                  \
            unit_tests[i].fn(&f);                                                       \
            if (f) {                                                                    \
                fprintf(stderr, "FAIL %s\n", unit_tests[i].name);                       \
                failed++;                                                               \
            } else {                                                                    \
                passed++;                                                               \
            }                                                                           \
        }                                                                               \
        printf("%s: %d passed, %d failed\n", __FILE__, passed, failed);                 \
        return failed ? 1 : 0;                                                          \
    }

#endif
