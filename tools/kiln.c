/* kiln — the command-line interface. Errors from the library are printed here, as
 * one line "kiln: error: ..." with a non-zero exit status. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <signal.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kiln.h"
#include "backend/cpu/cpus.h"
#include "backend/cpu/isa.h"
#include "train/plan.h"
#include "train/health.h"

static const char *const USAGE =
    "kiln " KILN_VERSION " — a neural-network training engine\n"
    "\n"
    "Usage:\n"
    "  kiln train CONFIG [options]      train the model described by CONFIG (an INI file)\n"
    "  kiln plan CONFIG [--batch N] [--budget SIZE] [--fit] [--json] [--set S.K=V] [--threads N]\n"
    "                                   per layer: output shape, parameters, FLOPs, bytes of parameters,\n"
    "                                   gradients, optimizer state, saved activations and scratch; the\n"
    "                                   arena peak, the naive total and the predicted peak resident memory\n"
    "  kiln resume RUN_DIR [--threads N] [--budget SIZE] [--fit] [--allow-config-change] [--quiet]\n"
    "                                   continue a run, bit-exactly, from its newest good checkpoint\n"
    "  kiln eval RUN_DIR|CHECKPOINT [--threads N]\n"
    "                                   evaluate a trained model (else best, else newest) on the test set\n"
    "  kiln predict RUN_DIR|CHECKPOINT INPUT [--output FILE] [--logits] [--threads N]\n"
    "                                   predictions for every sample of INPUT (IDX, CSV or .npy) as CSV:\n"
    "                                   the class and its probabilities (or logits), or the values\n"
    "  kiln health RUN_DIR              per-layer health table (activations, gradients, update ratios,\n"
    "                                   drift), warnings, guard events and the train/validation gap\n"
    "  kiln inspect CHECKPOINT [--dump TENSOR]\n"
    "                                   list tensors, shapes and metadata; verify the checksum\n"
    "                                   (--dump prints every value of one tensor)\n"
    "  kiln --help                      show this help\n"
    "  kiln --version                   show the version\n"
    "\n";
/* (two strings: ISO C limits one literal to 4095 characters) */
static const char *const USAGE_TRAIN =
    "Options for train:\n"
    "  --set SECTION.KEY=VALUE   override a config value (repeatable), e.g. --set optimizer.lr=3e-4\n"
    "  --run-dir DIR             where config.ini, metrics.jsonl and model.safetensors go\n"
    "                            (default: train.run_dir, else runs/<config name>)\n"
    "  --threads N               worker threads for kiln and oneDNN (default: train.threads, else all cores)\n"
    "  --seed S                  random seed for initialisation, data order and dropout (default: train.seed, else 1)\n"
    "  --progress                always draw the progress bar (default: only on a terminal)\n"
    "  --no-progress             print plain periodic lines (every train.log_every steps)\n"
    "  --quiet                   print nothing but errors\n"
    "  --budget SIZE             memory budget, e.g. 512M or 2G (powers of 1024; default train.budget, else\n"
    "                            the memory available: cgroup limit or MemAvailable). A run whose predicted\n"
    "                            peak exceeds it stops before allocating, naming the biggest consumers and\n"
    "                            the largest batch that fits\n"
    "  --fit                     train with the largest micro-batch that fits the budget, accumulating\n"
    "                            gradients up to the batch (train.fit = true); BatchNorm then uses\n"
    "                            per-micro-batch statistics\n"
    "  --init-from RUN_DIR[:first|best|last|STEP]\n"
    "                            start a new run from the weights of an earlier one (or a checkpoint file)\n"
    "  --allow-config-change     resume even if the config differs from the checkpoint's\n"
    "\n"
    "If the run directory already holds checkpoints, train resumes from the newest good one\n"
    "(a damaged one is skipped with a warning). Ctrl-C or SIGTERM finishes the current step,\n"
    "writes a checkpoint, prints how to resume and exits with 130 (SIGINT) or 143 (SIGTERM);\n"
    "a second Ctrl-C stops at once, keeping the last good checkpoint.\n"
    "\n"
    "A run directory holds config.ini (the effective config), metrics.jsonl (one JSON object per\n"
    "logged step, epoch and the final test), model.safetensors (the trained parameters) and\n"
    "checkpoints/ (step-N: the last [checkpoint] keep_last, first: before the first update,\n"
    "best: lowest validation loss, epoch-N with keep_epochs = true).\n"
    "\n"
    "Config: one [section] per layer in order (type = linear | conv2d | maxpool2d | avgpool2d |\n"
    "global_avgpool | batchnorm | relu | leaky_relu | gelu | silu | tanh | sigmoid | dropout |\n"
    "flatten | reshape | add | concat), plus [data] [train] [optimizer] [checkpoint] [guard]\n"
    "[health] [model]. See examples/ and docs/CONFIG.md.\n"
    "\n"
    "Exit status: 0 success, 1 error (message on stderr), 2 bad command line,\n"
    "130 stopped by SIGINT, 143 stopped by SIGTERM (a checkpoint was written).\n";

