/*
 * shard.h — splitting a manifest's jobs over N shards (Slurm array tasks, or any N processes).
 *
 * THE ASSIGNMENT: cost-greedy in manifest order.
 *   Walk the jobs in manifest order (the order `sdb_manifest_load` resolves them, globs expanded
 *   in sorted order). Each job goes to the shard with the smallest cost assigned so far; ties go
 *   to the lowest shard index. A job's cost is its expected compute (sdb_shard_job_cost): working
 *   pixels x denoising steps actually run (steps x strength for img2img/inpainting), doubled
 *   with classifier-free guidance (guidance_scale > 1: the U-Net runs on two latents). All
 *   integer arithmetic: every task of an array computes the same assignment bit for bit.
 *
 * Stable when jobs are appended. The shard of job k depends only on jobs 0..k (their order and
 *   costs), never on jobs after it. Appending jobs (tonight's new frames at the end of the list, a
 *   new entry at the end of `jobs:`) therefore never moves an existing job.
 *   What DOES move jobs: inserting, removing or re-costing (steps, size, strength) a job moves
 *   jobs after it. That is harmless for correctness — a job done in ANY state file of the
 *   output folder counts as done, so a moved job that is done is skipped, and changing N (re-
 *   sharding) likewise never redoes finished work — it only matters when two different versions
 *   of a manifest run at the same moment. (No scheme can do better while also guaranteeing
 *   balance: if a job's shard may not depend on any other job, it is a pure hash of the job, and
 *   hashing can put arbitrarily much cost on one shard — a deterministic balance bound needs
 *   each placement to look at the others. Manifest order is the one order that appending keeps.)
 *
 * Balance guarantee. Let c_max be the largest job cost and A = total cost / N. After every
 *   placement, max_s load_s - min_s load_s <= c_max (induction: a job of cost c <= c_max goes
 *   onto the minimum). Hence every shard's cost lies within A +- c_max (N-1)/N: relative
 *   imbalance <= c_max / A, i.e. below 10% as soon as the average shard holds 10 of the largest
 *   jobs. The same bound, doubled, holds for any appended tail of jobs (final and prefix loads
 *   are each within c_max of flat): a night's new jobs are spread evenly even when the old ones
 *   are long done. Equal-cost jobs are dealt round robin (shard sizes differ by at most one).
 *
 * ARRAY INDEX MAPPING (sdb_shard_from_array): for `--array=MIN-MAX:STEP`, shard index =
 *   (SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN) / SLURM_ARRAY_TASK_STEP and N =
 *   SLURM_ARRAY_TASK_COUNT, so 0-15, 1-16 and 0-30:2 all give shards 0..15 of 16. When SDB_SHARDS
 *   is set in the environment, N = SDB_SHARDS and the shard index IS the task id: that is how a
 *   subset of shards is resubmitted (`sbatch --array=1,3 --export=ALL,SDB_SHARDS=4 ...`).
 */
#ifndef SDB_SHARD_H
#define SDB_SHARD_H

#include <stdint.h>
#include "sdb/error.h"
#include "sdb/manifest.h"

#define SDB_SHARD_MAX 100000

/* Parses a --shard value: "I/N" (0 <= I < N <= SDB_SHARD_MAX) or "auto" (from the Slurm array
 * environment; *count = 0 when there is none, i.e. not sharded). */
int sdb_shard_parse(const char *s, int *index, int *count, sdb_err *err);

/* The shard of this Slurm array task, from getenv (SLURM_ARRAY_TASK_ID/_MIN/_STEP/_COUNT, or
 * SDB_SHARDS). *count = 0 (and 0 returned) when SLURM_ARRAY_TASK_ID is not set. */
int sdb_shard_from_env(int *index, int *count, sdb_err *err);
/* The mapping itself: index = (id - min) / step of count shards (step <= 0 means 1). Fails when
 * id is not on the array's grid, the index is out of range, or (max >= 0) the array is not the
 * regular range min-max:step (a list such as --array=1,3: Slurm gives it COUNT 2, MIN 1, MAX 3,
 * STEP 1, which no index formula can serve; SDB_SHARDS is the way to run such a subset). */
int sdb_shard_from_array(long id, long min, long max, long step, long count, int *index, int *out_count,
                         sdb_err *err);

/* Default --threads: SLURM_CPUS_PER_TASK when set (and a positive number), else the CPUs this
 * process may use (its affinity mask, sdb_threads_available). */
int sdb_shard_default_threads(void);

/* The model's default image side (U-Net sample_size x 8, from <model>/unet/config.json; 512 when
 * it cannot be read, e.g. a single-file checkpoint). */
int sdb_shard_model_side(const char *model_path);

/* A job's expected cost (see above). The working size: width x height when given; else the input
 * image's size rounded up to multiples of 8 (read from the PNG/JPEG header only); else
 * default_side^2 (txt2img, padding_mask_crop, unreadable input). Always >= 1. */
int64_t sdb_shard_job_cost(const sdb_job_spec *j, int default_side);

/* The greedy over given costs: shard_of[k] in 0..n_shards-1 for k < n. loads (may be NULL)
 * receives each shard's total cost (n_shards entries). */
void sdb_shard_assign_costs(const int64_t *costs, int n, int n_shards, int *shard_of, int64_t *loads);

/* Assigns every job of a manifest (all of them, whatever a run selects): shard_of has m->n_jobs
 * entries; costs (may be NULL) receives each job's cost. */
int sdb_shard_assign(const sdb_manifest *m, int n_shards, int *shard_of, int64_t *costs, sdb_err *err);

#endif
