/*
 * a1111.c — parsing and writing AUTOMATIC1111's "parameters" text (see a1111.h).
 * Owns: the sdb_a1111_params it fills (strings and the pair array).
 *
 * The pair scanner reproduces A1111's regex r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)'
 * applied with findall: at each position try one pair; when none starts there, move on one byte.
 * Bytes >= 0x80 (UTF-8) count as word characters, as Python's Unicode \w does for letters.
 */
#include "sdb/a1111.h"

#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int is_word(unsigned char c) { return isalnum(c) || c == '_' || c >= 0x80; }
static int is_key_char(unsigned char c) { return is_word(c) || c == ' ' || c == '-' || c == '/'; }
static int is_space(unsigned char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

static char *dup_n(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    if (d) { memcpy(d, s, n); d[n] = '\0'; }
    return d;
}

static void put_utf8(char *o, size_t *k, uint32_t cp)
{
    if (cp < 0x80) o[(*k)++] = (char)cp;
    else if (cp < 0x800) { o[(*k)++] = (char)(0xC0 | cp >> 6); o[(*k)++] = (char)(0x80 | (cp & 0x3F)); }
    else if (cp < 0x10000) {
        o[(*k)++] = (char)(0xE0 | cp >> 12); o[(*k)++] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[(*k)++] = (char)(0x80 | (cp & 0x3F));
    } else {
        o[(*k)++] = (char)(0xF0 | cp >> 18); o[(*k)++] = (char)(0x80 | ((cp >> 12) & 0x3F));
        o[(*k)++] = (char)(0x80 | ((cp >> 6) & 0x3F)); o[(*k)++] = (char)(0x80 | (cp & 0x3F));
    }
}

static int hex4(const char *s, uint32_t *v)
{
    *v = 0;
    for (int i = 0; i < 4; i++) {
        int c = (unsigned char)s[i], d = isdigit(c) ? c - '0' : (c >= 'a' && c <= 'f') ? c - 'a' + 10 : (c >= 'A' && c <= 'F') ? c - 'A' + 10 : -1;
        if (d < 0) return -1;
        *v = *v * 16 + (uint32_t)d;
    }
    return 0;
}

/* json.loads of a quoted string s[0..n) (quotes included): the text, or NULL when invalid. */
static char *json_unquote(const char *s, size_t n)
{
    char *o = malloc(n + 1);
    if (!o) return NULL;
    size_t k = 0;
    for (size_t i = 1; i + 1 < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20) { free(o); return NULL; } /* json: control characters must be escaped */
        if (c != '\\') { o[k++] = (char)c; continue; }
        if (++i + 1 >= n) { free(o); return NULL; }
        switch (s[i]) {
        case '"': o[k++] = '"'; break;
        case '\\': o[k++] = '\\'; break;
        case '/': o[k++] = '/'; break;
        case 'b': o[k++] = '\b'; break;
        case 'f': o[k++] = '\f'; break;
        case 'n': o[k++] = '\n'; break;
        case 'r': o[k++] = '\r'; break;
        case 't': o[k++] = '\t'; break;
        case 'u': {
            uint32_t cp, lo;
            if (i + 4 >= n || hex4(s + i + 1, &cp)) { free(o); return NULL; }
            i += 4;
            if (cp >= 0xD800 && cp < 0xDC00 && i + 6 < n && s[i + 1] == '\\' && s[i + 2] == 'u' &&
                hex4(s + i + 3, &lo) == 0 && lo >= 0xDC00 && lo < 0xE000) {
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                i += 6;
            }
            put_utf8(o, &k, cp); /* \uXXXX needs at most 3 bytes, a pair 4: within the 6/12 read */
            break;
        }
        default: free(o); return NULL;
        }
    }
    o[k] = '\0';
    return o;
}

/* Tries one pair at s; on success sets *key and *val (malloc'd) and returns the bytes consumed.
 * Only the key can fail to match (every value form falls back to "up to the next comma"); then
 * *skip says how many positions cannot start a pair either: every start inside the same run of
 * spaces and key characters stops at the same byte, which is not a ':' after two key characters
 * (the regex's backtracking only shortens the key, leaving a key character, not ':', after it).
 * This keeps findall linear: a long line without a pair used to cost O(n^2). */
