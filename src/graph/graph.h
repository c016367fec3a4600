/* kiln — graph, autodiff, planner and executor.
 *
 * Define: layers call kn_g_input / kn_g_param / kn_g_state / kn_g_op to build a
 *         static forward graph; each op's shape rule runs as the node is added.
 * Plan:   kn_g_compile appends the backward (reverse order, gradients summed where a
 *         tensor feeds several ops), assigns every tensor a step interval [first,last]
 *         and an offset in one arena (best fit by liveness), creates backend
 *         primitives once, and allocates the arena once.
 * Run:    kn_g_forward / kn_g_backward run the step list (or a sub-range) with no
 *         allocation.
 *
 * Parameters, their gradients and persistent state (BatchNorm running statistics)
 * live in a kn_store shared by every graph built from one model (train and eval
 * graphs), packed contiguously so an optimizer makes one pass over them. */
#ifndef KN_GRAPH_H
#define KN_GRAPH_H

#include <stdio.h>

#include "core/core.h"

typedef struct kn_graph kn_graph;
typedef struct kn_node kn_node;
typedef struct kn_op kn_op;
typedef struct kn_rt kn_rt;
typedef struct kn_backend_iface kn_backend_iface; /* a backend (backend/backend.h) */
typedef struct kn_kernels kn_kernels;             /* one op's kernels on one backend (backend/backend.h) */

/* ---------------- parameter store ---------------- */
typedef enum {
    KN_INIT_ZEROS = 0, KN_INIT_ONES, KN_INIT_CONST,
    KN_INIT_KAIMING_UNIFORM, KN_INIT_KAIMING_NORMAL,
    KN_INIT_XAVIER_UNIFORM, KN_INIT_XAVIER_NORMAL,
    KN_INIT_UNIFORM, KN_INIT_NORMAL
} kn_init_kind;

typedef struct {
    kn_init_kind kind;
    double a;      /* CONST: value; UNIFORM: bound; NORMAL: std; KAIMING: leaky slope */
    int64_t fan_in, fan_out;
} kn_init;

typedef struct {
    char name[96];   /* "conv1.weight" */
    char layer[64];
    kn_shape shape;
    int64_t offset;  /* in floats, into store->param/grad (params) or store->state */
    int64_t numel;
    int is_state;    /* 0: trainable parameter; 1: persistent state (no gradient) */
    kn_init init;
} kn_store_entry;

typedef struct {
    kn_store_entry *e;
    int n, cap;
    int64_t nparam, nstate;   /* float counts */
    float *param, *grad, *state; /* allocated by kn_store_alloc */
    int frozen;                /* after alloc: new entries are errors */
} kn_store;

void kn_store_init(kn_store *s);
void kn_store_free(kn_store *s);
/* Allocate param/grad/state once all graphs have registered their entries. */
int kn_store_alloc(kn_ctx *ctx, kn_store *s);
/* Fill parameters and states from their initialisers, drawing from rng in entry order. */
void kn_store_init_values(kn_store *s, kn_rng *rng);
const kn_store_entry *kn_store_find(const kn_store *s, const char *name);
float *kn_store_data(kn_store *s, const kn_store_entry *e); /* param or state pointer */

/* ---------------- values (tensors) ---------------- */
typedef enum {
    KN_VAL_ACT = 0,  /* produced by a node, lives in the arena */
    KN_VAL_INPUT,    /* fed by the caller each step (images, labels), arena */
    KN_VAL_PARAM,    /* trainable, in the store */
    KN_VAL_STATE,    /* persistent, in the store */
    KN_VAL_GRAD,     /* gradient of an ACT value (arena) */
    KN_VAL_PGRAD,    /* gradient of a PARAM (store->grad) */
    KN_VAL_TEMP,     /* temporary for a gradient contribution that is summed */
    KN_VAL_SCRATCH   /* per-step scratch of a node */
} kn_val_kind;

typedef struct {
    char name[96];
    kn_dtype dtype;
    kn_shape shape;
    kn_val_kind kind;
    int producer;    /* node index, -1 for inputs/params/states */
    int out_slot;    /* which output of the producer */
    int needs_grad;  /* a gradient flows to it */
    int grad;        /* value id of its gradient, -1 if none */
    int store_idx;   /* PARAM/STATE/PGRAD: index into the store's entries */
    int keep;        /* read by the caller after the step (loss, logits): live to the end */
    /* planned */
    size_t bytes;    /* rounded up to KN_ALIGN (its room in the arena) */
    size_t nbytes;   /* numel * dtype size: the bytes a step actually writes */
    int first, last; /* step interval in which it is live */
    int first2, last2; /* second interval (a recomputed activation), -1 if none */
    int alias;       /* -1, or the gradient whose arena bytes this one takes over in place
                      * (an in-place backward: see kn_op.bwd_inplace); same offset */
    size_t offset;   /* arena offset (arena kinds) */
    float *data;     /* resolved pointer (use kn_ptr / kn_iptr) */
} kn_value;

