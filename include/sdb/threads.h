/*
 * threads.h — the one thread pool: OpenMP, shared by OpenBLAS (its OpenMP build) and our loops.
 */
#ifndef SDB_THREADS_H
#define SDB_THREADS_H

/* Sets the number of threads for both OpenMP regions and OpenBLAS (n >= 1). */
void sdb_threads_set(int n);
int sdb_threads_get(void);
/* CPUs this process may run on (its affinity mask), at least 1. */
int sdb_threads_available(void);

#endif
