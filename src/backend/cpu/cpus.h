/* kiln — how many cores this process may run on, and advice on thread counts. */
#ifndef KN_CPUS_H
#define KN_CPUS_H

#include <stddef.h>

/* The cores this process can use: the CPUs in its affinity mask (sched_getaffinity),
 * lowered to the cgroup's CPU quota when one is set (cgroup v2 cpu.max, v1
 * cpu.cfs_quota_us / cpu.cfs_period_us; rounded up). Writes what limits it ("2 CPUs in
 * the affinity mask", "a cgroup quota of 1.5 CPUs") into why when why != NULL. */
int kn_cpus_available(char *why, size_t n);
/* When `threads` is more than kn_cpus_available(), writes a warning saying why that
 * can be slower into msg and returns 1; otherwise returns 0. */
int kn_threads_advice(int threads, char *msg, size_t n);

#endif
