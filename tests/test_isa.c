/* The run-time ISA dispatch (backend/cpu/isa.h) and the thread-count advice
 * (backend/cpu/cpus.h):
 *  1. the cap from the environment: KN_MAX_ISA first, then oneDNN's ONEDNN_MAX_CPU_ISA
 *     and DNNL_MAX_CPU_ISA, in oneDNN's spellings; a value not understood sets no cap
 *     and is named;
 *  2. a graph takes the capped path when it is created and keeps it; its channel block
 *     follows the path; the portable build has each ISA's kernels (distinct code);
 *  3. `kiln --version` names the path, and KN_MAX_ISA alone caps oneDNN too;
 *  4. a training checkpoint records the path (metadata isa_path) and a resume on
 *     another path warns that it will not be bit-identical;
 *  5. --threads above the available cores warns, saying why it can be slower. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/cpus.h"
#include "backend/cpu/isa.h"
#include "backend/cpu/kernels.h"
#include "backend/cpu/layout.h"
#include "graph/graph.h"
#include "testutil.h"

static char D[1024];
static char g_out[65536], g_err[65536];

static void clear_env(void) {
    unsetenv("KN_MAX_ISA");
    unsetenv("ONEDNN_MAX_CPU_ISA");
    unsetenv("DNNL_MAX_CPU_ISA");
}

static void test_env_cap(void) {
    char *saved[3];
    const char *names[3] = {"KN_MAX_ISA", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"};
    for (int i = 0; i < 3; i++) saved[i] = getenv(names[i]) ? strdup(getenv(names[i])) : NULL;
    const char *var, *bad;
    clear_env();
    CHECK(kn_isa_env_cap(&var, &bad) == KN_ISA_AVX512 && !var && !bad, "no variable: a cap or a name");
    CHECK(kn_isa_select() == kn_isa_cpu(), "no cap, yet the path is not the CPU's best");
    setenv("DNNL_MAX_CPU_ISA", "AVX2", 1);
    CHECK(kn_isa_env_cap(&var, &bad) == KN_ISA_AVX2 && var && !strcmp(var, "DNNL_MAX_CPU_ISA"),
          "DNNL_MAX_CPU_ISA=AVX2 does not cap kiln");
    setenv("ONEDNN_MAX_CPU_ISA", "avx512_core_amx", 1);
    CHECK(kn_isa_env_cap(&var, &bad) == KN_ISA_AVX512 && !strcmp(var, "ONEDNN_MAX_CPU_ISA"),
          "ONEDNN_MAX_CPU_ISA does not come before DNNL_MAX_CPU_ISA");
    setenv("KN_MAX_ISA", "sse41", 1);
    CHECK(kn_isa_env_cap(&var, &bad) == KN_ISA_BASE && !strcmp(var, "KN_MAX_ISA"),
          "KN_MAX_ISA=sse41 is not the baseline or does not come first");
    CHECK(kn_isa_select() == KN_ISA_BASE, "KN_MAX_ISA=sse41: the path is %s", kn_isa_name(kn_isa_select()));
    setenv("KN_MAX_ISA", "ALL", 1);
    CHECK(kn_isa_env_cap(&var, &bad) == KN_ISA_AVX512, "KN_MAX_ISA=ALL is a cap");
    clear_env();
    setenv("KN_MAX_ISA", "avx9000", 1);
    char note[160];
    CHECK(kn_isa_env_cap(&var, &bad) == KN_ISA_AVX512 && !var && bad && !strcmp(bad, "KN_MAX_ISA"),
          "a value not understood is not named");
    kn_isa_cap_note(note, sizeof note);
    CHECK(strstr(note, "KN_MAX_ISA=avx9000") && strstr(note, "not understood") && strstr(note, "avx2"),
          "the note on a bad value: %s", note);
    clear_env();
    for (int i = 0; i < 3; i++)
        if (saved[i]) setenv(names[i], saved[i], 1), free(saved[i]);
}

/* every kernel entry point of the variants, as the baseline objects see them */
#ifndef KN_ISA_NATIVE
extern const kn_isa_kernels kn_isa_bn__avx2, kn_isa_bn__avx512, kn_isa_relu__avx2, kn_isa_relu__avx512,
    kn_isa_maxpool__avx2, kn_isa_maxpool__avx512, kn_isa_conv__avx2, kn_isa_conv__avx512;
