/* kiln — layer builders and the model builder. See model.h.
 * Adding a layer type: write a builder below (a few kn_g_op calls) and add it to
 * the table at the end. The trainer does not change. */
#define _POSIX_C_SOURCE 200809L
#include "nn/model.h"
#include "backend/backend.h"
#include "graph/fuse.h"
#include "ops/activation.h"
#include "ops/metric.h"

#include <stdio.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define MAX_LAYERS 512
#define MAX_LAYER_INPUTS 8

typedef struct {
    kn_ctx *ctx;
    const kn_config *cfg;
    const kn_cfg_section *sec;
    kn_graph *g;
    const char *name;
    int in[MAX_LAYER_INPUTS];
    int nin;
} layer_ctx;

typedef int (*layer_fn)(layer_ctx *L, int *out);

typedef struct {
    const char *type;
    layer_fn build;
    const char *const *keys; /* allowed keys besides the common ones */
    const char *help;
} layer_def;

static const char *const k_common[] = {"type", "input", "recompute", "block", NULL};

int kn_is_reserved_section(const char *name) {
    return !strcmp(name, "data") || !strcmp(name, "train") || !strcmp(name, "optimizer") || !strcmp(name, "model") ||
           !strcmp(name, "checkpoint") || !strcmp(name, "guard") || !strcmp(name, "health");
}

/* ---------- helpers ---------- */
static const char *const init_names[] = {"zeros", "ones", "constant", "kaiming_uniform", "kaiming_normal",
                                         "xavier_uniform", "xavier_normal", "uniform", "normal", NULL};

/* A key that the layer's other settings make meaningless is an error, not a no-op. */
static int unused_key(layer_ctx *L, const char *key, const char *why) {
    if (!kn_cfg_get(L->sec, key)) return KN_OK;
    char w[256];
    return kn_err(L->ctx, KN_ERR_CONFIG, "%s: [%s] %s has no effect %s; remove it",
                  kn_cfg_where(L->cfg, L->sec, key, w, sizeof w), L->name, key, why);
}

static int get_init(layer_ctx *L, const char *key, int def, int64_t fan_in, int64_t fan_out, kn_init *out) {
    int k;
    int rc = kn_cfg_enum(L->ctx, L->cfg, L->sec, key, init_names, def, &k);
    if (rc) return rc;
    char skey[64], why[96];
    snprintf(skey, sizeof skey, "%s_scale", key);
    snprintf(why, sizeof why, "with %s = %s (only constant, uniform and normal take a scale)", key, init_names[k]);
    if (k != KN_INIT_CONST && k != KN_INIT_UNIFORM && k != KN_INIT_NORMAL && (rc = unused_key(L, skey, why))) return rc;
    double a = 0;
    double defa = (k == KN_INIT_UNIFORM || k == KN_INIT_NORMAL) ? 0.01 : 0.0;
    if ((rc = kn_cfg_float(L->ctx, L->cfg, L->sec, skey, defa, -3e38, 3e38, &a))) return rc;
    out->kind = (kn_init_kind)k;
    out->a = a;
    out->fan_in = fan_in;
    out->fan_out = fan_out;
    return KN_OK;
}

static int one_input(layer_ctx *L) {
    if (L->nin != 1) {
        char w[256];
        return kn_err(L->ctx, KN_ERR_CONFIG, "%s: layer '%s' takes exactly one input, got %d",
                      kn_cfg_where(L->cfg, L->sec, "input", w, sizeof w), L->name, L->nin);
    }
    return KN_OK;
}

static int emit(layer_ctx *L, const kn_op *op, const int *in, int nin, const kn_attrs *a, int *out) {
    int v = kn_g_op(L->ctx, L->g, op, in, nin, a);
    if (v < 0) return L->ctx->code ? L->ctx->code : KN_ERR_SHAPE;
    *out = v;
    return KN_OK;
}

/* optional `activation = relu` on layers that produce features (none, or a row of the
 * activation table, ops/activation.h); `slope` sets a leaky_relu activation's negative
 * slope (0.01, as the leaky_relu layer). A relu after a linear or batchnorm is fused
 * into it later, by the graph pass (graph/fuse.c). */
static int maybe_activation(layer_ctx *L, int *out) {
    int k, rc, nact = 0;
    double slope = 0.01;
    const char *act_names[16];
    act_names[nact++] = "none";
    for (const kn_activation *a = kn_activations; a->name && nact < 15; a++) act_names[nact++] = a->name;
    act_names[nact] = NULL;
    if ((rc = kn_cfg_enum(L->ctx, L->cfg, L->sec, "activation", act_names, 0, &k))) return rc;
    const kn_activation *act = k > 0 ? &kn_activations[k - 1] : NULL;
    if (!(act && act->has_slope) && (rc = unused_key(L, "slope", "unless activation = leaky_relu"))) return rc;
    if (act && act->has_slope && (rc = kn_cfg_float(L->ctx, L->cfg, L->sec, "slope", 0.01, -1e3, 1e3, &slope)))
        return rc;
    if (!act) return KN_OK;
    kn_attrs a = {0};
    a.f[0] = slope;
    int x = *out;
    return emit(L, act->op, &x, 1, &a, out);
}

/* ---------- layers ---------- */
static const char *const k_linear[] = {"out", "bias", "init", "init_scale", "bias_init", "bias_init_scale", "activation", "slope", NULL};
static int build_linear(layer_ctx *L, int *out) {
    int rc;
    int64_t o;
    int bias;
    if ((rc = one_input(L))) return rc;
    if ((rc = kn_cfg_int(L->ctx, L->cfg, L->sec, "out", -1, 1, 1 << 24, &o))) return rc;
    if (o < 0) {
        char w[256];
        return kn_err(L->ctx, KN_ERR_CONFIG, "%s: layer '%s' (linear) needs 'out = N' (the number of output features)",
                      kn_cfg_where(L->cfg, L->sec, NULL, w, sizeof w), L->name);
    }
    if ((rc = kn_cfg_bool(L->ctx, L->cfg, L->sec, "bias", 1, &bias))) return rc;
    const kn_shape *xs = kn_shp(L->g, L->in[0]);
    /* the linear op works on any rank (over the last axis); the config layer takes
     * [batch, features] and [batch, positions, features] (per position: sequences), so
     * that a linear layer after a convolution without a flatten stays an error rather
     * than a product over the image's last axis */
    if (xs->nd != 2 && xs->nd != 3) {
        char sb[64];
        return kn_err(L->ctx, KN_ERR_SHAPE, "linear expects a 2-D input [batch, features] or a 3-D input [batch, positions, features], "
                      "got %s; put a flatten layer before it", kn_shape_str(xs, sb, sizeof sb));
    }
    int64_t fan_in = xs->d[xs->nd - 1];
    kn_init wi, bi;
    if ((rc = get_init(L, "init", KN_INIT_KAIMING_UNIFORM, fan_in, o, &wi))) return rc;
    if (!bias && ((rc = unused_key(L, "bias_init", "with bias = false")) || (rc = unused_key(L, "bias_init_scale", "with bias = false")))) return rc;
    if ((rc = get_init(L, "bias_init", KN_INIT_ZEROS, fan_in, o, &bi))) return rc;
    char nm[96];
    int in[3] = {L->in[0], -1, -1};
    snprintf(nm, sizeof nm, "%s.weight", L->name);
    if ((in[1] = kn_g_param(L->ctx, L->g, nm, kn_shape2(o, fan_in), wi)) < 0) return L->ctx->code;
    if (bias) {
        snprintf(nm, sizeof nm, "%s.bias", L->name);
        if ((in[2] = kn_g_param(L->ctx, L->g, nm, kn_shape1(o), bi)) < 0) return L->ctx->code;
    }
    if ((rc = emit(L, &kn_op_linear, in, bias ? 3 : 2, NULL, out))) return rc;
    return maybe_activation(L, out);
}

