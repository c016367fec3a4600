/* linear: the CPU kernels, forward and backward side by side, registered by op id
 * (backend/cpu/registry.c). The definition (shape rule, FLOPs, what the backward reads)
 * and the maths are in src/ops/linear.c. */
#include <stdlib.h>

#include "backend/cpu/kernels.h"
#include "backend/cpu/dnnl_glue.h"
#include "backend/cpu/layout.h"
#include "ops/fused.h"
#include "ops/linear.h"

typedef struct {
    kn_dnnl_prim fwd, bwd_data, bwd_w;
} linear_priv;

static void linear_release(kn_node *n) {
    linear_priv *p = n->priv;
    kn_dnnl_prim_free(&p->fwd);
    kn_dnnl_prim_free(&p->bwd_data);
    kn_dnnl_prim_free(&p->bwd_w);
    free(p);
    n->priv = NULL;
}

/* backward scratch: [oneDNN scratchpad | dy * mask (linear_relu) | bias sums (double)] */
static size_t bwd_pad(const linear_priv *p) {
    size_t s = p->bwd_data.scratch > p->bwd_w.scratch ? p->bwd_data.scratch : p->bwd_w.scratch;
    return kn_align_up(s, 64);
}

static int linear_prepare(kn_graph *g, kn_node *n, kn_ctx *ctx) {
    const kn_shape *x = kn_shp(g, n->in[0]), *w = kn_shp(g, n->in[1]);
    int64_t N = linear_rows(g, n), I = x->d[x->nd - 1], O = w->d[0];
    const int relu = n->op->id == KN_OP_LINEAR_RELU;
    const kn_dnnl_ctx *dc = kn_dnnl_ctx_of(ctx, g);
    if (!dc) return ctx->code;
    linear_priv *p = calloc(1, sizeof *p);
    if (!p) return kn_err(ctx, KN_ERR_NOMEM, "out of memory");
    n->priv = p;
    int rc = kn_dnnl_matmul_ex(ctx, dc, &p->fwd, N, O, I, 0, 1, n->nin == 3, relu);
    if (!rc && g->training) rc = kn_dnnl_matmul(ctx, dc, &p->bwd_data, N, I, O, 0, 0, 0);
    if (!rc && g->training) rc = kn_dnnl_matmul(ctx, dc, &p->bwd_w, O, I, N, 1, 0, 0);
    if (rc) { linear_release(n); return rc; }
    n->scratch_fwd = p->fwd.scratch;
    n->scratch_bwd = bwd_pad(p) + (relu ? kn_align_up((size_t)(N * O) * sizeof(float), 64) : 0) +
                     (size_t)O * sizeof(double);
    return KN_OK;
}

static void linear_forward(const kn_node *n, kn_rt *rt) {
    linear_priv *p = n->priv;
    kn_graph *g = rt->g;
    if (n->nin == 3) {
        void *ptrs[4] = {kn_ptr(g, n->in[0]), kn_ptr(g, n->in[1]), kn_ptr(g, n->in[2]), kn_ptr(g, n->out[0])};
        kn_dnnl_exec(&p->fwd, ptrs, rt->scratch);
    } else {
        void *ptrs[3] = {kn_ptr(g, n->in[0]), kn_ptr(g, n->in[1]), kn_ptr(g, n->out[0])};
        kn_dnnl_exec(&p->fwd, ptrs, rt->scratch);
    }
}

static void linear_backward(const kn_node *n, kn_rt *rt, float *const *din, const float *const *dout) {
    linear_priv *p = n->priv;
    kn_graph *g = rt->g;
    const kn_shape *w = kn_shp(g, n->in[1]);
    const int64_t N = linear_rows(g, n), O = w->d[0];
    const int relu = n->op->id == KN_OP_LINEAR_RELU;
    char *S = rt->scratch;
    float *dy = (float *)dout[0];
    float *db = n->nin == 3 ? din[2] : NULL;
    double *acc = (double *)(void *)(S + bwd_pad(p) + (relu ? kn_align_up((size_t)(N * O) * sizeof(float), 64) : 0));
    if (relu || db) {
        /* dy * (y > 0) into scratch (linear_relu), and the bias sums, in one pass; rows
         * are added in order, 8 columns at a time */
        const float *y = relu ? kn_ptr(g, n->out[0]) : NULL;
        float *m = relu ? (float *)(void *)(S + bwd_pad(p)) : NULL;
        const int64_t O8 = O / 8 * 8;
        const kn_v8f zero = kn_splat8(0.0f);
        for (int64_t o = 0; o < O; o++) acc[o] = 0.0;
        for (int64_t i = 0; i < N; i++) {
            const float *dr = dy + i * O;
            for (int64_t o = 0; o < O8; o += 8) {
                kn_v8f v = kn_ld8(dr + o);
                if (relu) {
                    v = kn_sel8(kn_ld8(y + i * O + o) > zero, v, zero);
                    kn_st8(m + i * O + o, v);
                }
                kn_v8d a;
                __builtin_memcpy(&a, acc + o, sizeof a);
                a += kn_cvt8(v);
                __builtin_memcpy(acc + o, &a, sizeof a);
            }
            for (int64_t o = O8; o < O; o++) {
                const float v = relu ? (y[i * O + o] > 0.0f ? dr[o] : 0.0f) : dr[o];
                if (relu) m[i * O + o] = v;
                acc[o] += v;
            }
        }
        if (relu) dy = m;
    }
    if (db)
        for (int64_t o = 0; o < O; o++) db[o] = (float)acc[o];
    if (din[0]) {
        void *ptrs[3] = {dy, kn_ptr(g, n->in[1]), din[0]};
        kn_dnnl_exec(&p->bwd_data, ptrs, S);
    }
    if (din[1]) {
        void *ptrs[3] = {dy, kn_ptr(g, n->in[0]), din[1]};
        kn_dnnl_exec(&p->bwd_w, ptrs, S);
    }
}

KN_ISA_KERNELS(linear, linear_forward, linear_backward)

KN_CPU_OP(linear, linear, linear_prepare, linear_release)
KN_CPU_OP(linear_relu, linear, linear_prepare, linear_release)
