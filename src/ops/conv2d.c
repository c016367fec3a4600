/* conv2d: y[N,O,OH,OW] = x[N,C,H,W] * W[O,C/groups,KH,KW] + b[O]   (inputs: x, W, optional b)
 * attrs: i[0]=stride_h i[1]=stride_w i[2]=pad_h i[3]=pad_w i[4]=groups (0 or 1: none)
 * i[5]=algorithm (KN_CONV_AUTO, KN_CONV_DIRECT, KN_CONV_WINOGRAD); dilation 1.
 * OH = (H + 2*pad_h - KH) / stride_h + 1.
 * Forward, backward-data and backward-weights (+bias) are oneDNN convolution
 * primitives created once at plan time; their scratchpads live in the arena.
 *
 * Algorithm: direct, or Winograd F(4x4, 3x3) (oneDNN's AVX-512 kernels: 3x3, stride 1,
 * channel-blocked activations), which does about half the multiplications of a 3x3
 * convolution at the cost of transforms and a slightly different rounding (the
 * results agree with the direct algorithm to ~1e-6 relative). `auto` takes Winograd
 * where the activations are stored channel-blocked (no reorders added for it),
 * oneDNN has a JIT implementation of all three passes for the layer and both
 * channel counts are at least KN_WINO_MIN_CHANNELS (below that the transforms
 * dominate), else direct; `winograd` forces it (reordering plain activations). The
 * choice is made from the planned graph and the CPU alone, so it is the same in
 * every run on the machine (runs stay bit-reproducible).
 *
 * Layouts (backend/cpu/layout.h): x and y may be stored channel-blocked. When either
 * is, the primitives run on blocked activations (the layout of oneDNN's direct
 * AVX-512/AVX2 convolutions), with the weights in the primitives' preferred format;
 * the parameters stay plain OIHW in the store and are reordered each step (a few KiB),
 * as are the weight gradients. An activation whose stored layout differs from the
 * primitive's (a plain input with C % B == 0 feeding a blocked convolution, say) is
 * reordered into the step's scratch. With both plain, the primitives use plain NCHW
 * and OIHW, as before. */
#include "graph/graph.h"
#include "ops/conv2d.h"

static int conv_infer(kn_graph *g, kn_node *n, kn_ctx *ctx) {
    char a[64], b[64];
    if (n->nin < 2 || n->nin > 3) return kn_err(ctx, KN_ERR_SHAPE, "conv2d takes x, weight and an optional bias");
    const kn_shape *x = kn_shp(g, n->in[0]), *w = kn_shp(g, n->in[1]);
    int64_t sh = n->a.i[0], sw = n->a.i[1], ph = n->a.i[2], pw = n->a.i[3], G = groups_of(n);
    if (x->nd != 4)
        return kn_err(ctx, KN_ERR_SHAPE, "conv2d expects a 4-D input [batch, channels, height, width], got %s",
                      kn_shape_str(x, a, sizeof a));
    if (sh < 1 || sw < 1 || ph < 0 || pw < 0)
        return kn_err(ctx, KN_ERR_SHAPE, "conv2d needs stride >= 1 and padding >= 0");
    if (x->d[1] % G || w->nd != 4 || w->d[0] % G || w->d[1] != x->d[1] / G)
        return kn_err(ctx, KN_ERR_SHAPE, "conv2d weight %s does not fit input %s with %lld group(s)",
                      kn_shape_str(w, a, sizeof a), kn_shape_str(x, b, sizeof b), (long long)G);
    int64_t KH = w->d[2], KW = w->d[3];
    int64_t OH = (x->d[2] + 2 * ph - KH) / sh + 1, OW = (x->d[3] + 2 * pw - KW) / sw + 1;
    if (x->d[2] + 2 * ph < KH || x->d[3] + 2 * pw < KW || OH < 1 || OW < 1)
        return kn_err(ctx, KN_ERR_SHAPE, "conv2d kernel %lldx%lld is larger than the padded input %lldx%lld (input %s)",
                      (long long)KH, (long long)KW, (long long)(x->d[2] + 2 * ph), (long long)(x->d[3] + 2 * pw),
                      kn_shape_str(x, a, sizeof a));
    if (n->nin == 3) {
        const kn_shape *bs = kn_shp(g, n->in[2]);
        if (bs->nd != 1 || bs->d[0] != w->d[0])
            return kn_err(ctx, KN_ERR_SHAPE, "conv2d bias %s does not match %lld output channels",
                          kn_shape_str(bs, a, sizeof a), (long long)w->d[0]);
    }
    return kn_g_declare_out(g, n, 0, KN_F32, kn_shape4(x->d[0], w->d[0], OH, OW)) < 0 ? KN_ERR_NOMEM : KN_OK;
}

static double conv_flops(const kn_graph *g, const kn_node *n) {
    const kn_shape *w = kn_shp(g, n->in[1]), *y = kn_shp(g, n->out[0]);
    return 2.0 * (double)kn_shape_numel(y) * (double)(w->d[1] * w->d[2] * w->d[3]);
}
static double conv_flops_bwd(const kn_graph *g, const kn_node *n) { return 2.0 * conv_flops(g, n); }

const kn_op kn_op_conv2d = {
    .id = KN_OP_CONV2D,
    .name = "conv2d",
    .flags = KN_OPF_CONV | KN_OPF_BLOCKED_IN | KN_OPF_BLOCKED_OUT,
    .infer = conv_infer,
    .flops_fwd = conv_flops,
    .flops_bwd = conv_flops_bwd,
    .bwd_reads_in = 0x3,
    .bwd_reads_out = 0,
    .diff_inputs = 0x7,
};
