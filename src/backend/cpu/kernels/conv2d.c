/* conv2d: the CPU kernels, forward and backward side by side, registered by op id
 * (backend/cpu/registry.c). The definition (shape rule, FLOPs, what the backward reads)
 * and the maths are in src/ops/conv2d.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/kernels.h"
#include "backend/cpu/dnnl_glue.h"
#include "backend/cpu/layout.h"
#include "ops/conv2d.h"

typedef struct {
    kn_dnnl_prim fwd, bwd_data, bwd_w;
    /* reorders, .prim NULL when not needed */
    kn_dnnl_prim w_fwd;    /* weights (plain) -> forward's format */
    kn_dnnl_prim w_bwd;    /* weights (plain) -> backward-data's format */
    kn_dnnl_prim dw_out;   /* weight gradient: backward-weights' format -> plain */
    kn_dnnl_prim src_in;   /* stored x -> the primitives' x layout */
    kn_dnnl_prim dst_out;  /* primitive y -> stored y */
    kn_dnnl_prim ddst_in;  /* stored dy -> the primitives' layout */
    kn_dnnl_prim dsrc_out; /* primitive dx -> stored dx */
    /* byte offsets of the buffers in the forward / backward scratch */
    size_t f_pad, f_w, f_src, f_dst;
    size_t b_pad, b_w, b_dw, b_ddst, b_src, b_dsrc;
} conv_priv;

static void conv_release(kn_node *n) {
    conv_priv *p = n->priv;
    kn_dnnl_prim *all[] = {&p->fwd, &p->bwd_data, &p->bwd_w, &p->w_fwd, &p->w_bwd,
                           &p->dw_out, &p->src_in, &p->dst_out, &p->ddst_in, &p->dsrc_out};
    for (size_t k = 0; k < sizeof all / sizeof all[0]; k++) kn_dnnl_prim_free(all[k]);
    free(p);
    n->priv = NULL;
}

static void act_md(dnnl_memory_desc_t *md, const kn_shape *s, int B) {
    dnnl_dims_t d = {s->d[0], s->d[1], s->d[2], s->d[3]};
    dnnl_memory_desc_init_by_tag(md, 4, d, dnnl_f32, B == 16 ? dnnl_nChw16c : B == 8 ? dnnl_nChw8c : dnnl_nchw);
}

static size_t md_bytes(const dnnl_memory_desc_t *md) { return kn_align_up(dnnl_memory_desc_get_size(md), 64); }

static int is_ref(const_dnnl_primitive_desc_t pd) {
    const char *s = NULL;
    dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &s);
    return s && strstr(s, "ref") != NULL;
}

/* A reorder if a and b differ (into p), else nothing. Adds the destination's bytes to
 * *off when it goes into scratch (buf != NULL: *buf = its offset). */
static int maybe_reorder(kn_ctx *ctx, const kn_dnnl_ctx *dc, kn_dnnl_prim *p, const dnnl_memory_desc_t *a, const dnnl_memory_desc_t *b,
                         const dnnl_memory_desc_t *scratch_md, size_t *off, size_t *buf) {
    if (dnnl_memory_desc_equal(a, b)) return KN_OK;
    int rc = kn_dnnl_reorder(ctx, dc, p, a, b);
    if (rc) return rc;
    if (buf) {
        *buf = *off;
        *off += md_bytes(scratch_md);
    }
    return KN_OK;
}

