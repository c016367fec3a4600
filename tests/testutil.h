/* Minimal test helpers: checks that count failures, a temp dir, float compare. */
#ifndef KN_TESTUTIL_H
#define KN_TESTUTIL_H
#include <stdio.h>
#include <stdlib.h>
#include <math.h>

extern int kn_test_failures;
extern int kn_test_checks;

#define CHECK(cond, ...)                                                      \
    do {                                                                      \
        kn_test_checks++;                                                     \
        if (!(cond)) {                                                        \
            kn_test_failures++;                                               \
            fprintf(stderr, "%s:%d: CHECK(%s) failed: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                     \
            fprintf(stderr, "\n");                                            \
        }                                                                     \
    } while (0)

/* Returns a per-test scratch directory (created), under $KN_TMP or /tmp. */
const char *kn_test_tmpdir(const char *test_name);
/* Path of a file inside the source tree ($KN_SRC_DIR). Static buffer. */
const char *kn_test_src(const char *rel);
/* Print "N passed, M failed" and return the exit status. */
int kn_test_finish(const char *name);

#endif
