/*
 * test_run_workers_slow.c — `sdbatch run --workers 2` (real processes, the tiny model): every job
 * is done exactly once, by two worker processes that are not the parent, with outputs byte-equal
 * to a --workers 1 run. Stopping: SIGTERM to the parent stops both workers at their next step
 * (jobs back to pending, exit 143); SIGKILL of the parent makes the workers stop the same way
 * (their parent-death signal); SIGKILL of one worker loses only its job's work. After each, a
 * rerun finishes the rest, every job done exactly once, the same bytes, no temp file left.
 */
#include "test_run_common.h"

#include <errno.h>

#define NJOBS 6

static char base[NJOBS][65];

static void baseline(void)
{
    rt_batch b;
    rt_baseline(&b, NJOBS, base);
}

static const char *const w2_args_fmt[] = {"run", NULL, "--workers", "2", "--threads", "2", NULL};

static void args_for(const rt_batch *b, const char **args)
{
    for (int i = 0; i < 7; i++) args[i] = w2_args_fmt[i];
    args[1] = b->manifest;
}

/* The rerun finishes whatever is left; then every job is done exactly once with the baseline's bytes. */
static void check_finished_like_baseline(const rt_batch *b)
{
    CHECK(rt_each_done_once(b));
    char h[NJOBS][65];
    rt_hashes(b, h);
    for (int i = 0; i < NJOBS; i++) CHECKF(!strcmp(h[i], base[i]), "%s differs from the --workers 1 run", b->ids[i]);
    CHECK(rt_temp_files(b) == 0);
}

/* Waits (up to 60 s) until n jobs are running; returns 1 when they are. */
static int wait_running(const rt_batch *b, int n)
{
    for (int t = 0; t < 1200; t++) {
        usleep(50 * 1000);
        if (sdb_file_exists(b->db) && rt_sql(b->db, "SELECT count(*) FROM sqlite_master WHERE name='jobs'") == 1 &&
            rt_sql(b->db, "SELECT count(*) FROM jobs WHERE state='running'") >= n) return 1;
    }
    return 0;
}

/* pid is gone (or a zombie nobody reaps: it runs nothing any more). */
static int process_gone(long pid)
{
    if (kill((pid_t)pid, 0) != 0 && errno == ESRCH) return 1;
    char p[64], buf[512] = "";
    snprintf(p, sizeof p, "/proc/%ld/stat", pid);
    FILE *f = fopen(p, "r");
    if (!f) return 1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *rp = strrchr(buf, ')');
    return rp && (rp[2] == 'Z' || rp[2] == 'X');
}

static void two_workers(void)
{
    rt_batch b;
    rt_make(&b, NJOBS, NULL);
    const char *args[7];
    args_for(&b, args);
    pid_t pid = rt_spawn(&b, NULL, args, NULL);
    int st = rt_wait(pid);
    CHECKF(rt_exit_code(st) == 0, "exit %d", rt_exit_code(st));
    char *err = rt_slurp(&b, "last.err");
    CHECKF(strstr(err, "2 worker processes, 2 thread(s) in all (1 each)") != NULL, "%s", err);
    free(err);
    if (rt_exit_code(st)) rt_show(&b, NULL);
    check_finished_like_baseline(&b);
    long long workers = rt_sql(b.db, "SELECT count(DISTINCT pid) FROM runs WHERE outcome='done'");
    long long by_parent = rt_sql(b.db, "SELECT count(*) FROM runs WHERE pid=%ld", (long)pid);
    fprintf(stderr, "    the jobs were done by %lld worker processes (%lld by the parent)\n", workers, by_parent);
    CHECK(workers == 2);
    CHECK(by_parent == 0);
    CHECK(rt_sql(b.db, "SELECT count(*) FROM runs") == NJOBS);
    json_t *doc = rt_status_json(&b, NULL);
    if (doc) {
        CHECK(rt_jint(doc, "done") == NJOBS && rt_jint(doc, "running") == 0 && rt_jint(doc, "pending") == 0);
        json_decref(doc);
    }
    /* a rerun has nothing left to do */
    st = rt_run(&b, NULL, args);
    CHECK(rt_exit_code(st) == 0);
    CHECK(rt_sql(b.db, "SELECT count(*) FROM runs") == NJOBS);
}

/* Starts `run --workers 2` on a fresh batch b (outputs in victim.out/.err) and returns its pid once
 * both workers run a job. */
