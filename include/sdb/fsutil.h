/*
 * fsutil.h — file-system helpers: atomic writes, whole-file reads, paths, SHA-256.
 *
 * sdb_wfile is the one way libsdb writes an output: bytes go to a temp file in the destination's
 * folder ("<dir>/.<name>.tmp.<pid>.<n>"); commit fsyncs it, renames it over the destination and
 * fsyncs the folder; abort (or any failure) unlinks it. A reader therefore sees either the old file
 * or the complete new one, never a partial one. The temp file, the rename and the folder's fsync
 * all go through one descriptor of the destination folder, opened once: the folder cannot be
 * swapped for a symlink between them. sdb_wfile_open_beneath also opens that folder without
 * following any symlink below a root (outputs confined to a manifest's output_dir).
 */
#ifndef SDB_FSUTIL_H
#define SDB_FSUTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include "sdb/error.h"

typedef struct sdb_wfile {
    FILE *f;
    char *path;     /* destination (for messages) */
    char *tmp_path; /* temp file beside it (for messages) */
    int dfd;        /* the destination folder (the temp file and the rename are relative to it) */
    char *name, *tmp_name; /* their names in that folder */
} sdb_wfile;

/* Both open functions refuse (SDB_EINVAL) a destination that is a symlink or a folder: an output
 * replaces a regular file or creates one, never replaces a link (a symlink swapped in after this
 * check is replaced by the rename, never written through). */
int sdb_wfile_open(sdb_wfile *w, const char *path, sdb_err *err);
/* Like sdb_wfile_open for root/rel, where rel is a relative path whose folders below root are
 * opened one by one with O_NOFOLLOW (created when missing): a symlink anywhere below root, or a
 * ".." component, fails with SDB_EINVAL and a message naming it. root itself may be a symlink
 * (it is the caller's choice of folder). */
int sdb_wfile_open_beneath(sdb_wfile *w, const char *root, const char *rel, sdb_err *err);
/* The folder root/rel_dir opened (O_RDONLY|O_DIRECTORY) as sdb_wfile_open_beneath opens it; with
 * create, missing folders are made (0755). rel_dir "" or "." is root itself. *fd is closed by
 * the caller. */
int sdb_dir_open_beneath(const char *root, const char *rel_dir, int create, int *fd, sdb_err *err);
int sdb_wfile_write(sdb_wfile *w, const void *buf, size_t n, sdb_err *err);
int sdb_wfile_commit(sdb_wfile *w, sdb_err *err);
void sdb_wfile_abort(sdb_wfile *w);
/* The checks sdb_wfile_open makes, without creating anything: path's folder opens, and path is
 * not a symlink nor a folder (commands that compute for minutes before writing check first). */
int sdb_output_path_check(const char *path, sdb_err *err);
/* Writes a whole buffer atomically. */
int sdb_write_file_atomic(const char *path, const void *buf, size_t n, sdb_err *err);

/* A scratch file: unlinked from its creation (O_TMPFILE where the file system has it, else mkstemp
 * + unlink), so it has no name on disk and its space is freed when it is closed or the process
 * dies, whatever the error path. For data too big to hold in memory (the tiled VAE parks its tiles'
 * activations there). dir NULL or "": $TMPDIR, else /tmp. Reads and writes are positioned and
 * whole (short transfers and EINTR retried); a full disk (ENOSPC, EDQUOT, EFBIG) is reported as
 * such, naming the folder. */
typedef struct sdb_scratch {
    int fd;         /* -1 when closed */
    char dir[1024]; /* the folder it lives in (for messages) */
} sdb_scratch;

int sdb_scratch_open(sdb_scratch *s, const char *dir, sdb_err *err);
/* Reserves bytes of disk at once (posix_fallocate), so a disk too small fails now, not hours into
 * a computation; a file system without fallocate is not an error. */
int sdb_scratch_reserve(sdb_scratch *s, uint64_t bytes, sdb_err *err);
int sdb_scratch_write(sdb_scratch *s, const void *buf, size_t n, uint64_t off, sdb_err *err);
int sdb_scratch_read(sdb_scratch *s, void *buf, size_t n, uint64_t off, sdb_err *err);
/* Idempotent; s->fd becomes -1. */
void sdb_scratch_close(sdb_scratch *s);

/* Reads a whole file into a malloc'd, NUL-terminated buffer. */
int sdb_read_file(const char *path, char **out, size_t *len, sdb_err *err);
/* mkdir -p. */
int sdb_mkdirs(const char *path, sdb_err *err);
int sdb_file_exists(const char *path);
int sdb_is_dir(const char *path);
/* Joins dir and name into a malloc'd string ("name" alone when it is absolute). */
char *sdb_path_join(const char *dir, const char *name);
/* malloc'd folder part of a path ("." when none). */
char *sdb_path_dirname(const char *path);

/* Is the absolute, normalised path p strictly below the folder dir ("/a/b" is below "/a", not
 * below "/ab")? */
int sdb_path_below(const char *p, const char *dir);
/* p with every symlink resolved: realpath() of its longest existing prefix, the rest appended
 * as written (p absolute and normalised: no "." or ".."). malloc'd; NULL when out of memory. */
char *sdb_path_resolve(const char *p);

/* SHA-256 (OpenSSL), as 64 lowercase hex chars + NUL in hex[65]. */
void sdb_sha256_hex(const void *buf, size_t n, char hex[65]);
int sdb_sha256_file(const char *path, char hex[65], sdb_err *err);

/* The number after "key" on its line of a /proc file of "Key:  value [unit]" lines (e.g.
 * "/proc/self/status", "Threads:"), or -1 when the file or the key is missing. */
double sdb_proc_value(const char *path, const char *key);

/* Monotonic and wall clocks in seconds. */
double sdb_now_mono(void);
double sdb_now_wall(void);

#endif
