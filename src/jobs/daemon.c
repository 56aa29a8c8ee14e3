/*
 * daemon.c — the job daemon: a spool of manifests run one after another by one process, with the
 * models kept loaded (see daemon.h for the layout and the rules).
 *
 * The daemon adds no state of its own: where a manifest is (incoming/active/done/failed) says
 * what happens to it next, and its jobs live in the runner's state database. Every change of
 * folder is one rename(2); every file the daemon writes is written to a temp name and renamed.
 * So a SIGKILL at any instant leaves a spool that the next daemon picks up as is:
 *   - a manifest in incoming/: not started;
 *   - in active/: resumed first (the runner recovers the job the dead process was running);
 *   - failed/<name>.errors.txt without failed/<name>: the manifest is still in active/ and is
 *     checked again (same result, the errors file is rewritten).
 */
#include "sdb/daemon.h"
#include "sdb/model_find.h"
#include "sdb/fsutil.h"
#include "sdb/memlimit.h"
#include "sdb/store.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <yaml.h>

static const char *const spool_dirs[] = {"incoming", "active", "done", "failed"};

/* ---- the event log ---------------------------------------------------------------------------- */

int sdb_dlog_open(sdb_dlog *l, const char *path, int json, sdb_err *err)
{
    memset(l, 0, sizeof l[0]);
    l->json = json;
    if (!path) { l->f = stderr; return 0; }
    l->path = strdup(path);
    if (!l->path) return sdb_fail(err, SDB_ENOMEM, "out of memory");
    l->f = fopen(path, "a");
    if (!l->f) {
        int rc = sdb_fail_errno(err, SDB_EIO, "cannot open the log file %s", path);
        free(l->path);
        l->path = NULL;
        return rc;
    }
    setvbuf(l->f, NULL, _IOLBF, 0);
    return 0;
}

int sdb_dlog_reopen(sdb_dlog *l, sdb_err *err)
{
    if (!l->path) return 0;
    FILE *f = fopen(l->path, "a");
    if (!f) return sdb_fail_errno(err, SDB_EIO, "cannot reopen the log file %s", l->path);
    setvbuf(f, NULL, _IOLBF, 0);
    if (l->f && l->f != stderr) fclose(l->f);
    l->f = f;
    return 0;
}

void sdb_dlog_close(sdb_dlog *l)
{
    if (l->f && l->f != stderr) fclose(l->f);
    free(l->path);
    memset(l, 0, sizeof l[0]);
}

static void fmt_time(char *buf, size_t n)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    size_t k = strftime(buf, n, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + k, n - k, ".%03ldZ", ts.tv_nsec / 1000000);
}

/* A text value: bare when it is a plain word, else double-quoted with C escapes. */
static void put_text_value(FILE *f, const char *s)
{
    int bare = *s != '\0';
    for (const char *p = s; *p && bare; p++)
        if ((unsigned char)*p <= ' ' || *p == '"' || *p == '\\' || *p == '=' || *p == 0x7f) bare = 0;
    if (bare) { fputs(s, f); return; }
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') { fputc('\\', f); fputc(*p, f); }
        else if (*p == '\n') fputs("\\n", f);
        else if (*p == '\t') fputs("\\t", f);
        else if (*p == '\r') fputs("\\r", f);
        else if (*p < ' ' || *p == 0x7f) fprintf(f, "\\x%02x", *p);
        else fputc(*p, f);
    }
    fputc('"', f);
}

void sdb_dlog_event(sdb_dlog *l, const char *event, ...)
{
    if (!l || !l->f) return;
    if (l->reopen && *l->reopen) {
        *l->reopen = 0;
        sdb_err e;
        if (sdb_dlog_reopen(l, &e)) fprintf(stderr, "sdbatch daemon: %s\n", e.msg);
        else sdb_dlog_event(l, "log_reopened", "path", 's', l->path, NULL);
    }
    char ts[64];
    fmt_time(ts, sizeof ts);
    va_list ap;
    va_start(ap, event);
    if (l->json) {
        json_t *o = json_object();
        json_object_set_new(o, "time", json_string(ts));
        json_object_set_new(o, "event", json_string(event));
        const char *k;
        while ((k = va_arg(ap, const char *))) {
            int t = va_arg(ap, int);
            if (t == 's') {
                const char *v = va_arg(ap, const char *);
                json_object_set_new(o, k, v ? json_stringn_nocheck(v, strlen(v)) : json_null());
            } else if (t == 'i') json_object_set_new(o, k, json_integer(va_arg(ap, long long)));
            else { double v = va_arg(ap, double); json_object_set_new(o, k, isfinite(v) ? json_real(v) : json_null()); }
        }
        char *s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENSURE_ASCII);
        if (s) { fprintf(l->f, "%s\n", s); free(s); }
        json_decref(o);
    } else {
        fprintf(l->f, "%s %s", ts, event);
        const char *k;
        while ((k = va_arg(ap, const char *))) {
            int t = va_arg(ap, int);
            if (t == 's') {
                const char *v = va_arg(ap, const char *);
                if (!v) continue;
                fprintf(l->f, " %s=", k);
                put_text_value(l->f, v);
            } else if (t == 'i') fprintf(l->f, " %s=%lld", k, va_arg(ap, long long));
            else {
                double v = va_arg(ap, double);
                if (isfinite(v)) fprintf(l->f, " %s=%.3g", k, v);
            }
        }
        fputc('\n', l->f);
    }
    va_end(ap);
    fflush(l->f);
}

/* ---- the spool ------------------------------------------------------------------------------- */

static char *join2(const char *a, const char *b, const char *c)
{
    char *s = NULL;
    if (asprintf(&s, "%s/%s%s%s", a, b, c ? "/" : "", c ? c : "") < 0) return NULL;
    return s;
}

int sdb_spool_init(const char *spool, sdb_err *err)
{
    for (int i = 0; i < 4; i++) {
        char *p = join2(spool, spool_dirs[i], NULL);
        if (!p) return sdb_fail(err, SDB_ENOMEM, "out of memory");
        int rc = sdb_mkdirs(p, err);
        free(p);
        if (rc) return sdb_err_prefix(err, "spool %s", spool);
    }
    return 0;
}

int sdb_spool_lock(const char *spool, int *fd_out, sdb_err *err)
{
    *fd_out = -1;
    char *p = join2(spool, "daemon.pid", NULL);
    if (!p) return sdb_fail(err, SDB_ENOMEM, "out of memory");
    int fd = open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        int rc = sdb_fail_errno(err, SDB_EIO, "cannot open the pid file %s", p);
        free(p);
        return rc;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        char buf[64] = "";
        ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
        buf[n > 0 ? n : 0] = '\0';
        buf[strcspn(buf, "\r\n")] = '\0';
        close(fd);
        int rc;
        if (e == EWOULDBLOCK)
            rc = sdb_fail(err, SDB_ESTATE,
                          "another sdbatch daemon%s%s%s is already running on the spool %s (it holds the "
                          "lock on %s); two daemons never share a spool: stop that one first, or give this "
                          "one another --spool", buf[0] ? " (pid " : "", buf, buf[0] ? ")" : "", spool, p);
        else rc = sdb_fail(err, SDB_EIO, "cannot lock the pid file %s: %s", p, strerror(e));
        free(p);
        return rc;
    }
    char buf[32];
    int n = snprintf(buf, sizeof buf, "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, buf, (size_t)n, 0) != n) {
        int rc = sdb_fail_errno(err, SDB_EIO, "cannot write the pid file %s", p);
        close(fd);
        free(p);
        return rc;
    }
    fsync(fd);
    free(p);
    *fd_out = fd;
    return 0;
}

