/*
 * memlimit.h — how much memory this process may still take: the machine's MemAvailable, and the
 * room its memory cgroups leave (a Slurm job's --mem, a systemd MemoryMax=, a container's limit),
 * which MemAvailable does not see: a job that fits the machine but not its cgroup meets the cgroup's
 * OOM killer, not a clear refusal.
 *
 * The cgroups are walked as cgroup.h describes; from the process's cgroup up to the mount point
 * every level with a limit counts (limits nest: the tightest binds):
 *   v2: memory.max ("max": none), in use memory.current less memory.stat's inactive_file;
 *   v1: memory.limit_in_bytes (a value near 2^63: none), in use memory.usage_in_bytes less
 *       memory.stat's total_inactive_file.
 * Inactive page cache is left out of "in use" because the kernel reclaims it before it OOM-kills
 * (the working set, as container runtimes count it). Nothing here is cached: each call reads the
 * files again, so it sees a limit changed while the process runs.
 */
#ifndef SDB_MEMLIMIT_H
#define SDB_MEMLIMIT_H

#include <stddef.h> /* NULL */

typedef struct sdb_cgroup_room {
    double room_mib;   /* limit - in use at the binding level; -1: no memory cgroup limit found */
    double limit_mib;  /* that level's limit */
    double used_mib;   /* and what is in use there (this process included) */
    char path[512];    /* that level's folder (e.g. /sys/fs/cgroup/system.slice/slurmstepd.scope/job_12) */
} sdb_cgroup_room;

/* The room of the process's memory cgroups, from the given /proc/self/cgroup and mountinfo files
 * (tests pass their own; NULL: the real ones). Returns 0 (r->room_mib -1 when there is no limit or
 * the files cannot be read: nothing can be said). */
int sdb_cgroup_room_at(const char *cgroup_file, const char *mountinfo_file, sdb_cgroup_room *r);
static inline int sdb_cgroup_room_now(sdb_cgroup_room *r) { return sdb_cgroup_room_at(NULL, NULL, r); }

/* MemAvailable in MiB, or -1. */
double sdb_mem_available_mib(void);

/* What a process holding rss_mib may have in all, less margin_mib: the smaller of the machine's
 * (MemAvailable + rss) and its cgroups' (room + rss) limits; -1 when neither is known. *cg (may be
 * NULL) gets the cgroup reading; *by_cgroup (may be NULL) whether the cgroup is what binds. */
double sdb_mem_limit_mib(double rss_mib, double margin_mib, sdb_cgroup_room *cg, int *by_cgroup);

#endif
