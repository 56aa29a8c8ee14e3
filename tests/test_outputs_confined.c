/*
 * test_outputs_confined.c — a job's output stays inside its manifest's output_dir (issue 15):
 *   - `validate` refuses, each at the line:column of the `output:` at fault, an absolute output
 *     outside output_dir, a '..' component (also one a glob's {stem} template produces), and a
 *     folder below output_dir that is a symlink (pointing out of it, or inside it);
 *   - `run` (the real binary, tiny model) fails those jobs alone, runs the others, and writes
 *     nothing outside output_dir; `allow_outputs_outside: true` lets `run` write an absolute output;
 *   - a folder swapped for a symlink between validation and the write (an executor that swaps it
 *     while the job computes): the job fails, nothing is written through the symlink, no temp file;
 *   - a state folder (<output_dir>/.sdbatch) that is a symlink: the run refuses to start;
 *   - the daemon: no --allow-root refuses to start; a manifest whose output_dir lies outside the
 *     allowed roots (directly, or through a symlink inside a root) or that sets
 *     allow_outputs_outside goes to failed/ with the reason, writing nothing; one inside runs.
 */
#include "test_run_common.h"
#include "sdb/daemon.h"
#include "sdb/image.h"
#include "sdb/manifest.h"
#include "sdb/runner.h"

#include <time.h>

/* Files in a folder tree (temp files included), recursively; symlinks are not followed. */
static int count_tree(const char *dir, int *temps)
{
    DIR *d = opendir(dir);
    if (!d) return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char p[1400];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat sb;
        if (lstat(p, &sb) != 0) continue;
        if (S_ISDIR(sb.st_mode)) { n += count_tree(p, temps); continue; }
        n++;
        if (temps && strstr(e->d_name, ".tmp.")) { (*temps)++; fprintf(stderr, "    temp file left: %s\n", p); }
    }
    closedir(d);
    return n;
}

static void mkdir_p(const char *p)
{
    sdb_err err;
    CHECK_OK(sdb_mkdirs(p, &err), &err);
}

static void write_text(const char *p, const char *text)
{
    sdb_err err;
    CHECK_OK(sdb_write_file_atomic(p, text, strlen(text), &err), &err);
}

/* The test manifest's head (9 lines; jobs start at line 10). */
static int head(char *buf, size_t n, const char *extra_top)
{
    return snprintf(buf, n,
                    "version: 1\nmodel: %s\noutput_dir: out\ndefaults:\n  steps: 2\n  image: %s\n  mask: %s\n"
                    "  prompt: a house%s\njobs:\n",
                    sdb_t_path("models/tiny-sd-inpaint"), sdb_t_path("refs/pipeline/inputs/scene_128x128.png"),
                    sdb_t_path("refs/pipeline/inputs/mask_128x128.png"), extra_top);
}

/* <dir>/out with out/inner (a folder), out/esc -> <dir>/elsewhere (out of output_dir) and
 * out/in -> inner (inside it); <dir>/elsewhere empty. */
static void layout(const char *dir)
{
    char p[1024], t[1024];
    snprintf(p, sizeof p, "%s/out/inner", dir);
    mkdir_p(p);
    snprintf(p, sizeof p, "%s/elsewhere", dir);
    mkdir_p(p);
    snprintf(t, sizeof t, "%s/elsewhere", dir);
    snprintf(p, sizeof p, "%s/out/esc", dir);
    CHECK(symlink(t, p) == 0);
    snprintf(p, sizeof p, "%s/out/in", dir);
    CHECK(symlink("inner", p) == 0);
}