/* ---------------- ops ---------------- */
#define KN_MAX_IN 8
#define KN_MAX_OUT 4
#define KN_NATTR_I 16
#define KN_NATTR_F 8

/* Per-op attributes; each op documents what its slots mean. */
typedef struct {
    int64_t i[KN_NATTR_I];
    double f[KN_NATTR_F];
} kn_attrs;

struct kn_node {
    const kn_op *op;
    int nin, nout;
    int in[KN_MAX_IN];
    int out[KN_MAX_OUT]; /* out[0]: the result; others: saved for backward (no grad) */
    kn_attrs a;
    char layer[64];      /* layer (config section) that emitted it */
    int index;
    int recompute;       /* 0, or a recompute group: its outputs are not kept for backward
                          * but recomputed there, with the nodes of its group it is
                          * connected to (a block), from the block's inputs */
    void *priv;          /* backend state (oneDNN primitives), made by prepare() */
    size_t scratch_fwd, scratch_bwd; /* bytes, set by prepare() */
    char impl[32];       /* the algorithm prepare() chose where an op has several
                          * ("direct", "winograd"), for reports; "" otherwise */
    int scratch_fwd_val, scratch_bwd_val; /* value ids, -1 if none */
    const kn_kernels *k; /* the graph's backend's kernels for op, set by kn_g_plan */
};

/* Runtime state handed to kernels. */
struct kn_rt {
    kn_graph *g;
    int training;
    uint64_t seed;       /* run seed (dropout masks are hashed from seed, step, node) */
    int64_t step;        /* global training step */
    void *scratch;       /* this step's scratch (scratch_fwd or scratch_bwd bytes) */
    int64_t rows;        /* evaluation: the batch's valid samples (the rest is padding), which
                          * losses and metrics count (kn_valid_numel); 0: all. Training
                          * batches are always whole (0). */
};

/* Backends (backend/backend.h): each is an interface struct with its own per-graph
 * context; a graph is made for one (kn_g_new: the CPU) and nothing above the backend
 * knows which one runs. */
typedef enum { KN_BACKEND_CPU = 0, KN_NUM_BACKENDS } kn_backend;

/* Every op has an id (kn_op.id) by which backends register their kernels (e.g.
 * backend/cpu/registry.c) and passes may ask what an op is. Columns: the id's suffix and
 * the op struct's name (kn_op_<name>). */
#define KN_OP_LIST(X)                                                                                       \
    X(LINEAR, linear) X(LINEAR_RELU, linear_relu) X(CONV2D, conv2d) X(MAXPOOL2D, maxpool2d)                 \
    X(AVGPOOL2D, avgpool2d) X(GLOBAL_AVGPOOL, global_avgpool) X(BATCHNORM, batchnorm)                       \
    X(BATCHNORM_RELU, batchnorm_relu) X(RELU, relu) X(LEAKY_RELU, leaky_relu) X(GELU, gelu) X(SILU, silu)   \
    X(TANH, tanh) X(SIGMOID, sigmoid) X(DROPOUT, dropout) X(RESHAPE, reshape) X(ADD, add) X(SUB, sub)      \
    X(MUL, mul) X(DIV, div) X(CONCAT, concat) X(EXP, exp) X(LOG, log) X(SQRT, sqrt) X(RSQRT, rsqrt)        \
    X(NEG, neg) X(SQUARE, square) X(AFFINE, affine) X(SUM, sum) X(MEAN, mean) X(MAX, max)                  \
    X(SOFTMAX, softmax) X(LOG_SOFTMAX, log_softmax) X(MATMUL, matmul) X(PERMUTE, permute) X(SLICE, slice)  \
    X(GATHER, gather) X(LAYERNORM, layernorm) X(SOFTMAX_CE, softmax_ce) X(MSE, mse)                        \
    X(BCE_LOGITS, bce_logits) X(L1, l1) X(HUBER, huber) X(ACCURACY, accuracy)                              \
    X(TOPK_ACCURACY, topk_accuracy) X(MAE, mae) X(RMSE, rmse) X(R2, r2)

