/*
 * test_blas_guard.c — the BLAS-core guard (sdb/cpu.h, src/cli/main.c): its decision table (CPU
 * features x the core OpenBLAS reports x the cores the library ships -> the core to force, or
 * none; and the environment's say: SDB_BLAS_GUARD=0, an explicit OPENBLAS_CORETYPE, the re-exec
 * mark), CPUID/XGETBV against the kernel's /proc/cpuinfo flags, a real re-execution of the built
 * sdbatch in which OpenBLAS really runs its generic Prescott kernels (OPENBLAS_CORETYPE=Prescott,
 * which the test hook SDB_BLAS_GUARD_TEST_MISDETECTED=1 makes the guard take for OpenBLAS's own
 * misdetection), and images byte-identical with and without the guard.
 */
#include "harness.h"
#include "sdb/cpu.h"
#include "sdb/fsutil.h"

#include <stdlib.h>
#include <string.h>

static char out[1 << 16];

/* ---- the decision table ------------------------------------------------------------------------ */

enum { ALL = SDB_BLAS_SHIPS_HASWELL | SDB_BLAS_SHIPS_ZEN | SDB_BLAS_SHIPS_SKYLAKEX,
       NO512 = SDB_BLAS_SHIPS_HASWELL | SDB_BLAS_SHIPS_ZEN };

static const sdb_cpu_features none = {SDB_CPU_VENDOR_INTEL, 0, 0, 0, 0};
static const sdb_cpu_features intel_avx2 = {SDB_CPU_VENDOR_INTEL, 1, 0, 0, 0};
static const sdb_cpu_features amd_avx2 = {SDB_CPU_VENDOR_AMD, 1, 0, 0, 0};
static const sdb_cpu_features skx = {SDB_CPU_VENDOR_INTEL, 1, 1, 0, 0};
static const sdb_cpu_features cpl = {SDB_CPU_VENDOR_INTEL, 1, 1, 1, 0};
static const sdb_cpu_features spr = {SDB_CPU_VENDOR_INTEL, 1, 1, 1, 1};
static const sdb_cpu_features zen4 = {SDB_CPU_VENDOR_AMD, 1, 1, 1, 0};