static const char *const USAGE_VERBS =
    "\nRun 'kiln VERB --help' or 'kiln help VERB' for one command's usage, options and examples.\n";

/* ---- per-command help: `kiln VERB --help` (-h anywhere among its arguments) and
 * `kiln help VERB`. tests/test_help.c checks that every option a command's parser
 * below accepts is listed here, and every option listed here is accepted. ---- */
typedef struct {
    const char *verb, *usage, *what, *options, *examples;
} verb_help;

static const verb_help HELP[] = {
    {"train", "kiln train CONFIG [options]",
     "Train the model described by CONFIG (an INI file: docs/CONFIG.md) and write a run directory:\n"
     "config.ini (the effective config), metrics.jsonl, model.safetensors and checkpoints/. If the run\n"
     "directory already holds checkpoints, train resumes from the newest good one. Ctrl-C or SIGTERM\n"
     "finishes the step, writes a checkpoint and exits with 130 or 143.",
     "  --set SECTION.KEY=VALUE   override a config value (repeatable; also --set=S.K=V); a value that\n"
     "                            starts with '\"' is a quoted string (docs/CONFIG.md)\n"
     "  --run-dir DIR             the run directory (default: train.run_dir, else runs/<config name>)\n"
     "  --threads N               worker threads, 1 to 1024 (default: train.threads, else all cores)\n"
     "  --seed S                  random seed, a non-negative integer (default: train.seed, else 1)\n"
     "  --budget SIZE             memory budget, e.g. 512M or 2G (sets train.budget)\n"
     "  --fit                     largest micro-batch that fits the budget (sets train.fit = true)\n"
     "  --init-from RUN_DIR[:first|best|last|STEP]\n"
     "                            start from the weights of an earlier run (or a checkpoint file)\n"
     "  --allow-config-change     resume even if the config differs from the checkpoint's\n"
     "  --progress                always draw the progress bar (default: only on a terminal)\n"
     "  --no-progress             plain periodic lines (every train.log_every steps)\n"
     "  --quiet                   print nothing but errors\n"
     "  -h, --help                show this help\n",
     "  kiln train examples/fashion_mnist_cnn.ini\n"
     "  kiln train examples/fashion_mnist_cnn.ini --set optimizer.lr=3e-4 --set train.epochs=10 --threads 4\n"
     "  kiln train examples/fashion_mnist_mlp.ini --run-dir runs/mlp-seed7 --seed 7\n"
     "  kiln train examples/fashion_mnist_cnn.ini --set data.batch_size=512 --budget 200M --fit\n"},
    {"resume", "kiln resume RUN_DIR [options]",
     "Continue the run in RUN_DIR from its newest good checkpoint, with the config.ini stored there.",
     "  --threads N               worker threads, 1 to 1024 (default: the run's; another count resumes,\n"
     "                            with a warning that the bits will differ from an uninterrupted run)\n"
     "  --budget SIZE             memory budget, e.g. 512M or 2G (not a config change)\n"
     "  --fit                     largest micro-batch that fits the budget (the run's split is kept\n"
     "                            while it fits)\n"
     "  --allow-config-change     resume even if config.ini differs from the checkpoint's config\n"
     "  --progress                always draw the progress bar (default: only on a terminal)\n"
     "  --no-progress             plain periodic lines\n"
     "  --quiet                   print nothing but errors\n"
     "  -h, --help                show this help\n",
     "  kiln resume runs/fashion_mnist_cnn\n"
     "  kiln resume runs/fashion_mnist_cnn --threads 2 --no-progress\n"},
    {"eval", "kiln eval RUN_DIR|CHECKPOINT [options]",
     "Evaluate a trained model on its test set (the config and normalisation come from the checkpoint)\n"
     "and print the test loss and accuracy.",
     "  --threads N               worker threads, 1 to 1024 (default: the config's train.threads)\n"
     "  -h, --help                show this help\n",
     "  kiln eval runs/fashion_mnist_cnn\n"
     "  kiln eval runs/fashion_mnist_cnn/checkpoints/best.safetensors --threads 1\n"},
    {"predict", "kiln predict RUN_DIR|CHECKPOINT INPUT [options]",
     "Run a trained model on every sample of INPUT and write CSV (to stdout, or --output FILE): for class\n"
     "labels 'index,class,prob_<class>...' (class: the most probable one, by its label in the training data;\n"
     "probabilities: softmax of the outputs), for real-valued targets 'index,value' (or value_0...). INPUT is\n"
     "read as the run's training data was (IDX images, or the data.source reader with its CSV options and\n"
     "column selection) and normalised with the statistics stored in the checkpoint; the training data\n"
     "itself is not needed. A CSV may have the training file's columns (the target column is ignored) or\n"
     "just the feature columns.",
     "  -o, --output FILE         write the CSV to FILE (atomically: FILE.tmp, then renamed; default: stdout)\n"
     "  --logits                  the model's raw outputs (logit_<class>, round-trip precision) instead of\n"
     "                            probabilities\n"
     "  --threads N               worker threads, 1 to 1024 (default: the config's train.threads)\n"
     "  -h, --help                show this help\n",
     "  kiln predict runs/fashion_mnist_mlp /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz -o preds.csv\n"
     "  kiln predict runs/breast_cancer new_patients.csv --logits\n"},
    {"plan", "kiln plan CONFIG [options]",
     "Before anything is allocated: per layer the output shape, parameters, FLOPs and the bytes of\n"
     "parameters, gradients, optimizer state, saved activations and scratch; the arena peak, the naive\n"
     "total and the predicted peak resident memory, against the budget.",
     "  --batch N                 batch size, 1 to 1048576 (sets data.batch_size)\n"
     "  --budget SIZE             memory budget, e.g. 512M or 2G (sets train.budget)\n"
     "  --fit                     plan the largest micro-batch that fits (sets train.fit = true)\n"
     "  --threads N               worker threads, 1 to 1024 (sets train.threads)\n"
     "  --set SECTION.KEY=VALUE   override a config value (repeatable; also --set=S.K=V)\n"
     "  --json                    print the plan as JSON\n"
     "  -h, --help                show this help\n",
     "  kiln plan examples/fashion_mnist_cnn.ini\n"
     "  kiln plan examples/fashion_mnist_cnn.ini --batch 512 --budget 200M --fit\n"
     "  kiln plan examples/fashion_mnist_mlp.ini --json\n"},
    {"inspect", "kiln inspect CHECKPOINT [options]",
     "List the tensors, shapes and metadata of a checkpoint (.safetensors) and verify its checksum.",
     "  --dump TENSOR             also print every value of one tensor\n"
     "  -h, --help                show this help\n",
     "  kiln inspect runs/fashion_mnist_cnn/model.safetensors\n"
     "  kiln inspect runs/fashion_mnist_cnn/checkpoints/best.safetensors --dump fc1.bias\n"},
    {"health", "kiln health RUN_DIR",
     "Per-layer health table of a run (activations, gradients, update ratios, drift), its warnings,\n"
     "guard events and the train/validation gap, read from RUN_DIR/metrics.jsonl.",
     "  -h, --help                show this help\n",
     "  kiln health runs/fashion_mnist_cnn\n"},
};
#define NHELP ((int)(sizeof HELP / sizeof HELP[0]))