static int conv_build(kn_graph *g, kn_node *n, kn_ctx *ctx, int blocked, int wino) {
    const kn_dnnl_ctx *dc = kn_dnnl_ctx_of(ctx, g);
    if (!dc) return ctx->code;
    const dnnl_alg_kind_t alg = wino ? dnnl_convolution_winograd : dnnl_convolution_direct;
    conv_priv *p = n->priv;
    const kn_shape *x = kn_shp(g, n->in[0]), *w = kn_shp(g, n->in[1]), *y = kn_shp(g, n->out[0]);
    const int64_t G = groups_of(n);
    const int bias = n->nin == 3;
    const int Bx = kn_layout(g, n->in[0]), By = kn_layout(g, n->out[0]), B = kn_g_block(g);
    /* stored layouts (user) and the primitives' */
    dnnl_memory_desc_t usrc, udst, psrc, pdst, uwei, wany, bia;
    act_md(&usrc, x, Bx);
    act_md(&udst, y, By);
    act_md(&psrc, x, blocked && (Bx || x->d[1] % B == 0) ? B : 0);
    act_md(&pdst, y, blocked && y->d[1] % B == 0 ? B : 0);
    dnnl_dims_t bd = {w->d[0]};
    dnnl_memory_desc_init_by_tag(&bia, 1, bd, dnnl_f32, dnnl_x);
    if (G > 1) {
        dnnl_dims_t wd = {G, w->d[0] / G, w->d[1], w->d[2], w->d[3]};
        dnnl_memory_desc_init_by_tag(&uwei, 5, wd, dnnl_f32, dnnl_goihw);
        dnnl_memory_desc_init_by_tag(&wany, 5, wd, dnnl_f32, blocked ? dnnl_format_tag_any : dnnl_goihw);
    } else {
        dnnl_dims_t wd = {w->d[0], w->d[1], w->d[2], w->d[3]};
        dnnl_memory_desc_init_by_tag(&uwei, 4, wd, dnnl_f32, dnnl_oihw);
        dnnl_memory_desc_init_by_tag(&wany, 4, wd, dnnl_f32, blocked ? dnnl_format_tag_any : dnnl_oihw);
    }
    dnnl_dims_t strides = {n->a.i[0], n->a.i[1]}, dil = {0, 0};
    dnnl_dims_t pad = {n->a.i[2], n->a.i[3]};
    /* right padding so that oneDNN's output size equals ours (floor division) */
    dnnl_dims_t padr = {(y->d[2] - 1) * n->a.i[0] + w->d[2] - x->d[2] - n->a.i[2],
                        (y->d[3] - 1) * n->a.i[1] + w->d[3] - x->d[3] - n->a.i[3]};
    dnnl_primitive_attr_t attr = kn_dnnl_attr();
    dnnl_convolution_desc_t cd;
    dnnl_primitive_desc_t fpd = NULL, dpd = NULL, wpd = NULL;
    int rc = KN_OK;
    dnnl_prop_kind_t prop = g->training ? dnnl_forward_training : dnnl_forward_inference;
    if (dnnl_dilated_convolution_forward_desc_init(&cd, prop, alg, &psrc, &wany, bias ? &bia : NULL,
                                                   &pdst, strides, dil, pad, padr) != dnnl_success ||
        dnnl_primitive_desc_create(&fpd, &cd, attr, dc->engine, NULL) != dnnl_success) {
        rc = wino ? -2 : kn_err(ctx, KN_ERR_INTERNAL, "oneDNN has no convolution for these shapes");
        goto done;
    }
    if (g->training) {
        if (dnnl_dilated_convolution_backward_data_desc_init(&cd, alg, &psrc, &wany, &pdst, strides,
                                                             dil, pad, padr) != dnnl_success ||
            dnnl_primitive_desc_create(&dpd, &cd, attr, dc->engine, fpd) != dnnl_success) {
            rc = wino ? -2 : kn_err(ctx, KN_ERR_INTERNAL, "oneDNN has no convolution backward-data for these shapes");
            goto done;
        }
        if (dnnl_dilated_convolution_backward_weights_desc_init(&cd, alg, &psrc, &wany,
                                                                bias ? &bia : NULL, &pdst, strides, dil, pad,
                                                                padr) != dnnl_success ||
            dnnl_primitive_desc_create(&wpd, &cd, attr, dc->engine, fpd) != dnnl_success) {
            rc = wino ? -2 : kn_err(ctx, KN_ERR_INTERNAL, "oneDNN has no convolution backward-weights for these shapes");
            goto done;
        }
    }
    /* blocked activations but only a reference implementation: use plain ones instead
     * (the caller retries with blocked = 0); backward-data only matters when the input
     * needs a gradient (not for a first layer reading the images) */
    if ((blocked || wino) && (is_ref(fpd) || (wpd && is_ref(wpd)) || (dpd && is_ref(dpd) && g->v[n->in[0]].needs_grad))) {
        rc = wino ? -2 : -1;
        goto done;
    }
    {
        int a3[4] = {DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_BIAS, DNNL_ARG_DST};
        int a2[3] = {DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_DST};
        if ((rc = kn_dnnl_prim_init(ctx, dc, &p->fwd, fpd, bias ? a3 : a2, bias ? 4 : 3, "convolution forward"))) goto done;
    }
    size_t off = kn_align_up(p->fwd.scratch, 64);
    p->f_pad = 0;
    const dnnl_memory_desc_t *fw = dnnl_primitive_desc_query_md(fpd, dnnl_query_exec_arg_md, DNNL_ARG_WEIGHTS);
    if ((rc = maybe_reorder(ctx, dc, &p->w_fwd, &uwei, fw, fw, &off, &p->f_w))) goto done;
    if ((rc = maybe_reorder(ctx, dc, &p->src_in, &usrc, &psrc, &psrc, &off, &p->f_src))) goto done;
    if ((rc = maybe_reorder(ctx, dc, &p->dst_out, &pdst, &udst, &pdst, &off, &p->f_dst))) goto done;
    n->scratch_fwd = off;
    if (g->training) {
        int ad[3] = {DNNL_ARG_DIFF_DST, DNNL_ARG_WEIGHTS, DNNL_ARG_DIFF_SRC};
        if ((rc = kn_dnnl_prim_init(ctx, dc, &p->bwd_data, dpd, ad, 3, "convolution backward-data"))) goto done;
        int aw3[4] = {DNNL_ARG_SRC, DNNL_ARG_DIFF_DST, DNNL_ARG_DIFF_WEIGHTS, DNNL_ARG_DIFF_BIAS};
        int aw2[3] = {DNNL_ARG_SRC, DNNL_ARG_DIFF_DST, DNNL_ARG_DIFF_WEIGHTS};
        if ((rc = kn_dnnl_prim_init(ctx, dc, &p->bwd_w, wpd, bias ? aw3 : aw2, bias ? 4 : 3, "convolution backward-weights")))
            goto done;
        off = kn_align_up(p->bwd_data.scratch > p->bwd_w.scratch ? p->bwd_data.scratch : p->bwd_w.scratch, 64);
        p->b_pad = 0;
        const dnnl_memory_desc_t *dw = dnnl_primitive_desc_query_md(dpd, dnnl_query_exec_arg_md, DNNL_ARG_WEIGHTS);
        const dnnl_memory_desc_t *ww = dnnl_primitive_desc_query_md(wpd, dnnl_query_exec_arg_md, DNNL_ARG_DIFF_WEIGHTS);
        if ((rc = maybe_reorder(ctx, dc, &p->w_bwd, &uwei, dw, dw, &off, &p->b_w))) goto done;
        if ((rc = maybe_reorder(ctx, dc, &p->dw_out, ww, &uwei, ww, &off, &p->b_dw))) goto done;
        if ((rc = maybe_reorder(ctx, dc, &p->ddst_in, &udst, &pdst, &pdst, &off, &p->b_ddst))) goto done;
        if (p->src_in.prim) {
            p->b_src = off;
            off += md_bytes(&psrc);
        }
        if ((rc = maybe_reorder(ctx, dc, &p->dsrc_out, &psrc, &usrc, &psrc, &off, &p->b_dsrc))) goto done;
        n->scratch_bwd = off;
    }
done:
    if (wpd) dnnl_primitive_desc_destroy(wpd);
    if (dpd) dnnl_primitive_desc_destroy(dpd);
    if (fpd) dnnl_primitive_desc_destroy(fpd);
    dnnl_primitive_attr_destroy(attr);
    return rc;
}

