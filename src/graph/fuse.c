/* kiln — graph passes before planning: ReLU fusion. See fuse.h. */
#define _POSIX_C_SOURCE 200809L
#include "graph/fuse.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

kn_fuse_opts kn_fuse_defaults(void) {
    kn_fuse_opts o = {.relu = 1, .named = NULL, .nnamed = 0};
    return o;
}

/* The result of node k's layer (output 0 of the layer's last node) is in o->named. */
static int layer_named(const kn_graph *g, int k, const kn_fuse_opts *o) {
    int last = k;
    for (int j = k + 1; j < g->nn; j++)
        if (!strcmp(g->n[j].layer, g->n[k].layer)) last = j;
    for (int i = 0; i < o->nnamed; i++)
        if (o->named[i] == g->n[last].out[0]) return 1;
    return 0;
}

static int readers(const kn_graph *g, int vid) {
    int r = 0;
    for (int k = 0; k < g->nn; k++)
        for (int i = 0; i < g->n[k].nin; i++) r += g->n[k].in[i] == vid;
    return r;
}

/* Remove node `dead` (whose outputs are gone already): later nodes move down one index,
 * and the intermediate results named after their node's index (kn_g_declare_out's
 * "layer/op#index") are renamed as they would have been named had the node never been
 * added. */
static void remove_node(kn_graph *g, int dead) {
    for (int k = dead + 1; k < g->nn; k++) {
        kn_node *n = &g->n[k];
        for (int j = 0; j < n->nout; j++) {
            kn_value *v = n->out[j] >= 0 ? &g->v[n->out[j]] : NULL;
            if (!v) continue;
            v->producer = k - 1;
            char old[96], now[96];
            snprintf(old, sizeof old, "%s/%s#%d", n->layer, n->op->name, k);
            if (j == 0 && !strcmp(v->name, old)) {
                snprintf(now, sizeof now, "%s/%s#%d", n->layer, n->op->name, k - 1);
                kn_strlcpy(v->name, now, sizeof v->name);
            }
        }
        n->index = k - 1;
    }
    memmove(&g->n[dead], &g->n[dead + 1], (size_t)(g->nn - dead - 1) * sizeof *g->n);
    g->nn--;
}

static int shift_id(int id, int dead) { return id > dead ? id - 1 : id; }

/* Remove value `dead` (no node reads or produces it any more): later ids move down one. */
static void remove_value(kn_graph *g, int dead, int *vids, int nvids) {
    memmove(&g->v[dead], &g->v[dead + 1], (size_t)(g->nv - dead - 1) * sizeof *g->v);
    g->nv--;
    for (int k = 0; k < g->nn; k++) {
        kn_node *n = &g->n[k];
        for (int i = 0; i < n->nin; i++) n->in[i] = shift_id(n->in[i], dead);
        for (int j = 0; j < n->nout; j++)
            if (n->out[j] >= 0) n->out[j] = shift_id(n->out[j], dead);
    }
    if (g->loss >= 0) g->loss = shift_id(g->loss, dead);
    for (int i = 0; i < nvids; i++)
        if (vids[i] >= 0) vids[i] = shift_id(vids[i], dead);
}

/* Node k followed by a relu that is the only reader of its result: fold the relu in. */
static int fuse_relu_at(kn_graph *g, int k, const kn_fuse_opts *o, int *vids, int nvids) {
    kn_node *p = &g->n[k], *r = &g->n[k + 1];
    if (!p->op->fused_relu || !kn_op_has(r->op, KN_OPF_RELU) || r->nin != 1 || r->nout != 1) return 0;
    const int x = p->out[0], y = r->out[0];
    if (r->in[0] != x || g->v[x].keep || x == g->loss || readers(g, x) != 1 || layer_named(g, k, o)) return 0;
    p->op = p->op->fused_relu;
    g->v[x].keep |= g->v[y].keep;
    if (g->loss == y) g->loss = x;
    for (int j = 0; j < g->nn; j++)
        for (int i = 0; i < g->n[j].nin; i++)
            if (g->n[j].in[i] == y) g->n[j].in[i] = x;
    for (int i = 0; i < nvids; i++)
        if (vids[i] == y) vids[i] = x;
    remove_node(g, k + 1);
    remove_value(g, y, vids, nvids);
    return 1;
}

int kn_g_fuse(kn_ctx *ctx, kn_graph *g, const kn_fuse_opts *opts, int *vids, int nvids) {
    kn_fuse_opts o = opts ? *opts : kn_fuse_defaults();
    if (g->planned) return kn_err(ctx, KN_ERR_INTERNAL, "kn_g_fuse: the graph is planned already"), -1;
    /* the ids the pass renumbers: the caller's, then (a copy of) the named ones */
    int *ids = malloc((size_t)(nvids + o.nnamed + 1) * sizeof *ids);
    if (!ids) return kn_err(ctx, KN_ERR_NOMEM, "out of memory"), -1;
    for (int i = 0; i < nvids; i++) ids[i] = vids[i];
    for (int i = 0; i < o.nnamed; i++) ids[nvids + i] = o.named[i];
    o.named = ids + nvids;
    int fused = 0;
    for (int k = 0; o.relu && k + 1 < g->nn; k++) fused += fuse_relu_at(g, k, &o, ids, nvids + o.nnamed);
    for (int i = 0; i < nvids; i++) vids[i] = ids[i];
    free(ids);
    return fused;
}
