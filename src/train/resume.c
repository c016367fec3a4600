/* kiln — what a continued run must match (resume.h), and kn_resume. */
#define _POSIX_C_SOURCE 200809L
#include "train/resume.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "config/config.h"

uint64_t kn_fnv1a(const char *s) {
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++) { h ^= (unsigned char)*s; h *= 1099511628211ULL; }
    return h;
}

void kn_algorithms_of(const kn_graph *g, char *buf, size_t n) {
    size_t len = 0;
    buf[0] = 0;
    for (int k = 0; k < g->nn && len < n; k++) {
        const kn_node *nd = &g->n[k];
        if (!nd->impl[0]) continue;
        int w = snprintf(buf + len, n - len, "%s%s=%s", len ? ";" : "", nd->layer, nd->impl);
        if (w < 0 || (size_t)w >= n - len) {
            buf[len] = 0; /* no partial item */
            break;
        }
        len += (size_t)w;
    }
}

int kn_config_diff(kn_ctx *ctx, const char *old_text, const char *new_text, char *out, size_t n) {
    kn_config *a = NULL, *b = NULL;
    out[0] = 0;
    if (kn_config_parse_string(ctx, "checkpoint config", old_text, &a) || kn_config_parse_string(ctx, "current config", new_text, &b)) {
        kn_config_free(a);
        kn_config_free(b);
        snprintf(out, n, "(the checkpoint's config does not parse)");
        return 1;
    }
    int ndiff = 0;
    size_t k = 0;
    for (int pass = 0; pass < 2; pass++) {
        const kn_config *x = pass ? b : a, *y = pass ? a : b;
        for (int i = 0; i < x->nsec; i++) {
            const kn_cfg_section *sx = &x->sec[i], *sy = kn_cfg_find(y, sx->name);
            for (int j = 0; j < sx->nkv; j++) {
                const kn_cfg_kv *kx = &sx->kv[j], *ky = kn_cfg_get(sy, kx->key);
                if (!strcmp(sx->name, "train") && (!strcmp(kx->key, "budget") || !strcmp(kx->key, "fit") || !strcmp(kx->key, "threads")))
                    continue; /* not a change of the run: the memory budget, fitting, threads (warned about) */
                if (ky && strcmp(kx->value, ky->value) == 0) continue;
                if (pass == 1 && ky) continue; /* already reported in pass 0 */
                const char *ov = pass ? "(absent)" : kx->value, *nv = pass ? kx->value : (ky ? ky->value : "(absent)");
                if (k < n) k += (size_t)snprintf(out + k, n - k, "%s%s.%s: '%s' -> '%s'", ndiff ? "; " : "", sx->name, kx->key, ov, nv);
                ndiff++;
            }
        }
    }
    kn_config_free(a);
    kn_config_free(b);
    kn_ctx_clear(ctx);
    return ndiff;
}

void kn_check_algorithms(const char *then, const kn_graph *g, const char *path) {
    char now[4096];
    kn_algorithms_of(g, now, sizeof now);
    const char *p = now;
    while (*p) {
        const char *end = strchr(p, ';');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        char item[256];
        snprintf(item, sizeof item, "%.*s", (int)(len < sizeof item ? len : sizeof item - 1), p);
        char *eq = strchr(item, '=');
        if (eq) {
            *eq = 0;
            const char *algo = eq + 1, *was = "direct";
            char key[260];
            snprintf(key, sizeof key, "%s=", item);
            const char *at = then ? strstr(then, key) : NULL;
            while (at && at != then && at[-1] != ';') at = strstr(at + 1, key);
            char prev[32] = "";
            if (at) {
                snprintf(prev, sizeof prev, "%s", at + strlen(key));
                prev[strcspn(prev, ";")] = 0;
                was = prev;
            }
            if (strcmp(was, algo) != 0)
                fprintf(stderr, "kiln: warning: layer '%s' runs the %s convolution where the run of %s used %s "
                                "(its config, kiln version or CPU differed): training continues correctly but not "
                                "bit-identically to an uninterrupted run; set algorithm = %s on [%s] to match it\n",
                        item, algo, path, was, was, item);
        }
        p += len + (end ? 1 : 0);
    }
}

