/* kiln — the run directory (rundir.h): lock, temporaries, versions, peek, checkpoints. */
#define _POSIX_C_SOURCE 200809L
#include "train/rundir.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "train/checkpoint.h"
#include "train/resume.h"

int kn_mkdirs(kn_ctx *ctx, const char *path) {
    char tmp[4096];
    kn_strlcpy(tmp, path, sizeof tmp);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
            return kn_err(ctx, KN_ERR_IO, "cannot create directory '%s': %s", tmp, strerror(errno));
        *p = '/';
    }
    if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
        return kn_err(ctx, KN_ERR_IO, "cannot create directory '%s': %s", tmp, strerror(errno));
    return KN_OK;
}

int kn_write_text(kn_ctx *ctx, const char *path, const char *text) {
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f) return kn_err(ctx, KN_ERR_IO, "cannot write '%s': %s", path, strerror(errno));
    int bad = fputs(text, f) < 0 || fflush(f) != 0 || fsync(fileno(f)) != 0;
    if (fclose(f) != 0) bad = 1;
    if (bad || rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return kn_err(ctx, KN_ERR_IO, "cannot write '%s': %s", path, strerror(e));
    }
    kn_fsync_parent(path); /* the rename is durable before anything relies on it */
    return KN_OK;
}

int kn_file_exists(const char *p) {
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISREG(sb.st_mode);
}

static int cmp_ck_desc(const void *a, const void *b) {
    const kn_ckpt_entry *x = a, *y = b;
    return x->step < y->step ? 1 : x->step > y->step ? -1 : 0;
}

int kn_list_step_ckpts(const char *dir, kn_ckpt_entry **out) {
    *out = NULL;
    DIR *d = opendir(dir);
    if (!d) return 0;
    int n = 0, cap = 0;
    kn_ckpt_entry *v = NULL;
    struct dirent *de;
    while ((de = readdir(d))) {
        long long st;
        char tail[32];
        if (sscanf(de->d_name, "step-%lld.safetens%31s", &st, tail) != 2 || strcmp(tail, "ors") != 0) continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 16;
            kn_ckpt_entry *nv = realloc(v, (size_t)cap * sizeof *v);
            if (!nv) break;
            v = nv;
        }
        v[n].step = st;
        kn_strlcpy(v[n].name, de->d_name, sizeof v[n].name);
        n++;
    }
    closedir(d);
    if (n > 1) qsort(v, (size_t)n, sizeof *v, cmp_ck_desc);
    *out = v;
    return n;
}

/* An exclusive lock on RUN/.lock (flock: the kernel releases it when its holder exits or
 * dies, so a killed run never blocks its resume). The file names the holder. */
static int lock_run_dir(kn_ctx *ctx, const char *run_dir, const char *verb, int *fd_out) {
    char p[2200];
    snprintf(p, sizeof p, "%s/.lock", run_dir);
    *fd_out = -1;
    int fd = open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return kn_err(ctx, KN_ERR_IO, "cannot create the lock file '%s': %s", p, strerror(errno));
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        char holder[512] = "";
        ssize_t n = pread(fd, holder, sizeof holder - 1, 0);
        holder[n > 0 ? n : 0] = 0;
        holder[strcspn(holder, "\n")] = 0;
        close(fd);
        if (e == EWOULDBLOCK)
            return kn_err(ctx, KN_ERR_IO, "run directory '%s' is in use by another kiln process (%s); wait for it to finish, "
                                          "stop it, or choose another --run-dir",
                          run_dir, holder[0] ? holder : "holder unknown");
        return kn_err(ctx, KN_ERR_IO, "cannot lock '%s': %s", p, strerror(e));
    }
    char host[256] = "?", when[64] = "?", text[700];
    if (gethostname(host, sizeof host) != 0) snprintf(host, sizeof host, "?");
    host[sizeof host - 1] = 0;
    time_t now = time(NULL);
    struct tm tmv;
    if (gmtime_r(&now, &tmv)) strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S UTC", &tmv);
    int len = snprintf(text, sizeof text, "PID %ld on host %s, kiln %s, started %s\n", (long)getpid(), host, verb, when);
    if (ftruncate(fd, 0) != 0 || pwrite(fd, text, (size_t)len, 0) != len) { /* the lock holds without the note */ }
    *fd_out = fd;
    return KN_OK;
}

