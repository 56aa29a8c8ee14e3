/*
 * fsutil.c — atomic file writing, whole-file reads, paths, SHA-256, clocks, /proc values (see fsutil.h).
 * Owns each sdb_wfile's FILE and temp file until commit or abort.
 */
#include "sdb/fsutil.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <openssl/evp.h>
#include <sys/syscall.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

char *sdb_path_dirname(const char *path)
{
    char *copy = strdup(path);
    if (!copy) return NULL;
    char *d = strdup(dirname(copy));
    free(copy);
    return d;
}

char *sdb_path_join(const char *dir, const char *name)
{
    if (name[0] == '/' || !dir || !dir[0]) return strdup(name);
    size_t a = strlen(dir), b = strlen(name);
    char *s = malloc(a + b + 2);
    if (!s) return NULL;
    memcpy(s, dir, a);
    size_t o = a;
    if (a && dir[a - 1] != '/') s[o++] = '/';
    memcpy(s + o, name, b + 1);
    return s;
}

int sdb_path_below(const char *p, const char *dir)
{
    size_t n = strlen(dir);
    while (n > 1 && dir[n - 1] == '/') n--;
    if (n == 1 && dir[0] == '/') return p[0] == '/' && p[1] != '\0';
    return !strncmp(p, dir, n) && p[n] == '/' && p[n + 1] != '\0';
}

char *sdb_path_resolve(const char *p)
{
    char *copy = strdup(p);
    if (!copy) return NULL;
    /* the longest existing prefix, cutting at slashes from the end */
    for (;;) {
        char *real = realpath(copy[0] ? copy : "/", NULL);
        if (real) {
            const char *rest = p + strlen(copy);
            while (*rest == '/') rest++;
            char *out = *rest ? sdb_path_join(real, rest) : strdup(real);
            free(real);
            free(copy);
            return out;
        }
        char *slash = strrchr(copy, '/');
        if (!slash) { free(copy); return strdup(p); }
        *slash = '\0';
    }
}