char *kn_effective_config_text(kn_ctx *ctx, const kn_config *cfg, const kn_settings *st, const kn_train_options *opt,
                               const char *init_from) {
    char *text = kn_cfg_to_text(cfg);
    if (!text) { kn_err(ctx, KN_ERR_NOMEM, "out of memory"); return NULL; }
    int set_seed = opt->seed >= 0 && (uint64_t)opt->seed != st->seed, set_threads = opt->threads > 0 && opt->threads != st->threads;
    int set_init = init_from && *init_from;
    if (!set_seed && !set_threads && !set_init) return text;
    kn_config *c = NULL;
    if (kn_config_parse_string(ctx, cfg->path, text, &c) != KN_OK) { free(text); return NULL; }
    char a[64];
    int rc = KN_OK;
    if (set_seed) { snprintf(a, sizeof a, "train.seed=%lld", (long long)opt->seed); rc = kn_config_set(ctx, c, a); }
    if (!rc && set_threads) { snprintf(a, sizeof a, "train.threads=%d", opt->threads); rc = kn_config_set(ctx, c, a); }
    if (!rc && set_init) {
        size_t l = strlen(init_from) + 32;
        char *ia = malloc(l);
        if (!ia) rc = kn_err(ctx, KN_ERR_NOMEM, "out of memory");
        else {
            snprintf(ia, l, "train.init_from=%s", init_from);
            rc = kn_config_set(ctx, c, ia);
            free(ia);
        }
    }
    free(text);
    text = rc ? NULL : kn_cfg_to_text(c);
    if (!rc && !text) kn_err(ctx, KN_ERR_NOMEM, "out of memory");
    kn_config_free(c);
    return text;
}

kn_config *kn_config_with_algorithms(const kn_config *cfg, const kn_run_peek *pk) {
    if (!pk->found || !pk->algorithms || !*pk->algorithms) return NULL;
    kn_ctx *c2 = kn_ctx_new();
    char *text = kn_cfg_to_text(cfg);
    kn_config *copy = NULL, *then = NULL;
    int nset = 0;
    if (!c2 || !text || kn_config_parse_string(c2, cfg->path, text, &copy) != KN_OK ||
        kn_config_parse_string(c2, "checkpoint config", pk->config, &then) != KN_OK)
        goto out;
    for (const char *p = pk->algorithms; *p;) {
        const char *end = strchr(p, ';');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        char item[300];
        snprintf(item, sizeof item, "%.*s", (int)(len < sizeof item ? len : sizeof item - 1), p);
        char *eq = strchr(item, '=');
        p += len + (end ? 1 : 0);
        if (!eq) continue;
        *eq = 0;
        const kn_cfg_section *now_sec = kn_cfg_find(copy, item), *then_sec = kn_cfg_find(then, item);
        const kn_cfg_kv *now_kv = now_sec ? kn_cfg_get(now_sec, "algorithm") : NULL;
        const kn_cfg_kv *then_kv = then_sec ? kn_cfg_get(then_sec, "algorithm") : NULL;
        if (!now_sec || (now_kv && strcmp(now_kv->value, "auto")) || (then_kv && strcmp(then_kv->value, "auto"))) continue;
        char a[400];
        snprintf(a, sizeof a, "%s.algorithm=%s", item, eq + 1);
        if (kn_config_set(c2, copy, a) == KN_OK) nset++;
    }
out:
    free(text);
    kn_config_free(then);
    kn_ctx_free(c2);
    if (!nset) { kn_config_free(copy); copy = NULL; }
    return copy;
}

int kn_resume(kn_ctx *ctx, const char *run_dir, const kn_train_options *opt, kn_train_result *res) {
    char p[4200];
    snprintf(p, sizeof p, "%s/config.ini", run_dir);
    if (!kn_file_exists(p)) {
        struct stat sb;
        if (stat(run_dir, &sb) != 0) return kn_err(ctx, KN_ERR_IO, "cannot resume '%s': %s", run_dir, strerror(errno));
        return kn_err(ctx, KN_ERR_IO, "cannot resume '%s': it holds no config.ini (is it a kiln run directory? A run stopped before "
                                      "it wrote config.ini had not begun: start it again with kiln train CONFIG --run-dir %s)",
                      run_dir, run_dir);
    }
    kn_config *cfg = NULL;
    int rc = kn_config_load(ctx, p, &cfg);
    if (rc) return rc;
    kn_train_options o;
    if (opt) o = *opt;
    else kn_train_options_init(&o);
    /* a memory budget is not a change of the run (its micro-batch split is kept) */
    char a[1100];
    if (!rc && o.budget) {
        snprintf(a, sizeof a, "train.budget=%s", o.budget);
        rc = kn_config_set(ctx, cfg, a);
    }
    if (!rc && o.fit) rc = kn_config_set(ctx, cfg, "train.fit=true");
    if (rc) { kn_config_free(cfg); return rc; }
    o.run_dir = run_dir;
    o.resume_only = 1;
    rc = kn_train(ctx, cfg, &o, res);
    kn_config_free(cfg);
    return rc;
}