static const verb_help *find_help(const char *verb) {
    for (int i = 0; i < NHELP; i++)
        if (!strcmp(HELP[i].verb, verb)) return &HELP[i];
    return NULL;
}

static int print_help(const verb_help *h) {
    printf("Usage: %s\n\n%s\n\nOptions:\n%s\nExamples:\n%s", h->usage, h->what, h->options, h->examples);
    return 0;
}

/* -h or --help among a command's arguments (not as the value of an option) */
static int wants_help(int argc, char **argv) {
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) return 1;
        if (!strcmp(argv[i], "--set") || !strcmp(argv[i], "--run-dir") || !strcmp(argv[i], "--threads") ||
            !strcmp(argv[i], "--seed") || !strcmp(argv[i], "--budget") || !strcmp(argv[i], "--init-from") ||
            !strcmp(argv[i], "--batch") || !strcmp(argv[i], "--dump"))
            i++;
    }
    return 0;
}

static int usage_error(const char *fmt, const char *arg) {
    fprintf(stderr, "kiln: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\nRun 'kiln --help' for usage.\n");
    return 2;
}

static int parse_int(const char *s, long long *out) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || !*s || *end) return -1;
    *out = v;
    return 0;
}

static int parse_threads(const char *s, long long *out) {
    if (parse_int(s, out) || *out < 1 || *out > 1024) return 1;
    char msg[512];
    if (kn_threads_advice((int)*out, msg, sizeof msg)) fprintf(stderr, "kiln: warning: --threads %s: %s\n", s, msg);
    return 0;
}