#define KN_OP_ID_ENUM_(ID, name) KN_OP_##ID,
typedef enum { KN_OP_LIST(KN_OP_ID_ENUM_) KN_NUM_OPS } kn_op_id;
#undef KN_OP_ID_ENUM_

/* The op with that id (ops/registry.c), NULL when out of range. */
const kn_op *kn_op_by_id(int id);

/* Op properties (kn_op.flags), asked through kn_op_has() — never by comparing an op's
 * name or address outside the op definitions and the graph passes
 * (scripts/check_op_identity.sh). An op without a .flags initialiser has none. */
enum {
    /* output 0 has input 0's memory layout, and the kernels take input 0 channel-blocked
     * (backend/cpu/layout.h): batchnorm, batchnorm_relu, relu, maxpool2d */
    KN_OPF_LAYOUT_PRESERVING = 1u << 0,
    /* reads a channel-blocked input 0 (converting it where it needs to): conv2d, reshape */
    KN_OPF_BLOCKED_IN = 1u << 1,
    /* its output 0 may be stored channel-blocked (a layout source): conv2d */
    KN_OPF_BLOCKED_OUT = 1u << 2,
    /* output 0 is a ReLU's (health counts its dead units): relu, batchnorm_relu, linear_relu */
    KN_OPF_RELU_OUT = 1u << 3,
    /* y = max(x, 0) and nothing else (what the fusion pass folds into .fused_relu): relu */
    KN_OPF_RELU = 1u << 4,
    /* a 2-D convolution (plans count them): conv2d */
    KN_OPF_CONV = 1u << 5,
    /* batch normalisation, fused variants included (plans ask): batchnorm, batchnorm_relu */
    KN_OPF_BATCHNORM = 1u << 6,
};

struct kn_op {
    kn_op_id id;                /* KN_OP_*: backends register kernels by it */
    const char *name;
    unsigned flags;             /* KN_OPF_* */
    /* the same op with a ReLU applied to output 0 in the same pass (graph/fuse.c folds a
     * relu that is its output's only reader into it), NULL if none */
    const kn_op *fused_relu;
    /* Shape rule: check the inputs (n->in are set) and declare the outputs with
     * kn_g_declare_out. Errors say what was expected; the caller adds the layer. */
    int (*infer)(kn_graph *g, kn_node *n, kn_ctx *ctx);
    double (*flops_fwd)(const kn_graph *g, const kn_node *n);
    double (*flops_bwd)(const kn_graph *g, const kn_node *n);
    /* Bitmasks: which inputs / outputs the backward reads (keeps them alive). */
    unsigned bwd_reads_in, bwd_reads_out;
    /* Bitmask of inputs through which a gradient can flow (e.g. not labels). */
    unsigned diff_inputs;
    /* Bitmask of inputs whose gradient the backward may write over the gradient of
     * output 0 (same size): for every element k it reads dout[0][k] only before it
     * writes din[i][k], and never after (other din[j] included). The planner then puts
     * din[i] in the bytes of dout[0] when dout[0] is not read after this step. */
    unsigned bwd_inplace;
    /* No kernels here: each backend registers its own by .id (backend/backend.h). */
};

/* Whether op has every property in f (KN_OPF_*). */
static inline int kn_op_has(const kn_op *op, unsigned f) { return op && (op->flags & f) == f; }

/* ---------------- graph ---------------- */
typedef struct {
    int kind;        /* KN_STEP_FWD, KN_STEP_BWD, KN_STEP_ZERO */
    int node;
    int din[KN_MAX_IN];   /* per input: value id to write the gradient to, -1 none */
    int accum[KN_MAX_IN]; /* 1: din is a TEMP to be added into the input's gradient */
    int zero_val;         /* KN_STEP_ZERO: gradient value to clear */
    int backup;           /* KN_STEP_RECOMP: arena value that saves the node's STATE inputs
                           * around the recomputation (running statistics), -1 none */
} kn_step;
/* KN_STEP_RECOMP: a forward node run again inside the backward to rebuild activations
 * that were dropped after the forward (activation recomputation). */
enum { KN_STEP_FWD = 0, KN_STEP_BWD = 1, KN_STEP_ZERO = 2, KN_STEP_RECOMP = 3 };