int sdb_dir_open_beneath(const char *root, const char *rel_dir, int create, int *fd, sdb_err *err)
{
    *fd = -1;
    int dfd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0 && create && errno == ENOENT) {
        int rc = sdb_mkdirs(root, err);
        if (rc) return rc;
        dfd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    }
    if (dfd < 0) return sdb_fail_errno(err, SDB_EIO, "%s: cannot open folder", root);
    char *copy = strdup(rel_dir ? rel_dir : "");
    if (!copy) { close(dfd); return sdb_fail(err, SDB_ENOMEM, "out of memory"); }
    int rc = 0;
    size_t done_len = 0;   /* how much of rel_dir is opened, for messages */
    for (char *s = copy, *e; *s && !rc; s = e) {
        e = strchr(s, '/');
        if (e) *e++ = '\0'; else e = s + strlen(s);
        if (!*s || !strcmp(s, ".")) continue;
        if (!strcmp(s, "..")) { rc = sdb_fail(err, SDB_EINVAL, "%s/%s: '..' is not allowed here", root, rel_dir); break; }
        done_len = (size_t)(s - copy) + strlen(s);
        if (create && mkdirat(dfd, s, 0755) != 0 && errno != EEXIST) {
            rc = sdb_fail_errno(err, SDB_EIO, "%s/%.*s: cannot create folder", root, (int)done_len, rel_dir);
            break;
        }
        int nfd = openat(dfd, s, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (nfd < 0) {
            int saved = errno;
            struct stat sb;
            char target[512] = "";
            if (fstatat(dfd, s, &sb, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(sb.st_mode)) {
                ssize_t n = readlinkat(dfd, s, target, sizeof target - 1);
                target[n > 0 ? n : 0] = '\0';
                rc = sdb_fail(err, SDB_EINVAL, "%s/%.*s is a symlink (to %s): outputs are never written through a "
                              "symlink below %s", root, (int)done_len, rel_dir, target, root);
            } else {
                errno = saved;
                rc = sdb_fail_errno(err, SDB_EIO, "%s/%.*s: cannot open folder", root, (int)done_len, rel_dir);
            }
            break;
        }
        close(dfd);
        dfd = nfd;
    }
    free(copy);
    if (rc) { int saved = errno; close(dfd); errno = saved; return rc; }
    *fd = dfd;
    return 0;
}

/* Fails when `name` in the open folder dfd is a symlink or a folder (shown as `path`): an output
 * replaces a file, never a symlink (the rename would swap the link for a file, and a user who
 * made the link expects the write to land where it points) nor a folder. */
static int dest_check(int dfd, const char *name, const char *path, sdb_err *err)
{
    struct stat sb;
    if (fstatat(dfd, name, &sb, AT_SYMLINK_NOFOLLOW) != 0) return 0;   /* missing: created */
    if (S_ISLNK(sb.st_mode)) {
        char target[512];
        ssize_t n = readlinkat(dfd, name, target, sizeof target - 1);
        target[n > 0 ? n : 0] = '\0';
        return sdb_fail(err, SDB_EINVAL, "%s is a symlink (to %s): an output never replaces or writes through a "
                        "symlink; name the file itself, or remove the link", path, target);
    }
    if (S_ISDIR(sb.st_mode)) return sdb_fail(err, SDB_EINVAL, "%s is a folder, not a file name", path);
    return 0;
}

int sdb_output_path_check(const char *path, sdb_err *err)
{
    char *dir = sdb_path_dirname(path);
    char *copy = strdup(path);
    int rc = 0;
    if (!dir || !copy) rc = sdb_fail(err, SDB_ENOMEM, "out of memory");
    int dfd = rc ? -1 : open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (!rc && dfd < 0) rc = sdb_fail_errno(err, SDB_EIO, "%s: cannot open its folder %s", path, dir);
    if (!rc) rc = dest_check(dfd, basename(copy), path, err);
    if (dfd >= 0) close(dfd);
    free(dir);
    free(copy);
    return rc;
}

/* Creates the temp file in the open folder dfd (which w then owns) for the destination `name`. */
static int wfile_start(sdb_wfile *w, int dfd, const char *shown_dir, const char *name, sdb_err *err)
{
    memset(w, 0, sizeof *w);
    w->dfd = dfd;
    w->name = strdup(name);
    size_t n = strlen(name) + 64;
    w->tmp_name = malloc(n);
    w->path = sdb_path_join(shown_dir, name);
    if (!w->name || !w->tmp_name || !w->path) { sdb_wfile_abort(w); return sdb_fail(err, SDB_ENOMEM, "out of memory"); }
    int drc = dest_check(dfd, name, w->path, err);
    if (drc) { free(w->tmp_name); w->tmp_name = NULL; sdb_wfile_abort(w); return drc; }
    /* ".<name>.tmp.<pid>.<tid><ns>": unique without any shared counter (O_EXCL settles the rest) */
    int fd = -1;
    for (int attempt = 0; attempt < 100 && fd < 0; attempt++) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        snprintf(w->tmp_name, n, ".%s.tmp.%ld.%ld%09ld", name, (long)getpid(), (long)syscall(SYS_gettid),
                 (long)ts.tv_nsec + attempt);
        fd = openat(dfd, w->tmp_name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
        if (fd < 0 && errno != EEXIST) break;
    }
    w->tmp_path = sdb_path_join(shown_dir, w->tmp_name);
    if (fd < 0) {
        int rc = sdb_fail_errno(err, SDB_EIO, "%s: cannot create temp file %s", w->path, w->tmp_path ? w->tmp_path : w->tmp_name);
        free(w->tmp_name); w->tmp_name = NULL;   /* nothing to unlink */
        sdb_wfile_abort(w);
        return rc;
    }
    w->f = fdopen(fd, "wb");
    if (!w->f || !w->tmp_path) { if (!w->f) close(fd); sdb_wfile_abort(w); return sdb_fail(err, SDB_ENOMEM, "out of memory"); }
    return 0;
}

int sdb_wfile_open(sdb_wfile *w, const char *path, sdb_err *err)
{
    memset(w, 0, sizeof *w);
    w->dfd = -1;
    char *dir = sdb_path_dirname(path);
    char *copy = strdup(path);
    if (!dir || !copy) { free(dir); free(copy); return sdb_fail(err, SDB_ENOMEM, "out of memory"); }
    int rc = 0;
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) rc = sdb_fail_errno(err, SDB_EIO, "%s: cannot open its folder %s", path, dir);
    else rc = wfile_start(w, dfd, dir, basename(copy), err);
    free(dir);
    free(copy);
    return rc;
}

int sdb_wfile_open_beneath(sdb_wfile *w, const char *root, const char *rel, sdb_err *err)
{
    memset(w, 0, sizeof *w);
    w->dfd = -1;
    const char *slash = strrchr(rel, '/');
    const char *name = slash ? slash + 1 : rel;
    if (!*name || !strcmp(name, ".") || !strcmp(name, ".."))
        return sdb_fail(err, SDB_EINVAL, "%s/%s: not a file name", root, rel);
    char *reldir = slash ? strndup(rel, (size_t)(slash - rel)) : strdup("");
    if (!reldir) return sdb_fail(err, SDB_ENOMEM, "out of memory");
    int dfd;
    int rc = sdb_dir_open_beneath(root, reldir, 1, &dfd, err);
    char *shown = rc ? NULL : sdb_path_join(root, reldir);
    free(reldir);
    if (rc) return rc;
    if (!shown) { close(dfd); return sdb_fail(err, SDB_ENOMEM, "out of memory"); }
    rc = wfile_start(w, dfd, shown, name, err);
    free(shown);
    return rc;
}

