/*
 * shard.c — the job -> shard assignment, Slurm array index mapping, thread defaults (shard.h has
 * the scheme, its stability and its balance guarantee).
 */
#include "sdb/shard.h"
#include "sdb/config.h"
#include "sdb/fsutil.h"
#include "sdb/threads.h"
#include "sdb/pipeline.h"   /* SDB_AREA_MASKED (issue 17) */

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- parsing ------------------------------------------------------------------------------- */

/* A whole decimal number (optional surrounding blanks), or -1 on failure. */
static int parse_long(const char *s, long *out)
{
    if (!s) return -1;
    while (*s == ' ' || *s == '\t') s++;
    if (!*s) return -1;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s) return -1;
    while (*end == ' ' || *end == '\t' || *end == '\n') end++;
    if (*end) return -1;
    *out = v;
    return 0;
}

int sdb_shard_parse(const char *s, int *index, int *count, sdb_err *err)
{
    *index = 0;
    *count = 0;
    if (!s || !*s) return sdb_fail(err, SDB_EINVAL, "--shard: empty value (want I/N or auto)");
    if (!strcmp(s, "auto")) return sdb_shard_from_env(index, count, err);
    const char *slash = strchr(s, '/');
    if (!slash) return sdb_fail(err, SDB_EINVAL, "--shard '%s': want I/N (e.g. 0/4) or auto", s);
    char a[32];
    size_t la = (size_t)(slash - s);
    if (la == 0 || la >= sizeof a) return sdb_fail(err, SDB_EINVAL, "--shard '%s': want I/N (e.g. 0/4) or auto", s);
    memcpy(a, s, la);
    a[la] = '\0';
    long i, n;
    if (parse_long(a, &i) || parse_long(slash + 1, &n))
        return sdb_fail(err, SDB_EINVAL, "--shard '%s': I and N must be whole numbers (e.g. 0/4)", s);
    if (n < 1 || n > SDB_SHARD_MAX) return sdb_fail(err, SDB_EINVAL, "--shard '%s': N must be 1..%d", s, SDB_SHARD_MAX);
    if (i < 0 || i >= n) return sdb_fail(err, SDB_EINVAL, "--shard '%s': I must be 0..%ld (shards count from 0)", s, n - 1);
    *index = (int)i;
    *count = (int)n;
    return 0;
}

int sdb_shard_from_array(long id, long min, long max, long step, long count, int *index, int *out_count,
                         sdb_err *err)
{
    if (step <= 0) step = 1;
    if (count < 1 || count > SDB_SHARD_MAX)
        return sdb_fail(err, SDB_EINVAL, "Slurm array: task count %ld out of range 1..%d", count, SDB_SHARD_MAX);
    if (max >= 0 && min + (count - 1) * step != max)
        return sdb_fail(err, SDB_EINVAL, "Slurm array: tasks %ld-%ld:%ld do not make %ld tasks (a list like --array=1,3?): "
                        "to run a subset of shards, set SDB_SHARDS=N and use the shard indices as task ids", min, max, step, count);
    if (id < min || (id - min) % step)
        return sdb_fail(err, SDB_EINVAL, "Slurm array: task id %ld is not on the array's grid (min %ld, step %ld); "
                        "for an irregular array (a list like 1,3) set SDB_SHARDS=N and use the shard indices as task ids", id, min, step);
    long i = (id - min) / step;
    if (i >= count)
        return sdb_fail(err, SDB_EINVAL, "Slurm array: task id %ld gives shard %ld, beyond the %ld tasks", id, i, count);
    *index = (int)i;
    *out_count = (int)count;
    return 0;
}

