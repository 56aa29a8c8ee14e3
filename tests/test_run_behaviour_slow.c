/*
 * test_run_behaviour_slow.c — `sdbatch validate/run/status` as a user meets them (real binary,
 * tiny model): editing one job's prompt re-runs that job only; bad jobs (missing mask,
 * undecodable image) fail alone with their reason while the rest finish (exit 3), retries and
 * --retry-failed; SIGINT/SIGTERM stop at a step boundary, return the job to pending and exit
 * 130/143; --only, --dry-run; a bad manifest exits 2 before anything runs; status --json is
 * validated against schemas/status.schema.json.
 */
#include "test_run_common.h"

#include <poll.h>
#include <pty.h>

static void append(const rt_batch *b, const char *text)
{
    char *s;
    size_t n;
    sdb_err err;
    if (sdb_read_file(b->manifest, &s, &n, &err)) { CHECK(0); return; }
    char *t;
    if (asprintf(&t, "%s%s", s, text) < 0) { free(s); return; }
    CHECK_OK(sdb_write_file_atomic(b->manifest, t, strlen(t), &err), &err);
    free(s);
    free(t);
}

static void replace(const rt_batch *b, const char *from, const char *to)
{
    char *s;
    size_t n;
    sdb_err err;
    if (sdb_read_file(b->manifest, &s, &n, &err)) { CHECK(0); return; }
    char *at = strstr(s, from);
    CHECK(at != NULL);
    if (at) {
        char *t;
        if (asprintf(&t, "%.*s%s%s", (int)(at - s), s, to, at + strlen(from)) >= 0) {
            CHECK_OK(sdb_write_file_atomic(b->manifest, t, strlen(t), &err), &err);
            free(t);
        }
    }
    free(s);
}

static void edit_reruns_one(void)
{
    rt_batch b;
    rt_make(&b, 4, NULL);
    const char *args[] = {"run", b.manifest, NULL};
    CHECK(rt_exit_code(rt_run(&b, NULL, args)) == 0);
    char h1[4][65], h2[4][65];
    rt_hashes(&b, h1);
    replace(&b, "a castle, variant 2", "a castle at dawn, variant 2");   /* job02's prompt */
    CHECK(rt_exit_code(rt_run(&b, NULL, args)) == 0);
    char *out = rt_slurp(&b, "last.out");
    CHECKF(strstr(out, "done job02") && !strstr(out, "done job00") && !strstr(out, "done job01") && !strstr(out, "done job03"),
           "second run printed:\n%s", out);
    CHECK(strstr(out, "(1 run now"));
    free(out);
    rt_hashes(&b, h2);
    CHECK(!strcmp(h1[0], h2[0]) && !strcmp(h1[1], h2[1]) && !strcmp(h1[3], h2[3]));
    CHECK(strcmp(h1[2], h2[2]));
    CHECK(rt_sql(b.db, "SELECT count(*) FROM runs WHERE job_id='job02' AND outcome='done'") == 2);
    CHECK(rt_sql(b.db, "SELECT count(*) FROM runs WHERE job_id='job00' AND outcome='done'") == 1);
    /* editing it back redoes it again (the identity changed again), giving the first bytes */
    replace(&b, "a castle at dawn, variant 2", "a castle, variant 2");
    CHECK(rt_exit_code(rt_run(&b, NULL, args)) == 0);
    rt_hashes(&b, h2);
    CHECK(!strcmp(h1[2], h2[2]));
    /* a deleted output is redone */
    char p[800];
    snprintf(p, sizeof p, "%s/job01.png", b.out);
    unlink(p);
    CHECK(rt_exit_code(rt_run(&b, NULL, args)) == 0);
    rt_hashes(&b, h2);
    CHECK(!strcmp(h1[1], h2[1]));
}

/* --weights f16 on an F32 model rounds its matrices: another model identity, so every job is redone
 * once, and then stays done under the same mode; a bad mode is a usage error. */