#endif

static void test_graph_path(void) {
    char *saved = getenv("KN_MAX_ISA") ? strdup(getenv("KN_MAX_ISA")) : NULL;
    kn_store s;
    kn_store_init(&s);
    setenv("KN_MAX_ISA", "avx2", 1);
    kn_graph *g = kn_g_new(&s, 1);
    const kn_isa want = kn_isa_cpu() < KN_ISA_AVX2 ? kn_isa_cpu() : KN_ISA_AVX2;
    CHECK(g && g->isa == (int)want, "a graph made under KN_MAX_ISA=avx2 runs %s", g ? kn_isa_name((kn_isa)g->isa) : "-");
    setenv("KN_MAX_ISA", "all", 1);
    CHECK(g && g->isa == (int)want, "the graph's path changed with the environment after its creation");
    CHECK(g && kn_g_block(g) == kn_isa_block(want), "graph block %d on the %s path", g ? kn_g_block(g) : -1,
          kn_isa_name(want));
    kn_g_free(g);
    CHECK(kn_isa_block(KN_ISA_AVX512) == 16 && kn_isa_block(KN_ISA_AVX2) == 8 && kn_isa_block(KN_ISA_BASE) == 0,
          "channel blocks per path");
    kn_store_free(&s);
    if (saved) setenv("KN_MAX_ISA", saved, 1), free(saved);
    else unsetenv("KN_MAX_ISA");
#ifndef KN_ISA_NATIVE
    const kn_isa_kernels *k[] = {&kn_isa_bn__avx2, &kn_isa_bn__avx512, &kn_isa_relu__avx2, &kn_isa_relu__avx512,
                                 &kn_isa_maxpool__avx2, &kn_isa_maxpool__avx512, &kn_isa_conv__avx2,
                                 &kn_isa_conv__avx512};
    for (int i = 0; i < 8; i += 2)
        CHECK(k[i]->forward && k[i]->backward && k[i + 1]->forward && k[i + 1]->backward &&
                  k[i]->forward != k[i + 1]->forward && k[i]->backward != k[i + 1]->backward &&
                  k[i]->forward != kn_backend_get(KN_BACKEND_CPU)->kernels(&kn_op_relu)->forward,
              "kernel table %d: the AVX2 and AVX-512 entry points are missing or the same code", i / 2);
#else
    printf("native build: one path, no per-ISA kernels to check\n");
#endif
}

static const char *CFG;

static void test_version(void) {
    int st = kn_test_run_kiln(D, NULL, "--version", g_out, sizeof g_out, g_err, sizeof g_err);
    char now[256];
    kn_isa_path(now, sizeof now);
    CHECK(st == 0 && strstr(g_out, "isa: ") && strstr(g_out, now), "--version does not name the path '%s':\n%s", now,
          g_out);
    if (kn_isa_cpu() < KN_ISA_AVX2) {
        printf("this CPU has no AVX2: the cap to avx2 is not exercised\n");
        return;
    }
    st = kn_test_run_kiln(D, "env -u ONEDNN_MAX_CPU_ISA -u DNNL_MAX_CPU_ISA KN_MAX_ISA=avx2", "--version", g_out,
                          sizeof g_out, g_err, sizeof g_err);
    CHECK(st == 0 && strstr(g_out, "kiln avx2 (x86-64-v3 kernels), oneDNN avx2 (capped by KN_MAX_ISA=avx2)"),
          "KN_MAX_ISA=avx2 does not cap both kiln and oneDNN:\n%s%s", g_out, g_err);
    st = kn_test_run_kiln(D, "env -u KN_MAX_ISA -u ONEDNN_MAX_CPU_ISA DNNL_MAX_CPU_ISA=AVX2", "--version", g_out,
                          sizeof g_out, g_err, sizeof g_err);
    CHECK(st == 0 && strstr(g_out, "kiln avx2") && strstr(g_out, "oneDNN avx2"),
          "DNNL_MAX_CPU_ISA=AVX2 does not cap both:\n%s%s", g_out, g_err);
    /* KN_MAX_ISA and oneDNN's own variable disagreeing: a mix no machine has, warned about
     * when oneDNN's engine is made (a plan builds the graphs) */
    kn_test_make_images(D, "data", 200, 28, 28);
    kn_test_write(D, "mix.ini", CFG);
    st = kn_test_run_kiln(D, "env -u DNNL_MAX_CPU_ISA KN_MAX_ISA=avx2 ONEDNN_MAX_CPU_ISA=sse41", "plan mix.ini", g_out, sizeof g_out,
                          g_err, sizeof g_err);
    CHECK(strstr(g_err, "KN_MAX_ISA=avx2 caps kiln's kernels but oneDNN follows its own variable (sse41)"),
          "KN_MAX_ISA=avx2 with ONEDNN_MAX_CPU_ISA=sse41: no warning: %d %s%s", st, g_out, g_err);
}

