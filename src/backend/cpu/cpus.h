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

/* For programs (the kiln command calls it first; the library never does): fix glibc's
 * mmap and trim thresholds at 128 KiB. glibc otherwise raises both after the first
 * large block is freed (the data loader's, the leakage check's), and then keeps the
 * memory that oneDNN's per-call packing buffers leave free at the top of each thread's
 * malloc arena: on the AVX2 path the resident size grew by ~1 MiB per step of the CNN
 * at batch 512 (270 MiB after 30 steps, 243 MiB with fixed thresholds), so the
 * planner's prediction could not bound it. */
void kn_malloc_policy(void);

#endif
