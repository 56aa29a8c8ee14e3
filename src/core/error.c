/*
 * error.c — the sdb_err type: setting, prefixing and naming errors. Owns nothing but the
 * caller's sdb_err struct.
 */
#include "sdb/error.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

void sdb_err_clear(sdb_err *e)
{
    if (!e) return;
    e->code = 0;
    e->msg[0] = '\0';
}

int sdb_fail(sdb_err *e, int code, const char *fmt, ...)
{
    if (!e) return code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    e->code = code;
    return code;
}

int sdb_fail_errno(sdb_err *e, int code, const char *fmt, ...)
{
    int saved = errno;
    if (!e) return code;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    if (n >= 0 && (size_t)n < sizeof e->msg)
        snprintf(e->msg + n, sizeof e->msg - (size_t)n, ": %s", strerror(saved));
    e->code = code;
    return code;
}

int sdb_err_prefix(sdb_err *e, const char *fmt, ...)
{
    if (!e) return SDB_EINVAL;
    char ctx[SDB_ERR_MSG_MAX], old[SDB_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx, sizeof ctx, fmt, ap);
    va_end(ap);
    memcpy(old, e->msg, sizeof old);
    snprintf(e->msg, sizeof e->msg, "%s: %s", ctx, old);
    if (e->code == 0) e->code = SDB_EINVAL;
    return e->code;
}

const char *sdb_err_name(int code)
{
    switch (code) {
    case SDB_OK: return "ok";
    case SDB_EINVAL: return "invalid argument";
    case SDB_EIO: return "I/O error";
    case SDB_EFORMAT: return "malformed file";
    case SDB_ENOMEM: return "out of memory";
    case SDB_ENOTFOUND: return "not found";
    case SDB_EUNSUPPORTED: return "unsupported";
    case SDB_EINTERRUPTED: return "interrupted";
    case SDB_ESTATE: return "state error";
    case SDB_ENUMERIC: return "numeric error";
    default: return "error";
    }
}