static void validate_refuses_with_positions(void)
{
    rt_batch b;
    memset(&b, 0, sizeof b);
    snprintf(b.dir, sizeof b.dir, "%s", sdb_t_tmpdir());
    snprintf(b.manifest, sizeof b.manifest, "%s/m.yaml", b.dir);
    layout(b.dir);
    char p[1024];
    snprintf(p, sizeof p, "%s/frames", b.dir);
    mkdir_p(p);
    snprintf(p, sizeof p, "%s/frames/f1.png", b.dir);
    char *png = NULL;
    size_t n = 0;
    sdb_err err;
    CHECK_OK(sdb_read_file(sdb_t_path("refs/pipeline/inputs/scene_128x128.png"), &png, &n, &err), &err);
    CHECK_OK(sdb_write_file_atomic(p, png, n, &err), &err);
    free(png);
    char text[8192];
    int o = head(text, sizeof text, "");
    snprintf(text + o, sizeof text - (size_t)o,
             "  - id: ok\n"                          /* 10 */
             "    output: inner/ok.png\n"            /* 11 */
             "  - id: abs\n"                         /* 12 */
             "    output: /srv/elsewhere/x.png\n"    /* 13 */
             "  - id: up\n"                          /* 14 */
             "    output: ../up.png\n"               /* 15 */
             "  - id: esc\n"                         /* 16 */
             "    output: esc/x.png\n"               /* 17 */
             "  - id: in\n"                          /* 18 */
             "    output: in/x.png\n"                /* 19 */
             "  - glob: frames/*.png\n"              /* 20 */
             "    id: \"g-{stem}\"\n"                /* 21 */
             "    output: \"{stem}/../../{stem}.png\"\n"   /* 22 */
             "  - id: absin\n"                       /* 23 */
             "    output: %s/out/inner/absin.png\n", /* 24: absolute, but inside output_dir */
             b.dir);
    write_text(b.manifest, text);
    const char *args[] = {"validate", "m.yaml", NULL};
    int st = rt_run(&b, NULL, args);
    char *e = rt_slurp(&b, "last.err");
    CHECKF(rt_exit_code(st) == 2, "validate exit %d", rt_exit_code(st));
    const char *want[] = {
        "m.yaml:13:13: job 'abs': output '/srv/elsewhere/x.png' is an absolute path outside output_dir",
        "m.yaml:15:13: job 'up': output '../up.png' has a '..' component",
        "m.yaml:17:13: job 'esc': output ",
        "m.yaml:19:13: job 'in': output ",
        "m.yaml:22:13: job 'g-f1': output 'f1/../../f1.png' has a '..' component",
    };
    for (int i = 0; i < 5; i++) CHECKF(strstr(e, want[i]) != NULL, "no \"%s\" in:\n%s", want[i], e);
    /* the symlinks: named with their targets, the one pointing out said to */
    char esc[1200];
    snprintf(esc, sizeof esc, "%s/out/esc is a symlink to %s/elsewhere, out of output_dir", b.dir, b.dir);
    CHECKF(strstr(e, esc) != NULL, "no \"%s\" in:\n%s", esc, e);
    snprintf(esc, sizeof esc, "%s/out/in is a symlink to %s/out/inner; outputs are never written", b.dir, b.dir);
    CHECKF(strstr(e, esc) != NULL, "no \"%s\" in:\n%s", esc, e);
    CHECKF(!strstr(e, "job 'ok'") && !strstr(e, "job 'absin'"), "%s", e);
    int errors = 0;
    for (const char *s = e; (s = strstr(s, "m.yaml:")); s++) errors++;
    CHECKF(errors == 5, "%d errors:\n%s", errors, e);
    free(e);
}

