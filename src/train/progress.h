/* kiln — the progress display of a training run: a progress bar on a terminal, else a
 * line every train.log_every steps; samples/s over the window since the last logged step,
 * and the ETA from the steps after this process's first. It writes to `out` only (stdout;
 * NULL: quiet) and owns the one piece of terminal state the other parts must respect:
 * a bar being drawn, which needs a line break before anything else is printed. */
#ifndef KN_PROGRESS_H
#define KN_PROGRESS_H

#include <stdint.h>
#include <stdio.h>

#include "train/state.h"

typedef struct {
    FILE *out;   /* NULL: quiet */
    int bar;     /* a progress bar (a terminal) rather than lines */
    int64_t steps_per_epoch, epochs, total_steps, batch, log_every;
    double win_t0;
    int64_t win_steps;
    int64_t rate_s0; /* first step measured for the ETA (-1: none yet) */
    double rate_t0;
} kn_progress;

void kn_progress_init(kn_progress *p, FILE *out, int bar, int64_t steps_per_epoch, int64_t epochs, int64_t total_steps,
                      int64_t batch, int64_t log_every);
/* The start of an epoch (or of its restart after a rollback). */
void kn_progress_epoch_start(kn_progress *p, double now);
/* After an update: S is the state after it, loss and lr those of the step. */
void kn_progress_step(kn_progress *p, const kn_train_state *S, double loss, double lr);
/* End the bar's line (before another message on stdout). */
void kn_progress_break(const kn_progress *p);
/* "\n" when a bar is on and stdout is used: what a message on stderr starts with. */
const char *kn_progress_lead(const kn_progress *p);
/* The end of an epoch's validation. */
void kn_progress_epoch_done(const kn_progress *p, const kn_train_state *S, double secs, double train_loss, double val_loss,
                            double val_acc, double val_r2);

#endif
