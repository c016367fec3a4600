/* Unit tests of the trainer's parts (src/optim, src/train):
 *  - gradient clipping (kn_clip_grad_norm, the one implementation) against the closed
 *    form: g * (float)(max / (norm + 1e-6)) when the norm is over the limit, g unchanged
 *    otherwise, and what it returns;
 *  - the training checkpoint's field table (state.c): a record written and read back is
 *    bit-exact (infinities, NaN, 2^53, negative best_step), the metadata keys and text
 *    are kiln 0.1's, and a missing or out-of-range field is an error naming it;
 *  - the step (kn_trainer_step) gives the bits of the plain sequence forward, backward,
 *    clip, update; a gate that vetoes leaves the parameters untouched; the all-reduce
 *    hook sees the gradient once per step, before the norm;
 *  - the JSON-lines sink writes kiln 0.1's bytes and cuts back to a mark;
 *  - two trainings in one process, on two threads with two contexts at the same time (an
 *    MLP and a CNN with fused ops, blocked layouts and oneDNN primitives), each give the
 *    bits they give run alone: per-step losses, results and the saved model. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "optim/optim.h"
#include "testutil.h"
#include "nn/model.h"
#include "train/sinks/sink.h"
#include "train/state.h"
#include "train/step.h"

static void test_clip(void) {
    /* [3, 4, 0, 12]: norm 13 */
    float g[4] = {3, 4, 0, 12};
    double norm = kn_global_norm(g, 4);
    CHECK(norm == 13.0, "global norm %.17g", norm);
    double after = kn_clip_grad_norm(g, 4, norm, 6.5);
    float c = (float)(6.5 / (13.0 + 1e-6));
    CHECK(after == 6.5, "returns the limit when it clips: %g", after);
    CHECK(g[0] == 3 * c && g[1] == 4 * c && g[2] == 0 && g[3] == 12 * c, "scaled by (float)(max/(norm+1e-6)): %.9g %.9g %.9g",
          (double)g[0], (double)g[1], (double)g[3]);
    CHECK(fabs(kn_global_norm(g, 4) - 6.5) < 1e-5, "new norm %.9g", kn_global_norm(g, 4));
    /* under the limit: untouched, the norm returned */
    float h[2] = {0.3f, 0.4f};
    after = kn_clip_grad_norm(h, 2, kn_global_norm(h, 2), 1.0);
    CHECK(h[0] == 0.3f && h[1] == 0.4f && fabs(after - 0.5) < 1e-7, "under the limit: %g %g -> %g", (double)h[0], (double)h[1], after);
    /* a non-finite norm never scales (coef is not < 1) */
    float z[2] = {1, 2};
    after = kn_clip_grad_norm(z, 2, NAN, 1.0);
    CHECK(z[0] == 1 && z[1] == 2 && isnan(after), "NaN norm: untouched");
    /* kn_clip_grad: the norm computed first, the norm before clipping returned */
    float w[3] = {0, 0, 10};
    double before = kn_clip_grad(w, 3, 1.0);
    CHECK(before == 10.0 && w[2] == 10.0f * (float)(1.0 / (10.0 + 1e-6)), "kn_clip_grad: %g, %.9g", before, (double)w[2]);
    /* a large vector (the parallel loop) gives the same bits as the scalar formula */
    int64_t n = 200000;
    float *a = malloc((size_t)n * sizeof *a), *b = malloc((size_t)n * sizeof *b);
    for (int64_t i = 0; i < n; i++) a[i] = b[i] = (float)((i % 97) - 48) * 0.01f;
    double na = kn_global_norm(a, n);
    kn_clip_grad_norm(a, n, na, 1.0);
    float cc = (float)(1.0 / (na + 1e-6));
    int same = 1;
    for (int64_t i = 0; i < n; i++) same &= a[i] == b[i] * cc;
    CHECK(same, "parallel clip = closed form");
    free(a);
    free(b);
}

static kn_ctx *ctx;

/* Save a record's metadata (without field `drop`, or with `key` = `value`) with an empty store. */
static int save_meta(const char *path, const kn_ckpt_record *r, const char *drop, const char *key, const char *value) {
    char v[KN_CKPT_MAX_FIELDS][64];
    kn_ckpt_meta meta[KN_CKPT_MAX_FIELDS];
    int n = kn_ckpt_record_meta(r, v, meta), k = 0;
    for (int i = 0; i < n; i++) {
        if (drop && !strcmp(meta[i].key, drop)) continue;
        meta[k] = meta[i];
        if (key && !strcmp(meta[k].key, key)) meta[k].value = value;
        k++;
    }
    kn_store st;
    memset(&st, 0, sizeof st);
    kn_ctx_clear(ctx);
    return kn_ckpt_save(ctx, path, &st, NULL, 0, meta, k);
}

