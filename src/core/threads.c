/*
 * threads.c — thread-count control for the shared OpenMP pool (see threads.h).
 */
#include "sdb/threads.h"
#include "sdb/cgroup.h"

#include <sched.h>
#include <omp.h>
#include <cblas.h>

void sdb_threads_set(int n)
{
    if (n < 1) n = 1;
    omp_set_num_threads(n);
    openblas_set_num_threads(n);
}

int sdb_threads_get(void) { return omp_get_max_threads(); }

int sdb_threads_affinity(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        int n = CPU_COUNT(&set);
        if (n > 0) return n;
    }
    return 1;
}

int sdb_threads_available(void)
{
    const int n = sdb_threads_affinity();
    const double q = sdb_cgroup_cpus();
    if (q <= 0) return n;
    const int m = q < 1.0 ? 1 : (int)q; /* whole CPUs of the quota: a thread more would be throttled */
    return m < n ? m : n;
}
