/*
 * test_daemon_slow.c — `sdbatch daemon` and `sdbatch submit` as a user runs them: real processes,
 * real SQLite state, the real pipeline on the tiny inpainting model (128x128 inputs, few steps).
 *
 *   end_to_end       three manifests submitted to a running daemon (one with a bad job, one
 *                    invalid): two complete with the bad job failed alone, the invalid one lands in
 *                    failed/ with its file:line:column errors beside it; JSON event log; SIGHUP
 *                    reopens the log; a second daemon on the spool refuses with a clear message.
 *   sigkill_resume   SIGKILL of the daemon mid-job (and between the output's rename and its
 *                    commit), then a restart: every job done exactly once, outputs byte-identical
 *                    to an uninterrupted daemon run, no temp files.
 *   sigterm          SIGTERM mid-job: exit 0 within about a step, the job back to pending, the
 *                    manifest still in active/; the restart finishes with identical outputs.
 *   crash_loop       a manifest that kills the daemon at every start before any job finishes is
 *                    moved to failed/ after --max-crashes starts.
 */
#include "test_run_common.h"
#include "sdb/daemon.h"

#include <math.h>
#include <time.h>

#define NJ 3      /* jobs of the resume manifests */
#define STEPS 6
#define LONG_STEPS 30   /* job01's: the job the signals hit */
#define LONG_STEPS_S "30"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void write_text(const char *path, const char *text)
{
    sdb_err err;
    CHECK_OK(sdb_write_file_atomic(path, text, strlen(text), &err), &err);
}

static int exists(const char *dir, const char *rel)
{
    char p[1200];
    snprintf(p, sizeof p, "%s/%s", dir, rel);
    return sdb_file_exists(p);
}

/* Waits until every path (relative to dir, NULL-terminated) exists; 1 when they do. */
static int wait_files(const char *dir, const char *const *rels, double timeout)
{
    double t0 = now_s();
    for (;;) {
        int all = 1;
        for (int i = 0; rels[i]; i++) if (!exists(dir, rels[i])) all = 0;
        if (all) return 1;
        if (now_s() - t0 > timeout) {
            for (int i = 0; rels[i]; i++) if (!exists(dir, rels[i])) fprintf(stderr, "    still missing: %s/%s\n", dir, rels[i]);
            return 0;
        }
        usleep(100000);
    }
}

/* Counts the JSON log lines with this event; with bad_lines, every line is also validated
 * against schemas/daemon-event.schema.json (failures counted there). */
static int count_events(const char *log_path, const char *event, int *bad_lines)
{
    char *text = NULL;
    sdb_err err;
    if (sdb_read_file(log_path, &text, NULL, &err)) return 0;
    static json_t *schema;
    if (!schema && bad_lines) {
        json_error_t je;
        schema = json_load_file(SDB_SOURCE_DIR "/schemas/daemon-event.schema.json", 0, &je);
        CHECKF(schema != NULL, "daemon-event.schema.json: %s", je.text);
    }
    int n = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        json_error_t je;
        json_t *o = json_loads(line, 0, &je);
        const char *ev = o ? json_string_value(json_object_get(o, "event")) : NULL;
        int ok = ev && json_object_get(o, "time") && (!bad_lines || !schema || rt_validate(o, schema, "event"));
        if (!ok) { if (bad_lines) (*bad_lines)++; fprintf(stderr, "    bad log line: %s\n", line); }
        else if (!strcmp(ev, event)) n++;
        json_decref(o);
    }
    free(text);
    return n;
}

/* Waits for the n-th event in the log. */
static int wait_event(const char *log_path, const char *event, int n, double timeout)
{
    double t0 = now_s();
    while (now_s() - t0 < timeout) {
        if (count_events(log_path, event, NULL) >= n) return 1;
        usleep(50000);
    }
    return 0;
}

/* A number field of the last event of this kind about this job in a JSON log. */
static double last_event_num(const char *log_path, const char *event, const char *job, const char *key)
{
    char *text = NULL;
    sdb_err err;
    double v = NAN;
    if (sdb_read_file(log_path, &text, NULL, &err)) return v;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        json_t *o = json_loads(line, 0, NULL);
        const char *ev = o ? json_string_value(json_object_get(o, "event")) : NULL;
        const char *jb = o ? json_string_value(json_object_get(o, "job")) : NULL;
        if (ev && !strcmp(ev, event) && jb && !strcmp(jb, job) && json_is_number(json_object_get(o, key))) v = json_number_value(json_object_get(o, key));
        json_decref(o);
    }
    free(text);
    return v;
}