static void test_decision_table(void)
{
    static const struct {
        const sdb_cpu_features *cpu;
        const char *reported;
        unsigned shipped;
        const char *want;   /* NULL: leave it */
    } rows[] = {
        /* AVX-512 CPUs: anything below the AVX-512 class -> SkylakeX (the VM: Prescott) */
        {&spr, "Prescott", ALL, "SkylakeX"},
        {&spr, "Haswell", ALL, "SkylakeX"},
        {&spr, "SapphireRapids", ALL, NULL},
        {&spr, "Cooperlake", ALL, NULL},
        {&spr, "SkylakeX", ALL, NULL},
        {&cpl, "Cooperlake", ALL, NULL},
        {&cpl, "Nehalem", ALL, "SkylakeX"},
        {&skx, "SkylakeX", ALL, NULL},
        {&skx, "skylakex", ALL, NULL},
        {&skx, "Sandybridge", ALL, "SkylakeX"},
        {&skx, "Unknown", ALL, "SkylakeX"},
        {&skx, "prescott", ALL, "SkylakeX"},
        {&zen4, "Zen", ALL, "SkylakeX"},
        /* a library built without AVX-512 kernels: the AVX2 class is the best it ships */
        {&skx, "Haswell", NO512, NULL},
        {&skx, "Prescott", NO512, "Haswell"},
        {&zen4, "Prescott", NO512, "Zen"},
        /* AVX2 CPUs: Haswell for Intel (and others), Zen for AMD/Hygon, when shipped */
        {&intel_avx2, "Prescott", ALL, "Haswell"},
        {&intel_avx2, "Core2", ALL, "Haswell"},
        {&intel_avx2, "Sandybridge", ALL, "Haswell"},
        {&intel_avx2, "Haswell", ALL, NULL},
        {&intel_avx2, "Zen", ALL, NULL},
        {&intel_avx2, "SkylakeX", ALL, NULL},          /* never a downgrade */
        {&intel_avx2, "Prescott", SDB_BLAS_SHIPS_ZEN, "Zen"},
        {&amd_avx2, "Prescott", ALL, "Zen"},
        {&amd_avx2, "Excavator", ALL, "Zen"},
        {&amd_avx2, "Barcelona", ALL, "Zen"},
        {&amd_avx2, "Haswell", ALL, NULL},
        {&amd_avx2, "Zen", ALL, NULL},
        {&amd_avx2, "Prescott", SDB_BLAS_SHIPS_HASWELL, "Haswell"},
        /* nothing to gain, nothing known, nothing shipped */
        {&none, "Prescott", ALL, NULL},
        {&amd_avx2, "Zen4", ALL, NULL},
        {&skx, "NEOVERSEN1", ALL, NULL},
        {&skx, NULL, ALL, NULL},
        {&skx, "Prescott", 0, NULL},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        const char *got = sdb_blas_core_to_force(rows[i].cpu, rows[i].reported, rows[i].shipped);
        int ok = rows[i].want ? got && !strcmp(got, rows[i].want) : got == NULL;
        CHECKF(ok, "row %zu: core %s, shipped %u: got %s, want %s", i, rows[i].reported ? rows[i].reported : "(null)",
               rows[i].shipped, got ? got : "none", rows[i].want ? rows[i].want : "none");
    }
    CHECK(sdb_blas_core_class("Cooperlake") == SDB_BLAS_CLASS_AVX512);
    CHECK(sdb_blas_core_class("ZEN") == SDB_BLAS_CLASS_AVX2);
    CHECK(sdb_blas_core_class("Piledriver") == SDB_BLAS_CLASS_AVX);
    CHECK(sdb_blas_core_class("Opteron_SSE3") == SDB_BLAS_CLASS_SSE);
    CHECK(sdb_blas_core_class("Bogus") == SDB_BLAS_CLASS_UNKNOWN);
}

static void test_environment_decides_first(void)
{
    sdb_blas_guard_in in;
    memset(&in, 0, sizeof in);
    in.cpu = skx;
    in.reported = "Prescott";
    in.shipped = ALL;
    sdb_blas_guard_plan p;
    sdb_blas_guard_decide(&in, &p);
    CHECK(p.action == SDB_BLAS_GUARD_REEXEC && p.force && !strcmp(p.force, "SkylakeX"));
    in.env_guard = "1";
    sdb_blas_guard_decide(&in, &p);
    CHECK(p.action == SDB_BLAS_GUARD_REEXEC);
    in.env_guard = "0";
    sdb_blas_guard_decide(&in, &p);
    CHECK(p.action == SDB_BLAS_GUARD_KEEP && p.why && strstr(p.why, "SDB_BLAS_GUARD=0"));
    in.env_guard = NULL;
    in.env_coretype = "Prescott";        /* the user's own choice: obeyed */
    sdb_blas_guard_decide(&in, &p);
    CHECK(p.action == SDB_BLAS_GUARD_KEEP && p.why && strstr(p.why, "OPENBLAS_CORETYPE"));
    in.env_coretype = "";                /* empty: as if unset */
    sdb_blas_guard_decide(&in, &p);
    CHECK(p.action == SDB_BLAS_GUARD_REEXEC);
    in.env_coretype = "Prescott";
    in.env_test_misdetected = "1";       /* the test hook: the variable stands for a misdetection */
    sdb_blas_guard_decide(&in, &p);
    CHECK(p.action == SDB_BLAS_GUARD_REEXEC && p.force && !strcmp(p.force, "SkylakeX"));
    in.env_reexec = "Prescott";          /* the re-executed process: never again, whatever it sees */
    sdb_blas_guard_decide(&in, &p);
    CHECK(p.action == SDB_BLAS_GUARD_REEXECUTED);
    in.env_guard = "0";
    sdb_blas_guard_decide(&in, &p);
    CHECK(p.action == SDB_BLAS_GUARD_REEXECUTED);
    in.env_reexec = NULL;
    in.env_guard = NULL;
    in.reported = "SkylakeX";
    sdb_blas_guard_decide(&in, &p);
    CHECK(p.action == SDB_BLAS_GUARD_KEEP && p.why);
}

