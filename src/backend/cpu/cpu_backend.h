/* kiln — the CPU backend's interface table (backend/backend.h). */
#ifndef KN_CPU_BACKEND_H
#define KN_CPU_BACKEND_H

#include "backend/backend.h"

extern const kn_backend_iface kn_backend_cpu;

/* The CPU kernels registered for op id `id` (backend/cpu/registry.c), NULL if none. */
const kn_kernels *kn_cpu_kernels(int id);

#endif
