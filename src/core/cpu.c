/*
 * cpu.c — CPU features (CPUID + XGETBV), the OpenBLAS core in use, and the BLAS-core guard's
 * decision (see cpu.h). Owns no state: every function reads the CPU, the loaded library or its
 * arguments.
 */
#include "sdb/cpu.h"

#include <cblas.h>
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>

static unsigned long long xgetbv0(void)
{
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((unsigned long long)hi << 32) | lo;
}

void sdb_cpu_detect(sdb_cpu_features *f)
{
    memset(f, 0, sizeof *f);
    unsigned a, b, c, d;
    if (!__get_cpuid(0, &a, &b, &c, &d)) return;
    const unsigned max_leaf = a;
    char vendor[13];
    memcpy(vendor, &b, 4);
    memcpy(vendor + 4, &d, 4);
    memcpy(vendor + 8, &c, 4);
    vendor[12] = '\0';
    if (!strcmp(vendor, "GenuineIntel")) f->vendor = SDB_CPU_VENDOR_INTEL;
    else if (!strcmp(vendor, "AuthenticAMD") || !strcmp(vendor, "HygonGenuine")) f->vendor = SDB_CPU_VENDOR_AMD;
    if (max_leaf < 7 || !__get_cpuid(1, &a, &b, &c, &d)) return;
    const int fma = (c >> 12) & 1, osxsave = (c >> 27) & 1, avx = (c >> 28) & 1;
    if (!osxsave || !avx) return;            /* no XGETBV, or no AVX at all */
    const unsigned long long xcr0 = xgetbv0();
    const int os_ymm = (xcr0 & 0x6) == 0x6, os_zmm = (xcr0 & 0xe6) == 0xe6,
              os_tile = (xcr0 & 0x60000) == 0x60000;
    __cpuid_count(7, 0, a, b, c, d);
    const unsigned ebx7 = b, edx7 = d;
    const int avx2 = (ebx7 >> 5) & 1;
    /* F (16), DQ (17), CD (28), BW (30), VL (31) */
    const unsigned avx512_set = (1u << 16) | (1u << 17) | (1u << 28) | (1u << 30) | (1u << 31);
    f->avx2 = avx2 && fma && os_ymm;
    f->avx512 = f->avx2 && (ebx7 & avx512_set) == avx512_set && os_zmm;
    if (f->avx512 && a >= 1) {
        __cpuid_count(7, 1, a, b, c, d);
        f->avx512_bf16 = (a >> 5) & 1;
    }
    /* AMX-BF16 (22), AMX-TILE (24) */
    f->amx = f->avx512 && ((edx7 >> 22) & 1) && ((edx7 >> 24) & 1) && os_tile;
}
#else
void sdb_cpu_detect(sdb_cpu_features *f) { memset(f, 0, sizeof *f); }
#endif

const char *sdb_cpu_level_name(const sdb_cpu_features *f)
{
    return f->avx512 ? "AVX-512" : f->avx2 ? "AVX2" : "no AVX2";
}

int sdb_blas_core_class(const char *core)
{
    static const struct { const char *name; int cls; } table[] = {
        {"SapphireRapids", SDB_BLAS_CLASS_AVX512}, {"Cooperlake", SDB_BLAS_CLASS_AVX512},
        {"SkylakeX", SDB_BLAS_CLASS_AVX512},
        {"Haswell", SDB_BLAS_CLASS_AVX2}, {"Zen", SDB_BLAS_CLASS_AVX2},
        {"Sandybridge", SDB_BLAS_CLASS_AVX}, {"Bulldozer", SDB_BLAS_CLASS_AVX}, {"Piledriver", SDB_BLAS_CLASS_AVX},
        {"Steamroller", SDB_BLAS_CLASS_AVX}, {"Excavator", SDB_BLAS_CLASS_AVX},
        {"Unknown", SDB_BLAS_CLASS_SSE}, {"Katmai", SDB_BLAS_CLASS_SSE}, {"Coppermine", SDB_BLAS_CLASS_SSE},
        {"Northwood", SDB_BLAS_CLASS_SSE}, {"Prescott", SDB_BLAS_CLASS_SSE}, {"Banias", SDB_BLAS_CLASS_SSE},
        {"Atom", SDB_BLAS_CLASS_SSE}, {"Core2", SDB_BLAS_CLASS_SSE}, {"Penryn", SDB_BLAS_CLASS_SSE},
        {"Dunnington", SDB_BLAS_CLASS_SSE}, {"Nehalem", SDB_BLAS_CLASS_SSE}, {"Athlon", SDB_BLAS_CLASS_SSE},
        {"Opteron", SDB_BLAS_CLASS_SSE}, {"Opteron_SSE3", SDB_BLAS_CLASS_SSE}, {"Barcelona", SDB_BLAS_CLASS_SSE},
        {"Nano", SDB_BLAS_CLASS_SSE}, {"Bobcat", SDB_BLAS_CLASS_SSE},
    };
    if (!core) return SDB_BLAS_CLASS_UNKNOWN;
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
        if (!strcasecmp(core, table[i].name)) return table[i].cls;
    return SDB_BLAS_CLASS_UNKNOWN;
}

