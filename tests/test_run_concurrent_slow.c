/*
 * test_run_concurrent_slow.c — two and four `sdbatch run` processes on one manifest at once (real
 * processes, one state database, the tiny model): every job runs exactly once (the database's
 * runs table shows it), all processes finish with exit 0, outputs equal a single process's. Also:
 * one of four killed with SIGKILL mid-run: the others (or a rerun) take its job over.
 */
#include "test_run_common.h"

#define NJOBS 12

static char base[NJOBS][65];

static void baseline(void)
{
    rt_batch b;
    rt_baseline(&b, NJOBS, base);
}

static void concurrent(int nproc, int kill_one)
{
    rt_batch b;
    rt_make(&b, NJOBS, NULL);
    const char *args[] = {"run", b.manifest, NULL};
    pid_t pids[8];
    char tags[8][16];
    for (int k = 0; k < nproc; k++) {
        snprintf(tags[k], sizeof tags[k], "p%d", k);
        pids[k] = rt_spawn(&b, NULL, args, tags[k]);
    }
    if (kill_one) {
        /* wait until process 0 has claimed something, then kill it */
        for (int t = 0; t < 600; t++) {
            usleep(50 * 1000);
            if (sdb_file_exists(b.db) && rt_sql(b.db, "SELECT count(*) FROM sqlite_master WHERE name='jobs'") == 1 &&
                rt_sql(b.db, "SELECT count(*) FROM jobs WHERE state='running' AND pid=%ld", (long)pids[0]) > 0) break;
        }
        kill(pids[0], SIGKILL);
    }
    for (int k = 0; k < nproc; k++) {
        int st = rt_wait(pids[k]);
        if (kill_one && k == 0) continue;
        CHECKF(rt_exit_code(st) == 0, "process %d exit %d", k, rt_exit_code(st));
        if (rt_exit_code(st)) rt_show(&b, tags[k]);
    }
    if (kill_one) {
        /* whatever the survivors left (the victim's job, if they had finished their passes) */
        int st = rt_run(&b, NULL, args);
        CHECK(rt_exit_code(st) == 0);
    }
    CHECK(rt_each_done_once(&b));
    char h[NJOBS][65];
    rt_hashes(&b, h);
    for (int i = 0; i < NJOBS; i++) CHECKF(!strcmp(h[i], base[i]), "%s differs from the single-process run", b.ids[i]);
    CHECK(rt_temp_files(&b) == 0);
    long long workers = rt_sql(b.db, "SELECT count(DISTINCT pid) FROM runs WHERE outcome='done'");
    fprintf(stderr, "    %d processes: the jobs were done by %lld of them\n", nproc, workers);
    CHECK(workers >= 1);
    CHECK(rt_sql(b.db, "SELECT count(*) FROM runs WHERE outcome='done'") == NJOBS);
    json_t *doc = rt_status_json(&b, NULL);
    if (doc) {
        CHECK(rt_jint(doc, "done") == NJOBS && rt_jint(doc, "running") == 0);
        json_decref(doc);
    }
}

static void two_processes(void) { concurrent(2, 0); }
static void four_processes(void) { concurrent(4, 0); }
static void four_one_killed(void) { concurrent(4, 1); }

int main(void)
{
    RUN(baseline);
    RUN(two_processes);
    RUN(four_processes);
    RUN(four_one_killed);
    return sdb_t_done();
}
