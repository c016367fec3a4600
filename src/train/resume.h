/* kiln — what a continued run must match: the config it was started with, the
 * convolution algorithms it chose, the config text it records; and kn_resume. */
#ifndef KN_RESUME_H
#define KN_RESUME_H

#include "kiln.h"
#include "graph/graph.h"
#include "train/rundir.h"
#include "train/trainer.h"

/* Keys whose values differ between two config texts: "section.key: 'a' -> 'b'; ...";
 * returns their count (1 with a note when the old text does not parse). */
int kn_config_diff(kn_ctx *ctx, const char *old_text, const char *new_text, char *out, size_t n);
/* "LAYER=ALGORITHM;..." for the nodes of the training graph that chose an algorithm
 * (conv2d: direct or winograd). Recorded in training checkpoints: a resume that runs
 * another algorithm (another kiln version or CPU) is correct but not bit-identical. */
void kn_algorithms_of(const kn_graph *g, char *buf, size_t n);
/* Warn when the checkpoint's run chose other algorithms than this one (`then`: its
 * record; NULL for an older checkpoint, which ran every convolution direct). */
void kn_check_algorithms(const char *then, const kn_graph *g, const char *path);
/* The config to build the job of a resumed run from: where both the checkpoint's config
 * and this one leave a convolution's algorithm to kiln (auto), the algorithm the run
 * used, so that another kiln version or CPU still continues bit-identically. NULL:
 * nothing to force. */
kn_config *kn_config_with_algorithms(const kn_config *cfg, const kn_run_peek *pk);
/* The config text recorded in config.ini and every checkpoint: the config with the
 * command line's --seed, --threads and --init-from (init_from: the file it resolved to,
 * or NULL) written into [train], so that a run killed before its first checkpoint
 * resumes as it was started. malloc'ed; NULL on error. */
char *kn_effective_config_text(kn_ctx *ctx, const kn_config *cfg, const kn_settings *st, const kn_train_options *opt,
                               const char *init_from);
uint64_t kn_fnv1a(const char *s);

#endif
