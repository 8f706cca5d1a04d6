/*
 * test.h - the test runner shared by every tests/test_*.c (after Redis' testhelp.h).
 *
 * A test is a void function; CHECK records a failed condition (with file and line) and lets the
 * test continue; a test passes when none of its checks failed. TEST_MAIN prints one line per
 * failed check and ends with "N passed, N failed, N skipped", which tests/run.sh adds up.
 */
#ifndef AG_TEST_H
#define AG_TEST_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int test__passed, test__failed, test__skipped, test__cur_failed, test__cur_skipped;
static const char *test__filter;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            printf("  FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);                               \
            test__cur_failed++;                                                                    \
        }                                                                                          \
    } while (0)

#define CHECKF(cond, ...)                                                                          \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            printf("  FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);                               \
            printf(__VA_ARGS__);                                                                   \
            printf("\n");                                                                          \
            test__cur_failed++;                                                                    \
        }                                                                                          \
    } while (0)

#define CHECK_STR(a, b)                                                                            \
    do {                                                                                           \
        const char *test__a = (a), *test__b = (b);                                                 \
        if (!test__a || !test__b || strcmp(test__a, test__b) != 0) {                               \
            printf("  FAIL %s:%d: %s == %s: got \"%s\", want \"%s\"\n", __FILE__, __LINE__, #a,    \
                   #b, test__a ? test__a : "(null)", test__b ? test__b : "(null)");                \
            test__cur_failed++;                                                                    \
        }                                                                                          \
    } while (0)

#define SKIP(why)                                                                                  \
    do {                                                                                           \
        printf("  skip: %s\n", why);                                                               \
        test__cur_skipped = 1;                                                                     \
        return;                                                                                    \
    } while (0)

#define RUN(fn)                                                                                    \
    do {                                                                                           \
        if (test__filter && !strstr(#fn, test__filter)) break;                                     \
        test__cur_failed = 0;                                                                      \
        test__cur_skipped = 0;                                                                     \
        fn();                                                                                      \
        if (test__cur_failed) {                                                                    \
            test__failed++;                                                                        \
            printf("not ok %s\n", #fn);                                                            \
        } else if (test__cur_skipped) {                                                            \
            test__skipped++;                                                                       \
            printf("skip   %s\n", #fn);                                                            \
        } else {                                                                                   \
            test__passed++;                                                                        \
            printf("ok     %s\n", #fn);                                                            \
        }                                                                                          \
        fflush(stdout);                                                                            \
    } while (0)

#define TEST_BEGIN(argc, argv) (test__filter = (argc) > 1 ? (argv)[1] : NULL)

#define TEST_END()                                                                                 \
    (printf("%d passed, %d failed, %d skipped\n", test__passed, test__failed, test__skipped),      \
     test__failed ? 1 : 0)

/* Sanitized builds run several times slower: tests use smaller counts there. */
#if defined(__SANITIZE_ADDRESS__)
#define SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SANITIZED 1
#endif
#endif
#ifndef SANITIZED
#define SANITIZED 0
#endif

#endif
