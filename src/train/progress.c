/* kiln — the progress display (progress.h). */
#include "train/progress.h"

#include "core/core.h"

#include <math.h>

static void fmt_time(double s, char *buf, size_t n) {
    if (!(s >= 0) || s > 1e7) { snprintf(buf, n, "--:--"); return; }
    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(buf, n, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else snprintf(buf, n, "%ld:%02ld", t / 60, t % 60);
}

void kn_progress_init(kn_progress *p, FILE *out, int bar, int64_t steps_per_epoch, int64_t epochs, int64_t total_steps,
                      int64_t batch, int64_t log_every) {
    p->out = out;
    p->bar = bar;
    p->steps_per_epoch = steps_per_epoch;
    p->epochs = epochs;
    p->total_steps = total_steps;
    p->batch = batch;
    p->log_every = log_every;
    p->win_t0 = 0;
    p->win_steps = 0;
    p->rate_s0 = -1;
    p->rate_t0 = 0;
}

void kn_progress_epoch_start(kn_progress *p, double now) {
    p->win_t0 = now;
    p->win_steps = 0;
}

void kn_progress_step(kn_progress *p, const kn_train_state *S, double loss, double lr) {
    p->win_steps++;
    int log_now = S->step % p->log_every == 0;
    if (p->rate_s0 < 0) { p->rate_t0 = kn_now_seconds(); p->rate_s0 = S->step; }
    FILE *out = p->out;
    if (!out || !(p->bar || log_now)) return;
    double now = kn_now_seconds();
    double sps = (double)(p->win_steps * p->batch) / (now - p->win_t0 + 1e-9);
    /* the ETA from the steps after this process's first (which pays the one-time set-up
     * of kernels and memory), once a few are measured; --:-- before */
    double eta = S->step - p->rate_s0 >= 3 ? (double)(p->total_steps - S->step) * (now - p->rate_t0) / (double)(S->step - p->rate_s0) : -1;
    char etas[32];
    fmt_time(eta, etas, sizeof etas);
    if (p->bar) {
        if (log_now || p->win_steps == 1 || S->step == p->total_steps || S->batch_in_epoch % 10 == 0) {
            int w = 24, filled = (int)((double)w * (double)S->batch_in_epoch / (double)p->steps_per_epoch);
            char b[32];
            for (int i = 0; i < w; i++) b[i] = i < filled ? '#' : '.';
            b[w] = 0;
            fprintf(out, "\repoch %lld/%lld [%s] %lld/%lld loss %.4f %.0f samples/s ETA %s   ", (long long)S->epoch + 1,
                    (long long)p->epochs, b, (long long)S->batch_in_epoch, (long long)p->steps_per_epoch, loss, sps, etas);
            fflush(out);
        }
    } else {
        fprintf(out, "epoch %lld/%lld step %lld/%lld loss %.4f lr %.3g %.0f samples/s ETA %s\n", (long long)S->epoch + 1,
                (long long)p->epochs, (long long)S->batch_in_epoch, (long long)p->steps_per_epoch, loss, lr, sps, etas);
        fflush(out);
    }
    if (log_now) { p->win_t0 = now; p->win_steps = 0; }
}

void kn_progress_break(const kn_progress *p) {
    if (p->bar && p->out) fprintf(p->out, "\n");
}

const char *kn_progress_lead(const kn_progress *p) { return p->bar && p->out ? "\n" : ""; }

void kn_progress_epoch_done(const kn_progress *p, const kn_train_state *S, double secs, double tl, double vloss, double vacc,
                            double vr2) {
    if (!p->out) return;
    if (isnan(vacc) && !isnan(vr2)) /* regression */
        fprintf(p->out, "epoch %lld/%lld done in %.1fs: train loss %.4f, validation loss %.4f (gap %+.4f), validation R^2 %.4f\n",
                (long long)S->epoch + 1, (long long)p->epochs, secs, tl, vloss, vloss - tl, vr2);
    else fprintf(p->out, "epoch %lld/%lld done in %.1fs: train loss %.4f, validation loss %.4f (gap %+.4f), validation accuracy %.2f%%\n",
            (long long)S->epoch + 1, (long long)p->epochs, secs, tl, vloss, vloss - tl, 100.0 * vacc);
    fflush(p->out);
}
