/*
 * fuzz_manifest.c — libFuzzer harness: manifest text (YAML -> schema checks -> resolved jobs,
 * including globs and the {stem}/{name}/{dir} templates) through sdb_manifest_parse.
 *
 * Globs read the file system, so the manifest lives in this process's temporary folder, which
 * holds a few image files (a.png, b.png, sub/c.jpg, d.txt) for them to match, and an input is
 * skipped (not parsed) when one of its YAML scalars could point elsewhere: an absolute path,
 * '~', or a '..' component. Relative paths resolve against the manifest's folder, so everything
 * else stays inside the temporary folder. Every parse ends in jobs or diagnostics; when it has no
 * errors, every job has an id, a prompt and an output.
 */
#include "sdb/manifest.h"
#include "fuzz_util.h"

#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <yaml.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* 1 when no scalar of the YAML text could name a path outside the temporary folder. */
static int confined(const uint8_t *data, size_t size)
{
    yaml_parser_t p;
    yaml_event_t ev;
    if (!yaml_parser_initialize(&p)) return 0;
    yaml_parser_set_input_string(&p, data, size);
    int ok = 1;
    for (int k = 0; k < 100000; k++) {
        if (!yaml_parser_parse(&p, &ev)) break; /* a syntax error: the parse stops there too */
        if (ev.type == YAML_SCALAR_EVENT) {
            const char *v = (const char *)ev.data.scalar.value;
            if (v[0] == '/' || v[0] == '~' || strstr(v, "..")) ok = 0;
            /* NUL inside a scalar: everything after it is invisible to the C string checks */
            if (strlen(v) != ev.data.scalar.length) ok = 0;
        }
        int end = ev.type == YAML_STREAM_END_EVENT;
        yaml_event_delete(&ev);
        if (end || !ok) break;
    }
    yaml_parser_delete(&p);
    return ok;
}

static void make_tree(void)
{
    static int done;
    if (done) return;
    done = 1;
    char sub[700];
    snprintf(sub, sizeof sub, "%s/sub", fuzz_tmp());
    if (mkdir(sub, 0700) != 0) { perror(sub); abort(); }
    (void)fuzz_write_tmp("a.png", "\x89PNG\r\n\x1a\n", 8);
    (void)fuzz_write_tmp("b.png", "\x89PNG\r\n\x1a\n", 8);
    (void)fuzz_write_tmp("sub/c.jpg", "\xff\xd8\xff", 3);
    (void)fuzz_write_tmp("d.txt", "text", 4);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    make_tree();
    if (!confined(data, size)) return 0;
    char path[700];
    snprintf(path, sizeof path, "%s/manifest.yaml", fuzz_tmp());
    sdb_manifest m;
    sdb_err err = {0};
    int rc = sdb_manifest_parse(&m, (const char *)data, size, path, &err);
    FUZZ_CHECK(m.n_jobs >= 0 && m.n_jobs <= SDB_MANIFEST_MAX_JOBS);
    if (rc == 0) {
        FUZZ_CHECK(m.n_errors == 0);
        for (int i = 0; i < m.n_jobs; i++) {
            const sdb_job_spec *j = &m.jobs[i];
            FUZZ_CHECK(j->id && j->prompt && j->negative_prompt && j->output);
            FUZZ_CHECK(sdb_manifest_find(&m, j->id) == i);
        }
    } else {
        FUZZ_CHECK(m.n_errors > 0 && err.msg[0]);
    }
    sdb_manifest_free(&m);
    return 0;
}