void sdb_spool_unlock(int fd)
{
    if (fd < 0) return;
    /* the file stays (unlinking a lock file races with a daemon opening it); empty = nobody */
    if (ftruncate(fd, 0) != 0) { /* nothing to do */ }
    close(fd);
}

/* ---- YAML surgery: the daemon's `priority:` key, relative paths ------------------------------ */

static const char *node_str(const yaml_node_t *n)
{
    return n && n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
}

/* Parses text into doc; 0 when it is one well-formed document. */
static int load_doc(const char *text, size_t len, yaml_document_t *doc)
{
    yaml_parser_t p;
    if (!yaml_parser_initialize(&p)) return -1;
    yaml_parser_set_input_string(&p, (const unsigned char *)text, len);
    int ok = yaml_parser_load(&p, doc);
    yaml_parser_delete(&p);
    if (!ok) return -1;
    if (!yaml_document_get_root_node(doc)) { yaml_document_delete(doc); return -1; }
    return 0;
}

typedef struct {
    int has;            /* the root mapping has a `priority` key */
    int block;          /* ... in block style (the key can be blanked out) */
    int bad;            /* its value is not a whole number */
    long long value;
    size_t start, end;  /* key start .. value end (byte offsets) */
    sdb_pos pos;        /* of the value */
    char shown[64];     /* the bad value as written */
} prio_info;

static void find_priority(const char *text, size_t len, prio_info *pi)
{
    memset(pi, 0, sizeof *pi);
    yaml_document_t doc;
    if (load_doc(text, len, &doc)) return;
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (root->type == YAML_MAPPING_NODE) {
        for (yaml_node_pair_t *pr = root->data.mapping.pairs.start; pr < root->data.mapping.pairs.top; pr++) {
            yaml_node_t *k = yaml_document_get_node(&doc, pr->key), *v = yaml_document_get_node(&doc, pr->value);
            const char *ks = node_str(k);
            if (!ks || strcmp(ks, "priority") || !v) continue;
            pi->has = 1;
            pi->block = root->data.mapping.style != YAML_FLOW_MAPPING_STYLE;
            pi->start = k->start_mark.index;
            pi->end = v->end_mark.index;
            pi->pos = (sdb_pos){(int)v->start_mark.line + 1, (int)v->start_mark.column + 1};
            const char *vs = node_str(v);
            char *end = NULL;
            errno = 0;
            long long x = vs && v->data.scalar.style == YAML_PLAIN_SCALAR_STYLE ? strtoll(vs, &end, 10) : 0;
            if (!vs || !*vs || !end || *end || errno || x < -1000000 || x > 1000000) {
                pi->bad = 1;
                snprintf(pi->shown, sizeof pi->shown, "%s", vs ? vs : v->type == YAML_MAPPING_NODE ? "a mapping" : "a list");
            } else pi->value = x;
            break;
        }
    }
    yaml_document_delete(&doc);
}

static void add_error(sdb_manifest *m, sdb_pos pos, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void add_error(sdb_manifest *m, sdb_pos pos, const char *fmt, ...)
{
    char msg[1536];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    char *text = NULL;
    if (asprintf(&text, "%s:%d:%d: %s", m->path, pos.line, pos.col, msg) < 0) return;
    if (m->n_diags == m->cap_diags) {
        int cap = m->cap_diags ? 2 * m->cap_diags : 8;
        sdb_diag *d = realloc(m->diags, (size_t)cap * sizeof *d);
        if (!d) { free(text); return; }
        m->diags = d;
        m->cap_diags = cap;
    }
    m->diags[m->n_diags].is_error = 1;
    m->diags[m->n_diags].text = text;
    m->n_diags++;
    m->n_errors++;
}

int sdb_spool_load_manifest(sdb_manifest *m, const char *path, int *priority, sdb_err *err)
{
    if (priority) *priority = 0;
    char *text = NULL;
    size_t len = 0;
    int rc = sdb_read_file(path, &text, &len, err);
    if (rc) {
        memset(m, 0, sizeof *m);
        return rc;
    }
    prio_info pi;
    find_priority(text, len, &pi);
    if (pi.has && pi.block)
        for (size_t i = pi.start; i < pi.end && i < len; i++) if (text[i] != '\n') text[i] = ' ';
    rc = sdb_manifest_parse(m, text, len, path, err);
    free(text);
    if (pi.has && pi.block) {
        if (pi.bad) {
            add_error(m, pi.pos, "'priority' must be a whole number in -1000000..1000000, got %s", pi.shown);
            if (!rc) rc = sdb_fail(err, SDB_EFORMAT, "%s", m->diags[m->n_diags - 1].text);
        } else if (priority) *priority = (int)pi.value;
    }
    return rc;
}

/* Lexically normalised absolute path of base/p (the manifest parser's own rule). */
static char *abs_norm(const char *base, const char *p)
{
    char *joined = NULL;
    if (p[0] == '/') joined = strdup(p);
    else {
        char cwd[PATH_MAX];
        if (base && base[0] == '/') joined = sdb_path_join(base, p);
        else {
            if (!getcwd(cwd, sizeof cwd)) strcpy(cwd, "/");
            char *b = base ? sdb_path_join(cwd, base) : strdup(cwd);
            joined = b ? sdb_path_join(b, p) : NULL;
            free(b);
        }
    }
    if (!joined) return NULL;
    char *out = malloc(strlen(joined) + 2);
    if (!out) { free(joined); return NULL; }
    size_t o = 0;
    for (const char *s = joined; *s; ) {
        while (*s == '/') s++;
        if (!*s) break;
        const char *e = strchr(s, '/');
        size_t n = e ? (size_t)(e - s) : strlen(s);
        if (n == 1 && s[0] == '.') {}
        else if (n == 2 && s[0] == '.' && s[1] == '.') {
            while (o > 0 && out[o - 1] != '/') o--;
            if (o > 0) o--;
        } else {
            out[o++] = '/';
            memcpy(out + o, s, n);
            o += n;
        }
        s += n;
    }
    if (!o) out[o++] = '/';
    out[o] = '\0';
    free(joined);
    return out;
}

typedef struct { size_t start, end; char *with; } repl;
typedef struct { repl *r; int n, cap; int *seen; int n_seen; } repls;

static int seen_node(repls *rs, int id)
{
    for (int i = 0; i < rs->n_seen; i++) if (rs->seen[i] == id) return 1;
    int *s = realloc(rs->seen, (size_t)(rs->n_seen + 1) * sizeof *s);
    if (!s) return 1;
    rs->seen = s;
    rs->seen[rs->n_seen++] = id;
    return 0;
}

static char *yaml_dquote(const char *s)
{
    size_t n = strlen(s);
    char *o = malloc(4 * n + 3), *q = o;
    if (!o) return NULL;
    *q++ = '"';
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') { *q++ = '\\'; *q++ = (char)*p; }
        else if (*p < ' ') q += sprintf(q, "\\x%02x", *p);
        else *q++ = (char)*p;
    }
    *q++ = '"';
    *q = '\0';
    return o;
}

