/* kiln — activation layouts on the CPU backend. See layout.h. */
#include "backend/cpu/layout.h"

#include <stdlib.h>
#include <string.h>

#include "backend/cpu/isa.h"
#include "ops/fused.h"

static int g_blocking = 1, g_fusion = 1;

int kn_fusion(void) { return g_fusion; }
void kn_set_fusion(int on) { g_fusion = on; }

void kn_cpu_set_blocking(int on) { g_blocking = on; }

static int blocking_on(void) {
    const char *e = getenv("KN_BLOCKED_LAYOUT"); /* "0": off, for comparisons */
    return g_blocking && !(e && e[0] == '0');
}

int kn_cpu_block(void) { return blocking_on() ? kn_isa_block(kn_isa_select()) : 0; }

int kn_g_block(const kn_graph *g) { return blocking_on() ? kn_isa_block((kn_isa)g->isa) : 0; }

static int passthrough(const kn_op *op) {
    return op == &kn_op_batchnorm || op == &kn_op_batchnorm_relu || op == &kn_op_relu || op == &kn_op_maxpool2d;
}

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
            if (n->op == &kn_op_conv2d && i == 0) continue;
            if (n->op == &kn_op_reshape) continue;
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
        if (p->op == &kn_op_conv2d) return blockable(g, vid, B, 0) ? B : 0;
        if (!passthrough(p->op)) return 0;
        vid = p->in[0];
    }
    return 0;
}