static void weights_f16_redoes_then_keeps(void)
{
    rt_batch b;
    rt_make(&b, 2, NULL);
    const char *args[] = {"run", b.manifest, NULL};
    const char *f16[] = {"run", b.manifest, "--weights", "f16", NULL};
    CHECK(rt_exit_code(rt_run(&b, NULL, args)) == 0);
    CHECK(rt_exit_code(rt_run(&b, NULL, f16)) == 0);
    char *out = rt_slurp(&b, "last.out");
    CHECKF(strstr(out, "done job00") && strstr(out, "done job01"), "f16 run printed:\n%s", out);
    free(out);
    CHECK(rt_sql(b.db, "SELECT count(*) FROM runs WHERE outcome='done'") == 4);
    CHECK(rt_exit_code(rt_run(&b, NULL, f16)) == 0);
    out = rt_slurp(&b, "last.out");
    CHECKF(!strstr(out, "done job00") && !strstr(out, "done job01"), "second f16 run printed:\n%s", out);
    free(out);
    CHECK(rt_sql(b.db, "SELECT count(*) FROM runs WHERE outcome='done'") == 4);
    const char *bad[] = {"run", b.manifest, "--weights", "f64", NULL};
    CHECK(rt_exit_code(rt_run(&b, NULL, bad)) == 2);
    char *err = rt_slurp(&b, "last.err");
    CHECKF(strstr(err, "--weights") && strstr(err, "f64"), "stderr:\n%s", err);
    free(err);
}

/* --keep-filters gives the same images and the same model identity: a batch done without it stays
 * done under it, and a batch run with it writes the same bytes; a bad value is a usage error. */
static void keep_filters_same_images(void)
{
    rt_batch a, k;
    rt_make(&a, 2, NULL);
    rt_make(&k, 2, NULL);
    const char *plain[] = {"run", a.manifest, NULL};
    const char *keep_a[] = {"run", a.manifest, "--keep-filters", "64", NULL};
    const char *keep_k[] = {"run", k.manifest, "--keep-filters", "64", NULL};
    CHECK(rt_exit_code(rt_run(&a, NULL, plain)) == 0);
    CHECK(rt_exit_code(rt_run(&a, NULL, keep_a)) == 0);
    char *out = rt_slurp(&a, "last.out");
    CHECKF(!strstr(out, "done job00") && !strstr(out, "done job01"), "run with --keep-filters printed:\n%s", out);
    free(out);
    CHECK(rt_exit_code(rt_run(&k, NULL, keep_k)) == 0);
    char ha[2][65], hk[2][65];
    rt_hashes(&a, ha);
    rt_hashes(&k, hk);
    CHECK(!strcmp(ha[0], hk[0]) && !strcmp(ha[1], hk[1]));
    const char *bad[] = {"run", a.manifest, "--keep-filters", "lots", NULL};
    CHECK(rt_exit_code(rt_run(&a, NULL, bad)) == 2);
    char *err = rt_slurp(&a, "last.err");
    CHECKF(strstr(err, "--keep-filters"), "stderr:\n%s", err);
    free(err);
}

static void bad_jobs_fail_alone(void)
{
    rt_batch b;
    rt_make(&b, 3, NULL);
    char garbage[700];
    snprintf(garbage, sizeof garbage, "%s/garbage.png", b.dir);
    sdb_err err;
    CHECK_OK(sdb_write_file_atomic(garbage, "\x89PNG\r\n\x1a\ngarbage", 15, &err), &err);
    append(&b, "  - id: nomask\n    prompt: p\n    mask: masks/missing.png\n"
               "  - id: garbage\n    prompt: p\n    image: garbage.png\n");
    /* validate calls them errors */
    const char *vargs[] = {"validate", b.manifest, NULL};
    CHECK(rt_exit_code(rt_run(&b, NULL, vargs)) == 2);
    char *e = rt_slurp(&b, "last.err");
    CHECKF(strstr(e, "batch.yaml:") && strstr(e, "job 'nomask': mask") && strstr(e, "job 'garbage': image"), "%s", e);
    free(e);
    /* run: the two fail alone, the rest finish; exit 3 */
    const char *args[] = {"run", b.manifest, NULL};
    int st = rt_run(&b, NULL, args);
    CHECKF(rt_exit_code(st) == 3, "exit %d", rt_exit_code(st));
    char h[3][65];
    rt_hashes(&b, h);
    for (int i = 0; i < 3; i++) CHECK(h[i][0]);
    CHECK(rt_sql(b.db, "SELECT count(*) FROM jobs WHERE state='failed'") == 2);
    CHECK(rt_sql(b.db, "SELECT count(*) FROM jobs WHERE id='nomask' AND error LIKE '%%missing.png%%'") == 1);
    json_t *doc = rt_status_json(&b, NULL);
    if (doc) {
        CHECK(rt_jint(doc, "total") == 5 && rt_jint(doc, "done") == 3 && rt_jint(doc, "failed") == 2);
        json_t *jobs = json_object_get(doc, "jobs");
        json_t *g = json_array_get(jobs, 4);
        CHECK(!strcmp(json_string_value(json_object_get(g, "id")), "garbage"));
        CHECK(!strcmp(json_string_value(json_object_get(g, "state")), "failed"));
        CHECK(json_is_string(json_object_get(g, "error")));
        CHECK(json_is_null(json_object_get(json_array_get(jobs, 0), "error")));
        json_decref(doc);
    }
    /* retried by the next run (attempt 2 of --max-attempts 2), then no more */
    CHECK(rt_exit_code(rt_run(&b, NULL, args)) == 3);
    CHECK(rt_sql(b.db, "SELECT attempts FROM jobs WHERE id='nomask'") == 2);
    CHECK(rt_exit_code(rt_run(&b, NULL, args)) == 3);
    CHECK(rt_sql(b.db, "SELECT attempts FROM jobs WHERE id='nomask'") == 2);
    const char *rargs[] = {"run", b.manifest, "--retry-failed", NULL};
    CHECK(rt_exit_code(rt_run(&b, NULL, rargs)) == 3);
    CHECK(rt_sql(b.db, "SELECT attempts FROM jobs WHERE id='nomask'") == 3);
    /* fixing the input fixes the job (its identity changed: attempts start again) */
    replace(&b, "masks/missing.png", sdb_t_path("refs/pipeline/inputs/mask_128x128.png"));
    replace(&b, "    image: garbage.png\n", "");
    CHECK(rt_exit_code(rt_run(&b, NULL, args)) == 0);
    CHECK(rt_sql(b.db, "SELECT count(*) FROM jobs WHERE state='done'") == 5);
    /* the status text shows the counts */
    const char *sargs[] = {"status", b.manifest, "--jobs", NULL};
    CHECK(rt_exit_code(rt_run(&b, NULL, sargs)) == 0);
    char *o = rt_slurp(&b, "last.out");
    CHECKF(strstr(o, "100.0% done") && strstr(o, "done 5"), "%s", o);
    free(o);
}

