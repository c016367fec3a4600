/* batchnorm: y = gamma * (x - mean) * invstd + beta, per channel, for x[N,C] (1d) or
 * x[N,C,H,W] (2d). inputs: x, gamma[C], beta[C], running_mean[C], running_var[C]
 * (the last two are persistent state, updated in place).
 * attrs: f[0]=momentum (PyTorch convention: running = (1-m) running + m batch),
 *        f[1]=eps.
 * outputs: y; out1 saved mean[C]; out2 saved invstd[C].
 * Training: batch statistics (biased variance for the normalisation; the running
 * variance is updated with the unbiased one, n/(n-1), like PyTorch). Evaluation: the
 * running statistics. Statistics are computed in double, one channel per iteration
 * of a parallel loop, so the result does not depend on the thread count.
 * Backward (training), per channel with m = N*H*W and xh = (x - mean) * invstd:
 *   dbeta = sum dy, dgamma = sum dy xh,
 *   dx = gamma invstd / m * (m dy - dbeta - xh dgamma).
 *
 * batchnorm_relu (kn_op_batchnorm_relu, ops/fused.h) is the same op followed by a
 * ReLU in the same pass: y = max(bn(x), 0) (NaN gives 0, like relu); its backward uses
 * dy * (bn(x) > 0) in place of dy, recomputing bn(x) from x and the saved statistics
 * with the forward's own arithmetic (so the mask is exactly y > 0) instead of keeping y
 * for the backward: one tensor fewer kept, two passes over it fewer. The model builder uses it for
 * `activation = relu` on a batchnorm layer and for a relu layer that is the only reader
 * of a batchnorm layer.
 *
 * Storage: x, y and their gradients may be channel-blocked (backend/cpu/layout.h).
 * The blocked kernels vectorise over the B channels of a block; their statistics are
 * sums in double of (x - K) and (x - K)^2 with K a sample of the channel (one pass,
 * no cancellation), taken per sample and added in sample order, so they do not depend
 * on the thread count either. */
#include "graph/graph.h"
#include "ops/fused.h"

static int bn_infer(kn_graph *g, kn_node *n, kn_ctx *ctx) {
    char a[64], b[64];
    if (n->nin != 5)
        return kn_err(ctx, KN_ERR_SHAPE,
                      "batchnorm takes x, gamma, beta, running_mean and running_var (5 inputs), got %d", n->nin);
    const kn_value *xv = &g->v[n->in[0]];
    const kn_shape *x = &xv->shape;
    if (x->nd != 2 && x->nd != 4)
        return kn_err(ctx, KN_ERR_SHAPE,
                      "batchnorm expects a 2-D input [batch, features] or a 4-D input [batch, channels, height, "
                      "width], got %s",
                      kn_shape_str(x, a, sizeof a));
    if (xv->dtype != KN_F32)
        return kn_err(ctx, KN_ERR_SHAPE, "batchnorm expects a float32 input, got an integer tensor");
    int64_t C = x->d[1];
    static const char *const names[5] = {"x", "gamma", "beta", "running_mean", "running_var"};
    for (int i = 1; i < 5; i++) {
        const kn_value *p = &g->v[n->in[i]];
        if (p->shape.nd != 1 || p->shape.d[0] != C || p->dtype != KN_F32)
            return kn_err(ctx, KN_ERR_SHAPE, "batchnorm %s must be a float32 [%lld] for input %s, got %s", names[i],
                          (long long)C, kn_shape_str(x, a, sizeof a), kn_shape_str(&p->shape, b, sizeof b));
    }
    double mom = n->a.f[0], eps = n->a.f[1];
    if (!(mom >= 0.0 && mom <= 1.0))
        return kn_err(ctx, KN_ERR_SHAPE, "batchnorm momentum must be in [0, 1], got %g", mom);
    if (!(eps > 0.0)) return kn_err(ctx, KN_ERR_SHAPE, "batchnorm eps must be > 0, got %g", eps);
    int64_t m = kn_shape_numel(x) / (C > 0 ? C : 1);
    if (g->training && m < 2)
        return kn_err(ctx, KN_ERR_SHAPE,
                      "batchnorm needs more than one value per channel when training, got input %s "
                      "(use a batch size > 1)",
                      kn_shape_str(x, a, sizeof a));
    if (kn_g_declare_out(g, n, 0, KN_F32, *x) < 0 || kn_g_declare_out(g, n, 1, KN_F32, kn_shape1(C)) < 0 ||
        kn_g_declare_out(g, n, 2, KN_F32, kn_shape1(C)) < 0)
        return kn_err(ctx, KN_ERR_NOMEM, "out of memory");
    return KN_OK;
}

static double bn_flops(const kn_graph *g, const kn_node *n) {
    return (g->training ? 7.0 : 2.0) * (double)kn_numel(g, n->in[0]);
}
static double bn_flops_bwd(const kn_graph *g, const kn_node *n) { return 8.0 * (double)kn_numel(g, n->in[0]); }

const kn_op kn_op_batchnorm = {
    .id = KN_OP_BATCHNORM,
    .name = "batchnorm",
    .flags = KN_OPF_LAYOUT_PRESERVING | KN_OPF_BATCHNORM,
    .fused_relu = &kn_op_batchnorm_relu,
    .infer = bn_infer,
    .flops_fwd = bn_flops,
    .flops_bwd = bn_flops_bwd,
    .bwd_reads_in = 0x3,  /* x, gamma */
    .bwd_reads_out = 0x6, /* saved mean, invstd */
    .diff_inputs = 0x7,   /* x, gamma, beta */
    .bwd_inplace = 0x1,   /* dx may overwrite dy: per channel, reductions over dy first, then dx[k] from dy[k] */
};

const kn_op kn_op_batchnorm_relu = {
    .id = KN_OP_BATCHNORM_RELU,
    .name = "batchnorm_relu",
    .flags = KN_OPF_LAYOUT_PRESERVING | KN_OPF_BATCHNORM | KN_OPF_RELU_OUT,
    .infer = bn_infer,
    .flops_fwd = bn_flops,
    .flops_bwd = bn_flops_bwd,
    .bwd_reads_in = 0x7,  /* x, gamma, beta (the ReLU mask is recomputed, y is not kept) */
    .bwd_reads_out = 0x6, /* saved mean, invstd */
    .diff_inputs = 0x7,   /* x, gamma, beta */
    .bwd_inplace = 0x1,   /* dx may overwrite dy: per channel, reductions over dy first, then dx[k] from dy[k] */
};
