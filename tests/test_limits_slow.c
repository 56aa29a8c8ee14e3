/*
 * test_limits_slow.c — the manifest's job limit (SDB_MANIFEST_MAX_JOBS = 1,000,000): a million
 * jobs load (in seconds: ids and outputs are checked for duplicates through hash sets, not by
 * comparing every pair), the job past the limit is refused with a diagnostic at its line, and a
 * duplicate id among the million is still found. Slow (27 MB of YAML), so only the Release build
 * runs it.
 */
#include "harness.h"
#include "sdb/manifest.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* "version..jobs:" then n jobs "- {id: jN, prompt: p}"; job `dup` (when >= 0) reuses job 0's id. */
static char *jobs_text(int n, int dup, size_t *len)
{
    size_t cap = 64 + (size_t)n * 32, o = 0;
    char *t = malloc(cap);
    if (!t) return NULL;
    o += (size_t)snprintf(t, cap, "version: 1\nmodel: m\noutput_dir: out\njobs:\n");
    for (int i = 0; i < n; i++)
        o += (size_t)snprintf(t + o, cap - o, "- {id: j%d, prompt: p}\n", i == dup ? 0 : i);
    *len = o;
    return t;
}

static void test_job_limit(void)
{
    /* 1,000,002 entries, one of which repeats job 0's id: 1,000,001 distinct jobs, so the limit
     * lets the first 1,000,000 in (the duplicate reported among them) and refuses the last */
    size_t len;
    sdb_manifest m;
    sdb_err err = {0};
    char *t = jobs_text(SDB_MANIFEST_MAX_JOBS + 2, 777777, &len);
    CHECK(t != NULL);
    if (!t) return;
    double t0 = now();
    CHECK(sdb_manifest_parse(&m, t, len, "/x/million.yaml", &err) == SDB_EFORMAT);
    double dt = now() - t0;
    fprintf(stderr, "  %d jobs (%zu bytes) parsed in %.2f s: %s\n", m.n_jobs, len, dt, err.msg);
    CHECK(m.n_jobs == SDB_MANIFEST_MAX_JOBS && m.n_errors == 2);
    for (int i = 0; i < m.n_diags; i++) fprintf(stderr, "  %s\n", m.diags[i].text);
    /* the duplicate is job 777777 (line 5 + 777777); the job past the limit is the last, line
     * 5 + 1,000,001 */
    CHECK(m.n_diags == 2 && strstr(m.diags[0].text, "/x/million.yaml:777782:") &&
          strstr(m.diags[0].text, "duplicate job id 'j0' (first at line 5)"));
    CHECK(m.n_diags == 2 && strstr(m.diags[1].text, "/x/million.yaml:1000006:") &&
          strstr(m.diags[1].text, "more than 1000000 jobs (the limit of one manifest)"));
    CHECK(m.n_jobs == SDB_MANIFEST_MAX_JOBS && !strcmp(m.jobs[999999].id, "j1000000") &&
          !strcmp(m.jobs[999999].output, "/x/out/j1000000.png"));
    CHECK(dt < 60);
    sdb_manifest_free(&m);
    free(t);
}

int main(void)
{
    RUN(test_job_limit);
    return sdb_t_done();
}