static int read_back(const char *path, kn_ckpt_record *out) {
    kn_ckpt *c = NULL;
    kn_ctx_clear(ctx);
    memset(out, 0, sizeof *out);
    int rc = kn_ckpt_open(ctx, path, &c);
    if (!rc) rc = kn_ckpt_check_train_meta(ctx, c);
    if (!rc) rc = kn_ckpt_record_read(ctx, c, out);
    kn_ckpt_close(c);
    return rc;
}

static void test_fields(void) {
    char path[1200];
    snprintf(path, sizeof path, "%s/rec.safetensors", kn_test_tmpdir("test_trainer_parts"));
    kn_ckpt_record r;
    memset(&r, 0, sizeof r);
    kn_train_state_init(&r.s);
    r.kind = "train";
    r.s.step = (int64_t)1 << 53;
    r.s.epoch = 7;
    r.s.batch_in_epoch = 3;
    r.s.ep_loss_sum = NAN;
    r.s.ep_steps = 3;
    r.s.metrics_bytes = 12345;
    r.s.lr_scale = 0.1 * 0.1;
    r.s.guard_events = 2;
    r.s.bad_epochs = 1;
    r.seed = UINT64_MAX;
    r.optimizer_t = 99;
    r.optimizer_kind = 2;
    r.config_hash = 0xabcULL;
    r.data_mean = (double)0.2860402f;
    r.data_std = (double)0.3530239f;
    r.threads = 2;
    r.micro_batch = 32;
    r.algorithms = "conv1=winograd";
    r.isa_path = "kiln test";
    r.config = "[train]\nepochs = 1\n";
    /* the keys and their order: kiln 0.1's (run.c save_state) */
    static const char *const keys[] = {"kind", "step", "epoch", "batch_in_epoch", "seed", "optimizer_t", "epoch_loss_sum",
                                       "epoch_steps", "best_val_loss", "best_step", "metrics_bytes", "config_hash",
                                       "optimizer_kind", "guard_lr_scale", "guard_events", "bad_epochs", "data_mean",
                                       "data_std", "threads", "micro_batch", "algorithms", "isa_path", "config", NULL};
    char v[KN_CKPT_MAX_FIELDS][64];
    kn_ckpt_meta meta[KN_CKPT_MAX_FIELDS];
    int n = kn_ckpt_record_meta(&r, v, meta), i = 0;
    for (; keys[i]; i++) CHECK(i < n && !strcmp(meta[i].key, keys[i]), "key %d: %s, expected %s", i, i < n ? meta[i].key : "-", keys[i]);
    CHECK(n == i, "%d fields, expected %d", n, i);
    CHECK(!strcmp(meta[1].value, "9007199254740992") && !strcmp(meta[8].value, "inf") && !strcmp(meta[9].value, "-1") &&
              !strcmp(meta[11].value, "0000000000000abc") && !strcmp(meta[4].value, "18446744073709551615") &&
              !strcmp(meta[13].value, "0.010000000000000002"),
          "text forms: %s %s %s %s %s %s", meta[1].value, meta[8].value, meta[9].value, meta[11].value, meta[4].value, meta[13].value);
    CHECK(save_meta(path, &r, NULL, NULL, NULL) == KN_OK, "save: %s", kn_ctx_message(ctx));
    kn_ckpt_record b;
    CHECK(read_back(path, &b) == KN_OK, "read: %s", kn_ctx_message(ctx));
    CHECK(b.s.step == r.s.step && b.s.epoch == 7 && b.s.batch_in_epoch == 3 && isnan(b.s.ep_loss_sum) && b.s.ep_steps == 3 &&
              b.s.best_val == INFINITY && b.s.best_step == -1 && b.s.metrics_bytes == 12345 && b.s.lr_scale == r.s.lr_scale &&
              b.s.guard_events == 2 && b.s.bad_epochs == 1 && b.optimizer_t == 99 && b.optimizer_kind == 2,
          "round trip");
    /* every restored field missing, then out of range: an error that names it */
    for (const kn_state_field *f = kn_ckpt_fields; f->key; f++) {
        if (!(f->flags & KN_FIELD_RESTORE)) continue;
        char want[128];
        CHECK(save_meta(path, &r, f->key, NULL, NULL) == KN_OK, "save without %s", f->key);
        snprintf(want, sizeof want, "metadata '%s' is missing", f->key);
        CHECK(read_back(path, &b) == KN_ERR_FORMAT && strstr(kn_ctx_message(ctx), want), "without %s: %s", f->key, kn_ctx_message(ctx));
        const char *bad = f->type == KN_FIELD_F64 ? (f->fmin > 0 ? "0" : "1e999x") : f->imin < 0 ? "-2" : "-1";
        CHECK(save_meta(path, &r, NULL, f->key, bad) == KN_OK, "save with %s = %s", f->key, bad);
        snprintf(want, sizeof want, "metadata '%s' = '%s' is", f->key, bad);
        CHECK(read_back(path, &b) == KN_ERR_FORMAT && strstr(kn_ctx_message(ctx), want), "%s = %s: %s", f->key, bad, kn_ctx_message(ctx));
    }
    /* an optional checked field out of range fails the training-metadata check */
    CHECK(save_meta(path, &r, NULL, "threads", "5000") == KN_OK, "save");
    CHECK(read_back(path, &b) == KN_ERR_FORMAT && strstr(kn_ctx_message(ctx), "'threads' = '5000' is out of range"), "threads: %s",
          kn_ctx_message(ctx));
    /* and may be absent */
    CHECK(save_meta(path, &r, "threads", NULL, NULL) == KN_OK && read_back(path, &b) == KN_OK, "no threads: %s", kn_ctx_message(ctx));
}

