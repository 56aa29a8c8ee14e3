/*
 * shard_cli.h — the CLI side of sharding (issue 8): `sdbatch run --shard` set-up and
 * `sdbatch status --shards`. The assignment itself is libsdb's (sdb/shard.h).
 */
#ifndef SDB_SHARD_CLI_H
#define SDB_SHARD_CLI_H

#include <jansson.h>
#include <stdio.h>
#include "sdb/manifest.h"
#include "sdb/runner.h"
#include "sdb/store.h"

/* `run`: resolves --shard (arg NULL: "auto" when SLURM_ARRAY_TASK_ID is set, else not sharded)
 * into o->shard / o->n_shards / o->job_mask (*mask is malloc'd: free it after the run). Threads:
 * o->threads (--threads), else SLURM_CPUS_PER_TASK, else OMP_NUM_THREADS (left to OpenMP), else the
 * CPUs of this process's affinity mask; applied with sdb_threads_set. Says on stderr which shard
 * this is. Returns EXIT_OK or EXIT_USAGE (message printed). */
int cli_shard_setup(const sdb_manifest *m, const char *arg, sdb_run_opts *o, unsigned char **mask);

/* `status --shards`: per shard of every shard set found among the state files (state.<I>-of-<N>.db;
 * force_n > 0 also shows the split into force_n shards when no file has it): its jobs, how many are
 * done / failed / running / pending (job_state[i] is job i's merged state), the state of its task
 * (complete, running, stopped, failed, not started), stragglers, and the sbatch line that
 * resubmits the unfinished shards. stores[s] was read into rows[s] (nrows[s] rows, sorted by id).
 * With json != NULL, adds "shards" and "shards_to_resubmit" (unfinished and not running: stopped,
 * not started, failed) to it instead of printing. */
void cli_status_shards(const sdb_manifest *m, const char *manifest_arg, const sdb_job_state *job_state,
                       sdb_store *const *stores, sdb_job_row *const *rows, const int *nrows, int ns, int force_n,
                       json_t *json, FILE *f);

#endif
