#include "backend/cpu/dnnl_glue.h"

#include <string.h>

#include "backend/cpu/isa.h"

#include <pthread.h>

#include <stdlib.h>

/* KN_MAX_ISA caps oneDNN too, once, before its first engine: oneDNN's cap is a
 * process-wide setting that can only be set before any kernel runs (written once,
 * read-only afterwards; pthread_once makes two threads agree). */
static pthread_once_t cap_once = PTHREAD_ONCE_INIT;

static void ctx_free(void *p) {
    kn_dnnl_ctx *c = p;
    if (c->stream) dnnl_stream_destroy(c->stream);
    if (c->engine) dnnl_engine_destroy(c->engine);
    free(c);
}

kn_dnnl_ctx *kn_dnnl_ctx_of(kn_ctx *ctx, kn_graph *g) {
    if (g->bctx) return g->bctx;
    pthread_once(&cap_once, kn_isa_cap_onednn);
    kn_dnnl_ctx *c = calloc(1, sizeof *c);
    if (!c) return kn_err(ctx, KN_ERR_NOMEM, "out of memory"), NULL;
    if (dnnl_engine_create(&c->engine, dnnl_cpu, 0) != dnnl_success ||
        dnnl_stream_create(&c->stream, c->engine, dnnl_stream_default_flags) != dnnl_success) {
        ctx_free(c);
        return kn_err(ctx, KN_ERR_INTERNAL, "oneDNN cannot create a CPU engine and stream"), NULL;
    }
    g->bctx = c;
    g->bctx_free = ctx_free;
    return c;
}

dnnl_primitive_attr_t kn_dnnl_attr(void) {
    dnnl_primitive_attr_t a = NULL;
    if (dnnl_primitive_attr_create(&a) != dnnl_success) return NULL;
    dnnl_primitive_attr_set_scratchpad_mode(a, dnnl_scratchpad_mode_user);
    return a;
}

int kn_dnnl_prim_init(kn_ctx *ctx, const kn_dnnl_ctx *dc, kn_dnnl_prim *p, const_dnnl_primitive_desc_t pd,
                      const int *arg_ids, int nargs, const char *what) {
    memset(p, 0, sizeof *p);
    p->stream = dc->stream;
    dnnl_status_t st = dnnl_primitive_create(&p->prim, pd);
    if (st != dnnl_success)
        return kn_err(ctx, KN_ERR_INTERNAL, "oneDNN cannot create the %s primitive (status %d)", what, (int)st);
    p->nargs = nargs;
    for (int i = 0; i < nargs; i++) {
        p->arg_ids[i] = arg_ids[i];
        const dnnl_memory_desc_t *md = dnnl_primitive_desc_query_md(pd, dnnl_query_exec_arg_md, arg_ids[i]);
        if (!md || dnnl_memory_create(&p->mem[i], md, dc->engine, DNNL_MEMORY_NONE) != dnnl_success) {
            kn_dnnl_prim_free(p);
            return kn_err(ctx, KN_ERR_INTERNAL, "oneDNN: %s has no memory for argument %d", what, arg_ids[i]);
        }
    }
    const dnnl_memory_desc_t *smd = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
    p->scratch = smd ? dnnl_memory_desc_get_size(smd) : 0;
    if (p->scratch && dnnl_memory_create(&p->scratch_mem, smd, dc->engine, DNNL_MEMORY_NONE) != dnnl_success) {
        kn_dnnl_prim_free(p);
        return kn_err(ctx, KN_ERR_INTERNAL, "oneDNN: %s scratchpad", what);
    }
    return KN_OK;
}

void kn_dnnl_exec(kn_dnnl_prim *p, void *const *ptrs, void *scratch) {
    dnnl_exec_arg_t args[KN_DNNL_MAX_ARGS + 1];
    int n = 0;
    for (int i = 0; i < p->nargs; i++) {
        dnnl_memory_set_data_handle(p->mem[i], ptrs[i]);
        args[n].arg = p->arg_ids[i];
        args[n].memory = p->mem[i];
        n++;
    }
    if (p->scratch_mem) {
        dnnl_memory_set_data_handle(p->scratch_mem, scratch);
        args[n].arg = DNNL_ARG_SCRATCHPAD;
        args[n].memory = p->scratch_mem;
        n++;
    }
    dnnl_primitive_execute(p->prim, p->stream, n, args);
    dnnl_stream_wait(p->stream);
}