/* ---- this machine -------------------------------------------------------------------------------- */

/* The kernel's view (/proc/cpuinfo's first "flags" line and vendor), independent of our CPUID code. */
static int cpuinfo_has(const char *flags, const char *flag)
{
    size_t n = strlen(flag);
    for (const char *p = flags; (p = strstr(p, flag)); p += n)
        if ((p == flags || p[-1] == ' ' || p[-1] == '\t') && (p[n] == ' ' || p[n] == '\n' || p[n] == '\0')) return 1;
    return 0;
}

static char cpuinfo_flags[8192];
static char cpuinfo_vendor[64];

static void read_cpuinfo(void)
{
    FILE *f = fopen("/proc/cpuinfo", "r");
    CHECK(f != NULL);
    if (!f) return;
    char line[8192];
    while (fgets(line, sizeof line, f)) {
        if (!cpuinfo_vendor[0] && !strncmp(line, "vendor_id", 9)) sscanf(strchr(line, ':') + 1, "%63s", cpuinfo_vendor);
        if (!cpuinfo_flags[0] && !strncmp(line, "flags", 5)) snprintf(cpuinfo_flags, sizeof cpuinfo_flags, "%s", strchr(line, ':') + 1);
    }
    fclose(f);
}

/* The core the guard must end on for this machine, from /proc/cpuinfo (Debian's OpenBLAS ships all
 * three), or NULL when the CPU has no AVX2. */
static const char *expected_core(void)
{
    int avx512 = 1;
    const char *need[] = {"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"};
    for (int i = 0; i < 5; i++) avx512 &= cpuinfo_has(cpuinfo_flags, need[i]);
    if (avx512) return "SkylakeX";
    if (cpuinfo_has(cpuinfo_flags, "avx2") && cpuinfo_has(cpuinfo_flags, "fma"))
        return !strcmp(cpuinfo_vendor, "AuthenticAMD") || !strcmp(cpuinfo_vendor, "HygonGenuine") ? "Zen" : "Haswell";
    return NULL;
}

static void test_cpuid_matches_the_kernel(void)
{
    read_cpuinfo();
    sdb_cpu_features f;
    sdb_cpu_detect(&f);
    int avx512 = 1;
    const char *need[] = {"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"};
    for (int i = 0; i < 5; i++) avx512 &= cpuinfo_has(cpuinfo_flags, need[i]);
    fprintf(stderr, "  %s, CPUID: avx2 %d avx512 %d bf16 %d amx %d (%s)\n", cpuinfo_vendor, f.avx2, f.avx512,
            f.avx512_bf16, f.amx, sdb_cpu_level_name(&f));
    CHECK(f.avx2 == (cpuinfo_has(cpuinfo_flags, "avx2") && cpuinfo_has(cpuinfo_flags, "fma")));
    CHECK(f.avx512 == avx512);
    CHECK(f.avx512_bf16 == (avx512 && cpuinfo_has(cpuinfo_flags, "avx512_bf16")));
    CHECK(f.vendor == (!strcmp(cpuinfo_vendor, "GenuineIntel") ? SDB_CPU_VENDOR_INTEL
                       : !strcmp(cpuinfo_vendor, "AuthenticAMD") || !strcmp(cpuinfo_vendor, "HygonGenuine")
                           ? SDB_CPU_VENDOR_AMD : SDB_CPU_VENDOR_OTHER));
    /* Debian's OpenBLAS 0.3.21 (DYNAMIC_ARCH) carries all three kernel sets the guard may force */
    sdb_blas_guard_in in;
    sdb_blas_guard_inputs(&in);
    CHECK(in.shipped == ALL);
    char v[64];
    sdb_blas_version(v, sizeof v);
    CHECKF(!strncmp(v, "OpenBLAS 0.", 11) && !strchr(v + 9, ' '), "%s", v);
}

