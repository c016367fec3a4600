/* Unit tests of the trainer's parts (src/optim, src/train):
 *  - gradient clipping (kn_clip_grad_norm, the one implementation) against the closed
 *    form: g * (float)(max / (norm + 1e-6)) when the norm is over the limit, g unchanged
 *    otherwise, and what it returns. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "optim/optim.h"
#include "testutil.h"

static void test_clip(void) {
    /* [3, 4, 0, 12]: norm 13 */
    float g[4] = {3, 4, 0, 12};
    double norm = kn_global_norm(g, 4);
    CHECK(norm == 13.0, "global norm %.17g", norm);
    double after = kn_clip_grad_norm(g, 4, norm, 6.5);
    float c = (float)(6.5 / (13.0 + 1e-6));
    CHECK(after == 6.5, "returns the limit when it clips: %g", after);
    CHECK(g[0] == 3 * c && g[1] == 4 * c && g[2] == 0 && g[3] == 12 * c, "scaled by (float)(max/(norm+1e-6)): %.9g %.9g %.9g",
          (double)g[0], (double)g[1], (double)g[3]);
    CHECK(fabs(kn_global_norm(g, 4) - 6.5) < 1e-5, "new norm %.9g", kn_global_norm(g, 4));
    /* under the limit: untouched, the norm returned */
    float h[2] = {0.3f, 0.4f};
    after = kn_clip_grad_norm(h, 2, kn_global_norm(h, 2), 1.0);
    CHECK(h[0] == 0.3f && h[1] == 0.4f && fabs(after - 0.5) < 1e-7, "under the limit: %g %g -> %g", (double)h[0], (double)h[1], after);
    /* a non-finite norm never scales (coef is not < 1) */
    float z[2] = {1, 2};
    after = kn_clip_grad_norm(z, 2, NAN, 1.0);
    CHECK(z[0] == 1 && z[1] == 2 && isnan(after), "NaN norm: untouched");
    /* kn_clip_grad: the norm computed first, the norm before clipping returned */
    float w[3] = {0, 0, 10};
    double before = kn_clip_grad(w, 3, 1.0);
    CHECK(before == 10.0 && w[2] == 10.0f * (float)(1.0 / (10.0 + 1e-6)), "kn_clip_grad: %g, %.9g", before, (double)w[2]);
    /* a large vector (the parallel loop) gives the same bits as the scalar formula */
    int64_t n = 200000;
    float *a = malloc((size_t)n * sizeof *a), *b = malloc((size_t)n * sizeof *b);
    for (int64_t i = 0; i < n; i++) a[i] = b[i] = (float)((i % 97) - 48) * 0.01f;
    double na = kn_global_norm(a, n);
    kn_clip_grad_norm(a, n, na, 1.0);
    float cc = (float)(1.0 / (na + 1e-6));
    int same = 1;
    for (int64_t i = 0; i < n; i++) same &= a[i] == b[i] * cc;
    CHECK(same, "parallel clip = closed form");
    free(a);
    free(b);
}

int main(void) {
    test_clip();
    return kn_test_finish("test_trainer_parts");
}
