/* kiln — the backend interface.
 *
 * A backend runs planned graphs on one kind of device. It is a table of functions
 * (kn_backend_iface, the way ggml-backend-impl.h keeps one) plus a per-graph context
 * (kn_graph.bctx, made and freed by the backend). The graph, the planner, the trainer
 * and the ops ask the backend through this table and nothing else, so a new backend
 * (src/backend/cuda/) is a new table and a new directory of kernels, and no op, pass or
 * trainer file changes:
 *   - context: graph_init picks the kernel variant (g->isa) when a graph is made,
 *     graph_free releases what the backend made for it;
 *   - buffers: alloc/release of the arena, memset, copy, axpy on backend memory;
 *   - ops: one kn_kernels per op id (kernels(), registered by id: backend/cpu/registry.c),
 *     and supports_op() to refuse a node before anything is allocated;
 *   - layouts: which memory layout a value is stored in (layout(): plain, or the
 *     channel-blocked form the CPU uses between convolutions);
 *   - identity: what decides the bits of a step (path(): recorded in checkpoints, checked
 *     on resume) and the backend's fixed memory beside the plan (rss_extra()).
 *
 * An op's definition (shape rule, FLOPs, what its backward reads: src/ops/) includes no
 * backend header; its kernels live in the backend's directory (CPU: src/backend/cpu/
 * kernels/), forward and backward side by side. */
#ifndef KN_BACKEND_H
#define KN_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "graph/graph.h"

/* One op's kernels on one backend. */
struct kn_kernels {
    /* Create primitives (once, at plan time); set n->scratch_fwd/bwd. Optional. */
    int (*prepare)(kn_graph *g, kn_node *n, kn_ctx *ctx);
    void (*release)(kn_node *n);
    void (*forward)(const kn_node *n, kn_rt *rt);
    /* Write (overwrite, never accumulate) the gradient of input i into din[i] for
     * each i with din[i] != NULL. dout[j] is the gradient of output j (NULL for
     * saved outputs, which have none). Forward inputs/outputs are read through rt.
     * NULL: the op has no backward (metrics). */
    void (*backward)(const kn_node *n, kn_rt *rt, float *const *din, const float *const *dout);
};

struct kn_backend_iface {
    const char *name; /* "cpu" */
    /* ---- context ---- */
    /* Called by kn_g_new: set the graph's kernel variant (g->isa) and anything else the
     * backend keeps per graph (g->bctx may also be made later, on first use). */
    void (*graph_init)(kn_graph *g);
    /* Called by kn_g_free after every node's release(): free g->bctx. */
    void (*graph_free)(kn_graph *g);
    /* ---- buffers (the arena; sizes in bytes) ---- */
    void *(*alloc)(size_t bytes);
    void (*release)(void *p);
    void (*memset)(const kn_graph *g, void *dst, int byte, size_t bytes);
    void (*copy)(const kn_graph *g, void *dst, const void *src, size_t bytes);
    /* y[i] += a * x[i] for i < n (a == 1: y[i] += x[i], the gradient sums) */
    void (*axpy)(const kn_graph *g, float *y, float a, const float *x, int64_t n);
    /* ---- ops ---- */
    /* The kernels registered for op (by op->id), NULL when this backend has none. */
    const kn_kernels *(*kernels)(const kn_op *op);
    /* Whether node n of g can run here (kernels registered; for a training graph, a
     * backward where a gradient flows through it: `need_backward`). */
    int (*supports_op)(const kn_graph *g, const kn_node *n, int need_backward);
    /* ---- layouts ---- */
    /* The layout value vid is stored in, fixed once planned: 0 plain (the order its
     * shape says), or B > 0: a 4-D [N, C, H, W] value stored channel-blocked, nChw{B}c,
     * element (n, c, h, w) at ((n * C/B + c/B) * H*W + h*W + w) * B + c%B. */
    int (*layout)(const kn_graph *g, int vid);
    /* ---- identity ---- */
    /* What decides the bits of a step with this backend now ("kiln avx512 (x86-64-v4
     * kernels), oneDNN avx512_core"); written to buf, returned. */
    const char *(*path)(char *buf, size_t n);
    /* Resume: when `then` (the path() recorded in checkpoint file `ckpt`; NULL: none
     * recorded, no check) differs from this process's, a warning naming both and what
     * it means into msg, and 1. */
    int (*check_resume)(const char *then, const char *ckpt, char *msg, size_t n);
    /* Bytes the backend's libraries hold beside the plan on this machine (the memory
     * plan's baseline adds them). */
    size_t (*rss_extra)(void);
};

/* The backend's table (KN_BACKEND_CPU: backend/cpu/cpu_backend.c), NULL when this build
 * has none of that kind. */
const kn_backend_iface *kn_backend_get(kn_backend b);

#endif
