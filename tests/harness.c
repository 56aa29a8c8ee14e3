/*
 * harness.c — implementation of the test harness (see harness.h).
 */
#include "harness.h"
#include "sdb/fp16.h"
#include "sdb/safetensors.h"

#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

int sdb_t_checks_failed;
static int n_pass, n_fail;

void sdb_t_run(const char *name, void (*fn)(void))
{
    sdb_t_checks_failed = 0;
    fprintf(stderr, "--- %s\n", name);
    fn();
    if (sdb_t_checks_failed) { n_fail++; fprintf(stderr, "FAIL %s (%d checks)\n", name, sdb_t_checks_failed); }
    else { n_pass++; fprintf(stderr, "ok   %s\n", name); }
}

int sdb_t_done(void)
{
    printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}

const char *sdb_t_data(void)
{
    static char root[4096];
    if (root[0]) return root;
    const char *env = getenv("SDB_TEST_DATA");
    if (env && env[0]) snprintf(root, sizeof root, "%s", env);
    else snprintf(root, sizeof root, "%s/../shared", SDB_SOURCE_DIR);
    struct stat sb;
    char probe[4200];
    snprintf(probe, sizeof probe, "%s/refs", root);
    if (stat(probe, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        fprintf(stderr, "test data not found at %s (set SDB_TEST_DATA to the shared/ folder)\n", root);
        sdb_t_checks_failed++;
        root[0] = '\0';
        return NULL;
    }
    return root;
}

const char *sdb_t_path(const char *rel)
{
    static char ring[16][4600];
    static int at;
    const char *root = sdb_t_data();
    char *buf = ring[at++ % 16];
    snprintf(buf, sizeof ring[0], "%s/%s", root ? root : "/nonexistent-test-data", rel);
    return buf;
}

const char *sdb_t_tmpdir(void)
{
    static char ring[8][512];
    static int at;
    char *buf = ring[at++ % 8];
    const char *t = getenv("TMPDIR");
    snprintf(buf, sizeof ring[0], "%s/sdbtest.XXXXXX", t && t[0] ? t : "/tmp");
    if (!mkdtemp(buf)) { perror("mkdtemp"); abort(); }
    return buf;
}

const char *sdb_t_binary(void) { return SDB_BINARY; }

int sdb_t_close(const float *a, const float *ref, size_t n, double atol, double rtol, const char *what)
{
    double maxref = 0, maxabs = 0;
    size_t worst = 0;
    int nan = 0;
    for (size_t i = 0; i < n; i++) if (fabs(ref[i]) > maxref) maxref = fabs(ref[i]);
    for (size_t i = 0; i < n; i++) {
        if (isnan(a[i]) != isnan(ref[i])) nan = 1;
        double d = fabs((double)a[i] - ref[i]);
        if (d > maxabs) { maxabs = d; worst = i; }
    }
    double tol = atol + rtol * maxref;
    int ok = !nan && maxabs <= tol;
    fprintf(stderr, "  %-40s n=%zu max|ref|=%.4g max|diff|=%.3g (at %zu) tol=%.3g %s\n",
            what, n, maxref, maxabs, worst, tol, ok ? "ok" : "TOO FAR");
    if (!ok) sdb_t_checks_failed++;
    return ok;
}

int sdb_t_write_f16_copy(const char *src, const char *dst, int as_f16)
{
    sdb_err err;
    sdb_err_clear(&err);
    sdb_st *st = NULL;
    CHECK_OK(sdb_st_open(&st, src, &err), &err);
    if (!st) return -1;
    sdb_st_wtensor *wt = calloc((size_t)st->n, sizeof *wt);
    void **bufs = calloc((size_t)st->n, sizeof *bufs);
    for (int i = 0; i < st->n; i++) {
        const sdb_st_tensor *t = &st->tensors[i];
        CHECKF(t->dtype == SDB_DT_F32, "%s: %s is not F32", src, t->name);
        float *f = malloc((size_t)t->numel * sizeof(float));
        uint16_t *h = malloc((size_t)t->numel * sizeof(uint16_t) + 2);
        CHECK_OK(sdb_st_to_f32(t, f, &err), &err);
        sdb_f32_to_f16_array(f, h, (size_t)t->numel);
        if (as_f16) { bufs[i] = h; free(f); }
        else { sdb_f16_to_f32_array(h, f, (size_t)t->numel); bufs[i] = f; free(h); }
        wt[i].name = t->name;
        wt[i].dtype = as_f16 ? SDB_DT_F16 : SDB_DT_F32;
        wt[i].ndim = t->ndim;
        memcpy(wt[i].shape, t->shape, sizeof t->shape);
        wt[i].data = bufs[i];
    }
    int rc = sdb_st_write(dst, wt, st->n, NULL, NULL, 0, &err);
    CHECK_OK(rc, &err);
    for (int i = 0; i < st->n; i++) free(bufs[i]);
    free(bufs);
    free(wt);
    sdb_st_close(st);
    return rc ? -1 : 0;
}

int sdb_t_sdbatch(const char *args, char *out, size_t n)
{
    char cmd[16384];
    snprintf(cmd, sizeof cmd, "OMP_NUM_THREADS=1 '%s' %s 2>&1", SDB_BINARY, args);
    return sdb_t_shell(cmd, out, n);
}

int sdb_t_shell(const char *cmd, char *out, size_t n)
{
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    size_t got = fread(out, 1, n - 1, p);
    out[got] = '\0';
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

float *sdb_t_rand_floats(uint64_t *rng, size_t n, float scale)
{
    float *p = malloc(sizeof(float) * (n ? n : 1));
    for (size_t i = 0; p && i < n; i++) {
        uint64_t r = *rng;
        r ^= r << 13; r ^= r >> 7; r ^= r << 17;
        *rng = r;
        p[i] = (float)((double)(r >> 11) / (double)(1ULL << 53) * 2.0 - 1.0) * scale;
    }
    return p;
}

int sdb_t_limit_file_size(unsigned long bytes)
{
    static struct rlimit saved;
    static void (*saved_sig)(int);
    static int active;
    if (!bytes) {
        if (!active) return 0;
        active = 0;
        signal(SIGXFSZ, saved_sig);
        return setrlimit(RLIMIT_FSIZE, &saved) == 0 ? 0 : -1;
    }
    if (!active && getrlimit(RLIMIT_FSIZE, &saved) != 0) return -1;
    struct rlimit lim = saved;
    lim.rlim_cur = bytes;
    if (!active) saved_sig = signal(SIGXFSZ, SIG_IGN);
    active = 1;
    return setrlimit(RLIMIT_FSIZE, &lim) == 0 ? 0 : -1;
}
