/*
 * test_core.c — core pieces: half/bfloat16 conversions (all 65536 values against an independent
 * ldexp formula, scalar vs F16C; narrowing against the nearest-half definition), the arena, atomic writes, scratch files, config accessors, error context.
 */
#include "harness.h"
#include "sdb/arena.h"
#include "sdb/config.h"
#include "sdb/error.h"
#include "sdb/fp16.h"
#include "sdb/fsutil.h"

#include <dirent.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* IEEE half value by definition: (-1)^s * 2^(e-15) * (1 + m/1024), subnormals 2^-14 * m/1024. */
static double half_reference(uint16_t h)
{
    int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
    double v;
    if (e == 0) v = ldexp((double)m, -24);
    else if (e == 31) v = m ? NAN : INFINITY;
    else v = ldexp(1.0 + m / 1024.0, e - 15);
    return s ? -v : v;
}

static void test_f16_all_values(void)
{
    uint16_t *h = malloc(65536 * 2);
    float *vec = malloc(65536 * 4);
    for (int i = 0; i < 65536; i++) h[i] = (uint16_t)i;
    sdb_f16_to_f32_array(h, vec, 65536);
    int bad = 0;
    for (int i = 0; i < 65536; i++) {
        double ref = half_reference((uint16_t)i);
        float s = sdb_f16_to_f32((uint16_t)i);
        if (isnan(ref)) { if (!isnan(s) || !isnan(vec[i])) bad++; continue; }
        if ((double)s != ref || memcmp(&s, &vec[i], 4) != 0) bad++;
        if (!signbit(s) != !signbit(ref)) bad++;
        /* narrowing back is exact for every representable value */
        if (sdb_f32_to_f16(s) != (uint16_t)i) bad++;
    }
    CHECKF(bad == 0, "%d mismatches", bad);
    fprintf(stderr, "  F16C path used: %s\n", sdb_fp16_has_f16c() ? "yes" : "no");
    free(h);
    free(vec);
}

static void test_f16_rounding(void)
{
    /* halfway between 1 and the next half (1 + 2^-10): ties to even -> 1.0 (0x3C00) */
    CHECK(sdb_f32_to_f16(1.0f + 0x1p-11f) == 0x3C00);
    /* 1 + 3*2^-11 is halfway between 1+2^-10 (odd) and 1+2^-9 (even) -> 0x3C02 */
    CHECK(sdb_f32_to_f16(1.0f + 3 * 0x1p-11f) == 0x3C02);
    CHECK(sdb_f32_to_f16(65504.0f) == 0x7BFF);
    CHECK(sdb_f32_to_f16(65520.0f) == 0x7C00);   /* rounds to infinity */
    CHECK(sdb_f32_to_f16(0x1p-25f) == 0x0000);   /* half of the smallest subnormal: ties to even 0 */
    CHECK(sdb_f32_to_f16(0x1.8p-24f) == 0x0002); /* 1.5 subnormal units -> 2 */
    CHECK(sdb_bf16_to_f32(0x3F80) == 1.0f && sdb_bf16_to_f32(0xC040) == -3.0f);
}

/* The correctly rounded half of a finite double x >= 0 by definition: the two neighbouring halves
 * from the table of all finite positive ones (65536 standing for the overflow step to infinity,
 * 0x7C00, whose mantissa is even), nearest wins, a tie goes to the even one. */
static double half_values[0x7C01];
static uint16_t half_nearest(double x)
{
    unsigned lo = 0, hi = 0x7C00; /* half_values[lo] <= x < half_values[hi] (x below 65536) */
    if (x >= 65536.0) return 0x7C00;
    while (hi - lo > 1) {
        unsigned mid = (lo + hi) / 2;
        if (half_values[mid] <= x) lo = mid; else hi = mid;
    }
    double dl = x - half_values[lo], dh = half_values[hi] - x; /* exact in double */
    if (dl < dh) return (uint16_t)lo;
    if (dh < dl) return (uint16_t)hi;
    return (uint16_t)((lo & 1) ? hi : lo);
}

static uint16_t signed_nearest(double x)
{
    return (uint16_t)((signbit(x) ? 0x8000 : 0) | half_nearest(fabs(x)));
}

/* Narrowing float32 -> half against half_nearest on every float whose 13 dropped mantissa bits
 * take the patterns that decide rounding (exact, just above/below the half-way point, the tie,
 * all ones), for every exponent, kept mantissa and sign; scalar and array (F16C) code. */
