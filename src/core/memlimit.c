/*
 * memlimit.c — the memory a process may still take: MemAvailable and the room of its memory
 * cgroups, v1 and v2 (see memlimit.h). Owns nothing: every call reads /proc and the cgroup files.
 */
#include "sdb/memlimit.h"
#include "sdb/cgroup.h"
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
    char line[64];
    if (sdb_cgroup_line(dir, name, line, sizeof line)) return -1;
    *none = !strncmp(line, "max", 3);
    char *end;
    *v = *none ? 0 : strtod(line, &end);
    return *none || end != line ? 0 : -1;
}

/* One level of a hierarchy: folds its limit, if it has one, into r. */
static void level(const char *dir, int v2, void *ud)
{
    sdb_cgroup_room *r = ud;
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

int sdb_cgroup_room_at(const char *cgroup_file, const char *mountinfo_file, sdb_cgroup_room *r)
{
    memset(r, 0, sizeof *r);
    r->room_mib = r->limit_mib = r->used_mib = -1;
    sdb_cgroup_walk_at(cgroup_file, mountinfo_file, "memory", level, r);
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