/* Worth trying Winograd under `auto`: a 3x3, stride-1, ungrouped convolution on
 * channel-blocked activations with enough channels on both sides. */
#define KN_WINO_MIN_CHANNELS 32
static int wino_candidate(kn_graph *g, const kn_node *n, int blocked) {
    const kn_shape *w = kn_shp(g, n->in[1]);
    return blocked && groups_of(n) == 1 && w->d[2] == 3 && w->d[3] == 3 && n->a.i[0] == 1 && n->a.i[1] == 1 &&
           w->d[0] >= KN_WINO_MIN_CHANNELS && w->d[1] >= KN_WINO_MIN_CHANNELS;
}

static int conv_prepare(kn_graph *g, kn_node *n, kn_ctx *ctx) {
    int blocked = kn_g_block(g) && groups_of(n) == 1 &&
                  (kn_layout(g, n->in[0]) || kn_layout(g, n->out[0]));
    const int64_t want = n->a.i[5];
    int wino = want == KN_CONV_WINOGRAD || (want == KN_CONV_AUTO && wino_candidate(g, n, blocked));
    if (want == KN_CONV_WINOGRAD) blocked = kn_g_block(g) && groups_of(n) == 1;
    for (;;) {
        n->priv = calloc(1, sizeof(conv_priv));
        if (!n->priv) return kn_err(ctx, KN_ERR_NOMEM, "out of memory");
        n->scratch_fwd = n->scratch_bwd = 0;
        int rc = conv_build(g, n, ctx, blocked, wino);
        if (rc == KN_OK) {
            snprintf(n->impl, sizeof n->impl, "%s", wino ? "winograd" : "direct");
            return KN_OK;
        }
        conv_release(n);
        if (rc > 0) return rc;
        if (wino) {
            /* an evaluation graph only rounds differently with the direct algorithm: a
             * model trained with Winograd still evaluates on a CPU without it */
            if (want == KN_CONV_WINOGRAD && g->training)
                return kn_err(ctx, KN_ERR_CONFIG,
                              "algorithm = winograd, but oneDNN has no Winograd convolution for this layer on this CPU "
                              "(it needs a 3x3 kernel, stride 1, groups = 1, channel counts that are multiples of 16, "
                              "AVX-512 and channel-blocked layouts, which KN_BLOCKED_LAYOUT=0 turns off); use "
                              "algorithm = auto (Winograd where it runs) or direct");
            wino = 0; /* auto: the direct algorithm */
            continue;
        }
        if (!blocked) return kn_err(ctx, KN_ERR_INTERNAL, "oneDNN has no convolution for these shapes");
        blocked = 0; /* retry with plain activations, reordered */
    }
}

