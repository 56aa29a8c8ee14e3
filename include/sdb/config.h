/*
 * config.h — reading diffusers / transformers JSON configs (config.json, model_index.json,
 * scheduler_config.json) with jansson.
 *
 * An sdb_config remembers its file name so that every accessor can report "file: field 'x': ...".
 * Getters with a default return it when the key is absent or JSON null (diffusers' behaviour for
 * keys a config lacks); a present key of the wrong type is an error.
 */
#ifndef SDB_CONFIG_H
#define SDB_CONFIG_H

#include <jansson.h>
#include "sdb/error.h"

typedef struct sdb_config {
    char *path;
    json_t *root; /* a JSON object */
} sdb_config;

int sdb_config_load(sdb_config *c, const char *path, sdb_err *err);
/* Parses JSON text (name is used in messages). */
int sdb_config_parse(sdb_config *c, const char *text, const char *name, sdb_err *err);
void sdb_config_free(sdb_config *c);

int sdb_config_has(const sdb_config *c, const char *key); /* present and not null */
int sdb_config_int(const sdb_config *c, const char *key, long long def, long long *out, sdb_err *err);
/* An int field (def when absent) that must lie in [lo, hi]; errors name the file and the field. */
int sdb_config_int_range(const sdb_config *c, const char *key, long long def, long long lo, long long hi,
                         int *out, sdb_err *err);
int sdb_config_double(const sdb_config *c, const char *key, double def, double *out, sdb_err *err);
int sdb_config_bool(const sdb_config *c, const char *key, int def, int *out, sdb_err *err);
/* String value (borrowed from the config) or def. */
int sdb_config_string(const sdb_config *c, const char *key, const char *def, const char **out, sdb_err *err);
/* Array of integers: fills up to max values, *n gets the count; absent = error. */
int sdb_config_int_array(const sdb_config *c, const char *key, long long *vals, int max, int *n, sdb_err *err);
/* Array of strings (borrowed): fills up to max, *n gets the count; absent = error. */
int sdb_config_string_array(const sdb_config *c, const char *key, const char **vals, int max, int *n, sdb_err *err);

#endif