/* The tiny model's run: bad outputs fail alone, nothing lands outside output_dir. */
static void run_fails_those_jobs_alone(void)
{
    rt_batch b;
    memset(&b, 0, sizeof b);
    snprintf(b.dir, sizeof b.dir, "%s", sdb_t_tmpdir());
    snprintf(b.manifest, sizeof b.manifest, "%s/m.yaml", b.dir);
    snprintf(b.db, sizeof b.db, "%s/out/.sdbatch/state.db", b.dir);
    layout(b.dir);
    char text[8192];
    int o = head(text, sizeof text, "");
    snprintf(text + o, sizeof text - (size_t)o,
             "  - id: ok\n    output: inner/ok.png\n"
             "  - id: abs\n    output: %s/elsewhere/abs.png\n"
             "  - id: up\n    output: ../elsewhere/up.png\n"
             "  - id: esc\n    output: esc/x.png\n"
             "  - id: plain\n",
             b.dir);
    write_text(b.manifest, text);
    const char *args[] = {"run", "m.yaml", NULL};
    int st = rt_run(&b, NULL, args);
    CHECKF(rt_exit_code(st) == 3, "run exit %d", rt_exit_code(st));
    if (rt_exit_code(st) != 3) rt_show(&b, NULL);
    char p[1100], ew[1100];
    snprintf(p, sizeof p, "%s/out/inner/ok.png", b.dir);
    sdb_image img;
    sdb_err err;
    CHECK_OK(sdb_image_load(p, &img, 3, 0, &err), &err);
    if (!err.code) { CHECK(img.w == 128 && img.h == 128); sdb_image_free(&img); }
    snprintf(p, sizeof p, "%s/out/plain.png", b.dir);
    CHECK(sdb_file_exists(p));
    snprintf(ew, sizeof ew, "%s/elsewhere", b.dir);
    int temps = 0;
    CHECKF(count_tree(ew, &temps) == 0, "files written in %s", ew);
    snprintf(p, sizeof p, "%s/out", b.dir);
    CHECKF(count_tree(p, &temps) == 5 && temps == 0, "out/: 2 outputs + state.db(-wal,-shm) expected"); /* ok, plain, db, wal, shm */
    CHECK(rt_sql(b.db, "SELECT count(*) FROM jobs WHERE state='done'") == 2);
    CHECK(rt_sql(b.db, "SELECT count(*) FROM jobs WHERE state='failed'") == 3);
    CHECK(rt_sql(b.db, "SELECT count(*) FROM jobs WHERE id='abs' AND error LIKE '%%absolute path outside output_dir%%'") == 1);
    CHECK(rt_sql(b.db, "SELECT count(*) FROM jobs WHERE id='up' AND error LIKE '%%''..'' component%%'") == 1);
    CHECK(rt_sql(b.db, "SELECT count(*) FROM jobs WHERE id='esc' AND error LIKE '%%is a symlink%%'") == 1);
    char *out = rt_slurp(&b, "last.out");
    CHECKF(strstr(out, "failed abs") && strstr(out, "failed up") && strstr(out, "failed esc") && strstr(out, "done ok"),
           "%s", out);
    free(out);

    /* allow_outputs_outside: true lets `run` write the absolute one; '..' stays refused */
    o = head(text, sizeof text, "\nallow_outputs_outside: true");
    snprintf(text + o, sizeof text - (size_t)o,
             "  - id: abs\n    output: %s/elsewhere/abs.png\n  - id: up\n    output: ../elsewhere/up.png\n", b.dir);
    snprintf(b.manifest, sizeof b.manifest, "%s/m2.yaml", b.dir);
    write_text(b.manifest, text);
    const char *args2[] = {"run", "m2.yaml", NULL};
    st = rt_run(&b, NULL, args2);
    CHECKF(rt_exit_code(st) == 3, "run exit %d", rt_exit_code(st));
    snprintf(p, sizeof p, "%s/elsewhere/abs.png", b.dir);
    CHECKF(sdb_file_exists(p), "%s not written", p);
    temps = 0;
    CHECK(count_tree(ew, &temps) == 1 && temps == 0);
    CHECK(rt_sql(b.db, "SELECT count(*) FROM jobs WHERE id='abs' AND state='done'") == 1);
    CHECK(rt_sql(b.db, "SELECT count(*) FROM jobs WHERE id='up' AND state='failed'") == 1);
}

/* ---- a folder swapped for a symlink while the job computes (an executor without compute that
   does the swap; the write must see it) ---- */

typedef struct { char swap[1024], target[1024]; int swapped; } swap_exec;

static int sx_load(void *ud, const char *path, const char *config_dir, const char *tokenizer_dir, int threads,
                   int weights_f16, void **model, const char **model_id, const sdb_log *log, sdb_err *err)
{
    (void)ud; (void)path; (void)config_dir; (void)tokenizer_dir; (void)threads; (void)weights_f16; (void)log; (void)err;
    static int token;
    *model = &token;
    *model_id = "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a";
    return 0;
}

static int sx_run(void *ud, void *model, const sdb_job_spec *j, sdb_run_step_fn on_step, void *step_ud,
                  uint8_t **png, size_t *png_len, const sdb_log *log, sdb_err *err)
{
    (void)model; (void)log; (void)on_step; (void)step_ud;
    swap_exec *sx = ud;
    if (!sx->swapped && !strcmp(j->id, "victim")) {   /* validated as a folder; now a symlink */
        char old[1100];
        snprintf(old, sizeof old, "%s.was", sx->swap);
        CHECK(rename(sx->swap, old) == 0);
        CHECK(symlink(sx->target, sx->swap) == 0);
        sx->swapped = 1;
    }
    *png = (uint8_t *)strdup("not really a png");
    *png_len = 16;
    return *png ? 0 : sdb_fail(err, SDB_ENOMEM, "out of memory");
}

static void sx_unload(void *ud, void *model) { (void)ud; (void)model; }