static void test_f16_narrowing(void)
{
    for (unsigned h = 0; h < 0x7C00; h++) half_values[h] = half_reference((uint16_t)h);
    half_values[0x7C00] = 65536.0;
    static const uint32_t low[] = {0, 1, 0x7FF, 0x800, 0xFFF, 0x1000, 0x1001, 0x17FF, 0x1FFF};
    const size_t nlow = sizeof low / sizeof low[0];
    size_t n = 2 * 255 * 1024 * nlow + 16, k = 0;
    float *f = malloc(n * sizeof *f);
    uint16_t *arr = malloc(n * sizeof *arr);
    for (uint32_t sgn = 0; sgn < 2; sgn++)
        for (uint32_t e = 0; e < 255; e++)
            for (uint32_t m = 0; m < 1024; m++)
                for (size_t l = 0; l < nlow; l++) {
                    uint32_t u = sgn << 31 | e << 23 | m << 13 | low[l];
                    memcpy(&f[k++], &u, 4);
                }
    /* specials, some inside an 8-wide group with ordinary values */
    const float sp[16] = {INFINITY, -INFINITY, NAN, -NAN, 1.0f, 65504.0f, 65519.99f, 65520.0f,
                          -0.0f, 0x1p-25f, 0x1.8p-24f, 1e-40f, NAN, 2.0f, 3.0f, -1e30f};
    for (int i = 0; i < 16; i++) f[k++] = sp[i];
    sdb_f32_to_f16_array(f, arr, n);
    size_t bad = 0, bad_arr = 0;
    for (size_t i = 0; i < n; i++) {
        uint16_t s = sdb_f32_to_f16(f[i]);
        if (arr[i] != s) bad_arr++;
        if (isnan(f[i])) { if ((s & 0x7FFF) != 0x7E00) bad++; continue; }
        if (s != signed_nearest((double)f[i])) {
            if (bad < 5) fprintf(stderr, "  %a -> %04x, expected %04x\n", (double)f[i], s, signed_nearest((double)f[i]));
            bad++;
        }
    }
    CHECKF(bad == 0, "%zu of %zu narrowings differ from the definition", bad, n);
    CHECKF(bad_arr == 0, "%zu array narrowings differ from the scalar ones", bad_arr);
    /* from double: rounded once. 1 + 2^-11 + 2^-40 is above the tie between 1 and 1 + 2^-10,
     * but rounds to exactly the tie in float32 (which would then round to even, 1.0) */
    CHECK(sdb_f64_to_f16(1.0 + 0x1p-11 + 0x1p-40) == 0x3C01);
    CHECK(sdb_f64_to_f16(1.0 + 0x1p-11) == 0x3C00 && sdb_f64_to_f16(-(1.0 + 0x1p-11 + 0x1p-40)) == 0xBC01);
    CHECK(sdb_f64_to_f16(1e300) == 0x7C00 && sdb_f64_to_f16(1e-300) == 0 && sdb_f64_to_f16(65519.999) == 0x7BFF);
    double dv[] = {0x1.0008000001p-20, 3.14159265358979, -2.0000000000001, 65519.9999999, 1e-7, 0x1.ffdp-15};
    for (size_t i = 0; i < sizeof dv / sizeof dv[0]; i++)
        CHECKF(sdb_f64_to_f16(dv[i]) == signed_nearest(dv[i]), "%a -> %04x, expected %04x", dv[i],
               sdb_f64_to_f16(dv[i]), signed_nearest(dv[i]));
    free(f);
    free(arr);
}

static void test_arena(void)
{
    sdb_arena a;
    sdb_err err = {0};
    CHECK_OK(sdb_arena_init(&a, 1 << 20, &err), &err);
    float *x = sdb_arena_floats(&a, 10);
    CHECK(x && ((uintptr_t)x % 64) == 0);
    size_t m = sdb_arena_mark(&a);
    float *y = sdb_arena_floats(&a, 1000);
    CHECK(y && y >= x + 10 && ((uintptr_t)y % 64) == 0);
    y[999] = 1.0f;
    sdb_arena_reset(&a, m);
    float *z = sdb_arena_floats(&a, 5);
    CHECK(z == y); /* reused after reset */
    CHECK(a.peak >= 1000 * sizeof(float));
    CHECK(sdb_arena_alloc(&a, 2 << 20) == NULL); /* beyond the reservation: NULL, no crash */
    sdb_arena_free(&a);
    CHECK_OK(sdb_arena_init(&a, 0, &err), &err); /* default reservation */
    CHECK(a.reserved >= ((size_t)64 << 20));
    sdb_arena_free(&a);
}

