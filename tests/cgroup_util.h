/*
 * cgroup_util.h — real cgroups for tests (test_cgroup.c, test_memory_limit_slow.c): a child of the
 * test's own cgroup with a limit written into it, and a child process started inside it. Found by
 * reading /proc/self/cgroup here, independently of src/core/cgroup.c. Everything returns -1 where
 * the machine does not allow it (not root, the controller absent), and the tests then skip.
 */
#ifndef SDB_TEST_CGROUP_UTIL_H
#define SDB_TEST_CGROUP_UTIL_H

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Writes s into an existing (kernel) file; 0 or -1. */
static inline int cg_put(const char *path, const char *s)
{
    int fd = open(path, O_WRONLY);
    if (fd < 0) return -1;
    const ssize_t n = write(fd, s, strlen(s));
    return close(fd) == 0 && n == (ssize_t)strlen(s) ? 0 : -1;
}

static inline int cg_is_dir(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Whether comma-separated list has the item. */
static inline int cg_has(const char *list, const char *item)
{
    const size_t n = strlen(item);
    for (const char *p = list; p; p = strchr(p, ',') ? strchr(p, ',') + 1 : NULL)
        if (!strncmp(p, item, n) && (p[n] == ',' || !p[n])) return 1;
    return 0;
}

/* mkdir dir, then write vals[i] into dir/files[i] in order; 0, or -1 with dir removed again. */
static inline int cg_make_dir(const char *dir, const char *const *files, const char *const *vals, int n)
{
    if (mkdir(dir, 0755)) return -1;
    for (int i = 0; i < n; i++) {
        char p[1024];
        snprintf(p, sizeof p, "%s/%s", dir, files[i]);
        if (cg_put(p, vals[i])) { rmdir(dir); return -1; }
    }
    return 0;
}

/* A child "sdbtest.<pid>" of this process's cgroup for controller ctrl: in its v1 hierarchy
 * (mounted at /sys/fs/cgroup/<v1_mount>; the v1 files and values written in order), else in the
 * v2 one (the controller enabled for children, then v2_val into v2_file). Its folder in dir; 0 or -1. */
static inline int cg_make_child(const char *ctrl, const char *v1_mount, const char *const *v1_files,
                                const char *const *v1_vals, int n1, const char *v2_file, const char *v2_val,
                                char *dir, size_t dn)
{
    FILE *f = fopen("/proc/self/cgroup", "r");
    if (!f) return -1;
    char line[1024], v1[512] = "", v2[512] = "";
    int have1 = 0, have2 = 0;
    while (fgets(line, sizeof line, f)) { /* ID:controllers:path */
        line[strcspn(line, "\n")] = 0;
        char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (!c2) continue;
        *c2 = 0;
        if (cg_has(c1 + 1, ctrl)) have1 = snprintf(v1, sizeof v1, "%s", strcmp(c2 + 1, "/") ? c2 + 1 : "") >= 0;
        else if (!strncmp(line, "0:", 2) && c2 == c1 + 1) have2 = snprintf(v2, sizeof v2, "%s", strcmp(c2 + 1, "/") ? c2 + 1 : "") >= 0;
    }
    fclose(f);
    if (have1) {
        snprintf(dir, dn, "/sys/fs/cgroup/%s%s/sdbtest.%d", v1_mount, v1, (int)getpid());
        if (!cg_make_dir(dir, v1_files, v1_vals, n1)) return 0;
    }
    if (have2) {
        const char *mnt = cg_is_dir("/sys/fs/cgroup/unified") ? "/sys/fs/cgroup/unified" : "/sys/fs/cgroup";
        char p[1024], plus[64];
        snprintf(p, sizeof p, "%s%s/cgroup.subtree_control", mnt, v2);
        snprintf(plus, sizeof plus, "+%s\n", ctrl);
        cg_put(p, plus); /* may already be on, or refused: writing v2_file tells */
        snprintf(dir, dn, "%s%s/sdbtest.%d", mnt, v2, (int)getpid());
        if (!cg_make_dir(dir, &v2_file, &v2_val, 1)) return 0;
    }
    return -1;
}

/* Forks a child that joins cgroup cg, goes to cwd (NULL: stays), sends stdout and stderr to `out`,
 * sets OMP_NUM_THREADS (NULL: unsets it) and execs argv[0]. Returns its pid. */
static inline pid_t cg_spawn(const char *cg, const char *cwd, const char *out, const char *omp, char *const *argv)
{
    pid_t pid = fork();
    if (pid) return pid;
    char procs[1024], me[32];
    snprintf(procs, sizeof procs, "%s/cgroup.procs", cg);
    snprintf(me, sizeof me, "%d\n", (int)getpid());
    if (cg_put(procs, me)) _exit(123);
    if (cwd && chdir(cwd) != 0) _exit(120);
    int fo = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fo < 0) _exit(121);
    dup2(fo, 1);
    dup2(fo, 2);
    if (omp) setenv("OMP_NUM_THREADS", omp, 1);
    else unsetenv("OMP_NUM_THREADS");
    execv(argv[0], argv);
    _exit(122);
}

#endif
