/* A program built against the installed kiln (tests/cli_install.sh): only <kiln.h>.
 * It reads a config with a typo and checks kiln's error, then asks for an evaluation of
 * a run directory that does not exist: both must be return codes with messages. */
#include <kiln.h>
#include <stdio.h>
#include <string.h>

int main(void) {
    kn_ctx *ctx = kn_ctx_new();
    if (!ctx) return 1;
    kn_config *cfg = NULL;
    int rc = kn_config_parse_string(ctx, "typo.ini", "[optimizer]\nlr = 0.1\nlrr = 0.2\n", &cfg);
    int ok = 1;
    if (rc == KN_OK) {
        kn_config_free(cfg);
        cfg = NULL;
    }
    /* the unknown key is caught when the settings are read: training refuses it */
    if (rc == KN_OK) {
        rc = kn_config_parse_string(ctx, "typo.ini", "[optimizer]\nlr = 0.1\nlrr = 0.2\n", &cfg);
        kn_train_options o;
        kn_train_options_init(&o);
        kn_train_result r;
        rc = kn_train(ctx, cfg, &o, &r);
        kn_config_free(cfg);
    }
    if (rc == KN_OK || !strstr(kn_ctx_message(ctx), "lrr")) {
        fprintf(stderr, "consumer: expected an error naming 'lrr', got %d: %s\n", rc, kn_ctx_message(ctx));
        ok = 0;
    }
    kn_train_result r;
    rc = kn_eval(ctx, "/nonexistent/kiln-run", 1, &r);
    if (rc == KN_OK || kn_ctx_message(ctx)[0] == 0) {
        fprintf(stderr, "consumer: eval of a missing run directory gave %d: %s\n", rc, kn_ctx_message(ctx));
        ok = 0;
    }
    printf("kiln %s: %s\n", KILN_VERSION, ok ? "ok" : "FAILED");
    kn_ctx_free(ctx);
    return ok ? 0 : 1;
}