struct kn_graph {
    kn_store *store;
    int training;
    const kn_backend_iface *be; /* the backend that plans and runs it (backend/backend.h) */
    int isa;             /* the backend's kernel variant, set by its graph_init (CPU: the kn_isa
                          * instruction-set path, backend/cpu/isa.h), fixed for the graph's life */
    int blocking;        /* 1 (kn_g_new's default): the backend may store activations in its own
                          * layouts (CPU: channel-blocked, backend/cpu/layout.h); 0: all plain.
                          * Set before kn_g_plan. */
    void *bctx;          /* the backend's per-graph context (CPU: oneDNN engine and stream,
                          * backend/cpu/dnnl_glue.h), made on first use; nothing is shared
                          * between graphs, so graphs can run on different threads at once */
    void (*bctx_free)(void *bctx);
    kn_value *v;
    int nv, vcap;
    kn_node *n;
    int nn, ncap;
    int loss;            /* value id of the scalar loss, -1 for forward-only graphs */
    kn_step *steps;
    int nsteps, nfwd;    /* steps[0..nfwd) are forward, the rest backward */
    void *arena;
    size_t arena_bytes;  /* planned peak (room for every tensor, KN_ALIGN-rounded) */
    size_t arena_used;   /* highest byte a step writes + 1: max(offset + nbytes) */
    size_t naive_bytes;  /* every arena tensor its own buffer */
    int planned, compiled;
    int own_arena;       /* 1: arena allocated by kn_g_bind (0: lent by the caller) */
    char cur_layer[64];  /* layer name stamped on nodes added next */
    int cur_recompute;   /* recompute group stamped on nodes added next */
};

kn_graph *kn_g_new(kn_store *store, int training);
void kn_g_free(kn_graph *g);
void kn_g_set_layer(kn_graph *g, const char *layer);
/* Nodes added next keep their outputs (0) or are recomputed in backward as part of
 * recompute group `group` (> 0; e.g. one per block of layers). */
void kn_g_set_recompute(kn_graph *g, int group);

int kn_g_input(kn_graph *g, const char *name, kn_dtype dt, kn_shape shape);
/* Registers (or, for a second graph, finds) a store entry of that name. */
int kn_g_param(kn_ctx *ctx, kn_graph *g, const char *name, kn_shape shape, kn_init init);
int kn_g_state(kn_ctx *ctx, kn_graph *g, const char *name, kn_shape shape, kn_init init);
/* Add a node; runs the op's shape rule. Returns the value id of its first output,
 * or -1 with an error in ctx. */
int kn_g_op(kn_ctx *ctx, kn_graph *g, const kn_op *op, const int *in, int nin, const kn_attrs *a);
/* For infer(): declare output `slot` of node n. */
int kn_g_declare_out(kn_graph *g, kn_node *n, int slot, kn_dtype dt, kn_shape shape);
/* Mark a value as the loss (scalar) */
void kn_g_set_loss(kn_graph *g, int vid);
/* Mark a value as read by the caller after a step (keeps it alive to the end). */
void kn_g_keep(kn_graph *g, int vid);

/* Autodiff (if training and a loss is set) + recomputation steps + prepare (backend
 * primitives, scratch sizes) + liveness + arena offsets. Allocates no tensor memory:
 * afterwards arena_bytes, naive_bytes and every value's interval and offset are known. */
int kn_g_plan(kn_ctx *ctx, kn_graph *g);
/* Allocate the store if needed and give the graph its arena: `arena` (at least
 * arena_bytes, owned by the caller, e.g. shared by graphs that never run at the same
 * time) or, when NULL, one of its own. Resolves every value's data pointer. */
int kn_g_bind(kn_ctx *ctx, kn_graph *g, void *arena, size_t arena_size);
/* kn_g_plan + kn_g_bind(NULL). */
int kn_g_compile(kn_ctx *ctx, kn_graph *g);
/* Run forward steps. */
void kn_g_forward(kn_graph *g, kn_rt *rt);
/* Run backward steps (the loss gradient is seeded with 1, or, when
 * seed_grad != NULL, the gradient of the loss value is copied from it). */
void kn_g_backward(kn_graph *g, kn_rt *rt, const float *seed_grad);
/* Run steps [from, to). */
void kn_g_run_steps(kn_graph *g, kn_rt *rt, int from, int to);

static inline float *kn_ptr(const kn_graph *g, int vid) { return g->v[vid].data; }
static inline int32_t *kn_iptr(const kn_graph *g, int vid) { return (int32_t *)(void *)g->v[vid].data; }
static inline const kn_shape *kn_shp(const kn_graph *g, int vid) { return &g->v[vid].shape; }
static inline int64_t kn_numel(const kn_graph *g, int vid) { return kn_shape_numel(&g->v[vid].shape); }
/* The elements of value vid that belong to the valid samples of the batch: all of them,
 * or, with rt->rows > 0, the first rt->rows indices of its first (batch) axis. */
