/* kiln's side of the benchmark (bench/bench.sh runs it next to bench/torch_bench.py).
 *
 *   kiln_bench train CONFIG --batch B --threads T [--seconds S] [--warmup W]
 *       Trains CONFIG on its data set with the trainer's step, as `kiln train` does
 *       (prefetching loader, kn_trainer_step: forward + backward, clipping, optimizer
 *       step; no guard, logging or checkpoints), then runs the evaluation graph over the
 *       test set with batch B. Prints one JSON line: training samples/s over S seconds
 *       after W seconds (at least 3 steps) of warm-up, inference samples/s, peak RSS of
 *       the process, and the step's mean stage times (step_ms, warm-up included).
 *   kiln_bench micro CONFIG --batch B --threads T [--reps R]
 *   (both also take --set SECTION.KEY=VALUE, as `kiln train` does, and
 *   --conv-algorithm A, which sets `algorithm = A` on every conv2d layer)
 *       Times every step of the training graph inside whole forward + backward passes
 *       and prints the achieved GFLOP/s of each conv2d and linear layer's forward and
 *       backward, their total, and the machine's peak measured by `peak` below.
 *   kiln_bench peak --threads T
 *       FP32 peak: a plain FMA loop (AVX-512 where the CPU has it, else AVX2+FMA) on
 *       T threads, best of several runs.
 * Built by CMake as an optional target (make kiln_bench); not part of the test suite. */
#define _POSIX_C_SOURCE 200809L
#include <immintrin.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "config/config.h"
#include "graph/graph.h"
#include "nn/model.h"
#include "optim/optim.h"
#include "train/step.h"
#include "train/trainer.h"

static void die(kn_ctx *ctx, const char *what) {
    fprintf(stderr, "kiln_bench: %s: %s\n", what, kn_ctx_message(ctx));
    exit(1);
}

/* ---------------- peak ---------------- */
#define NACC 12
__attribute__((target("avx512f"))) static float fma_loop512(long iters) {
    __m512 a[NACC];
    const __m512 b = _mm512_set1_ps(0.999f), c = _mm512_set1_ps(1e-3f);
    for (int i = 0; i < NACC; i++) a[i] = _mm512_set1_ps((float)i);
    for (long k = 0; k < iters; k++) {
#pragma GCC unroll 12
        for (int i = 0; i < NACC; i++) a[i] = _mm512_fmadd_ps(a[i], b, c);
    }
    __m512 s = a[0];
    for (int i = 1; i < NACC; i++) s = _mm512_add_ps(s, a[i]);
    return _mm512_reduce_add_ps(s);
}
__attribute__((target("avx2,fma"))) static float fma_loop256(long iters) {
    __m256 a[NACC];
    const __m256 b = _mm256_set1_ps(0.999f), c = _mm256_set1_ps(1e-3f);
    for (int i = 0; i < NACC; i++) a[i] = _mm256_set1_ps((float)i);
    for (long k = 0; k < iters; k++) {
#pragma GCC unroll 12
        for (int i = 0; i < NACC; i++) a[i] = _mm256_fmadd_ps(a[i], b, c);
    }
    float out[8], s = 0;
    for (int i = 1; i < NACC; i++) a[0] = _mm256_add_ps(a[0], a[i]);
    _mm256_storeu_ps(out, a[0]);
    for (int i = 0; i < 8; i++) s += out[i];
    return s;
}

static double measure_peak(int threads, const char **isa) {
    __builtin_cpu_init();
    int w512 = __builtin_cpu_supports("avx512f");
    *isa = w512 ? "AVX-512 FMA" : "AVX2 FMA";
    const long iters = 20000000;
    const double flops_per_iter = (double)NACC * (w512 ? 16 : 8) * 2;
    double best = 0;
    volatile float sink = 0;
    for (int rep = 0; rep < 7; rep++) {
        double t0 = kn_now_seconds();
#pragma omp parallel num_threads(threads)
        {
            float r = w512 ? fma_loop512(iters) : fma_loop256(iters);
#pragma omp atomic
            sink += r;
        }
        double t = kn_now_seconds() - t0;
        double g = (double)threads * (double)iters * flops_per_iter / t / 1e9;
        if (g > best) best = g;
    }
    (void)sink;
    return best;
}