const char *sdb_blas_core_to_force(const sdb_cpu_features *cpu, const char *reported, unsigned shipped)
{
    const int have = sdb_blas_core_class(reported);
    if (have == SDB_BLAS_CLASS_UNKNOWN) return NULL;   /* a name we cannot rank: leave it */
    const char *best = NULL;
    int best_class = SDB_BLAS_CLASS_UNKNOWN;
    if (cpu->avx512 && (shipped & SDB_BLAS_SHIPS_SKYLAKEX)) {
        best = "SkylakeX";
        best_class = SDB_BLAS_CLASS_AVX512;
    } else if (cpu->avx2) {
        const int amd = cpu->vendor == SDB_CPU_VENDOR_AMD;
        if (amd && (shipped & SDB_BLAS_SHIPS_ZEN)) best = "Zen";
        else if (shipped & SDB_BLAS_SHIPS_HASWELL) best = "Haswell";
        else if (shipped & SDB_BLAS_SHIPS_ZEN) best = "Zen";
        best_class = SDB_BLAS_CLASS_AVX2;
    }
    if (!best || have >= best_class) return NULL;
    return best;
}

void sdb_blas_guard_decide(const sdb_blas_guard_in *in, sdb_blas_guard_plan *plan)
{
    memset(plan, 0, sizeof *plan);
    plan->action = SDB_BLAS_GUARD_KEEP;
    if (in->env_reexec && in->env_reexec[0]) { plan->action = SDB_BLAS_GUARD_REEXECUTED; return; }
    if (in->env_guard && !strcmp(in->env_guard, "0")) { plan->why = "SDB_BLAS_GUARD=0"; return; }
    const int test_misdetected = in->env_test_misdetected && !strcmp(in->env_test_misdetected, "1");
    if (in->env_coretype && in->env_coretype[0] && !test_misdetected) {
        plan->why = "OPENBLAS_CORETYPE is set: obeyed";
        return;
    }
    const char *force = sdb_blas_core_to_force(&in->cpu, in->reported, in->shipped);
    if (!force) {
        plan->why = sdb_blas_core_class(in->reported) == SDB_BLAS_CLASS_UNKNOWN
                        ? "core name not in the guard's table: left as it is"
                        : "the core is the best this CPU runs among those the library ships";
        return;
    }
    plan->action = SDB_BLAS_GUARD_REEXEC;
    plan->force = force;
}

const char *sdb_blas_core(void)
{
    const char *c = openblas_get_corename();
    return c ? c : "Unknown";
}

void sdb_blas_version(char *buf, unsigned long n)
{
    const char *cfg = openblas_get_config();
    if (!cfg) cfg = "OpenBLAS";
    /* "OpenBLAS 0.3.21 NO_LAPACKE DYNAMIC_ARCH ..." -> "OpenBLAS 0.3.21" */
    const char *sp = strchr(cfg, ' ');
    const char *end = sp ? strchr(sp + 1, ' ') : NULL;
    size_t len = end ? (size_t)(end - cfg) : strlen(cfg);
    snprintf(buf, n, "%.*s", (int)len, cfg);
}

void sdb_blas_guard_inputs(sdb_blas_guard_in *in)
{
    memset(in, 0, sizeof *in);
    sdb_cpu_detect(&in->cpu);
    in->reported = sdb_blas_core();
    const char *cfg = openblas_get_config();
    if (cfg && strstr(cfg, "DYNAMIC_ARCH")) {
        /* a DYNAMIC_ARCH library exports one gotoblas_<CORE> table per kernel set it carries
           (a core left out of the build has none); when none can be seen (a static link),
           every x86-64 DYNAMIC_ARCH build maps these three names to its closest set */
        static const struct { const char *sym; unsigned bit; } cores[] = {
            {"gotoblas_HASWELL", SDB_BLAS_SHIPS_HASWELL}, {"gotoblas_ZEN", SDB_BLAS_SHIPS_ZEN},
            {"gotoblas_SKYLAKEX", SDB_BLAS_SHIPS_SKYLAKEX}};
        for (size_t i = 0; i < sizeof cores / sizeof cores[0]; i++)
            if (dlsym(RTLD_DEFAULT, cores[i].sym)) in->shipped |= cores[i].bit;
        if (!in->shipped) in->shipped = SDB_BLAS_SHIPS_HASWELL | SDB_BLAS_SHIPS_ZEN | SDB_BLAS_SHIPS_SKYLAKEX;
    }
    in->env_guard = getenv("SDB_BLAS_GUARD");
    in->env_coretype = getenv("OPENBLAS_CORETYPE");
    in->env_reexec = getenv("SDB_BLAS_GUARD_REEXEC");
    in->env_test_misdetected = getenv("SDB_BLAS_GUARD_TEST_MISDETECTED");
}