static void signals(int sig)
{
    rt_batch b;
    rt_make(&b, 3, NULL);
    replace(&b, "  steps: 3\n", "  steps: 40\n");   /* long enough to interrupt mid-job */
    const char *args[] = {"run", b.manifest, NULL};
    pid_t pid = rt_spawn(&b, NULL, args, NULL);
    /* wait for a job to be running, then signal */
    int running = 0;
    for (int t = 0; t < 1200 && !running; t++) {
        usleep(50 * 1000);
        if (sdb_file_exists(b.db) && rt_sql(b.db, "SELECT count(*) FROM sqlite_master WHERE name='jobs'") == 1)
            running = rt_sql(b.db, "SELECT count(*) FROM jobs WHERE state='running'") > 0;
    }
    CHECK(running);
    usleep(100 * 1000);
    kill(pid, sig);
    int st = rt_wait(pid);
    CHECKF(WIFEXITED(st) && WEXITSTATUS(st) == (sig == SIGINT ? 130 : 143), "status %d", st);
    if (!WIFEXITED(st)) rt_show(&b, NULL);
    CHECK(rt_sql(b.db, "SELECT count(*) FROM jobs WHERE state='running'") == 0);
    CHECK(rt_sql(b.db, "SELECT count(*) FROM runs WHERE outcome='interrupted'") + rt_sql(b.db, "SELECT count(*) FROM runs WHERE outcome='done'") >= 1);
    CHECK(rt_sql(b.db, "SELECT count(*) FROM runs WHERE outcome IS NULL") == 0);
    CHECK(rt_temp_files(&b) == 0);
    /* interrupted attempts do not count */
    CHECK(rt_sql(b.db, "SELECT max(attempts) FROM jobs WHERE state='pending'") <= 0 ||
          rt_sql(b.db, "SELECT count(*) FROM jobs WHERE state='pending' AND attempts > 0") == 0);
    replace(&b, "  steps: 40\n", "  steps: 40\n");
    CHECK(rt_exit_code(rt_run(&b, NULL, args)) == 0);
    CHECK(rt_each_done_once(&b));
}
static void sigint_stops_at_step(void) { signals(SIGINT); }
static void sigterm_stops_at_step(void) { signals(SIGTERM); }