/* A config file with the command line's --set overrides applied. */
static int load_config(kn_ctx *ctx, const char *path, const char *const *sets, int nsets, kn_config **cfg) {
    int rc = kn_config_load(ctx, path, cfg);
    for (int i = 0; !rc && i < nsets; i++) rc = kn_config_set(ctx, *cfg, sets[i]);
    return rc;
}

static int fail(kn_ctx *ctx) {
    fprintf(stderr, "kiln: error: %s\n", kn_ctx_message(ctx));
    return 1;
}

/* A stop request already printed its own message. */
static int exit_status(kn_ctx *ctx, int rc, const kn_train_result *r) {
    if (rc == KN_ERR_INTERRUPTED && r->stopped_by_signal) return 128 + r->stopped_by_signal;
    return fail(ctx);
}

/* First SIGINT/SIGTERM: finish the step, checkpoint, exit. Second: die at once. */
static void on_signal(int signo) {
    if (kn_stop_requested()) {
        signal(signo, SIG_DFL);
        raise(signo);
        return;
    }
    kn_request_stop(signo);
}

static void install_handlers(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    /* a full file-size limit must surface as a write error, not kill the process */
    signal(SIGXFSZ, SIG_IGN);
}

/* Test hook for the kill tests (tests/test_resume.c), not for normal use:
 * KILN_TEST_HOOK = "WHERE:STEP:ACTION[,...]" sends this process ACTION (kill: SIGKILL,
 * int: SIGINT, term: SIGTERM) at the trainer's hook point WHERE (step, eval, eval_done,
 * test, model; see kn_train_options.hook) when STEP steps are done. */
static void test_hook(void *arg, const char *where, int64_t step) {
    const char *p = arg;
    while (p && *p) {
        char w[32], act[16];
        long long at;
        if (sscanf(p, "%31[^:]:%lld:%15[a-z]", w, &at, act) == 3 && !strcmp(w, where) && at == step)
            raise(!strcmp(act, "int") ? SIGINT : !strcmp(act, "term") ? SIGTERM : SIGKILL);
        p = strchr(p, ',');
        if (p) p++;
    }
}
static void set_test_hook(kn_train_options *o) {
    const char *h = getenv("KILN_TEST_HOOK");
    if (h && *h) {
        o->hook = test_hook;
        o->hook_arg = (void *)h;
    }
}

static int cmd_resume(int argc, char **argv) {
    const char *dir = NULL;
    kn_train_options o;
    kn_train_options_init(&o);
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--threads")) {
            long long v;
            if (i + 1 >= argc) return usage_error("option %s needs a value", a);
            if (parse_threads(argv[++i], &v)) return usage_error("--threads '%s': expected an integer from 1 to 1024", argv[i]);
            o.threads = (int)v;
        } else if (!strcmp(a, "--budget")) {
            if (i + 1 >= argc) return usage_error("option %s needs a value", a);
            o.budget = argv[++i];
        } else if (!strcmp(a, "--fit")) {
            o.fit = 1;
        } else if (!strcmp(a, "--allow-config-change")) {
            o.allow_config_change = 1;
        } else if (!strcmp(a, "--progress")) {
            o.progress = 1;
        } else if (!strcmp(a, "--no-progress")) {
            o.progress = 0;
        } else if (!strcmp(a, "--quiet")) {
            o.quiet = 1;
        } else if (a[0] == '-' && a[1]) {
            return usage_error("unknown option '%s' for resume", a);
        } else if (!dir) {
            dir = a;
        } else {
            return usage_error("unexpected argument '%s' (resume takes one RUN_DIR)", a);
        }
    }
    if (!dir) return usage_error("%s", "resume needs a run directory, e.g. kiln resume runs/fashion_mnist_cnn");
    set_test_hook(&o);
    kn_ctx *ctx = kn_ctx_new();
    kn_train_result r;
    memset(&r, 0, sizeof r);
    int rc = kn_resume(ctx, dir, &o, &r);
    int status = rc ? exit_status(ctx, rc, &r) : 0;
    kn_ctx_free(ctx);
    return status;
}