int sdb_wfile_write(sdb_wfile *w, const void *buf, size_t n, sdb_err *err)
{
    if (n && fwrite(buf, 1, n, w->f) != n)
        return sdb_fail_errno(err, SDB_EIO, "%s: write failed", w->path);
    return 0;
}

void sdb_wfile_abort(sdb_wfile *w)
{
    int saved = errno;   /* the caller may look at why the write failed (ENOSPC) */
    if (w->f) fclose(w->f);
    if (w->tmp_name && w->dfd >= 0) unlinkat(w->dfd, w->tmp_name, 0);
    if (w->dfd >= 0) close(w->dfd);
    free(w->tmp_path);
    free(w->tmp_name);
    free(w->name);
    free(w->path);
    memset(w, 0, sizeof *w);
    w->dfd = -1;
    errno = saved;
}

int sdb_wfile_commit(sdb_wfile *w, sdb_err *err)
{
    int rc = 0;
    if (fflush(w->f) != 0 || fsync(fileno(w->f)) != 0)
        rc = sdb_fail_errno(err, SDB_EIO, "%s: cannot write", w->path);
    if (fclose(w->f) != 0 && !rc)
        rc = sdb_fail_errno(err, SDB_EIO, "%s: cannot close", w->path);
    w->f = NULL;
    if (!rc && renameat(w->dfd, w->tmp_name, w->dfd, w->name) != 0)
        rc = sdb_fail_errno(err, SDB_EIO, "%s: cannot rename temp file into place", w->path);
    if (rc) { sdb_wfile_abort(w); return rc; }
    fsync(w->dfd);
    free(w->tmp_name);
    w->tmp_name = NULL;   /* renamed: nothing to unlink */
    sdb_wfile_abort(w);
    return 0;
}

int sdb_write_file_atomic(const char *path, const void *buf, size_t n, sdb_err *err)
{
    sdb_wfile w;
    int rc = sdb_wfile_open(&w, path, err);
    if (rc) return rc;
    rc = sdb_wfile_write(&w, buf, n, err);
    if (rc) { sdb_wfile_abort(&w); return rc; }
    return sdb_wfile_commit(&w, err);
}

int sdb_read_file(const char *path, char **out, size_t *len, sdb_err *err)
{
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return sdb_fail_errno(err, SDB_EIO, "%s: cannot open", path);
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        size_t r = fread(buf + n, 1, cap - n - 1, f);
        n += r;
        if (n + 1 < cap) { if (ferror(f)) { free(buf); buf = NULL; } break; }
        char *nb = realloc(buf, cap * 2);
        if (!nb) { free(buf); buf = NULL; break; }
        buf = nb;
        cap *= 2;
    }
    int ferr = ferror(f);
    fclose(f);
    if (!buf || ferr) { free(buf); return sdb_fail(err, SDB_EIO, "%s: cannot read", path); }
    buf[n] = '\0';
    *out = buf;
    if (len) *len = n;
    return 0;
}

int sdb_mkdirs(const char *path, sdb_err *err)
{
    char *p = strdup(path);
    if (!p) return sdb_fail(err, SDB_ENOMEM, "out of memory");
    for (char *s = p + 1; ; s++) {
        if (*s == '/' || *s == '\0') {
            char c = *s;
            *s = '\0';
            if (mkdir(p, 0755) != 0 && errno != EEXIST) {
                int rc = sdb_fail_errno(err, SDB_EIO, "%s: cannot create folder", p);
                free(p);
                return rc;
            }
            *s = c;
            if (c == '\0') break;
        }
    }
    free(p);
    if (!sdb_is_dir(path)) return sdb_fail(err, SDB_EIO, "%s: exists and is not a folder", path);
    return 0;
}

int sdb_file_exists(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0;
}

int sdb_is_dir(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

static void to_hex(const unsigned char *d, unsigned n, char *hex)
{
    static const char digits[] = "0123456789abcdef";
    for (unsigned i = 0; i < n; i++) { hex[2 * i] = digits[d[i] >> 4]; hex[2 * i + 1] = digits[d[i] & 15]; }
    hex[2 * n] = '\0';
}

void sdb_sha256_hex(const void *buf, size_t n, char hex[65])
{
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned dl = 0;
    EVP_Digest(buf, n, d, &dl, EVP_sha256(), NULL);
    to_hex(d, dl, hex);
}

int sdb_sha256_file(const char *path, char hex[65], sdb_err *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) return sdb_fail_errno(err, SDB_EIO, "%s: cannot open", path);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx) { fclose(f); return sdb_fail(err, SDB_ENOMEM, "out of memory"); }
    EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
    unsigned char buf[1 << 16];
    size_t r;
    while ((r = fread(buf, 1, sizeof buf, f)) > 0) EVP_DigestUpdate(ctx, buf, r);
    int bad = ferror(f);
    fclose(f);
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned dl = 0;
    EVP_DigestFinal_ex(ctx, d, &dl);
    EVP_MD_CTX_free(ctx);
    if (bad) return sdb_fail(err, SDB_EIO, "%s: read error", path);
    to_hex(d, dl, hex);
    return 0;
}