static const char *const k_conv[] = {"out_channels", "kernel", "stride", "padding", "groups", "bias", "init", "init_scale",
                                     "bias_init", "bias_init_scale", "activation", "algorithm", "slope", NULL};
static const char *const conv_algorithms[] = {"auto", "direct", "winograd", NULL};
static int build_conv2d(layer_ctx *L, int *out) {
    int rc, algo;
    int64_t oc, k, s, p, gr;
    int bias;
    if ((rc = one_input(L))) return rc;
    if ((rc = kn_cfg_int(L->ctx, L->cfg, L->sec, "out_channels", -1, 1, 1 << 20, &oc))) return rc;
    if ((rc = kn_cfg_int(L->ctx, L->cfg, L->sec, "kernel", -1, 1, 1024, &k))) return rc;
    if (oc < 0 || k < 0) {
        char w[256];
        return kn_err(L->ctx, KN_ERR_CONFIG, "%s: layer '%s' (conv2d) needs 'out_channels = N' and 'kernel = K'",
                      kn_cfg_where(L->cfg, L->sec, NULL, w, sizeof w), L->name);
    }
    if ((rc = kn_cfg_int(L->ctx, L->cfg, L->sec, "stride", 1, 1, 1024, &s))) return rc;
    if ((rc = kn_cfg_int(L->ctx, L->cfg, L->sec, "padding", 0, 0, 1024, &p))) return rc;
    if ((rc = kn_cfg_int(L->ctx, L->cfg, L->sec, "groups", 1, 1, 1 << 20, &gr))) return rc;
    if ((rc = kn_cfg_enum(L->ctx, L->cfg, L->sec, "algorithm", conv_algorithms, KN_CONV_AUTO, &algo))) return rc;
    if ((rc = kn_cfg_bool(L->ctx, L->cfg, L->sec, "bias", 1, &bias))) return rc;
    const kn_shape *xs = kn_shp(L->g, L->in[0]);
    if (xs->nd != 4) {
        char sh[64];
        return kn_err(L->ctx, KN_ERR_SHAPE,
                      "conv2d expects a 4-D input [batch, channels, height, width], got %s",
                      kn_shape_str(xs, sh, sizeof sh));
    }
    int64_t cin = xs->d[1];
    if (cin % gr || oc % gr) {
        char w[256];
        return kn_err(L->ctx, KN_ERR_CONFIG, "%s: groups = %lld must divide the input channels (%lld) and out_channels (%lld)",
                      kn_cfg_where(L->cfg, L->sec, "groups", w, sizeof w), (long long)gr, (long long)cin, (long long)oc);
    }
    int64_t fan_in = cin / gr * k * k, fan_out = oc / gr * k * k;
    kn_init wi, bi;
    if ((rc = get_init(L, "init", KN_INIT_KAIMING_UNIFORM, fan_in, fan_out, &wi))) return rc;
    if (!bias && ((rc = unused_key(L, "bias_init", "with bias = false")) || (rc = unused_key(L, "bias_init_scale", "with bias = false")))) return rc;
    if ((rc = get_init(L, "bias_init", KN_INIT_ZEROS, fan_in, fan_out, &bi))) return rc;
    char nm[96];
    int in[3] = {L->in[0], -1, -1};
    snprintf(nm, sizeof nm, "%s.weight", L->name);
    if ((in[1] = kn_g_param(L->ctx, L->g, nm, kn_shape4(oc, cin / gr, k, k), wi)) < 0) return L->ctx->code;
    if (bias) {
        snprintf(nm, sizeof nm, "%s.bias", L->name);
        if ((in[2] = kn_g_param(L->ctx, L->g, nm, kn_shape1(oc), bi)) < 0) return L->ctx->code;
    }
    kn_attrs a = {0};
    a.i[0] = a.i[1] = s;
    a.i[2] = a.i[3] = p;
    a.i[4] = gr;
    a.i[5] = algo;
    if ((rc = emit(L, &kn_op_conv2d, in, bias ? 3 : 2, &a, out))) return rc;
    return maybe_activation(L, out);
}

static const char *const k_pool[] = {"kernel", "stride", "padding", "count_include_pad", NULL};
static int build_pool(layer_ctx *L, int *out, const kn_op *op, int is_max) {
    int rc;
    int64_t k, s, p;
    int cip;
    if ((rc = one_input(L))) return rc;
    if ((rc = kn_cfg_int(L->ctx, L->cfg, L->sec, "kernel", 2, 1, 1024, &k))) return rc;
    if ((rc = kn_cfg_int(L->ctx, L->cfg, L->sec, "stride", k, 1, 1024, &s))) return rc;
    if ((rc = kn_cfg_int(L->ctx, L->cfg, L->sec, "padding", 0, 0, 1024, &p))) return rc;
    if ((rc = kn_cfg_bool(L->ctx, L->cfg, L->sec, "count_include_pad", 1, &cip))) return rc;
    if (is_max && (rc = unused_key(L, "count_include_pad", "on a maxpool2d layer (it is avgpool2d's)"))) return rc;
    kn_attrs a = {0};
    a.i[0] = a.i[1] = k;
    a.i[2] = a.i[3] = s;
    a.i[4] = a.i[5] = p;
    a.i[6] = cip;
    return emit(L, op, L->in, 1, &a, out);
}
static int build_maxpool(layer_ctx *L, int *out) { return build_pool(L, out, &kn_op_maxpool2d, 1); }
static int build_avgpool(layer_ctx *L, int *out) { return build_pool(L, out, &kn_op_avgpool2d, 0); }

static const char *const k_none[] = {NULL};
static int build_gap(layer_ctx *L, int *out) {
    int rc;
    if ((rc = one_input(L))) return rc;
    return emit(L, &kn_op_global_avgpool, L->in, 1, NULL, out);
}

static const char *const k_bn[] = {"momentum", "eps", "activation", "slope", NULL};
static int build_batchnorm(layer_ctx *L, int *out) {
    int rc;
    double mom, eps;
    if ((rc = one_input(L))) return rc;
    if ((rc = kn_cfg_float(L->ctx, L->cfg, L->sec, "momentum", 0.1, 0.0, 1.0, &mom))) return rc;
    if ((rc = kn_cfg_float(L->ctx, L->cfg, L->sec, "eps", 1e-5, 0.0, 1.0, &eps))) return rc;
    const kn_shape *xs = kn_shp(L->g, L->in[0]);
    if (xs->nd != 2 && xs->nd != 4) {
        char sh[64];
        return kn_err(L->ctx, KN_ERR_SHAPE, "batchnorm expects [batch, features] or [batch, channels, height, width], got %s",
                      kn_shape_str(xs, sh, sizeof sh));
    }
    int64_t C = xs->d[1];
    char nm[96];
    int in[5] = {L->in[0]};
    kn_init one = {KN_INIT_ONES, 0, 0, 0}, zero = {KN_INIT_ZEROS, 0, 0, 0};
    snprintf(nm, sizeof nm, "%s.weight", L->name);
    if ((in[1] = kn_g_param(L->ctx, L->g, nm, kn_shape1(C), one)) < 0) return L->ctx->code;
    snprintf(nm, sizeof nm, "%s.bias", L->name);
    if ((in[2] = kn_g_param(L->ctx, L->g, nm, kn_shape1(C), zero)) < 0) return L->ctx->code;
    snprintf(nm, sizeof nm, "%s.running_mean", L->name);
    if ((in[3] = kn_g_state(L->ctx, L->g, nm, kn_shape1(C), zero)) < 0) return L->ctx->code;
    snprintf(nm, sizeof nm, "%s.running_var", L->name);
    if ((in[4] = kn_g_state(L->ctx, L->g, nm, kn_shape1(C), one)) < 0) return L->ctx->code;
    kn_attrs a = {0};
    a.f[0] = mom;
    a.f[1] = eps;
    if ((rc = emit(L, &kn_op_batchnorm, in, 5, &a, out))) return rc;
    return maybe_activation(L, out);
}