int sdb_shard_from_env(int *index, int *count, sdb_err *err)
{
    *index = 0;
    *count = 0;
    const char *tid = getenv("SLURM_ARRAY_TASK_ID");
    if (!tid || !*tid) return 0;
    long id, v;
    if (parse_long(tid, &id)) return sdb_fail(err, SDB_EINVAL, "SLURM_ARRAY_TASK_ID='%s' is not a number", tid);
    const char *ns = getenv("SDB_SHARDS");
    if (ns && *ns) {
        if (parse_long(ns, &v) || v < 1 || v > SDB_SHARD_MAX)
            return sdb_fail(err, SDB_EINVAL, "SDB_SHARDS='%s': want the number of shards (1..%d)", ns, SDB_SHARD_MAX);
        if (id < 0 || id >= v)
            return sdb_fail(err, SDB_EINVAL, "SDB_SHARDS=%ld: the array task ids must be shard indices 0..%ld, got %ld", v, v - 1, id);
        *index = (int)id;
        *count = (int)v;
        return 0;
    }
    long min = 0, max = -1, step = 1, cnt;
    const char *s;
    if ((s = getenv("SLURM_ARRAY_TASK_MIN")) && *s && parse_long(s, &min))
        return sdb_fail(err, SDB_EINVAL, "SLURM_ARRAY_TASK_MIN='%s' is not a number", s);
    if ((s = getenv("SLURM_ARRAY_TASK_MAX")) && *s && parse_long(s, &max))
        return sdb_fail(err, SDB_EINVAL, "SLURM_ARRAY_TASK_MAX='%s' is not a number", s);
    if ((s = getenv("SLURM_ARRAY_TASK_STEP")) && *s && parse_long(s, &step))
        return sdb_fail(err, SDB_EINVAL, "SLURM_ARRAY_TASK_STEP='%s' is not a number", s);
    s = getenv("SLURM_ARRAY_TASK_COUNT");
    if (!s || parse_long(s, &cnt))
        return sdb_fail(err, SDB_EINVAL, "SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT is %s%s%s",
                        s ? "'" : "missing", s ? s : "", s ? "'" : "");
    return sdb_shard_from_array(id, min, max, step, cnt, index, count, err);
}

int sdb_shard_default_threads(void)
{
    long v;
    const char *s = getenv("SLURM_CPUS_PER_TASK");
    if (s && parse_long(s, &v) == 0 && v >= 1 && v <= 4096) return (int)v;
    return sdb_threads_available();
}

/* ---- costs ----------------------------------------------------------------------------------- */

int sdb_shard_model_side(const char *model_path)
{
    int side = 512;
    if (!model_path || !sdb_is_dir(model_path)) return side;
    char *p = sdb_path_join(model_path, "unet/config.json");
    sdb_config c;
    memset(&c, 0, sizeof c);
    sdb_err e;
    long long ss;
    if (p && sdb_config_load(&c, p, &e) == 0) {
        if (sdb_config_int(&c, "sample_size", 64, &ss, &e) == 0 && ss > 0 && ss <= 4096) side = (int)ss * 8;
        sdb_config_free(&c);
    }
    free(p);
    return side;
}

static uint32_t be32(const unsigned char *b) { return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3]; }
static unsigned be16(const unsigned char *b) { return (unsigned)b[0] << 8 | b[1]; }

/* Width and height from a PNG's IHDR or a JPEG's SOF marker, reading only the header. */
static int image_size(const char *path, long *w, long *h)
{
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    unsigned char b[32];
    int rc = -1;
    if (fread(b, 1, 24, f) == 24) {
        if (!memcmp(b, "\x89PNG\r\n\x1a\n", 8) && !memcmp(b + 12, "IHDR", 4)) {
            *w = (long)be32(b + 16);
            *h = (long)be32(b + 20);
            rc = 0;
        } else if (b[0] == 0xFF && b[1] == 0xD8) {
            long pos = 2;
            for (int guard = 0; guard < 10000; guard++) {
                unsigned char m[9];
                if (fseek(f, pos, SEEK_SET) || fread(m, 1, 4, f) != 4) break;
                if (m[0] != 0xFF) break;
                if (m[1] == 0xFF) { pos++; continue; }          /* fill byte */
                unsigned marker = m[1];
                if (marker == 0xD8 || marker == 0x01 || (marker >= 0xD0 && marker <= 0xD7)) { pos += 2; continue; }
                unsigned len = be16(m + 2);
                if (len < 2) break;
                if (marker >= 0xC0 && marker <= 0xCF && marker != 0xC4 && marker != 0xC8 && marker != 0xCC) {
                    if (fread(m + 4, 1, 5, f) != 5) break;   /* precision, height, width */
                    *h = (long)be16(m + 5);
                    *w = (long)be16(m + 7);
                    rc = 0;
                    break;
                }
                if (marker == 0xD9 || marker == 0xDA) break;
                pos += 2 + len;
            }
        }
    }
    fclose(f);
    return rc == 0 && *w > 0 && *h > 0 ? 0 : -1;
}