static pid_t start_victim(rt_batch *b, const char **args)
{
    rt_make(b, NJOBS, NULL);
    args_for(b, args);
    pid_t pid = rt_spawn(b, NULL, args, "victim");
    CHECK(wait_running(b, 2));
    return pid;
}

/* The parent gets `sig` while both workers run a job. */
static void parent_signalled(int sig)
{
    rt_batch b;
    const char *args[7];
    pid_t pid = start_victim(&b, args);
    kill(pid, sig);
    int st = rt_wait(pid);
    fprintf(stderr, "    parent got signal %d: exit %d\n", sig, rt_exit_code(st));
    if (sig == SIGTERM) {
        CHECKF(rt_exit_code(st) == 143, "exit %d", rt_exit_code(st));
        char *out = rt_slurp(&b, "victim.out");
        CHECKF(strstr(out, "interrupted job") != NULL, "%s", out);
        free(out);
    }
    /* the workers stop at their next step and put their jobs back (after SIGKILL of the parent,
       by their parent-death signal): nothing stays running, no worker lives on */
    int settled = 0;
    for (int t = 0; t < 1200 && !settled; t++) {
        settled = rt_sql(b.db, "SELECT count(*) FROM jobs WHERE state='running'") == 0 &&
                  rt_sql(b.db, "SELECT count(*) FROM runs WHERE outcome IS NULL") == 0;
        if (!settled) usleep(50 * 1000);
    }
    CHECK(settled);
    long long interrupted = rt_sql(b.db, "SELECT count(*) FROM runs WHERE outcome='interrupted'");
    fprintf(stderr, "    %lld job(s) released by the workers\n", interrupted);
    CHECK(interrupted == 2);
    CHECK(rt_sql(b.db, "SELECT count(*) FROM jobs WHERE state='done'") < NJOBS);
    long long wpid[4] = {0};
    for (int k = 0; k < 2; k++)
        wpid[k] = rt_sql(b.db, "SELECT pid FROM runs WHERE outcome='interrupted' ORDER BY run LIMIT 1 OFFSET %d", k);
    for (int k = 0; k < 2; k++) {
        int gone = 0;
        for (int t = 0; t < 200 && !gone; t++) { gone = process_gone((long)wpid[k]); if (!gone) usleep(50 * 1000); }
        CHECKF(gone, "worker %lld still runs", wpid[k]);
    }
    st = rt_run(&b, NULL, args);
    CHECKF(rt_exit_code(st) == 0, "rerun exit %d", rt_exit_code(st));
    check_finished_like_baseline(&b);
}

static void sigterm_to_parent(void) { parent_signalled(SIGTERM); }
static void sigkill_of_parent(void) { parent_signalled(SIGKILL); }

static void sigkill_of_one_worker(void)
{
    rt_batch b;
    const char *args[7];
    pid_t pid = start_victim(&b, args);
    long long w = rt_sql(b.db, "SELECT pid FROM jobs WHERE state='running' ORDER BY id LIMIT 1");
    CHECK(w > 0 && w != pid);
    kill((pid_t)w, SIGKILL);
    int st = rt_wait(pid);
    char *err = rt_slurp(&b, "victim.err");
    fprintf(stderr, "    worker %lld killed: the run exits %d\n", w, rt_exit_code(st));
    CHECKF(strstr(err, "was killed by signal 9") != NULL, "%s", err);
    /* the other worker takes the dead one's job over (exit 0), or the parent puts it back and
       says so (exit 1); either way nothing stays running */
    CHECKF(rt_exit_code(st) == 0 || (rt_exit_code(st) == 1 && strstr(err, "run again to finish them")), "exit %d: %s",
           rt_exit_code(st), err);
    free(err);
    CHECK(rt_sql(b.db, "SELECT count(*) FROM jobs WHERE state='running'") == 0);
    CHECK(rt_sql(b.db, "SELECT count(*) FROM runs WHERE outcome='orphaned' AND pid=%lld", w) == 1);
    st = rt_run(&b, NULL, args);
    CHECKF(rt_exit_code(st) == 0, "rerun exit %d", rt_exit_code(st));
    check_finished_like_baseline(&b);
}

int main(void)
{
    RUN(baseline);
    RUN(two_workers);
    RUN(sigterm_to_parent);
    RUN(sigkill_of_parent);
    RUN(sigkill_of_one_worker);
    return sdb_t_done();
}
