/*
 * groupnorm.c — torch.nn.GroupNorm (+ optional SiLU) on NCHW activations (see groupnorm.h).
 *
 * Statistics per (n, group): mean and biased variance from sums accumulated in double, in a fixed
 * order (4 interleaved partial sums, combined in a fixed way), by one thread per (n, group): the
 * result never depends on the thread count. Two passes (mean first, then the centred sum of
 * squares) as torch's Welford is close to that in accuracy. Then per channel
 * y = x * scale + shift with scale = rstd * gamma, shift = beta - mean * scale.
 */
#include "sdb/ops/groupnorm.h"

#include <math.h>
#include <stddef.h>

static double sum4(const float *x, size_t n)
{
    double a0 = 0, a1 = 0, a2 = 0, a3 = 0;
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        a0 += x[i]; a1 += x[i + 1]; a2 += x[i + 2]; a3 += x[i + 3];
    }
    for (; i < n; i++) a0 += x[i];
    return (a0 + a1) + (a2 + a3);
}

static double sqdev4(const float *x, size_t n, double m)
{
    double a0 = 0, a1 = 0, a2 = 0, a3 = 0;
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        double d0 = x[i] - m, d1 = x[i + 1] - m, d2 = x[i + 2] - m, d3 = x[i + 3] - m;
        a0 += d0 * d0; a1 += d1 * d1; a2 += d2 * d2; a3 += d3 * d3;
    }
    for (; i < n; i++) { double d = x[i] - m; a0 += d * d; }
    return (a0 + a1) + (a2 + a3);
}

void sdb_groupnorm(const float *x, int N, int C, int HW, int groups, const float *gamma,
                   const float *beta, float eps, int silu, float *y)
{
    const int cpg = C / groups;
    const size_t gsize = (size_t)cpg * HW;
    const int ng = N * groups;

    /* one task per (n, group): statistics, then that group's channels */
#pragma omp parallel for schedule(dynamic, 1) if ((size_t)N * C * HW > 32768)
    for (int t = 0; t < ng; t++) {
        int n = t / groups, g = t % groups;
        const float *xg = x + ((size_t)n * C + (size_t)g * cpg) * HW;
        float *yg = y + ((size_t)n * C + (size_t)g * cpg) * HW;
        double mean = sum4(xg, gsize) / (double)gsize;
        double var = sqdev4(xg, gsize, mean) / (double)gsize;
        double rstd = 1.0 / sqrt(var + (double)eps);
        for (int cc = 0; cc < cpg; cc++) {
            int c = g * cpg + cc;
            double scd = rstd * (gamma ? gamma[c] : 1.0);
            const float sc = (float)scd;
            const float sh = (float)((beta ? beta[c] : 0.0) - mean * scd);
            const float *xi = xg + (size_t)cc * HW;
            float *yi = yg + (size_t)cc * HW;
            if (silu) {
                for (int i = 0; i < HW; i++) {
                    float v = xi[i] * sc + sh;
                    yi[i] = v / (1.0f + expf(-v));
                }
            } else {
                for (int i = 0; i < HW; i++) yi[i] = xi[i] * sc + sh;
            }
        }
    }
}