static size_t match_pair(const char *s, char **key, char **val, size_t *skip)
{
    size_t i = 0;
    *skip = 1;
    while (is_space((unsigned char)s[i])) i++;
    size_t k0 = i;
    if (!is_word((unsigned char)s[i])) { *skip = i ? i : 1; return 0; }
    i++;
    while (is_key_char((unsigned char)s[i])) i++;
    if (i - k0 < 2 || s[i] != ':') { *skip = i; return 0; }
    size_t k1 = i++;
    while (is_space((unsigned char)s[i])) i++;
    size_t v0 = i;
    if (s[i] == '"') { /* "(?:\\.|[^\\"])+" then , or the end */
        size_t j = i + 1, body = 0;
        while (s[j] && s[j] != '"') {
            if (s[j] == '\\') { if (!s[j + 1]) break; j += 2; }
            else j++;
            body++;
        }
        if (s[j] == '"' && body > 0 && (s[j + 1] == ',' || s[j + 1] == '\0' || (s[j + 1] == '\n' && s[j + 2] == '\0'))) {
            char *u = json_unquote(s + i, j + 1 - i);
            *val = u ? u : dup_n(s + i, j + 1 - i); /* A1111 keeps the raw text when json.loads fails */
            *key = dup_n(s + k0, k1 - k0);
            j++;
            if (s[j] == ',') j++;
            return j;
        }
    }
    size_t j = v0;
    while (s[j] && s[j] != ',') j++;
    size_t vend = j;
    if (vend > v0 && s[vend - 1] == '\n' && !s[vend]) vend--; /* $ before a final newline */
    *key = dup_n(s + k0, k1 - k0);
    *val = dup_n(s + v0, vend - v0);
    if (s[j] == ',') j++;
    return j;
}

/* All pairs of a line (findall); returns the count, or -1 on memory exhaustion. */
static int find_pairs(const char *line, sdb_a1111_kv **out)
{
    int n = 0, cap = 0;
    sdb_a1111_kv *kv = NULL;
    for (size_t i = 0; line[i];) {
        char *k = NULL, *v = NULL;
        size_t skip;
        size_t used = match_pair(line + i, &k, &v, &skip);
        if (!used) { i += skip; continue; }
        if (!k || !v) { free(k); free(v); goto oom; }
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            sdb_a1111_kv *nk = realloc(kv, (size_t)cap * sizeof *nk);
            if (!nk) { free(k); free(v); goto oom; }
            kv = nk;
        }
        kv[n].key = k;
        kv[n].value = v;
        n++;
        i += used;
    }
    *out = kv;
    return n;
oom:
    for (int i = 0; i < n; i++) { free(kv[i].key); free(kv[i].value); }
    free(kv);
    return -1;
}

/* Appends line to *buf (joined with '\n'); *used is the length of *buf, *cap its allocation
 * (grown geometrically: a text of many short lines stays linear). */
static int join_line(char **buf, size_t *used, size_t *cap, const char *line, size_t len)
{
    size_t need = *used + len + 2;
    if (need > *cap) {
        size_t nc = *cap ? *cap : 64;
        while (nc < need) nc *= 2;
        char *b = realloc(*buf, nc);
        if (!b) return -1;
        *buf = b;
        *cap = nc;
    }
    char *b = *buf;
    size_t old = *used;
    if (old) b[old++] = '\n';
    memcpy(b + old, line, len);
    b[old + len] = '\0';
    *used = old + len;
    return 0;
}

