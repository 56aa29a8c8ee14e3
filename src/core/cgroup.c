/*
 * cgroup.c — the process's control groups, v1 and v2: walking their levels, and the CPU quota (see
 * cgroup.h). Owns nothing: every call reads /proc and the cgroup files.
 */
#include "sdb/cgroup.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* mountinfo's octal escapes (\040 for a space, ...) decoded in place */
static void unescape(char *s)
{
    char *d = s;
    for (; *s; s++) {
        if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' && s[2] <= '7' && s[3] >= '0' && s[3] <= '7') {
            *d++ = (char)((s[1] - '0') * 64 + (s[2] - '0') * 8 + (s[3] - '0'));
            s += 3;
        } else {
            *d++ = *s;
        }
    }
    *d = 0;
}

/* Walks a hierarchy mounted at mnt (showing its part `root`) from the process's cgroup `cg` up to
 * the mount point. */
static void hierarchy(const char *root, const char *mnt, const char *cg, int v2, sdb_cgroup_level_fn fn, void *ud)
{
    const size_t rl = strlen(root);
    const char *rel = cg;
    if (strcmp(root, "/") && !strncmp(cg, root, rl) && (cg[rl] == '/' || !cg[rl])) rel = cg + rl;
    char dir[512];
    if (snprintf(dir, sizeof dir, "%s%s", mnt, rel) >= (int)sizeof dir) return;
    size_t n = strlen(dir), ml = strlen(mnt);
    while (n > ml && dir[n - 1] == '/') dir[--n] = 0;
    for (;;) {
        fn(dir, v2, ud);
        if (n <= ml) break;
        while (n > ml && dir[n - 1] != '/') n--; /* up one level */
        while (n > ml && dir[n - 1] == '/') n--;
        dir[n] = 0;
    }
}

/* Whether comma-separated list `list` has the item `item`. */
static int has_item(const char *list, const char *item)
{
    const size_t n = strlen(item);
    for (const char *p = list; p && *p;) {
        if (!strncmp(p, item, n) && (p[n] == ',' || !p[n] || p[n] == '\n')) return 1;
        p = strchr(p, ',');
        if (p) p++;
    }
    return 0;
}

void sdb_cgroup_walk_at(const char *cgroup_file, const char *mountinfo_file, const char *v1_controller,
                        sdb_cgroup_level_fn fn, void *ud)
{
    char v1[512] = "", v2[512] = "", line[2048];
    int have1 = 0, have2 = 0;
    FILE *f = fopen(cgroup_file ? cgroup_file : "/proc/self/cgroup", "r");
    if (!f) return;
    while (fgets(line, sizeof line, f)) { /* ID:controllers:path */
        line[strcspn(line, "\n")] = 0;
        char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (!c2) continue;
        *c1 = *c2 = 0;
        if (!strcmp(line, "0") && c2 == c1 + 1) have2 = snprintf(v2, sizeof v2, "%s", c2 + 1) < (int)sizeof v2;
        else if (has_item(c1 + 1, v1_controller)) have1 = snprintf(v1, sizeof v1, "%s", c2 + 1) < (int)sizeof v1;
    }
    fclose(f);
    if (!have1 && !have2) return;
    f = fopen(mountinfo_file ? mountinfo_file : "/proc/self/mountinfo", "r");
    if (!f) return;
    while (fgets(line, sizeof line, f)) {
        /* id parent maj:min root mountpoint options [optional...] - fstype source superoptions */
        char *field[64];
        int nf = 0;
        for (char *s = strtok(line, " \n"); s && nf < 64; s = strtok(NULL, " \n")) field[nf++] = s;
        int dash = 6;
        while (dash < nf && strcmp(field[dash], "-")) dash++;
        if (nf < 7 || dash + 1 >= nf) continue;
        const char *type = field[dash + 1], *super = dash + 3 < nf ? field[dash + 3] : "";
        unescape(field[3]);
        unescape(field[4]);
        if (have2 && !strcmp(type, "cgroup2")) hierarchy(field[3], field[4], v2, 1, fn, ud);
        else if (have1 && !strcmp(type, "cgroup") && has_item(super, v1_controller)) hierarchy(field[3], field[4], v1, 0, fn, ud);
    }
    fclose(f);
}

int sdb_cgroup_line(const char *dir, const char *name, char *line, int n)
{
    char p[768];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "r");
    if (!f) return -1;
    const int ok = fgets(line, n, f) != NULL;
    fclose(f);
    return ok ? 0 : -1;
}

/* ---- CPU quota ---- */
typedef struct { double cpus; } cpu_acc;

static void cpu_level(const char *dir, int v2, void *ud)
{
    cpu_acc *a = ud;
    char line[128];
    double quota = -1, period = -1;
    if (sdb_cgroup_line(dir, v2 ? "cpu.max" : "cpu.cfs_quota_us", line, sizeof line)) return;
    if (v2) { /* "QUOTA PERIOD" or "max PERIOD" */
        if (strncmp(line, "max", 3) && sscanf(line, "%lf %lf", &quota, &period) != 2) quota = -1;
    } else {
        quota = strtod(line, NULL);
        if (quota > 0 && !sdb_cgroup_line(dir, "cpu.cfs_period_us", line, sizeof line)) period = strtod(line, NULL);
    }
    if (quota <= 0 || period <= 0) return;
    const double cpus = quota / period;
    if (a->cpus < 0 || cpus < a->cpus) a->cpus = cpus;
}

double sdb_cgroup_cpus_at(const char *cgroup_file, const char *mountinfo_file)
{
    cpu_acc a = {-1};
    sdb_cgroup_walk_at(cgroup_file, mountinfo_file, "cpu", cpu_level, &a);
    return a.cpus;
}
