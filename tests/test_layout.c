/* Channel-blocked layouts and fused ops give the results of the plain graph.
 *
 * The gradient checks (test_gradcheck) check every op on plain tensors, where the
 * CPU backend never blocks: a one-op graph's input is a parameter. This test checks
 * the blocked kernels (backend/cpu/layout.h) and the fused batchnorm_relu and
 * linear_relu ops against
 * that reference: small CNNs whose channel counts are multiples of the block are
 * built four ways — blocked or plain layouts, ReLU fused or not
 * (kn_model_opts: blocked_layout, fuse) — and one training step (forward, backward, Adam) from the same weights and
 * batch must give the same loss, parameter gradients, BatchNorm running statistics
 * and evaluation-graph logits, up to float rounding (different summation orders). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/layout.h"
#include "config/config.h"
#include "nn/model.h"
#include "ops/fused.h"
#include "testutil.h"

#define TOL 2e-5

typedef struct {
    float loss;
    float *grad, *state, *logits, *param;
    int64_t nparam, nstate, nlogits;
    int blocked_nodes, fused_nodes;
} result;

static const char *HEAD = "[train]\nloss = cross_entropy\n";

static void fill(float *x, int64_t n, uint64_t seed) {
    kn_rng r;
    kn_rng_seed(&r, seed);
    for (int64_t i = 0; i < n; i++) x[i] = (float)kn_rng_normal(&r);
}

static int run(const char *name, const char *body, int blocked, int fused, result *out) {
    memset(out, 0, sizeof *out);
    kn_model_opts mo = kn_model_defaults();
    mo.blocked_layout = blocked;
    mo.fuse = fused;
    kn_ctx *ctx = kn_ctx_new();
    char *ini = malloc(strlen(HEAD) + strlen(body) + 1);
    strcpy(ini, HEAD);
    strcat(ini, body);
    kn_config *cfg = NULL;
    kn_model m;
    const int64_t B = 6, H = 12, W = 12, K = 10;
    int rc = kn_config_parse_string(ctx, name, ini, &cfg);
    if (!rc) rc = kn_model_build_opts(ctx, cfg, B, B, 1, (int)H, (int)W, (int)K, &mo, &m);
    CHECK(rc == 0, "%s: %s", name, kn_ctx_message(ctx));
    if (rc) {
        kn_config_free(cfg);
        free(ini);
        kn_ctx_free(ctx);
        return rc;
    }
    kn_model_init(&m, 7);
    fill(kn_ptr(m.train, m.x_train), B * H * W, 11);
    int32_t labels[6] = {1, 4, 9, 0, 4, 7};
    kn_model_set_targets(&m, labels);
    kn_rt rt = {0};
    rt.seed = 3;
    out->loss = kn_model_forward_backward(&m, &rt);
    out->nparam = m.store.nparam;
    out->nstate = m.store.nstate;
    out->grad = malloc((size_t)out->nparam * sizeof(float));
    memcpy(out->grad, m.store.grad, (size_t)out->nparam * sizeof(float));
    out->state = malloc((size_t)(out->nstate + 1) * sizeof(float));
    memcpy(out->state, m.store.state, (size_t)out->nstate * sizeof(float));
    /* evaluation graph (running statistics) on the same images */
    memcpy(kn_ptr(m.eval, m.x_eval), kn_ptr(m.train, m.x_train), (size_t)(B * H * W) * sizeof(float));
    kn_rt ert = {0};
    kn_g_forward(m.eval, &ert);
    out->nlogits = B * K;
    out->logits = malloc((size_t)out->nlogits * sizeof(float));
    memcpy(out->logits, kn_ptr(m.eval, m.out_eval), (size_t)out->nlogits * sizeof(float));
    for (int k = 0; k < m.train->nn; k++) {
        const kn_node *n = &m.train->n[k];
        if (n->op == &kn_op_batchnorm_relu || n->op == &kn_op_linear_relu) out->fused_nodes++;
        if (kn_layout(m.train, n->out[0])) out->blocked_nodes++;
    }
    kn_model_free(&m);
    kn_config_free(cfg);
    free(ini);
    kn_ctx_free(ctx);
    return 0;
}

static double max_rel(const float *a, const float *b, int64_t n) {
    double scale = 1e-6, err = 0;
    for (int64_t i = 0; i < n; i++) scale = fmax(scale, fabs((double)b[i]));
    for (int64_t i = 0; i < n; i++) err = fmax(err, fabs((double)a[i] - (double)b[i]));
    return err / scale;
}

static void compare(const char *what, const result *a, const result *ref) {
    CHECK(fabs((double)a->loss - (double)ref->loss) <= TOL * fabs((double)ref->loss), "%s: loss %.9g vs %.9g", what,
          (double)a->loss, (double)ref->loss);
    CHECK(a->nparam == ref->nparam && a->nstate == ref->nstate, "%s: different stores", what);
    if (a->nparam != ref->nparam || a->nstate != ref->nstate) return;
    double eg = max_rel(a->grad, ref->grad, a->nparam), es = max_rel(a->state, ref->state, a->nstate);
    double el = max_rel(a->logits, ref->logits, a->nlogits);
    CHECK(eg <= TOL, "%s: parameter gradients differ by %.3g of their scale", what, eg);
    CHECK(es <= TOL, "%s: running statistics differ by %.3g", what, es);
    CHECK(el <= TOL, "%s: evaluation logits differ by %.3g", what, el);
    if (getenv("KN_TEST_VERBOSE"))
        printf("  %-34s grad %.2e  state %.2e  logits %.2e\n", what, eg, es, el);
}