/* ---------------- options ---------------- */
typedef struct {
    const char *mode, *config;
    int batch, threads, reps, nset;
    double seconds, warmup;
    const char *set[16]; /* --set SECTION.KEY=VALUE overrides */
    const char *conv_algorithm; /* --conv-algorithm: `algorithm` of every conv2d layer */
} opts;

static opts parse(int argc, char **argv) {
    opts o = {0};
    o.threads = 0;
    o.batch = 64;
    o.warmup = 1.5;
    o.seconds = 4.0;
    o.reps = 20;
    if (argc < 2) goto usage;
    o.mode = argv[1];
    int i = 2;
    if (strcmp(o.mode, "peak") != 0) {
        if (argc < 3) goto usage;
        o.config = argv[2];
        i = 3;
    }
    for (; i < argc; i++) {
        const char *a = argv[i];
        if (i + 1 >= argc) goto usage;
        if (!strcmp(a, "--batch")) o.batch = atoi(argv[++i]);
        else if (!strcmp(a, "--threads")) o.threads = atoi(argv[++i]);
        else if (!strcmp(a, "--seconds")) o.seconds = atof(argv[++i]);
        else if (!strcmp(a, "--warmup")) o.warmup = atof(argv[++i]);
        else if (!strcmp(a, "--reps")) o.reps = atoi(argv[++i]);
        else if (!strcmp(a, "--set") && o.nset < 16) o.set[o.nset++] = argv[++i];
        else if (!strcmp(a, "--conv-algorithm")) o.conv_algorithm = argv[++i];
        else goto usage;
    }
    return o;
usage:
    fprintf(stderr, "usage: kiln_bench train|micro CONFIG [--batch B] [--threads T] [--seconds S] [--warmup W] [--reps R]\n"
                    "             [--set SECTION.KEY=VALUE ...] [--conv-algorithm auto|direct|winograd]\n"
                    "       kiln_bench peak [--threads T]\n");
    exit(2);
}

static void open_job(kn_ctx *ctx, const opts *o, kn_config **cfg, kn_settings *st, kn_job *job) {
    if (kn_config_load(ctx, o->config, cfg)) die(ctx, o->config);
    char set[64];
    snprintf(set, sizeof set, "data.batch_size=%d", o->batch);
    if (kn_config_set(ctx, *cfg, set)) die(ctx, set);
    snprintf(set, sizeof set, "data.eval_batch_size=%d", o->batch);
    if (kn_config_set(ctx, *cfg, set)) die(ctx, set);
    for (int k = 0; k < o->nset; k++)
        if (kn_config_set(ctx, *cfg, o->set[k])) die(ctx, o->set[k]);
    for (int k = 0; o->conv_algorithm && k < (*cfg)->nsec; k++) {
        const kn_cfg_kv *t = kn_cfg_get(&(*cfg)->sec[k], "type");
        if (!t || strcmp(t->value, "conv2d") != 0) continue;
        char kv[160];
        snprintf(kv, sizeof kv, "%s.algorithm=%s", (*cfg)->sec[k].name, o->conv_algorithm);
        if (kn_config_set(ctx, *cfg, kv)) die(ctx, kv);
    }
    if (kn_settings_read(ctx, *cfg, st)) die(ctx, "settings");
    kn_set_threads(o->threads);
    if (kn_job_open(ctx, *cfg, st, 1, job)) die(ctx, "job");
}

static long peak_rss_bytes(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss * 1024L;
}

