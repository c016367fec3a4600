/* Every command has its own help (issue 10, item 18): `kiln VERB --help`, `-h` among its
 * arguments and `kiln help VERB` print "Usage: kiln VERB ...", its options and examples,
 * exit 0; and the help is true to the code: every option the command's parser in
 * tools/kiln.c compares against is listed, and every listed option is accepted (not
 * "unknown option"). */
#define _POSIX_C_SOURCE 200809L
#include "testutil.h"

#include <ctype.h>
#include <string.h>

static char g_dir[1200];
static char g_out[1 << 16], g_err[1 << 16], g_out2[1 << 16];

static int run(const char *args, char *out) { return kn_test_run_kiln(g_dir, NULL, args, out, sizeof g_out, g_err, sizeof g_err); }

/* the "--option" string literals in the body of `static int cmd_VERB(` in tools/kiln.c */
static int source_options(const char *src, const char *verb, char opts[][40], int max) {
    char head[64];
    snprintf(head, sizeof head, "static int cmd_%s(", verb);
    const char *b = strstr(src, head);
    if (!b) return -1;
    const char *e = strstr(b, "\n}\n");
    if (!e) return -1;
    int n = 0;
    for (const char *p = b; p < e && (p = strstr(p, "\"--")) && p < e; p++) {
        size_t k = 0;
        const char *q = p + 1;
        while (k < 38 && (isalnum((unsigned char)q[k]) || q[k] == '-')) k++;
        char o[40];
        memcpy(o, q, k);
        o[k] = 0;
        int dup = 0;
        for (int i = 0; i < n; i++) dup |= !strcmp(opts[i], o);
        if (!dup && n < max) snprintf(opts[n++], 40, "%s", o);
    }
    return n;
}

static void test_verb(const char *verb, const char *src, const char *arg) {
    char args[256];
    snprintf(args, sizeof args, "%s --help", verb);
    int st = run(args, g_out);
    char want[64];
    snprintf(want, sizeof want, "Usage: kiln %s", verb);
    CHECK(st == 0, "kiln %s --help: exit %d: %s", verb, st, g_err);
    CHECK(strncmp(g_out, want, strlen(want)) == 0, "kiln %s --help does not start with '%s': %.200s", verb, want, g_out);
    CHECK(strstr(g_out, "\nOptions:\n") && strstr(g_out, "\nExamples:\n  kiln "), "kiln %s --help: no options/examples",
          verb);
    CHECK(strstr(g_out, "  -h, --help"), "kiln %s --help does not list -h, --help", verb);
    /* the same from `kiln help VERB`, `-h`, and --help after other arguments */
    snprintf(args, sizeof args, "help %s", verb);
    st = run(args, g_out2);
    CHECK(st == 0 && strcmp(g_out, g_out2) == 0, "kiln help %s differs from kiln %s --help", verb, verb);
    snprintf(args, sizeof args, "%s %s -h", verb, arg);
    st = run(args, g_out2);
    CHECK(st == 0 && strcmp(g_out, g_out2) == 0, "kiln %s %s -h: exit %d", verb, arg, st);

    /* options in the parser <-> options in the help */
    char opts[64][40];
    int n = source_options(src, verb, opts, 64);
    CHECK(n >= 0, "cmd_%s not found in tools/kiln.c", verb);
    for (int i = 0; i < n; i++) {
        char needle[96];
        snprintf(needle, sizeof needle, "  %.40s", opts[i]);
        int listed = strstr(g_out, needle) != NULL;
        snprintf(needle, sizeof needle, ", %.40s", opts[i]);
        listed |= strstr(g_out, needle) != NULL;
        CHECK(listed, "kiln %s accepts %s but its help does not list it", verb, opts[i]);
    }
    const char *p = strstr(g_out, "\nOptions:\n");
    const char *end = p ? strstr(p, "\nExamples:") : NULL;
    for (; p && end && (p = strstr(p, "\n  --")) && p < end; p++) {
        char o[40];
        size_t k = 0;
        const char *q = p + 3;
        while (k < 38 && (isalnum((unsigned char)q[k]) || q[k] == '-')) k++;
        memcpy(o, q, k);
        o[k] = 0;
        int found = 0;
        for (int i = 0; i < n; i++) found |= !strcmp(opts[i], o);
        CHECK(found || !strcmp(o, "--help"), "kiln %s --help lists %s, which its parser does not accept", verb, o);
        /* and the command does not call it an unknown option */
        snprintf(args, sizeof args, "%s %s 1", verb, o);
        run(args, g_out2);
        CHECK(!strstr(g_err, "unknown option"), "kiln %s %s: %s", verb, o, g_err);
    }
}

int main(void) {
    snprintf(g_dir, sizeof g_dir, "%s", kn_test_tmpdir("test_help"));
    static char src[1 << 18];
    kn_test_slurp(kn_test_src("tools/kiln.c"), src, sizeof src);
    CHECK(strlen(src) > 1000, "cannot read tools/kiln.c");
    const char *verbs[][2] = {{"train", "x.ini"}, {"resume", "runs/x"}, {"eval", "runs/x"},
                              {"plan", "x.ini"},  {"inspect", "x.safetensors"}, {"health", "runs/x"},
                              {"predict", "runs/x"}};
    for (int i = 0; i < 7; i++) test_verb(verbs[i][0], src, verbs[i][1]);
    /* every command of main() has a help */
    for (const char *p = src; (p = strstr(p, "if (!strcmp(cmd, \"")); p++) {
        char verb[32];
        if (sscanf(p, "if (!strcmp(cmd, \"%31[a-z]\"))", verb) != 1) continue;
        const char *eol = strchr(p, '\n');
        const char *ret = strstr(p, ") return cmd_");
        if (!ret || (eol && ret > eol)) continue; /* not a dispatch to a command */
        char args[64];
        snprintf(args, sizeof args, "help %s", verb);
        int st = run(args, g_out);
        CHECK(st == 0 && strstr(g_out, "Usage: kiln "), "command '%s' has no help (kiln help %s: exit %d)", verb, verb, st);
    }
    /* the general help points to it; an unknown command in `kiln help` is an error */
    CHECK(run("--help", g_out) == 0 && strstr(g_out, "kiln help VERB"), "kiln --help does not mention kiln help VERB");
    CHECK(run("help nope", g_out) == 2 && strstr(g_err, "unknown command 'nope'"), "kiln help nope: %s", g_err);
    return kn_test_finish("test_help");
}