static int cmd_health(int argc, char **argv) {
    if (argc != 1 || argv[0][0] == '-') return usage_error("%s", "health takes one RUN_DIR, e.g. kiln health runs/fashion_mnist_cnn");
    kn_ctx *ctx = kn_ctx_new();
    int rc = kn_health_print(ctx, argv[0], stdout);
    int status = rc ? fail(ctx) : 0;
    kn_ctx_free(ctx);
    return status;
}

static int cmd_inspect(int argc, char **argv) {
    const char *path = NULL, *dump = NULL;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--dump")) {
            if (i + 1 >= argc) return usage_error("option %s needs a tensor name", argv[i]);
            dump = argv[++i];
        } else if (argv[i][0] == '-' && argv[i][1]) {
            return usage_error("unknown option '%s' for inspect", argv[i]);
        } else if (!path) {
            path = argv[i];
        } else {
            return usage_error("unexpected argument '%s' (inspect takes one CHECKPOINT)", argv[i]);
        }
    }
    if (!path) return usage_error("%s", "inspect needs a checkpoint file, e.g. kiln inspect runs/x/checkpoints/best.safetensors");
    kn_ctx *ctx = kn_ctx_new();
    int rc = kn_inspect(ctx, path, dump, stdout);
    int status = rc ? fail(ctx) : 0;
    kn_ctx_free(ctx);
    return status;
}

/* kiln plan: memory and FLOPs of a config before anything is allocated (train/plan.c) */
static int cmd_plan(int argc, char **argv) {
    const char *config = NULL;
    static char extra[3][1100];
    const char *sets[260];
    int nsets = 0, json = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        const char *val = NULL;
        int need = !strcmp(a, "--set") || !strcmp(a, "--batch") || !strcmp(a, "--budget") || !strcmp(a, "--threads");
        if (need) {
            if (i + 1 >= argc) return usage_error("option %s needs a value", a);
            val = argv[++i];
        }
        long long v;
        if (nsets >= 256) return usage_error("%s", "too many --set options");
        if (!strcmp(a, "--set")) {
            sets[nsets++] = val;
        } else if (!strncmp(a, "--set=", 6)) {
            sets[nsets++] = a + 6;
        } else if (!strcmp(a, "--batch")) {
            if (parse_int(val, &v) || v < 1 || v > (1 << 20)) return usage_error("--batch '%s': expected an integer from 1 to 1048576", val);
            snprintf(extra[0], sizeof extra[0], "data.batch_size=%lld", v);
            sets[nsets++] = extra[0];
        } else if (!strcmp(a, "--budget")) {
            snprintf(extra[1], sizeof extra[1], "train.budget=%s", val);
            sets[nsets++] = extra[1];
        } else if (!strcmp(a, "--threads")) {
            if (parse_threads(val, &v)) return usage_error("--threads '%s': expected an integer from 1 to 1024", val);
            snprintf(extra[2], sizeof extra[2], "train.threads=%lld", v);
            sets[nsets++] = extra[2];
        } else if (!strcmp(a, "--fit")) {
            sets[nsets++] = "train.fit=true";
        } else if (!strcmp(a, "--json")) {
            json = 1;
        } else if (a[0] == '-' && a[1]) {
            return usage_error("unknown option '%s' for plan", a);
        } else if (!config) {
            config = a;
        } else {
            return usage_error("unexpected argument '%s' (plan takes one CONFIG)", a);
        }
    }
    if (!config) return usage_error("%s", "plan needs a CONFIG file, e.g. kiln plan examples/fashion_mnist_cnn.ini --batch 512");
    kn_ctx *ctx = kn_ctx_new();
    kn_config *cfg = NULL;
    int rc = load_config(ctx, config, sets, nsets, &cfg);
    if (!rc) rc = kn_plan_command(ctx, cfg, json, stdout);
    int status = rc ? fail(ctx) : 0;
    kn_config_free(cfg);
    kn_ctx_free(ctx);
    return status;
}