static const char *const k_leaky[] = {"slope", NULL};
/* an activation layer: the row of the activation table named by its type */
static int build_act(layer_ctx *L, int *out, const char *type) {
    int rc;
    double slope = 0.01;
    const kn_activation *act = kn_activation_find(type);
    if (!act) return kn_err(L->ctx, KN_ERR_INTERNAL, "no activation op '%s'", type);
    if ((rc = one_input(L))) return rc;
    if (act->has_slope && (rc = kn_cfg_float(L->ctx, L->cfg, L->sec, "slope", 0.01, -1e3, 1e3, &slope))) return rc;
    kn_attrs a = {0};
    a.f[0] = slope;
    return emit(L, act->op, L->in, 1, &a, out);
}
static int build_relu(layer_ctx *L, int *out) { return build_act(L, out, "relu"); }
static int build_leaky(layer_ctx *L, int *out) { return build_act(L, out, "leaky_relu"); }
static int build_gelu(layer_ctx *L, int *out) { return build_act(L, out, "gelu"); }
static int build_silu(layer_ctx *L, int *out) { return build_act(L, out, "silu"); }
static int build_tanh(layer_ctx *L, int *out) { return build_act(L, out, "tanh"); }
static int build_sigmoid(layer_ctx *L, int *out) { return build_act(L, out, "sigmoid"); }

static const char *const k_dropout[] = {"p", NULL};
static int build_dropout(layer_ctx *L, int *out) {
    int rc;
    double p;
    if ((rc = one_input(L))) return rc;
    if ((rc = kn_cfg_float(L->ctx, L->cfg, L->sec, "p", 0.5, 0.0, 0.999, &p))) return rc;
    if (!L->g->training || p == 0.0) { *out = L->in[0]; return KN_OK; } /* identity outside training */
    kn_attrs a = {0};
    a.f[0] = p;
    return emit(L, &kn_op_dropout, L->in, 1, &a, out);
}

static int build_flatten(layer_ctx *L, int *out) {
    int rc;
    if ((rc = one_input(L))) return rc;
    const kn_shape *xs = kn_shp(L->g, L->in[0]);
    if (xs->nd == 2) { *out = L->in[0]; return KN_OK; }
    kn_attrs a = {0};
    a.i[0] = 2;
    a.i[1] = xs->d[0];
    a.i[2] = -1;
    return emit(L, &kn_op_reshape, L->in, 1, &a, out);
}

static const char *const k_reshape[] = {"shape", NULL};
static int build_reshape(layer_ctx *L, int *out) {
    int rc;
    if ((rc = one_input(L))) return rc;
    const char *dims[4];
    int nd;
    if ((rc = kn_cfg_list(L->ctx, L->cfg, L->sec, "shape", dims, 4, &nd))) return rc;
    kn_attrs a = {0};
    a.i[0] = nd + 1;
    a.i[1] = kn_shp(L->g, L->in[0])->d[0];
    for (int i = 0; i < nd; i++) {
        char *end;
        errno = 0;
        long long v = strtoll(dims[i], &end, 10);
        if (*end || end == dims[i] || errno == ERANGE || (v < 1 && v != -1)) {
            char w[256];
            return kn_err(L->ctx, KN_ERR_CONFIG, "%s: [%s] shape: '%s' is not a dimension (expected positive integers or -1, e.g. shape = 1, 28, 28)",
                          kn_cfg_where(L->cfg, L->sec, "shape", w, sizeof w), L->name, dims[i]);
        }
        a.i[2 + i] = v;
    }
    if (nd == 0) {
        char w[256];
        return kn_err(L->ctx, KN_ERR_CONFIG, "%s: layer '%s' (reshape) needs 'shape = D1, D2, ...' (without the batch)",
                      kn_cfg_where(L->cfg, L->sec, NULL, w, sizeof w), L->name);
    }
    return emit(L, &kn_op_reshape, L->in, 1, &a, out);
}

static int build_add(layer_ctx *L, int *out) {
    if (L->nin < 2) {
        char w[256];
        return kn_err(L->ctx, KN_ERR_CONFIG, "%s: layer '%s' (add) needs two or more inputs, e.g. input = block1, shortcut",
                      kn_cfg_where(L->cfg, L->sec, "input", w, sizeof w), L->name);
    }
    int acc = L->in[0], rc;
    for (int i = 1; i < L->nin; i++) {
        int pair[2] = {acc, L->in[i]};
        if ((rc = emit(L, &kn_op_add, pair, 2, NULL, &acc))) return rc;
    }
    *out = acc;
    return KN_OK;
}

static const char *const k_concat[] = {"axis", NULL};
static int build_concat(layer_ctx *L, int *out) {
    int rc;
    int64_t axis;
    if (L->nin < 2) {
        char w[256];
        return kn_err(L->ctx, KN_ERR_CONFIG, "%s: layer '%s' (concat) needs two or more inputs, e.g. input = a, b",
                      kn_cfg_where(L->cfg, L->sec, "input", w, sizeof w), L->name);
    }
    if ((rc = kn_cfg_int(L->ctx, L->cfg, L->sec, "axis", 1, 1, 4, &axis))) return rc;
    kn_attrs a = {0};
    a.i[0] = axis;
    return emit(L, &kn_op_concat, L->in, L->nin, &a, out);
}

static const layer_def layers[] = {
    {"linear", build_linear, k_linear, "fully connected: out = N"},
    {"conv2d", build_conv2d, k_conv, "2-D convolution: out_channels, kernel, stride, padding, groups, algorithm"},
    {"maxpool2d", build_maxpool, k_pool, "max pooling: kernel, stride, padding"},
    {"avgpool2d", build_avgpool, k_pool, "average pooling: kernel, stride, padding, count_include_pad"},
    {"global_avgpool", build_gap, k_none, "mean over height and width: [N,C,H,W] -> [N,C]"},
    {"batchnorm", build_batchnorm, k_bn, "batch normalisation (1d or 2d by input rank): momentum, eps"},
    {"relu", build_relu, k_none, ""},
    {"leaky_relu", build_leaky, k_leaky, "slope"},
    {"gelu", build_gelu, k_none, ""},
    {"silu", build_silu, k_none, ""},
    {"tanh", build_tanh, k_none, ""},
    {"sigmoid", build_sigmoid, k_none, ""},
    {"dropout", build_dropout, k_dropout, "p"},
    {"flatten", build_flatten, k_none, "[N,...] -> [N, features]"},
    {"reshape", build_reshape, k_reshape, "shape = D1, D2, ... (without the batch)"},
    {"add", build_add, k_none, "element-wise sum of its inputs (residual)"},
    {"concat", build_concat, k_concat, "concatenation of its inputs along axis (default 1, channels)"},
};
#define NLAYERS ((int)(sizeof layers / sizeof layers[0]))

/* ---------- model ---------- */
/* type and keys of one layer section (no shapes needed) */
static int check_layer_section(kn_ctx *ctx, const kn_config *cfg, const kn_cfg_section *sec, int *type) {
    char w[256];
    const char *type_names[NLAYERS + 1];
    for (int i = 0; i < NLAYERS; i++) type_names[i] = layers[i].type;
    type_names[NLAYERS] = NULL;
    if (!kn_cfg_get(sec, "type"))
        return kn_err(ctx, KN_ERR_CONFIG, "%s: section [%s] is a layer but has no 'type = ...' (one of linear, conv2d, batchnorm, relu, maxpool2d, ...; [data], [train] and [optimizer] are the other sections)",
                      kn_cfg_where(cfg, sec, NULL, w, sizeof w), sec->name);
    int t, rc;
    if ((rc = kn_cfg_enum(ctx, cfg, sec, "type", type_names, -1, &t))) return rc;
    const layer_def *def = &layers[t];
    const char *allowed[40];
    int na = 0;
    for (int i = 0; k_common[i]; i++) allowed[na++] = k_common[i];
    for (int i = 0; def->keys[i] && na < 39; i++) allowed[na++] = def->keys[i];
    allowed[na] = NULL;
    char what[96];
    snprintf(what, sizeof what, "a %s layer", def->type);
    if ((rc = kn_cfg_check_keys(ctx, cfg, sec, allowed, what))) return rc;
    *type = t;
    return KN_OK;
}

