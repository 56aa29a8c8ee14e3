/*
 * config.c — typed access to JSON config files (see config.h). Owns each sdb_config's jansson
 * tree and path string.
 */
#include "sdb/config.h"
#include "sdb/fsutil.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

/* Python's json module writes float('inf') / float('nan') as the bare tokens Infinity, -Infinity
 * and NaN (diffusers saves e.g. DPMSolver's lambda_min_clipped = -inf that way); strict JSON
 * parsers reject them. They are replaced by null, which makes the key take its class default:
 * Infinity / -Infinity by null and spaces (same length, so line and column numbers stay right),
 * NaN by null (one byte longer: a column reported after a NaN on its line is one too far). */
static char *python_json_fixup(const char *text)
{
    size_t n = strlen(text);
    char *s = malloc(n + n / 3 + 1); /* each 3-byte NaN grows by one */
    if (!s) return NULL;
    size_t o = 0;
    int in_str = 0;
    for (size_t i = 0; i < n; i++) {
        if (in_str) {
            if (text[i] == '\\' && i + 1 < n) s[o++] = text[i++];
            else if (text[i] == '"') in_str = 0;
            s[o++] = text[i];
            continue;
        }
        if (text[i] == '"') { in_str = 1; s[o++] = text[i]; continue; }
        static const char *const toks[] = {"-Infinity", "Infinity", "NaN"};
        size_t l = 0;
        for (int t = 0; t < 3 && !l; t++)
            if (strncmp(text + i, toks[t], strlen(toks[t])) == 0) l = strlen(toks[t]);
        if (!l) { s[o++] = text[i]; continue; }
        memcpy(s + o, "null", 4);
        o += 4;
        for (size_t k = 4; k < l; k++) s[o++] = ' ';
        i += l - 1;
    }
    assert(o <= n + n / 3);
    s[o] = '\0';
    return s;
}

int sdb_config_parse(sdb_config *c, const char *text, const char *name, sdb_err *err)
{
    memset(c, 0, sizeof *c);
    json_error_t je;
    char *fixed = python_json_fixup(text);
    if (!fixed) return sdb_fail(err, SDB_ENOMEM, "out of memory");
    json_t *root = json_loads(fixed, JSON_REJECT_DUPLICATES, &je);
    free(fixed);
    if (!root) return sdb_fail(err, SDB_EFORMAT, "%s:%d:%d: invalid JSON: %s", name, je.line, je.column, je.text);
    if (!json_is_object(root)) {
        json_decref(root);
        return sdb_fail(err, SDB_EFORMAT, "%s: expected a JSON object at the top level", name);
    }
    c->root = root;
    c->path = strdup(name);
    return 0;
}

int sdb_config_load(sdb_config *c, const char *path, sdb_err *err)
{
    memset(c, 0, sizeof *c);
    char *text = NULL;
    int rc = sdb_read_file(path, &text, NULL, err);
    if (rc) return rc;
    rc = sdb_config_parse(c, text, path, err);
    free(text);
    return rc;
}

void sdb_config_free(sdb_config *c)
{
    if (c->root) json_decref(c->root);
    free(c->path);
    memset(c, 0, sizeof *c);
}

static json_t *get(const sdb_config *c, const char *key)
{
    json_t *v = json_object_get(c->root, key);
    return (v && !json_is_null(v)) ? v : NULL;
}

int sdb_config_has(const sdb_config *c, const char *key) { return get(c, key) != NULL; }

int sdb_config_int(const sdb_config *c, const char *key, long long def, long long *out, sdb_err *err)
{
    json_t *v = get(c, key);
    if (!v) { *out = def; return 0; }
    if (json_is_integer(v)) { *out = json_integer_value(v); return 0; }
    /* a whole real (3.0) counts; the range test comes first: converting 1e92 to long long is
     * undefined behaviour (found by fuzz_config) */
    double d = json_is_real(v) ? json_real_value(v) : 0.5;
    if (d >= -9223372036854775808.0 && d < 9223372036854775808.0 && d == (double)(long long)d) { *out = (long long)d; return 0; }
    return sdb_fail(err, SDB_EFORMAT, "%s: field '%s' must be an integer", c->path, key);
}

int sdb_config_int_range(const sdb_config *c, const char *key, long long def, long long lo, long long hi,
                         int *out, sdb_err *err)
{
    long long v = 0;
    int rc = sdb_config_int(c, key, def, &v, err);
    if (rc) return rc;
    if (v < lo || v > hi)
        return sdb_fail(err, SDB_EINVAL, "%s: field '%s': %lld is out of range [%lld, %lld]", c->path, key, v, lo, hi);
    *out = (int)v;
    return 0;
}

int sdb_config_double(const sdb_config *c, const char *key, double def, double *out, sdb_err *err)
{
    json_t *v = get(c, key);
    if (!v) { *out = def; return 0; }
    if (json_is_number(v)) { *out = json_number_value(v); return 0; }
    return sdb_fail(err, SDB_EFORMAT, "%s: field '%s' must be a number", c->path, key);
}

int sdb_config_bool(const sdb_config *c, const char *key, int def, int *out, sdb_err *err)
{
    json_t *v = get(c, key);
    if (!v) { *out = def; return 0; }
    if (json_is_boolean(v)) { *out = json_is_true(v); return 0; }
    return sdb_fail(err, SDB_EFORMAT, "%s: field '%s' must be true or false", c->path, key);
}

int sdb_config_string(const sdb_config *c, const char *key, const char *def, const char **out, sdb_err *err)
{
    json_t *v = get(c, key);
    if (!v) { *out = def; return 0; }
    if (json_is_string(v)) { *out = json_string_value(v); return 0; }
    return sdb_fail(err, SDB_EFORMAT, "%s: field '%s' must be a string", c->path, key);
}

/* The array field `key` (required, at most max entries): *arr and its size *n, or an error naming
 * the field. */
static int get_array(const sdb_config *c, const char *key, int max, json_t **arr, int *n, sdb_err *err)
{
    json_t *v = get(c, key);
    if (!v) return sdb_fail(err, SDB_EFORMAT, "%s: field '%s' is missing", c->path, key);
    if (!json_is_array(v)) return sdb_fail(err, SDB_EFORMAT, "%s: field '%s' must be an array", c->path, key);
    if ((int)json_array_size(v) > max) return sdb_fail(err, SDB_EUNSUPPORTED, "%s: field '%s' has %zu entries (at most %d supported)", c->path, key, json_array_size(v), max);
    *arr = v;
    *n = (int)json_array_size(v);
    return 0;
}

int sdb_config_int_array(const sdb_config *c, const char *key, long long *vals, int max, int *n, sdb_err *err)
{
    json_t *v;
    int rc = get_array(c, key, max, &v, n, err);
    if (rc) return rc;
    for (int i = 0; i < *n; i++) {
        json_t *e = json_array_get(v, (size_t)i);
        if (!json_is_integer(e)) return sdb_fail(err, SDB_EFORMAT, "%s: field '%s'[%d] must be an integer", c->path, key, i);
        vals[i] = json_integer_value(e);
    }
    return 0;
}

int sdb_config_string_array(const sdb_config *c, const char *key, const char **vals, int max, int *n, sdb_err *err)
{
    json_t *v;
    int rc = get_array(c, key, max, &v, n, err);
    if (rc) return rc;
    for (int i = 0; i < *n; i++) {
        json_t *e = json_array_get(v, (size_t)i);
        if (!json_is_string(e)) return sdb_fail(err, SDB_EFORMAT, "%s: field '%s'[%d] must be a string", c->path, key, i);
        vals[i] = json_string_value(e);
    }
    return 0;
}
