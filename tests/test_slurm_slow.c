/*
 * test_slurm_slow.c — sdbatch on a REAL one-node Slurm cluster (Debian slurm-wlm + munge),
 * started by this test (tests/slurm/cluster.sh -> shared/tools/local-slurm.sh) and stopped by pid
 * at the end, on failure, on SIGINT/SIGTERM and on an internal time limit.
 *
 *   array:    a manifest of 16 tiny-model jobs run as `sbatch --array=0-3 --wait` with
 *             tools/slurm/sdbatch-array.sbatch: every job done exactly once across the four
 *             state.<I>-of-4.db, outputs byte-equal to a single-process run's, `status --shards
 *             --json` shows 4 shards complete (validated against schemas/status.schema.json).
 *   disrupt:  the same batch again, disturbed while it runs: task 0 requeued mid-job with
 *             `scontrol requeue`, task 1 cancelled mid-job with `scancel`, the running tasks then
 *             preempted by a job in the higher-priority partition (PreemptMode=REQUEUE); the
 *             cancelled shard is reported by `status --shards` and resubmitted alone with
 *             `sbatch --array=1 --export=ALL,SDB_SHARDS=4`; task 3 gets USR1 as from --signal=B:USR1@120
 *             (`scancel --batch --signal=USR1`): sdbatch exits 138 at a step boundary and the
 *             template requeues the task. In the end every job is done exactly
 *             once, the outputs equal the single-process run's, the requeued task resumed with
 *             SLURM_RESTART_COUNT set, and the interrupted jobs were put back (runs 'interrupted').
 *   reshard:  (no cluster) shards 0 and 2 of 4, then all of 3 shards: only the undone half runs.
 * Needs root (the daemons run as root). Takes about 2 minutes on 2 CPUs.
 */
#include "test_run_common.h"

#include <errno.h>
#include <time.h>

#define NJOBS 16
#define STEPS 20

static char cluster_dir[512];
static int cluster_up;
static char base_hash[NJOBS][65];
static pid_t children[16];   /* sbatch processes of ours still running (own process groups) */
static int n_children;

static void children_kill(void)
{
    for (int i = 0; i < n_children; i++)
        if (children[i] > 0 && kill(-children[i], SIGTERM) == 0) fprintf(stderr, "    stopped leftover sbatch (pid %d)\n", (int)children[i]);
    n_children = 0;
}

static void child_forget(pid_t pid)
{
    for (int i = 0; i < n_children; i++) if (children[i] == pid) children[i] = 0;
}

/* sh -c CMD in its own process group, remembered until waited for */
static pid_t spawn_sh(const char *cmd)
{
    pid_t pid = fork();
    if (pid == 0) {
        setpgid(0, 0);
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    if (pid > 0) {
        setpgid(pid, pid);
        if (n_children < 16) children[n_children++] = pid;
    }
    return pid;
}

/* waitpid with a time limit: the exit code, or -1 after killing it on timeout */
static int wait_child(pid_t pid, double secs)
{
    double t0 = sdb_now_mono();
    int st;
    for (;;) {
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid) { child_forget(pid); return rt_exit_code(st); }
        if (r < 0 && errno != EINTR) { child_forget(pid); return -1; }
        if (sdb_now_mono() - t0 > secs) break;
        usleep(100 * 1000);
    }
    kill(-pid, SIGTERM);
    waitpid(pid, &st, 0);
    child_forget(pid);
    return -1;
}

/* ---- the cluster ------------------------------------------------------------------------------ */

static void diagnose(void);

static void cluster_stop(void)
{
    children_kill();
    if (!cluster_up) return;
    cluster_up = 0;
    char cmd[1400];
    snprintf(cmd, sizeof cmd, "SDB_TEST_DATA='%s' bash '%s/tests/slurm/cluster.sh' stop '%s' >&2",
             sdb_t_data() ? sdb_t_data() : "", SDB_SOURCE_DIR, cluster_dir);
    if (system(cmd) != 0) fprintf(stderr, "    cluster stop reported an error\n");
}