/* The files kiln writes through a temporary NAME.tmp.PID: checkpoints (*.safetensors:
 * step-N, first, best, epoch-E, model) and config.ini. Anything else that looks like a
 * temporary is the user's and stays. */
static int kiln_temp_name(const char *name, size_t len) {
    static const char sfx[] = ".safetensors";
    size_t ls = sizeof sfx - 1;
    if (len == strlen("config.ini") && !strncmp(name, "config.ini", len)) return 1;
    if (len <= ls || strncmp(name + len - ls, sfx, ls) != 0) return 0;
    static const char *stems[] = {"step-", "epoch-", "first.", "best.", "model."};
    for (size_t i = 0; i < sizeof stems / sizeof stems[0]; i++)
        if (!strncmp(name, stems[i], strlen(stems[i]))) return 1;
    return 0;
}

void kn_remove_dead_temps(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *de;
    while ((de = readdir(d))) {
        const char *t = strstr(de->d_name, ".tmp.");
        if (!t || !kiln_temp_name(de->d_name, (size_t)(t - de->d_name))) continue;
        char *end;
        long pid = strtol(t + 5, &end, 10);
        if (*end || pid <= 0) continue;
        if (pid != (long)getpid() && (kill((pid_t)pid, 0) == 0 || errno != ESRCH)) continue; /* alive */
        char p[2600];
        snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
        unlink(p);
    }
    closedir(d);
}

static void peek_free(kn_run_peek *pk) {
    free(pk->config);
    free(pk->algorithms);
    memset(pk, 0, sizeof *pk);
}

static void peek_run(const char *run_dir, kn_run_peek *pk) {
    memset(pk, 0, sizeof *pk);
    char cdir[2300], p[2600];
    snprintf(cdir, sizeof cdir, "%s/checkpoints", run_dir);
    kn_ckpt_entry *v;
    int n = kn_list_step_ckpts(cdir, &v);
    pk->nckpt = n;
    snprintf(p, sizeof p, "%s/first.safetensors", cdir);
    pk->has_first = kn_file_exists(p);
    kn_ctx *c2 = kn_ctx_new();
    for (int i = 0; c2 && i <= n && !pk->found; i++) {
        if (i < n) snprintf(p, sizeof p, "%s/%s", cdir, v[i].name);
        else snprintf(p, sizeof p, "%s/first.safetensors", cdir);
        kn_ckpt *c = NULL;
        if (kn_ckpt_open(c2, p, &c) != KN_OK) { kn_ctx_clear(c2); continue; }
        const char *kind = kn_ckpt_meta_get(c, "kind"), *text = kn_ckpt_meta_get(c, "config");
        if (kind && !strcmp(kind, "train") && text) {
            pk->found = 1;
            pk->config = strdup(text);
            /* each value validated as a resume reads it (a malformed one is not used) */
            int64_t iv;
            uint64_t uv;
            if (kn_ckpt_meta_get(c, "step") && kn_ckpt_meta_int(c2, c, "step", &iv) == KN_OK) pk->step = iv;
            if (kn_ckpt_meta_get(c, "seed") && kn_ckpt_meta_u64(c2, c, "seed", UINT64_MAX, &uv) == KN_OK) { pk->have_seed = 1; pk->seed = uv; }
            if (kn_ckpt_meta_get(c, "threads") && kn_ckpt_meta_int(c2, c, "threads", &iv) == KN_OK) pk->threads = (int)iv;
            if (kn_ckpt_meta_get(c, "micro_batch") && kn_ckpt_meta_int(c2, c, "micro_batch", &iv) == KN_OK) pk->micro = iv;
            const char *s;
            if ((s = kn_ckpt_meta_get(c, "algorithms"))) pk->algorithms = strdup(s);
            kn_ctx_clear(c2);
        }
        kn_ckpt_close(c);
    }
    free(v);
    kn_ctx_free(c2);
    if (!pk->found) {
        /* killed before its first checkpoint: the config it was started with */
        snprintf(p, sizeof p, "%s/config.ini", run_dir);
        FILE *f = fopen(p, "rb");
        if (f) {
            char *buf = NULL;
            size_t len = 0, cap = 0, r;
            char chunk[4096];
            while ((r = fread(chunk, 1, sizeof chunk, f)) > 0) {
                if (len + r + 1 > cap) {
                    cap = 2 * (len + r + 1);
                    char *nb = realloc(buf, cap);
                    if (!nb) { free(buf); buf = NULL; break; }
                    buf = nb;
                }
                memcpy(buf + len, chunk, r);
                len += r;
            }
            fclose(f);
            if (buf) { buf[len] = 0; pk->config = buf; }
        }
    }
}

