#define _POSIX_C_SOURCE 200809L
#include "testutil.h"

#include <string.h>
#include <sys/stat.h>

int kn_test_failures = 0;
int kn_test_checks = 0;

static void mkdirs(const char *path) {
    char tmp[1024];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++)
        if (*p == '/') { *p = 0; mkdir(tmp, 0755); *p = '/'; }
    mkdir(tmp, 0755);
}

const char *kn_test_tmpdir(const char *test_name) {
    static char buf[1024];
    const char *base = getenv("KN_TMP");
    snprintf(buf, sizeof buf, "%s/%s", base && *base ? base : "/tmp/kiln-tests", test_name);
    mkdirs(buf);
    return buf;
}

const char *kn_test_src(const char *rel) {
    static char buf[1024];
    const char *base = getenv("KN_SRC_DIR");
    snprintf(buf, sizeof buf, "%s/%s", base && *base ? base : ".", rel);
    return buf;
}

int kn_test_finish(const char *name) {
    printf("%s: %d checks, %d failed\n", name, kn_test_checks, kn_test_failures);
    return kn_test_failures ? 1 : 0;
}
