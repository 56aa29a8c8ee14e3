/*
 * test_ops_elementwise.c — the element-wise ops against double-precision references written here:
 * the exp of src/ops/vexp.h (included directly: it is static inline and ops-internal) over a dense
 * sweep of float bit patterns (error in ulp of the correctly rounded result, the AVX2 lanes and
 * their FMA scalar twin bit-identical, the portable form, the clamps, NaN), SiLU, QuickGELU and
 * GEGLU (lengths with vector tails and several parallel chunks; SiLU's results the same at any
 * offset), GroupNorm(+SiLU) (its statistics and its scale/shift/SiLU formula bit-exactly as
 * documented, the output within a few ulp of a double computation), LayerNorm (its formula
 * bit-exactly as documented in norm.c, the output close to a double computation), and 1 vs 2
 * threads bit-identical for all of them.
 */
#include "harness.h"
#include "sdb/ops/activation.h"
#include "sdb/ops/groupnorm.h"
#include "sdb/ops/norm.h"
#include "sdb/threads.h"

#include "../src/ops/vexp.h"

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng = 0x9e3779b97f4a7c15ULL;
static double urand(void) /* [0, 1) */
{
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    return (double)(rng >> 11) / (double)(1ULL << 53);
}

static float f_of(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

/* |got - ref| in units of the ulp of ref rounded to float (subnormal spacing below FLT_MIN) */
static double ulps(float got, double ref)
{
    if (isnan(ref)) return isnan(got) ? 0 : INFINITY;
    if (isinf((float)ref) || isinf(got)) return (float)ref == got ? 0 : INFINITY;
    double a = fabs(ref);
    int e;
    frexp(a > FLT_MIN ? a : FLT_MIN, &e);
    return fabs((double)got - ref) / ldexp(1.0, e - 24);
}

static int have_avx2(void) { return sdb_vexp_have_avx2(); }

__attribute__((target("avx2,fma")))
static void vexp_array(const float *x, float *y, int n) /* n a multiple of 8 */
{
    for (int i = 0; i < n; i += 8) _mm256_storeu_ps(y + i, sdb_vexp8(_mm256_loadu_ps(x + i)));
}

__attribute__((target("avx2,fma")))
static float vexp1_fma(float x) { return sdb_vexp1_fma(x); }

/* Every 61st float bit pattern (both signs, ~70 million values, ~37 million inside the
 * interesting range): error against exp in double. */
static void test_vexp_sweep(void)
{
    const int avx2 = have_avx2();
    CHECKF(avx2, "this test expects a CPU with AVX2+FMA (the vector path is not exercised)");
    enum { B = 4096 };
    static float x[B], yv[B];
    double worst_v = 0, worst_g = 0, worst_lib = 0;
    float at_v = 0, at_g = 0;
    long twin_diff = 0, checked = 0;
    uint64_t u = 0;
    while (u < 0x100000000ULL) {
        int n = 0;
        for (; n < B && u < 0x100000000ULL; u += 61) x[n++] = f_of((uint32_t)u);
        while (n % 8) x[n++] = 0.0f;
        if (avx2) vexp_array(x, yv, n);
        for (int i = 0; i < n; i++) {
            float xi = x[i];
            if (isnan(xi) || xi < -110.0f || xi > 95.0f) continue;
            double ref = exp((double)xi);
            float g = sdb_vexp1(xi);
            double eg = ulps(g, ref);
            if (eg > worst_g) { worst_g = eg; at_g = xi; }
            double el = ulps(expf(xi), ref);
            if (el > worst_lib) worst_lib = el;
            if (avx2) {
                double ev = ulps(yv[i], ref);
                if (ev > worst_v) { worst_v = ev; at_v = xi; }
                float t = vexp1_fma(xi);
                if (memcmp(&t, &yv[i], 4) != 0) twin_diff++;
            }
            checked++;
        }
    }
    fprintf(stderr, "  vexp sweep: %ld values in [-110, 95]: AVX2 max %.3f ulp (x=%.9g), portable %.3f ulp "
            "(x=%.9g), libm expf %.3f ulp; twin differs %ld times\n",
            checked, worst_v, (double)at_v, worst_g, (double)at_g, worst_lib, twin_diff);
    CHECK(checked > 30000000);
    CHECKF(worst_v <= 1.5, "AVX2 exp: %.3f ulp at %.9g", worst_v, (double)at_v);
    CHECKF(worst_g <= 1.5, "portable exp: %.3f ulp at %.9g", worst_g, (double)at_g);
    CHECKF(twin_diff == 0, "the FMA scalar twin differs from the AVX2 lanes %ld times", twin_diff);
}

/* exp at the ends of the range, of infinities and of NaN, for all three forms */
static void test_vexp_edges(void)
{
    const float lnmax = 88.7228317f;       /* largest float whose exp is finite */
    const float big[] = {nextafterf(lnmax, INFINITY), 88.75f, 89.0f, 100.0f, 1e30f, FLT_MAX, INFINITY};
    const float tiny[] = {-103.98f, -104.0f, -150.0f, -1e30f, -FLT_MAX, -INFINITY};
    const int avx2 = have_avx2();
    float in[8], out[8];
    for (int form = 0; form < (avx2 ? 3 : 1); form++) {
        float y[32];
        const float *src[] = {big, tiny};
        int ns[] = {7, 6};
        for (int s = 0; s < 2; s++) {
            for (int i = 0; i < ns[s]; i++) {
                float xi = src[s][i];
                if (form == 0) y[i] = sdb_vexp1(xi);
                else if (form == 1) y[i] = vexp1_fma(xi);
                else {
                    for (int k = 0; k < 8; k++) in[k] = xi;
                    vexp_array(in, out, 8);
                    y[i] = out[3];
                }
                if (s == 0) CHECKF(isinf(y[i]) && y[i] > 0, "form %d: exp(%.9g) = %g, want +inf", form, (double)xi, (double)y[i]);
                else CHECKF(y[i] == 0.0f && !signbit(y[i]), "form %d: exp(%.9g) = %g, want +0", form, (double)xi, (double)y[i]);
            }
        }
        /* the largest finite result, the smallest normal one, subnormal ones, and the last nonzero */
        const float xs[] = {lnmax, -87.3365479f, -90.0f, -100.0f, -103.2789f, -103.97f};
        for (int i = 0; i < 6; i++) {
            float xi = xs[i], r;
            if (form == 0) r = sdb_vexp1(xi);
            else if (form == 1) r = vexp1_fma(xi);
            else { for (int k = 0; k < 8; k++) in[k] = xi; vexp_array(in, out, 8); r = out[5]; }
            double ref = exp((double)xi);
            CHECKF(isfinite(r) && r > 0 && ulps(r, ref) <= 1.5, "form %d: exp(%.9g) = %.9g, want %.9g", form,
                   (double)xi, (double)r, ref);
        }
        float q = NAN, r;
        if (form == 0) r = sdb_vexp1(q);
        else if (form == 1) r = vexp1_fma(q);
        else { for (int k = 0; k < 8; k++) in[k] = k == 2 ? q : 1.0f; vexp_array(in, out, 8); r = out[2];
               CHECK(out[1] == vexp1_fma(1.0f)); }
        CHECKF(isnan(r), "form %d: exp(NaN) = %g", form, (double)r);
        if (form == 0) r = sdb_vexp1(0.0f);
        else if (form == 1) r = vexp1_fma(-0.0f);
        else { for (int k = 0; k < 8; k++) in[k] = 0.0f; vexp_array(in, out, 8); r = out[0]; }
        CHECKF(r == 1.0f, "form %d: exp(0) = %.9g", form, (double)r);
    }
}

/* n inputs: mostly N(0, 3)-like, some wide (|x| up to 120), a few exact specials */
static float *inputs(size_t n)
{
    float *x = malloc(sizeof(float) * (n ? n : 1));
    for (size_t i = 0; i < n; i++) {
        double u = urand();
        x[i] = (float)(i % 5 == 4 ? (u - 0.5) * 240.0 : (u - 0.5) * 12.0);
    }
    const float sp[] = {0.0f, -0.0f, 1e-30f, -1e-30f, 88.0f, -88.0f, 89.0f, -89.0f, 20.0f, -20.0f};
    for (size_t i = 0; i < 10 && i < n; i++) x[(i * 7919) % n] = sp[i];
    return x;
}

/* x / (1 + exp(-k x)) in double; the argument k*x rounded to float first, as the float ops do */
static double sigmul_ref(float x, float k)
{
    float z = (k == 1.0f) ? -x : -k * x;
    return (double)x / (1.0 + exp((double)z));
}

static void check_sigmul(int quick)
{
    const size_t lens[] = {0, 1, 7, 8, 9, 4095, 4096, 4103, 70001, 200003};
    const float k = quick ? 1.702f : 1.0f;
    for (size_t t = 0; t < sizeof lens / sizeof lens[0]; t++) {
        size_t n = lens[t];
        float *x = inputs(n), *y1 = malloc(sizeof(float) * (n ? n : 1)), *y2 = malloc(sizeof(float) * (n ? n : 1));
        memcpy(y1, x, sizeof(float) * n);
        memcpy(y2, x, sizeof(float) * n);
        sdb_threads_set(1);
        if (quick) sdb_quick_gelu(y1, n); else sdb_silu(y1, n);
        sdb_threads_set(2);
        if (quick) sdb_quick_gelu(y2, n); else sdb_silu(y2, n);
        double worst = 0;
        size_t wi = 0;
        for (size_t i = 0; i < n; i++) {
            double ref = sigmul_ref(x[i], k);
            /* below -88.7 / k, exp(-k x) overflows float: the result is -0 where |ref| < 1e-36 */
            double e = fabs(ref) < 1e-36 && y1[i] == 0.0f ? 0 : ulps(y1[i], ref);
            if (e > worst) { worst = e; wi = i; }
        }
        fprintf(stderr, "  %s n=%zu: max %.2f ulp%s\n", quick ? "quick_gelu" : "silu", n, worst, n ? "" : " (empty)");
        CHECKF(worst <= 3.0, "%s n=%zu: %.2f ulp at x=%.9g (got %.9g, want %.9g)", quick ? "quick_gelu" : "silu",
               n, worst, n ? (double)x[wi] : 0.0, n ? (double)y1[wi] : 0.0, n ? sigmul_ref(x[wi], k) : 0.0);
        CHECKF(memcmp(y1, y2, sizeof(float) * n) == 0, "%s n=%zu: 1 vs 2 threads differ", quick ? "quick_gelu" : "silu", n);
        free(x); free(y1); free(y2);
    }
    /* each result depends on its own element only: the same values at every offset from the
     * start (vector lanes, vector tails and chunk boundaries all agree) */
    {
        const size_t n = 4096 * 2 + 21;
        float *x = inputs(n), *a = malloc(sizeof(float) * n), *c = malloc(sizeof(float) * n);
        memcpy(a, x, sizeof(float) * n);
        if (quick) sdb_quick_gelu(a, n); else sdb_silu(a, n);
        int bad = 0;
        for (size_t off = 1; off < 12; off++) {
            memcpy(c, x + off, sizeof(float) * (n - off));
            if (quick) sdb_quick_gelu(c, n - off); else sdb_silu(c, n - off);
            bad += memcmp(c, a + off, sizeof(float) * (n - off)) != 0;
        }
        for (size_t at = 0; at + 7 <= n; at += 7) { /* 7 at a time: the scalar tail code only */
            memcpy(c, x + at, sizeof(float) * 7);
            if (quick) sdb_quick_gelu(c, 7); else sdb_silu(c, 7);
            bad += memcmp(c, a + at, sizeof(float) * 7) != 0;
        }
        CHECKF(bad == 0, "%s: results depend on the position in the array (%d cases)", quick ? "quick_gelu" : "silu", bad);
        free(x); free(a); free(c);
    }
    /* NaN stays NaN, +inf stays +inf, exactly 0 for 0 */
    float s[3] = {NAN, INFINITY, 0.0f};
    if (quick) sdb_quick_gelu(s, 3); else sdb_silu(s, 3);
    CHECK(isnan(s[0]));
    CHECK(isinf(s[1]) && s[1] > 0);
    CHECK(s[2] == 0.0f);
}

static void test_silu(void) { check_sigmul(0); }
static void test_quick_gelu(void) { check_sigmul(1); }

static void test_geglu(void)
{
    const int shapes[][2] = {{1, 1}, {3, 7}, {5, 8}, {4, 13}, {33, 320}, {40, 1283}};
    for (size_t t = 0; t < sizeof shapes / sizeof shapes[0]; t++) {
        int rows = shapes[t][0], dim = shapes[t][1];
        size_t nh = (size_t)rows * 2 * dim, no = (size_t)rows * dim;
        float *h = inputs(nh), *o1 = malloc(sizeof(float) * no), *o2 = malloc(sizeof(float) * no);
        sdb_threads_set(1);
        sdb_geglu(h, rows, dim, o1);
        sdb_threads_set(2);
        sdb_geglu(h, rows, dim, o2);
        /* erf is A&S 7.1.26 (|error| < 1.5e-7 absolute in exact arithmetic, 5.8e-7 measured in
         * float over b in [-6, 6]): allow 7e-7 on 1 + erf, i.e. on gelu(b) / (b/2), scaled by |a| */
        double worst = 0;
        int bad = 0;
        for (int r = 0; r < rows; r++)
            for (int i = 0; i < dim; i++) {
                double a = h[(size_t)r * 2 * dim + i], b = h[(size_t)r * 2 * dim + dim + i];
                double ref = a * 0.5 * b * (1.0 + erf(b / sqrt(2.0)));
                double got = o1[(size_t)r * dim + i];
                double tol = fabs(a) * 0.5 * fabs(b) * 7e-7 + 4.0 * ldexp(1.0, -24) * fabs(ref) + 1e-37;
                double e = fabs(got - ref) / tol;
                if (e > worst) worst = e;
                if (e > 1.0) bad++;
            }
        fprintf(stderr, "  geglu %dx%d: max error %.2f of the tolerance\n", rows, dim, worst);
        CHECKF(bad == 0, "geglu %dx%d: %d values out of tolerance", rows, dim, bad);
        CHECKF(memcmp(o1, o2, sizeof(float) * no) == 0, "geglu %dx%d: 1 vs 2 threads differ", rows, dim);
        free(h); free(o1); free(o2);
    }
}

/* GroupNorm's documented statistics: sums in double in 4 interleaved partial sums a_k (element
 * i goes to a_{i mod 4} while a full group of 4 remains, the rest to a_0), combined as
 * (a0 + a1) + (a2 + a3); the mean first, then the centred sum of squares. */
static void gn_stats(const float *x, size_t n, double *mean, double *var)
{
    double a[4] = {0, 0, 0, 0};
    size_t full = n / 4 * 4;
    for (size_t i = 0; i < n; i++) a[i < full ? i % 4 : 0] += x[i];
    double m = ((a[0] + a[1]) + (a[2] + a[3])) / (double)n;
    a[0] = a[1] = a[2] = a[3] = 0;
    for (size_t i = 0; i < n; i++) {
        double d = x[i] - m;
        volatile double q = d * d; /* rounded, then added */
        a[i < full ? i % 4 : 0] += q;
    }
    *mean = m;
    *var = ((a[0] + a[1]) + (a[2] + a[3])) / (double)n;
}

/* sdb_groupnorm_stats bit-exactly as documented, on values whose sums depend strongly on the
 * order of the additions (huge values that cancel, with small ones absorbed or not) and on
 * values whose squares are inexact (so a fused multiply-add would differ) */
static void test_groupnorm_stats(void)
{
    const size_t lens[] = {1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 1000, 4099, 65541};
    int bad = 0, cases = 0;
    for (size_t t = 0; t < sizeof lens / sizeof lens[0]; t++) {
        size_t n = lens[t];
        float *x = malloc(sizeof(float) * n);
        for (int kind = 0; kind < 4; kind++) {
            for (size_t i = 0; i < n; i++) {
                double u = urand();
                if (kind == 0) x[i] = (float)(u * 2.0 - 1.0);
                else if (kind == 1) x[i] = (float)(3.0 + u * 1e-3);
                else if (kind == 2) /* in each lane 2^60, small, -2^60, small, ...: a small value
                                     * added to ±2^60 is lost, one added to 0 is kept, so any other
                                     * grouping of the additions gives another sum */
                    x[i] = (i / 4) % 2 ? (float)(u * 4.0) : (i / 8) % 2 ? -1152921504606846976.0f : 1152921504606846976.0f;
                else /* 2^40 in lane 0 only, small values elsewhere and in the tail: where the tail
                      * goes and how the lanes are combined both show */
                    x[i] = i % 4 == 0 && i < n / 4 * 4 ? 1099511627776.0f : (float)(u * 4.0);
            }
            double m0, v0, m1, v1;
            gn_stats(x, n, &m0, &v0);
            sdb_groupnorm_stats(x, n, &m1, &v1);
            cases++;
            if (memcmp(&m0, &m1, sizeof m0) != 0 || memcmp(&v0, &v1, sizeof v0) != 0) {
                bad++;
                fprintf(stderr, "  n=%zu kind %d: mean %.17g vs %.17g, var %.17g vs %.17g\n", n, kind, m1, m0, v1, v0);
            }
        }
        free(x);
    }
    CHECKF(bad == 0, "%d of %d statistics differ from the documented order", bad, cases);
}

static void gn_case(int N, int C, int HW, int G, float eps, int affine, float offset, float spread)
{
    size_t n = (size_t)N * C * HW;
    float *x = malloc(sizeof(float) * n), *g = malloc(sizeof(float) * C), *b = malloc(sizeof(float) * C);
    for (size_t i = 0; i < n; i++) x[i] = offset + spread * (float)(urand() * 2.0 - 1.0);
    for (int c = 0; c < C; c++) { g[c] = (float)(0.5 + urand() * 1.5); b[c] = (float)(urand() * 2.0 - 1.0); }
    const float *gp = affine ? g : NULL, *bp = affine ? b : NULL;
    float *y = malloc(sizeof(float) * n), *y2 = malloc(sizeof(float) * n);
    const int fused = have_avx2();
    const int cpg = C / G;
    for (int silu = 0; silu < 2; silu++) {
        sdb_threads_set(1);
        sdb_groupnorm(x, N, C, HW, G, gp, bp, eps, silu, y);
        long exact_bad = 0;
        double worst = 0;
        for (int nn = 0; nn < N; nn++)
            for (int gi = 0; gi < G; gi++) {
                const float *xg = x + ((size_t)nn * C + (size_t)gi * cpg) * HW;
                double mean, var;
                gn_stats(xg, (size_t)cpg * HW, &mean, &var);
                double rstd = 1.0 / sqrt(var + (double)eps);
                for (int cc = 0; cc < cpg; cc++) {
                    int c = gi * cpg + cc;
                    double gam = gp ? gp[c] : 1.0, bet = bp ? bp[c] : 0.0;
                    float sc = (float)(rstd * gam), sh = (float)(bet - mean * (rstd * gam));
                    for (int i = 0; i < HW; i++) {
                        size_t at = ((size_t)nn * C + c) * HW + i;
                        double v = (x[at] - mean) * rstd * gam + bet;
                        /* the documented y = x * scale + shift, bit-exactly; with SiLU through
                         * vexp.h's exp (its FMA form: the same at every position in a row) */
                        float want = fused ? fmaf(x[at], sc, sh) : x[at] * sc + sh;
                        if (silu) {
                            v = v / (1.0 + exp(-v));
                            want = fused ? want / (1.0f + vexp1_fma(-want)) : want / (1.0f + sdb_vexp1(-want));
                        }
                        if (memcmp(&want, &y[at], 4) != 0) exact_bad++;
                        /* against the double result: the float scale/shift's rounding on |x·sc| and
                         * |sh| (cancelling), then a few ulp */
                        double tol = (fabs(x[at] * (double)sc) + fabs((double)sh)) * 1.5 * ldexp(1.0, -24) +
                                     4.0 * ldexp(1.0, -24) * fabs(v) + 1e-30;
                        double e = fabs(y[at] - v) / tol;
                        if (e > worst) worst = e;
                    }
                }
            }
        fprintf(stderr, "  groupnorm N%d C%d HW%d G%d affine%d offset %g silu%d: max error %.2f of the tolerance\n",
                N, C, HW, G, affine, (double)offset, silu, worst);
        CHECKF(exact_bad == 0, "groupnorm N%d C%d HW%d G%d silu%d: %ld values differ from the documented formula",
               N, C, HW, G, silu, exact_bad);
        CHECKF(worst <= 1.0, "groupnorm N%d C%d HW%d G%d silu%d: %.2f of the tolerance", N, C, HW, G, silu, worst);
        sdb_threads_set(2);
        sdb_groupnorm(x, N, C, HW, G, gp, bp, eps, silu, y2);
        CHECKF(memcmp(y, y2, sizeof(float) * n) == 0, "groupnorm N%d C%d HW%d G%d silu%d: 1 vs 2 threads differ",
               N, C, HW, G, silu);
        memcpy(y2, x, sizeof(float) * n);
        sdb_groupnorm(y2, N, C, HW, G, gp, bp, eps, silu, y2);
        CHECKF(memcmp(y, y2, sizeof(float) * n) == 0, "groupnorm N%d C%d HW%d G%d silu%d: in place differs",
               N, C, HW, G, silu);
    }
    free(x); free(g); free(b); free(y); free(y2);
}

static void test_groupnorm(void)
{
    gn_case(1, 4, 1, 2, 1e-5f, 1, 0.0f, 1.0f);          /* groups of 2 values: no full 4 */
    gn_case(2, 6, 7, 3, 1e-5f, 1, 0.0f, 3.0f);          /* channel tails of 7, groups of 14 */
    gn_case(1, 64, 17 * 12, 32, 1e-6f, 1, 3.0f, 2.0f);
    gn_case(2, 32, 99, 8, 1e-6f, 0, 0.0f, 5.0f);        /* no gamma / beta */
    gn_case(1, 128, 64 * 64 + 3, 32, 1e-6f, 1, 100.0f, 0.5f); /* large mean, small spread */
    gn_case(1, 512, 32 * 32, 32, 1e-6f, 1, -2.0f, 40.0f);     /* wide values: SiLU's exp at its clamps */
}

/* LayerNorm rows of dim values: bit-exactly ((x - m) * rstd) * gamma + beta in float, with m and
 * rstd rounded from the documented double statistics (checked above); within a few ulp of the
 * double-precision result; the same on 1 and 2 threads and in place. */
static void ln_case(int rows, int dim, int affine, float offset, float spread)
{
    const size_t n = (size_t)rows * dim;
    float *x = malloc(sizeof(float) * n), *y = malloc(sizeof(float) * n), *y2 = malloc(sizeof(float) * n);
    float *g = malloc(sizeof(float) * dim), *b = malloc(sizeof(float) * dim);
    for (size_t i = 0; i < n; i++) x[i] = offset + spread * (float)(urand() * 2.0 - 1.0);
    for (int c = 0; c < dim; c++) { g[c] = (float)(0.5 + urand() * 1.5); b[c] = (float)(urand() * 2.0 - 1.0); }
    const float *gp = affine ? g : NULL, *bp = affine ? b : NULL, eps = 1e-5f;
    sdb_threads_set(1);
    sdb_layernorm(x, rows, dim, gp, bp, eps, y);
    long exact_bad = 0;
    double worst = 0;
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * dim;
        double mean, var;
        gn_stats(xr, (size_t)dim, &mean, &var);
        const float m = (float)mean, rstd = (float)(1.0 / sqrt(var + (double)eps));
        for (int i = 0; i < dim; i++) {
            const size_t at = (size_t)r * dim + i;
            volatile float nrm = (xr[i] - m) * rstd, sc = nrm * (gp ? gp[i] : 1.0f);
            const float want = sc + (bp ? bp[i] : 0.0f);
            if (memcmp(&want, &y[at], 4) != 0) exact_bad++;
            const double gam = gp ? gp[i] : 1.0, bet = bp ? bp[i] : 0.0;
            const double v = (xr[i] - mean) / sqrt(var + (double)eps) * gam + bet;
            /* float rounding of m (relative to |x - m| the cancellation), of the product chain and
             * of the sum */
            const double tol = (fabs((double)xr[i]) + fabs(mean)) / sqrt(var + (double)eps) * fabs(gam) * 4.0 * ldexp(1.0, -24) +
                               fabs(bet) * ldexp(1.0, -24) + 4.0 * ldexp(1.0, -24) * fabs(v) + 1e-30;
            const double e = fabs(y[at] - v) / tol;
            if (e > worst) worst = e;
        }
    }
    fprintf(stderr, "  layernorm %d x %d affine%d offset %g: max error %.2f of the tolerance\n", rows, dim, affine,
            (double)offset, worst);
    CHECKF(exact_bad == 0, "layernorm %d x %d: %ld values differ from the documented formula", rows, dim, exact_bad);
    CHECKF(worst <= 1.0, "layernorm %d x %d: %.2f of the tolerance", rows, dim, worst);
    sdb_threads_set(2);
    sdb_layernorm(x, rows, dim, gp, bp, eps, y2);
    CHECKF(memcmp(y, y2, sizeof(float) * n) == 0, "layernorm %d x %d: 1 vs 2 threads differ", rows, dim);
    memcpy(y2, x, sizeof(float) * n);
    sdb_layernorm(y2, rows, dim, gp, bp, eps, y2);
    CHECKF(memcmp(y, y2, sizeof(float) * n) == 0, "layernorm %d x %d: in place differs", rows, dim);
    free(x); free(y); free(y2); free(g); free(b);
}

static void test_layernorm(void)
{
    ln_case(3, 5, 1, 0.0f, 1.0f);        /* shorter than a vector */
    ln_case(7, 13, 0, 0.0f, 2.0f);       /* a vector and a tail; no gamma / beta */
    ln_case(200, 320, 1, 0.5f, 3.0f);    /* the U-Net's first level, parallel */
    ln_case(40, 1280, 1, 50.0f, 0.5f);   /* large mean, small spread */
    ln_case(9, 768, 1, -1.0f, 30.0f);
}

int main(void)
{
    RUN(test_vexp_sweep);
    RUN(test_vexp_edges);
    RUN(test_silu);
    RUN(test_quick_gelu);
    RUN(test_geglu);
    RUN(test_groupnorm_stats);
    RUN(test_groupnorm);
    RUN(test_layernorm);
    return sdb_t_done();
}
