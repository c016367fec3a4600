/* kiln — activation layouts on the CPU backend. See layout.h. */
#include "backend/cpu/layout.h"

#include <stdlib.h>
#include <string.h>

#include "backend/cpu/isa.h"

static int env_blocking(void) {
    const char *e = getenv("KN_BLOCKED_LAYOUT"); /* "0": off, for comparisons */
    return !(e && e[0] == '0');
}

int kn_cpu_block(void) { return env_blocking() ? kn_isa_block(kn_isa_select()) : 0; }

int kn_g_block(const kn_graph *g) { return g->blocking && env_blocking() ? kn_isa_block((kn_isa)g->isa) : 0; }

static int passthrough(const kn_op *op) { return kn_op_has(op, KN_OPF_LAYOUT_PRESERVING); }

/* Can value vid be stored blocked? depth bounds the recursion through chains of
 * layout-preserving ops (graphs are acyclic; this only guards against pathologies). */
static int blockable(const kn_graph *g, int vid, int B, int depth) {
    const kn_value *v = &g->v[vid];
    if (depth > 64 || v->kind != KN_VAL_ACT || v->dtype != KN_F32 || v->shape.nd != 4 || v->keep ||
        vid == g->loss || v->shape.d[1] % B != 0)
        return 0;
    int readers = 0;
    for (int k = 0; k < g->nn; k++) {
        const kn_node *n = &g->n[k];
        for (int i = 0; i < n->nin; i++) {
            if (n->in[i] != vid) continue;
            readers++;
            if (kn_op_has(n->op, KN_OPF_BLOCKED_IN) && i == 0) continue; /* conv2d, reshape (one input) */
            if (passthrough(n->op) && i == 0 && blockable(g, n->out[0], B, depth + 1)) continue;
            return 0;
        }
    }
    return readers > 0;
}

int kn_layout(const kn_graph *g, int vid) {
    int B = kn_g_block(g);
    if (!B || vid < 0) return 0;
    for (int depth = 0; depth < 64; depth++) {
        const kn_value *v = &g->v[vid];
        if (v->producer < 0 || v->out_slot != 0) return 0;
        const kn_node *p = &g->n[v->producer];
        if (kn_op_has(p->op, KN_OPF_BLOCKED_OUT)) return blockable(g, vid, B, 0) ? B : 0;
        if (!passthrough(p->op)) return 0;
        vid = p->in[0];
    }
    return 0;
}
