/*
 * test_rng.c — sdb_rng against refs/randn.safetensors (torch 1.13 CPU generator), bit for bit.
 */
#include "harness.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sdb/rng.h"
#include "sdb/safetensors.h"

static sdb_st *open_ref(void)
{
    sdb_err err = {0};
    sdb_st *st = NULL;
    if (!sdb_t_data()) return NULL;
    if (sdb_st_open(&st, sdb_t_path("refs/randn.safetensors"), &err) != 0) {
        CHECKF(0, "%s", err.msg);
        return NULL;
    }
    return st;
}

static int64_t ulp_diff(float a, float b)
{
    int32_t ia, ib;
    memcpy(&ia, &a, 4); memcpy(&ib, &b, 4);
    if (ia < 0) ia = INT32_MIN - ia;
    if (ib < 0) ib = INT32_MIN - ib;
    return llabs((long long)ia - (long long)ib);
}

/* Compares n values bit for bit; returns the number that differ, prints the max ulp diff. */
static size_t compare_bits(const char *name, const float *got, const float *ref, size_t n, size_t *total)
{
    size_t diff = 0;
    int64_t maxulp = 0;
    for (size_t i = 0; i < n; i++) {
        if (memcmp(&got[i], &ref[i], 4) != 0) {
            diff++;
            int64_t u = ulp_diff(got[i], ref[i]);
            if (u > maxulp) maxulp = u;
        }
    }
    *total += n;
    if (diff) fprintf(stderr, "  %s: %zu/%zu values differ, max %" PRId64 " ulp\n", name, diff, n, maxulp);
    return diff;
}

static void test_mt19937_first16(void)
{
    sdb_st *st = open_ref();
    if (!st) return;
    const uint64_t seeds[2] = {0, 42};
    for (int s = 0; s < 2; s++) {
        char name[64];
        snprintf(name, sizeof name, "mt19937_seed%" PRIu64 "_first16", seeds[s]);
        const sdb_st_tensor *t = sdb_st_find(st, name);
        CHECKF(t && t->numel == 16, "%s missing", name);
        if (!t) continue;
        int64_t ref[16];
        sdb_err err = {0};
        CHECK_OK(sdb_st_to_i64(t, ref, &err), &err);
        sdb_rng g;
        sdb_rng_seed(&g, seeds[s]);
        for (int i = 0; i < 16; i++) {
            uint32_t v = sdb_rng_u32(&g);
            CHECKF((int64_t)v == ref[i], "%s[%d]: got %u want %" PRId64, name, i, v, ref[i]);
        }
    }
    sdb_rng g;
    sdb_rng_seed(&g, 0);
    CHECK(sdb_rng_u32(&g) == 2357136044u);
    sdb_rng_seed(&g, 42);
    CHECK(sdb_rng_u32(&g) == 1608637542u);
    sdb_st_close(st);
}

/* Every seed{S}_shape{..} and rand_seed{S}_shape{..} tensor: one fresh generator each. */
static void test_single_draws(void)
{
    sdb_st *st = open_ref();
    if (!st) return;
    size_t total = 0, bad = 0;
    int tensors = 0;
    for (int i = 0; i < st->n; i++) {
        const sdb_st_tensor *t = &st->tensors[i];
        int is_rand = strncmp(t->name, "rand_seed", 9) == 0;
        if (!is_rand && strncmp(t->name, "seed", 4) != 0) continue;
        uint64_t seed = strtoull(t->name + (is_rand ? 9 : 4), NULL, 10);
        float *ref = malloc((size_t)t->numel * sizeof(float));
        float *got = malloc((size_t)t->numel * sizeof(float));
        sdb_err err = {0};
        CHECK_OK(sdb_st_to_f32(t, ref, &err), &err);
        sdb_rng g;
        sdb_rng_seed(&g, seed);
        if (is_rand) sdb_rng_rand(&g, got, (size_t)t->numel);
        else sdb_rng_randn(&g, got, (size_t)t->numel);
        bad += compare_bits(t->name, got, ref, (size_t)t->numel, &total);
        tensors++;
        free(ref);
        free(got);
    }
    fprintf(stderr, "  single draws: %d tensors, %zu/%zu values bit-exact\n", tensors, total - bad, total);
    CHECK(tensors >= 60);
    CHECKF(bad == 0, "%zu of %zu values are not bit-exact", bad, total);
    sdb_st_close(st);
}

/* seq*_seed{S}_draw{i}_shape{..}: successive draws from ONE generator per prefix. */
static void test_successive_draws(void)
{
    sdb_st *st = open_ref();
    if (!st) return;
    const char *prefixes[3] = {"seq_seed42_draw", "seq2_seed42_draw", "seq3_seed0_draw"};
    const uint64_t seeds[3] = {42, 42, 0};
    size_t total = 0, bad = 0;
    for (int p = 0; p < 3; p++) {
        sdb_rng g;
        sdb_rng_seed(&g, seeds[p]);
        int draws = 0;
        for (int d = 0; d < 16; d++) {
            char pre[64];
            snprintf(pre, sizeof pre, "%s%d_", prefixes[p], d);
            const sdb_st_tensor *t = NULL;
            for (int i = 0; i < st->n; i++)
                if (strncmp(st->tensors[i].name, pre, strlen(pre)) == 0) { t = &st->tensors[i]; break; }
            if (!t) break;
            float *ref = malloc((size_t)t->numel * sizeof(float));
            float *got = malloc((size_t)t->numel * sizeof(float));
            sdb_err err = {0};
            CHECK_OK(sdb_st_to_f32(t, ref, &err), &err);
            sdb_rng_randn(&g, got, (size_t)t->numel);
            bad += compare_bits(t->name, got, ref, (size_t)t->numel, &total);
            free(ref);
            free(got);
            draws++;
        }
        CHECKF(draws >= 2, "%s: only %d draws found", prefixes[p], draws);
    }
    CHECKF(bad == 0, "%zu of %zu successive-draw values are not bit-exact", bad, total);
    sdb_st_close(st);
}

/* Properties that need no reference: low 32 bits only, reseeding clears the cached normal. */
static void test_seed_semantics(void)
{
    sdb_rng a, b;
    float x[40], y[40];
    sdb_rng_seed(&a, 0);
    sdb_rng_seed(&b, 1ull << 32);
    sdb_rng_randn(&a, x, 40);
    sdb_rng_randn(&b, y, 40);
    CHECK(memcmp(x, y, sizeof x) == 0);
    /* draw 1 of 7 leaves a cached sample; reseeding must drop it */
    sdb_rng_seed(&a, 5);
    sdb_rng_randn(&a, x, 1);
    sdb_rng_seed(&a, 5);
    sdb_rng_randn(&a, y, 1);
    CHECK(memcmp(x, y, 4) == 0);
    /* sane moments for a big draw */
    size_t n = 1 << 16;
    float *v = malloc(n * sizeof(float));
    sdb_rng_seed(&a, 123);
    sdb_rng_randn(&a, v, n);
    double m = 0, s2 = 0;
    for (size_t i = 0; i < n; i++) { m += v[i]; s2 += (double)v[i] * v[i]; }
    m /= (double)n;
    s2 = s2 / (double)n - m * m;
    CHECKF(fabs(m) < 0.02 && fabs(s2 - 1.0) < 0.03, "mean %g var %g", m, s2);
    free(v);
}

int main(void)
{
    RUN(test_mt19937_first16);
    RUN(test_single_draws);
    RUN(test_successive_draws);
    RUN(test_seed_semantics);
    return sdb_t_done();
}