/* Parse "RUN_DIR[:first|best|last|STEP]" or a file path into a checkpoint path. */
int kn_resolve_init_from(kn_ctx *ctx, const char *spec, char *out, size_t n) {
    if (kn_file_exists(spec)) { kn_strlcpy(out, spec, n); return KN_OK; }
    char dir[2048], sel[64] = "last";
    kn_strlcpy(dir, spec, sizeof dir);
    char *colon = strrchr(dir, ':');
    if (colon) { kn_strlcpy(sel, colon + 1, sizeof sel); *colon = 0; }
    char cdir[2300];
    snprintf(cdir, sizeof cdir, "%s/checkpoints", dir);
    if (!strcmp(sel, "first") || !strcmp(sel, "best")) {
        snprintf(out, n, "%s/%s.safetensors", cdir, sel);
    } else {
        kn_ckpt_entry *v;
        int cnt = kn_list_step_ckpts(cdir, &v), found = -1;
        char *end;
        long long want = strtoll(sel, &end, 10);
        int is_num = *sel && !*end;
        if (!is_num && strcmp(sel, "last") != 0) {
            free(v);
            return kn_err(ctx, KN_ERR_INVALID, "--init-from '%s': expected RUN_DIR[:first|best|last|STEP] or a checkpoint file", spec);
        }
        for (int i = 0; i < cnt && found < 0; i++)
            if (!is_num || v[i].step == want) found = i;
        if (found < 0) {
            free(v);
            return kn_err(ctx, KN_ERR_IO, "--init-from '%s': no %s checkpoint in %s", spec, is_num ? "such step" : "step", cdir);
        }
        snprintf(out, n, "%s/%s", cdir, v[found].name);
        free(v);
    }
    if (!kn_file_exists(out)) return kn_err(ctx, KN_ERR_IO, "--init-from '%s': %s does not exist", spec, out);
    return KN_OK;
}

/* runs/NAME, runs/NAME-2, ...: the v-th version of a default run directory */
static void versioned(char *dst, size_t n, const char *base, int v) {
    if (v <= 1) kn_strlcpy(dst, base, n);
    else snprintf(dst, n, "%s-%d", base, v);
}

