/*
 * memlimit.c — the memory a process may still take: MemAvailable and the room of its memory
 * cgroups, v1 and v2 (see memlimit.h). Owns nothing: every call reads /proc and the cgroup files.
 */
#include "sdb/memlimit.h"
#include "sdb/fsutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MIB (1024.0 * 1024.0)
/* v1 reports "no limit" as the largest page-aligned long (9223372036854771712): any limit this
 * large is none */
#define V1_NO_LIMIT 4.6e18

/* The first line of a cgroup file as a number of bytes; "max" -> *none = 1. 0, or -1 unreadable. */
static int read_bytes(const char *dir, const char *name, double *v, int *none)
{
    char p[768], line[64];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "r");
    if (!f) return -1;
    const int ok = fgets(line, sizeof line, f) != NULL;
    fclose(f);
    if (!ok) return -1;
    *none = !strncmp(line, "max", 3);
    char *end;
    *v = *none ? 0 : strtod(line, &end);
    return *none || end != line ? 0 : -1;
}

/* One level of a hierarchy: folds its limit, if it has one, into r. */
static void level(const char *dir, int v2, sdb_cgroup_room *r)
{
    double limit, used;
    int none, unused;
    if (read_bytes(dir, v2 ? "memory.max" : "memory.limit_in_bytes", &limit, &none)) return;
    if (none || (!v2 && limit >= V1_NO_LIMIT)) return;
    if (read_bytes(dir, v2 ? "memory.current" : "memory.usage_in_bytes", &used, &unused)) return;
    char p[768];
    snprintf(p, sizeof p, "%s/memory.stat", dir);
    double inactive = sdb_proc_value(p, v2 ? "inactive_file " : "total_inactive_file ");
    if (inactive < 0 && !v2) inactive = sdb_proc_value(p, "inactive_file ");
    if (inactive > 0 && inactive <= used) used -= inactive;
    const double room = (limit - used) / MIB;
    if (r->room_mib < 0 || room < r->room_mib) {
        r->room_mib = room < 0 ? 0 : room;
        r->limit_mib = limit / MIB;
        r->used_mib = used / MIB;
        snprintf(r->path, sizeof r->path, "%s", dir);
    }
}

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
static void hierarchy(const char *root, const char *mnt, const char *cg, int v2, sdb_cgroup_room *r)
{
    const size_t rl = strlen(root);
    const char *rel = cg;
    if (strcmp(root, "/") && !strncmp(cg, root, rl) && (cg[rl] == '/' || !cg[rl])) rel = cg + rl;
    char dir[512];
    if (snprintf(dir, sizeof dir, "%s%s", mnt, rel) >= (int)sizeof dir) return;
    size_t n = strlen(dir), ml = strlen(mnt);
    while (n > ml && dir[n - 1] == '/') dir[--n] = 0;
    for (;;) {
        level(dir, v2, r);
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

int sdb_cgroup_room_at(const char *cgroup_file, const char *mountinfo_file, sdb_cgroup_room *r)
{
    memset(r, 0, sizeof *r);
    r->room_mib = r->limit_mib = r->used_mib = -1;
    char v1[512] = "", v2[512] = "", line[2048];
    int have1 = 0, have2 = 0;
    FILE *f = fopen(cgroup_file ? cgroup_file : "/proc/self/cgroup", "r");
    if (!f) return 0;
    while (fgets(line, sizeof line, f)) { /* ID:controllers:path */
        line[strcspn(line, "\n")] = 0;
        char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (!c2) continue;
        *c1 = *c2 = 0;
        if (!strcmp(line, "0") && c2 == c1 + 1) have2 = snprintf(v2, sizeof v2, "%s", c2 + 1) < (int)sizeof v2;
        else if (has_item(c1 + 1, "memory")) have1 = snprintf(v1, sizeof v1, "%s", c2 + 1) < (int)sizeof v1;
    }
    fclose(f);
    if (!have1 && !have2) return 0;
    f = fopen(mountinfo_file ? mountinfo_file : "/proc/self/mountinfo", "r");
    if (!f) return 0;
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
        if (have2 && !strcmp(type, "cgroup2")) hierarchy(field[3], field[4], v2, 1, r);
        else if (have1 && !strcmp(type, "cgroup") && has_item(super, "memory")) hierarchy(field[3], field[4], v1, 0, r);
    }
    fclose(f);
    return 0;
}

double sdb_mem_available_mib(void)
{
    const double kb = sdb_proc_value("/proc/meminfo", "MemAvailable:");
    return kb < 0 ? -1 : kb / 1024.0;
}

double sdb_mem_limit_mib(double rss_mib, double margin_mib, sdb_cgroup_room *cg, int *by_cgroup)
{
    sdb_cgroup_room room;
    sdb_cgroup_room_now(&room);
    if (cg) *cg = room;
    const double avail = sdb_mem_available_mib();
    const double machine = avail < 0 ? -1 : avail + rss_mib - margin_mib;
    const double group = room.room_mib < 0 ? -1 : room.room_mib + rss_mib - margin_mib;
    const int cgroup_binds = group >= 0 && (machine < 0 || group < machine);
    if (by_cgroup) *by_cgroup = cgroup_binds;
    return cgroup_binds ? group : machine;
}
