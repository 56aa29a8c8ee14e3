/*
 * store.h — the job-state database of a batch (SQLite, WAL).
 *
 * One database file per output folder and writer: `<output_dir>/.sdbatch/state.db` for plain runs
 * (any number of `sdbatch run` processes on ONE host share it), `state.<I>-of-<N>.db` beside it
 * for shard I of N (written by that shard's task only, so no SQLite file is ever written from two
 * hosts: locking does not work over NFS/Lustre). Readers (`sdbatch status`, a run checking whether
 * another shard already did a job) open every `state*.db` of the folder read-only; a job done in
 * ANY of them counts as done.
 *
 * The state machine, the crash points and the invariants are drawn at the top of store.c.
 * Schema (PRAGMA user_version = SDB_STORE_SCHEMA_VERSION; older files are migrated in place):
 *   jobs(id PK, identity, params_hash, model_hash, state, attempts, host, pid, proc_start,
 *        started_at, lease_until, finished_at, seconds, output, output_sha256, error, run_id,
 *        updated_at)
 *   runs(run PK, job_id, identity, host, pid, started_at, finished_at, outcome, error)
 *        — one row per claim; outcome NULL while running (or when its process died),
 *          'done' / 'failed' / 'interrupted' / 'orphaned' after.
 *   meta(key PK, value)
 * Times are Unix seconds (REAL).
 */
#ifndef SDB_STORE_H
#define SDB_STORE_H

#include <stdint.h>
#include "sdb/error.h"

#define SDB_STORE_SCHEMA_VERSION 2

typedef struct sdb_store sdb_store;

typedef enum { SDB_JOB_PENDING = 0, SDB_JOB_RUNNING, SDB_JOB_DONE, SDB_JOB_FAILED } sdb_job_state;
const char *sdb_job_state_name(sdb_job_state s);

/* Who runs a job: host name, pid and the process's start time (clock ticks after boot, from
 * /proc/<pid>/stat), so a recycled pid is not taken for the original process. */
typedef struct sdb_worker {
    char host[256];
    long pid;
    long long proc_start;
} sdb_worker;
/* This process. */
void sdb_worker_self(sdb_worker *w);

typedef struct sdb_job_row {
    char *id, *identity, *params_hash, *model_hash;
    sdb_job_state state;
    int attempts;
    char *host;
    long pid;
    long long proc_start;
    double started_at, lease_until, finished_at, seconds, updated_at;
    char *output, *output_sha256, *error;
    long long run_id;
} sdb_job_row;
void sdb_job_row_free(sdb_job_row *r);
void sdb_job_rows_free(sdb_job_row *rows, int n);

/* Is the owner of a `running` row still at work? Not when its lease has expired; on the same
 * host, also not when its pid is gone (or recycled: the start time differs). */
int sdb_store_owner_alive(const sdb_job_row *r, const sdb_worker *me, double now);

enum { SDB_STORE_RW = 0, SDB_STORE_READONLY = 1, SDB_STORE_RW_SHARD = 2 };
/* Opens (creating it and its folder for RW) and migrates a database. READONLY of a missing file
 * fails with SDB_ENOTFOUND. RW uses WAL (its readers and writers are processes of one host);
 * RW_SHARD, for a shard's file (written by one task, read by other hosts, possibly over
 * NFS/Lustre, where WAL's shared-memory index does not work), a rollback journal. */
int sdb_store_open(sdb_store **out, const char *path, int mode, sdb_err *err);
void sdb_store_close(sdb_store *s);
/* A READONLY open that could not use the file's -wal/-shm (a read-only folder, a -wal of another
 * SQLite version) reads the main file alone; then this is 1 (changes still in the -wal are not
 * seen). */
int sdb_store_degraded(const sdb_store *s);
const char *sdb_store_path(const sdb_store *s);
int sdb_store_user_version(sdb_store *s);

/* "<output_dir>/.sdbatch/state.db", or state.<I>-of-<N>.db when n_shards > 0 (malloc'd). */
char *sdb_store_default_path(const char *output_dir, int shard, int n_shards);
/* Every state*.db in a folder, sorted (malloc'd array of malloc'd paths). */
int sdb_store_list(const char *folder, char ***paths, int *n, sdb_err *err);
void sdb_store_list_free(char **paths, int n);

