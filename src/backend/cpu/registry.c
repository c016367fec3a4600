/* kiln — the CPU backend's kernels, registered by op id: every op of KN_OP_LIST
 * (graph/graph.h) has kernels here, defined in backend/cpu/kernels/<file>.c as
 * kn_cpu_k_<op name> (KN_CPU_OP, backend/cpu/kernels.h). A new op without CPU kernels
 * fails to link. */
#include "backend/cpu/cpu_backend.h"

#define KN_CPU_DECL_(ID, name) extern const kn_kernels kn_cpu_k_##name;
KN_OP_LIST(KN_CPU_DECL_)
#undef KN_CPU_DECL_

#define KN_CPU_ROW_(ID, name) [KN_OP_##ID] = &kn_cpu_k_##name,
static const kn_kernels *const cpu_table[KN_NUM_OPS] = {KN_OP_LIST(KN_CPU_ROW_)};
#undef KN_CPU_ROW_

const kn_kernels *kn_cpu_kernels(int id) { return id >= 0 && id < KN_NUM_OPS ? cpu_table[id] : NULL; }
