/*
 * a1111.h — AUTOMATIC1111's "parameters" text (the PNG tEXt chunk sdbatch writes and A1111,
 * ComfyUI exporters and others read), parsed as A1111's parse_generation_parameters reads it.
 *
 * Layout: the prompt (any number of lines), then optionally "Negative prompt: ..." (the lines from
 * there on, up to the last, are the negative prompt), then one last line of "Key: value" pairs
 * separated by commas. The last line counts as the parameters line only when it holds at least 3
 * pairs; otherwise it belongs to the prompt. A key is a word character followed by word characters,
 * spaces, '-' or '/'; a value is a double-quoted JSON string (which may hold commas, colons and
 * escapes; it is unquoted) or everything up to the next comma. Anything between pairs that is not
 * a pair is skipped, as A1111's regex search does. Every key is kept, known or not, in order.
 */
#ifndef SDB_A1111_H
#define SDB_A1111_H

#include "sdb/error.h"

typedef struct sdb_a1111_kv { char *key, *value; } sdb_a1111_kv;

typedef struct sdb_a1111_params {
    char *prompt;            /* never NULL */
    char *negative_prompt;   /* never NULL ("" when absent) */
    int has_negative;        /* a "Negative prompt:" line was there */
    sdb_a1111_kv *kv;        /* the last line's pairs, in order (a repeated key: the last one wins in lookups) */
    int n;
} sdb_a1111_params;

/* Parses the text (NUL-terminated). Fails only on memory exhaustion. Free with sdb_a1111_free. */
int sdb_a1111_parse(const char *text, sdb_a1111_params *out, sdb_err *err);
void sdb_a1111_free(sdb_a1111_params *p);
/* The value of a key (exact, case-sensitive), or NULL. */
const char *sdb_a1111_get(const sdb_a1111_params *p, const char *key);
/* "WxH" -> w, h (both positive); 0 on success, -1 when the value is not of that form. */
int sdb_a1111_size(const char *value, int *w, int *h);
/* Appends ", Key: value" to a malloc'd string, quoting the value as A1111 does (a JSON string when
 * it contains a comma, a colon or a newline). Returns the new string (the old one is freed), or
 * NULL on memory exhaustion (the old one is freed too). */
char *sdb_a1111_append(char *text, const char *key, const char *value);

#endif