static int count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d))) if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    if (d) closedir(d);
    return n;
}

static void test_atomic_write(void)
{
    const char *d = sdb_t_tmpdir();
    char p[1024];
    snprintf(p, sizeof p, "%s/out.bin", d);
    sdb_err err = {0};
    CHECK_OK(sdb_write_file_atomic(p, "hello", 5, &err), &err);
    char *back = NULL;
    size_t n = 0;
    CHECK_OK(sdb_read_file(p, &back, &n, &err), &err);
    CHECK(n == 5 && back && memcmp(back, "hello", 5) == 0);
    free(back);
    /* an aborted write leaves the old file and no temp file */
    sdb_wfile w;
    CHECK_OK(sdb_wfile_open(&w, p, &err), &err);
    CHECK_OK(sdb_wfile_write(&w, "partial", 7, &err), &err);
    CHECK(count_entries(d) == 2);
    sdb_wfile_abort(&w);
    CHECK(count_entries(d) == 1);
    CHECK_OK(sdb_read_file(p, &back, &n, &err), &err);
    CHECK(n == 5);
    free(back);
    /* a missing folder fails cleanly */
    char q[1100];
    snprintf(q, sizeof q, "%s/nope/out.bin", d);
    CHECK(sdb_write_file_atomic(q, "x", 1, &err) == SDB_EIO);
    CHECK(strstr(err.msg, "nope") != NULL);
    /* a destination that is a symlink is refused, not replaced nor written through: the link and
     * its target stay as they were, no temp file is left; a folder is refused too */
    char target[1100], link[1100];
    snprintf(target, sizeof target, "%s/target.bin", d);
    snprintf(link, sizeof link, "%s/link.bin", d);
    CHECK_OK(sdb_write_file_atomic(target, "old", 3, &err), &err);
    CHECK(symlink(target, link) == 0);
    int before = count_entries(d);
    CHECK(sdb_output_path_check(link, &err) == SDB_EINVAL && strstr(err.msg, "link.bin is a symlink (to "));
    CHECK(sdb_write_file_atomic(link, "new", 3, &err) == SDB_EINVAL);
    CHECKF(strstr(err.msg, "link.bin is a symlink (to ") && strstr(err.msg, "target.bin"), "%s", err.msg);
    CHECK(count_entries(d) == before);
    struct stat lsb;
    CHECK(lstat(link, &lsb) == 0 && S_ISLNK(lsb.st_mode));
    CHECK_OK(sdb_read_file(target, &back, &n, &err), &err);
    CHECK(n == 3 && !memcmp(back, "old", 3));
    free(back);
    CHECK(sdb_output_path_check(target, &err) == 0);
    CHECK(sdb_write_file_atomic(d, "x", 1, &err) == SDB_EINVAL && strstr(err.msg, "is a folder"));
    CHECK(sdb_output_path_check(q, &err) == SDB_EIO && strstr(err.msg, "nope"));
    /* sha256 of "abc" (FIPS 180-2 example) */
    char hex[65];
    sdb_sha256_hex("abc", 3, hex);
    CHECK(strcmp(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad") == 0);
    char d2[1100];
    snprintf(d2, sizeof d2, "%s/a/b/c", d);
    CHECK_OK(sdb_mkdirs(d2, &err), &err);
    CHECK(sdb_is_dir(d2));
}

/* Scratch files: nameless from the start (the folder stays empty), positioned writes and reads
 * round-trip, a read past the end fails, and a write past a 64 KiB file-size limit (standing in
 * for a full disk: EFBIG) fails with "no space left", naming the folder; a missing folder fails
 * naming it. */
static void test_scratch_file(void)
{
    char d[1100];
    snprintf(d, sizeof d, "%s/scratch", sdb_t_tmpdir());
    sdb_err err = {0};
    CHECK_OK(sdb_mkdirs(d, &err), &err);
    sdb_scratch s;
    CHECK_OK(sdb_scratch_open(&s, d, &err), &err);
    CHECK(s.fd >= 0 && count_entries(d) == 0);
    float a[1000], b[1000];
    for (int i = 0; i < 1000; i++) a[i] = (float)i * 0.5f - 7.0f;
    CHECK_OK(sdb_scratch_reserve(&s, 1 << 20, &err), &err);
    CHECK_OK(sdb_scratch_write(&s, a, sizeof a, 12345, &err), &err);
    CHECK_OK(sdb_scratch_write(&s, a, 400, 0, &err), &err);
    CHECK_OK(sdb_scratch_read(&s, b, sizeof b, 12345, &err), &err);
    CHECK(memcmp(a, b, sizeof a) == 0);
    CHECK_OK(sdb_scratch_read(&s, b, 400, 0, &err), &err);
    CHECK(memcmp(a, b, 400) == 0);
    CHECK(sdb_scratch_read(&s, b, 400, (1 << 20) - 100, &err) == SDB_EIO && strstr(err.msg, "end of file"));
    CHECK(sdb_t_limit_file_size(64 << 10) == 0);
    int rc = sdb_scratch_write(&s, a, sizeof a, (1 << 20) + 8, &err);
    char wmsg[SDB_ERR_MSG_MAX];
    snprintf(wmsg, sizeof wmsg, "%s", err.msg);
    int rc2 = sdb_scratch_reserve(&s, 2 << 20, &err);
    CHECK(sdb_t_limit_file_size(0) == 0);
    CHECK(rc == SDB_EIO && rc2 == SDB_EIO);
    CHECKF(strstr(wmsg, "no space left for the scratch file in") && strstr(wmsg, d) && strstr(wmsg, "writing 4000 bytes"),
           "%s", wmsg);
    CHECKF(strstr(err.msg, "no space left for the scratch file in") && strstr(err.msg, d) && strstr(err.msg, "needs 2 MiB"),
           "%s", err.msg);
    sdb_scratch_close(&s);
    sdb_scratch_close(&s); /* idempotent */
    CHECK(s.fd == -1 && count_entries(d) == 0);
    char q[1200];
    snprintf(q, sizeof q, "%s/nope", d);
    CHECK(sdb_scratch_open(&s, q, &err) == SDB_EIO && strstr(err.msg, "nope") && s.fd == -1);
}

static void test_config(void)
{
    sdb_config c;
    sdb_err err = {0};
    CHECK_OK(sdb_config_load(&c, sdb_t_path("models/tiny-sd-inpaint/unet/config.json"), &err), &err);
    long long v = 0;
    CHECK_OK(sdb_config_int(&c, "in_channels", 4, &v, &err), &err);
    CHECK(v == 9);
    CHECK_OK(sdb_config_int(&c, "num_attention_heads", -1, &v, &err), &err); /* null -> default */
    CHECK(v == -1);
    /* ranged ints: in range, the default when absent, and an error naming file, field and range */
    int iv = 0;
    CHECK_OK(sdb_config_int_range(&c, "in_channels", 4, 1, 64, &iv, &err), &err);
    CHECK(iv == 9);
    CHECK_OK(sdb_config_int_range(&c, "no_such_field", 7, 1, 64, &iv, &err), &err);
    CHECK(iv == 7);
    CHECK(sdb_config_int_range(&c, "in_channels", 4, 1, 8, &iv, &err) == SDB_EINVAL && iv == 7);
    CHECKF(strstr(err.msg, "config.json: field 'in_channels': 9 is out of range [1, 8]") != NULL, "%s", err.msg);
    long long blocks[8];
    int nb = 0;
    CHECK_OK(sdb_config_int_array(&c, "block_out_channels", blocks, 8, &nb, &err), &err);
    CHECK(nb == 4 && blocks[0] == 32 && blocks[3] == 64);
    const char *types[8];
    CHECK_OK(sdb_config_string_array(&c, "down_block_types", types, 8, &nb, &err), &err);
    CHECK(nb == 4 && strcmp(types[3], "DownBlock2D") == 0);
    /* array fields: missing, not an array, too long, a wrong element: each names the field */
    CHECK(sdb_config_int_array(&c, "no_such_field", blocks, 8, &nb, &err) == SDB_EFORMAT);
    CHECKF(strstr(err.msg, "'no_such_field' is missing") && strstr(err.msg, "config.json"), "%s", err.msg);
    CHECK(sdb_config_string_array(&c, "in_channels", types, 8, &nb, &err) == SDB_EFORMAT);
    CHECKF(strstr(err.msg, "'in_channels' must be an array") != NULL, "%s", err.msg);
    CHECK(sdb_config_int_array(&c, "block_out_channels", blocks, 3, &nb, &err) == SDB_EUNSUPPORTED);
    CHECKF(strstr(err.msg, "'block_out_channels' has 4 entries (at most 3") != NULL, "%s", err.msg);
    CHECK(sdb_config_string_array(&c, "block_out_channels", types, 8, &nb, &err) == SDB_EFORMAT);
    CHECKF(strstr(err.msg, "'block_out_channels'[0] must be a string") != NULL, "%s", err.msg);
    CHECK(sdb_config_int_array(&c, "down_block_types", blocks, 8, &nb, &err) == SDB_EFORMAT);
    CHECKF(strstr(err.msg, "'down_block_types'[0] must be an integer") != NULL, "%s", err.msg);
    double eps;
    CHECK_OK(sdb_config_double(&c, "norm_eps", 0, &eps, &err), &err);
    CHECK(eps == 1e-5);
    int b;
    CHECK_OK(sdb_config_bool(&c, "flip_sin_to_cos", 0, &b, &err), &err);
    CHECK(b == 1);
    /* wrong type: names the file and the field */
    CHECK(sdb_config_int(&c, "act_fn", 0, &v, &err) == SDB_EFORMAT);
    CHECK(strstr(err.msg, "act_fn") && strstr(err.msg, "config.json"));
    sdb_config_free(&c);
    CHECK(sdb_config_parse(&c, "{\"a\": 1,\n \"b\": }", "x.json", &err) == SDB_EFORMAT);
    CHECK(strstr(err.msg, "x.json:2:") != NULL);
    CHECK(sdb_config_parse(&c, "{\"a\": 1, \"a\": 2}", "dup.json", &err) == SDB_EFORMAT);
    CHECK(sdb_config_load(&c, "/nonexistent/config.json", &err) == SDB_EIO);
    CHECK(strstr(err.msg, "/nonexistent/config.json") != NULL);
    /* Python's bare NaN / Infinity / -Infinity read as null (the default), not inside strings;
     * a NaN as the very last token (fuzzing found the 3-byte token overwritten by a 4-byte null) */
    CHECK_OK(sdb_config_parse(&c, "{\"a\": NaN, \"b\": -Infinity, \"c\": \"NaN \\\" Infinity\", \"d\": [Infinity,NaN]}",
                              "py.json", &err), &err);
    const char *sv = NULL;
    CHECK(!sdb_config_has(&c, "a") && !sdb_config_has(&c, "b"));
    CHECK_OK(sdb_config_string(&c, "c", NULL, &sv, &err), &err);
    CHECK(sv && strcmp(sv, "NaN \" Infinity") == 0);
    CHECK(json_array_size(json_object_get(c.root, "d")) == 2 && json_is_null(json_array_get(json_object_get(c.root, "d"), 1)));
    sdb_config_free(&c);
    CHECK(sdb_config_parse(&c, "{\"a\": NaN", "end.json", &err) == SDB_EFORMAT);
    CHECK(sdb_config_parse(&c, "NaN", "end.json", &err) == SDB_EFORMAT);
    CHECKF(strstr(err.msg, "end.json:1:") != NULL, "%s", err.msg);
    CHECK(sdb_config_parse(&c, "{\"a\": trNaNue}", "mid.json", &err) == SDB_EFORMAT);
}

static void test_error_context(void)
{
    sdb_err e = {0};
    CHECK(sdb_fail(&e, SDB_EFORMAT, "field '%s' bad", "x") == SDB_EFORMAT);
    sdb_err_prefix(&e, "job %d", 3);
    CHECK(strcmp(e.msg, "job 3: field 'x' bad") == 0 && e.code == SDB_EFORMAT);
    CHECK(sdb_fail(NULL, SDB_EIO, "dropped") == SDB_EIO);
}

/* sdb_proc_value against what the kernel says another way: getpid(), and a file of our own. */
static void test_proc_value(void)
{
    CHECK(sdb_proc_value("/proc/self/status", "Pid:") == (double)getpid());
    CHECK(sdb_proc_value("/proc/self/status", "Threads:") >= 1);
    CHECK(sdb_proc_value("/proc/self/status", "NoSuchKey:") == -1);
    CHECK(sdb_proc_value("/proc/no/such/file", "Pid:") == -1);
    char path[1024];
    snprintf(path, sizeof path, "%s/meminfo", sdb_t_tmpdir());
    sdb_err err;
    const char text[] = "MemTotal:       24000 kB\nMemAvailable:    1536 kB\n";
    CHECK_OK(sdb_write_file_atomic(path, text, sizeof text - 1, &err), &err);
    CHECK(sdb_proc_value(path, "MemAvailable:") == 1536);
    CHECK(sdb_proc_value(path, "MemTotal:") == 24000);
}

int main(void)
{
    RUN(test_f16_all_values);
    RUN(test_f16_rounding);
    RUN(test_f16_narrowing);
    RUN(test_arena);
    RUN(test_atomic_write);
    RUN(test_scratch_file);
    RUN(test_config);
    RUN(test_error_context);
    RUN(test_proc_value);
    return sdb_t_done();
}