/* The manifest of the resume tests, in <dir>/src/batch.yaml, with relative paths (submit makes
 * them absolute): output_dir ../out, inputs through the symlink src/in. */
static void make_resume_manifest(const char *dir)
{
    char p[1200], text[4096];
    snprintf(p, sizeof p, "%s/src", dir);
    sdb_err err;
    CHECK_OK(sdb_mkdirs(p, &err), &err);
    snprintf(p, sizeof p, "%s/src/in", dir);
    CHECK(symlink(sdb_t_path("refs/pipeline/inputs"), p) == 0);
    int n = snprintf(text, sizeof text,
                     "version: 1\nmodel: %s\noutput_dir: ../out   # relative to this file\ndefaults:\n  steps: %d\n"
                     "  image: in/scene_128x128.png\n  mask: in/mask_128x128.png\n  negative_prompt: blurry\njobs:\n",
                     sdb_t_path("models/tiny-sd-inpaint"), STEPS);
    static const char *const prompts[NJ] = {"a lighthouse", "a small dog", "a red boat"};
    for (int i = 0; i < NJ; i++)
        n += snprintf(text + n, sizeof text - n, "  - id: job%02d\n    prompt: \"%s\"\n    seed: %d\n%s", i, prompts[i], 100 + i,
                      i == 1 ? "    scheduler: ddim\n    steps: " LONG_STEPS_S "\n" : "");
    snprintf(p, sizeof p, "%s/src/batch.yaml", dir);
    write_text(p, text);
}

static void submit(rt_batch *b, const char *manifest_rel, const char *spool_rel)
{
    const char *args[] = {"submit", manifest_rel, "--spool", spool_rel, NULL};
    int st = rt_wait(rt_spawn(b, NULL, args, "submit"));
    CHECKF(rt_exit_code(st) == 0, "submit %s: exit %d", manifest_rel, rt_exit_code(st));
    if (rt_exit_code(st)) rt_show(b, "submit");
}

/* The batch of the resume tests as rt_batch (for rt_hashes / rt_each_done_once / rt_temp_files). */
static void resume_batch(rt_batch *b, const char *dir)
{
    memset(b, 0, sizeof *b);
    snprintf(b->dir, sizeof b->dir, "%s", dir);
    snprintf(b->manifest, sizeof b->manifest, "%s/spool/done/batch.yaml", dir);
    snprintf(b->out, sizeof b->out, "%s/out", dir);
    snprintf(b->db, sizeof b->db, "%s/out/.sdbatch/state.db", dir);
    b->n_jobs = NJ;
    for (int i = 0; i < NJ; i++) snprintf(b->ids[i], sizeof b->ids[i], "job%02d", i);
}

static char base_hash[NJ][65];
static double step_seconds = 1.0;

