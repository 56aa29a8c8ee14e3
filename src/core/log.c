/*
 * log.c — formats log messages and passes them to the caller's sink. Owns no state.
 */
#include "sdb/log.h"

#include <stdarg.h>
#include <stdio.h>

void sdb_logf(const sdb_log *log, sdb_log_level level, const char *fmt, ...)
{
    if (!log || !log->sink || level > log->level) return;
    char buf[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    log->sink(log->ud, level, buf);
}

const char *sdb_log_level_name(sdb_log_level level)
{
    switch (level) {
    case SDB_LOG_ERROR: return "error";
    case SDB_LOG_WARN: return "warning";
    case SDB_LOG_INFO: return "info";
    default: return "debug";
    }
}

void sdb_log_sink_stderr(void *ud, sdb_log_level level, const char *msg)
{
    FILE *f = ud ? (FILE *)ud : stderr;
    if (level == SDB_LOG_INFO)
        fprintf(f, "sdbatch: %s\n", msg);
    else
        fprintf(f, "sdbatch: %s: %s\n", sdb_log_level_name(level), msg);
    fflush(f);
}
