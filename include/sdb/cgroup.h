/*
 * cgroup.h — walking the process's control groups, v1 and v2, for the limits a job runs under: a
 * Slurm job's --mem and CPU quota, a systemd unit's MemoryMax= and CPUQuota=, a container's limits.
 * The machine-wide figures (MemAvailable, the CPUs of the affinity mask) do not see them.
 *
 * The cgroups are found as the kernel lists them: /proc/self/cgroup names the process's cgroup in
 * each hierarchy (v2: "0::/path"; v1: "N:controller[,…]:/path"), /proc/self/mountinfo where each
 * hierarchy is mounted (fstype cgroup2, or cgroup with the controller among its options; the
 * mount's root field is the part of the hierarchy it shows, as in a container). Limits nest, so
 * every level from the process's cgroup up to the mount point is visited (the tightest binds).
 * Nothing is cached: each call reads the files again.
 */
#ifndef SDB_CGROUP_H
#define SDB_CGROUP_H

/* Called for each level, from the process's own cgroup up: dir is the level's folder, v2 whether
 * it is a cgroup2 hierarchy (else the v1 hierarchy of the controller asked for). */
typedef void (*sdb_cgroup_level_fn)(const char *dir, int v2, void *ud);

/* Visits the levels of the process's cgroup in the cgroup2 hierarchy and in the v1 hierarchy of
 * `v1_controller` (e.g. "memory", "cpu"), from the given /proc/self/cgroup and mountinfo files
 * (tests pass their own; NULL: the real ones). Files that cannot be read visit nothing. */
void sdb_cgroup_walk_at(const char *cgroup_file, const char *mountinfo_file, const char *v1_controller,
                       sdb_cgroup_level_fn fn, void *ud);

/* The first line of the cgroup file dir/name into line (n bytes); 0, or -1 when unreadable. */
int sdb_cgroup_line(const char *dir, const char *name, char *line, int n);

/* The CPU quota of the process's cgroups in CPUs (quota / period of the tightest level: v2 cpu.max
 * "QUOTA PERIOD", "max" none; v1 cpu.cfs_quota_us, -1 none, over cpu.cfs_period_us); -1 when none. */
double sdb_cgroup_cpus_at(const char *cgroup_file, const char *mountinfo_file);
static inline double sdb_cgroup_cpus(void) { return sdb_cgroup_cpus_at(0, 0); }

#endif