/* Activation recomputation: a layer's own `recompute = true|false`, else whether its
 * name or its `block` is listed in [model] recompute. */
static int layer_recompute(kn_ctx *ctx, const kn_config *cfg, const kn_cfg_section *sec, int *out) {
    int rc;
    *out = 0;
    if (kn_cfg_get(sec, "recompute")) return kn_cfg_bool(ctx, cfg, sec, "recompute", 0, out);
    const char *block = NULL, *names[MAX_LAYERS];
    int nn = 0;
    if ((rc = kn_cfg_str(ctx, cfg, sec, "block", NULL, &block))) return rc;
    const kn_cfg_section *ms = kn_cfg_find(cfg, "model");
    if (ms && kn_cfg_get(ms, "recompute") && (rc = kn_cfg_list(ctx, cfg, ms, "recompute", names, MAX_LAYERS, &nn)))
        return rc;
    for (int i = 0; i < nn; i++)
        if (!strcmp(names[i], sec->name) || (block && !strcmp(names[i], block))) *out = 1;
    return KN_OK;
}

/* [model]: recompute = NAME, ... where each NAME is a layer or a block */
static int check_model_section(kn_ctx *ctx, const kn_config *cfg) {
    static const char *const k_model[] = {"recompute", NULL};
    const kn_cfg_section *ms = kn_cfg_find(cfg, "model");
    int rc;
    if (!ms) return KN_OK;
    if ((rc = kn_cfg_check_keys(ctx, cfg, ms, k_model, "the [model] section"))) return rc;
    if (!kn_cfg_get(ms, "recompute")) return KN_OK;
    const char *names[MAX_LAYERS];
    int nn;
    if ((rc = kn_cfg_list(ctx, cfg, ms, "recompute", names, MAX_LAYERS, &nn))) return rc;
    for (int i = 0; i < nn; i++) {
        int found = 0;
        for (int s = 0; s < cfg->nsec && !found; s++) {
            const kn_cfg_section *sec = &cfg->sec[s];
            if (kn_is_reserved_section(sec->name)) continue;
            const kn_cfg_kv *b = kn_cfg_get(sec, "block");
            found = !strcmp(sec->name, names[i]) || (b && !strcmp(b->value, names[i]));
        }
        if (!found) {
            char w[256];
            return kn_err(ctx, KN_ERR_CONFIG, "%s: [model] recompute: '%s' is neither a layer nor a block (a block is named by 'block = NAME' in its layers)",
                          kn_cfg_where(cfg, ms, "recompute", w, sizeof w), names[i]);
        }
    }
    return KN_OK;
}

int kn_model_classes(const kn_config *cfg) {
    const kn_cfg_section *last = NULL;
    for (int s = 0; s < cfg->nsec; s++)
        if (!kn_is_reserved_section(cfg->sec[s].name)) last = &cfg->sec[s];
    const kn_cfg_kv *t = last ? kn_cfg_get(last, "type") : NULL, *o = last ? kn_cfg_get(last, "out") : NULL;
    if (!t || !o || strcmp(t->value, "linear") != 0) return 0;
    char *end;
    errno = 0;
    long v = strtol(o->value, &end, 10);
    return *end || end == o->value || errno || v < 1 || v > 256 ? 0 : (int)v; /* labels are bytes */
}

int kn_model_check_config(kn_ctx *ctx, const kn_config *cfg) {
    int t, rc, n = 0;
    if ((rc = check_model_section(ctx, cfg))) return rc;
    for (int s = 0; s < cfg->nsec; s++) {
        if (kn_is_reserved_section(cfg->sec[s].name)) continue;
        if ((rc = check_layer_section(ctx, cfg, &cfg->sec[s], &t))) return rc;
        n++;
    }
    if (n == 0) return kn_err(ctx, KN_ERR_CONFIG, "%s: no layers: add sections like [fc1] with type = linear", cfg->path);
    return KN_OK;
}

typedef struct {
    const char *name;
    int vid;
} named;

/* ---------- losses and metrics (graph outputs) ---------- */
int kn_model_output(const kn_graph *g, const char *name) {
    for (int v = 0; v < g->nv; v++)
        if (!strcmp(g->v[v].name, name)) return v;
    return -1;
}

/* The class labels of a batch: [batch] (one per sample) or [batch, T...] (one per
 * position: the data's per-sample label shape); the logits that fit them add the class
 * axis last: [batch, classes] or [batch, T..., classes]. */
static kn_shape labels_shape(const kn_model *m, int64_t batch) {
    kn_shape s = {1, {batch}};
    for (int k = 0; k < m->desc.target.nd; k++) s.d[s.nd++] = m->desc.target.d[k];
    return s;
}
static kn_shape logits_shape(const kn_model *m, int64_t batch) {
    kn_shape s = labels_shape(m, batch);
    s.d[s.nd++] = m->nclasses;
    return s;
}

/* The loss node of graph g on output `prev` of shape *want; its target input(s) named
 * "labels" (int32) or "targets" (float32), class weights "class_weights". */
static int add_loss_node(kn_ctx *ctx, kn_model *m, kn_graph *g, int64_t batch, int prev, const kn_shape *want, int *y_out,
                         int *cw_out, int *loss_out) {
    kn_g_set_layer(g, "loss");
    kn_g_set_recompute(g, 0);
    int in[3] = {prev, -1, -1}, nin = 2, loss;
    kn_attrs a = {0};
    const kn_op *op = &kn_op_mse;
    *cw_out = -1;
    if (m->loss_kind == KN_LOSS_CE) {
        in[1] = kn_g_input(g, "labels", KN_I32, labels_shape(m, batch));
        if (m->class_weights) {
            in[2] = *cw_out = kn_g_input(g, "class_weights", KN_F32, kn_shape1(m->nclasses));
            nin = 3;
        }
        a.f[0] = m->label_smoothing;
        op = &kn_op_softmax_ce;
    } else {
        in[1] = kn_g_input(g, "targets", KN_F32, *want);
        op = m->loss_kind == KN_LOSS_L1 ? &kn_op_l1 : m->loss_kind == KN_LOSS_HUBER ? &kn_op_huber
           : m->loss_kind == KN_LOSS_BCE ? &kn_op_bce_logits : &kn_op_mse;
        if (m->loss_kind == KN_LOSS_HUBER) a.f[0] = m->huber_delta;
    }
    if (in[1] < 0 || (nin == 3 && in[2] < 0)) return kn_err(ctx, KN_ERR_NOMEM, "out of memory");
    loss = kn_g_op(ctx, g, op, in, nin, &a);
    if (loss < 0) return ctx->code;
    *y_out = in[1];
    *loss_out = loss;
    return KN_OK;
}

static int add_loss(kn_ctx *ctx, kn_model *m, kn_graph *g, int64_t batch, int prev, const kn_shape *want, int *y_out,
                    int *loss_out) {
    int rc = add_loss_node(ctx, m, g, batch, prev, want, y_out, &m->cw_train, loss_out);
    if (rc) return rc;
    kn_g_set_loss(g, *loss_out);
    return KN_OK;
}

static const char *const metric_names_class[] = {"accuracy", NULL}, *const metric_names_real[] = {"mae", "rmse", "r2", NULL};

/* train.metrics: a list of accuracy, topK_accuracy (K >= 2), mae, rmse, r2; by default
 * accuracy for class labels, mae, rmse and r2 for real targets. */