static int cmd_train(int argc, char **argv) {
    const char *config = NULL;
    kn_train_options o;
    kn_train_options_init(&o);
    const char *sets[256];
    int nsets = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        const char *val = NULL;
        int need = !strcmp(a, "--set") || !strcmp(a, "--run-dir") || !strcmp(a, "--threads") || !strcmp(a, "--seed") ||
                   !strcmp(a, "--budget") ||
                   !strcmp(a, "--init-from");
        if (need) {
            if (i + 1 >= argc) return usage_error("option %s needs a value", a);
            val = argv[++i];
        }
        if (!strcmp(a, "--set")) {
            if (nsets == 256) return usage_error("%s", "too many --set options");
            sets[nsets++] = val;
        } else if (!strncmp(a, "--set=", 6)) {
            if (nsets == 256) return usage_error("%s", "too many --set options");
            sets[nsets++] = a + 6;
        } else if (!strcmp(a, "--budget") || !strcmp(a, "--fit")) {
            static char budget_set[1100];
            if (nsets == 256) return usage_error("%s", "too many --set options");
            if (a[2] == 'f') sets[nsets++] = "train.fit=true";
            else {
                snprintf(budget_set, sizeof budget_set, "train.budget=%s", val);
                sets[nsets++] = budget_set;
            }
        } else if (!strcmp(a, "--run-dir")) {
            o.run_dir = val;
        } else if (!strcmp(a, "--threads")) {
            long long v;
            if (parse_threads(val, &v)) return usage_error("--threads '%s': expected an integer from 1 to 1024", val);
            o.threads = (int)v;
        } else if (!strcmp(a, "--seed")) {
            long long v;
            if (parse_int(val, &v) || v < 0) return usage_error("--seed '%s': expected a non-negative integer", val);
            o.seed = v;
        } else if (!strcmp(a, "--progress")) {
            o.progress = 1;
        } else if (!strcmp(a, "--no-progress")) {
            o.progress = 0;
        } else if (!strcmp(a, "--quiet")) {
            o.quiet = 1;
        } else if (!strcmp(a, "--init-from")) {
            o.init_from = val;
        } else if (!strcmp(a, "--allow-config-change")) {
            o.allow_config_change = 1;
        } else if (a[0] == '-' && a[1]) {
            return usage_error("unknown option '%s' for train", a);
        } else if (!config) {
            config = a;
        } else {
            return usage_error("unexpected argument '%s' (train takes one CONFIG)", a);
        }
    }
    if (!config) return usage_error("%s", "train needs a CONFIG file, e.g. kiln train examples/fashion_mnist_cnn.ini");
    set_test_hook(&o);
    kn_ctx *ctx = kn_ctx_new();
    kn_config *cfg = NULL;
    int rc = load_config(ctx, config, sets, nsets, &cfg);
    kn_train_result r;
    memset(&r, 0, sizeof r);
    if (!rc) rc = kn_train(ctx, cfg, &o, &r);
    int status = rc ? exit_status(ctx, rc, &r) : 0;
    kn_config_free(cfg);
    kn_ctx_free(ctx);
    return status;
}

static int cmd_eval(int argc, char **argv) {
    const char *target = NULL;
    int threads = 0;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--threads")) {
            long long v;
            if (i + 1 >= argc) return usage_error("option %s needs a value", argv[i]);
            if (parse_threads(argv[++i], &v)) return usage_error("--threads '%s': expected an integer from 1 to 1024", argv[i]);
            threads = (int)v;
        } else if (argv[i][0] == '-' && argv[i][1]) {
            return usage_error("unknown option '%s' for eval", argv[i]);
        } else if (!target) {
            target = argv[i];
        } else {
            return usage_error("unexpected argument '%s' (eval takes one RUN_DIR or CHECKPOINT)", argv[i]);
        }
    }
    if (!target) return usage_error("%s", "eval needs a run directory or a checkpoint, e.g. kiln eval runs/fashion_mnist_cnn");
    kn_ctx *ctx = kn_ctx_new();
    kn_train_result r;
    int rc = kn_eval(ctx, target, threads, &r);
    int status = 0;
    if (rc) status = fail(ctx);
    else if (isnan(r.test_accuracy) && !isnan(r.test_r2))
        printf("test: loss %.4f, R^2 %.4f, MAE %.4g, RMSE %.4g (%lld samples, %.1fs)\n", r.test_loss, r.test_r2, r.test_mae, r.test_rmse,
               (long long)r.test_samples, r.seconds);
    else printf("test: loss %.4f, accuracy %.2f%% (%.1fs)\n", r.test_loss, 100.0 * r.test_accuracy, r.seconds);
    kn_ctx_free(ctx);
    return status;
}

