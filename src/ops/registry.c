/* kiln — every op by its id (KN_OP_LIST, graph/graph.h). */
#include "graph/graph.h"
#include "ops/fused.h"

#define KN_OP_ROW_(ID, name) [KN_OP_##ID] = &kn_op_##name,
static const kn_op *const op_table[KN_NUM_OPS] = {KN_OP_LIST(KN_OP_ROW_)};
#undef KN_OP_ROW_

const kn_op *kn_op_by_id(int id) { return id >= 0 && id < KN_NUM_OPS ? op_table[id] : NULL; }
