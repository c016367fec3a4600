/* Fuzz harness: config text -> settings -> model plan -> one training step.
 * The input is the text of a config file (any bytes). The model is planned for a
 * small synthetic input (1x8x8 images, 4 classes, batch at most 4); when its memory
 * plan is small (<= 32 MiB) and its forward FLOPs are modest (<= 2e8), it is
 * allocated and trained for one step (forward, backward, optimizer update) on
 * deterministic data derived from the input. Any crash, sanitizer report, leak or
 * abort is a finding; errors (kn_ctx) are the expected outcome for bad configs. */
#include "fuzz_common.h"

#include <math.h>

#include "kiln.h"
#include "nn/model.h"
#include "optim/optim.h"
#include "train/trainer.h"

enum { C = 1, H = 8, W = 8, CLASSES = 4, MAX_BATCH = 4 };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static int once;
    if (!once) { kn_set_threads(1); once = 1; }
    if (size > 1 << 16) return 0;
    char *text = malloc(size + 1);
    if (!text) return 0;
    memcpy(text, data, size);
    text[size] = 0;
    kn_ctx *ctx = kn_ctx_new();
    kn_config *cfg = NULL;
    kn_settings st;
    kn_model m;
    memset(&m, 0, sizeof m);
    int planned = 0;
    if (kn_config_parse_string(ctx, "fuzz.ini", text, &cfg) != KN_OK) goto out;
    if (kn_settings_read(ctx, cfg, &st) != KN_OK) goto out;
    if (kn_model_check_config(ctx, cfg) != KN_OK) goto out;
    int64_t batch = st.batch < MAX_BATCH ? st.batch : MAX_BATCH, eval_batch = st.eval_batch < MAX_BATCH ? st.eval_batch : MAX_BATCH;
    if (kn_model_plan(ctx, cfg, batch, eval_batch, C, H, W, CLASSES, &m) != KN_OK) goto out;
    planned = 1;
    /* a plan that is too big to run here is still a plan: its numbers must be sane */
    size_t arena = m.train->arena_bytes > m.eval->arena_bytes ? m.train->arena_bytes : m.eval->arena_bytes;
    if (m.store.nparam < 0 || m.store.nstate < 0 || arena > ((size_t)1 << 60)) abort();
    kn_layer_stats *ls = NULL;
    int nl = kn_g_layer_stats(m.train, &ls);
    double flops = 0;
    for (int i = 0; i < nl; i++) flops += ls[i].flops_fwd + ls[i].flops_bwd;
    free(ls);
    if (arena + (size_t)m.store.nparam * 16 + (size_t)m.store.nstate * 4 > ((size_t)32 << 20) || !(flops <= 2e8)) goto out;
    if (kn_model_alloc(ctx, &m) != KN_OK) goto out;
    kn_model_init(&m, st.seed);
    float *x = kn_ptr(m.train, m.x_train);
    int64_t nx = kn_numel(m.train, m.x_train);
    for (int64_t i = 0; i < nx; i++) x[i] = (float)(data[(size_t)i % size] % 17) / 8.0f - 1.0f;
    int32_t labels[MAX_BATCH];
    for (int i = 0; i < MAX_BATCH; i++) labels[i] = (int32_t)(data[(size_t)i % size] % CLASSES);
    kn_model_set_targets(&m, labels);
    kn_rt rt;
    memset(&rt, 0, sizeof rt);
    rt.seed = st.seed;
    rt.training = 1;
    float loss = kn_model_forward_backward(&m, &rt);
    (void)loss;
    kn_optimizer o;
    memset(&o, 0, sizeof o);
    if (kn_opt_init(ctx, &o, &st.opt, m.store.nparam) == KN_OK) {
        double gn = kn_global_norm(m.store.grad, m.store.nparam);
        if (st.opt.clip_norm > 0 && isfinite(gn)) kn_clip_grad(m.store.grad, m.store.nparam, st.opt.clip_norm);
        kn_opt_step(&o, m.store.param, m.store.grad, kn_opt_lr(&st.opt, 0));
        kn_opt_free(&o);
    }
    /* the evaluation graph too */
    float *xe = kn_ptr(m.eval, m.x_eval);
    int64_t ne = kn_numel(m.eval, m.x_eval);
    for (int64_t i = 0; i < ne; i++) xe[i] = (float)(i % 7) / 7.0f;
    rt.training = 0;
    kn_g_forward(m.eval, &rt);
out:
    (void)planned;
    kn_model_free(&m);
    kn_config_free(cfg);
    kn_ctx_free(ctx);
    free(text);
    return 0;
}
