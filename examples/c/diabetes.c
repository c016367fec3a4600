/* kiln from C: a tabular regression on scikit-learn's diabetes data (Debian python3-sklearn).
 *
 * The model is built from code (kn_config_new + kn_config_set, the same keys as
 * examples/diabetes.ini), trained step by step, evaluated on the held-out test rows, saved,
 * opened again into a fresh session whose predictions must match bit for bit, and used to
 * predict a few raw rows. Exits non-zero if anything fails or the test R^2 is below 0.40.
 *
 *   make && ./diabetes [MODEL.safetensors]     (examples/c/Makefile: pkg-config)
 *   cmake -S . -B build && cmake --build build (examples/c/CMakeLists.txt: find_package(kiln))
 *
 * KILN_SKLEARN_DATA may name the directory holding diabetes_data_raw.csv.gz and
 * diabetes_target.csv.gz (default: Debian's /usr/lib/python3/dist-packages/sklearn/datasets/data). */
#include <kiln.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(kn_ctx *ctx, const char *what) {
    fprintf(stderr, "diabetes: %s: %s\n", what, kn_ctx_message(ctx));
    return 1;
}

int main(int argc, char **argv) {
    const char *model_path = argc > 1 ? argv[1] : "diabetes.safetensors";
    const char *dir = getenv("KILN_SKLEARN_DATA");
    if (!dir || !*dir) dir = "/usr/lib/python3/dist-packages/sklearn/datasets/data";
    kn_ctx *ctx = kn_ctx_new();
    if (!ctx) return 1;

    /* ---- the model, from code: data, training, optimizer and one linear layer ---- */
    char features[1100], targets[1100];
    snprintf(features, sizeof features, "data.path=%s/diabetes_data_raw.csv.gz", dir);
    snprintf(targets, sizeof targets, "data.targets_path=%s/diabetes_target.csv.gz", dir);
    const char *settings[] = {"data.source=csv", features, targets, "data.delimiter=whitespace", "data.header=false",
                              "data.target_type=real", "data.test_split=0.2", "data.split_seed=42", "data.batch_size=32",
                              "data.eval_batch_size=100", "train.epochs=200", "train.seed=1", "optimizer.type=adam",
                              "optimizer.lr=0.5", "fc1.type=linear", "fc1.out=1", NULL};
    kn_config *cfg = NULL;
    if (kn_config_new(ctx, "diabetes (from code)", &cfg)) return fail(ctx, "config");
    for (int i = 0; settings[i]; i++)
        if (kn_config_set(ctx, cfg, settings[i])) return fail(ctx, settings[i]);

    kn_session *s = NULL;
    if (kn_session_new(ctx, cfg, NULL, &s)) {
        fprintf(stderr, "diabetes: the data are scikit-learn's (Debian: apt-get install python3-sklearn)\n");
        return fail(ctx, "session");
    }
    printf("model: %lld inputs -> %lld output; %lld steps per epoch, %lld epochs\n", (long long)kn_session_input_size(s),
           (long long)kn_session_output_size(s), (long long)kn_session_steps_per_epoch(s), (long long)kn_session_epochs(s));

    /* ---- training, one step at a time ---- */
    double loss = NAN, sum = 0;
    int64_t n = 0;
    while (kn_session_epoch(s) < kn_session_epochs(s)) {
        const int64_t epoch = kn_session_epoch(s);
        if (kn_session_train_step(s, &loss)) return fail(ctx, "train step");
        sum += loss;
        n++;
        if (kn_session_epoch(s) != epoch && (epoch + 1) % 40 == 0) { /* an epoch just ended */
            kn_metrics v;
            if (kn_session_evaluate(s, KN_SPLIT_VALIDATION, &v)) return fail(ctx, "validation");
            printf("epoch %3lld  step %5lld  train loss %9.2f  validation loss %9.2f  R^2 %.4f\n", (long long)epoch + 1,
                   (long long)kn_session_steps_done(s), sum / (double)n, v.loss, v.r2);
            sum = 0;
            n = 0;
        }
    }

    /* ---- evaluation on the test rows ---- */
    kn_metrics t;
    if (kn_session_evaluate(s, KN_SPLIT_TEST, &t)) return fail(ctx, "test");
    printf("test: loss %.2f, R^2 %.4f, MAE %.2f, RMSE %.2f (%lld samples)\n", t.loss, t.r2, t.mae, t.rmse, (long long)t.n);

    /* ---- save, open into a fresh session, the same predictions bit for bit ---- */
    if (kn_session_save(s, model_path)) return fail(ctx, "save");
    printf("model saved to %s (kiln eval %s)\n", model_path, model_path);
    kn_session *s2 = NULL;
    if (kn_session_open(ctx, model_path, NULL, &s2)) return fail(ctx, "open the saved model");

    /* three raw rows of the data (age, sex, bmi, bp, s1..s6) and their targets */
    static const float rows[3][10] = {{59, 2, 32.1f, 101.0f, 157, 93.2f, 38.0f, 4.0f, 4.8598f, 87},
                                      {48, 1, 21.6f, 87.0f, 183, 103.2f, 70.0f, 3.0f, 3.8918f, 69},
                                      {72, 2, 30.5f, 93.0f, 156, 93.6f, 41.0f, 4.0f, 4.6728f, 85}};
    static const double target[3] = {151, 75, 141};
    float p1[3], p2[3];
    if (kn_session_predict(s, &rows[0][0], 3, 10, p1, 3)) return fail(ctx, "predict");
    if (kn_session_predict(s2, &rows[0][0], 3, 10, p2, 3)) return fail(ctx, "predict (reloaded)");
    int same = memcmp(p1, p2, sizeof p1) == 0;
    for (int i = 0; i < 3; i++) printf("row %d: predicted %.1f, reloaded %.1f, target %.0f\n", i, p1[i], p2[i], target[i]);
    kn_metrics t2;
    if (kn_session_evaluate(s2, KN_SPLIT_TEST, &t2)) return fail(ctx, "test (reloaded)");
    same = same && t2.r2 == t.r2 && t2.loss == t.loss;
    printf("reloaded model: test R^2 %.4f, predictions %s\n", t2.r2, same ? "identical" : "DIFFER");

    kn_session_free(s2);
    kn_session_free(s);
    kn_config_free(cfg);
    kn_ctx_free(ctx);
    if (!same) {
        fprintf(stderr, "diabetes: the reloaded model does not give the same results\n");
        return 1;
    }
    if (!(t.r2 >= 0.40)) {
        fprintf(stderr, "diabetes: test R^2 %.4f is below 0.40\n", t.r2);
        return 1;
    }
    printf("ok: test R^2 %.4f >= 0.40\n", t.r2);
    return 0;
}
