/* conv2d: y[N,O,OH,OW] = x[N,C,H,W] * W[O,C/groups,KH,KW] + b[O]   (inputs: x, W, optional b)
 * attrs: i[0]=stride_h i[1]=stride_w i[2]=pad_h i[3]=pad_w i[4]=groups (0 or 1: none); dilation 1.
 * OH = (H + 2*pad_h - KH) / stride_h + 1.
 * Forward, backward-data and backward-weights (+bias) are oneDNN convolution
 * primitives created once at plan time; their scratchpads live in the arena. */
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/dnnl_glue.h"
#include "graph/graph.h"

typedef struct {
    kn_dnnl_prim fwd, bwd_data, bwd_w;
} conv_priv;

static int64_t groups_of(const kn_node *n) { return n->a.i[4] > 1 ? n->a.i[4] : 1; }

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

static void conv_release(kn_node *n) {
    conv_priv *p = n->priv;
    kn_dnnl_prim_free(&p->fwd);
    kn_dnnl_prim_free(&p->bwd_data);
    kn_dnnl_prim_free(&p->bwd_w);
    free(p);
    n->priv = NULL;
}

static int conv_prepare(kn_graph *g, kn_node *n, kn_ctx *ctx) {
    const kn_shape *x = kn_shp(g, n->in[0]), *w = kn_shp(g, n->in[1]), *y = kn_shp(g, n->out[0]);
    int64_t G = groups_of(n);
    int bias = n->nin == 3;
    dnnl_memory_desc_t src, wei, bia, dst;
    dnnl_dims_t sd = {x->d[0], x->d[1], x->d[2], x->d[3]}, dd = {y->d[0], y->d[1], y->d[2], y->d[3]};
    dnnl_dims_t bd = {w->d[0]};
    dnnl_memory_desc_init_by_tag(&src, 4, sd, dnnl_f32, dnnl_nchw);
    dnnl_memory_desc_init_by_tag(&dst, 4, dd, dnnl_f32, dnnl_nchw);
    dnnl_memory_desc_init_by_tag(&bia, 1, bd, dnnl_f32, dnnl_x);
    if (G > 1) {
        dnnl_dims_t wd = {G, w->d[0] / G, w->d[1], w->d[2], w->d[3]};
        dnnl_memory_desc_init_by_tag(&wei, 5, wd, dnnl_f32, dnnl_goihw);
    } else {
        dnnl_dims_t wd = {w->d[0], w->d[1], w->d[2], w->d[3]};
        dnnl_memory_desc_init_by_tag(&wei, 4, wd, dnnl_f32, dnnl_oihw);
    }
    dnnl_dims_t strides = {n->a.i[0], n->a.i[1]}, dil = {0, 0};
    dnnl_dims_t pad = {n->a.i[2], n->a.i[3]};
    /* right padding so that oneDNN's output size equals ours (floor division) */
    dnnl_dims_t padr = {(y->d[2] - 1) * n->a.i[0] + w->d[2] - x->d[2] - n->a.i[2],
                        (y->d[3] - 1) * n->a.i[1] + w->d[3] - x->d[3] - n->a.i[3]};
    conv_priv *p = calloc(1, sizeof *p);
    if (!p) return kn_err(ctx, KN_ERR_NOMEM, "out of memory");
    n->priv = p;
    dnnl_primitive_attr_t attr = kn_dnnl_attr();
    dnnl_convolution_desc_t cd;
    dnnl_primitive_desc_t fpd = NULL, pd = NULL;
    int rc = KN_OK;
    dnnl_prop_kind_t prop = g->training ? dnnl_forward_training : dnnl_forward_inference;
    if (dnnl_dilated_convolution_forward_desc_init(&cd, prop, dnnl_convolution_direct, &src, &wei, bias ? &bia : NULL,
                                                   &dst, strides, dil, pad, padr) != dnnl_success ||
        dnnl_primitive_desc_create(&fpd, &cd, attr, kn_dnnl_engine(), NULL) != dnnl_success) {
        rc = kn_err(ctx, KN_ERR_INTERNAL, "oneDNN has no convolution for these shapes");
        goto done;
    }
    {
        int a3[4] = {DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_BIAS, DNNL_ARG_DST};
        int a2[3] = {DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_DST};
        if ((rc = kn_dnnl_prim_init(ctx, &p->fwd, fpd, bias ? a3 : a2, bias ? 4 : 3, "convolution forward"))) goto done;
    }
    if (g->training) {
        if (dnnl_dilated_convolution_backward_data_desc_init(&cd, dnnl_convolution_direct, &src, &wei, &dst, strides,
                                                             dil, pad, padr) != dnnl_success ||
            dnnl_primitive_desc_create(&pd, &cd, attr, kn_dnnl_engine(), fpd) != dnnl_success) {
            rc = kn_err(ctx, KN_ERR_INTERNAL, "oneDNN has no convolution backward-data for these shapes");
            goto done;
        }
        int ad[3] = {DNNL_ARG_DIFF_DST, DNNL_ARG_WEIGHTS, DNNL_ARG_DIFF_SRC};
        rc = kn_dnnl_prim_init(ctx, &p->bwd_data, pd, ad, 3, "convolution backward-data");
        dnnl_primitive_desc_destroy(pd);
        pd = NULL;
        if (rc) goto done;
        if (dnnl_dilated_convolution_backward_weights_desc_init(&cd, dnnl_convolution_direct, &src, &wei,
                                                                bias ? &bia : NULL, &dst, strides, dil, pad,
                                                                padr) != dnnl_success ||
            dnnl_primitive_desc_create(&pd, &cd, attr, kn_dnnl_engine(), fpd) != dnnl_success) {
            rc = kn_err(ctx, KN_ERR_INTERNAL, "oneDNN has no convolution backward-weights for these shapes");
            goto done;
        }
        int aw3[4] = {DNNL_ARG_SRC, DNNL_ARG_DIFF_DST, DNNL_ARG_DIFF_WEIGHTS, DNNL_ARG_DIFF_BIAS};
        int aw2[3] = {DNNL_ARG_SRC, DNNL_ARG_DIFF_DST, DNNL_ARG_DIFF_WEIGHTS};
        rc = kn_dnnl_prim_init(ctx, &p->bwd_w, pd, bias ? aw3 : aw2, bias ? 4 : 3, "convolution backward-weights");
    }
done:
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (fpd) dnnl_primitive_desc_destroy(fpd);
    dnnl_primitive_attr_destroy(attr);
    if (rc) { conv_release(n); return rc; }
    n->scratch_fwd = p->fwd.scratch;
    n->scratch_bwd = p->bwd_data.scratch > p->bwd_w.scratch ? p->bwd_data.scratch : p->bwd_w.scratch;
    return KN_OK;
}