static void on_fatal(int sig)
{
    /* stop the daemons, then die of the signal (SIGALRM = our own time limit) */
    if (sig == SIGALRM) fprintf(stderr, "test_slurm_slow: time limit reached, stopping the cluster\n");
    cluster_stop();
    signal(sig, SIG_DFL);
    raise(sig == SIGALRM ? SIGTERM : sig);
}

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
}

/* First line of a command's stdout (static buffer). */
static const char *sh_out(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static const char *sh_out(const char *fmt, ...)
{
    static char buf[4096];
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    buf[0] = '\0';
    FILE *p = popen(cmd, "r");
    if (!p) return buf;
    if (!fgets(buf, sizeof buf, p)) buf[0] = '\0';
    char rest[256];
    while (fgets(rest, sizeof rest, p)) {}
    pclose(p);
    buf[strcspn(buf, "\n")] = '\0';
    return buf;
}

static void cluster_start(void)
{
    if (!sdb_t_data()) return;
    snprintf(cluster_dir, sizeof cluster_dir, "%s/cluster", sdb_t_tmpdir());
    atexit(cluster_stop);
    signal(SIGINT, on_fatal);
    signal(SIGTERM, on_fatal);
    signal(SIGALRM, on_fatal);
    alarm(900);   /* under ctest's limit (1500 s): the daemons are stopped even if something hangs */
    cluster_up = 1;   /* from here on, stop it whatever happens */
    double t0 = sdb_now_mono();
    int rc = sh("SDB_TEST_DATA='%s' bash '%s/tests/slurm/cluster.sh' start '%s' >/dev/null", sdb_t_data(), SDB_SOURCE_DIR,
                cluster_dir);
    CHECKF(rc == 0, "the Slurm test cluster did not start (exit %d; needs root and slurm-wlm + munge: "
                    "tools/install-deps.sh)", rc);
    if (rc) return;
    char conf[700];
    snprintf(conf, sizeof conf, "%s/etc/slurm.conf", cluster_dir);
    setenv("SLURM_CONF", conf, 1);
    fprintf(stderr, "    cluster up in %.1f s (%s)\n", sdb_now_mono() - t0, sh_out("sinfo -h -o '%%N %%c CPUs %%T'"));
}

/* ---- the batch -------------------------------------------------------------------------------- */

static void make_batch(rt_batch *b, const char *name)
{
    char d[600];
    snprintf(d, sizeof d, "%s/%s", sdb_t_tmpdir(), name);
    sdb_err err;
    sdb_mkdirs(d, &err);
    rt_make(b, NJOBS, d);
    /* more steps than rt_make's 3, so a job lasts long enough to be interrupted mid-way */
    char *text = NULL, *nt = NULL;
    size_t len = 0;
    if (sdb_read_file(b->manifest, &text, &len, &err) == 0) {
        char *at = strstr(text, "  steps: 3\n");
        CHECK(at != NULL);
        if (at && asprintf(&nt, "%.*s  steps: %d\n%s", (int)(at - text), text, STEPS, at + strlen("  steps: 3\n")) > 0) {
            CHECK_OK(sdb_write_file_atomic(b->manifest, nt, strlen(nt), &err), &err);
            free(nt);
        }
        free(text);
    }
}

static void shard_db(const rt_batch *b, int i, char *out, size_t n)
{
    snprintf(out, n, "%s/.sdbatch/state.%d-of-4.db", b->out, i);
}

/* Every job: exactly one 'done' run over all four shard files, its row done in exactly one file,
 * no run left open anywhere. */
static int done_once_across_shards(const rt_batch *b)
{
    int ok = 1;
    for (int j = 0; j < b->n_jobs; j++) {
        long long runs = 0, rows = 0;
        for (int i = 0; i < 4; i++) {
            char db[800];
            shard_db(b, i, db, sizeof db);
            if (!sdb_file_exists(db)) continue;
            runs += rt_sql(db, "SELECT count(*) FROM runs WHERE job_id='%s' AND outcome='done'", b->ids[j]);
            rows += rt_sql(db, "SELECT count(*) FROM jobs WHERE id='%s' AND state='done'", b->ids[j]);
        }
        if (runs != 1 || rows != 1) {
            fprintf(stderr, "    %s: %lld done run(s), done in %lld state file(s)\n", b->ids[j], runs, rows);
            ok = 0;
        }
    }
    for (int i = 0; i < 4; i++) {
        char db[800];
        shard_db(b, i, db, sizeof db);
        if (!sdb_file_exists(db)) { fprintf(stderr, "    %s missing\n", db); ok = 0; continue; }
        long long open_runs = rt_sql(db, "SELECT count(*) FROM runs WHERE outcome IS NULL");
        if (open_runs != 0) { fprintf(stderr, "    %s: %lld run(s) still open\n", db, open_runs); ok = 0; }
    }
    return ok;
}

static void same_as_baseline(const rt_batch *b)
{
    char h[NJOBS][65];
    rt_hashes(b, h);
    for (int j = 0; j < NJOBS; j++)
        CHECKF(h[j][0] && !strcmp(h[j], base_hash[j]), "%s differs from the single-process run (%s vs %s)", b->ids[j], h[j],
               base_hash[j]);
    CHECK(rt_temp_files(b) == 0);
}

static int shards_complete(const json_t *doc)
{
    const json_t *arr = json_object_get(doc, "shards");
    int n = 0;
    size_t i;
    const json_t *x;
    json_array_foreach(arr, i, x)
        if (json_integer_value(json_object_get(x, "of")) == 4 && !strcmp(json_string_value(json_object_get(x, "state")), "complete"))
            n++;
    return n;
}

static const char *shard_state(const json_t *doc, int shard)
{
    const json_t *arr = json_object_get(doc, "shards");
    size_t i;
    const json_t *x;
    json_array_foreach(arr, i, x)
        if (json_integer_value(json_object_get(x, "of")) == 4 && json_integer_value(json_object_get(x, "shard")) == shard)
            return json_string_value(json_object_get(x, "state"));
    return "?";
}

/* sbatch of the array template in the batch folder; opts: more sbatch options, exports: more
 * variables for the tasks (",K=V..." or ""). */
static pid_t sbatch_spawn(const rt_batch *b, const char *opts, const char *exports, int wait, const char *tag)
{
    char cmd[4096];
    snprintf(cmd, sizeof cmd,
             "cd '%s' && exec sbatch %s --parsable -c 1 -D '%s' -o '%s/slurm-%%A_%%a.out' "
             "--export=ALL,SDBATCH='%s',OMP_NUM_THREADS=1%s %s '%s/tools/slurm/sdbatch-array.sbatch' '%s' "
             ">'%s/%s.jobid' 2>'%s/%s.sbatch.err'",
             b->dir, wait ? "--wait" : "", b->dir, b->dir, sdb_t_binary(), exports, opts, SDB_SOURCE_DIR, b->manifest,
             b->dir, tag, b->dir, tag);
    return spawn_sh(cmd);
}

static int jobid_of(const rt_batch *b, const char *tag)
{
    char name[64];
    snprintf(name, sizeof name, "%s.jobid", tag);
    for (int t = 0; t < 100; t++) {
        char *s = rt_slurp(b, name);
        int id = atoi(s);
        free(s);
        if (id > 0) return id;
        usleep(100 * 1000);
    }
    return -1;
}

/* what the cluster thinks, when something does not happen */
static void diagnose(void)
{
    if (!cluster_up) return;
    sh("{ echo '    --- squeue -r'; squeue -r -o '%%.10i %%.9P %%.10T %%.4C %%.12r %%R'; echo '    --- sinfo -R'; sinfo -R; "
       "sinfo -N -o '%%N %%T %%C'; echo '    --- slurmctld.log (last 25)'; tail -n 25 '%s/log/slurmctld.log'; } 2>&1 | sed 's/^/    /' >&2",
       cluster_dir);
}

static void show_logs(const rt_batch *b)
{
    sh("for f in '%s'/slurm-*.out '%s'/*.sbatch.err; do [ -s \"$f\" ] && { echo \"    --- $f\"; sed 's/^/    /' \"$f\"; }; done >&2",
       b->dir, b->dir);
}

/* waits (polling, at most `secs`) until cond() holds; returns 1 if it did */
typedef int (*cond_fn)(const rt_batch *b, int arg);
static int wait_for(const rt_batch *b, cond_fn cond, int arg, double secs)
{
    double t0 = sdb_now_mono();
    while (sdb_now_mono() - t0 < secs) {
        if (cond(b, arg)) return 1;
        usleep(100 * 1000);
    }
    return cond(b, arg);
}

/* shard i is in the middle of a job (after at least `arg` done ones) */
static int mid_job(const rt_batch *b, int i_and_done)
{
    int i = i_and_done % 10, done = i_and_done / 10;
    char db[800];
    shard_db(b, i, db, sizeof db);
    if (!sdb_file_exists(db) || rt_sql(db, "SELECT count(*) FROM sqlite_master WHERE name='jobs'") != 1) return 0;
    /* a job claimed less than 0.7 s ago (one takes ~2 s): a signal sent now lands mid-job */
    return rt_sql(db, "SELECT count(*) FROM jobs WHERE state='running' AND "
                      "started_at > (julianday('now') - 2440587.5) * 86400.0 - 0.7") > 0 &&
           rt_sql(db, "SELECT count(*) FROM jobs WHERE state='done'") >= done;
}

/* task (arg % 10) of array (arg / 10) has stopped on USR1 and asked to be requeued */
static int log_says(const rt_batch *b, int arg)
{
    char name[64];
    snprintf(name, sizeof name, "slurm-%d_%d.out", arg / 10, arg % 10);
    char *log = rt_slurp(b, name);
    int yes = strstr(log, "requeueing") != NULL;
    free(log);
    return yes;
}

static int array_gone(const rt_batch *b, int jid)
{
    return sh_out("squeue -h -r -j %d -o %%i 2>/dev/null", jid)[0] == '\0';
}

/* ---- tests ------------------------------------------------------------------------------------ */

static void baseline(void)
{
    rt_batch b;
    make_batch(&b, "baseline");
    const char *env[] = {"OMP_NUM_THREADS=1", NULL};
    const char *args[] = {"run", b.manifest, "--threads", "1", NULL};
    double t0 = sdb_now_mono();
    int st = rt_run(&b, env, args);
    CHECKF(rt_exit_code(st) == 0, "exit %d", rt_exit_code(st));
    if (rt_exit_code(st)) rt_show(&b, NULL);
    rt_hashes(&b, base_hash);
    for (int j = 0; j < NJOBS; j++) CHECKF(base_hash[j][0], "%s: no output", b.ids[j]);
    fprintf(stderr, "    single process: %d jobs in %.1f s\n", NJOBS, sdb_now_mono() - t0);
}

/* Changing N between runs never redoes finished work: shards 0 and 2 of 4 run (as plain
 * processes, `--shard I/4`), then the whole manifest as 3 shards; then `--shard auto` with
 * SDB_SHARDS outside any array is refused, and an unknown --shard value is a usage error. */
static void reshard(void)
{
    rt_batch b;
    make_batch(&b, "reshard");
    const char *env[] = {"OMP_NUM_THREADS=1", NULL};
    for (int i = 0; i < 4; i += 2) {
        char sh_arg[16];
        snprintf(sh_arg, sizeof sh_arg, "%d/4", i);
        const char *args[] = {"run", b.manifest, "--shard", sh_arg, NULL};
        int st = rt_run(&b, env, args);
        CHECKF(rt_exit_code(st) == 0, "shard %s: exit %d", sh_arg, rt_exit_code(st));
    }
    json_t *doc = rt_status_json(&b, "--shards");
    if (doc) {
        CHECKF(rt_jint(doc, "done") == NJOBS / 2, "after shards 0 and 2 of 4: %lld done", rt_jint(doc, "done"));
        CHECK(shards_complete(doc) == 2);
        json_decref(doc);
    }
    int ran3 = 0;
    for (int i = 0; i < 3; i++) {
        char sh_arg[16];
        snprintf(sh_arg, sizeof sh_arg, "%d/3", i);
        const char *args[] = {"run", b.manifest, "--shard", sh_arg, NULL};
        int st = rt_run(&b, env, args);
        CHECKF(rt_exit_code(st) == 0, "shard %s: exit %d", sh_arg, rt_exit_code(st));
        if (rt_exit_code(st)) rt_show(&b, NULL);
        char db[800];
        snprintf(db, sizeof db, "%s/.sdbatch/state.%d-of-3.db", b.out, i);
        ran3 += (int)rt_sql(db, "SELECT count(*) FROM runs WHERE outcome='done'");
    }
    CHECKF(ran3 == NJOBS / 2, "the 3 new shards ran %d jobs, want only the %d not done yet", ran3, NJOBS / 2);
    /* every job done exactly once over all seven state files */
    for (int j = 0; j < NJOBS; j++) {
        long long runs = 0;
        for (int n = 3; n <= 4; n++)
            for (int i = 0; i < n; i++) {
                char db[800];
                snprintf(db, sizeof db, "%s/.sdbatch/state.%d-of-%d.db", b.out, i, n);
                if (sdb_file_exists(db)) runs += rt_sql(db, "SELECT count(*) FROM runs WHERE job_id='%s' AND outcome='done'", b.ids[j]);
            }
        CHECKF(runs == 1, "%s done %lld times", b.ids[j], runs);
    }
    same_as_baseline(&b);
    doc = rt_status_json(&b, "--shards");
    if (doc) {
        CHECK(rt_jint(doc, "done") == NJOBS);
        json_decref(doc);
    }
    const char *bad[] = {"run", b.manifest, "--shard", "3/3", NULL};
    CHECK(rt_exit_code(rt_run(&b, env, bad)) == 2);
    const char *env2[] = {"OMP_NUM_THREADS=1", "SLURM_ARRAY_TASK_ID=1", "SLURM_ARRAY_TASK_MIN=1", "SLURM_ARRAY_TASK_MAX=3",
                          "SLURM_ARRAY_TASK_STEP=1", "SLURM_ARRAY_TASK_COUNT=2", NULL};
    const char *args2[] = {"run", b.manifest, NULL};
    CHECK(rt_exit_code(rt_run(&b, env2, args2)) == 2);   /* --array=1,3 without SDB_SHARDS */
    char *err = rt_slurp(&b, "last.err");
    CHECKF(strstr(err, "SDB_SHARDS") != NULL, "stderr: %s", err);
    free(err);
}

/* What `sdbatch status MANIFEST --shards` prints for people (malloc'd). */
static char *status_shards_text(const rt_batch *b)
{
    const char *args[] = {"status", b->manifest, "--shards", NULL};
    rt_wait(rt_spawn(b, NULL, args, "status-text"));
    return rt_slurp(b, "status-text.out");
}

static void array(void)
{
    if (!getenv("SLURM_CONF")) { CHECK(0); return; }
    rt_batch b;
    make_batch(&b, "array");
    double t0 = sdb_now_mono();
    int st = wait_child(sbatch_spawn(&b, "--array=0-3", "", 1, "array"), 120);
    fprintf(stderr, "    sbatch --array=0-3 --wait: exit %d after %.1f s\n", st, sdb_now_mono() - t0);
    CHECKF(st == 0, "sbatch --wait exit %d (-1: timed out)", st);
    if (st) diagnose();
    CHECK(done_once_across_shards(&b));
    same_as_baseline(&b);
    /* each task ran its own shard, and only its share of the jobs */
    for (int i = 0; i < 4; i++) {
        char db[800];
        shard_db(&b, i, db, sizeof db);
        long long n = rt_sql(db, "SELECT count(*) FROM jobs");
        CHECKF(n == NJOBS / 4, "shard %d holds %lld jobs, want %d", i, n, NJOBS / 4);
    }
    int jid = jobid_of(&b, "array");
    for (int i = 0; i < 4; i++) {
        char name[64], want[32];
        snprintf(name, sizeof name, "slurm-%d_%d.out", jid, i);
        snprintf(want, sizeof want, "shard %d/4", i);
        char *log = rt_slurp(&b, name);
        CHECKF(strstr(log, want) != NULL, "%s does not say '%s'", name, want);
        free(log);
    }
    json_t *doc = rt_status_json(&b, "--shards");
    if (doc) {
        CHECKF(rt_jint(doc, "done") == NJOBS, "status: %lld done", rt_jint(doc, "done"));
        CHECKF(shards_complete(doc) == 4, "status: %d of 4 shards complete", shards_complete(doc));
        CHECK(json_array_size(json_object_get(doc, "shards_to_resubmit")) == 0);
        json_decref(doc);
    }
    char *txt = status_shards_text(&b);
    CHECKF(strstr(txt, "shards: 4 of 4 complete") != NULL, "status --shards says:\n%s", txt);
    free(txt);
    if (sdb_t_checks_failed) show_logs(&b);
}

static void disrupt(void)
{
    if (!getenv("SLURM_CONF")) { CHECK(0); return; }
    rt_batch b;
    make_batch(&b, "disrupt");
    double t0 = sdb_now_mono();
    pid_t waiter = sbatch_spawn(&b, "--array=0-3 --requeue -p debug", "", 1, "disrupt");
    int jid = jobid_of(&b, "disrupt");
    CHECKF(jid > 0, "no job id from sbatch");
    if (jid <= 0) { wait_child(waiter, 0); return; }

    int ok, victim = -1;
    /* 1. task 0 requeued in the middle of its second job */
    if (!(ok = wait_for(&b, mid_job, 10 + 0, 60))) { CHECKF(0, "shard 0 never got mid-job"); goto bail; }
    CHECK(sh("scontrol requeue %d_0", jid) == 0);
    fprintf(stderr, "    %.1f s: requeued task %d_0 mid-job\n", sdb_now_mono() - t0, jid);

    /* 2. task 1 cancelled in the middle of a job */
    if (!(ok = wait_for(&b, mid_job, 1, 60))) { CHECKF(0, "shard 1 never got mid-job"); goto bail; }
    CHECK(sh("scancel %d_1", jid) == 0);
    fprintf(stderr, "    %.1f s: cancelled task %d_1 mid-job\n", sdb_now_mono() - t0, jid);

    /* 3. the time-limit path: USR1 to task 3's batch shell (what --signal=B:USR1@120 sends); the
          template passes it on, sdbatch puts its job back and exits 138, the task requeues itself */
    if (!(ok = wait_for(&b, mid_job, 3, 60))) { CHECKF(0, "shard 3 never got mid-job"); goto bail; }
    CHECK(sh("scancel --batch --signal=USR1 %d_3", jid) == 0);
    fprintf(stderr, "    %.1f s: USR1 to task %d_3 mid-job\n", sdb_now_mono() - t0, jid);
    /* (wait for it, so the preemption below cannot get there first) */
    if (!(ok = wait_for(&b, log_says, jid * 10 + 3, 30))) { CHECKF(0, "task 3 did not stop on USR1"); goto bail; }

    /* 4. preemption: as soon as a task works (2, or 0 / 3 back from their requeue), a job in the
          'high' partition asking for every CPU of the node takes it */
    {
        double tw = sdb_now_mono();
        while (victim < 0 && sdb_now_mono() - tw < 60) {
            static const int order[3] = {2, 0, 3};
            for (int k = 0; k < 3 && victim < 0; k++) if (mid_job(&b, order[k])) victim = order[k];
            if (victim < 0) usleep(100 * 1000);
        }
    }
    if (victim < 0) { CHECKF(0, "no task got mid-job to be preempted"); goto bail; }
    int hst = wait_child(spawn_sh("exec sbatch --wait -p high -c \"$(sinfo -h -o %c | head -n1)\" -o /dev/null "
                                  "--wrap 'sleep 1' >/dev/null"), 90);
    CHECKF(hst == 0, "high-priority job: exit %d (-1: timed out)", hst);
    if (hst) goto bail;
    fprintf(stderr, "    %.1f s: a 'high' partition job preempted the running tasks (shard %d mid-job) and finished\n",
            sdb_now_mono() - t0, victim);

    /* 5. the array ends (the requeued and preempted tasks resume; task 1 stays cancelled) */
    int st = wait_child(waiter, 150);
    waiter = 0;
    fprintf(stderr, "    %.1f s: sbatch --wait returned %d\n", sdb_now_mono() - t0, st);
    /* and no task of it is left in the queue (a requeued task waits there for its BeginTime) */
    if (!(ok = wait_for(&b, array_gone, jid, 60))) { CHECKF(0, "array %d still in the queue", jid); goto bail; }
    json_t *doc = rt_status_json(&b, "--shards");
    if (doc) {
        CHECKF(!strcmp(shard_state(doc, 1), "stopped"), "shard 1 is '%s', want stopped", shard_state(doc, 1));
        CHECKF(rt_jint(doc, "done") < NJOBS, "every job done although shard 1 was cancelled mid-way");
        const json_t *rs = json_object_get(doc, "shards_to_resubmit");
        CHECKF(json_array_size(rs) == 1 && json_integer_value(json_object_get(json_array_get(rs, 0), "shard")) == 1,
               "shards_to_resubmit is not [shard 1]");
        json_decref(doc);
    }
    char *txt = status_shards_text(&b);
    CHECKF(strstr(txt, "sbatch --array=1 --export=ALL,SDB_SHARDS=4") != NULL, "status --shards says:\n%s", txt);
    free(txt);

    /* 6. resubmit only the unfinished shard, as status says */
    st = wait_child(sbatch_spawn(&b, "--array=1", ",SDB_SHARDS=4", 1, "resubmit"), 90);
    fprintf(stderr, "    %.1f s: resubmitted shard 1: exit %d\n", sdb_now_mono() - t0, st);
    CHECKF(st == 0, "resubmission exit %d (-1: timed out)", st);

    /* every job exactly once, outputs as the single process made them */
    CHECK(done_once_across_shards(&b));
    same_as_baseline(&b);
    doc = rt_status_json(&b, "--shards");
    if (doc) {
        CHECKF(shards_complete(doc) == 4, "status: %d of 4 shards complete", shards_complete(doc));
        CHECK(rt_jint(doc, "done") == NJOBS);
        json_decref(doc);
    }
    /* the disruptions really happened mid-job and were undone cleanly */
    long long put_back[4];
    for (int i = 0; i < 4; i++) {
        char db[800];
        shard_db(&b, i, db, sizeof db);
        put_back[i] = rt_sql(db, "SELECT count(*) FROM runs WHERE outcome IN ('interrupted','orphaned')");
    }
    fprintf(stderr, "    interrupted runs put back to pending, per shard: %lld %lld %lld %lld\n", put_back[0], put_back[1],
            put_back[2], put_back[3]);
    /* requeued, cancelled, USR1'd, preempted: each mid-job */
    CHECK(put_back[0] >= 1 && put_back[1] >= 1 && put_back[3] >= 1);
    CHECK(put_back[0] + put_back[1] + put_back[2] + put_back[3] >= 4);
    for (int i = 0; i < 4; i++) {   /* tasks 0 (scontrol requeue), 3 (USR1) and the preempted one ran again */
        if (i == 1 || (i == 2 && victim != 2)) continue;
        char name[64];
        snprintf(name, sizeof name, "slurm-%d_%d.out", jid, i);
        char *log = rt_slurp(&b, name);
        CHECKF(strstr(log, "restart 1") != NULL, "task %d did not run again with SLURM_RESTART_COUNT=1:\n%s", i, log);
        free(log);
    }
    int preempted = atoi(sh_out("grep -c 'JobState=PREEMPTED' '%s/log/jobcomp.txt'", cluster_dir));
    CHECKF(preempted >= 1, "Slurm recorded no preemption");
    char name3[64];
    snprintf(name3, sizeof name3, "slurm-%d_3.out", jid);
    char *log3 = rt_slurp(&b, name3);
    CHECKF(strstr(log3, "sdbatch exited 138") && strstr(log3, "requeueing"), "task 3 after USR1:\n%s", log3);
    free(log3);
    if (sdb_t_checks_failed) show_logs(&b);
    return;
bail:
    diagnose();
    show_logs(&b);
    if (waiter > 0) wait_child(waiter, 0);
    sh("scancel %d 2>/dev/null", jid);
}

int main(void)
{
    (void)rt_each_done_once;   /* shared helpers this test does not need */
    cluster_start();
    RUN(baseline);
    RUN(reshard);
    RUN(array);
    RUN(disrupt);
    cluster_stop();
    return sdb_t_done();
}