/* ---------------- train ---------------- */
static int run_train(const opts *o) {
    kn_ctx *ctx = kn_ctx_new();
    kn_config *cfg = NULL;
    kn_settings st;
    kn_job job;
    open_job(ctx, o, &cfg, &st, &job);
    kn_model *m = &job.model;
    kn_optimizer opt = {0};
    st.opt.total_steps = 1000000;
    if (kn_opt_init(ctx, &opt, &st.opt, m->store.nparam)) die(ctx, "optimizer");
    kn_model_init(m, st.seed);
    /* the trainer's step (src/train/step.c): forward, backward, clipping, update */
    kn_trainer tr;
    if (kn_trainer_init(ctx, &tr, m, &opt, st.batch, st.seed, st.opt.clip_norm)) die(ctx, "trainer");
    int64_t step = 0, epoch = 0, timed = 0;
    double t0 = 0, el = 0, tw = kn_now_seconds();
    int warm = 1;
    float loss = NAN;
    kn_loader_start_epoch(job.train_loader, epoch, 0);
    for (;;) {
        if (kn_trainer_next_batch(&tr, job.train_loader) <= 0) {
            kn_loader_start_epoch(job.train_loader, ++epoch, 0);
            continue;
        }
        kn_trainer_step(&tr, step, kn_opt_lr(&st.opt, step), NULL);
        loss = tr.loss;
        step++;
        if (warm) {
            if (step >= 3 && kn_now_seconds() - tw >= o->warmup) {
                warm = 0;
                t0 = kn_now_seconds();
            }
        } else {
            timed++;
            el = kn_now_seconds() - t0;
            if (el >= o->seconds && timed >= 10) break;
        }
    }
    double train_sps = (double)(timed * st.batch) / el;

    /* inference: the evaluation graph over the test set, batch B */
    int64_t done = 0;
    int32_t *ye = malloc((size_t)st.eval_batch * sizeof *ye);
    kn_rt ert = {0};
    ert.seed = st.seed;
    for (int w = 0; w < 5; w++) {
        kn_loader_start_epoch(job.test_loader, 0, 0);
        if (kn_loader_next(job.test_loader, kn_ptr(m->eval, m->x_eval), ye) > 0) kn_g_forward(m->eval, &ert);
    }
    t0 = kn_now_seconds();
    for (;;) {
        kn_loader_start_epoch(job.test_loader, 0, 0);
        int cnt;
        while ((cnt = kn_loader_next(job.test_loader, kn_ptr(m->eval, m->x_eval), ye)) == st.eval_batch) {
            kn_g_forward(m->eval, &ert);
            done += cnt;
        }
        el = kn_now_seconds() - t0;
        if (el >= o->seconds / 2) break;
    }
    double infer_sps = (double)done / el;
    printf("{\"engine\": \"kiln\", \"kiln\": \"%s\", \"model\": \"%s\", \"batch\": %lld, \"threads\": %d, "
           "\"train_sps\": %.1f, \"infer_sps\": %.1f, \"peak_rss\": %ld, \"train_steps\": %lld, \"loss\": %.6f, "
           "\"step_ms\": {\"data\": %.4f, \"forward\": %.4f, \"backward\": %.4f, \"optimizer\": %.4f}}\n",
           KILN_VERSION, o->config, (long long)st.batch, kn_get_threads(), train_sps, infer_sps, peak_rss_bytes(),
           (long long)timed, (double)loss, 1e3 * tr.total.data / (double)tr.steps, 1e3 * tr.total.forward / (double)tr.steps,
           1e3 * tr.total.backward / (double)tr.steps, 1e3 * tr.total.optimizer / (double)tr.steps);
    kn_trainer_free(&tr);
    free(ye);
    kn_opt_free(&opt);
    kn_job_close(&job);
    kn_config_free(cfg);
    kn_ctx_free(ctx);
    return 0;
}

/* ---------------- micro ---------------- */
typedef struct {
    char layer[64], algo[32];
    const char *op;
    double flops_fwd, flops_bwd, t_fwd, t_bwd;
    double eff; /* effective / nominal FLOPs: taps that fall on padding are not computed */
} layer_row;

