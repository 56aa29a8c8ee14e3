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

int sdb_wfile_open(sdb_wfile *w, const char *path, sdb_err *err)
{
    memset(w, 0, sizeof *w);
    char *dir = sdb_path_dirname(path);
    char *copy = strdup(path);
    if (!dir || !copy) { free(dir); free(copy); return sdb_fail(err, SDB_ENOMEM, "out of memory"); }
    const char *base = basename(copy);
    size_t n = strlen(dir) + strlen(base) + 64;
    w->tmp_path = malloc(n);
    if (!w->tmp_path) { free(dir); free(copy); return sdb_fail(err, SDB_ENOMEM, "out of memory"); }
    /* ".<name>.tmp.<pid>.<tid><ns>": unique without any shared counter (O_EXCL settles the rest) */
    int fd = -1;
    for (int attempt = 0; attempt < 100 && fd < 0; attempt++) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        snprintf(w->tmp_path, n, "%s/.%s.tmp.%ld.%ld%09ld", dir, base, (long)getpid(), (long)syscall(SYS_gettid),
                 (long)ts.tv_nsec + attempt);
        fd = open(w->tmp_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (fd < 0 && errno != EEXIST) break;
    }
    free(dir);
    free(copy);
    if (fd < 0) {
        int rc = sdb_fail_errno(err, SDB_EIO, "%s: cannot create temp file %s", path, w->tmp_path);
        free(w->tmp_path); w->tmp_path = NULL;
        return rc;
    }
    w->f = fdopen(fd, "wb");
    w->path = strdup(path);
    if (!w->f || !w->path) { if (w->f) fclose(w->f); else close(fd); unlink(w->tmp_path); free(w->tmp_path); free(w->path); memset(w, 0, sizeof *w); return sdb_fail(err, SDB_ENOMEM, "out of memory"); }
    return 0;
}

int sdb_wfile_write(sdb_wfile *w, const void *buf, size_t n, sdb_err *err)
{
    if (n && fwrite(buf, 1, n, w->f) != n)
        return sdb_fail_errno(err, SDB_EIO, "%s: write failed", w->path);
    return 0;
}

void sdb_wfile_abort(sdb_wfile *w)
{
    if (w->f) fclose(w->f);
    if (w->tmp_path) unlink(w->tmp_path);
    free(w->tmp_path);
    free(w->path);
    memset(w, 0, sizeof *w);
}

int sdb_wfile_commit(sdb_wfile *w, sdb_err *err)
{
    int rc = 0;
    if (fflush(w->f) != 0 || fsync(fileno(w->f)) != 0)
        rc = sdb_fail_errno(err, SDB_EIO, "%s: cannot flush", w->path);
    if (fclose(w->f) != 0 && !rc)
        rc = sdb_fail_errno(err, SDB_EIO, "%s: cannot close", w->path);
    w->f = NULL;
    if (!rc && rename(w->tmp_path, w->path) != 0)
        rc = sdb_fail_errno(err, SDB_EIO, "%s: cannot rename temp file into place", w->path);
    if (rc) { sdb_wfile_abort(w); return rc; }
    char *dir = sdb_path_dirname(w->path);
    if (dir) {
        int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) { fsync(dfd); close(dfd); }
        free(dir);
    }
    free(w->tmp_path);
    free(w->path);
    memset(w, 0, sizeof *w);
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