/* model_like: a `model:` / `vae:` value, whose bare name is looked up in models/ folders beside
 * the manifest (model_find.h) before the manifest leaves its folder */
static void maybe_rewrite(repls *rs, yaml_document_t *doc, int vid, const char *text, const char *dir, int model_like)
{
    yaml_node_t *v = yaml_document_get_node(doc, vid);
    const char *s = node_str(v);
    if (!s || !*s || s[0] == '/' || !strncmp(s, "{dir}", 5)) return;
    size_t a = v->start_mark.index, b = v->end_mark.index;
    if (b <= a || strchr("&!*", text[a])) return;   /* anchored / tagged / alias: leave it */
    if (seen_node(rs, vid)) return;
    char *abs = NULL;
    sdb_err e;
    if (!model_like || sdb_model_resolve(s, dir, getenv("SDB_MODELS"), "model", &abs, &e) != 0) abs = abs_norm(dir, s);
    char *q = abs ? yaml_dquote(abs) : NULL;
    free(abs);
    if (!q) return;
    if (rs->n == rs->cap) {
        int cap = rs->cap ? 2 * rs->cap : 16;
        repl *r = realloc(rs->r, (size_t)cap * sizeof *r);
        if (!r) { free(q); return; }
        rs->r = r;
        rs->cap = cap;
    }
    rs->r[rs->n++] = (repl){a, b, q};
}

static void rewrite_job_map(repls *rs, yaml_document_t *doc, yaml_node_t *mp, const char *text, const char *dir)
{
    if (!mp || mp->type != YAML_MAPPING_NODE) return;
    for (yaml_node_pair_t *pr = mp->data.mapping.pairs.start; pr < mp->data.mapping.pairs.top; pr++) {
        const char *k = node_str(yaml_document_get_node(doc, pr->key));
        const char *v = node_str(yaml_document_get_node(doc, pr->value));
        if (k && !strcmp(k, "mask") && v && !strcmp(v, "alpha")) continue;   /* `mask: alpha` is no path (issue 17) */
        if (k && (!strcmp(k, "image") || !strcmp(k, "mask") || !strcmp(k, "glob") || !strcmp(k, "vae")))
            maybe_rewrite(rs, doc, pr->value, text, dir, !strcmp(k, "vae"));
    }
}

static int cmp_repl(const void *a, const void *b)
{
    const repl *x = a, *y = b;
    return x->start < y->start ? -1 : x->start > y->start;
}

int sdb_spool_rewrite_paths(const char *text, size_t len, const char *dir, char **out, size_t *out_len,
                            sdb_err *err)
{
    *out = NULL;
    yaml_document_t doc;
    if (load_doc(text, len, &doc)) return sdb_fail(err, SDB_EFORMAT, "not a well-formed YAML document");
    repls rs;
    memset(&rs, 0, sizeof rs);
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (root->type == YAML_MAPPING_NODE)
        for (yaml_node_pair_t *pr = root->data.mapping.pairs.start; pr < root->data.mapping.pairs.top; pr++) {
            const char *k = node_str(yaml_document_get_node(&doc, pr->key));
            yaml_node_t *v = yaml_document_get_node(&doc, pr->value);
            if (!k || !v) continue;
            if (!strcmp(k, "model") || !strcmp(k, "output_dir") || !strcmp(k, "model_config") || !strcmp(k, "tokenizer"))
                maybe_rewrite(&rs, &doc, pr->value, text, dir, !strcmp(k, "model"));
            else if (!strcmp(k, "defaults")) rewrite_job_map(&rs, &doc, v, text, dir);
            else if (!strcmp(k, "jobs") && v->type == YAML_SEQUENCE_NODE)
                for (yaml_node_item_t *it = v->data.sequence.items.start; it < v->data.sequence.items.top; it++)
                    rewrite_job_map(&rs, &doc, yaml_document_get_node(&doc, *it), text, dir);
        }
    yaml_document_delete(&doc);
    if (rs.n > 1) qsort(rs.r, (size_t)rs.n, sizeof *rs.r, cmp_repl);
    char *buf = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&buf, &n);
    int rc = 0;
    if (!f) rc = sdb_fail(err, SDB_ENOMEM, "out of memory");
    else {
        size_t at = 0;
        for (int i = 0; i < rs.n; i++) {
            if (rs.r[i].start < at) continue;   /* overlapping (cannot happen with distinct nodes) */
            fwrite(text + at, 1, rs.r[i].start - at, f);
            fputs(rs.r[i].with, f);
            at = rs.r[i].end;
        }
        fwrite(text + at, 1, len - at, f);
        fclose(f);
        *out = buf;
        if (out_len) *out_len = n;
    }
    for (int i = 0; i < rs.n; i++) free(rs.r[i].with);
    free(rs.r);
    free(rs.seen);
    return rc;
}

/* ---- submit ---------------------------------------------------------------------------------- */

static int has_yaml_ext(const char *name)
{
    size_t n = strlen(name);
    return (n > 5 && !strcmp(name + n - 5, ".yaml")) || (n > 4 && !strcmp(name + n - 4, ".yml"));
}

static int fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

int sdb_spool_submit(const char *manifest_path, const char *spool, char **dest, sdb_err *err)
{
    if (dest) *dest = NULL;
    char *text = NULL, *out = NULL, *incoming = NULL, *tmp = NULL, *final = NULL;
    size_t len = 0, out_len = 0;
    int rc = sdb_read_file(manifest_path, &text, &len, err);
    if (rc) return rc;
    char *d = sdb_path_dirname(manifest_path);
    char *dir = d ? abs_norm(NULL, d) : NULL;
    free(d);
    if (!dir) { rc = sdb_fail(err, SDB_ENOMEM, "out of memory"); goto out; }
    sdb_err e2;
    if (sdb_spool_rewrite_paths(text, len, dir, &out, &out_len, &e2)) {
        /* not YAML: copied as is; the daemon will report it (in failed/) */
        out = text;
        out_len = len;
        text = NULL;
    }
    if ((rc = sdb_spool_init(spool, err))) goto out;
    incoming = join2(spool, "incoming", NULL);
    const char *base = strrchr(manifest_path, '/');
    base = base ? base + 1 : manifest_path;
    char stem[NAME_MAX + 1], ext[8];
    snprintf(stem, sizeof stem, "%s", base[0] == '.' ? base + 1 : base);
    if (has_yaml_ext(stem)) {
        char *dot = strrchr(stem, '.');
        snprintf(ext, sizeof ext, "%s", dot);
        *dot = '\0';
    } else snprintf(ext, sizeof ext, ".yaml");
    if (!stem[0]) snprintf(stem, sizeof stem, "manifest");
    if (asprintf(&tmp, "%s/.%s%s.tmp.%ld", incoming, stem, ext, (long)getpid()) < 0) { tmp = NULL; rc = sdb_fail(err, SDB_ENOMEM, "out of memory"); goto out; }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) { rc = sdb_fail_errno(err, SDB_EIO, "cannot create %s", tmp); goto out; }
    size_t off = 0;
    while (off < out_len) {
        ssize_t w = write(fd, out + off, out_len - off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) break;
        off += (size_t)w;
    }
    if (off != out_len || fsync(fd) != 0) {
        rc = sdb_fail_errno(err, SDB_EIO, "cannot write %s", tmp);
        close(fd);
        unlink(tmp);
        goto out;
    }
    close(fd);
    /* a free name: never replace a manifest waiting in incoming/ or running in active/ */
    for (int k = 1; k < 10000 && !rc; k++) {
        free(final);
        final = NULL;
        char name[NAME_MAX + 16];
        if (k == 1) snprintf(name, sizeof name, "%s%s", stem, ext);
        else snprintf(name, sizeof name, "%s-%d%s", stem, k, ext);
        char *act = join2(spool, "active", name);
        final = join2(spool, "incoming", name);
        int busy = !act || !final || sdb_file_exists(act);
        free(act);
        if (busy || !final) continue;
        if (renameat2(AT_FDCWD, tmp, AT_FDCWD, final, RENAME_NOREPLACE) == 0) break;
        if (errno == EEXIST) continue;
        if (errno == EINVAL || errno == ENOSYS) {   /* no RENAME_NOREPLACE here: link + unlink */
            if (link(tmp, final) == 0) { unlink(tmp); break; }
            if (errno == EEXIST) continue;
        }
        rc = sdb_fail_errno(err, SDB_EIO, "cannot rename %s to %s", tmp, final);
        unlink(tmp);
        goto out;
    }
    fsync_dir(incoming);
    if (dest) { *dest = final; final = NULL; }