/* An uninterrupted daemon run: the reference outputs, and how long a step takes here. */
static void baseline(void)
{
    rt_batch b;
    resume_batch(&b, sdb_t_tmpdir());
    make_resume_manifest(b.dir);
    submit(&b, "src/batch.yaml", "spool");
    /* the copy has absolute paths and keeps the comment */
    char *copy = rt_slurp(&b, "spool/incoming/batch.yaml");
    CHECKF(strstr(copy, "# relative to this file") && strstr(copy, "/src/in/scene_128x128.png") && !strstr(copy, " in/"),
           "submitted copy:\n%s", copy);
    free(copy);
    usleep(1100000);   /* the daemon leaves files younger than a second alone */
    const char *args[] = {"daemon", "--allow-root", ".", "--spool", "spool", "--once", "--log", "daemon.log", "--log-format", "json", NULL};
    double t0 = now_s();
    int st = rt_wait(rt_spawn(&b, NULL, args, "daemon"));
    CHECKF(rt_exit_code(st) == 0, "daemon exit %d", rt_exit_code(st));
    if (rt_exit_code(st)) rt_show(&b, "daemon");
    fprintf(stderr, "    uninterrupted daemon run: %.1f s\n", now_s() - t0);
    CHECK(exists(b.dir, "spool/done/batch.yaml"));
    rt_hashes(&b, base_hash);
    for (int i = 0; i < NJ; i++) CHECKF(base_hash[i][0], "no output for %s", b.ids[i]);
    CHECK(rt_each_done_once(&b));
    char lp[1200];
    snprintf(lp, sizeof lp, "%s/daemon.log", b.dir);
    double js = last_event_num(lp, "job_done", "job01", "seconds");
    if (isfinite(js) && js > 0) step_seconds = js / LONG_STEPS;
    fprintf(stderr, "    one job %.2f s, ~%.2f s a step\n", js, step_seconds);
    /* the same outputs as `sdbatch run` on the original manifest (the same state db, already done) */
    const char *st_args[] = {"status", "src/batch.yaml", "--json", NULL};
    st = rt_wait(rt_spawn(&b, NULL, st_args, "status"));
    CHECKF(rt_exit_code(st) == 0, "status on the original manifest: exit %d", rt_exit_code(st));
    char *js_text = rt_slurp(&b, "status.out");
    json_t *doc = json_loads(js_text, 0, NULL);
    CHECKF(doc && rt_jint(doc, "done") == NJ, "status of the original manifest:\n%s", js_text);
    json_decref(doc);
    free(js_text);
}

/* SIGKILL at a kill point of the runner inside the daemon, then a restart. */
static void kill_and_resume(const char *point)
{
    rt_batch b;
    resume_batch(&b, sdb_t_tmpdir());
    make_resume_manifest(b.dir);
    submit(&b, "src/batch.yaml", "spool");
    usleep(1100000);
    char env[128];
    snprintf(env, sizeof env, "SDB_TEST_KILL_AT=%s", point);
    const char *envs[] = {env, NULL};
    const char *args[] = {"daemon", "--allow-root", ".", "--spool", "spool", "--once", "--log", "daemon.log", "--log-format", "json", NULL};
    int st = rt_wait(rt_spawn(&b, envs, args, "killed"));
    CHECKF(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "%s: daemon not killed (status %d)", point, st);
    if (!WIFSIGNALED(st)) rt_show(&b, "killed");
    CHECKF(exists(b.dir, "spool/active/batch.yaml"), "%s: the manifest is not in active/", point);
    long long done_before = rt_sql(b.db, "SELECT count(*) FROM jobs WHERE state='done'");
    fprintf(stderr, "    %s: killed with %lld job(s) done\n", point, done_before);
    CHECK(done_before < NJ);
    st = rt_wait(rt_spawn(&b, NULL, args, "daemon"));
    CHECKF(rt_exit_code(st) == 0, "%s: restart exit %d", point, rt_exit_code(st));
    if (rt_exit_code(st)) rt_show(&b, "daemon");
    CHECK(exists(b.dir, "spool/done/batch.yaml") && !exists(b.dir, "spool/active/batch.yaml"));
    char h[NJ][65];
    rt_hashes(&b, h);
    for (int i = 0; i < NJ; i++) CHECKF(!strcmp(h[i], base_hash[i]), "%s: %s differs from the uninterrupted run", point, b.ids[i]);
    CHECK(rt_each_done_once(&b));
    CHECK(rt_temp_files(&b) == 0);
    char lp[1200];
    snprintf(lp, sizeof lp, "%s/daemon.log", b.dir);
    int bad = 0;
    CHECK(count_events(lp, "manifest_resumed", &bad) == 1);
    CHECK(bad == 0);
}

static void sigkill_resume(void)
{
    kill_and_resume("step@16");       /* job01, step 10 of 30 */
    kill_and_resume("renamed@2");     /* job01's PNG in place, not yet marked done */
}

/* A manifest that takes the daemon down again and again without a job finishing is given up
 * (--max-crashes), so a service restarted on failure does not loop on it for ever. */