void kn_dnnl_prim_free(kn_dnnl_prim *p) {
    for (int i = 0; i < KN_DNNL_MAX_ARGS; i++)
        if (p->mem[i]) dnnl_memory_destroy(p->mem[i]);
    if (p->scratch_mem) dnnl_memory_destroy(p->scratch_mem);
    if (p->prim) dnnl_primitive_destroy(p->prim);
    memset(p, 0, sizeof *p);
}

int kn_dnnl_reorder(kn_ctx *ctx, const kn_dnnl_ctx *dc, kn_dnnl_prim *p, const dnnl_memory_desc_t *src_md,
                    const dnnl_memory_desc_t *dst_md) {
    dnnl_primitive_desc_t pd = NULL;
    if (dnnl_reorder_primitive_desc_create(&pd, src_md, dc->engine, dst_md, dc->engine, NULL) != dnnl_success)
        return kn_err(ctx, KN_ERR_INTERNAL, "oneDNN: no reorder between these layouts");
    int args[2] = {DNNL_ARG_FROM, DNNL_ARG_TO};
    int rc = kn_dnnl_prim_init(ctx, dc, p, pd, args, 2, "reorder");
    p->scratch = 0;
    if (p->scratch_mem) {
        dnnl_memory_destroy(p->scratch_mem);
        p->scratch_mem = NULL;
    }
    dnnl_primitive_desc_destroy(pd);
    return rc;
}

void kn_dnnl_reorder_exec(kn_dnnl_prim *p, const void *from, void *to) {
    void *ptrs[2] = {(void *)from, to};
    kn_dnnl_exec(p, ptrs, NULL);
}

int kn_dnnl_matmul(kn_ctx *ctx, const kn_dnnl_ctx *dc, kn_dnnl_prim *p, int64_t M, int64_t N, int64_t K, int ta,
                   int tb, int bias) {
    return kn_dnnl_matmul_ex(ctx, dc, p, M, N, K, ta, tb, bias, 0);
}

int kn_dnnl_matmul_ex(kn_ctx *ctx, const kn_dnnl_ctx *dc, kn_dnnl_prim *p, int64_t M, int64_t N, int64_t K, int ta,
                      int tb, int bias, int relu) {
    dnnl_memory_desc_t a_md, b_md, c_md, bias_md;
    dnnl_dims_t ad = {M, K}, as = {ta ? 1 : K, ta ? M : 1};
    dnnl_dims_t bd = {K, N}, bs = {tb ? 1 : N, tb ? K : 1};
    dnnl_dims_t cd = {M, N}, cs = {N, 1};
    dnnl_dims_t biasd = {1, N}, biass = {N, 1};
    dnnl_memory_desc_init_by_strides(&a_md, 2, ad, dnnl_f32, as);
    dnnl_memory_desc_init_by_strides(&b_md, 2, bd, dnnl_f32, bs);
    dnnl_memory_desc_init_by_strides(&c_md, 2, cd, dnnl_f32, cs);
    dnnl_memory_desc_init_by_strides(&bias_md, 2, biasd, dnnl_f32, biass);
    dnnl_matmul_desc_t md;
    if (dnnl_matmul_desc_init(&md, &a_md, &b_md, bias ? &bias_md : NULL, &c_md) != dnnl_success)
        return kn_err(ctx, KN_ERR_INTERNAL, "oneDNN: bad matmul %lldx%lldx%lld", (long long)M, (long long)N, (long long)K);
    dnnl_primitive_attr_t attr = kn_dnnl_attr();
    if (relu) {
        dnnl_post_ops_t po = NULL;
        dnnl_post_ops_create(&po);
        dnnl_post_ops_append_eltwise(po, 1.0f, dnnl_eltwise_relu, 0.0f, 0.0f);
        dnnl_primitive_attr_set_post_ops(attr, po);
        dnnl_post_ops_destroy(po);
    }
    dnnl_primitive_desc_t pd = NULL;
    dnnl_status_t st = dnnl_primitive_desc_create(&pd, &md, attr, dc->engine, NULL);
    dnnl_primitive_attr_destroy(attr);
    if (st != dnnl_success) return kn_err(ctx, KN_ERR_INTERNAL, "oneDNN: no matmul implementation (status %d)", (int)st);
    int args_b[4] = {DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_BIAS, DNNL_ARG_DST};
    int args_nb[3] = {DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_DST};
    int rc = kn_dnnl_prim_init(ctx, dc, p, pd, bias ? args_b : args_nb, bias ? 4 : 3, "matmul");
    dnnl_primitive_desc_destroy(pd);
    return rc;
}