int sdb_a1111_parse(const char *text, sdb_a1111_params *out, sdb_err *err)
{
    memset(out, 0, sizeof *out);
    /* x.strip().split("\n") */
    const char *b = text, *e = text + strlen(text);
    while (b < e && is_space((unsigned char)*b)) b++;
    while (e > b && is_space((unsigned char)e[-1])) e--;
    char *body = dup_n(b, (size_t)(e - b));
    if (!body) return sdb_fail(err, SDB_ENOMEM, "out of memory");
    char *last = strrchr(body, '\n');
    char *lastline = last ? last + 1 : body;
    int n = find_pairs(lastline, &out->kv);
    if (n < 0) { free(body); return sdb_fail(err, SDB_ENOMEM, "out of memory"); }
    size_t lines_end;
    if (n < 3) { /* not a parameters line: it is part of the prompt */
        for (int i = 0; i < n; i++) { free(out->kv[i].key); free(out->kv[i].value); }
        free(out->kv);
        out->kv = NULL;
        n = 0;
        lines_end = strlen(body);
    } else lines_end = last ? (size_t)(last - body) : 0;
    out->n = n;
    int done_with_prompt = 0, rc = 0;
    size_t p_used = 0, p_cap = 0, n_used = 0, n_cap = 0;
    int has_lines = lines_end > 0 || n < 3 || last != NULL;
    for (size_t i = 0; has_lines;) {
        size_t j = i;
        while (j < lines_end && body[j] != '\n') j++;
        const char *ls = body + i, *le = body + j;
        while (ls < le && is_space((unsigned char)*ls)) ls++;
        while (le > ls && is_space((unsigned char)le[-1])) le--;
        if ((size_t)(le - ls) >= 16 && !strncmp(ls, "Negative prompt:", 16)) {
            done_with_prompt = 1;
            out->has_negative = 1;
            ls += 16;
            while (ls < le && is_space((unsigned char)*ls)) ls++;
        }
        if (done_with_prompt) rc |= join_line(&out->negative_prompt, &n_used, &n_cap, ls, (size_t)(le - ls));
        else rc |= join_line(&out->prompt, &p_used, &p_cap, ls, (size_t)(le - ls));
        if (j >= lines_end) break;
        i = j + 1;
    }
    free(body);
    if (!out->prompt) out->prompt = strdup("");
    if (!out->negative_prompt) out->negative_prompt = strdup("");
    if (rc || !out->prompt || !out->negative_prompt) {
        sdb_a1111_free(out);
        return sdb_fail(err, SDB_ENOMEM, "out of memory");
    }
    return 0;
}

void sdb_a1111_free(sdb_a1111_params *p)
{
    if (!p) return;
    free(p->prompt);
    free(p->negative_prompt);
    for (int i = 0; i < p->n; i++) { free(p->kv[i].key); free(p->kv[i].value); }
    free(p->kv);
    memset(p, 0, sizeof *p);
}

const char *sdb_a1111_get(const sdb_a1111_params *p, const char *key)
{
    for (int i = p->n - 1; i >= 0; i--)
        if (!strcmp(p->kv[i].key, key)) return p->kv[i].value;
    return NULL;
}

int sdb_a1111_size(const char *v, int *w, int *h)
{
    if (!v) return -1;
    char *end;
    long a = strtol(v, &end, 10);
    if (end == v || *end != 'x' || !isdigit((unsigned char)end[1])) return -1;
    const char *s = end + 1;
    long b = strtol(s, &end, 10);
    if (*end || a <= 0 || b <= 0 || a > 1000000 || b > 1000000 || !isdigit((unsigned char)v[0])) return -1;
    *w = (int)a;
    *h = (int)b;
    return 0;
}

char *sdb_a1111_append(char *text, const char *key, const char *value)
{
    int quote = strpbrk(value, ",:\n") != NULL;
    size_t old = text ? strlen(text) : 0, cap = old + strlen(key) + 6 * strlen(value) + 8;
    char *t = realloc(text, cap);
    if (!t) { free(text); return NULL; }
    size_t k = old;
    k += (size_t)snprintf(t + k, cap - k, "%s%s: ", old ? ", " : "", key);
    if (!quote) k += (size_t)snprintf(t + k, cap - k, "%s", value);
    else { /* json.dumps(ensure_ascii=False) */
        t[k++] = '"';
        for (const unsigned char *s = (const unsigned char *)value; *s; s++) {
            if (*s == '"' || *s == '\\') { t[k++] = '\\'; t[k++] = (char)*s; }
            else if (*s == '\n') { t[k++] = '\\'; t[k++] = 'n'; }
            else if (*s == '\r') { t[k++] = '\\'; t[k++] = 'r'; }
            else if (*s == '\t') { t[k++] = '\\'; t[k++] = 't'; }
            else if (*s < 0x20) k += (size_t)snprintf(t + k, cap - k, "\\u%04x", *s);
            else t[k++] = (char)*s;
        }
        t[k++] = '"';
        t[k] = '\0';
    }
    return t;
}
