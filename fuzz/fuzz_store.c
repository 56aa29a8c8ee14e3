/*
 * fuzz_store.c — libFuzzer harness: a state database file (SQLite) as `sdbatch status` and a
 * run's read of another shard's file open it: sdb_store_open read-only, then every reader
 * (user_version, meta, all rows, one row, run counts). The input is the whole file, written to
 * this process's temporary folder; seeds are real databases the store wrote, so mutations land in
 * its pages, schema and rows. Any file ends in rows or an error with a message.
 */
#include "sdb/store.h"
#include "fuzz_util.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fuzz_write_tmp("state.db", data, size);
    char side[800];
    sdb_store *s;
    sdb_err err = {0};
    if (sdb_store_open(&s, path, SDB_STORE_READONLY, &err) == 0) {
        (void)sdb_store_user_version(s);
        free(sdb_store_get_meta(s, "model"));
        sdb_job_row *rows = NULL;
        int n = 0;
        if (sdb_store_rows(s, &rows, &n, &err) == 0) {
            for (int i = 0; i < n && i < 4; i++) {
                sdb_job_row r;
                int found = 0, count = 0;
                if (rows[i].id && sdb_store_get(s, rows[i].id, &r, &found, &err) == 0 && found) sdb_job_row_free(&r);
                if (rows[i].id) (void)sdb_store_count_runs(s, rows[i].id, "done", &count, &err);
                (void)sdb_store_owner_alive(&rows[i], &(sdb_worker){"host", 1, 1}, 0.0);
            }
            sdb_job_rows_free(rows, n);
        }
        sdb_store_close(s);
    } else {
        FUZZ_CHECK(err.code != 0 && err.msg[0]);
    }
    /* a mutated header can put the file in WAL mode: remove what SQLite made beside it */
    snprintf(side, sizeof side, "%s-wal", path); unlink(side);
    snprintf(side, sizeof side, "%s-shm", path); unlink(side);
    snprintf(side, sizeof side, "%s-journal", path); unlink(side);
    return 0;
}