static void only_and_dry_run(void)
{
    rt_batch b;
    rt_make(&b, 4, NULL);
    const char *dargs[] = {"run", b.manifest, "--dry-run", NULL};
    CHECK(rt_exit_code(rt_run(&b, NULL, dargs)) == 0);
    CHECK(!sdb_file_exists(b.db));              /* nothing written */
    char *o = rt_slurp(&b, "last.out");
    CHECKF(strstr(o, "run   job00") && strstr(o, "run   job03"), "%s", o);
    free(o);
    const char *args[] = {"run", b.manifest, "--only", "job01", "job03", NULL};
    CHECK(rt_exit_code(rt_run(&b, NULL, args)) == 0);
    CHECK(rt_sql(b.db, "SELECT count(*) FROM runs WHERE outcome='done'") == 2);
    CHECK(rt_sql(b.db, "SELECT count(*) FROM runs WHERE job_id IN ('job01','job03') AND outcome='done'") == 2);
    json_t *doc = rt_status_json(&b, NULL);
    if (doc) {
        CHECK(rt_jint(doc, "done") == 2 && rt_jint(doc, "pending") == 2);
        json_decref(doc);
    }
    CHECK(rt_exit_code(rt_run(&b, NULL, dargs)) == 0);
    o = rt_slurp(&b, "last.out");
    CHECKF(strstr(o, "skip  job01 (done)") && strstr(o, "run   job00"), "%s", o);
    free(o);
    const char *bad[] = {"run", b.manifest, "--only", "nosuchjob", NULL};
    CHECK(rt_exit_code(rt_run(&b, NULL, bad)) == 2);
    const char *bad2[] = {"run", b.manifest, "--frobnicate", NULL};
    CHECK(rt_exit_code(rt_run(&b, NULL, bad2)) == 2);
}

static void bad_manifest_exits_2(void)
{
    rt_batch b;
    rt_make(&b, 2, NULL);
    replace(&b, "  steps: 3\n", "  steps: 3\n  colour: red\n");
    const char *args[] = {"run", b.manifest, NULL};
    CHECK(rt_exit_code(rt_run(&b, NULL, args)) == 2);
    char *e = rt_slurp(&b, "last.err");
    CHECKF(strstr(e, "batch.yaml:6:3: unknown key 'colour'"), "%s", e);
    free(e);
    CHECK(!sdb_file_exists(b.db));
    const char *vargs[] = {"validate", b.manifest, NULL};
    CHECK(rt_exit_code(rt_run(&b, NULL, vargs)) == 2);
    const char *sargs[] = {"status", b.manifest, NULL};
    CHECK(rt_exit_code(rt_run(&b, NULL, sargs)) == 2);
    replace(&b, "  colour: red\n", "");
    CHECK(rt_exit_code(rt_run(&b, NULL, vargs)) == 0);
    /* status before any run: all pending, valid JSON */
    json_t *doc = rt_status_json(&b, NULL);
    if (doc) {
        CHECK(rt_jint(doc, "total") == 2 && rt_jint(doc, "pending") == 2);
        json_decref(doc);
    }
}

/* On a terminal: a progress bar with jobs done/total, the current job's step, images/min, ETA. */
static void progress_bar_on_tty(void)
{
    rt_batch b;
    rt_make(&b, 3, NULL);
    replace(&b, "  steps: 3\n", "  steps: 12\n");
    int master;
    pid_t pid = forkpty(&master, NULL, NULL, NULL);
    if (pid == 0) {
        if (chdir(b.dir) != 0) _exit(120);
        setenv("OMP_NUM_THREADS", "1", 0);
        execl(sdb_t_binary(), sdb_t_binary(), "run", b.manifest, (char *)NULL);
        _exit(122);
    }
    CHECK(pid > 0);
    if (pid <= 0) return;
    char *buf = malloc(1 << 20);
    size_t n = 0;
    for (;;) {
        struct pollfd pf = {master, POLLIN, 0};
        if (poll(&pf, 1, 120000) <= 0) break;
        ssize_t r = read(master, buf + n, (1 << 20) - 1 - n);
        if (r <= 0) break;
        n += (size_t)r;
        if (n >= (1 << 20) - 1) break;
    }
    buf[n] = '\0';
    int st = rt_wait(pid);
    close(master);
    CHECK(rt_exit_code(st) == 0);
    CHECKF(strstr(buf, "] 0/3 jobs") && strstr(buf, "] 1/3 jobs"), "no bar in:\n%.2000s", buf);
    CHECK(strstr(buf, "step ") && strstr(buf, "/12"));
    CHECK(strstr(buf, "img/min") && strstr(buf, "ETA"));
    CHECK(strstr(buf, "done job00") && strstr(buf, "\r"));
    free(buf);
}

int main(void)
{
    RUN(progress_bar_on_tty);
    RUN(edit_reruns_one);
    RUN(weights_f16_redoes_then_keeps);
    RUN(keep_filters_same_images);
    RUN(bad_jobs_fail_alone);
    RUN(sigint_stops_at_step);
    RUN(sigterm_stops_at_step);
    RUN(only_and_dry_run);
    RUN(bad_manifest_exits_2);
    return sdb_t_done();
}
