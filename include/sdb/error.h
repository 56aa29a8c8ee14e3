/*
 * error.h — the one error type of libsdb.
 *
 * Every fallible library function takes an `sdb_err *` and returns 0 on success or a negative
 * SDB_E* code; on failure it fills the error's message with enough context (file, tensor, field,
 * line) that a user can act on it. Callers add outer context with sdb_err_prefix(). The library
 * never calls exit() and never prints; the CLI decides what to do with an error.
 */
#ifndef SDB_ERROR_H
#define SDB_ERROR_H

#include <stddef.h>

enum {
    SDB_OK = 0,
    SDB_EINVAL = -1,      /* bad argument / value out of range */
    SDB_EIO = -2,         /* a system call failed (open, read, write, rename...) */
    SDB_EFORMAT = -3,     /* a file is malformed (JSON, safetensors, PNG, YAML...) */
    SDB_ENOMEM = -4,      /* allocation failed */
    SDB_ENOTFOUND = -5,   /* a named thing (tensor, key, file) does not exist */
    SDB_EUNSUPPORTED = -6,/* valid but outside what sdbatch supports */
    SDB_EINTERRUPTED = -7,/* cancelled by the caller (signal, step callback) */
    SDB_ESTATE = -8,      /* database / state problem */
    SDB_ENUMERIC = -9     /* NaN/Inf produced */
};

#define SDB_ERR_MSG_MAX 2048

typedef struct sdb_err {
    int code;                   /* 0 or an SDB_E* value */
    char msg[SDB_ERR_MSG_MAX];  /* human-readable, with context; "" when code == 0 */
} sdb_err;

/* Clears an error. */
void sdb_err_clear(sdb_err *e);
/* Sets code and message (printf-style) and returns code, so `return sdb_fail(e, ...)` reads well.
 * `e` may be NULL (the error is then dropped). */
int sdb_fail(sdb_err *e, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Like sdb_fail, with strerror(errno) appended. */
int sdb_fail_errno(sdb_err *e, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Prepends context ("<context>: <old message>"); returns e->code. */
int sdb_err_prefix(sdb_err *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Short name of a code ("invalid argument", ...). */
const char *sdb_err_name(int code);

#endif