static const char *MODEL =
    "[conv1]\ntype = conv2d\nout_channels = 2\nkernel = 3\npadding = 1\n"
    "[bn1]\ntype = batchnorm\nactivation = relu\n"
    "[flat]\ntype = flatten\n"
    "[fc]\ntype = linear\nout = 3\n";

static int build(kn_model *m) {
    kn_config *cfg = NULL;
    int rc = kn_config_parse_string(ctx, "model.ini", MODEL, &cfg);
    if (!rc) rc = kn_model_build(ctx, cfg, 4, 4, 1, 4, 4, 3, m);
    kn_config_free(cfg);
    if (!rc) kn_model_init(m, 5);
    return rc;
}

static int g_reduced;
static double g_norm_seen;
static void count_reduce(void *arg, float *grad, int64_t n) {
    (void)arg;
    g_reduced++;
    g_norm_seen = kn_global_norm(grad, n);
}
static int veto(void *arg, kn_trainer *t) {
    (void)t;
    ++*(int *)arg;
    return KN_STEP_SKIPPED;
}

static void test_step(void) {
    kn_model a, b;
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    kn_optimizer oa = {0}, ob = {0};
    kn_opt_config oc;
    kn_opt_defaults(&oc);
    oc.kind = KN_OPT_ADAM;
    oc.lr = 1e-2;
    oc.clip_norm = 0.05; /* small: the step clips */
    int ok = build(&a) == KN_OK && build(&b) == KN_OK && kn_opt_init(ctx, &oa, &oc, a.store.nparam) == KN_OK &&
             kn_opt_init(ctx, &ob, &oc, b.store.nparam) == KN_OK;
    CHECK(ok, "models: %s", kn_ctx_message(ctx));
    if (!ok) return;
    kn_trainer tr;
    CHECK(kn_trainer_init(ctx, &tr, &b, &ob, 4, 9, oc.clip_norm) == KN_OK, "trainer: %s", kn_ctx_message(ctx));
    tr.allreduce = count_reduce;
    int32_t y[4] = {0, 2, 1, 2};
    float *xa = kn_ptr(a.train, a.x_train);
    int64_t nx = kn_numel(a.train, a.x_train);
    kn_rt rt = {0};
    rt.seed = 9;
    for (int s = 0; s < 3; s++) {
        for (int64_t i = 0; i < nx; i++) xa[i] = tr.acc.x[i] = (float)((i * 7 + s * 13) % 11) / 11.0f - 0.4f;
        memcpy(tr.y, y, sizeof y);
        double lr = kn_opt_lr(&oc, s);
        /* the plain sequence */
        kn_model_set_targets(&a, y);
        rt.step = s;
        float la = kn_model_forward_backward(&a, &rt);
        double na = kn_clip_grad(a.store.grad, a.store.nparam, oc.clip_norm);
        kn_opt_step(&oa, a.store.param, a.store.grad, lr);
        /* the step */
        g_reduced = 0;
        int act = kn_trainer_step(&tr, s, lr, NULL);
        CHECK(act == KN_STEP_UPDATED && g_reduced == 1 && g_norm_seen == na, "step %d: action %d, all-reduce calls %d", s, act, g_reduced);
        CHECK(tr.loss == la && tr.gnorm == na, "step %d: loss %.9g vs %.9g, norm %.17g vs %.17g", s, (double)tr.loss, (double)la, tr.gnorm, na);
        CHECK(na > oc.clip_norm, "step %d clips (norm %g)", s, na);
        CHECK(!memcmp(a.store.param, b.store.param, (size_t)a.store.nparam * sizeof(float)), "step %d: parameters differ", s);
        CHECK(tr.last.forward > 0 && tr.last.backward > 0 && tr.last.optimizer > 0, "step %d: stage times %g %g %g", s,
              tr.last.forward, tr.last.backward, tr.last.optimizer);
    }
    /* a gate that vetoes: no update, the optimizer count unchanged */
    int vetoes = 0;
    tr.gate = veto;
    tr.gate_arg = &vetoes;
    float *before = malloc((size_t)b.store.nparam * sizeof(float));
    memcpy(before, b.store.param, (size_t)b.store.nparam * sizeof(float));
    int64_t t = ob.t;
    int act = kn_trainer_step(&tr, 3, 1e-2, NULL);
    CHECK(act == KN_STEP_SKIPPED && vetoes == 1 && ob.t == t && tr.steps == 3, "veto: action %d, gate calls %d, t %lld", act, vetoes,
          (long long)ob.t);
    CHECK(!memcmp(before, b.store.param, (size_t)b.store.nparam * sizeof(float)), "veto: parameters changed");
    free(before);
    kn_trainer_free(&tr);
    kn_opt_free(&oa);
    kn_opt_free(&ob);
    kn_model_free(&a);
    kn_model_free(&b);
}

