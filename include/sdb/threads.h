/*
 * threads.h — the one thread pool: OpenMP, shared by OpenBLAS (its OpenMP build) and our loops.
 */
#ifndef SDB_THREADS_H
#define SDB_THREADS_H

/* Sets the number of threads for both OpenMP regions and OpenBLAS (n >= 1). */
void sdb_threads_set(int n);
int sdb_threads_get(void);
/* CPUs this process may run on: its affinity mask (a Slurm job's cpuset, taskset), at least 1. */
int sdb_threads_affinity(void);
/* The threads worth running: the affinity mask's CPUs, or fewer when the process's cgroups set a
 * CPU quota (a container's --cpus, systemd CPUQuota=, cgroup.h): its whole CPUs, at least 1 (more
 * threads than the quota only wait, throttled, at every barrier). */
int sdb_threads_available(void);

#endif