static int read_metrics(kn_ctx *ctx, const kn_config *cfg, kn_model *m) {
    const kn_cfg_section *ts = kn_cfg_find(cfg, "train");
    const char *names[KN_MAX_METRICS + 1];
    int n = 0, rc;
    if (ts && kn_cfg_get(ts, "metrics")) {
        if ((rc = kn_cfg_list(ctx, cfg, ts, "metrics", names, KN_MAX_METRICS, &n))) return rc;
    } else {
        const char *const *d = m->desc.target_real ? metric_names_real : metric_names_class;
        for (; d[n]; n++) names[n] = d[n];
    }
    m->nmetrics = 0;
    for (int i = 0; i < n; i++) {
        char w[256];
        const char *nm = names[i];
        int kind = -1;
        long k = 0;
        if (!strcmp(nm, "accuracy")) kind = KN_METRIC_ACCURACY, k = 1;
        else if (!strcmp(nm, "mae")) kind = KN_METRIC_MAE;
        else if (!strcmp(nm, "rmse")) kind = KN_METRIC_RMSE;
        else if (!strcmp(nm, "r2")) kind = KN_METRIC_R2;
        else if (!strncmp(nm, "top", 3)) {
            char *end;
            k = strtol(nm + 3, &end, 10);
            if (end != nm + 3 && !strcmp(end, "_accuracy") && k >= 1 && k <= 1000000) kind = KN_METRIC_ACCURACY;
        }
        if (kind < 0)
            return kn_err(ctx, KN_ERR_CONFIG, "%s: [train] metrics: '%s' is not a metric (accuracy, topK_accuracy such as top5_accuracy, mae, rmse, r2)",
                          kn_cfg_where(cfg, ts, "metrics", w, sizeof w), nm);
        if ((kind == KN_METRIC_ACCURACY) == (m->desc.target_real != 0))
            return kn_err(ctx, KN_ERR_CONFIG, "%s: [train] metrics: '%s' needs %s, but the data's targets are %s",
                          kn_cfg_where(cfg, ts, "metrics", w, sizeof w), nm, kind == KN_METRIC_ACCURACY ? "class labels" : "real values",
                          m->desc.target_real ? "real values (regression)" : "class labels");
        if (kind == KN_METRIC_ACCURACY && k > m->nclasses)
            return kn_err(ctx, KN_ERR_CONFIG, "%s: [train] metrics: %s needs at least %ld classes, the model has %d",
                          kn_cfg_where(cfg, ts, "metrics", w, sizeof w), nm, k, m->nclasses);
        for (int j = 0; j < m->nmetrics; j++)
            if (!strcmp(m->metric[j].name, nm))
                return kn_err(ctx, KN_ERR_CONFIG, "%s: [train] metrics: '%s' is listed twice", kn_cfg_where(cfg, ts, "metrics", w, sizeof w), nm);
        kn_model_metric *mm = &m->metric[m->nmetrics++];
        kn_strlcpy(mm->name, kind == KN_METRIC_ACCURACY && k == 1 ? "accuracy" : nm, sizeof mm->name);
        mm->kind = kind;
        mm->vid = (int)k; /* K for accuracy until the node is made */
    }
    return KN_OK;
}

/* The eval graph: its loss (the train graph's) and the metrics, on the same targets. */
static int add_loss_and_metrics_eval(kn_ctx *ctx, const kn_config *cfg, kn_model *m, kn_graph *g, int64_t batch, int prev,
                                     const kn_shape *want) {
    (void)cfg;
    int y = -1, loss = -1, rc;
    if ((rc = add_loss_node(ctx, m, g, batch, prev, want, &y, &m->cw_eval, &loss))) return rc;
    kn_g_keep(g, loss);
    m->labels_eval = m->loss_kind == KN_LOSS_CE ? y : -1;
    m->targets_eval = m->loss_kind == KN_LOSS_CE ? -1 : y;
    if (!m->desc.target_real && m->labels_eval < 0) {
        m->labels_eval = kn_g_input(g, "labels", KN_I32, labels_shape(m, batch));
        if (m->labels_eval < 0) return kn_err(ctx, KN_ERR_NOMEM, "out of memory");
    }
    for (int i = 0; i < m->nmetrics; i++) {
        kn_model_metric *mm = &m->metric[i];
        char lname[64];
        snprintf(lname, sizeof lname, "metric.%s", mm->name);
        kn_g_set_layer(g, lname);
        kn_attrs a = {0};
        const kn_op *op;
        int in[2] = {prev, mm->kind == KN_METRIC_ACCURACY ? m->labels_eval : m->targets_eval};
        switch (mm->kind) {
        case KN_METRIC_ACCURACY:
            op = mm->vid == 1 ? &kn_op_accuracy : &kn_op_topk_accuracy;
            a.i[0] = mm->vid;
            break;
        case KN_METRIC_MAE: op = &kn_op_mae; break;
        case KN_METRIC_RMSE: op = &kn_op_rmse; break;
        default: op = &kn_op_r2; break;
        }
        int v = kn_g_op(ctx, g, op, in, 2, &a);
        if (v < 0) return ctx->code;
        kn_g_keep(g, v);
        mm->vid = kn_model_output(g, lname); /* found by name */
        if (mm->vid != v) return kn_err(ctx, KN_ERR_INTERNAL, "metric output %s not found by name", lname);
    }
    m->loss_eval = kn_model_output(g, "loss");
    if (m->loss_eval != loss) return kn_err(ctx, KN_ERR_INTERNAL, "the eval graph's loss is not found by name");
    kn_g_set_layer(g, "");
    return KN_OK;
}

/* by_name[0..*nby_name) (room for MAX_LAYERS * MAX_LAYER_INPUTS): the results of the
 * layers that a later layer's `input = ...` names (the fusion pass leaves their relus
 * alone) */