static void test_jsonl(void) {
    char path[1200], text[4096];
    snprintf(path, sizeof path, "%s/m.jsonl", kn_test_tmpdir("test_trainer_parts"));
    kn_sinks ss;
    memset(&ss, 0, sizeof ss);
    kn_sink s;
    CHECK(kn_sink_jsonl_open(ctx, path, -1, &s, &ss.jsonl) == KN_OK, "open: %s", kn_ctx_message(ctx));
    kn_sinks_add(&ss, s);
    kn_record r;
    kn_rec_begin(&r, "epoch");
    kn_rec_int(&r, "epoch", 2);
    kn_rec_num(&r, "train_loss", KN_MV_G9, 0.1);
    kn_rec_num(&r, "val_accuracy", KN_MV_F6, 0.5);
    kn_rec_num(&r, "seconds", KN_MV_F3, 1.23456);
    kn_rec_str(&r, "message", "a \"quote\"\n");
    kn_rec_raw(&r, "examples", "[[1,2]]");
    kn_sinks_write(&ss, &r);
    int64_t mark = kn_sinks_mark(&ss);
    kn_rec_begin(&r, "step");
    kn_rec_int(&r, "step", 5);
    kn_sinks_write(&ss, &r);
    kn_sinks_rewind(&ss, mark);
    kn_rec_begin(&r, "test");
    kn_rec_num(&r, "test_loss", KN_MV_G9, 1.0 / 3.0);
    kn_sinks_write(&ss, &r);
    kn_sinks_close(&ss);
    kn_test_slurp(path, text, sizeof text);
    const char *want = "{\"event\":\"epoch\",\"epoch\":2,\"train_loss\":0.1,\"val_accuracy\":0.500000,\"seconds\":1.235,"
                       "\"message\":\"a \\\"quote\\\"\\u000a\",\"examples\":[[1,2]]}\n"
                       "{\"event\":\"test\",\"test_loss\":0.333333333}\n";
    CHECK(!strcmp(text, want), "metrics.jsonl:\n%s\nexpected:\n%s", text, want);
    CHECK(mark == (int64_t)(strchr(text, '\n') - text + 1), "mark %lld", (long long)mark);
}

/* ---------------- two trainings in one process ---------------- */
static void stop_at_3(void *arg, const char *where, int64_t step) {
    (void)arg;
    if (!strcmp(where, "step") && step == 3) kn_request_stop(SIGINT);
}