/* Runs `env -u ... ENV sdbatch ARGS`, stdout to out, stderr to the file err. */
static int sdbatch_env(const char *env, const char *args, const char *err)
{
    char cmd[16384];
    snprintf(cmd, sizeof cmd, "env -u OPENBLAS_CORETYPE -u SDB_BLAS_GUARD -u SDB_BLAS_GUARD_REEXEC "
             "-u SDB_BLAS_GUARD_TEST_MISDETECTED -u SDB_LOG OMP_NUM_THREADS=1 %s '%s' %s 2>'%s'",
             env, sdb_t_binary(), args, err);
    return sdb_t_shell(cmd, out, sizeof out);
}

static int count(const char *s, const char *what)
{
    int n = 0;
    for (const char *p = s; (p = strstr(p, what)); p += strlen(what)) n++;
    return n;
}

static void test_real_reexec_from_a_generic_core(void)
{
    const char *want = expected_core();
    const char *dir = sdb_t_tmpdir();
    char errf[1024], line[256];
    snprintf(errf, sizeof errf, "%s/err.txt", dir);
    char *err = NULL;
    sdb_err e;

    /* OpenBLAS really loads its Prescott kernels; the hook makes the guard take it for a misdetection */
    int rc = sdbatch_env("OPENBLAS_CORETYPE=Prescott SDB_BLAS_GUARD_TEST_MISDETECTED=1", "--version", errf);
    CHECKF(rc == 0, "exit %d", rc);
    CHECK(sdb_read_file(errf, &err, NULL, &e) == 0);
    fprintf(stderr, "  stdout: %.*s  stderr: %s", (int)(strchr(out, '\n') ? strchr(out, '\n') - out + 1 : 0), out,
            err ? err : "");
    if (want) {
        snprintf(line, sizeof line, ", core %s (", want);
        CHECKF(strstr(out, line) != NULL, "want %s: %s", want, out);
        snprintf(line, sizeof line, "had picked core Prescott for this ");
        CHECKF(err && count(err, line) == 1, "one guard line: %s", err ? err : "");
        snprintf(line, sizeof line, "now core %s (re-executed with OPENBLAS_CORETYPE=%s", want, want);
        CHECKF(err && strstr(err, line), "%s", err ? err : "");
    } else {
        CHECK(strstr(out, ", core Prescott (") != NULL);
        CHECK(err && !strstr(err, "had picked"));
    }
    free(err);
    err = NULL;

    /* an explicit OPENBLAS_CORETYPE is obeyed, silently */
    rc = sdbatch_env("OPENBLAS_CORETYPE=Prescott", "--version", errf);
    CHECK(rc == 0 && strstr(out, "blas: OpenBLAS 0.") && strstr(out, ", core Prescott ("));
    CHECK(sdb_read_file(errf, &err, NULL, &e) == 0 && err && !err[0]);
    free(err);
    err = NULL;
    /* SDB_BLAS_GUARD=0: off, even with the misdetection */
    rc = sdbatch_env("SDB_BLAS_GUARD=0 OPENBLAS_CORETYPE=Prescott SDB_BLAS_GUARD_TEST_MISDETECTED=1", "--version", errf);
    CHECK(rc == 0 && strstr(out, ", core Prescott ("));
    CHECK(sdb_read_file(errf, &err, NULL, &e) == 0 && err && !err[0]);
    free(err);
    err = NULL;
    /* the plain case on this machine: OpenBLAS's own choice is already right (nothing logged) */
    rc = sdbatch_env("", "--version", errf);
    CHECK(rc == 0);
    if (want) {
        snprintf(line, sizeof line, ", core %s (", want);
        CHECKF(strstr(out, line) != NULL, "OpenBLAS itself picks %s here: %s", want, out);
    }
    CHECK(sdb_read_file(errf, &err, NULL, &e) == 0 && err && !err[0]);
    free(err);
    /* bench names the core too (text and JSON) */
    char args[4096];
    snprintf(args, sizeof args, "bench --model '%s' --size 64 --reps 1 --steps 0 --gemm 256 --only text --json",
             sdb_t_path("models/tiny-sd-inpaint"));
    rc = sdbatch_env("OPENBLAS_CORETYPE=Prescott SDB_BLAS_GUARD_TEST_MISDETECTED=1", args, errf);
    CHECKF(rc == 0, "bench exit %d", rc);
    snprintf(line, sizeof line, "\"blas_core\": \"%s\"", want ? want : "Prescott");
    CHECKF(strstr(out, line) != NULL, "%s: %s", line, out);
    snprintf(args, sizeof args, "bench --model '%s' --size 64 --reps 1 --steps 0 --gemm 256 --only text",
             sdb_t_path("models/tiny-sd-inpaint"));
    rc = sdbatch_env("", args, errf);
    CHECKF(rc == 0 && strstr(out, "  BLAS: OpenBLAS 0.") && strstr(out, ", core "), "%s", out);
}