/* Fraction of a convolution's nominal multiply-adds (every kernel tap at every output)
 * whose input pixel lies inside the image, i.e. that are actually computed. */
static double conv_effective(const kn_graph *g, const kn_node *n) {
    if (strncmp(n->op->name, "conv2d", 6) != 0) return 1.0;
    const kn_shape *x = kn_shp(g, n->in[0]), *w = kn_shp(g, n->in[1]), *y = kn_shp(g, n->out[0]);
    double f[2];
    for (int a = 0; a < 2; a++) {
        int64_t in = x->d[2 + a], k = w->d[2 + a], out = y->d[2 + a], s = n->a.i[a], p = n->a.i[2 + a], valid = 0;
        for (int64_t o = 0; o < out; o++)
            for (int64_t t = 0; t < k; t++) {
                int64_t i = o * s - p + t;
                valid += i >= 0 && i < in;
            }
        f[a] = (double)valid / (double)(out * k);
    }
    return f[0] * f[1];
}

static int run_micro(const opts *o) {
    kn_ctx *ctx = kn_ctx_new();
    kn_config *cfg = NULL;
    kn_settings st;
    kn_job job;
    open_job(ctx, o, &cfg, &st, &job);
    kn_model *m = &job.model;
    kn_graph *g = m->train;
    kn_model_init(m, st.seed);
    int32_t *y = malloc((size_t)st.batch * sizeof *y);
    kn_loader_start_epoch(job.train_loader, 0, 0);
    kn_loader_next(job.train_loader, kn_ptr(g, m->x_train), y);
    kn_model_set_targets(m, y);
    kn_rt rt = {0};
    rt.seed = st.seed;
    double *t = calloc((size_t)g->nsteps, sizeof *t);
    float *lg = g->v[g->v[g->loss].grad].data;
    for (int rep = -3; rep < o->reps; rep++) {
        for (int s = 0; s < g->nsteps; s++) {
            if (s == g->nfwd) lg[0] = 1.0f;
            double t0 = kn_now_seconds();
            kn_g_run_steps(g, &rt, s, s + 1);
            if (rep >= 0) t[s] += kn_now_seconds() - t0;
        }
    }
    layer_row rows[64];
    int nr = 0;
    double step_total = 0;
    for (int s = 0; s < g->nsteps; s++) step_total += t[s] / o->reps;
    for (int s = 0; s < g->nsteps; s++) {
        const kn_step *sp = &g->steps[s];
        if (sp->kind != KN_STEP_FWD && sp->kind != KN_STEP_BWD) continue;
        const kn_node *n = &g->n[sp->node];
        if (strncmp(n->op->name, "conv2d", 6) != 0 && strncmp(n->op->name, "linear", 6) != 0) continue;
        int r;
        for (r = 0; r < nr; r++)
            if (!strcmp(rows[r].layer, n->layer)) break;
        if (r == nr) {
            if (nr == 64) continue;
            memset(&rows[r], 0, sizeof rows[r]);
            kn_strlcpy(rows[r].layer, n->layer, sizeof rows[r].layer);
            rows[r].op = n->op->name;
            kn_strlcpy(rows[r].algo, n->impl[0] ? n->impl : "-", sizeof rows[r].algo);
            rows[r].eff = conv_effective(g, n);
            nr++;
        }
        double f = n->op->flops_fwd(g, n);
        if (sp->kind == KN_STEP_FWD) {
            rows[r].flops_fwd += f;
            rows[r].t_fwd += t[s] / o->reps;
        } else {
            /* count only the products computed: data gradient if the input needs one,
             * weight gradient (the bias sum is not counted) */
            int k = (sp->din[0] >= 0) + (sp->din[1] >= 0);
            rows[r].flops_bwd += f * k;
            rows[r].t_bwd += t[s] / o->reps;
        }
    }
    const char *isa;
    double peak = measure_peak(kn_get_threads(), &isa);
    printf("kiln %s micro-benchmark: %s, batch %lld, %d threads\n", KILN_VERSION, o->config, (long long)st.batch,
           kn_get_threads());
    printf("machine FP32 peak (%s loop, %d threads): %.1f GFLOP/s\n", isa, kn_get_threads(), peak);
    printf("GFLOP/s count the nominal 2*N*O*C*KH*KW*OH*OW of a convolution (2*N*I*O of a linear layer);\n"
           "'effective' leaves out the kernel taps that fall on zero padding, which are not computed.\n");
    int wino = 0;
    for (int r = 0; r < nr; r++) wino |= !strcmp(rows[r].algo, "winograd");
    if (wino)
        printf("Winograd layers do about half the multiplications they are counted for: their GFLOP/s is that of\n"
               "the direct algorithm that would take as long, and can exceed the peak (--conv-algorithm direct\n"
               "measures the hardware's efficiency).\n");
    printf("%-8s %-12s %-8s %8s %9s %8s %9s %9s %8s %10s %9s\n", "layer", "op", "algo", "fwd ms", "fwd GF/s", "bwd ms",
           "bwd GF/s", "GFLOP/s", "of peak", "effective", "of peak");
    double F = 0, FE = 0, T = 0;
    for (int r = 0; r < nr; r++) {
        const layer_row *w = &rows[r];
        double ff = w->flops_fwd, fb = w->flops_bwd, tt = w->t_fwd + w->t_bwd;
        printf("%-8s %-12s %-8s %8.3f %9.1f %8.3f %9.1f %9.1f %7.1f%% %10.1f %8.1f%%\n", w->layer, w->op, w->algo,
               w->t_fwd * 1e3,
               ff / w->t_fwd / 1e9, w->t_bwd * 1e3, fb / w->t_bwd / 1e9, (ff + fb) / tt / 1e9,
               100.0 * (ff + fb) / tt / 1e9 / peak, w->eff * (ff + fb) / tt / 1e9,
               100.0 * w->eff * (ff + fb) / tt / 1e9 / peak);
        F += ff + fb;
        FE += w->eff * (ff + fb);
        T += tt;
    }
    printf("conv+linear total: %.3f GFLOP (%.3f effective) in %.3f ms: %.1f GFLOP/s = %.1f%% of peak; "
           "effective %.1f GFLOP/s = %.1f%% of peak\n",
           F / 1e9, FE / 1e9, T * 1e3, F / T / 1e9, 100.0 * F / T / 1e9 / peak, FE / T / 1e9,
           100.0 * FE / T / 1e9 / peak);
    printf("whole training step (all ops, batch %lld): %.3f ms\n", (long long)st.batch, step_total * 1e3);
    if (getenv("KN_BENCH_STEPS")) {
        for (int s = 0; s < g->nsteps; s++) {
            const kn_step *sp = &g->steps[s];
            const char *kind = sp->kind == KN_STEP_FWD ? "fwd" : sp->kind == KN_STEP_BWD ? "bwd" : "other";
            const kn_node *n = sp->node >= 0 ? &g->n[sp->node] : NULL;
            printf("  step %3d %-5s %-10s %-12s %8.3f ms\n", s, kind, n ? n->layer : "-", n ? n->op->name : "-",
                   t[s] / o->reps * 1e3);
        }
    }
    free(t);
    free(y);
    kn_job_close(&job);
    kn_config_free(cfg);
    kn_ctx_free(ctx);
    return 0;
}

int main(int argc, char **argv) {
    opts o = parse(argc, argv);
    if (!strcmp(o.mode, "peak")) {
        kn_set_threads(o.threads);
        const char *isa;
        double p = measure_peak(kn_get_threads(), &isa);
        printf("{\"peak_gflops\": %.1f, \"threads\": %d, \"isa\": \"%s\"}\n", p, kn_get_threads(), isa);
        return 0;
    }
    if (!strcmp(o.mode, "train")) return run_train(&o);
    if (!strcmp(o.mode, "micro")) return run_micro(&o);
    parse(0, argv);
    return 2;
}