static inline void *at(void *scratch, size_t off) { return scratch ? (char *)scratch + off : NULL; } /* no scratch: NULL, never NULL + 0 (UB) */

static void conv_forward(const kn_node *n, kn_rt *rt) {
    conv_priv *p = n->priv;
    kn_graph *g = rt->g;
    void *S = rt->scratch;
    void *src = kn_ptr(g, n->in[0]), *wei = kn_ptr(g, n->in[1]), *dst = kn_ptr(g, n->out[0]);
    if (p->src_in.prim) { kn_dnnl_reorder_exec(&p->src_in, src, at(S, p->f_src)); src = at(S, p->f_src); }
    if (p->w_fwd.prim) { kn_dnnl_reorder_exec(&p->w_fwd, wei, at(S, p->f_w)); wei = at(S, p->f_w); }
    void *pdst = p->dst_out.prim ? at(S, p->f_dst) : dst;
    void *ptrs[4] = {src, wei, NULL, NULL};
    if (n->nin == 3) { ptrs[2] = kn_ptr(g, n->in[2]); ptrs[3] = pdst; }
    else ptrs[2] = pdst;
    kn_dnnl_exec(&p->fwd, ptrs, at(S, p->f_pad));
    if (p->dst_out.prim) kn_dnnl_reorder_exec(&p->dst_out, pdst, dst);
}

static void conv_backward(const kn_node *n, kn_rt *rt, float *const *din, const float *const *dout) {
    conv_priv *p = n->priv;
    kn_graph *g = rt->g;
    void *S = rt->scratch;
    void *dy = (void *)dout[0];
    if (p->ddst_in.prim) { kn_dnnl_reorder_exec(&p->ddst_in, dy, at(S, p->b_ddst)); dy = at(S, p->b_ddst); }
    if (din[0]) {
        void *wei = kn_ptr(g, n->in[1]);
        if (p->w_bwd.prim) { kn_dnnl_reorder_exec(&p->w_bwd, wei, at(S, p->b_w)); wei = at(S, p->b_w); }
        void *dx = p->dsrc_out.prim ? at(S, p->b_dsrc) : (void *)din[0];
        void *ptrs[3] = {dy, wei, dx};
        kn_dnnl_exec(&p->bwd_data, ptrs, at(S, p->b_pad));
        if (p->dsrc_out.prim) kn_dnnl_reorder_exec(&p->dsrc_out, dx, din[0]);
    }
    if (din[1]) {
        void *src = kn_ptr(g, n->in[0]);
        if (p->src_in.prim) { kn_dnnl_reorder_exec(&p->src_in, src, at(S, p->b_src)); src = at(S, p->b_src); }
        void *dw = p->dw_out.prim ? at(S, p->b_dw) : (void *)din[1];
        void *ptrs[4] = {src, dy, dw, n->nin == 3 ? din[2] : NULL};
        kn_dnnl_exec(&p->bwd_w, ptrs, at(S, p->b_pad));
        if (p->dw_out.prim) kn_dnnl_reorder_exec(&p->dw_out, dw, din[1]);
    }
}

KN_ISA_KERNELS(conv, conv_forward, conv_backward)

KN_CPU_OP(conv2d, conv, conv_prepare, conv_release)
