/* kiln — cores available to this process. See cpus.h. */
#define _GNU_SOURCE
#include "backend/cpu/cpus.h"

#include <malloc.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>

/* cgroup CPU quota in CPUs (0: none or unreadable) */
static double cgroup_quota(void) {
    double q = 0.0;
    FILE *f = fopen("/sys/fs/cgroup/cpu.max", "r"); /* v2: "max 100000" or "150000 100000" */
    if (f) {
        char a[32];
        double period;
        if (fscanf(f, "%31s %lf", a, &period) == 2 && strcmp(a, "max") && period > 0) {
            double quota;
            if (sscanf(a, "%lf", &quota) == 1 && quota > 0) q = quota / period;
        }
        fclose(f);
        return q;
    }
    FILE *fq = fopen("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "r"), *fp = fopen("/sys/fs/cgroup/cpu/cpu.cfs_period_us", "r");
    double quota, period;
    if (fq && fp && fscanf(fq, "%lf", &quota) == 1 && fscanf(fp, "%lf", &period) == 1 && quota > 0 && period > 0)
        q = quota / period;
    if (fq) fclose(fq);
    if (fp) fclose(fp);
    return q;
}

int kn_cpus_available(char *why, size_t n) {
    cpu_set_t set;
    int cpus = 0;
    if (sched_getaffinity(0, sizeof set, &set) == 0) cpus = CPU_COUNT(&set);
    if (cpus < 1) cpus = 1;
    if (why) snprintf(why, n, "%d CPU%s in this process's affinity mask", cpus, cpus == 1 ? "" : "s");
    const double q = cgroup_quota();
    if (q > 0 && q < cpus) {
        int c = (int)q;
        if (c < q) c++;
        if (c < 1) c = 1;
        if (why) snprintf(why, n, "a cgroup CPU quota of %.2g CPU%s (of %d in the affinity mask)", q, q == 1 ? "" : "s", cpus);
        cpus = c;
    }
    return cpus;
}

int kn_threads_advice(int threads, char *msg, size_t n) {
    char why[128];
    const int cpus = kn_cpus_available(why, sizeof why);
    if (threads <= cpus) return 0;
    snprintf(msg, n,
             "%d threads on %d available core%s (%s): the threads take turns on the cores, and each "
             "parallel loop waits for its slowest thread, so a step can be slower than with %d thread%s; "
             "the same holds when other work shares the cores. Use --threads %d or fewer.",
             threads, cpus, cpus == 1 ? "" : "s", why, cpus, cpus == 1 ? "" : "s", cpus);
    return 1;
}

void kn_malloc_policy(void) {
    mallopt(M_MMAP_THRESHOLD, 128 * 1024);
    mallopt(M_TRIM_THRESHOLD, 128 * 1024);
}