static int cmd_predict(int argc, char **argv) {
    const char *target = NULL, *input = NULL, *output = NULL;
    int threads = 0, logits = 0;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--threads")) {
            long long v;
            if (i + 1 >= argc) return usage_error("option %s needs a value", argv[i]);
            if (parse_threads(argv[++i], &v)) return usage_error("--threads '%s': expected an integer from 1 to 1024", argv[i]);
            threads = (int)v;
        } else if (!strcmp(argv[i], "--output") || !strcmp(argv[i], "-o")) {
            if (i + 1 >= argc) return usage_error("option %s needs a value (the CSV file to write)", argv[i]);
            output = argv[++i];
            if (!*output) return usage_error("%s", "--output: an empty file name");
        } else if (!strcmp(argv[i], "--logits")) {
            logits = 1;
        } else if (argv[i][0] == '-' && argv[i][1]) {
            return usage_error("unknown option '%s' for predict", argv[i]);
        } else if (!target) {
            target = argv[i];
        } else if (!input) {
            input = argv[i];
        } else {
            return usage_error("unexpected argument '%s' (predict takes a RUN_DIR or CHECKPOINT and one INPUT file)", argv[i]);
        }
    }
    if (!target || !input)
        return usage_error("%s", "predict needs a run directory (or checkpoint) and an input file, e.g. kiln predict "
                                 "runs/fashion_mnist_mlp t10k-images-idx3-ubyte.gz -o preds.csv");
    kn_ctx *ctx = kn_ctx_new();
    int rc = kn_predict(ctx, target, input, output, logits, threads);
    int status = rc ? fail(ctx) : 0;
    kn_ctx_free(ctx);
    return status;
}

int main(int argc, char **argv) {
    kn_malloc_policy(); /* resident memory stays what `kiln plan` predicts (backend/cpu/cpus.h) */
    if (argc < 2) {
        fputs(USAGE, stderr);
        fputs(USAGE_TRAIN, stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "help") && argc >= 3) {
        const verb_help *h = find_help(argv[2]);
        if (!h) return usage_error("unknown command '%s' (commands: train, plan, resume, eval, predict, inspect, health)", argv[2]);
        return print_help(h);
    }
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
        fputs(USAGE, stdout);
        fputs(USAGE_TRAIN, stdout);
        fputs(USAGE_VERBS, stdout);
        return 0;
    }
    if (find_help(cmd) && wants_help(argc - 2, argv + 2)) return print_help(find_help(cmd));
    if (!strcmp(cmd, "--version") || !strcmp(cmd, "-V")) {
        char isa[256], note[160];
        kn_isa_cap_note(note, sizeof note);
        printf("kiln %s\nisa: %s%s%s%s\n", KILN_VERSION, kn_isa_path(isa, sizeof isa), *note ? " (" : "", note, *note ? ")" : "");
        return 0;
    }
    install_handlers();
    if (!strcmp(cmd, "train")) return cmd_train(argc - 2, argv + 2);
    if (!strcmp(cmd, "resume")) return cmd_resume(argc - 2, argv + 2);
    if (!strcmp(cmd, "eval")) return cmd_eval(argc - 2, argv + 2);
    if (!strcmp(cmd, "predict")) return cmd_predict(argc - 2, argv + 2);
    if (!strcmp(cmd, "inspect")) return cmd_inspect(argc - 2, argv + 2);
    if (!strcmp(cmd, "plan")) return cmd_plan(argc - 2, argv + 2);
    if (!strcmp(cmd, "health")) return cmd_health(argc - 2, argv + 2);
    return usage_error("unknown command '%s' (commands: train, plan, resume, eval, predict, inspect, health)", cmd);
}
