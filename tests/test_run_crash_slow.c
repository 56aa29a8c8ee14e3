/*
 * test_run_crash_slow.c — SIGKILL `sdbatch run` (a real child process, the tiny model) at many
 * points, then run it again: every job is done exactly once (the database's runs table shows
 * it), every output equals the uninterrupted run's byte for byte, no temp file remains, and
 * `status --json` agrees.
 *
 * Named points come from the binary's SDB_TEST_KILL_AT hook (src/jobs/runner.c, store.c: the
 * process raises SIGKILL there); timed kills hit whatever it is doing (model load, a step, a
 * write) at a given delay. Some scenarios kill several runs in a row before the final one.
 */
#include "test_run_common.h"

#define NJOBS 4

static char base[NJOBS][65];

static void baseline(void)
{
    rt_batch b;
    rt_baseline(&b, NJOBS, base);
    /* the PNG carries the A1111 parameters chunk */
    char p[800];
    snprintf(p, sizeof p, "%s/job00.png", b.out);
    char *png;
    size_t n;
    sdb_err err;
    if (sdb_read_file(p, &png, &n, &err) == 0) {
        int found = 0;
        for (size_t i = 0; i + 10 < n; i++) if (!memcmp(png + i, "parameters", 10)) found = 1;
        CHECK(found);
        free(png);
    }
}

/* Kills runs at the given points (each "<point>" for the hook, or "+<ms>" for a timed kill), then
 * runs to the end and checks everything. */
static void scenario(const char *const *kills)
{
    rt_batch b;
    rt_make(&b, NJOBS, NULL);
    const char *args[] = {"run", b.manifest, NULL};
    for (int k = 0; kills[k]; k++) {
        int st;
        if (kills[k][0] == '+') {
            pid_t pid = rt_spawn(&b, NULL, args, NULL);
            usleep(atoi(kills[k] + 1) * 1000);
            kill(pid, SIGKILL);
            st = rt_wait(pid);
            /* it may have finished before the kill on a fast machine: fine either way */
            CHECK((WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL) || (WIFEXITED(st) && WEXITSTATUS(st) == 0));
        } else {
            static char env[128];
            snprintf(env, sizeof env, "SDB_TEST_KILL_AT=%s", kills[k]);
            const char *envs[] = {env, NULL};
            st = rt_run(&b, envs, args);
            CHECKF(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "kill point %s not reached (status %d)", kills[k], st);
            if (!WIFSIGNALED(st)) rt_show(&b, NULL);
        }
    }
    int st = rt_run(&b, NULL, args);
    CHECKF(rt_exit_code(st) == 0, "rerun exit %d", rt_exit_code(st));
    if (rt_exit_code(st)) rt_show(&b, NULL);
    char h[NJOBS][65];
    rt_hashes(&b, h);
    for (int i = 0; i < NJOBS; i++) CHECKF(!strcmp(h[i], base[i]), "%s differs from the uninterrupted run", b.ids[i]);
    CHECK(rt_each_done_once(&b));
    CHECK(rt_temp_files(&b) == 0);
    json_t *doc = rt_status_json(&b, NULL);
    if (doc) {
        CHECK(rt_jint(doc, "total") == NJOBS && rt_jint(doc, "done") == NJOBS);
        CHECK(rt_jint(doc, "pending") == 0 && rt_jint(doc, "running") == 0 && rt_jint(doc, "failed") == 0);
        json_decref(doc);
    }
    /* a further run does nothing */
    long long runs_before = rt_sql(b.db, "SELECT count(*) FROM runs");
    st = rt_run(&b, NULL, args);
    CHECK(rt_exit_code(st) == 0);
    CHECK(rt_sql(b.db, "SELECT count(*) FROM runs") == runs_before);
}

#define SCEN(name, ...) static void name(void) { static const char *const k[] = {__VA_ARGS__, NULL}; scenario(k); }
SCEN(kill_at_startup, "startup")                    /* state opened, before the model */
SCEN(kill_at_load_start, "load_start")              /* entering the model load */
SCEN(kill_after_load, "loaded")
SCEN(kill_after_sync, "synced")                     /* identities written, nothing claimed */
SCEN(kill_in_claim_txn, "claim_txn")                /* inside BEGIN IMMEDIATE, before COMMIT */
SCEN(kill_after_claim, "claimed@2")                 /* second job claimed, not started */
SCEN(kill_mid_step, "step@2")                       /* first job, after its 2nd step */
SCEN(kill_mid_step_later_job, "step@8")             /* third job, mid-denoising */
SCEN(kill_after_generate, "generated")              /* image in memory, nothing written */
SCEN(kill_after_prepare, "prepared")                /* output hash recorded, no file yet */
SCEN(kill_during_png_write, "png_written@2")        /* temp file written, not renamed */
SCEN(kill_after_rename, "renamed")                  /* output in place, row still running */
SCEN(kill_in_complete_txn, "complete_txn@3")        /* inside the done transaction */
SCEN(kill_after_done, "done@1")
SCEN(kill_in_recovery, "renamed@2", "recover_txn")  /* then killed while recovering that */
SCEN(kill_many_times, "step@3", "png_written@1", "claim_txn@2", "renamed@1", "step@1")
SCEN(kill_timed_early, "+30")                       /* during start-up / model load */
SCEN(kill_timed_mid, "+400", "+700")
SCEN(kill_timed_repeated, "+250", "+500", "+900", "+1300")

int main(void)
{
    RUN(baseline);
    RUN(kill_at_startup);
    RUN(kill_at_load_start);
    RUN(kill_after_load);
    RUN(kill_after_sync);
    RUN(kill_in_claim_txn);
    RUN(kill_after_claim);
    RUN(kill_mid_step);
    RUN(kill_mid_step_later_job);
    RUN(kill_after_generate);
    RUN(kill_after_prepare);
    RUN(kill_during_png_write);
    RUN(kill_after_rename);
    RUN(kill_in_complete_txn);
    RUN(kill_after_done);
    RUN(kill_in_recovery);
    RUN(kill_many_times);
    RUN(kill_timed_early);
    RUN(kill_timed_mid);
    RUN(kill_timed_repeated);
    return sdb_t_done();
}