static const char *CFG =
    "[data]\ndir = data\nbatch_size = 16\neval_batch_size = 100\n\n"
    "[train]\nepochs = 1\nmax_steps = 6\n\n[checkpoint]\nevery_steps = 3\n\n"
    "[optimizer]\ntype = adam\nlr = 0.003\n\n"
    "[flat]\ntype = flatten\n\n[fc1]\ntype = linear\nout = 16\nactivation = relu\n\n[fc2]\ntype = linear\nout = 10\n";

static void test_resume_warning(void) {
    char msg[768];
    CHECK(kn_isa_check_resume(NULL, "old.safetensors", msg, sizeof msg) == 0, "a checkpoint without isa_path warns");
    char now[256];
    kn_isa_path(now, sizeof now);
    CHECK(kn_isa_check_resume(now, "same.safetensors", msg, sizeof msg) == 0, "the same path warns");
    CHECK(kn_isa_check_resume("kiln avx2 (x86-64-v3 kernels), oneDNN avx2", "x.safetensors", msg, sizeof msg) ==
                  (strcmp(now, "kiln avx2 (x86-64-v3 kernels), oneDNN avx2") != 0) &&
              (!msg[0] || strstr(msg, "not bit-identically")),
          "another path: %s", msg);
    if (kn_isa_select() == KN_ISA_BASE) {
        printf("this process runs the baseline path: no other path below it to resume from\n");
        return;
    }
    /* a run on the baseline path, resumed from its step-3 checkpoint on this process's path */
    kn_test_make_images(D, "data", 200, 28, 28);
    kn_test_write(D, "cfg.ini", CFG);
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "rm -rf '%s/r'", D);
    kn_test_system(cmd);
    int st = kn_test_run_kiln(D, "KN_MAX_ISA=x86-64", "train cfg.ini --run-dir r --threads 1 --no-progress", g_out,
                              sizeof g_out, g_err, sizeof g_err);
    CHECK(st == 0, "baseline run: %s", g_err);
    st = kn_test_run_kiln(D, NULL, "inspect r/checkpoints/step-000000003.safetensors", g_out, sizeof g_out, g_err,
                          sizeof g_err);
    CHECK(st == 0 && strstr(g_out, "isa_path") && strstr(g_out, "kiln x86-64 (x86-64 kernels), oneDNN sse41"),
          "the checkpoint does not record the baseline path:\n%s%s", g_out, g_err);
    snprintf(cmd, sizeof cmd, "rm -f '%s/r/checkpoints/step-000000006.safetensors' '%s/r/model.safetensors'", D, D);
    kn_test_system(cmd);
    st = kn_test_run_kiln(D, NULL, "resume r --threads 1 --no-progress", g_out, sizeof g_out, g_err, sizeof g_err);
    CHECK(st == 0 && strstr(g_err, "step-000000003.safetensors was written on the ISA path 'kiln x86-64") &&
              strstr(g_err, now) && strstr(g_err, "not bit-identically"),
          "a resume on another ISA path does not warn (status %d):\n%s", st, g_err);
}