static void release(result *r) {
    free(r->grad);
    free(r->state);
    free(r->logits);
}

static void check_model(const char *name, const char *body, int expect_fused) {
    result ref, r;
    if (run(name, body, 0, 0, &ref)) return;
    CHECK(ref.blocked_nodes == 0, "%s: plain run has %d blocked values", name, ref.blocked_nodes);
    CHECK(ref.fused_nodes == 0, "%s: unfused run has %d fused nodes", name, ref.fused_nodes);
    char what[128];
    for (int variant = 0; variant < 3; variant++) {
        int blocked = variant != 1, fused = variant != 2;
        if (run(name, body, blocked, fused, &r)) continue;
        snprintf(what, sizeof what, "%s %s %s", name, blocked ? "blocked" : "plain", fused ? "fused" : "unfused");
        if (blocked && kn_cpu_block())
            CHECK(r.blocked_nodes > 0, "%s: no value is stored blocked", what);
        if (fused) CHECK(r.fused_nodes == expect_fused, "%s: %d fused nodes, want %d", what, r.fused_nodes, expect_fused);
        compare(what, &r, &ref);
        release(&r);
    }
    release(&ref);
}

int main(void) {
    if (!kn_cpu_block()) printf("this CPU has no AVX2/AVX-512: blocked layouts are off, plain runs only\n");
    kn_set_threads(2);
    /* the example CNN's structure with 16/32 channels */
    check_model("cnn",
                "[conv1]\ntype = conv2d\nout_channels = 16\nkernel = 3\npadding = 1\nbias = false\n"
                "[bn1]\ntype = batchnorm\n[relu1]\ntype = relu\n[pool1]\ntype = maxpool2d\nkernel = 2\n"
                "[conv2]\ntype = conv2d\nout_channels = 32\nkernel = 3\npadding = 1\nbias = false\n"
                "[bn2]\ntype = batchnorm\nactivation = relu\n[pool2]\ntype = maxpool2d\nkernel = 2\n"
                "[flat]\ntype = flatten\n[fc0]\ntype = linear\nout = 24\n[relu3]\ntype = relu\n"
                "[fc1]\ntype = linear\nout = 16\nactivation = relu\n[fc2]\ntype = linear\nout = 10\n",
                4);
    /* overlapping, padded pooling; conv with bias and stride; relu without batchnorm;
     * a convolution whose output channels are not a multiple of the block */
    check_model("cnn-b",
                "[conv1]\ntype = conv2d\nout_channels = 16\nkernel = 3\npadding = 1\n"
                "[relu0]\ntype = relu\n"
                "[conv2]\ntype = conv2d\nout_channels = 32\nkernel = 3\nstride = 2\npadding = 1\n"
                "[bn1]\ntype = batchnorm\n[relu1]\ntype = relu\n"
                "[pool1]\ntype = maxpool2d\nkernel = 3\nstride = 2\npadding = 1\n"
                "[conv3]\ntype = conv2d\nout_channels = 12\nkernel = 1\n"
                "[flat]\ntype = flatten\n[fc1]\ntype = linear\nout = 10\n",
                1);
    /* a blocked tensor read by two layers (a convolution and, through BatchNorm and
     * ReLU, a residual add, which is plain: the add's inputs stay plain) */
    check_model("branch",
                "[conv1]\ntype = conv2d\nout_channels = 16\nkernel = 3\npadding = 1\n"
                "[bn1]\ntype = batchnorm\n[relu1]\ntype = relu\n"
                "[conv2]\ntype = conv2d\nout_channels = 16\nkernel = 3\npadding = 1\n"
                "[conv3]\ntype = conv2d\nout_channels = 16\nkernel = 1\ninput = relu1\n"
                "[sum]\ntype = add\ninput = conv2, conv3\n"
                "[pool]\ntype = maxpool2d\nkernel = 2\n"
                "[flat]\ntype = flatten\n[fc1]\ntype = linear\nout = 10\n",
                1);
    /* a max-pool window of more than 256 positions (17x17: the argmax kept as int32, not
     * a byte), overlapping, on blocked activations */
    check_model("widepool",
                "[conv1]\ntype = conv2d\nout_channels = 16\nkernel = 3\npadding = 1\n"
                "[pool]\ntype = maxpool2d\nkernel = 17\nstride = 11\npadding = 8\n"
                "[flat]\ntype = flatten\n[fc1]\ntype = linear\nout = 10\n",
                0);
    /* the batchnorm's own result is read by a later layer: not fused */
    check_model("named",
                "[conv1]\ntype = conv2d\nout_channels = 16\nkernel = 3\npadding = 1\n"
                "[bn1]\ntype = batchnorm\n[relu1]\ntype = relu\n"
                "[conv2]\ntype = conv2d\nout_channels = 16\nkernel = 3\npadding = 1\n"
                "[conv3]\ntype = conv2d\nout_channels = 16\nkernel = 1\ninput = bn1\n"
                "[sum]\ntype = add\ninput = conv2, conv3\n"
                "[flat]\ntype = flatten\n[fc1]\ntype = linear\nout = 10\n",
                0);
    return kn_test_finish("test_layout");
}
