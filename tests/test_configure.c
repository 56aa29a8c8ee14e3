/*
 * test_configure.c — configuring sdbatch without one of its libraries stops with a message naming
 * the Debian package to install. Each library is hidden in turn: pkg-config is pointed at a folder
 * holding links to every .pc file of the system except that library's, and OpenBLAS is looked for
 * under an empty prefix. The real cmake runs on the real CMakeLists.txt.
 */
#include "harness.h"

#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *const pc_dirs[] = {"/usr/local/lib/x86_64-linux-gnu/pkgconfig", "/usr/local/lib/pkgconfig",
                                      "/usr/local/share/pkgconfig", "/usr/lib/x86_64-linux-gnu/pkgconfig",
                                      "/usr/lib/pkgconfig", "/usr/share/pkgconfig", NULL};

/* A pkg-config folder with links to every .pc file except `hide`.pc. */
static const char *pc_folder_without(const char *hide)
{
    const char *dir = sdb_t_tmpdir();
    char want[256];
    snprintf(want, sizeof want, "%s.pc", hide ? hide : "");
    for (int i = 0; pc_dirs[i]; i++) {
        DIR *d = opendir(pc_dirs[i]);
        struct dirent *e;
        while (d && (e = readdir(d))) {
            size_t l = strlen(e->d_name);
            if (l < 4 || strcmp(e->d_name + l - 3, ".pc") || !strcmp(e->d_name, want)) continue;
            char src[1024], dst[1024];
            snprintf(src, sizeof src, "%s/%s", pc_dirs[i], e->d_name);
            snprintf(dst, sizeof dst, "%s/%s", dir, e->d_name);
            if (symlink(src, dst) != 0) { /* same name in two folders: the first wins, as pkg-config */ }
        }
        if (d) closedir(d);
    }
    return dir;
}

/* Runs cmake's configure step; returns its exit status and its output in out. */
static int configure(const char *pc_dir, const char *blas_prefix, char *out, size_t n)
{
    const char *bdir = sdb_t_tmpdir();
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "env PKG_CONFIG_LIBDIR='%s' PKG_CONFIG_PATH= '%s' -S '%s' -B '%s' %s%s 2>&1",
             pc_dir, SDB_CMAKE_COMMAND, SDB_SOURCE_DIR, bdir, blas_prefix ? "-DSDB_OPENBLAS_PREFIX=" : "",
             blas_prefix ? blas_prefix : "");
    return sdb_t_shell(cmd, out, n);
}

static void test_each_missing_library_names_its_package(void)
{
    static const struct { const char *pc, *pkg; } libs[] = {
        {"yaml-0.1", "libyaml-dev"}, {"sqlite3", "libsqlite3-dev"}, {"libpng", "libpng-dev"},
        {"libjpeg", "libjpeg62-turbo-dev"}, {"jansson", "libjansson-dev"}, {"libcrypto", "libssl-dev"},
        {"libutf8proc", "libutf8proc-dev"}, {NULL, NULL}};
    static char out[1 << 16];
    for (int i = 0; libs[i].pc; i++) {
        int rc = configure(pc_folder_without(libs[i].pc), NULL, out, sizeof out);
        CHECKF(rc != 0, "configure without %s succeeded", libs[i].pc);
        CHECKF(strstr(out, libs[i].pkg) != NULL, "configure without %s does not name %s:\n%s", libs[i].pc, libs[i].pkg, out);
        fprintf(stderr, "  without %-12s -> names %s: %s\n", libs[i].pc, libs[i].pkg, strstr(out, libs[i].pkg) ? "yes" : "NO");
    }
    /* OpenBLAS (its OpenMP build) */
    int rc = configure(pc_folder_without(NULL), sdb_t_tmpdir(), out, sizeof out);
    CHECK(rc != 0);
    CHECKF(strstr(out, "libopenblas-openmp-dev") != NULL, "%s", out);
    /* and with everything present the configure step succeeds (the test's own control) */
    rc = configure(pc_folder_without(NULL), NULL, out, sizeof out);
    CHECKF(rc == 0, "configure with every library failed:\n%s", out);
}

int main(void)
{
    RUN(test_each_missing_library_names_its_package);
    return sdb_t_done();
}