static void crash_loop(void)
{
    rt_batch b;
    resume_batch(&b, sdb_t_tmpdir());
    make_resume_manifest(b.dir);
    submit(&b, "src/batch.yaml", "spool");
    usleep(1100000);
    const char *envs[] = {"SDB_TEST_KILL_AT=claimed", NULL};
    const char *args[] = {"daemon", "--allow-root", ".", "--spool", "spool", "--once", "--max-crashes", "2", "--log", "daemon.log",
                          "--log-format", "json", NULL};
    for (int k = 0; k < 2; k++) {
        int st = rt_wait(rt_spawn(&b, envs, args, "killed"));
        CHECKF(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "start %d: status %d", k + 1, st);
        CHECK(exists(b.dir, "spool/active/batch.yaml"));
    }
    int st = rt_wait(rt_spawn(&b, envs, args, "daemon"));
    CHECKF(rt_exit_code(st) == 0, "third start: exit %d", rt_exit_code(st));
    CHECK(exists(b.dir, "spool/failed/batch.yaml") && !exists(b.dir, "spool/active/batch.yaml"));
    CHECK(!exists(b.dir, "spool/active/.batch.yaml.starts"));
    char *errs = rt_slurp(&b, "spool/failed/batch.yaml.errors.txt");
    CHECKF(strstr(errs, "stopped 2 times in a row"), "errors file: %s", errs);
    free(errs);
}

static void sigterm(void)
{
    rt_batch b;
    resume_batch(&b, sdb_t_tmpdir());
    make_resume_manifest(b.dir);
    submit(&b, "src/batch.yaml", "spool");
    const char *args[] = {"daemon", "--allow-root", ".", "--spool", "spool", "--log", "daemon.log", "--log-format", "json", "--rescan", "1", NULL};
    pid_t pid = rt_spawn(&b, NULL, args, "daemon");
    char lp[1200];
    snprintf(lp, sizeof lp, "%s/daemon.log", b.dir);
    CHECK(wait_event(lp, "job_start", 2, 60));
    usleep((useconds_t)(step_seconds * 8 * 1e6));    /* in the middle of job01 (30 steps) */
    double t0 = now_s();
    kill(pid, SIGTERM);
    int st = rt_wait(pid);
    double took = now_s() - t0;
    fprintf(stderr, "    SIGTERM mid-job: exit after %.2f s (a step takes ~%.2f s)\n", took, step_seconds);
    CHECKF(WIFEXITED(st) && WEXITSTATUS(st) == 0, "status %d", st);
    CHECKF(took < 2 * step_seconds + 1.0, "took %.2f s", took);
    CHECK(exists(b.dir, "spool/active/batch.yaml"));
    CHECK(count_events(lp, "job_interrupted", NULL) == 1);
    CHECK(count_events(lp, "daemon_stop", NULL) == 1);
    CHECK(rt_sql(b.db, "SELECT count(*) FROM jobs WHERE state='done'") == 1);
    CHECK(rt_sql(b.db, "SELECT count(*) FROM jobs WHERE state='running'") == 0);
    CHECK(rt_sql(b.db, "SELECT count(*) FROM runs WHERE outcome='interrupted'") == 1);
    /* `status` on the manifest where the daemon left it */
    const char *st_args[] = {"status", "spool/active/batch.yaml", "--json", NULL};
    st = rt_wait(rt_spawn(&b, NULL, st_args, "status"));
    char *js_text = rt_slurp(&b, "status.out");
    json_t *doc = json_loads(js_text, 0, NULL);
    CHECKF(rt_exit_code(st) == 0 && doc && rt_jint(doc, "done") == 1 && rt_jint(doc, "pending") == NJ - 1,
           "status:\n%s", js_text);
    json_decref(doc);
    free(js_text);
    /* the restart finishes it */
    const char *args2[] = {"daemon", "--allow-root", ".", "--spool", "spool", "--once", "--log", "daemon.log", "--log-format", "json", NULL};
    st = rt_wait(rt_spawn(&b, NULL, args2, "daemon2"));
    CHECKF(rt_exit_code(st) == 0, "restart exit %d", rt_exit_code(st));
    CHECK(exists(b.dir, "spool/done/batch.yaml"));
    char h[NJ][65];
    rt_hashes(&b, h);
    for (int i = 0; i < NJ; i++) CHECKF(!strcmp(h[i], base_hash[i]), "%s differs from the uninterrupted run", b.ids[i]);
    CHECK(rt_each_done_once(&b));
    CHECK(rt_temp_files(&b) == 0);
}

