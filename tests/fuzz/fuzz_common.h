/* kiln — shared bits of the libFuzzer harnesses (tests/fuzz/README.md).
 * Each harness defines LLVMFuzzerTestOneInput; it is linked either with libFuzzer
 * (-fsanitize=fuzzer, scripts/fuzz.sh) or with driver.c, which runs it over files and
 * directories given on the command line (the ctest regression tests fuzz_regress_*). */
#ifndef KN_FUZZ_COMMON_H
#define KN_FUZZ_COMMON_H
#define _POSIX_C_SOURCE 200809L
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A scratch file of this process (harnesses whose readers take a path). */
static inline const char *kn_fuzz_path(const char *suffix) {
    static char path[4][512], suf[4][32];
    static int n;
    for (int i = 0; i < n; i++)
        if (!strcmp(suf[i], suffix)) return path[i];
    if (n == 4) return path[0];
    const char *dir = getenv("TMPDIR");
    if (!dir || !*dir) dir = "/tmp";
    snprintf(suf[n], sizeof suf[n], "%s", suffix);
    snprintf(path[n], sizeof path[n], "%s/kiln-fuzz-%ld%s", dir, (long)getpid(), suffix);
    return path[n++];
}

static inline int kn_fuzz_write(const char *path, const uint8_t *data, size_t size) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    int ok = fwrite(data, 1, size, f) == size;
    return fclose(f) == 0 && ok ? 0 : -1;
}
#endif
