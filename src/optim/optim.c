/* Optimizers, clipping and schedules. Semantics follow PyTorch's torch.optim
 * (SGD with dampening 0, Adam/AdamW with bias correction and eps outside the
 * square root) so that runs can be checked against PyTorch fixtures. */
#include "optim/optim.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>

/* a*b + c rounded once, as ATen's vectorised kernels do on CPUs with FMA. The Adam loops
 * below are compiled three times (target_clones, resolved once at load time from the
 * CPU): for x86-64-v4 and x86-64-v3, where fmaf is an FMA instruction, and for the
 * baseline x86-64, where fmaf is glibc's correctly rounded function. Every operation is
 * elementwise and exactly rounded, so all three give the same bits (KN_MAX_ISA need not
 * reach this choice). The portable build would otherwise round twice and drift from
 * torch.optim by more than 1e-6 (test_reference). */
#define KN_FMA(a, b, c) fmaf((a), (b), (c))
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__FMA__)
#define KN_FMA_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define KN_FMA_CLONES
#endif

/* One Adam/AdamW pass over n packed parameters (see kn_opt_step for the arithmetic). */
KN_FMA_CLONES static void adam_loops(int adamw, int64_t n, float *restrict param, const float *restrict grad,
                                     float *restrict m, float *restrict v, float wd, int small, float w1, float w1c,
                                     float fb2, float c2, float neg_step, float bc2s, float eps, float decay) {
    /* the two variants are separate loops so that each vectorises */
    if (adamw) {
#pragma omp parallel for simd schedule(static) if (n > 65536)
        for (int64_t i = 0; i < n; i++) {
            const float gi = grad[i];
            const float p = param[i] * decay;
            const float mi = small ? KN_FMA(w1, gi - m[i], m[i]) : KN_FMA(-w1c, gi - m[i], gi);
            const float vi = v[i] * fb2 + (c2 * gi) * gi;
            m[i] = mi;
            v[i] = vi;
            param[i] = p + (neg_step * mi) / (sqrtf(vi) / bc2s + eps);
        }
    } else {
#pragma omp parallel for simd schedule(static) if (n > 65536)
        for (int64_t i = 0; i < n; i++) {
            const float p = param[i];
            const float gi = wd != 0.0f ? KN_FMA(p, wd, grad[i]) : grad[i];
            const float mi = small ? KN_FMA(w1, gi - m[i], m[i]) : KN_FMA(-w1c, gi - m[i], gi);
            const float vi = v[i] * fb2 + (c2 * gi) * gi;
            m[i] = mi;
            v[i] = vi;
            param[i] = p + (neg_step * mi) / (sqrtf(vi) / bc2s + eps);
        }
    }
}

void kn_opt_defaults(kn_opt_config *c) {
    c->kind = KN_OPT_ADAM;
    c->lr = 1e-3;
    c->momentum = 0.9;
    c->nesterov = 0;
    c->beta1 = 0.9;
    c->beta2 = 0.999;
    c->eps = 1e-8;
    c->weight_decay = 0;
    c->clip_norm = 0;
    c->schedule = KN_SCHED_CONSTANT;
    c->warmup_steps = 0;
    c->step_size = 1000;
    c->gamma = 0.1;
    c->min_lr = 0;
    c->total_steps = 0;
}

int kn_opt_init(kn_ctx *ctx, kn_optimizer *o, const kn_opt_config *c, int64_t n) {
    o->c = *c;
    o->n = n;
    o->t = 0;
    o->m = kn_aligned_alloc((size_t)n * sizeof(float));
    o->v = c->kind == KN_OPT_SGD ? NULL : kn_aligned_alloc((size_t)n * sizeof(float));
    if (!o->m || (c->kind != KN_OPT_SGD && !o->v))
        return kn_err(ctx, KN_ERR_NOMEM, "cannot allocate optimizer state for %lld parameters", (long long)n);
    return KN_OK;
}

void kn_opt_free(kn_optimizer *o) {
    kn_aligned_free(o->m);
    kn_aligned_free(o->v);
    o->m = o->v = NULL;
}

/* Warm-up: lr * (step + 1) / W for the first W steps (0-based step < W), so the first
 * update uses lr / W and update W - 1 the full lr. After it, s = step - W counts the
 * schedule's steps:
 *   step:   lr * gamma^floor(s / step_size)                       (torch StepLR)
 *   cosine: min_lr + (lr - min_lr) * (1 + cos(pi * s / (T - 1))) / 2 over the T =
 *           total_steps - W steps after warm-up: lr at the first, min_lr exactly at the
 *           last (torch CosineAnnealingLR with T_max = T - 1, stepped after every update);
 *           min_lr after it; a schedule of one step keeps lr. */
double kn_opt_lr(const kn_opt_config *c, int64_t step) {
    double lr = c->lr;
    const int64_t W = c->warmup_steps > 0 ? c->warmup_steps : 0;
    if (step < W) return lr * (double)(step + 1) / (double)W;
    int64_t s = step - W;
    switch (c->schedule) {
    case KN_SCHED_CONSTANT: break;
    case KN_SCHED_STEP:
        if (c->step_size > 0) lr *= pow(c->gamma, (double)(s / c->step_size));
        break;
    case KN_SCHED_COSINE: {
        int64_t T = c->total_steps - W;
        if (T <= 1) break;
        if (s >= T - 1) return c->min_lr;
        double p = (double)s / (double)(T - 1);
        lr = c->min_lr + 0.5 * (c->lr - c->min_lr) * (1.0 + cos(3.14159265358979323846 * p));
        break;
    }
    }
    return lr;
}