static void test_threads(void) {
    char why[128], msg[512];
    const int cpus = kn_cpus_available(why, sizeof why);
    CHECK(cpus >= 1 && strstr(why, "CPU"), "available cores %d (%s)", cpus, why);
    CHECK(kn_threads_advice(cpus, msg, sizeof msg) == 0, "%d threads on %d cores warn", cpus, cpus);
    CHECK(kn_threads_advice(cpus + 1, msg, sizeof msg) == 1 && strstr(msg, "slower") && strstr(msg, "other work"),
          "%d threads on %d cores: %s", cpus + 1, cpus, msg);
    char args[256];
    snprintf(args, sizeof args, "plan '%s' --threads %d", kn_test_src("examples/fashion_mnist_mlp.ini"), cpus + 1);
    int st = kn_test_run_kiln(D, NULL, args, g_out, sizeof g_out, g_err, sizeof g_err);
    CHECK(st == 0 && strstr(g_err, "warning: --threads") && strstr(g_err, "available core") && strstr(g_err, "slower"),
          "--threads %d on %d cores: no warning (status %d):\n%s", cpus + 1, cpus, st, g_err);
    snprintf(args, sizeof args, "plan '%s' --threads %d", kn_test_src("examples/fashion_mnist_mlp.ini"), cpus);
    st = kn_test_run_kiln(D, NULL, args, g_out, sizeof g_out, g_err, sizeof g_err);
    CHECK(st == 0 && !strstr(g_err, "warning: --threads"), "--threads %d on %d cores warns:\n%s", cpus, cpus, g_err);
}

/* Every op of KN_OP_LIST is found by its id, has a unique name, and has CPU kernels
 * (registered by id: backend/cpu/registry.c); a backend without kernels for an op is
 * refused at plan time with a message naming the layer, the op and the backend. */
static const kn_kernels *no_kernels(const kn_op *op) {
    (void)op;
    return NULL;
}
static int no_support(const kn_graph *g, const kn_node *n, int need_backward) {
    (void)g, (void)n, (void)need_backward;
    return 0;
}

static void test_registry(void) {
    const kn_backend_iface *cpu = kn_backend_get(KN_BACKEND_CPU);
    CHECK(cpu && !strcmp(cpu->name, "cpu") && kn_backend_get(KN_NUM_BACKENDS) == NULL, "the backend table");
    for (int id = 0; id < KN_NUM_OPS; id++) {
        const kn_op *op = kn_op_by_id(id);
        CHECK(op && (int)op->id == id && op->name && op->infer, "op id %d: %s", id, op ? op->name : "missing");
        if (!op) continue;
        for (int j = 0; j < id; j++)
            CHECK(strcmp(kn_op_by_id(j)->name, op->name) != 0, "two ops named %s", op->name);
        const kn_kernels *k = cpu->kernels(op);
        CHECK(k && k->forward && (op->diff_inputs == 0 || k->backward), "op %s: no CPU kernels", op->name);
    }
    CHECK(kn_op_by_id(-1) == NULL && kn_op_by_id(KN_NUM_OPS) == NULL, "ids out of range");
    /* a backend that runs none of the ops */
    kn_backend_iface none = *cpu;
    none.name = "none";
    none.kernels = no_kernels;
    none.supports_op = no_support;
    kn_ctx *ctx = kn_ctx_new();
    kn_store s;
    kn_store_init(&s);
    kn_graph *g = kn_g_new(&s, 0);
    g->be = &none;
    kn_g_set_layer(g, "act1");
    int x = kn_g_input(g, "x", KN_F32, kn_shape2(2, 3));
    int y = kn_g_op(ctx, g, &kn_op_tanh, &x, 1, &(kn_attrs){0});
    CHECK(y >= 0, "tanh added: %s", kn_ctx_message(ctx));
    kn_g_keep(g, y);
    int rc = kn_g_plan(ctx, g);
    CHECK(rc == KN_ERR_CONFIG && strstr(kn_ctx_message(ctx), "layer 'act1': op tanh has no kernels on the none backend"),
          "plan on a backend without kernels: rc %d, %s", rc, kn_ctx_message(ctx));
    kn_g_free(g);
    kn_store_free(&s);
    kn_ctx_free(ctx);
}

int main(void) {
    snprintf(D, sizeof D, "%s", kn_test_tmpdir("test_isa"));
    test_env_cap();
    test_graph_path();
    test_registry();
    test_version();
    test_resume_warning();
    test_threads();
    return kn_test_finish("test_isa");
}
