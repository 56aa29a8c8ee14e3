/*
 * repair.h — `sdbatch repair MANIFEST`: rebuilds a batch's state database from what is on disk,
 * after the file was damaged (corrupt, truncated, a -wal it cannot use) or lost.
 *
 * Every state*.db of the folder (and the one named) is opened read-only and checked
 * (PRAGMA quick_check). A damaged one is still read where it answers, then moved aside as
 * "<name>.damaged-<unix time>" (with its -wal/-shm/-journal), so that readers stop tripping on
 * it. The state database is then (re)created and every job of the manifest synced into it; a job
 * counts as done, and is recorded so, when
 *   (a) a database that can still be read (any state file of the folder, damaged or not) records
 *       its current identity with an output that exists and has the recorded SHA-256, or
 *   (b) its output PNG carries its current output identity (sdb_job_output_identity: the
 *       `sdbatch-job` text chunk `run` writes).
 * Anything else is left pending: the next `sdbatch run` redoes it. Run it while no `sdbatch run`
 * uses the folder (a locked database stops it).
 *
 * The identity needs the model's id, so the model is loaded (through the executor).
 */
#ifndef SDB_REPAIR_H
#define SDB_REPAIR_H

#include "sdb/error.h"
#include "sdb/log.h"
#include "sdb/manifest.h"
#include "sdb/runner.h"

/* What repair found for one job: done (why: which evidence) or not (why: what was missing). */
typedef void (*sdb_repair_job_fn)(void *ud, const char *id, int done, const char *why);
/* A state file found damaged (problem), and where it was moved (NULL when it could not be). */
typedef void (*sdb_repair_file_fn)(void *ud, const char *path, const char *problem, const char *moved_to);

typedef struct sdb_repair_opts {
    const char *state_path;   /* NULL: <output_dir>/.sdbatch/state.db */
    int threads, weights_f16; /* for loading the model (the identity depends on --weights) */
    sdb_repair_job_fn on_job;
    sdb_repair_file_fn on_file;
    void *ud;
} sdb_repair_opts;

typedef struct sdb_repair_result {
    int total;
    int done_db;      /* done by (a): recorded in a readable database */
    int done_png;     /* done by (b) only: the PNG's identity */
    int already;      /* of those, already done in the state database (nothing changed) */
    int pending;      /* not done */
    int damaged;      /* state files found damaged (moved aside) */
    int rebuilt;      /* 1: the state database was created anew */
} sdb_repair_result;

/* m: loaded and hashed (sdb_manifest_check or sdb_manifest_hash_inputs). */
int sdb_repair_manifest(const sdb_manifest *m, const sdb_executor *ex, const sdb_repair_opts *o,
                        sdb_repair_result *res, const sdb_log *log, sdb_err *err);

#endif
