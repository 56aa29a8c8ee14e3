/*
 * cmd_version.c — `sdbatch version` / `sdbatch --version`.
 */
#include "cli.h"

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
               "Prints sdbatch's version, then the versions of the libraries it runs on.\n");
        return 0;
    }
    printf("sdbatch %s\n", SDB_VERSION);
    printf("  openblas %s (%s, %d threads)\n", openblas_get_config(),
           openblas_get_parallel() == 2 ? "OpenMP" : openblas_get_parallel() == 1 ? "pthreads" : "serial",
           openblas_get_num_threads());
    printf("  openmp %d, up to %d threads\n", _OPENMP, omp_get_max_threads());
    printf("  sqlite %s, libyaml %s, libpng %s, libjpeg-turbo (jpeglib %d), jansson %s\n",
           sqlite3_libversion(), yaml_get_version_string(), png_libpng_ver, JPEG_LIB_VERSION,
           JANSSON_VERSION);
    return 0;
}
