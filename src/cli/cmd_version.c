/*
 * cmd_version.c — `sdbatch version` / `sdbatch --version`.
 */
#include "cli.h"
#include "sdb/cpu.h"
#include "sdb/cgroup.h"
#include "sdb/threads.h"

#include <cblas.h>
#include <jansson.h>
#include <jpeglib.h>
#include <png.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>
#include <yaml.h>
#include <omp.h>

int cmd_version(int argc, char **argv)
{
    if (argc > 1 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        printf("usage: sdbatch version\n       sdbatch --version\n\n"
               "Prints sdbatch's version, then the versions of the libraries it runs on, with the OpenBLAS\n"
               "core (kernel set) in use: see the README's Benchmarks section for the BLAS-core guard.\n");
        return 0;
    }
    char blas[64];
    sdb_blas_version(blas, sizeof blas);
    sdb_cpu_features cpu;
    sdb_cpu_detect(&cpu);
    printf("sdbatch %s\n", SDB_VERSION);
    printf("  blas: %s, core %s (CPU: %s; %s build, %d threads)\n", blas, sdb_blas_core(), sdb_cpu_level_name(&cpu),
           openblas_get_parallel() == 2 ? "OpenMP" : openblas_get_parallel() == 1 ? "pthreads" : "serial",
           openblas_get_num_threads());
    printf("  openblas config: %s\n", openblas_get_config());
    printf("  openmp %d, up to %d threads\n", _OPENMP, omp_get_max_threads());
    const double quota = sdb_cgroup_cpus();
    char qs[48] = "none";
    if (quota > 0) snprintf(qs, sizeof qs, "%.2f CPUs", quota);
    printf("  threads by default: %d (CPUs in the affinity mask: %d; cgroup CPU quota: %s)\n", sdb_threads_available(),
           sdb_threads_affinity(), qs);
    printf("  sqlite %s, libyaml %s, libpng %s, libjpeg-turbo (jpeglib %d), jansson %s\n",
           sqlite3_libversion(), yaml_get_version_string(), png_libpng_ver, JPEG_LIB_VERSION,
           JANSSON_VERSION);
    return 0;
}
