/* Fuzz harness: the checkpoint reader, `kiln inspect` (also with --dump) and the
 * reading half of a resume (metadata validation, parameters, optimizer moments,
 * --init-from) into a small fixed model.
 * Input: one flags byte, then the file. flags & 1: inspect (and dump the first tensor);
 * flags & 2: resume-load and init-from into the model of MODEL below. */
#include "fuzz_common.h"

#include "kiln.h"
#include "nn/model.h"
#include "train/checkpoint.h"

static const char *MODEL =
    "[conv1]\ntype = conv2d\nout_channels = 2\nkernel = 3\npadding = 1\n"
    "[bn1]\ntype = batchnorm\nactivation = relu\n"
    "[flat]\ntype = flatten\n"
    "[fc]\ntype = linear\nout = 3\n";

static kn_model *model(kn_ctx *ctx) {
    static kn_model m;
    static int state; /* 0 not built, 1 built, -1 failed */
    if (state == 0) {
        kn_config *cfg = NULL;
        state = -1;
        if (kn_config_parse_string(ctx, "fuzz model", MODEL, &cfg) == KN_OK &&
            kn_model_build(ctx, cfg, 2, 2, 1, 4, 4, 3, &m) == KN_OK)
            state = 1;
        kn_config_free(cfg);
        if (state < 0) { fprintf(stderr, "fuzz_ckpt: cannot build the model: %s\n", kn_ctx_message(ctx)); abort(); }
    }
    return &m;
}

static const char *const KEYS[] = {"step", "epoch", "batch_in_epoch", "optimizer_t", "epoch_steps", "best_step",
                                   "optimizer_kind", "metrics_bytes", "guard_events", "bad_epochs", "threads", "seed",
                                   "epoch_loss_sum", "best_val_loss", "guard_lr_scale", "data_mean", "data_std", NULL};

static volatile double sink;

static void resume_load(kn_ctx *ctx, const kn_ckpt *c) {
    kn_model *m = model(ctx);
    kn_ctx_clear(ctx);
    if (kn_ckpt_check_train_meta(ctx, c) == KN_OK) {
        int64_t v;
        kn_ckpt_meta_int(ctx, c, "step", &v);
    }
    kn_ctx_clear(ctx);
    if (kn_ckpt_load_store(ctx, c, &m->store) == KN_OK) {
        /* the optimizer moments, as load_state reads them */
        for (int i = 0; i < m->store.n; i++) {
            const kn_store_entry *e = &m->store.e[i];
            if (e->is_state) continue;
            for (int k = 0; k < 2; k++) {
                char nm[160];
                snprintf(nm, sizeof nm, "optimizer.%s.%s", k ? "v" : "m", e->name);
                const float *d;
                kn_shape sh;
                if (kn_ckpt_get(ctx, c, nm, &d, &sh) == KN_OK && kn_shape_eq(&sh, &e->shape)) {
                    double s = 0;
                    for (int64_t j = 0; j < e->numel; j++) s += d[j];
                    sink = s;
                }
            }
        }
    }
    kn_ctx_clear(ctx);
    kn_ckpt_load_init(ctx, c, &m->store);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    const int flags = data[0];
    data++;
    size--;
    kn_ctx *ctx = kn_ctx_new();
    kn_ckpt *c = NULL;
    if (kn_ckpt_open_mem(ctx, "fuzz.safetensors", data, size, &c) == KN_OK) {
        /* every byte of every tensor is readable */
        for (int i = 0; i < kn_ckpt_count(c); i++) {
            const float *d;
            kn_shape sh;
            if (kn_ckpt_get(ctx, c, kn_ckpt_name(c, i), &d, &sh) != KN_OK) abort();
            int64_t n = kn_shape_numel(&sh);
            if (n < 0) abort();
            double s = 0;
            for (int64_t k = 0; k < n; k++) s += d[k];
            sink = s;
        }
        for (int i = 0; i < kn_ckpt_other_count(c); i++) {
            const char *dt;
            kn_shape sh;
            const float *d;
            const char *nm = kn_ckpt_other(c, i, &dt, &sh);
            if (kn_ckpt_get(ctx, c, nm, &d, NULL) == KN_OK) abort(); /* not F32: never readable as floats */
        }
        for (int i = 0; KEYS[i]; i++) {
            int64_t v;
            double f;
            kn_ckpt_meta_int(ctx, c, KEYS[i], &v);
            kn_ckpt_meta_num(ctx, c, KEYS[i], &f);
        }
        if (flags & 2) resume_load(ctx, c);
        kn_ckpt_close(c);
    }
    if (flags & 1) {
        const char *path = kn_fuzz_path(".safetensors");
        FILE *null = fopen("/dev/null", "w");
        if (null && kn_fuzz_write(path, data, size) == 0) {
            kn_ctx_clear(ctx);
            kn_inspect(ctx, path, NULL, null);
            kn_ckpt *c2 = NULL;
            kn_ctx_clear(ctx);
            if (kn_ckpt_open(ctx, path, &c2) == KN_OK) {
                if (kn_ckpt_count(c2) > 0) {
                    char name[256];
                    snprintf(name, sizeof name, "%s", kn_ckpt_name(c2, 0));
                    kn_inspect(ctx, path, name, null);
                }
                kn_ckpt_close(c2);
            }
            unlink(path);
        }
        if (null) fclose(null);
    }
    kn_ctx_free(ctx);
    return 0;
}
