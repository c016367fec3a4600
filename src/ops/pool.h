/* kiln — the shape rule and window arithmetic shared by the 2-D pooling ops (max and average): one input
 * [N,C,H,W] float32, attrs i[0]=kh i[1]=kw i[2]=sh i[3]=sw i[4]=ph i[5]=pw, PyTorch's
 * floor mode, padding at most half the kernel. */
#ifndef KN_OPS_POOL_H
#define KN_OPS_POOL_H

#include "graph/graph.h"

/* Check node n's input and attributes; on success *out = [N, C, OH, OW]. Messages name
 * the op (`op`) and say what was expected. */
static inline int kn_pool_shape(const kn_graph *g, const kn_node *n, kn_ctx *ctx, const char *op, kn_shape *out) {
    char a[64];
    if (n->nin != 1) return kn_err(ctx, KN_ERR_SHAPE, "%s takes one input, got %d", op, n->nin);
    const kn_value *xv = &g->v[n->in[0]];
    const kn_shape *x = &xv->shape;
    if (x->nd != 4)
        return kn_err(ctx, KN_ERR_SHAPE, "%s expects a 4-D input [batch, channels, height, width], got %s", op,
                      kn_shape_str(x, a, sizeof a));
    if (xv->dtype != KN_F32) return kn_err(ctx, KN_ERR_SHAPE, "%s expects a float32 input, got an integer tensor", op);
    int64_t kh = n->a.i[0], kw = n->a.i[1], sh = n->a.i[2], sw = n->a.i[3], ph = n->a.i[4], pw = n->a.i[5];
    if (kh < 1 || kw < 1)
        return kn_err(ctx, KN_ERR_SHAPE, "%s expects a kernel size >= 1, got %lldx%lld", op, (long long)kh, (long long)kw);
    if (sh < 1 || sw < 1)
        return kn_err(ctx, KN_ERR_SHAPE, "%s expects a stride >= 1, got %lldx%lld", op, (long long)sh, (long long)sw);
    if (ph < 0 || pw < 0 || ph > kh / 2 || pw > kw / 2)
        return kn_err(ctx, KN_ERR_SHAPE,
                      "%s padding must be between 0 and half the kernel size (at most %lldx%lld for a "
                      "%lldx%lld kernel), got %lldx%lld",
                      op, (long long)(kh / 2), (long long)(kw / 2), (long long)kh, (long long)kw, (long long)ph,
                      (long long)pw);
    int64_t H = x->d[2], W = x->d[3];
    if (H + 2 * ph < kh || W + 2 * pw < kw)
        return kn_err(ctx, KN_ERR_SHAPE,
                      "%s kernel %lldx%lld is larger than the padded input %lldx%lld (input %s); the "
                      "output would be empty",
                      op, (long long)kh, (long long)kw, (long long)(H + 2 * ph), (long long)(W + 2 * pw),
                      kn_shape_str(x, a, sizeof a));
    *out = kn_shape4(x->d[0], x->d[1], (H + 2 * ph - kh) / sh + 1, (W + 2 * pw - kw) / sw + 1);
    return KN_OK;
}

/* The window of output index o along one axis (stride s, padding p, kernel k, input
 * size n): returns where it starts, o*s - p (negative on the padding), and sets
 * [*lo, *hi) to the part of it inside the input. */
static inline int64_t kn_pool_span(int64_t o, int64_t s, int64_t p, int64_t k, int64_t n, int64_t *lo, int64_t *hi) {
    const int64_t start = o * s - p;
    *lo = start < 0 ? 0 : start;
    *hi = start + k > n ? n : start + k;
    return start;
}

#endif
