/* kiln — CPU backend glue to oneDNN: one engine and stream per graph (its backend
 * context, g->bctx: graphs on different threads share no stream), primitives created
 * once at plan time with a user-managed scratchpad (placed in
 * the arena by the planner), memory objects re-pointed at each execution. */
#ifndef KN_DNNL_GLUE_H
#define KN_DNNL_GLUE_H

#include <oneapi/dnnl/dnnl.h>

#include "core/core.h"
#include "graph/graph.h"

#define KN_DNNL_MAX_ARGS 8

typedef struct {
    dnnl_primitive_t prim;
    int nargs;
    int arg_ids[KN_DNNL_MAX_ARGS];   /* DNNL_ARG_* in the order ptrs are passed to exec */
    dnnl_memory_t mem[KN_DNNL_MAX_ARGS];
    dnnl_memory_t scratch_mem;
    size_t scratch;                  /* scratchpad bytes */
    dnnl_stream_t stream;            /* its graph's stream (kn_dnnl_ctx), not owned */
} kn_dnnl_prim;

/* A graph's oneDNN engine and stream. */
typedef struct {
    dnnl_engine_t engine;
    dnnl_stream_t stream;
} kn_dnnl_ctx;
/* Graph g's context, made on first use (at plan time, by the thread planning g) and
 * freed by kn_g_free; NULL with an error in ctx if oneDNN cannot make one. */
kn_dnnl_ctx *kn_dnnl_ctx_of(kn_ctx *ctx, kn_graph *g);
/* Make an attribute with user scratchpad mode (caller destroys it). */
dnnl_primitive_attr_t kn_dnnl_attr(void);
/* Create the primitive for pd (takes ownership of nothing; pd may be destroyed after)
 * with memory objects for the given args. */
int kn_dnnl_prim_init(kn_ctx *ctx, const kn_dnnl_ctx *dc, kn_dnnl_prim *p, const_dnnl_primitive_desc_t pd,
                      const int *arg_ids, int nargs, const char *what);
/* Run with ptrs[i] bound to arg_ids[i]; scratch must hold p->scratch bytes. */
void kn_dnnl_exec(kn_dnnl_prim *p, void *const *ptrs, void *scratch);
void kn_dnnl_prim_free(kn_dnnl_prim *p);

/* A reorder (layout conversion) from src_md to dst_md. Args: FROM, TO. Its scratchpad,
 * if any, is oneDNN's own (p->scratch is 0). */
int kn_dnnl_reorder(kn_ctx *ctx, const kn_dnnl_ctx *dc, kn_dnnl_prim *p, const dnnl_memory_desc_t *src_md,
                    const dnnl_memory_desc_t *dst_md);
/* Run a reorder made by kn_dnnl_reorder. */
void kn_dnnl_reorder_exec(kn_dnnl_prim *p, const void *from, void *to);

/* C[M,N] (row-major) = op(A)[M,K] * op(B)[K,N] (+ bias[N]).
 * ta: A is stored [K,M]; tb: B is stored [N,K]. Args order: SRC(A), WEIGHTS(B), [BIAS], DST(C). */
int kn_dnnl_matmul(kn_ctx *ctx, const kn_dnnl_ctx *dc, kn_dnnl_prim *p, int64_t M, int64_t N, int64_t K, int ta,
                   int tb, int bias);
/* The same with C = max(C, 0) applied in the same pass (oneDNN eltwise post-op) when relu. */
int kn_dnnl_matmul_ex(kn_ctx *ctx, const kn_dnnl_ctx *dc, kn_dnnl_prim *p, int64_t M, int64_t N, int64_t K, int ta,
                      int tb, int bias, int relu);

#endif