static int build_graph(kn_ctx *ctx, const kn_config *cfg, kn_model *m, kn_graph *g, int64_t batch, int *x_out,
                       int *y_out, int *out_out, int *loss_out, int *by_name, int *nby_name) {
    char w[256];
    named *names = calloc(MAX_LAYERS + 1, sizeof *names);
    if (!names) return kn_err(ctx, KN_ERR_NOMEM, "out of memory");
    int nnames = 0, x = -1, rc = KN_OK;
    const kn_data_desc *D = &m->desc;
    int have_input_name = 0;
    for (int i = 0; i < D->ninputs; i++) have_input_name |= !strcmp(D->in[i].name, "input");
    for (int i = 0; i < D->ninputs; i++) {
        kn_shape sh;
        sh.nd = D->in[i].shape.nd + 1;
        sh.d[0] = batch;
        for (int k = 0; k < D->in[i].shape.nd; k++) sh.d[k + 1] = D->in[i].shape.d[k];
        int v = kn_g_input(g, D->in[i].name, D->in[i].dtype, sh);
        if (v < 0) { free(names); return kn_err(ctx, KN_ERR_NOMEM, "out of memory"); } /* the shape was checked */
        if (i == 0) x = v;
        names[nnames].name = D->in[i].name;
        names[nnames++].vid = v;
    }
    if (!have_input_name) { /* the first data input is also `input` */
        names[nnames].name = "input";
        names[nnames++].vid = x;
    }
    int prev = x, nlayers = 0;
    for (int s = 0; s < cfg->nsec; s++) {
        const kn_cfg_section *sec = &cfg->sec[s];
        if (kn_is_reserved_section(sec->name)) continue;
        static const char *const reserved_values[] = {"input", "loss", "labels", "targets", "class_weights"};
        if (!strncmp(sec->name, "metric.", 7)) {
            rc = kn_err(ctx, KN_ERR_CONFIG, "%s: layer names starting with 'metric.' are kept for the model's metrics; choose another name",
                        kn_cfg_where(cfg, sec, NULL, w, sizeof w));
            goto out;
        }
        for (int i = 1; i < 5; i++)
            if (!strcmp(sec->name, reserved_values[i])) {
                rc = kn_err(ctx, KN_ERR_CONFIG, "%s: '%s' names one of the model's own values (its loss and targets); choose another layer name",
                            kn_cfg_where(cfg, sec, NULL, w, sizeof w), sec->name);
                goto out;
            }
        for (int i = 0; i < D->ninputs + 1; i++)
            if (!strcmp(sec->name, i < D->ninputs ? D->in[i].name : "input")) {
                rc = kn_err(ctx, KN_ERR_CONFIG, "%s: '%s' is the name of one of the model's inputs; choose another layer name",
                            kn_cfg_where(cfg, sec, NULL, w, sizeof w), sec->name);
                goto out;
            }
        if (nnames >= MAX_LAYERS) { rc = kn_err(ctx, KN_ERR_CONFIG, "too many layers (at most %d)", MAX_LAYERS); goto out; }
        int t;
        if ((rc = check_layer_section(ctx, cfg, sec, &t))) goto out;
        const layer_def *def = &layers[t];

        layer_ctx L = {ctx, cfg, sec, g, sec->name, {0}, 0};
        if (kn_cfg_get(sec, "input")) {
            const char *in_names[MAX_LAYER_INPUTS];
            int nin;
            if ((rc = kn_cfg_list(ctx, cfg, sec, "input", in_names, MAX_LAYER_INPUTS, &nin))) goto out;
            for (int i = 0; i < nin; i++) {
                int found = -1;
                for (int j = 0; j < nnames; j++)
                    if (!strcmp(names[j].name, in_names[i])) found = names[j].vid;
                if (found < 0) {
                    char avail[256] = "";
                    for (int j = 0, len = 0; j < D->ninputs && len < (int)sizeof avail - 40; j++)
                        len += snprintf(avail + len, sizeof avail - (size_t)len, "%s'%s'", j ? ", " : "", D->in[j].name);
                    rc = kn_err(ctx, KN_ERR_CONFIG, "%s: [%s] input '%s' is neither one of the data's inputs (%s) nor an earlier layer (layers can only read layers above them)",
                                kn_cfg_where(cfg, sec, "input", w, sizeof w), sec->name, in_names[i], avail);
                    goto out;
                }
                L.in[L.nin++] = found;
                by_name[(*nby_name)++] = found;
            }
        } else {
            L.in[L.nin++] = prev;
        }
        kn_g_set_layer(g, sec->name);
        int recompute = 0;
        if ((rc = layer_recompute(ctx, cfg, sec, &recompute))) goto out;
        if (recompute) { /* one recompute group per block, else per layer */
            const kn_cfg_kv *blk = kn_cfg_get(sec, "block");
            int grp = s;
            for (int t = 0; blk && t < s; t++) {
                const kn_cfg_kv *b2 = kn_cfg_get(&cfg->sec[t], "block");
                if (b2 && !kn_is_reserved_section(cfg->sec[t].name) && !strcmp(b2->value, blk->value)) { grp = t; break; }
            }
            recompute = grp + 1;
        }
        kn_g_set_recompute(g, recompute);
        int outv = -1;
        if ((rc = def->build(&L, &outv))) {
            if (strncmp(ctx->msg, cfg->path, strlen(cfg->path)) != 0 && strncmp(ctx->msg, "--set", 5) != 0) {
                char sh[64];
                kn_err_prefix(ctx, "%s: layer '%s' (%s) with input %s: ", kn_cfg_where(cfg, sec, NULL, w, sizeof w),
                              sec->name, def->type, kn_shape_str(kn_shp(g, L.in[0]), sh, sizeof sh));
            }
            goto out;
        }
        names[nnames].name = sec->name;
        names[nnames++].vid = outv;
        prev = outv;
        nlayers++;
    }
    if (nlayers == 0) {
        rc = kn_err(ctx, KN_ERR_CONFIG, "%s: no layers: add sections like [fc1] with type = linear", cfg->path);
        goto out;
    }
    *x_out = x;
    *out_out = prev;
    if (g->training) {
        const kn_shape *os = kn_shp(g, prev);
        char sh[64], sh2[64];
        kn_shape want; /* (batch, classes), (batch, positions..., classes) or (batch, target...) */
        if (D->target_real) {
            want.nd = D->target.nd + 1;
            want.d[0] = batch;
            for (int k = 0; k < D->target.nd; k++) want.d[k + 1] = D->target.d[k];
            if (want.nd == 1) want = kn_shape2(batch, 1); /* one value per sample: (batch, 1) */
        } else {
            want = logits_shape(m, batch);
        }
        if (!kn_shape_eq(os, &want)) {
            if (D->target_real)
                rc = kn_err(ctx, KN_ERR_SHAPE, "%s: the last layer's output is %s but the data's targets are %s: end with a linear layer with out = %lld",
                            cfg->path, kn_shape_str(os, sh, sizeof sh), kn_shape_str(&want, sh2, sizeof sh2),
                            (long long)want.d[want.nd - 1]);
            else if (D->target.nd == 0)
                rc = kn_err(ctx, KN_ERR_SHAPE, "%s: the last layer's output is %s but the data has %d classes: expected [%lld,%d] (end with a linear layer with out = %d)",
                            cfg->path, kn_shape_str(os, sh, sizeof sh), m->nclasses, (long long)batch, m->nclasses, m->nclasses);
            else
                rc = kn_err(ctx, KN_ERR_SHAPE, "%s: the last layer's output is %s but the data has one label per position and %d classes: "
                            "expected %s (class axis last: end with a linear layer with out = %d on a [batch, positions, features] input)",
                            cfg->path, kn_shape_str(os, sh, sizeof sh), m->nclasses, kn_shape_str(&want, sh2, sizeof sh2), m->nclasses);
            goto out;
        }
        if ((rc = add_loss(ctx, m, g, batch, prev, &want, y_out, loss_out))) goto out;
        kn_g_keep(g, prev);
    } else {
        kn_g_keep(g, prev);
        kn_shape want = D->target_real ? kn_shape2(batch, m->target_numel) : logits_shape(m, batch);
        const kn_shape *os = kn_shp(g, prev);
        /* the eval graph measures when its output fits the targets (a model whose output
         * does not is refused by the train graph's check) */
        if (kn_shape_eq(os, &want) && (rc = add_loss_and_metrics_eval(ctx, cfg, m, g, batch, prev, &want))) goto out;
    }
out:
    free(names);
    return rc;
}