static void end_to_end(void)
{
    rt_batch b;
    memset(&b, 0, sizeof b);
    snprintf(b.dir, sizeof b.dir, "%s", sdb_t_tmpdir());
    char p[1200], text[4096];
    snprintf(p, sizeof p, "%s/src", b.dir);
    sdb_err err;
    CHECK_OK(sdb_mkdirs(p, &err), &err);
    snprintf(p, sizeof p, "%s/src/in", b.dir);
    CHECK(symlink(sdb_t_path("refs/pipeline/inputs"), p) == 0);
    const char *model = sdb_t_path("models/tiny-sd-inpaint");
    /* m1: two good jobs */
    snprintf(text, sizeof text,
             "version: 1\nmodel: %s\noutput_dir: ../out1\ndefaults:\n  steps: 3\n  image: in/scene_128x128.png\n"
             "  mask: in/mask_128x128.png\njobs:\n  - id: a\n    prompt: a lighthouse\n    seed: 1\n"
             "  - id: b\n    prompt: a dog\n    seed: 2\n", model);
    snprintf(p, sizeof p, "%s/src/m1.yaml", b.dir);
    write_text(p, text);
    /* m2: a bad job (its image does not exist) between two good ones */
    snprintf(text, sizeof text,
             "version: 1\nmodel: %s\noutput_dir: ../out2\ndefaults:\n  steps: 3\n  mask: in/mask_128x128.png\njobs:\n"
             "  - id: good1\n    image: in/scene_128x128.png\n    prompt: a castle\n    seed: 3\n"
             "  - id: broken\n    image: in/no-such-image.png\n    prompt: a castle\n    seed: 4\n"
             "  - id: good2\n    image: in/scene_128x128.png\n    prompt: a boat\n    seed: 5\n", model);
    snprintf(p, sizeof p, "%s/src/m2.yaml", b.dir);
    write_text(p, text);
    /* m3: invalid (two schema errors) */
    snprintf(text, sizeof text,
             "version: 1\nmodel: %s\noutput_dir: ../out3\njobs:\n  - id: x\n    prompt: a tree\n    steps: -4\n"
             "    colour: blue\n", model);
    snprintf(p, sizeof p, "%s/src/m3.yaml", b.dir);
    write_text(p, text);

    const char *args[] = {"daemon", "--allow-root", ".", "--spool", "spool", "--log", "daemon.log", "--log-format", "json", "--rescan", "1", NULL};
    pid_t pid = rt_spawn(&b, NULL, args, "daemon");
    snprintf(p, sizeof p, "%s/daemon.log", b.dir);
    CHECK(wait_event(p, "daemon_start", 1, 30));

    /* a second daemon on the same spool refuses, naming the first */
    const char *args2[] = {"daemon", "--allow-root", ".", "--spool", "spool", NULL};
    int st = rt_wait(rt_spawn(&b, NULL, args2, "second"));
    char *err2 = rt_slurp(&b, "second.err");
    char pidstr[32];
    snprintf(pidstr, sizeof pidstr, "pid %ld", (long)pid);
    CHECKF(rt_exit_code(st) == 4, "second daemon: exit %d", rt_exit_code(st));
    CHECKF(strstr(err2, "already running") && strstr(err2, pidstr), "second daemon said: %s", err2);
    fprintf(stderr, "    second daemon: %s", err2);
    free(err2);

    submit(&b, "src/m1.yaml", "spool");
    submit(&b, "src/m2.yaml", "spool");
    submit(&b, "src/m3.yaml", "spool");
    const char *want[] = {"spool/done/m1.yaml", "spool/done/m2.yaml", "spool/failed/m3.yaml",
                          "spool/failed/m3.yaml.errors.txt", NULL};
    CHECK(wait_files(b.dir, want, 120));
    /* the daemon logs each outcome just after moving its manifest: wait for the lines too, so that
     * none is written after the rotation below (it would land in the new log) */
    CHECK(wait_event(p, "manifest_done", 2, 30));
    CHECK(wait_event(p, "manifest_invalid", 1, 30));

    /* SIGHUP: the log is reopened (as after logrotate) */
    char rotated[1200];
    snprintf(rotated, sizeof rotated, "%s/daemon.log.1", b.dir);
    CHECK(rename(p, rotated) == 0);
    kill(pid, SIGHUP);
    usleep(300000);
    kill(pid, SIGTERM);
    st = rt_wait(pid);
    CHECKF(WIFEXITED(st) && WEXITSTATUS(st) == 0, "daemon status %d", st);
    if (!WIFEXITED(st) || WEXITSTATUS(st)) rt_show(&b, "daemon");
    CHECK(count_events(p, "log_reopened", NULL) == 1);
    CHECK(count_events(p, "daemon_stop", NULL) == 1);

    /* the results */
    char db1[1200], db2[1200];
    snprintf(db1, sizeof db1, "%s/out1/.sdbatch/state.db", b.dir);
    snprintf(db2, sizeof db2, "%s/out2/.sdbatch/state.db", b.dir);
    CHECK(rt_sql(db1, "SELECT count(*) FROM jobs WHERE state='done'") == 2);
    CHECK(rt_sql(db2, "SELECT count(*) FROM jobs WHERE state='done'") == 2);
    CHECK(rt_sql(db2, "SELECT count(*) FROM jobs WHERE state='failed' AND id='broken' AND error LIKE '%%no-such-image%%'") == 1);
    CHECK(exists(b.dir, "out1/a.png") && exists(b.dir, "out1/b.png"));
    CHECK(exists(b.dir, "out2/good1.png") && exists(b.dir, "out2/good2.png") && !exists(b.dir, "out2/broken.png"));
    CHECK(!exists(b.dir, "out3"));
    char *errs = rt_slurp(&b, "spool/failed/m3.yaml.errors.txt");
    CHECKF(strstr(errs, "spool/failed/m3.yaml:7:") && strstr(errs, "spool/failed/m3.yaml:8:5:") && strstr(errs, "colour"),
           "errors file:\n%s", errs);
    fprintf(stderr, "    m3.yaml.errors.txt:\n%s", errs);
    free(errs);

    /* status --spool: the three manifests where they ended, with their counts */
    const char *sargs[] = {"status", "--spool", "spool", "--json", NULL};
    st = rt_wait(rt_spawn(&b, NULL, sargs, "spool-status"));
    CHECKF(rt_exit_code(st) == 0, "status --spool: exit %d", rt_exit_code(st));
    char *stext = rt_slurp(&b, "spool-status.out");
    json_t *sdoc = json_loads(stext, 0, NULL);
    json_t *marr = sdoc ? json_object_get(sdoc, "manifests") : NULL;
    CHECKF(json_array_size(marr) == 3, "status --spool:\n%s", stext);
    for (size_t i = 0; i < json_array_size(marr); i++) {
        json_t *o = json_array_get(marr, i);
        const char *nm = json_string_value(json_object_get(o, "name")), *fo = json_string_value(json_object_get(o, "folder"));
        if (!nm || !fo) { CHECK(0); continue; }
        if (!strcmp(nm, "m1.yaml")) CHECK(!strcmp(fo, "done") && rt_jint(o, "done") == 2);
        else if (!strcmp(nm, "m2.yaml")) CHECK(!strcmp(fo, "done") && rt_jint(o, "done") == 2 && rt_jint(o, "failed") == 1);
        else if (!strcmp(nm, "m3.yaml")) CHECK(!strcmp(fo, "failed") && json_is_string(json_object_get(o, "errors")));
        else CHECKF(0, "unexpected manifest %s", nm);
    }
    json_decref(sdoc);
    free(stext);

    int bad = 0;
    CHECK(count_events(rotated, "manifest_taken", &bad) == 3);
    CHECK(count_events(rotated, "job_done", &bad) == 4);
    CHECK(count_events(rotated, "job_failed", &bad) == 1);
    CHECK(count_events(rotated, "manifest_done", &bad) == 2);
    CHECK(count_events(rotated, "manifest_invalid", &bad) == 1);
    CHECK(count_events(rotated, "model_loaded", &bad) == 1);   /* kept loaded between manifests */
    CHECK(count_events(rotated, "model_reused", &bad) == 1);
    CHECK(bad == 0);
}

int main(void)
{
    (void)rt_make; (void)rt_run; (void)rt_status_json;   /* shared helpers this test does not need */
    if (!sdb_t_data()) return sdb_t_done();
    setenv("OMP_NUM_THREADS", "1", 0);
    RUN(end_to_end);
    RUN(baseline);
    RUN(sigkill_resume);
    RUN(sigterm);
    RUN(crash_loop);
    return sdb_t_done();
}
