/* kiln — the backends this build has (backend/backend.h). */
#include "backend/backend.h"

#include "backend/cpu/cpu_backend.h"

const kn_backend_iface *kn_backend_get(kn_backend b) {
    switch (b) {
    case KN_BACKEND_CPU: return &kn_backend_cpu;
    default: return NULL;
    }
}