static void symlink_swapped_before_write(void)
{
    const char *dir = sdb_t_tmpdir();
    char mp[1024], p[1024], elsewhere[1024], text[8192];
    snprintf(mp, sizeof mp, "%s/m.yaml", dir);
    snprintf(p, sizeof p, "%s/out/sub", dir);
    mkdir_p(p);
    snprintf(elsewhere, sizeof elsewhere, "%s/elsewhere", dir);
    mkdir_p(elsewhere);
    int o = head(text, sizeof text, "");
    snprintf(text + o, sizeof text - (size_t)o, "  - id: victim\n    output: sub/victim.png\n  - id: after\n    output: sub/after.png\n");
    write_text(mp, text);
    sdb_manifest m;
    sdb_err err;
    CHECK_OK(sdb_manifest_load(&m, mp, &err), &err);
    CHECK_OK(sdb_manifest_check(&m, &err), &err);   /* sub is a plain folder here */
    swap_exec sx;
    memset(&sx, 0, sizeof sx);
    snprintf(sx.swap, sizeof sx.swap, "%s/out/sub", dir);
    snprintf(sx.target, sizeof sx.target, "%s", elsewhere);
    sdb_executor ex = {&sx, sx_load, sx_run, sx_unload, NULL};
    sdb_run_opts ro;
    memset(&ro, 0, sizeof ro);
    ro.max_attempts = 1;
    sdb_run_result res;
    sdb_log quiet = {0};
    CHECK_OK(sdb_run_manifest(&m, &ex, &ro, &res, &quiet, &err), &err);
    CHECK(sx.swapped);
    CHECKF(res.failed == 2 && res.done == 0, "%d failed, %d done", res.failed, res.done);
    int temps = 0;
    CHECKF(count_tree(elsewhere, &temps) == 0, "written through the symlink into %s", elsewhere);
    snprintf(p, sizeof p, "%s/out", dir);
    count_tree(p, &temps);
    CHECK(temps == 0);
    char db[1100];
    snprintf(db, sizeof db, "%s/out/.sdbatch/state.db", dir);
    snprintf(p, sizeof p, "SELECT count(*) FROM jobs WHERE id='victim' AND state='failed' AND error LIKE '%%%s/out/sub is a symlink (to %s)%%'",
             dir, elsewhere);
    CHECKF(rt_sql(db, "%s", p) == 1, "%s", p);
    sdb_manifest_free(&m);

    /* the state folder as a symlink out of output_dir: the run does not start */
    const char *dir2 = sdb_t_tmpdir();
    snprintf(mp, sizeof mp, "%s/m.yaml", dir2);
    snprintf(p, sizeof p, "%s/out", dir2);
    mkdir_p(p);
    snprintf(elsewhere, sizeof elsewhere, "%s/elsewhere", dir2);
    mkdir_p(elsewhere);
    snprintf(p, sizeof p, "%s/out/.sdbatch", dir2);
    CHECK(symlink(elsewhere, p) == 0);
    o = head(text, sizeof text, "");
    snprintf(text + o, sizeof text - (size_t)o, "  - id: a\n");
    write_text(mp, text);
    CHECK_OK(sdb_manifest_load(&m, mp, &err), &err);
    sdb_manifest_hash_inputs(&m, &err);
    int rc = sdb_run_manifest(&m, &ex, &ro, &res, &quiet, &err);
    CHECKF(rc != 0 && strstr(err.msg, "/out/.sdbatch is a symlink"), "rc %d: %s", rc, err.msg);
    CHECK(count_tree(elsewhere, NULL) == 0);
    sdb_manifest_free(&m);
}

/* ---- the daemon's roots ---- */

static void put_manifest(const char *spool, const char *name, const char *text)
{
    char p[1200];
    snprintf(p, sizeof p, "%s/incoming/%s", spool, name);
    write_text(p, text);
    struct timespec ts[2] = {{time(NULL) - 60, 0}, {time(NULL) - 60, 0}};
    utimensat(AT_FDCWD, p, ts, 0);
}