/* train.loss and its options; a key the chosen loss does not use is an error */
static int read_loss(kn_ctx *ctx, const kn_config *cfg, kn_model *m) {
    static const char *const loss_names[] = {"cross_entropy", "mse", "l1", "huber", "bce", NULL};
    const kn_cfg_section *ts = kn_cfg_find(cfg, "train");
    char w[256];
    int lk, rc;
    const int real = m->desc.target_real;
    if ((rc = kn_cfg_enum(ctx, cfg, ts, "loss", loss_names, real ? KN_LOSS_MSE : KN_LOSS_CE, &lk))) return rc;
    if (real && lk == KN_LOSS_CE)
        return kn_err(ctx, KN_ERR_CONFIG, "%s: [train] loss = cross_entropy needs class labels, but the data's targets are real values "
                      "(regression): use loss = mse, l1, huber or bce, or data.target_type = class", kn_cfg_where(cfg, ts, "loss", w, sizeof w));
    m->loss_kind = (kn_loss_kind)lk;
    static const struct { const char *key; int loss; } own[] = {
        {"label_smoothing", KN_LOSS_CE}, {"class_weights", KN_LOSS_CE}, {"huber_delta", KN_LOSS_HUBER}};
    for (int i = 0; i < 3; i++)
        if (ts && kn_cfg_get(ts, own[i].key) && lk != own[i].loss)
            return kn_err(ctx, KN_ERR_CONFIG, "%s: [train] %s has no effect with loss = %s: it applies to loss = %s; remove it",
                          kn_cfg_where(cfg, ts, own[i].key, w, sizeof w), own[i].key, loss_names[lk], loss_names[own[i].loss]);
    if ((rc = kn_cfg_float(ctx, cfg, ts, "label_smoothing", 0.0, 0.0, 1.0, &m->label_smoothing))) return rc;
    if ((rc = kn_cfg_float(ctx, cfg, ts, "huber_delta", 1.0, 1e-30, 1e30, &m->huber_delta))) return rc;
    if (ts && kn_cfg_get(ts, "class_weights")) {
        const char *items[4097];
        int n;
        if ((rc = kn_cfg_list(ctx, cfg, ts, "class_weights", items, 4096, &n))) return rc;
        if (n != m->nclasses)
            return kn_err(ctx, KN_ERR_CONFIG, "%s: [train] class_weights has %d values, but the model has %d classes: give one weight per class",
                          kn_cfg_where(cfg, ts, "class_weights", w, sizeof w), n, m->nclasses);
        m->class_weights = malloc((size_t)n * sizeof(float));
        if (!m->class_weights) return kn_err(ctx, KN_ERR_NOMEM, "out of memory");
        for (int i = 0; i < n; i++) {
            char *end;
            errno = 0;
            double v = strtod(items[i], &end);
            if (*end || end == items[i] || errno || !(v >= 0) || v > 1e30)
                return kn_err(ctx, KN_ERR_CONFIG, "%s: [train] class_weights: '%s' (class %d) is not a weight (expected a number >= 0)",
                              kn_cfg_where(cfg, ts, "class_weights", w, sizeof w), items[i], i);
            m->class_weights[i] = (float)v;
        }
    }
    return KN_OK;
}

void kn_data_desc_image(kn_data_desc *d, int channels, int height, int width, int nclasses) {
    memset(d, 0, sizeof *d);
    d->ninputs = 1;
    kn_strlcpy(d->in[0].name, "input", sizeof d->in[0].name);
    d->in[0].dtype = KN_F32;
    d->in[0].shape.nd = 3;
    d->in[0].shape.d[0] = channels;
    d->in[0].shape.d[1] = height;
    d->in[0].shape.d[2] = width;
    d->target.nd = 0;
    d->nclasses = nclasses;
}

kn_model_opts kn_model_defaults(void) {
    kn_model_opts o = {.fuse = 1, .blocked_layout = 1};
    return o;
}

/* the graph passes before planning: fusion (graph/fuse.c), with the ids the model holds */
static int run_passes(kn_ctx *ctx, kn_graph *g, const kn_model_opts *o, const int *by_name, int nby_name, int *x, int *y,
                      int *out, int *loss) {
    kn_fuse_opts fo = kn_fuse_defaults();
    fo.relu = o->fuse;
    fo.named = by_name;
    fo.nnamed = nby_name;
    int ids[4] = {*x, *y, *out, *loss};
    if (kn_g_fuse(ctx, g, &fo, ids, 4) < 0) return ctx->code;
    *x = ids[0];
    *y = ids[1];
    *out = ids[2];
    *loss = ids[3];
    return KN_OK;
}

int kn_model_plan_opts(kn_ctx *ctx, const kn_config *cfg, int64_t batch, int64_t eval_batch, int channels, int height,
                       int width, int nclasses, const kn_model_opts *opts, kn_model *m) {
    kn_data_desc d;
    kn_data_desc_image(&d, channels, height, width, nclasses);
    return kn_model_plan_desc_opts(ctx, cfg, batch, eval_batch, &d, opts, m);
}

int kn_model_plan_desc(kn_ctx *ctx, const kn_config *cfg, int64_t batch, int64_t eval_batch, const kn_data_desc *desc,
                       kn_model *m) {
    return kn_model_plan_desc_opts(ctx, cfg, batch, eval_batch, desc, NULL, m);
}

/* After the graph passes (which renumber values): the ids the model holds, found by name. */
static int find_input(const kn_graph *g, const char *name) {
    for (int v = 0; v < g->nv; v++)
        if (g->v[v].kind == KN_VAL_INPUT && !strcmp(g->v[v].name, name)) return v;
    return -1;
}

static int refind_ids(kn_ctx *ctx, kn_model *m) {
    if (m->train) m->cw_train = find_input(m->train, "class_weights");
    kn_graph *g = m->eval;
    m->cw_eval = find_input(g, "class_weights");
    m->labels_eval = find_input(g, "labels");
    m->targets_eval = find_input(g, "targets");
    if (m->loss_eval < 0) return KN_OK; /* the output does not fit the targets: no loss */
    m->loss_eval = kn_model_output(g, "loss");
    if (m->loss_eval < 0) return kn_err(ctx, KN_ERR_INTERNAL, "the eval graph's loss is not found by name");
    for (int i = 0; i < m->nmetrics; i++) {
        char lname[64];
        snprintf(lname, sizeof lname, "metric.%s", m->metric[i].name);
        m->metric[i].vid = kn_model_output(g, lname);
        if (m->metric[i].vid < 0) return kn_err(ctx, KN_ERR_INTERNAL, "metric output %s not found by name", lname);
    }
    return KN_OK;
}