int kn_rundir_choose(kn_ctx *ctx, const kn_config *cfg, const kn_train_options *opt, const kn_settings *st,
                     const char *cfg_text, kn_rundir *rd) {
    memset(rd, 0, sizeof *rd);
    rd->lock_fd = -1;
    int rc = KN_OK;
    kn_run_peek *pk = &rd->pk;
    char base[2048];
    char *run_dir = rd->dir;
    const size_t run_dir_size = sizeof rd->dir;
    int explicit_dir = opt->run_dir || st->run_dir[0];
    if (opt->run_dir) kn_strlcpy(base, opt->run_dir, sizeof base);
    else if (st->run_dir[0]) kn_strlcpy(base, st->run_dir, sizeof base);
    else {
        const char *b = strrchr(cfg->path, '/');
        b = b ? b + 1 : cfg->path;
        char stem[256];
        kn_strlcpy(stem, b, sizeof stem);
        char *dot = strrchr(stem, '.');
        if (dot && dot != stem) *dot = 0;
        snprintf(base, sizeof base, "runs/%s", stem);
    }

    /* The run directory: locked for the whole run. A default directory (runs/NAME) that
     * holds a run of another config, or checkpoints that --init-from would be ignored
     * for, is left alone: the new run goes to runs/NAME-2 (-3, ...). An explicit one is
     * refused instead (or, with --allow-config-change, continued with the new config). */
    char moved[1800] = "";
    for (int v = 1;; v++) {
        versioned(run_dir, run_dir_size, base, v);
        if (v > 9999) { rc = kn_err(ctx, KN_ERR_IO, "%s: too many versions of this run directory", base); goto done; }
        struct stat sb;
        if (!opt->resume_only && stat(run_dir, &sb) != 0) break; /* a new directory: made after the plan (a refused run makes none) */
        if ((rc = lock_run_dir(ctx, run_dir, opt->resume_only ? "resume" : "train", &rd->lock_fd))) goto done;
        peek_free(pk);
        peek_run(run_dir, pk);
        if (opt->resume_only || !pk->config) break; /* resume, or a new directory */
        char diff[1500];
        int nd = kn_config_diff(ctx, pk->config, cfg_text, diff, sizeof diff);
        if (nd == 0 && pk->found && pk->have_seed && pk->seed != st->seed) {
            snprintf(diff, sizeof diff, "train.seed: '%llu' -> '%llu'", (unsigned long long)pk->seed, (unsigned long long)st->seed);
            nd = 1;
        }
        /* init_from is in the recorded config: a run started from the same weights continues */
        int init_conflict = st->init_from[0] && (pk->found || pk->nckpt > 0) && nd > 0 && strstr(diff, "train.init_from:");
        if ((nd == 0 || opt->allow_config_change) && !init_conflict) break;
        if (explicit_dir) {
            if (init_conflict)
                rc = kn_err(ctx, KN_ERR_INVALID, "--init-from %s: the run directory %s already holds checkpoints of a run (step %lld), "
                                                 "which train would continue instead of starting from those weights; choose a new "
                                                 "--run-dir for the new run (or leave --run-dir out: kiln then starts runs/NAME-2)",
                            opt->init_from ? opt->init_from : st->init_from, run_dir, (long long)pk->step);
            else
                rc = kn_err(ctx, KN_ERR_CONFIG, "the config differs from the one the run in %s was started with: %s. Resume with the "
                                                "original config, pass --allow-config-change to continue this run with the new one, "
                                                "or choose another --run-dir for a new run",
                            run_dir, diff);
            goto done;
        }
        if (!moved[0]) {
            if (init_conflict) snprintf(moved, sizeof moved, "%.500s holds checkpoints of a run (--init-from starts a new one)", base);
            else snprintf(moved, sizeof moved, "%.500s holds a run of another config (%.1200s)", base, diff);
        }
        close(rd->lock_fd);
        rd->lock_fd = -1;
    }
    if (moved[0]) fprintf(stderr, "kiln: %s: this run goes to %s (pass --run-dir to choose the directory)\n", moved, run_dir);

    snprintf(rd->ckpt_dir, sizeof rd->ckpt_dir, "%s/checkpoints", run_dir);
done:
    if (rc && rd->lock_fd >= 0) { close(rd->lock_fd); rd->lock_fd = -1; }
    return rc;
}

void kn_rundir_adopt(const kn_rundir *rd, const kn_train_options *opt, kn_settings *st, int64_t *forced_micro) {
    const kn_run_peek *pk = &rd->pk;
    *forced_micro = 0;
    if (pk->found) {
        if (opt->resume_only && pk->have_seed) st->seed = pk->seed;
        if (pk->threads > 0 && opt->threads > 0 && opt->threads != pk->threads)
            fprintf(stderr, "kiln: warning: --threads %d differs from the %d thread(s) the run was trained with: training "
                            "continues correctly but not bit-identically to an uninterrupted run (kiln gives the same bits "
                            "for the same thread count); leave --threads out to keep %d\n",
                    opt->threads, pk->threads, pk->threads);
        else if (pk->threads > 0) st->threads = pk->threads;
        if (pk->micro > 0 && st->micro_batch == 0 && pk->micro <= st->batch && st->batch % pk->micro == 0) *forced_micro = st->micro_batch = pk->micro;
    }
}

int kn_rundir_create(kn_ctx *ctx, kn_rundir *rd) {
    int rc;
    if (rd->lock_fd < 0 && ((rc = kn_mkdirs(ctx, rd->dir)) || (rc = lock_run_dir(ctx, rd->dir, "train", &rd->lock_fd)))) return rc;
    return KN_OK;
}

void kn_rundir_close(kn_rundir *rd) {
    if (rd->lock_fd >= 0) close(rd->lock_fd); /* releases the run directory */
    rd->lock_fd = -1;
    peek_free(&rd->pk);
}