static void conv_forward(const kn_node *n, kn_rt *rt) {
    conv_priv *p = n->priv;
    kn_graph *g = rt->g;
    void *ptrs[4] = {kn_ptr(g, n->in[0]), kn_ptr(g, n->in[1]), NULL, NULL};
    if (n->nin == 3) { ptrs[2] = kn_ptr(g, n->in[2]); ptrs[3] = kn_ptr(g, n->out[0]); }
    else ptrs[2] = kn_ptr(g, n->out[0]);
    kn_dnnl_exec(&p->fwd, ptrs, rt->scratch);
}

static void conv_backward(const kn_node *n, kn_rt *rt, float *const *din, const float *const *dout) {
    conv_priv *p = n->priv;
    kn_graph *g = rt->g;
    if (din[0]) {
        void *ptrs[3] = {(void *)dout[0], kn_ptr(g, n->in[1]), din[0]};
        kn_dnnl_exec(&p->bwd_data, ptrs, rt->scratch);
    }
    if (din[1]) {
        void *ptrs[4] = {kn_ptr(g, n->in[0]), (void *)dout[0], din[1], n->nin == 3 ? din[2] : NULL};
        kn_dnnl_exec(&p->bwd_w, ptrs, rt->scratch);
    }
}

const kn_op kn_op_conv2d = {
    .name = "conv2d",
    .infer = conv_infer,
    .flops_fwd = conv_flops,
    .flops_bwd = conv_flops_bwd,
    .bwd_reads_in = 0x3,
    .bwd_reads_out = 0,
    .diff_inputs = 0x7,
    .kernels = {[KN_BACKEND_CPU] = {conv_prepare, conv_release, conv_forward, conv_backward}},
};