double sdb_now_mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

double sdb_now_wall(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

double sdb_proc_value(const char *path, const char *key)
{
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char line[512];
    double v = -1;
    const size_t n = strlen(key);
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, key, n)) { v = atof(line + n); break; }
    fclose(f);
    return v;
}

/* ---- scratch files ---------------------------------------------------------------------- */

static int scratch_full(int e) { return e == ENOSPC || e == EDQUOT || e == EFBIG; }

int sdb_scratch_open(sdb_scratch *s, const char *dir, sdb_err *err)
{
    s->fd = -1;
    if (!dir || !dir[0]) dir = getenv("TMPDIR");
    if (!dir || !dir[0]) dir = "/tmp";
    if (strlen(dir) >= sizeof s->dir)
        return sdb_fail(err, SDB_EINVAL, "scratch file: folder name too long (%zu bytes)", strlen(dir));
    snprintf(s->dir, sizeof s->dir, "%s", dir);
#ifdef O_TMPFILE
    s->fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (s->fd >= 0) return 0;
    /* EOPNOTSUPP / EISDIR: the file system has no O_TMPFILE; anything else fails below too */
#endif
    char *tmpl = sdb_path_join(dir, ".sdbatch-scratch.XXXXXX");
    if (!tmpl) return sdb_fail(err, SDB_ENOMEM, "scratch file: out of memory");
    s->fd = mkostemp(tmpl, O_CLOEXEC);
    if (s->fd < 0) {
        int rc = sdb_fail_errno(err, SDB_EIO, "cannot create a scratch file in %s (set TMPDIR to a writable folder with room)", dir);
        free(tmpl);
        return rc;
    }
    unlink(tmpl);
    free(tmpl);
    return 0;
}

static int scratch_io_fail(sdb_scratch *s, int e, const char *verb, size_t n, uint64_t off, sdb_err *err)
{
    if (scratch_full(e))
        return sdb_fail(err, SDB_EIO, "no space left for the scratch file in %s (%s %zu bytes at offset %llu: %s); "
                        "free some or set TMPDIR to a folder with room", s->dir, verb, n, (unsigned long long)off, strerror(e));
    return sdb_fail(err, SDB_EIO, "scratch file in %s: %s %zu bytes at offset %llu failed: %s", s->dir, verb, n,
                    (unsigned long long)off, e ? strerror(e) : "unexpected end of file");
}

int sdb_scratch_reserve(sdb_scratch *s, uint64_t bytes, sdb_err *err)
{
    if (bytes == 0) return 0;
    int e = posix_fallocate(s->fd, 0, (off_t)bytes);
    if (e == 0 || e == EOPNOTSUPP || e == ENOSYS || e == EINVAL) return 0;
    if (scratch_full(e))
        return sdb_fail(err, SDB_EIO, "no space left for the scratch file in %s: it needs %.0f MiB (%s); free some or set "
                        "TMPDIR to a folder with room", s->dir, (double)bytes / 1048576.0, strerror(e));
    return sdb_fail(err, SDB_EIO, "scratch file in %s: reserving %.0f MiB failed: %s", s->dir, (double)bytes / 1048576.0,
                    strerror(e));
}

int sdb_scratch_write(sdb_scratch *s, const void *buf, size_t n, uint64_t off, sdb_err *err)
{
    const char *p = buf;
    size_t done = 0;
    while (done < n) {
        ssize_t k = pwrite(s->fd, p + done, n - done, (off_t)(off + done));
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return scratch_io_fail(s, k < 0 ? errno : ENOSPC, "writing", n, off, err);
        done += (size_t)k;
    }
    return 0;
}

int sdb_scratch_read(sdb_scratch *s, void *buf, size_t n, uint64_t off, sdb_err *err)
{
    char *p = buf;
    size_t done = 0;
    while (done < n) {
        ssize_t k = pread(s->fd, p + done, n - done, (off_t)(off + done));
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return scratch_io_fail(s, k < 0 ? errno : 0, "reading", n, off, err);
        done += (size_t)k;
    }
    return 0;
}

void sdb_scratch_close(sdb_scratch *s)
{
    if (s->fd >= 0) close(s->fd);
    s->fd = -1;
}