out:
    free(text);
    free(out);
    free(dir);
    free(incoming);
    free(tmp);
    free(final);
    return rc;
}

/* ---- listing the spool ----------------------------------------------------------------------- */

typedef struct {
    char *name, *path;
    int priority;
    double mtime;
} entry;

static void entries_free(entry *e, int n)
{
    for (int i = 0; i < n; i++) { free(e[i].name); free(e[i].path); }
    free(e);
}

static int cmp_entry(const void *a, const void *b)
{
    const entry *x = a, *y = b;
    if (x->priority != y->priority) return x->priority > y->priority ? -1 : 1;
    if (x->mtime != y->mtime) return x->mtime < y->mtime ? -1 : 1;
    return strcmp(x->name, y->name);
}

/* The manifests of spool/<folder>, in run order. *unsettled counts the files too fresh to take. */
static int list_folder(const char *spool, const char *folder, double settle, entry **out, int *n_out, int *unsettled)
{
    *out = NULL;
    *n_out = 0;
    if (unsettled) *unsettled = 0;
    char *dir = join2(spool, folder, NULL);
    DIR *d = dir ? opendir(dir) : NULL;
    if (!d) { free(dir); return -1; }
    entry *v = NULL;
    int n = 0, cap = 0;
    double now = sdb_now_wall();
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.' || !has_yaml_ext(de->d_name)) continue;
        char *p = join2(dir, de->d_name, NULL);
        struct stat sb;
        if (!p || stat(p, &sb) != 0 || !S_ISREG(sb.st_mode)) { free(p); continue; }
        double mt = (double)sb.st_mtim.tv_sec + sb.st_mtim.tv_nsec * 1e-9;
        if (settle > 0 && now - mt < settle && now >= mt - 1.0) {
            if (unsettled) (*unsettled)++;
            free(p);
            continue;
        }
        if (n == cap) {
            cap = cap ? 2 * cap : 16;
            entry *nv = realloc(v, (size_t)cap * sizeof *nv);
            if (!nv) { free(p); break; }
            v = nv;
        }
        v[n].name = strdup(de->d_name);
        v[n].path = p;
        v[n].mtime = mt;
        v[n].priority = 0;
        char *text = NULL;
        size_t len = 0;
        sdb_err e;
        if (sdb_read_file(p, &text, &len, &e) == 0) {
            prio_info pi;
            find_priority(text, len, &pi);
            if (pi.has && !pi.bad) v[n].priority = (int)pi.value;
            free(text);
        }
        n++;
    }
    closedir(d);
    free(dir);
    if (n > 1) qsort(v, (size_t)n, sizeof *v, cmp_entry);
    *out = v;
    *n_out = n;
    return 0;
}

/* ---- progress of one manifest, from every state db of its folder ------------------------------ */

static int rank(sdb_job_state s) { return s == SDB_JOB_DONE ? 3 : s == SDB_JOB_RUNNING ? 2 : s == SDB_JOB_FAILED ? 1 : 0; }

static void manifest_progress(sdb_manifest *m, int counts[4])
{
    memset(counts, 0, 4 * sizeof counts[0]);
    sdb_err err;
    sdb_manifest_hash_inputs(m, &err);
    char *db = sdb_store_default_path(m->output_dir, 0, 0);
    char *dir = db ? sdb_path_dirname(db) : NULL;
    char **paths = NULL;
    int np = 0;
    if (dir) sdb_store_list(dir, &paths, &np, &err);
    free(db);
    free(dir);
    sdb_store **ss = calloc(np ? np : 1, sizeof *ss);
    int ns = 0;
    for (int i = 0; i < np && ss; i++) if (sdb_store_open(&ss[ns], paths[i], SDB_STORE_READONLY, &err) == 0) ns++;
    sdb_worker me;
    sdb_worker_self(&me);
    double now = sdb_now_wall();
    for (int i = 0; i < m->n_jobs; i++) {
        sdb_job_state best = SDB_JOB_PENDING;
        for (int s = 0; s < ns; s++) {
            sdb_job_row r;
            int found = 0;
            if (sdb_store_get(ss[s], m->jobs[i].id, &r, &found, &err) || !found) continue;
            sdb_job_state st = r.state;
            if (strcmp(r.params_hash, m->jobs[i].params_hash)) st = SDB_JOB_PENDING;   /* edited since */
            else if (st == SDB_JOB_RUNNING && !sdb_store_owner_alive(&r, &me, now)) st = SDB_JOB_PENDING;
            if (rank(st) > rank(best)) best = st;
            sdb_job_row_free(&r);
        }
        counts[best]++;
    }
    for (int s = 0; s < ns; s++) sdb_store_close(ss[s]);
    free(ss);
    sdb_store_list_free(paths, np);
}

