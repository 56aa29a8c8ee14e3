/*
 * log.h — the log layer: the only way library code says anything.
 *
 * A logger is a sink callback plus a level, owned by the caller (the CLI, a test) and passed down
 * explicitly; a NULL logger drops everything. The library formats a message and hands it to the
 * sink; where it goes (stderr, a file, JSON lines, a progress bar) is the caller's business.
 */
#ifndef SDB_LOG_H
#define SDB_LOG_H

typedef enum { SDB_LOG_ERROR = 0, SDB_LOG_WARN = 1, SDB_LOG_INFO = 2, SDB_LOG_DEBUG = 3 } sdb_log_level;

typedef struct sdb_log {
    void (*sink)(void *ud, sdb_log_level level, const char *msg);
    void *ud;
    sdb_log_level level; /* messages above this level are dropped */
} sdb_log;

void sdb_logf(const sdb_log *log, sdb_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
const char *sdb_log_level_name(sdb_log_level level);
/* A ready sink writing "sdbatch: <level>: msg\n" to the FILE* in ud (stderr when ud is NULL). */
void sdb_log_sink_stderr(void *ud, sdb_log_level level, const char *msg);

#endif