int sdb_store_set_meta(sdb_store *s, const char *key, const char *value, sdb_err *err);
/* malloc'd value or NULL. */
char *sdb_store_get_meta(sdb_store *s, const char *key);

/* What a run wants a job to be. */
typedef struct sdb_store_job {
    const char *id, *identity, *params_hash, *model_hash, *output;
} sdb_store_job;

/* One transaction: inserts missing jobs as pending; a row whose identity differs (the job was
 * edited) and is not running under a live owner goes back to pending with attempts 0; a done row
 * whose output file has disappeared goes back to pending. *n_reset counts rows reset. */
int sdb_store_sync(sdb_store *s, const sdb_store_job *jobs, int n, const sdb_worker *me,
                   int *n_reset, sdb_err *err);

/* Puts every orphaned `running` row back: to done when the output it recorded (prepare) exists
 * with the recorded SHA-256, else to pending. all_running: treat every running row as orphaned
 * (a shard database after its task was requeued: only one task writes it). */
int sdb_store_recover(sdb_store *s, const sdb_worker *me, int all_running, int *n_recovered, sdb_err *err);

typedef struct sdb_claim_opts {
    int max_attempts;    /* failed rows with attempts < this are claimable (default 2) */
    int retry_failed;    /* any failed row is claimable */
    double lease_seconds;/* lease given to the owner, renewed by heartbeats */
} sdb_claim_opts;

/* Tries to claim one job (BEGIN IMMEDIATE): succeeds when its row has this identity and is pending,
 * failed-and-retryable, or running under a dead owner. *claimed = 1 and *run_id set on success. */
int sdb_store_claim(sdb_store *s, const char *id, const char *identity, const sdb_claim_opts *o,
                    const sdb_worker *me, int *claimed, long long *run_id, sdb_err *err);
/* Extends the lease of a job this worker owns. */
int sdb_store_heartbeat(sdb_store *s, const char *id, long long run_id, double lease_seconds, sdb_err *err);
/* Records the output path and the SHA-256 of the bytes about to be renamed into place. */
int sdb_store_prepare(sdb_store *s, const char *id, long long run_id, const char *output,
                      const char *sha256, sdb_err *err);
/* running -> done (after the output's rename). Fails with SDB_ESTATE when this run no longer
 * owns the row. */
int sdb_store_complete(sdb_store *s, const char *id, long long run_id, const char *output,
                       const char *sha256, double seconds, sdb_err *err);
/* running -> failed with a reason. */
int sdb_store_fail(sdb_store *s, const char *id, long long run_id, const char *error, double seconds,
                   sdb_err *err);
/* running -> pending (interrupted: the attempt is not counted). */
int sdb_store_release(sdb_store *s, const char *id, long long run_id, const char *why, sdb_err *err);

/* One row (*found = 0 when absent). */
int sdb_store_get(sdb_store *s, const char *id, sdb_job_row *row, int *found, sdb_err *err);
/* All rows, by id (on failure none: *rows = NULL, *n = 0). */
int sdb_store_rows(sdb_store *s, sdb_job_row **rows, int *n, sdb_err *err);
/* Number of runs of a job with this outcome (NULL = still open / died). */
int sdb_store_count_runs(sdb_store *s, const char *id, const char *outcome, int *count, sdb_err *err);

/* ---- repair (sdbatch repair; src/jobs/repair.c) ---- */
/* PRAGMA quick_check: 0 when the file is sound, else SDB_ESTATE with what is wrong. (Writers
 * run it when they open a file.) */
int sdb_store_check(sdb_store *s, sdb_err *err);
/* A job found done on disk by `sdbatch repair`: its row becomes done with this output and hash,
 * and a run row records it (outcome 'done', error "repaired: <why>"). The row must exist
 * (sdb_store_sync) and not be running. */
int sdb_store_mark_repaired(sdb_store *s, const char *id, const char *identity, const char *output,
                            const char *sha256, const char *why, sdb_err *err);

/* Test hook: when SDB_TEST_KILL_AT is "<name>" or "<name>@<n>", the n-th (default first) call
 * with that name raises SIGKILL. Inert (one getenv, cached) when the variable is unset. */
void sdb_kill_point(const char *name);

#endif