int kn_model_plan_desc_opts(kn_ctx *ctx, const kn_config *cfg, int64_t batch, int64_t eval_batch, const kn_data_desc *desc,
                            const kn_model_opts *opts, kn_model *m) {
    const kn_model_opts o = opts ? *opts : kn_model_defaults();
    memset(m, 0, sizeof *m);
    kn_store_init(&m->store);
    m->batch = batch;
    m->eval_batch = eval_batch;
    m->desc = *desc;
    const kn_input_desc *in0 = &desc->in[0];
    if (desc->ninputs >= 1 && in0->shape.nd == 3) {
        m->channels = (int)in0->shape.d[0];
        m->height = (int)in0->shape.d[1];
        m->width = (int)in0->shape.d[2];
    }
    m->nclasses = desc->target_real ? 0 : desc->nclasses;
    m->target_numel = kn_shape_numel(&desc->target);
    m->x_train = m->y_train = m->loss = m->x_eval = m->out_eval = m->out_train = -1;
    if (desc->ninputs < 1 || desc->ninputs > KN_MAX_INPUTS)
        return kn_err(ctx, KN_ERR_INVALID, "%s: the data has %d inputs (1 to %d are supported)", cfg->path, desc->ninputs, KN_MAX_INPUTS);
    if (batch < 0 || eval_batch < 1)
        return kn_err(ctx, KN_ERR_INVALID, "%s: batch size %lld, evaluation batch size %lld (need 0 or more, 1 or more)", cfg->path,
                      (long long)batch, (long long)eval_batch);
    {   /* sizes from the data files and the config: checked before the graphs use them */
        char what[200];
        const int64_t B = batch > eval_batch ? batch : eval_batch;
        for (int i = 0; i < desc->ninputs; i++) {
            kn_shape s;
            s.nd = desc->in[i].shape.nd + 1;
            s.d[0] = B;
            for (int k = 0; k < desc->in[i].shape.nd && k < KN_MAX_DIMS - 1; k++) s.d[k + 1] = desc->in[i].shape.d[k];
            if (desc->in[i].shape.nd > KN_MAX_DIMS - 1)
                return kn_err(ctx, KN_ERR_SHAPE, "%s: the input '%s' has %d dimensions per sample (at most %d)", cfg->path,
                              desc->in[i].name, desc->in[i].shape.nd, KN_MAX_DIMS - 1);
            if (desc->ninputs == 1 && s.nd == 4)
                snprintf(what, sizeof what, "%s: the model input [batch, channels, rows, cols]", cfg->path);
            else
                snprintf(what, sizeof what, "%s: the model input '%s' [batch, ...]", cfg->path, desc->in[i].name);
            if (kn_shape_check(ctx, &s, 1, sizeof(float), what, NULL)) return ctx->code;
        }
        if (!desc->target_real && desc->target.nd > KN_MAX_DIMS - 2)
            return kn_err(ctx, KN_ERR_CONFIG, "%s: the data's class labels are %d-D per sample; one label per sample or per "
                          "position of up to %d axes is supported", cfg->path, desc->target.nd, KN_MAX_DIMS - 2);
        kn_shape out = desc->target_real ? kn_shape2(B, m->target_numel) : logits_shape(m, B);
        snprintf(what, sizeof what, desc->target_real ? "%s: the targets [batch, values]" : "%s: the logits [batch, (positions,) classes]", cfg->path);
        if (kn_shape_check(ctx, &out, 1, sizeof(float), what, NULL)) return ctx->code;
        if (desc->target_real && desc->target.nd > 1)
            return kn_err(ctx, KN_ERR_CONFIG, "%s: the data's real-valued targets are %d-D per sample; a vector (k values per sample) is supported",
                          cfg->path, desc->target.nd);
    }
    int rc;
    m->loss_eval = m->labels_eval = m->targets_eval = m->cw_eval = m->cw_train = -1;
    if ((rc = read_loss(ctx, cfg, m)) || (rc = read_metrics(ctx, cfg, m))) return rc;
    int nnamed = 0, *by_name = malloc((size_t)MAX_LAYERS * MAX_LAYER_INPUTS * sizeof *by_name);
    if (!by_name) return kn_err(ctx, KN_ERR_NOMEM, "out of memory");
    if (batch > 0) {
        m->train = kn_g_new(&m->store, 1);
        if (!m->train) { free(by_name); return kn_err(ctx, KN_ERR_NOMEM, "out of memory"); }
        m->train->blocking = o.blocked_layout;
        nnamed = 0;
        if (!rc) rc = build_graph(ctx, cfg, m, m->train, batch, &m->x_train, &m->y_train, &m->out_train, &m->loss, by_name, &nnamed);
        if (!rc) rc = run_passes(ctx, m->train, &o, by_name, nnamed, &m->x_train, &m->y_train, &m->out_train, &m->loss);
        if (rc) { free(by_name); return rc; }
    }
    m->eval = kn_g_new(&m->store, 0);
    if (!m->eval) { free(by_name); return kn_err(ctx, KN_ERR_NOMEM, "out of memory"); }
    m->eval->blocking = o.blocked_layout;
    int dummy_y = -1, dummy_loss = -1;
    nnamed = 0;
    rc = build_graph(ctx, cfg, m, m->eval, eval_batch, &m->x_eval, &dummy_y, &m->out_eval, &dummy_loss, by_name, &nnamed);
    if (!rc) rc = run_passes(ctx, m->eval, &o, by_name, nnamed, &m->x_eval, &dummy_y, &m->out_eval, &dummy_loss);
    free(by_name);
    if (rc) return rc;
    if ((rc = refind_ids(ctx, m))) return rc;
    if (m->train && (rc = kn_g_plan(ctx, m->train))) return rc;
    if ((rc = kn_g_plan(ctx, m->eval))) return rc;
    return KN_OK;
}

int kn_model_plan(kn_ctx *ctx, const kn_config *cfg, int64_t batch, int64_t eval_batch, int channels, int height,
                  int width, int nclasses, kn_model *m) {
    kn_data_desc d;
    kn_data_desc_image(&d, channels, height, width, nclasses);
    return kn_model_plan_desc(ctx, cfg, batch, eval_batch, &d, m);
}

int kn_model_alloc(kn_ctx *ctx, kn_model *m) {
    int rc;
    if (m->arena) return KN_OK;
    if ((rc = kn_store_alloc(ctx, &m->store))) return rc;
    size_t a = m->eval->arena_bytes;
    if (m->train && m->train->arena_bytes > a) a = m->train->arena_bytes;
    m->arena = m->eval->be->alloc(a); /* the graphs' backend's memory: the eval graph is always there */
    if (!m->arena) return kn_err(ctx, KN_ERR_NOMEM, "cannot allocate the %.1f MiB arena", (double)a / 1048576.0);
    m->arena_bytes = a;
    if (m->train && (rc = kn_g_bind(ctx, m->train, m->arena, a))) return rc;
    return kn_g_bind(ctx, m->eval, m->arena, a);
}

int kn_model_build_desc(kn_ctx *ctx, const kn_config *cfg, int64_t batch, int64_t eval_batch, const kn_data_desc *desc,
                        kn_model *m) {
    int rc = kn_model_plan_desc(ctx, cfg, batch, eval_batch, desc, m);
    return rc ? rc : kn_model_alloc(ctx, m);
}

int kn_model_build(kn_ctx *ctx, const kn_config *cfg, int64_t batch, int64_t eval_batch, int channels, int height,
                   int width, int nclasses, kn_model *m) {
    return kn_model_build_opts(ctx, cfg, batch, eval_batch, channels, height, width, nclasses, NULL, m);
}

int kn_model_build_opts(kn_ctx *ctx, const kn_config *cfg, int64_t batch, int64_t eval_batch, int channels, int height,
                        int width, int nclasses, const kn_model_opts *opts, kn_model *m) {
    int rc = kn_model_plan_opts(ctx, cfg, batch, eval_batch, channels, height, width, nclasses, opts, m);
    return rc ? rc : kn_model_alloc(ctx, m);
}

void kn_model_free(kn_model *m) {
    free(m->class_weights);
    if (m->arena && m->eval) m->eval->be->release(m->arena);
    kn_g_free(m->train);
    kn_g_free(m->eval);
    kn_store_free(&m->store);
    memset(m, 0, sizeof *m);
}

void kn_model_init(kn_model *m, uint64_t seed) {
    kn_rng r;
    kn_rng_seed(&r, seed ^ 0x1234567ULL);
    kn_store_init_values(&m->store, &r);
}

/* labels or real targets into graph g's target inputs: labels (int32), targets (float32:
 * real values as they are, one-hot rows of the labels), class weights */
static void set_targets(const kn_model *m, kn_graph *g, int64_t batch, int labels, int targets, int cw, const void *y) {
    if (m->desc.target_real) {
        if (targets >= 0) memcpy(kn_ptr(g, targets), y, (size_t)(batch * m->target_numel) * sizeof(float));
        return;
    }
    const int32_t *lab = y;
    const int64_t R = batch * m->target_numel; /* labels: one per sample or per position */
    if (labels >= 0) memcpy(kn_iptr(g, labels), lab, (size_t)R * sizeof(int32_t));
    if (targets >= 0) {
        float *t = kn_ptr(g, targets);
        memset(t, 0, (size_t)(R * m->nclasses) * sizeof(float));
        for (int64_t i = 0; i < R; i++)
            if (lab[i] >= 0 && lab[i] < m->nclasses) t[i * m->nclasses + lab[i]] = 1.0f;
    }
    if (cw >= 0) memcpy(kn_ptr(g, cw), m->class_weights, (size_t)m->nclasses * sizeof(float));
}

void kn_model_set_targets(kn_model *m, const void *targets) {
    const int ce = m->loss_kind == KN_LOSS_CE;
    set_targets(m, m->train, m->batch, ce ? m->y_train : -1, ce ? -1 : m->y_train, m->cw_train, targets);
}

void kn_model_set_eval_targets(kn_model *m, const void *targets) {
    set_targets(m, m->eval, m->eval_batch, m->labels_eval, m->targets_eval, m->cw_eval, targets);
}

float kn_model_forward_backward(kn_model *m, kn_rt *rt) {
    kn_g_forward(m->train, rt);
    kn_g_backward(m->train, rt, NULL);
    return kn_ptr(m->train, m->loss)[0];
}