int sdb_spool_status(const char *spool, FILE *out, int json, sdb_err *err)
{
    if (!sdb_is_dir(spool)) return sdb_fail(err, SDB_ENOTFOUND, "no spool at %s", spool);
    /* who holds the spool */
    long pid = 0;
    {
        char *p = join2(spool, "daemon.pid", NULL);
        int fd = p ? open(p, O_RDONLY | O_CLOEXEC) : -1;
        if (fd >= 0) {
            if (flock(fd, LOCK_SH | LOCK_NB) != 0 && errno == EWOULDBLOCK) {
                char buf[32] = "";
                ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
                buf[n > 0 ? n : 0] = '\0';
                pid = atol(buf);
                if (pid <= 0) pid = -1;
            }
            close(fd);
        }
        free(p);
    }
    static const char *const order[] = {"active", "incoming", "done", "failed"};
    json_t *doc = json ? json_object() : NULL, *arr = json ? json_array() : NULL;
    if (json) {
        json_object_set_new(doc, "spool", json_string(spool));
        json_object_set_new(doc, "daemon_pid", pid > 0 ? json_integer(pid) : json_null());
    } else {
        fprintf(out, "spool %s: ", spool);
        if (pid > 0) fprintf(out, "daemon running (pid %ld)\n", pid);
        else if (pid < 0) fprintf(out, "daemon running\n");
        else fprintf(out, "no daemon running\n");
    }
    int any = 0;
    for (int f = 0; f < 4; f++) {
        entry *v;
        int n;
        if (list_folder(spool, order[f], 0, &v, &n, NULL)) continue;
        for (int i = 0; i < n; i++) {
            any = 1;
            sdb_manifest m;
            sdb_err e;
            int prio = 0, counts[4] = {0};
            int rc = sdb_spool_load_manifest(&m, v[i].path, &prio, &e);
            int loaded = rc == 0;
            if (loaded) manifest_progress(&m, counts);
            char *errors = NULL;
            if (!strcmp(order[f], "failed")) {
                char *ep = NULL;
                if (asprintf(&ep, "%s.errors.txt", v[i].path) >= 0) {
                    if (sdb_read_file(ep, &errors, NULL, &e)) errors = NULL;
                    free(ep);
                }
            }
            if (json) {
                json_t *o = json_object();
                json_object_set_new(o, "name", json_string(v[i].name));
                json_object_set_new(o, "folder", json_string(order[f]));
                json_object_set_new(o, "path", json_string(v[i].path));
                json_object_set_new(o, "priority", json_integer(v[i].priority));
                json_object_set_new(o, "total", loaded ? json_integer(m.n_jobs) : json_null());
                json_object_set_new(o, "done", loaded ? json_integer(counts[SDB_JOB_DONE]) : json_null());
                json_object_set_new(o, "failed", loaded ? json_integer(counts[SDB_JOB_FAILED]) : json_null());
                json_object_set_new(o, "pending", loaded ? json_integer(counts[SDB_JOB_PENDING]) : json_null());
                json_object_set_new(o, "running", loaded ? json_integer(counts[SDB_JOB_RUNNING]) : json_null());
                json_object_set_new(o, "errors", errors ? json_string(errors) : json_null());
                json_array_append_new(arr, o);
            } else {
                fprintf(out, "  %-8s %-32s", order[f], v[i].name);
                if (loaded)
                    fprintf(out, " %d/%d done (%.0f%%), %d failed, %d pending, %d running", counts[SDB_JOB_DONE], m.n_jobs,
                            m.n_jobs ? 100.0 * counts[SDB_JOB_DONE] / m.n_jobs : 100.0, counts[SDB_JOB_FAILED],
                            counts[SDB_JOB_PENDING], counts[SDB_JOB_RUNNING]);
                else fprintf(out, " does not load: %s", e.msg);
                if (v[i].priority) fprintf(out, "  priority %d", v[i].priority);
                fputc('\n', out);
                if (errors) {
                    char *ep = NULL;
                    if (asprintf(&ep, "%s.errors.txt", v[i].path) >= 0) { fprintf(out, "           errors: %s\n", ep); free(ep); }
                }
            }
            free(errors);
            sdb_manifest_free(&m);
        }
        entries_free(v, n);
    }
    if (json) {
        json_object_set_new(doc, "manifests", arr);
        char *s = json_dumps(doc, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        if (s) { fprintf(out, "%s\n", s); free(s); }
        json_decref(doc);
    } else if (!any) fprintf(out, "  (no manifests)\n");
    return 0;
}

/* ---- the daemon ------------------------------------------------------------------------------ */

typedef struct {
    char *path, *config, *tokenizer;
    int threads, weights_f16;
    void *model;
    const char *id;
    unsigned long long used;
} cached_model;

typedef struct daemon_ctx {
    const sdb_daemon_opts *o;
    const sdb_executor *real;
    sdb_executor ex;          /* the caching executor handed to the runner */
    cached_model *models;
    int n_models, max_models;
    unsigned long long tick;
    const char *cur;          /* the manifest being run (its name) */
    char **roots;             /* o->allow_roots resolved (realpath) */
    int n_roots;
    char *crash_file;         /* active/.<name>.starts of the manifest being run, while nonzero */
} daemon_ctx;

/* The runner's logger -> events. */
static void log_sink(void *ud, sdb_log_level level, const char *msg)
{
    daemon_ctx *d = ud;
    sdb_dlog_event(d->o->log, "log", "level", 's', sdb_log_level_name(level), "manifest", 's', d->cur,
                   "message", 's', msg, NULL);
}

/* What the daemon may still take in MiB: MemAvailable, or its memory cgroup's room when that is
 * smaller (a systemd MemoryMax=, a container's limit; memlimit.h); -1 when neither is known. */
static double mem_available_mb(void)
{
    return sdb_mem_limit_mib(0, 0, NULL, NULL);
}

static int same_str(const char *a, const char *b) { return a && b ? !strcmp(a, b) : a == b; }

static void cached_free(cached_model *c)
{
    free(c->path);
    free(c->config);
    free(c->tokenizer);
}

/* Unloads the least recently used cached model; avail_mb >= 0: for lack of memory (logged). */
static void evict_lru(daemon_ctx *d, double avail_mb)
{
    assert(d->n_models > 0);
    int lru = 0;
    for (int i = 1; i < d->n_models; i++) if (d->models[i].used < d->models[lru].used) lru = i;
    if (avail_mb >= 0)
        sdb_dlog_event(d->o->log, "model_evicted", "model", 's', d->models[lru].path, "reason", 's', "memory",
                       "available_mb", 'f', avail_mb, NULL);
    else
        sdb_dlog_event(d->o->log, "model_evicted", "model", 's', d->models[lru].path, NULL);
    d->real->unload(d->real->ud, d->models[lru].model);
    cached_free(&d->models[lru]);
    d->models[lru] = d->models[--d->n_models];
}

static int cache_load(void *ud, const char *path, const char *config, const char *tokenizer, int threads,
                      int weights_f16, void **model, const char **model_id, const sdb_log *log, sdb_err *err)
{
    daemon_ctx *d = ud;
    for (int i = 0; i < d->n_models; i++)
        if (!strcmp(d->models[i].path, path) && same_str(d->models[i].config, config) &&
            same_str(d->models[i].tokenizer, tokenizer) && d->models[i].threads == threads &&
            d->models[i].weights_f16 == weights_f16) {
            d->models[i].used = ++d->tick;
            *model = d->models[i].model;
            *model_id = d->models[i].id;
            sdb_dlog_event(d->o->log, "model_reused", "manifest", 's', d->cur, "model", 's', path, NULL);
            return 0;
        }
    /* a memory floor: drop cached models (LRU first) while the system is short of memory */
    double avail;
    while (d->o->min_free_mb > 0 && d->n_models > 0 && (avail = mem_available_mb()) >= 0 && avail < d->o->min_free_mb)
        evict_lru(d, avail);
    while (d->n_models >= d->max_models && d->n_models > 0) evict_lru(d, -1);
    double t0 = sdb_now_mono();
    int rc = d->real->load(d->real->ud, path, config, tokenizer, threads, weights_f16, model, model_id, log, err);
    if (rc) return rc;
    cached_model *cm = &d->models[d->n_models];
    memset(cm, 0, sizeof *cm);
    cm->path = strdup(path);
    cm->config = config ? strdup(config) : NULL;
    cm->tokenizer = tokenizer ? strdup(tokenizer) : NULL;
    if (!cm->path || (config && !cm->config) || (tokenizer && !cm->tokenizer)) {
        cached_free(cm);
        d->real->unload(d->real->ud, *model);
        return sdb_fail(err, SDB_ENOMEM, "out of memory");
    }
    cm->threads = threads;
    cm->weights_f16 = weights_f16;
    cm->model = *model;
    cm->id = *model_id;
    cm->used = ++d->tick;
    d->n_models++;
    sdb_dlog_event(d->o->log, "model_loaded", "manifest", 's', d->cur, "model", 's', path, "seconds", 'f',
                   sdb_now_mono() - t0, "cached", 'i', (long long)d->n_models, NULL);
    return 0;
}

static int cache_run(void *ud, void *model, const sdb_job_spec *job, sdb_run_step_fn on_step, void *step_ud,
                     uint8_t **png, size_t *png_len, const sdb_log *log, sdb_err *err)
{
    daemon_ctx *d = ud;
    sdb_dlog_event(d->o->log, "job_start", "manifest", 's', d->cur, "job", 's', job->id, "steps", 'i',
                   (long long)job->steps, NULL);
    return d->real->run(d->real->ud, model, job, on_step, step_ud, png, png_len, log, err);
}

static void cache_unload(void *ud, void *model) { (void)ud; (void)model; /* kept: unloaded on eviction/exit */ }

/* The real executor's memory estimate (the runner refuses a job that would not fit). */
static int cache_mem_estimate(void *ud, void *model, const sdb_job_spec *job, double *weights_mib, double *scratch_mib,
                              int *w, int *h, sdb_err *err)
{
    daemon_ctx *d = ud;
    if (!d->real->mem_estimate) return sdb_fail(err, SDB_EUNSUPPORTED, "no estimate");
    return d->real->mem_estimate(d->real->ud, model, job, weights_mib, scratch_mib, w, h, err);
}

static void cache_clear(daemon_ctx *d)
{
    for (int i = 0; i < d->n_models; i++) {
        d->real->unload(d->real->ud, d->models[i].model);
        cached_free(&d->models[i]);
    }
    d->n_models = 0;
}

/* The runner's per-job outcome (sdb_run_opts.on_job) -> job_done / job_failed / job_interrupted.
 * Seconds are logged to the tenth, as the runner's own lines show them. */
static void on_job(void *ud, const sdb_job_event *ev)
{
    daemon_ctx *d = ud;
    sdb_dlog *l = d->o->log;
    char tenths[48];
    snprintf(tenths, sizeof tenths, "%.1f", ev->seconds);
    double secs = strtod(tenths, NULL);
    switch (ev->state) {
    case SDB_JOB_DONE:
        if (d->crash_file) {   /* progress: the run of crashes (if any) is over */
            unlink(d->crash_file);
            free(d->crash_file);
            d->crash_file = NULL;
        }
        sdb_dlog_event(l, "job_done", "manifest", 's', d->cur, "job", 's', ev->id, "seconds", 'f', secs, "output", 's',
                       ev->output, NULL);
        break;
    case SDB_JOB_FAILED:
        sdb_dlog_event(l, "job_failed", "manifest", 's', d->cur, "job", 's', ev->id, "seconds", 'f', secs, "error", 's',
                       ev->error ? ev->error : "", NULL);
        break;
    default: {
        char detail[96];
        snprintf(detail, sizeof detail, "at step %d/%d (back to pending)", ev->step, ev->steps);
        sdb_dlog_event(l, "job_interrupted", "manifest", 's', d->cur, "job", 's', ev->id, "detail", 's', detail, NULL);
        break;
    }
    }
}

static char *spool_path(const daemon_ctx *d, const char *folder, const char *name, const char *suffix)
{
    char *s = NULL;
    if (asprintf(&s, "%s/%s/%s%s", d->o->spool, folder, name, suffix ? suffix : "") < 0) return NULL;
    return s;
}

/* active/<name> -> <folder>/<name>. */
static int move_to(daemon_ctx *d, const char *name, const char *folder, sdb_err *err)
{
    char *a = spool_path(d, "active", name, NULL), *b = spool_path(d, folder, name, NULL);
    int rc = 0;
    if (!a || !b) rc = sdb_fail(err, SDB_ENOMEM, "out of memory");
    else if (rename(a, b) != 0) rc = sdb_fail_errno(err, SDB_EIO, "cannot move %s to %s", a, b);
    else {
        char *dir = sdb_path_dirname(b);
        if (dir) fsync_dir(dir);
        free(dir);
    }
    free(a);
    free(b);
    return rc;
}

/* Writes failed/<name>.errors.txt (atomically), then moves the manifest there. */
static int fail_manifest(daemon_ctx *d, const char *name, const char *text, sdb_err *err)
{
    char *ep = spool_path(d, "failed", name, ".errors.txt");
    if (!ep) return sdb_fail(err, SDB_ENOMEM, "out of memory");
    int rc = sdb_write_file_atomic(ep, text, strlen(text), err);
    free(ep);
    if (rc) return rc;
    return move_to(d, name, "failed", err);
}

/* ---- where a manifest may write ---------------------------------------------------------------
 * The daemon writes only in its spool and in the manifests' output folders, and a manifest's
 * output_dir must lie in one of the --allow-root folders (symlinks resolved). Outputs outside
 * output_dir (`allow_outputs_outside: true`) are for `sdbatch run` only. Returns the root that
 * holds output_dir (the runner writes from it down without following symlinks), or NULL after
 * adding the manifest-level error. */
static const char *allowed_root(daemon_ctx *d, sdb_manifest *m)
{
    if (m->allow_outputs_outside)
        add_error(m, m->allow_outputs_outside_pos, "'allow_outputs_outside' is refused by the daemon: a spool "
                  "manifest's outputs stay inside its output_dir (use 'sdbatch run' for outputs elsewhere)");
    if (!m->output_dir) return NULL;
    char *real = sdb_path_resolve(m->output_dir);
    const char *root = NULL;
    for (int i = 0; real && i < d->n_roots && !root; i++)
        if (!strcmp(real, d->roots[i]) || sdb_path_below(real, d->roots[i])) root = d->roots[i];
    if (!root) {
        char list[1024] = "";
        for (int i = 0; i < d->n_roots; i++)
            snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", i ? ", " : "", d->roots[i]);
        add_error(m, m->output_dir_pos, "output_dir %s%s%s%s is not inside a folder this daemon may write "
                  "(--allow-root: %s)", m->output_dir, real && strcmp(real, m->output_dir) ? " (" : "",
                  real && strcmp(real, m->output_dir) ? real : "", real && strcmp(real, m->output_dir) ? ")" : "", list);
    }
    free(real);
    return m->allow_outputs_outside ? NULL : root;
}

static void roots_free(daemon_ctx *d)
{
    for (int i = 0; i < d->n_roots; i++) free(d->roots[i]);
    free(d->roots);
    d->roots = NULL;
    d->n_roots = 0;
}

/* Resolves o->allow_roots into d->roots: each must be an existing folder. */
static int roots_init(daemon_ctx *d, const sdb_daemon_opts *o, sdb_err *err)
{
    if (o->n_allow_roots <= 0)
        return sdb_fail(err, SDB_EINVAL, "no --allow-root: give the folder(s) the manifests' output_dir may be in "
                        "(e.g. --allow-root /srv/sdbatch/out); the daemon writes nowhere else");
    d->roots = calloc((size_t)o->n_allow_roots, sizeof *d->roots);
    if (!d->roots) return sdb_fail(err, SDB_ENOMEM, "out of memory");
    for (int i = 0; i < o->n_allow_roots; i++) {
        char *r = realpath(o->allow_roots[i], NULL);
        if (!r || !sdb_is_dir(r)) {
            int rc = sdb_fail_errno(err, SDB_EINVAL, "--allow-root %s: not an existing folder", o->allow_roots[i]);
            free(r);
            roots_free(d);
            return rc;
        }
        d->roots[d->n_roots++] = r;
    }
    return 0;
}

enum { PROC_NEXT = 0, PROC_STOP = 1 };

/* Runs active/<name> to its end (-> done/), or to a stop (stays in active/), or finds it invalid
 * (-> failed/). Returns PROC_NEXT / PROC_STOP, or an error for spool trouble. */
static int process(daemon_ctx *d, const char *name, sdb_err *err)
{
    const sdb_daemon_opts *o = d->o;
    sdb_dlog *l = o->log;
    char *path = spool_path(d, "active", name, NULL);
    char *fpath = spool_path(d, "failed", name, NULL);
    if (!path || !fpath) { free(path); free(fpath); return sdb_fail(err, SDB_ENOMEM, "out of memory"); }
    d->cur = name;
    double t0 = sdb_now_mono();
    sdb_manifest m;
    sdb_err e;
    sdb_err_clear(&e);
    int prio = 0, ret = PROC_NEXT;
    int rc = sdb_spool_load_manifest(&m, path, &prio, &e);
    if (rc == SDB_EIO && !sdb_file_exists(path)) {   /* taken away by hand */
        sdb_dlog_event(l, "manifest_gone", "manifest", 's', name, NULL);
        goto out;
    }
    if (rc != SDB_EIO && rc != SDB_ENOMEM && m.n_errors == m.n_input_errors) sdb_manifest_check(&m, &e);
    const char *confine_root = NULL;
    if (rc != SDB_EIO && rc != SDB_ENOMEM) confine_root = allowed_root(d, &m);
    if (rc == SDB_EIO || rc == SDB_ENOMEM || m.n_errors > m.n_input_errors) {
        /* the diagnostics, naming the manifest where it now lies */
        char *text = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&text, &len);
        if (!f) { ret = sdb_fail(err, SDB_ENOMEM, "out of memory"); goto out; }
        if (rc == SDB_EIO || rc == SDB_ENOMEM) fprintf(f, "%s: %s\n", fpath, e.msg);
        size_t pl = strlen(path);
        for (int i = 0; i < m.n_diags; i++) {
            const char *t = m.diags[i].text;
            if (!strncmp(t, path, pl)) fprintf(f, "%s%s\n", fpath, t + pl);
            else fprintf(f, "%s\n", t);
        }
        fclose(f);
        char *first = NULL;
        for (int i = 0; i < m.n_diags && !first; i++)
            if (m.diags[i].is_error) {
                const char *t = m.diags[i].text;
                if (asprintf(&first, "%s%s", strncmp(t, path, pl) ? "" : fpath, strncmp(t, path, pl) ? t : t + pl) < 0) first = NULL;
            }
        int ferr = fail_manifest(d, name, text, err);
        free(text);
        if (!ferr)
            sdb_dlog_event(l, "manifest_invalid", "manifest", 's', name, "errors", 'i', (long long)(m.n_errors ? m.n_errors : 1),
                           "first", 's', rc == SDB_EIO || rc == SDB_ENOMEM ? e.msg : first ? first : "", "moved_to", 's', fpath, NULL);
        free(first);
        if (ferr) ret = ferr;
        goto out;
    }
    /* A manifest that keeps taking the daemon down (a crash, an OOM kill, a stop that timed out)
       without a single job finishing in between is given up after max_crashes starts. */
    if (o->max_crashes > 0) {
        char *cf = NULL;
        if (asprintf(&cf, "%s/active/.%s.starts", o->spool, name) < 0) cf = NULL;
        int starts = 0;
        char *ct = NULL;
        if (cf && sdb_read_file(cf, &ct, NULL, &e) == 0) { starts = atoi(ct); free(ct); }
        starts++;
        if (cf && starts > o->max_crashes) {
            char *text = NULL;
            if (asprintf(&text, "%s: error: the daemon stopped %d times in a row while running this manifest without "
                                "finishing a job (crashed, killed, or out of memory); given up. Its jobs so far are in "
                                "its state database; submit it again to retry.\n", fpath, starts - 1) < 0) text = NULL;
            int ferr = text ? fail_manifest(d, name, text, err) : sdb_fail(err, SDB_ENOMEM, "out of memory");
            free(text);
            unlink(cf);
            free(cf);
            if (ferr) { ret = ferr; goto out; }
            sdb_dlog_event(l, "manifest_failed", "manifest", 's', name, "error", 's', "too many crashes", "starts", 'i',
                           (long long)(starts - 1), "moved_to", 's', fpath, NULL);
            goto out;
        }
        if (cf) {
            char num[32];
            snprintf(num, sizeof num, "%d\n", starts);
            if (sdb_write_file_atomic(cf, num, strlen(num), &e) == 0) d->crash_file = cf;
            else free(cf);
        }
    }
    sdb_dlog_event(l, "manifest_start", "manifest", 's', name, "jobs", 'i', (long long)m.n_jobs, "priority", 'i',
                   (long long)prio, "model", 's', m.model, "output_dir", 's', m.output_dir, NULL);
    if (m.n_input_errors)
        sdb_dlog_event(l, "manifest_bad_inputs", "manifest", 's', name, "jobs", 'i', (long long)m.n_input_errors, NULL);

    sdb_run_opts ro;
    memset(&ro, 0, sizeof ro);
    ro.threads = o->threads;
    ro.weights_f16 = o->weights_f16;
    ro.max_attempts = o->max_attempts > 0 ? o->max_attempts : 2;
    ro.on_job = on_job;
    ro.on_job_ud = d;
    ro.confine_root = confine_root;
    ro.stop = o->stop;
    sdb_log slog = {log_sink, d, SDB_LOG_INFO};
    const char *lv = getenv("SDB_LOG");
    if (lv && !strcmp(lv, "debug")) slog.level = SDB_LOG_DEBUG;
    sdb_run_result res;
    memset(&res, 0, sizeof res);
    sdb_err rerr;
    sdb_err_clear(&rerr);
    rc = sdb_run_manifest(&m, &d->ex, &ro, &res, &slog, &rerr);
    double secs = sdb_now_mono() - t0;
    if (rc == SDB_EINTERRUPTED || res.interrupted) {
        sdb_dlog_event(l, "manifest_interrupted", "manifest", 's', name, "signal", 'i',
                       (long long)(res.interrupted ? res.interrupted : (o->stop ? *o->stop : 0)), "done", 'i',
                       (long long)res.done, "total", 'i', (long long)res.total, NULL);
        ret = PROC_STOP;
        goto out;
    }
    if (rc) {
        char *text = NULL;
        if (asprintf(&text, "%s: error: %s\n", fpath, rerr.msg) < 0) { ret = sdb_fail(err, SDB_ENOMEM, "out of memory"); goto out; }
        int ferr = fail_manifest(d, name, text, err);
        free(text);
        if (ferr) { ret = ferr; goto out; }
        sdb_dlog_event(l, "manifest_failed", "manifest", 's', name, "error", 's', rerr.msg, "moved_to", 's', fpath, NULL);
        goto out;
    }
    if ((ret = move_to(d, name, "done", err))) goto out;
    sdb_dlog_event(l, "manifest_done", "manifest", 's', name, "total", 'i', (long long)res.total, "done", 'i',
                   (long long)res.done, "failed", 'i', (long long)res.failed, "pending", 'i', (long long)res.pending,
                   "running_elsewhere", 'i', (long long)res.running, "ran", 'i', (long long)res.ran, "seconds", 'f', secs,
                   NULL);
out:
    /* ended here (done, failed, invalid, or stopped cleanly by a signal): no crash to count */
    if (d->crash_file) { unlink(d->crash_file); free(d->crash_file); d->crash_file = NULL; }
    d->cur = NULL;
    sdb_manifest_free(&m);
    free(path);
    free(fpath);
    return ret;
}

