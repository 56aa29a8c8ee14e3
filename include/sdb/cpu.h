/*
 * cpu.h — what this x86-64 CPU and its operating system can run (CPUID + XGETBV), which OpenBLAS
 * core is in use, and the BLAS-core guard's decision: whether OpenBLAS picked a weaker kernel set
 * than the best one it ships for this CPU, and which core to force with OPENBLAS_CORETYPE.
 *
 * OpenBLAS (DYNAMIC_ARCH builds, as Debian's) picks its kernels from the CPU model number when the
 * library loads. On a CPU model it does not know (new parts, or a VM that reports an odd family)
 * it can fall back to "Prescott", plain SSE3, 5x slower than its AVX-512 kernels. OPENBLAS_CORETYPE
 * overrides the choice, but only before the library loads: so the CLI checks at start and, when
 * needed, re-executes itself once with it set (src/cli/main.c does the exec; the decision is here,
 * a pure function of its inputs, so that it can be tested as a table).
 *
 * Core classes, by the instructions their single-precision GEMM kernels use:
 *   AVX-512: SkylakeX, Cooperlake, SapphireRapids (Cooperlake and SapphireRapids add bf16/AMX
 *            kernels on top of SkylakeX's; their sgemm is SkylakeX's)
 *   AVX2:    Haswell, Zen
 *   AVX:     Sandybridge, Bulldozer, Piledriver, Steamroller, Excavator
 *   SSE:     Prescott, Nehalem, Core2, Barcelona, Atom, ... and "Unknown"
 * The guard forces SkylakeX for an AVX-512 CPU (every OpenBLAS with AVX-512 kernels accepts that
 * name; OpenBLAS 0.3.21 rejects "Cooperlake" in OPENBLAS_CORETYPE and has no SapphireRapids), Zen
 * for an AVX2 AMD/Hygon CPU and Haswell for another AVX2 CPU, and only a core whose kernels the
 * loaded library ships. It never forces a core of a lower class and never acts on a core name it
 * does not know.
 */
#ifndef SDB_CPU_H
#define SDB_CPU_H

enum { SDB_CPU_VENDOR_OTHER = 0, SDB_CPU_VENDOR_INTEL = 1, SDB_CPU_VENDOR_AMD = 2 /* AMD or Hygon */ };

typedef struct sdb_cpu_features {
    int vendor;       /* SDB_CPU_VENDOR_* */
    int avx2;         /* AVX2 and FMA3, and the OS saves the YMM state (XCR0 bits 1, 2) */
    int avx512;       /* AVX-512 F, CD, BW, DQ and VL, and the OS saves the opmask/ZMM state
                         (XCR0 bits 5, 6, 7): what OpenBLAS's SkylakeX kernels need */
    int avx512_bf16;  /* AVX512_BF16 too (Cooper Lake, Sapphire Rapids, Zen 4) */
    int amx;          /* AMX-TILE and AMX-BF16 with the OS's tile state (XCR0 bits 17, 18) */
} sdb_cpu_features;

/* Fills f from CPUID and XGETBV (all zero on other architectures). */
void sdb_cpu_detect(sdb_cpu_features *f);
/* "AVX-512", "AVX2" or "no AVX2": the vector level the guard goes by. */
const char *sdb_cpu_level_name(const sdb_cpu_features *f);

enum { SDB_BLAS_CLASS_UNKNOWN = -1, SDB_BLAS_CLASS_SSE = 0, SDB_BLAS_CLASS_AVX = 1, SDB_BLAS_CLASS_AVX2 = 2,
       SDB_BLAS_CLASS_AVX512 = 3 };
/* The class of an OpenBLAS x86-64 core name (case-insensitive), SDB_BLAS_CLASS_UNKNOWN for a name
 * this table does not hold. */
int sdb_blas_core_class(const char *core);

/* Cores the guard may force, as bits of a "shipped" mask. */
enum { SDB_BLAS_SHIPS_HASWELL = 1, SDB_BLAS_SHIPS_ZEN = 2, SDB_BLAS_SHIPS_SKYLAKEX = 4 };

/* THE DECISION TABLE: the core to force (a static string: "SkylakeX", "Zen" or "Haswell") when
 * `reported` is of a lower class than the best core of `shipped` this CPU runs, else NULL.
 * Pure: no environment, no CPUID. */
const char *sdb_blas_core_to_force(const sdb_cpu_features *cpu, const char *reported, unsigned shipped);

/* Everything the guard looks at, gathered by sdb_blas_guard_inputs() (or by a test). */
typedef struct sdb_blas_guard_in {
    sdb_cpu_features cpu;
    const char *reported;      /* openblas_get_corename() */
    unsigned shipped;          /* SDB_BLAS_SHIPS_* bits */
    const char *env_guard;     /* $SDB_BLAS_GUARD: "0" turns the guard off */
    const char *env_coretype;  /* $OPENBLAS_CORETYPE: an explicit choice, obeyed */
    const char *env_reexec;    /* $SDB_BLAS_GUARD_REEXEC: set by the guard's own re-exec (to the
                                  core OpenBLAS had picked); never re-execute twice */
    const char *env_test_misdetected; /* $SDB_BLAS_GUARD_TEST_MISDETECTED=1 (tests only): the
                                  OPENBLAS_CORETYPE in the environment stands for OpenBLAS's own
                                  misdetection, not for a user's choice */
} sdb_blas_guard_in;

typedef enum {
    SDB_BLAS_GUARD_KEEP = 0,   /* nothing to do (see why) */
    SDB_BLAS_GUARD_REEXEC,     /* re-execute with OPENBLAS_CORETYPE=force, SDB_BLAS_GUARD_REEXEC=reported */
    SDB_BLAS_GUARD_REEXECUTED, /* this process is the re-executed one: log had -> now */
} sdb_blas_guard_action;

typedef struct sdb_blas_guard_plan {
    sdb_blas_guard_action action;
    const char *force;  /* REEXEC: the core to set */
    const char *why;    /* KEEP: why not (static text, for a debug line) */
} sdb_blas_guard_plan;

/* The guard's decision from its inputs (pure). */
void sdb_blas_guard_decide(const sdb_blas_guard_in *in, sdb_blas_guard_plan *plan);
/* Fills in from this process: CPUID, the core OpenBLAS reports, the cores the loaded library
 * ships (its gotoblas_<CORE> symbols; none when it is not a DYNAMIC_ARCH build) and getenv. */
void sdb_blas_guard_inputs(sdb_blas_guard_in *in);

/* The core OpenBLAS runs on ("Haswell", ...). */
const char *sdb_blas_core(void);
/* "OpenBLAS 0.3.21": the first two words of openblas_get_config(). */
void sdb_blas_version(char *buf, unsigned long n);

#endif