/* A stop request ends the run it arrived in, not the next kn_train of the process
 * (before, the flag stayed set and the resume stopped after its first step). */
static void test_two_runs(void) {
    const char *D = kn_test_tmpdir("trainer_parts");
    char cmd[1200], text[1600], rd[1100];
    snprintf(cmd, sizeof cmd, "rm -rf '%s/run'", D);
    kn_test_system(cmd);
    kn_test_make_images(D, "data", 200, 12, 12);
    snprintf(text, sizeof text,
             "[data]\ndir = %s/data\nbatch_size = 16\n\n[train]\nepochs = 1\n\n[optimizer]\ntype = adam\nlr = 0.002\n\n"
             "[flat]\ntype = flatten\n\n[fc]\ntype = linear\nout = 10\n", D);
    snprintf(rd, sizeof rd, "%s/run", D);
    kn_config *cfg = NULL;
    int rc = kn_config_parse_string(ctx, "two.ini", text, &cfg);
    CHECK(rc == KN_OK, "two runs: config: %s", kn_ctx_message(ctx));
    if (rc) return;
    kn_train_options o;
    kn_train_options_init(&o);
    o.run_dir = rd;
    o.quiet = 1;
    o.hook = stop_at_3;
    kn_train_result res;
    rc = kn_train(ctx, cfg, &o, &res);
    CHECK(rc == KN_ERR_INTERRUPTED && res.steps == 3, "two runs: the first was not stopped at step 3: rc %d, %lld steps: %s", rc,
          (long long)res.steps, kn_ctx_message(ctx));
    kn_ctx_clear(ctx);
    o.hook = NULL;
    o.run_dir = NULL;
    rc = kn_resume(ctx, rd, &o, &res);
    CHECK(rc == KN_OK && res.steps > 4 && res.resumed && !res.stopped_by_signal,
          "two runs: the resume in the same process did not run to the end: rc %d, %lld steps: %s", rc, (long long)res.steps,
          kn_ctx_message(ctx));
    kn_ctx_clear(ctx);
    kn_config_free(cfg);
}


/* ---------- two trainings at once ---------- */
typedef struct {
    const char *name, *body; /* config after [data] */
    int threads;
    char dir[1100];          /* run directory */
    int rc;
    kn_train_result res;
    char msg[2100];
} conc_job;

static void *conc_run(void *arg) {
    conc_job *j = arg;
    kn_ctx *c = kn_ctx_new();
    const char *D = kn_test_tmpdir("trainer_parts");
    char text[2400], cmd[1200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", j->dir);
    kn_test_system(cmd);
    snprintf(text, sizeof text,
             "[data]\ndir = %s/cdata\nbatch_size = 16\n\n[train]\nepochs = 3\nseed = 5\nlog_every = 1\n\n"
             "[optimizer]\ntype = adam\nlr = 0.003\n\n%s",
             D, j->body);
    kn_config *cfg = NULL;
    j->rc = kn_config_parse_string(c, j->name, text, &cfg);
    if (!j->rc) {
        kn_train_options o;
        kn_train_options_init(&o);
        o.run_dir = j->dir;
        o.quiet = 1;
        o.threads = j->threads;
        j->rc = kn_train(c, cfg, &o, &j->res);
    }
    snprintf(j->msg, sizeof j->msg, "%s", kn_ctx_message(c));
    kn_config_free(cfg);
    kn_ctx_free(c);
    return NULL;
}

/* the "step" events of a run's metrics.jsonl (losses and learning rates, no times) */
static void conc_steps(const char *dir, char *out, size_t n) {
    static char buf[1 << 18];
    char path[1200];
    snprintf(path, sizeof path, "%s/metrics.jsonl", dir);
    kn_test_slurp(path, buf, sizeof buf);
    size_t k = 0;
    out[0] = 0;
    for (char *line = buf; *line;) {
        char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);
        if (!strncmp(line, "{\"event\":\"step\"", 15) && k + len + 2 < n) {
            memcpy(out + k, line, len);
            k += len;
            out[k++] = '\n';
            out[k] = 0;
        }
        line += len + (end ? 1 : 0);
    }
}

static int conc_same_file(const char *a, const char *b) {
    FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
    int same = fa && fb;
    while (same) {
        int x = fgetc(fa), y = fgetc(fb);
        if (x != y) same = 0;
        if (x == EOF || y == EOF) break;
    }
    if (fa) fclose(fa);
    if (fb) fclose(fb);
    return same;
}