/* ---- the same images with and without the guard ------------------------------------------------- */

static void test_images_identical_with_and_without(void)
{
    const char *dir = sdb_t_tmpdir();
    static const char *const envs[] = {
        "",                                                                   /* the guard on, nothing to do */
        "SDB_BLAS_GUARD=0",                                                   /* the guard off */
        "OPENBLAS_CORETYPE=Prescott SDB_BLAS_GUARD_TEST_MISDETECTED=1",       /* the guard re-executes */
        "OPENBLAS_CORETYPE=Prescott",                                         /* the generic kernels, kept */
    };
    char hashes[4][65];
    for (int i = 0; i < 4; i++) {
        char png[1024], errf[1024], args[8192];
        snprintf(png, sizeof png, "%s/img%d.png", dir, i);
        snprintf(errf, sizeof errf, "%s/err%d.txt", dir, i);
        snprintf(args, sizeof args,
                 "generate --model '%s' --image '%s' --mask '%s' --prompt 'a lighthouse at dusk' --seed 7 --steps 2 "
                 "--width 128 --height 128 --output '%s'",
                 sdb_t_path("models/tiny-sd-inpaint"), sdb_t_path("refs/pipeline/inputs/scene_128x128.png"),
                 sdb_t_path("refs/pipeline/inputs/mask_128x128.png"), png);
        int rc = sdbatch_env(envs[i], args, errf);
        CHECKF(rc == 0, "%s: exit %d: %s", envs[i], rc, out);
        sdb_err e;
        hashes[i][0] = '\0';
        CHECK_OK(sdb_sha256_file(png, hashes[i], &e), &e);
        if (i == 2) {
            char *err = NULL;
            CHECK(sdb_read_file(errf, &err, NULL, &e) == 0);
            CHECKF(!expected_core() || (err && strstr(err, "had picked core Prescott")), "%s", err ? err : "");
            free(err);
        }
    }
    fprintf(stderr, "  guard on %.12s, off %.12s, re-executed %.12s; on Prescott's kernels %.12s\n", hashes[0],
            hashes[1], hashes[2], hashes[3]);
    CHECK(hashes[0][0] && !strcmp(hashes[0], hashes[1]));
    if (expected_core()) {
        CHECK(hashes[0][0] && !strcmp(hashes[0], hashes[2]));
        /* ...which is not for want of a difference: Prescott's kernels round otherwise */
        CHECK(hashes[3][0] && strcmp(hashes[0], hashes[3]) != 0);
    }
}

int main(void)
{
    RUN(test_decision_table);
    RUN(test_environment_decides_first);
    RUN(test_cpuid_matches_the_kernel);
    RUN(test_real_reexec_from_a_generic_core);
    RUN(test_images_identical_with_and_without);
    return sdb_t_done();
}