static inline int64_t kn_valid_numel(const kn_rt *rt, const kn_graph *g, int vid) {
    const kn_shape *s = &g->v[vid].shape;
    const int64_t m = kn_shape_numel(s);
    if (rt->rows > 0 && s->nd >= 1 && s->d[0] > rt->rows) return m / s->d[0] * rt->rows;
    return m;
}

/* ---------------- plan queries ---------------- */
/* Whether a value is placed in the arena (activations, inputs, gradients, temps, scratch). */
int kn_g_in_arena(const kn_value *v);
/* Whether a value is live at step s / two values are live at a common step. */
int kn_g_live_at(const kn_value *v, int s);
int kn_g_live_overlap(const kn_value *a, const kn_value *b);
/* Activations (and inputs) kept from the forward into the backward: live across the
 * boundary step nfwd in their first interval. 0 for a forward-only graph. */
int kn_g_is_saved(const kn_graph *g, int vid);
size_t kn_g_saved_bytes(const kn_graph *g);

/* Per-layer accounting for plan reports; layers in graph order, the graph inputs
 * first as a row named "input". */
typedef struct {
    char layer[64];
    kn_shape out;          /* the layer's result */
    int64_t params;        /* trainable parameter count */
    double flops_fwd;      /* forward FLOPs */
    double flops_bwd;      /* backward FLOPs, recomputation included */
    size_t param_bytes;    /* parameters and persistent state in the store */
    size_t grad_bytes;     /* parameter gradients in the store */
    size_t saved_bytes;    /* activations it produced that are kept for backward */
    size_t scratch_bytes;  /* backend scratch of its nodes (forward + backward) */
    int recompute;         /* its activations are recomputed in backward */
    char impl[32];         /* the algorithm its node chose (kn_node.impl), "" if none */
} kn_layer_stats;
/* Returns the number of rows (malloc'ed in *out) or -1 when out of memory. */
int kn_g_layer_stats(const kn_graph *g, kn_layer_stats **out);
/* A per-layer table of a planned graph (the CLI's report is in train/plan.c). */
void kn_g_print_plan(const kn_graph *g, FILE *f);

/* ---------------- the op registry ---------------- */
extern const kn_op kn_op_linear, kn_op_conv2d, kn_op_maxpool2d, kn_op_avgpool2d,
    kn_op_global_avgpool, kn_op_batchnorm, kn_op_relu, kn_op_leaky_relu, kn_op_gelu,
    kn_op_silu, kn_op_tanh, kn_op_sigmoid, kn_op_dropout, kn_op_reshape, kn_op_add,
    kn_op_concat, kn_op_softmax_ce, kn_op_mse;

/* Primitive ops (docs/ARCHITECTURE.md, "Primitive ops", has their inputs, attribute
 * slots and shape rules): binary element-wise with broadcasting (add above, sub, mul,
 * div: ops/binary.c), unary maths (ops/unary.c), reductions (ops/reduce.c), softmax and
 * log-softmax, batched matmul, permute, slice, gather, layer normalisation. */
extern const kn_op kn_op_sub, kn_op_mul, kn_op_div;
extern const kn_op kn_op_exp, kn_op_log, kn_op_sqrt, kn_op_rsqrt, kn_op_neg, kn_op_square, kn_op_affine;
extern const kn_op kn_op_sum, kn_op_mean, kn_op_max;
extern const kn_op kn_op_softmax, kn_op_log_softmax;
extern const kn_op kn_op_matmul, kn_op_permute, kn_op_slice, kn_op_gather, kn_op_layernorm;

/* Losses (scalar output [1]; softmax_ce and mse above): binary cross-entropy with logits,
 * L1, Huber. Metrics (forward only, no gradient; each outputs per-batch sufficient
 * statistics that ops/metric.h aggregates over an evaluation set): accuracy, top-k
 * accuracy, MAE, RMSE, R^2. docs/ARCHITECTURE.md, "Losses and metrics", has their inputs
 * and attribute slots. */
extern const kn_op kn_op_bce_logits, kn_op_l1, kn_op_huber;
extern const kn_op kn_op_accuracy, kn_op_topk_accuracy, kn_op_mae, kn_op_rmse, kn_op_r2;

/* conv2d's algorithm attribute (a.i[5]); the config names them auto, direct, winograd */
enum { KN_CONV_AUTO = 0, KN_CONV_DIRECT = 1, KN_CONV_WINOGRAD = 2 };

#endif
