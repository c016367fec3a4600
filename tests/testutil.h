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
/* Write a small synthetic image-classification set (IDX, gzip) into dir/sub:
 * train-* and t10k-* files with n images of rows x cols; class k has a bright band. */
void kn_test_make_images(const char *dir, const char *sub, int n, int rows, int cols);
/* The same with a fraction of the TRAINING labels replaced by random ones (to overfit). */
void kn_test_make_images_noisy(const char *dir, const char *sub, int n, int rows, int cols, double noise);
/* Read a whole (text) file into buf, NUL-terminated; empty if it cannot be read. */
void kn_test_slurp(const char *path, char *buf, size_t n);
/* Run the kiln command ($KN_BIN, else ./kiln) in dir with args, after the shell code
 * pre (may be NULL, e.g. "ulimit -f 12 &&"); its stdout and stderr land in out and err.
 * Returns the exit status (128+signal if killed). */
int kn_test_run_kiln(const char *dir, const char *pre, const char *args, char *out, size_t nout, char *err,
                     size_t nerr);
/* Write text to dir/name. */
void kn_test_write(const char *dir, const char *name, const char *text);
/* Run a shell command line; returns its exit status (128+signal if killed). */
int kn_test_system(const char *cmd);

/* Print "N passed, M failed" and return the exit status. */
int kn_test_finish(const char *name);

#endif