/* Fixed-size blocks summed in order: the result does not depend on scheduling. */
#define KN_NORM_BLOCK 16384
double kn_global_norm(const float *g, int64_t n) {
    int64_t nb = (n + KN_NORM_BLOCK - 1) / KN_NORM_BLOCK;
    double stackbuf[256];
    double *part = nb <= 256 ? stackbuf : malloc((size_t)nb * sizeof(double));
    if (!part) return NAN;
#pragma omp parallel for schedule(static) if (nb > 64) /* small: a parallel region costs more */
    for (int64_t b = 0; b < nb; b++) {
        int64_t lo = b * KN_NORM_BLOCK, hi = lo + KN_NORM_BLOCK < n ? lo + KN_NORM_BLOCK : n;
        /* sixteen float lanes over chunks of 512 (one AVX-512 register, exact enough:
         * 32 terms per lane), summed in double per chunk; a fixed order throughout */
        double s = 0;
        int64_t i = lo;
        for (; i + 512 <= hi; i += 512) {
            float acc[16] = {0};
            for (int64_t j = 0; j < 512; j += 16)
                for (int k = 0; k < 16; k++) acc[k] += g[i + j + k] * g[i + j + k];
            double c = 0;
            for (int k = 0; k < 16; k++) c += (double)acc[k];
            if (isinf(c)) { /* float overflow of finite values: redo this chunk in double */
                c = 0;
                for (int64_t j = 0; j < 512; j++) c += (double)g[i + j] * (double)g[i + j];
            }
            s += c;
        }
        for (; i < hi; i++) s += (double)g[i] * (double)g[i];
        part[b] = s;
    }
    double s = 0;
    for (int64_t b = 0; b < nb; b++) s += part[b];
    if (part != stackbuf) free(part);
    return sqrt(s);
}

double kn_clip_grad_norm(float *g, int64_t n, double norm, double max_norm) {
    double coef = max_norm / (norm + 1e-6);
    if (!(coef < 1.0)) return norm;
    float c = (float)coef;
#pragma omp parallel for schedule(static) if (n > 65536)
    for (int64_t i = 0; i < n; i++) g[i] *= c;
    return max_norm;
}

double kn_clip_grad(float *g, int64_t n, double max_norm) {
    double norm = kn_global_norm(g, n);
    kn_clip_grad_norm(g, n, norm, max_norm);
    return norm;
}

void kn_opt_step(kn_optimizer *o, float *restrict param, const float *restrict grad, double lr) {
    const kn_opt_config *c = &o->c;
    int64_t n = o->n;
    float *restrict m = o->m, *restrict v = o->v;
    o->t++;
    const float flr = (float)lr, wd = (float)c->weight_decay;
    if (c->kind == KN_OPT_SGD) {
        const float mu = (float)c->momentum;
        const int first = o->t == 1, nest = c->nesterov;
#pragma omp parallel for schedule(static) if (n > 65536)
        for (int64_t i = 0; i < n; i++) {
            float gi = grad[i] + wd * param[i];
            if (mu != 0.0f) {
                float b = first ? gi : mu * m[i] + gi;
                m[i] = b;
                gi = nest ? gi + mu * b : b;
            }
            param[i] -= flr * gi;
        }
        return;
    }
    /* torch.optim.Adam/AdamW's default CPU implementation (_single_tensor_adam), op by
     * op. Every scalar is a Python float (double) made from the double hyperparameters
     * and rounded to float32 once, where the tensor op takes it:
     *   AdamW:  param.mul_(1 - lr*wd)                       -> p * (float)(1 - lr*wd)
     *   Adam:   grad = grad.add(param, alpha=wd)            -> fma(p, (float)wd, g)
     *   exp_avg.lerp_(grad, 1 - beta1)                      -> fma(w, g - m, m)  (w < 0.5)
     *   exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
     *                                                       -> v*(float)b2 + ((float)(1-b2)*g)*g
     *   bias_correction1 = 1 - beta1**step, bias_correction2 = 1 - beta2**step (double)
     *   step_size = lr / bias_correction1; bias_correction2_sqrt = bias_correction2**0.5
     *   denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
     *   param.addcdiv_(exp_avg, denom, value=-step_size)   -> p + ((float)-step_size*m)/denom
     * ATen's vectorised lerp and add-with-alpha are fused multiply-adds; so are these
     * (fmaf, see KN_FMA). */
    const double b1 = c->beta1, b2 = c->beta2, t = (double)o->t;
    const float w1 = (float)(1.0 - b1), w1c = 1.0f - w1; /* lerp weight and ATen's 1 - weight */
    const int small = w1 < 0.5f;
    const float fb2 = (float)b2, c2 = (float)(1.0 - b2), eps = (float)c->eps;
    const double bc1 = 1.0 - pow(b1, t), bc2 = 1.0 - pow(b2, t);
    const float neg_step = (float)(-(lr / bc1));
    const float bc2s = (float)sqrt(bc2);
    const float decay = (float)(1.0 - lr * c->weight_decay);
    adam_loops(c->kind == KN_OPT_ADAMW, n, param, grad, m, v, wd, small, w1, w1c, fb2, c2, neg_step, bc2s, eps,
               decay);
}
