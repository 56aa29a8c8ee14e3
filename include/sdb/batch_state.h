/*
 * batch_state.h — where each job of a manifest stands, read from every state database of its
 * output folder together (read-only): what `sdbatch status` and `sdbatch sheet` show.
 *
 * A job done in any database counts as done; a row whose params_hash differs from the manifest's
 * (the job was edited since) does not count (the job is pending); a `running` row whose owner is
 * dead shows as pending (stale). Among the rows that count, the furthest state wins (done >
 * running > failed > pending), then the most attempts.
 */
#ifndef SDB_BATCH_STATE_H
#define SDB_BATCH_STATE_H

#include "sdb/manifest.h"
#include "sdb/store.h"

typedef struct sdb_job_view {
    sdb_job_state state;
    int attempts;
    double seconds, started, finished;   /* seconds: NAN unless done or failed */
    const char *error;                   /* failed jobs: the reason (owned by the rows) */
    const char *output;                  /* the output recorded, else the manifest's */
    const char *file;                    /* the database the row came from, NULL = none */
    int stale;                           /* running under a dead owner: shown as pending */
} sdb_job_view;

typedef struct sdb_batch_state {
    char **paths;        /* the databases looked at */
    int np;
    sdb_store **stores;  /* those that opened, ns of them */
    sdb_job_row **rows;  /* each store's rows, sorted by id */
    int *nrows;
    int ns;
    sdb_job_view *jobs;  /* one per manifest job, in manifest order */
    int n_jobs;
    int counts[4];       /* jobs per sdb_job_state */
    /* Damaged or unreadable databases are no error: each is said in a note ("error: ..." or
     * "warning: ...", malloc'd) and counted in `damaged`, and what can be read is still used (a
     * file whose table scan fails is asked for each job by id). */
    char **notes;
    int n_notes;
    int damaged;
} sdb_batch_state;

/* Reads the databases (state_path, or every state*.db of <output_dir>/.sdbatch/) for a manifest
 * whose params hashes are filled (sdb_manifest_hash_inputs). A missing folder or file is no error
 * (every job is pending); a missing state_path, or a database that cannot be opened or read, is a
 * note (see `notes`). Fails only when out of memory. bs must be freed either way. */
int sdb_batch_state_read(sdb_batch_state *bs, const sdb_manifest *m, const char *state_path, sdb_err *err);
void sdb_batch_state_free(sdb_batch_state *bs);

#endif
