/* kiln — best validation loss, early stopping, the overfitting warning (early_stop.h). */
#include "train/early_stop.h"

#include <stdio.h>

void kn_early_stop_init(kn_early_stop *e, int64_t patience, int64_t warn_worse_epochs, int64_t epochs, const char *metrics_path) {
    e->patience = patience;
    e->epochs = epochs;
    kn_overfit_init(&e->of, warn_worse_epochs); /* its state rebuilt from the epochs logged so far */
    if (metrics_path) kn_overfit_replay(&e->of, metrics_path);
}

int kn_early_stop_epoch(kn_early_stop *e, kn_train_state *S, double tl, double vloss, kn_sinks *sinks) {
    int is_best = vloss < S->best_val;
    if (is_best) { S->best_val = vloss; S->best_step = S->step; S->bad_epochs = 0; }
    else S->bad_epochs++;
    char ofmsg[768];
    if (kn_overfit_epoch(&e->of, tl, vloss, ofmsg, sizeof ofmsg)) {
        fprintf(stderr, "kiln: warning: %s\n", ofmsg);
        kn_record r;
        kn_rec_begin(&r, "warning");
        kn_rec_int(&r, "step", S->step);
        kn_rec_str(&r, "kind", "overfitting");
        kn_rec_str(&r, "message", ofmsg);
        kn_sinks_write(sinks, &r);
    }
    return is_best;
}

int kn_early_stop_due(const kn_early_stop *e, const kn_train_state *S) {
    return e->patience > 0 && S->bad_epochs >= e->patience && S->epoch < e->epochs;
}

void kn_early_stop_report(const kn_train_state *S, FILE *out, kn_sinks *sinks) {
    if (out)
        fprintf(out, "early stopping: validation loss has not improved for %lld epochs; restored the best model (step %lld, validation loss %.4f)\n",
                (long long)S->bad_epochs, (long long)S->best_step, S->best_val);
    kn_record r;
    kn_rec_begin(&r, "early_stop");
    kn_rec_int(&r, "step", S->step);
    kn_rec_int(&r, "best_step", S->best_step);
    kn_rec_num(&r, "best_val_loss", KN_MV_G9, S->best_val);
    kn_sinks_write(sinks, &r);
}
