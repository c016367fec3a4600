/* kiln — the run directory: its lock, the temporaries of killed processes, versions
 * (runs/NAME, runs/NAME-2, ...), what it holds before the job is built (peek), and the
 * step checkpoints in it.
 *
 * Run directory:  .lock (flock: one process at a time)  config.ini  metrics.jsonl  model.safetensors
 *                 checkpoints/step-<N>.safetensors (last K)  first.safetensors
 *                 best.safetensors  epoch-<E>.safetensors (optional) */
#ifndef KN_RUNDIR_H
#define KN_RUNDIR_H

#include "kiln.h"
#include "train/trainer.h"

int kn_mkdirs(kn_ctx *ctx, const char *path);
/* Write text to path atomically (temporary file, rename). */
int kn_write_text(kn_ctx *ctx, const char *path, const char *text);
int kn_file_exists(const char *p);

/* step-N checkpoints in dir, newest first. Returns the count (malloc'ed list in *out). */
typedef struct {
    int64_t step;
    char name[64];
} kn_ckpt_entry;
int kn_list_step_ckpts(const char *dir, kn_ckpt_entry **out);

/* Remove NAME.tmp.PID files left in dir by processes that are gone (never another live
 * process's; the caller holds the run directory's lock). */
void kn_remove_dead_temps(const char *dir);

/* What a run directory holds, read before the job is built: the newest training
 * checkpoint that opens (step-N, else first), its config text and what decides its bits. */
typedef struct {
    int found;          /* a training checkpoint opened */
    int nckpt;          /* step-N files present (good or not) */
    int has_first;
    char *config;       /* the checkpoint's config text, else config.ini's (malloc'ed), or NULL */
    int64_t step;
    int have_seed;
    uint64_t seed;
    int threads;        /* 0: not recorded */
    int64_t micro;      /* 0: not recorded */
    char *algorithms;   /* "LAYER=ALGORITHM;..." (malloc'ed) or NULL */
} kn_run_peek;

typedef struct {
    char dir[2100];
    char ckpt_dir[2300];
    int lock_fd;        /* -1: not locked (a new directory is made and locked by kn_rundir_create) */
    kn_run_peek pk;
} kn_rundir;

/* Choose the run directory of a training and lock it: the explicit one (--run-dir or
 * train.run_dir) or runs/NAME. A default directory that holds a run of another config,
 * or checkpoints that --init-from would be ignored for, is left alone: the new run goes
 * to runs/NAME-2 (-3, ...). An explicit one is refused instead (or, with
 * --allow-config-change, continued with the new config). */
int kn_rundir_choose(kn_ctx *ctx, const kn_config *cfg, const kn_train_options *opt, const kn_settings *st,
                     const char *cfg_text, kn_rundir *rd);
/* What decides the bits comes from the run's checkpoint: seed (resume), threads, the
 * micro-batch split (returned in *forced_micro when taken). */
void kn_rundir_adopt(const kn_rundir *rd, const kn_train_options *opt, kn_settings *st, int64_t *forced_micro);
/* Make and lock a new directory (one chosen by kn_rundir_choose is locked already). */
int kn_rundir_create(kn_ctx *ctx, kn_rundir *rd);
void kn_rundir_close(kn_rundir *rd);

/* Parse "RUN_DIR[:first|best|last|STEP]" or a file path into a checkpoint path. */
int kn_resolve_init_from(kn_ctx *ctx, const char *spec, char *out, size_t n);

#endif