static void conc_compare(const conc_job *alone, const conc_job *both) {
    static char sa[1 << 17], sb[1 << 17];
    CHECK(alone->rc == KN_OK && both->rc == KN_OK, "two at once: %s: rc %d alone (%s), %d at once (%s)", alone->name,
          alone->rc, alone->msg, both->rc, both->msg);
    if (alone->rc || both->rc) return;
    conc_steps(alone->dir, sa, sizeof sa);
    conc_steps(both->dir, sb, sizeof sb);
    CHECK(sa[0] && !strcmp(sa, sb), "two at once: %s: the per-step losses differ from the run alone:\n%s---\n%s", alone->name,
          sa, sb);
    CHECK(alone->res.steps == both->res.steps && alone->res.steps > 10 &&
              !memcmp(&alone->res.final_train_loss, &both->res.final_train_loss, sizeof(double)) &&
              !memcmp(&alone->res.val_loss, &both->res.val_loss, sizeof(double)) &&
              !memcmp(&alone->res.test_loss, &both->res.test_loss, sizeof(double)),
          "two at once: %s: results differ: %lld steps, loss %.9g, val %.9g, test %.9g alone; %lld, %.9g, %.9g, %.9g at once",
          alone->name, (long long)alone->res.steps, alone->res.final_train_loss, alone->res.val_loss, alone->res.test_loss,
          (long long)both->res.steps, both->res.final_train_loss, both->res.val_loss, both->res.test_loss);
    char pa[1200], pb[1200];
    snprintf(pa, sizeof pa, "%s/model.safetensors", alone->dir);
    snprintf(pb, sizeof pb, "%s/model.safetensors", both->dir);
    CHECK(conc_same_file(pa, pb), "two at once: %s: the saved model differs from the run alone's (%s, %s)", alone->name, pa, pb);
}

/* Two trainings in one process on two threads at once give each the bits it gives run
 * alone: no process-wide state (planner sort, fusion and layout switches, oneDNN
 * engine and stream, thread count) is shared between them. */
static void test_two_at_once(void) {
    const char *D = kn_test_tmpdir("trainer_parts");
    kn_test_make_images(D, "cdata", 480, 12, 12);
    static const char *mlp = "[flat]\ntype = flatten\n\n[fc1]\ntype = linear\nout = 48\nactivation = relu\n\n"
                             "[fc2]\ntype = linear\nout = 10\n";
    static const char *cnn = "[c1]\ntype = conv2d\nout_channels = 16\nkernel = 3\npadding = 1\n\n"
                             "[bn1]\ntype = batchnorm\nactivation = relu\n\n[p1]\ntype = maxpool2d\n\n"
                             "[c2]\ntype = conv2d\nout_channels = 16\nkernel = 3\npadding = 1\n\n"
                             "[bn2]\ntype = batchnorm\n\n[r2]\ntype = relu\n\n"
                             "[flat]\ntype = flatten\n\n[fc]\ntype = linear\nout = 10\n";
    conc_job alone[2] = {{.name = "mlp.ini", .body = mlp, .threads = 1}, {.name = "cnn.ini", .body = cnn, .threads = 2}};
    conc_job both[2] = {alone[0], alone[1]};
    for (int i = 0; i < 2; i++) {
        snprintf(alone[i].dir, sizeof alone[i].dir, "%s/alone_%d", D, i);
        snprintf(both[i].dir, sizeof both[i].dir, "%s/both_%d", D, i);
        conc_run(&alone[i]);
    }
    /* several rounds: a race shows in some, not every one */
    for (int round = 0; round < 3; round++) {
        pthread_t t[2];
        int started[2] = {0, 0};
        for (int i = 0; i < 2; i++) started[i] = pthread_create(&t[i], NULL, conc_run, &both[i]) == 0;
        for (int i = 0; i < 2; i++)
            if (started[i]) pthread_join(t[i], NULL);
        CHECK(started[0] && started[1], "two at once: cannot start the threads");
        for (int i = 0; i < 2; i++) conc_compare(&alone[i], &both[i]);
    }
}

int main(void) {
    ctx = kn_ctx_new();
    test_two_runs();
    test_two_at_once();
    test_clip();
    test_fields();
    test_step();
    test_jsonl();
    kn_ctx_free(ctx);
    return kn_test_finish("test_trainer_parts");
}
