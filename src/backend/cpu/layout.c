/* kiln — activation layouts on the CPU backend. See layout.h. */
#include "backend/cpu/layout.h"

#include <stdlib.h>
#include <string.h>

#include "ops/fused.h"

static int g_blocking = 1, g_fusion = 1;

int kn_fusion(void) { return g_fusion; }
void kn_set_fusion(int on) { g_fusion = on; }

void kn_cpu_set_blocking(int on) { g_blocking = on; }

int kn_cpu_block(void) {
    static int block = -1;
    if (block < 0) {
        const char *e = getenv("KN_BLOCKED_LAYOUT"); /* "0": off, for comparisons */
        __builtin_cpu_init();
        if (e && e[0] == '0') block = 0;
        else if (__builtin_cpu_supports("avx512f")) block = 16;
        else if (__builtin_cpu_supports("avx2")) block = 8;
        else block = 0;
    }
    return g_blocking ? block : 0;
}

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
    int B = kn_cpu_block();
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

void kn_to_blocked(float *restrict dst, const float *restrict src, int64_t N, int64_t C, int64_t S, int B) {
    const int64_t CB = C / B;
#pragma omp parallel for collapse(2) schedule(static) if (N * C * S > 65536)
    for (int64_t n = 0; n < N; n++)
        for (int64_t cb = 0; cb < CB; cb++) {
            const float *s = src + (n * C + cb * B) * S;
            float *d = dst + (n * CB + cb) * S * B;
            for (int64_t k = 0; k < S; k++)
#pragma omp simd
                for (int l = 0; l < B; l++) d[k * B + l] = s[l * S + k];
        }
}

void kn_from_blocked(float *restrict dst, const float *restrict src, int64_t N, int64_t C, int64_t S, int B) {
    const int64_t CB = C / B;
#pragma omp parallel for collapse(2) schedule(static) if (N * C * S > 65536)
    for (int64_t n = 0; n < N; n++)
        for (int64_t cb = 0; cb < CB; cb++) {
            const float *s = src + (n * CB + cb) * S * B;
            float *d = dst + (n * C + cb * B) * S;
            for (int l = 0; l < B; l++)
#pragma omp simd
                for (int64_t k = 0; k < S; k++) d[l * S + k] = s[k * B + l];
        }
}