/* Submit temp files (".<name>.tmp.<pid>") of processes that are gone. */
static void clean_incoming(const char *spool)
{
    char *dir = join2(spool, "incoming", NULL);
    DIR *dd = dir ? opendir(dir) : NULL;
    if (!dd) { free(dir); return; }
    struct dirent *de;
    while ((de = readdir(dd))) {
        if (de->d_name[0] != '.') continue;
        const char *t = strstr(de->d_name, ".tmp.");
        if (!t) continue;
        char *end;
        long pid = strtol(t + 5, &end, 10);
        if (end == t + 5 || *end || pid <= 0) continue;
        if (kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue;
        char *p = join2(dir, de->d_name, NULL);
        if (p) unlink(p);
        free(p);
    }
    closedir(dd);
    free(dir);
}

/* The next manifest to run: active/ first, then incoming/ (moved to active/). *name malloc'd or
 * NULL; *unsettled: files in incoming/ too fresh to take yet. */
static int next_manifest(daemon_ctx *d, char **name, int *unsettled, sdb_err *err)
{
    *name = NULL;
    *unsettled = 0;
    entry *v;
    int n;
    if (list_folder(d->o->spool, "active", 0, &v, &n, NULL) == 0) {
        if (n > 0) {
            *name = strdup(v[0].name);
            sdb_dlog_event(d->o->log, "manifest_resumed", "manifest", 's', v[0].name, NULL);
        }
        entries_free(v, n);
        if (*name) return 0;
    }
    if (list_folder(d->o->spool, "incoming", SDB_SPOOL_SETTLE_SECONDS, &v, &n, unsettled)) return 0;
    for (int i = 0; i < n && !*name; i++) {
        char *a = spool_path(d, "active", v[i].name, NULL);
        if (!a) { entries_free(v, n); return sdb_fail(err, SDB_ENOMEM, "out of memory"); }
        if (renameat2(AT_FDCWD, v[i].path, AT_FDCWD, a, RENAME_NOREPLACE) == 0 ||
            ((errno == EINVAL || errno == ENOSYS) && !sdb_file_exists(a) && rename(v[i].path, a) == 0)) {
            char *dir = join2(d->o->spool, "active", NULL);
            if (dir) fsync_dir(dir);
            free(dir);
            *name = strdup(v[i].name);
            sdb_dlog_event(d->o->log, "manifest_taken", "manifest", 's', v[i].name, "priority", 'i',
                           (long long)v[i].priority, "waiting", 'i', (long long)(n - 1 - i), NULL);
        } else if (errno != ENOENT) {
            sdb_dlog_event(d->o->log, "spool_error", "manifest", 's', v[i].name, "error", 's', strerror(errno), NULL);
        }
        free(a);
    }
    entries_free(v, n);
    return 0;
}

int sdb_daemon_run(const sdb_daemon_opts *o, sdb_err *err)
{
    sdb_dlog *l = o->log;
    daemon_ctx d;
    memset(&d, 0, sizeof d);
    int rc = roots_init(&d, o, err);
    if (rc) return rc;
    if ((rc = sdb_spool_init(o->spool, err))) { roots_free(&d); return rc; }
    int lock_fd;
    if ((rc = sdb_spool_lock(o->spool, &lock_fd, err))) { roots_free(&d); return rc; }
    d.o = o;
    d.real = o->executor ? o->executor : sdb_executor_pipeline();
    d.ex = (sdb_executor){&d, cache_load, cache_run, cache_unload, cache_mem_estimate};
    d.max_models = o->max_models > 0 ? o->max_models : 1;
    d.models = calloc((size_t)d.max_models, sizeof *d.models);
    if (!d.models) { sdb_spool_unlock(lock_fd); roots_free(&d); return sdb_fail(err, SDB_ENOMEM, "out of memory"); }

    char *incoming = join2(o->spool, "incoming", NULL);
    int ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (ifd >= 0 && inotify_add_watch(ifd, incoming, IN_MOVED_TO | IN_CLOSE_WRITE | IN_CREATE) < 0) {
        close(ifd);
        ifd = -1;
    }
    double rescan = o->rescan_seconds > 0 ? o->rescan_seconds : 10;
    sdb_dlog_event(l, "daemon_start", "pid", 'i', (long long)getpid(), "spool", 's', o->spool, "max_models", 'i',
                   (long long)d.max_models, "inotify", 's', ifd >= 0 ? "yes" : "no (rescan only)", "rescan_seconds", 'f',
                   rescan, NULL);
    clean_incoming(o->spool);

    sigset_t block, orig;
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGHUP);
    const char *why = "stop signal";
    rc = 0;
    for (;;) {
        if (o->stop && *o->stop) break;
        char *name = NULL;
        int unsettled = 0;
        if ((rc = next_manifest(&d, &name, &unsettled, err))) break;
        if (name) {
            int pr = process(&d, name, err);
            free(name);
            if (pr < 0) { rc = pr; break; }
            if (pr == PROC_STOP) break;
            continue;
        }
        if (o->once && !unsettled) { why = "idle (--once)"; break; }
        /* wait: inotify, the rescan timer, or a signal (blocked until ppoll, so none is missed) */
        sigprocmask(SIG_BLOCK, &block, &orig);
        if (o->stop && *o->stop) { sigprocmask(SIG_SETMASK, &orig, NULL); break; }
        if (l->reopen && *l->reopen) { sigprocmask(SIG_SETMASK, &orig, NULL); sdb_dlog_event(l, "sighup", NULL); continue; }
        double wait = unsettled ? 0.25 : rescan;
        struct timespec ts = {(time_t)wait, (long)((wait - floor(wait)) * 1e9)};
        struct pollfd pfd = {ifd, POLLIN, 0};
        ppoll(&pfd, ifd >= 0 ? 1 : 0, &ts, &orig);
        sigprocmask(SIG_SETMASK, &orig, NULL);
        if (ifd >= 0) {   /* drain: the scan decides what is there */
            char buf[4096];
            while (read(ifd, buf, sizeof buf) > 0) {}
        }
    }
    if (rc) sdb_dlog_event(l, "daemon_error", "error", 's', err->msg, NULL);
    else sdb_dlog_event(l, "daemon_stop", "pid", 'i', (long long)getpid(), "reason", 's',
                        o->stop && *o->stop ? (*o->stop == SIGINT ? "SIGINT" : "SIGTERM") : why, NULL);
    cache_clear(&d);
    free(d.models);
    roots_free(&d);
    if (ifd >= 0) close(ifd);
    free(incoming);
    sdb_spool_unlock(lock_fd);
    return rc;
}