int64_t sdb_shard_job_cost(const sdb_job_spec *j, int default_side)
{
    if (default_side <= 0) default_side = 512;
    long w = j->width, h = j->height;
    if (!w || !h) {
        /* issue 17: inpaint_area: masked works on a crop at only_masked_size (or the native size) */
        int crop = j->padding_mask_crop || j->inpaint_area == SDB_AREA_MASKED;
        w = h = j->only_masked_size ? j->only_masked_size : default_side;
        long iw, ih;
        if (j->image && !crop && image_size(j->image, &iw, &ih) == 0) {
            w = (iw + 7) / 8 * 8;
            h = (ih + 7) / 8 * 8;
        }
    }
    int64_t steps = j->steps > 0 ? j->steps : 1;
    if (j->image && j->strength > 0 && j->strength < 1.0) {
        /* diffusers: init_timestep = min(int(steps * strength), steps) */
        steps = (int64_t)((double)j->steps * j->strength);
        if (steps < 1) steps = 1;
    }
    int64_t c = (int64_t)w * (int64_t)h * steps;
    if (j->guidance_scale > 1.0) c *= 2;
    return c > 0 ? c : 1;
}

/* ---- the greedy ------------------------------------------------------------------------------ */

/* A binary min-heap of shards keyed (load, index): the least-loaded shard, lowest index on ties,
 * in O(log N) per job. */
typedef struct { int64_t load; int idx; } hnode;
static int hless(const hnode *a, const hnode *b) { return a->load < b->load || (a->load == b->load && a->idx < b->idx); }

void sdb_shard_assign_costs(const int64_t *costs, int n, int n_shards, int *shard_of, int64_t *loads)
{
    if (n_shards < 1) n_shards = 1;
    hnode *h = malloc(sizeof *h * (size_t)n_shards);
    if (!h) {   /* no memory: round robin (still deterministic and append-stable) */
        for (int k = 0; k < n; k++) shard_of[k] = k % n_shards;
        if (loads) memset(loads, 0, sizeof *loads * (size_t)n_shards);
        return;
    }
    for (int s = 0; s < n_shards; s++) { h[s].load = 0; h[s].idx = s; }   /* already a heap */
    for (int k = 0; k < n; k++) {
        shard_of[k] = h[0].idx;
        h[0].load += costs[k] > 0 ? costs[k] : 1;
        /* sift the root down */
        int i = 0;
        for (;;) {
            int l = 2 * i + 1, r = l + 1, m = i;
            if (l < n_shards && hless(&h[l], &h[m])) m = l;
            if (r < n_shards && hless(&h[r], &h[m])) m = r;
            if (m == i) break;
            hnode t = h[i]; h[i] = h[m]; h[m] = t;
            i = m;
        }
    }
    if (loads) for (int s = 0; s < n_shards; s++) loads[h[s].idx] = h[s].load;
    free(h);
}

int sdb_shard_assign(const sdb_manifest *m, int n_shards, int *shard_of, int64_t *costs, sdb_err *err)
{
    if (n_shards < 1 || n_shards > SDB_SHARD_MAX) return sdb_fail(err, SDB_EINVAL, "shard count %d out of range", n_shards);
    int64_t *c = costs ? costs : malloc(sizeof *c * (size_t)(m->n_jobs ? m->n_jobs : 1));
    if (!c) return sdb_fail(err, SDB_ENOMEM, "out of memory");
    int side = sdb_shard_model_side(m->model);
    for (int k = 0; k < m->n_jobs; k++) c[k] = sdb_shard_job_cost(&m->jobs[k], side);
    sdb_shard_assign_costs(c, m->n_jobs, n_shards, shard_of, NULL);
    if (c != costs) free(c);
    return 0;
}