static void daemon_roots(void)
{
    const char *dir = sdb_t_tmpdir();
    char spool[1024], allowed[1024], other[1024], p[1200], text[8192];
    snprintf(spool, sizeof spool, "%s/spool", dir);
    snprintf(allowed, sizeof allowed, "%s/allowed", dir);
    snprintf(other, sizeof other, "%s/other", dir);
    mkdir_p(allowed);
    mkdir_p(other);
    snprintf(p, sizeof p, "%s/lnk", allowed);
    CHECK(symlink(other, p) == 0);
    sdb_err err;
    swap_exec sx;
    memset(&sx, 0, sizeof sx);
    sdb_executor ex = {&sx, sx_load, sx_run, sx_unload, NULL};
    char logp[1100];
    snprintf(logp, sizeof logp, "%s/daemon.log", dir);
    sdb_dlog l;
    CHECK_OK(sdb_dlog_open(&l, logp, 1, &err), &err);
    volatile sig_atomic_t stop = 0;
    sdb_daemon_opts o;
    memset(&o, 0, sizeof o);
    o.spool = spool;
    o.once = 1;
    o.stop = &stop;
    o.log = &l;
    o.executor = &ex;
    /* no root: refused before anything is created */
    int rc = sdb_daemon_run(&o, &err);
    CHECKF(rc == SDB_EINVAL && strstr(err.msg, "--allow-root"), "rc %d: %s", rc, err.msg);
    CHECK(!sdb_file_exists(spool));
    const char *missing[] = {"/no/such/root"};
    o.allow_roots = missing;
    o.n_allow_roots = 1;
    rc = sdb_daemon_run(&o, &err);
    CHECKF(rc == SDB_EINVAL && strstr(err.msg, "/no/such/root"), "rc %d: %s", rc, err.msg);

    CHECK_OK(sdb_spool_init(spool, &err), &err);
    const char *model = sdb_t_path("models/tiny-sd-inpaint");
    const char *img = sdb_t_path("refs/pipeline/inputs/scene_128x128.png");
    const char *msk = sdb_t_path("refs/pipeline/inputs/mask_128x128.png");
    static const char *const fmt = "version: 1\nmodel: %s\noutput_dir: %s\n%sjobs:\n  - id: a\n    image: %s\n    mask: %s\n    prompt: p\n";
    const struct { const char *name, *base, *sub, *extra; } mf[] = {
        {"inside.yaml", allowed, "out", ""},
        {"outside.yaml", other, "out", ""},
        {"via-link.yaml", allowed, "lnk/out", ""},              /* a symlink inside the root, out of it */
        {"flag.yaml", allowed, "out2", "allow_outputs_outside: true\n"},
    };
    for (int i = 0; i < 4; i++) {
        char dirv[1100];
        snprintf(dirv, sizeof dirv, "%s/%s", mf[i].base, mf[i].sub);
        snprintf(text, sizeof text, fmt, model, dirv, mf[i].extra, img, msk);
        put_manifest(spool, mf[i].name, text);
    }
    const char *roots[] = {allowed};
    o.allow_roots = roots;
    CHECK_OK(sdb_daemon_run(&o, &err), &err);
    sdb_dlog_close(&l);
    snprintf(p, sizeof p, "%s/done/inside.yaml", spool);
    CHECKF(sdb_file_exists(p), "%s", p);
    snprintf(p, sizeof p, "%s/out/a.png", allowed);
    CHECKF(sdb_file_exists(p), "%s", p);
    const char *failed[] = {"outside.yaml", "via-link.yaml", "flag.yaml"};
    const char *why[] = {"is not inside a folder this daemon may write (--allow-root: ",
                         "is not inside a folder this daemon may write (--allow-root: ",
                         "'allow_outputs_outside' is refused by the daemon"};
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s/failed/%s.errors.txt", spool, failed[i]);
        char *t = NULL;
        if (sdb_read_file(p, &t, NULL, &err)) { CHECKF(0, "%s missing", p); continue; }
        CHECKF(strstr(t, why[i]) != NULL, "%s: %s", failed[i], t);
        if (i == 1) CHECKF(strstr(t, other) != NULL, "the resolved folder is named: %s", t);
        if (i == 2) CHECKF(strstr(t, ":4:24: ") != NULL, "at its line:column: %s", t);
        free(t);
    }
    CHECKF(count_tree(other, NULL) == 0, "something was written in %s", other);
    snprintf(p, sizeof p, "%s/out2", allowed);
    CHECK(!sdb_file_exists(p));

    /* the command line: no --allow-root is a usage error (exit 2) */
    char out[2048], cmd[1400];
    snprintf(cmd, sizeof cmd, "daemon --spool %s/spool2 --once", dir);
    int st = sdb_t_sdbatch(cmd, out, sizeof out);
    CHECKF(st == 2 && strstr(out, "missing --allow-root"), "exit %d: %s", st, out);
}

int main(void)
{
    RUN(validate_refuses_with_positions);
    RUN(run_fails_those_jobs_alone);
    RUN(symlink_swapped_before_write);
    RUN(daemon_roots);
    return sdb_t_done();
}
