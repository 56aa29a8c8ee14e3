/*
 * manifest.c — reading, schema-checking and resolving batch manifests (see manifest.h).
 *
 * libyaml's document API gives a node tree whose every node keeps its start mark, so each
 * diagnostic points at the node at fault. Scalars are typed like YAML 1.2's core schema does it:
 * a plain scalar that reads as a number is a number, `null`/`~`/empty is null, `true`/`false` a
 * boolean; a quoted scalar is always a string.
 */
#include "sdb/manifest.h"
#include "sdb/config.h"
#include "sdb/fsutil.h"
#include "sdb/ldm_infer.h"
#include "sdb/model_find.h"
#include "sdb/pipeline.h"
#include "sdb/safetensors.h"

#include "sdb/image.h"
#include "sdb/pipeline.h"   /* the restoration options' names (issue 17) */

#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <glob.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

static const char *const key_names[SDB_JK_COUNT] = {
    "id", "image", "mask", "prompt", "negative_prompt", "seed", "steps", "guidance_scale",
    "strength", "scheduler", "eta", "width", "height", "padding_mask_crop", "output",
    /* issue 17 */
    "keep_unmasked", "mask_blur", "mask_dilate", "masked_content", "color_match", "inpaint_area",
    "only_masked_size", "jpeg_quality",
    /* issue 16 */
    "vae",
    "vae_tiling"};

const char *const sdb_scheduler_names[] = {"pndm", "ddim", "euler", "euler_a", "lms", "dpmpp_2m",
                                           "dpmpp_2m_karras", NULL};

const char *sdb_job_key_name(sdb_job_key k) { return k < SDB_JK_COUNT ? key_names[k] : "?"; }

/* ---- diagnostics ---------------------------------------------------------------------------- */

static void diag(sdb_manifest *m, int is_error, sdb_pos pos, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void diag(sdb_manifest *m, int is_error, sdb_pos pos, const char *fmt, ...)
{
    char msg[1536];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    char *text = NULL;
    int n;
    if (pos.line > 0)
        n = asprintf(&text, "%s:%d:%d: %s%s", m->path, pos.line, pos.col, is_error ? "" : "warning: ", msg);
    else
        n = asprintf(&text, "%s: %s%s", m->path, is_error ? "" : "warning: ", msg);
    if (n < 0) return;
    if (m->n_diags == m->cap_diags) {
        int cap = m->cap_diags ? m->cap_diags * 2 : 16;
        sdb_diag *d = realloc(m->diags, cap * sizeof *d);
        if (!d) { free(text); return; }
        m->diags = d;
        m->cap_diags = cap;
    }
    m->diags[m->n_diags].is_error = is_error;
    m->diags[m->n_diags].text = text;
    m->n_diags++;
    if (is_error) m->n_errors++; else m->n_warnings++;
}
#define ERR(m, pos, ...) diag(m, 1, pos, __VA_ARGS__)
#define WARN(m, pos, ...) diag(m, 0, pos, __VA_ARGS__)

void sdb_manifest_print_diags(const sdb_manifest *m, void *fp)
{
    FILE *f = fp;
    for (int i = 0; i < m->n_diags; i++) fprintf(f, "%s\n", m->diags[i].text);
}

static int finish(sdb_manifest *m, sdb_err *err)
{
    if (!m->n_errors) return 0;
    const char *first = "";
    for (int i = 0; i < m->n_diags; i++) if (m->diags[i].is_error) { first = m->diags[i].text; break; }
    if (m->n_errors == 1) return sdb_fail(err, SDB_EFORMAT, "%s", first);
    return sdb_fail(err, SDB_EFORMAT, "%s (and %d more errors)", first, m->n_errors - 1);
}

/* ---- paths -------------------------------------------------------------------------------- */

/* Lexically normalised absolute path ("." and ".." removed, no symlinks resolved). */
static char *abs_path(const char *base, const char *p)
{
    char *joined;
    if (p[0] == '/') joined = strdup(p);
    else if (base && base[0] == '/') joined = sdb_path_join(base, p);
    else {
        char cwd[PATH_MAX];
        if (!getcwd(cwd, sizeof cwd)) strcpy(cwd, "/");
        char *b = base ? sdb_path_join(cwd, base) : strdup(cwd);
        joined = b ? sdb_path_join(b, p) : NULL;
        free(b);
    }
    if (!joined) return NULL;
    size_t n = strlen(joined);
    char *out = malloc(n + 2);
    if (!out) { free(joined); return NULL; }
    size_t o = 0;
    const char *s = joined;
    while (*s) {
        while (*s == '/') s++;
        if (!*s) break;
        const char *e = strchr(s, '/');
        size_t len = e ? (size_t)(e - s) : strlen(s);
        if (len == 1 && s[0] == '.') { /* skip */ }
        else if (len == 2 && s[0] == '.' && s[1] == '.') {
            while (o > 0 && out[o - 1] != '/') o--;
            if (o > 0) o--;
        } else {
            out[o++] = '/';
            memcpy(out + o, s, len);
            o += len;
        }
        s += len;
    }
    if (o == 0) out[o++] = '/';
    out[o] = '\0';
    free(joined);
    return out;
}

/* ---- YAML helpers ------------------------------------------------------------------------- */

/* A set of the jobs' ids or outputs: open addressing over job indices (slot = index + 1, 0 =
 * empty), the strings living in the jobs themselves. */
typedef struct {
    int *slot;
    size_t cap, n;
} job_set;

static const char *job_key(const sdb_manifest *m, int which, int job)
{
    return which ? m->jobs[job].output : m->jobs[job].id;
}

static size_t str_hash(const char *s)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return (size_t)(h ^ (h >> 29));
}

/* Index of the job whose key (0 id, 1 output) is s, or -1. */
static int job_set_find(const job_set *t, const sdb_manifest *m, int which, const char *s)
{
    if (!t->cap) return -1;
    for (size_t k = str_hash(s) & (t->cap - 1);; k = (k + 1) & (t->cap - 1)) {
        if (!t->slot[k]) return -1;
        if (!strcmp(job_key(m, which, t->slot[k] - 1), s)) return t->slot[k] - 1;
    }
}

static void job_set_add(job_set *t, const sdb_manifest *m, int which, int job)
{
    if (2 * (t->n + 1) > t->cap) { /* keep the load under one half */
        size_t cap = t->cap ? 2 * t->cap : 64;
        int *slot = calloc(cap, sizeof *slot);
        if (!slot) return; /* out of memory: duplicates go unnoticed rather than crash */
        for (size_t k = 0; k < t->cap; k++) {
            if (!t->slot[k]) continue;
            size_t h = str_hash(job_key(m, which, t->slot[k] - 1)) & (cap - 1);
            while (slot[h]) h = (h + 1) & (cap - 1);
            slot[h] = t->slot[k];
        }
        free(t->slot);
        t->slot = slot;
        t->cap = cap;
    }
    size_t h = str_hash(job_key(m, which, job)) & (t->cap - 1);
    while (t->slot[h]) h = (h + 1) & (t->cap - 1);
    t->slot[h] = job + 1;
    t->n++;
}

typedef struct {
    sdb_manifest *m;
    yaml_document_t *doc;
    int too_many_jobs;  /* the job limit was reported */
    job_set ids, outputs;
} ctx;

static sdb_pos npos(const yaml_node_t *n);

/* Checks the document's size with its aliases expanded, without expanding them: a post-order
 * walk over the node table (iterative, so nesting cannot exhaust the stack) sums each node's
 * expanded size once, saturating past the limit. An alias to a collection that contains it (an
 * infinite expansion), nesting deeper than SDB_MANIFEST_MAX_DEPTH and more than
 * SDB_MANIFEST_MAX_NODES nodes are errors. Returns 0 when the document is within the limits. */
static int check_expansion(ctx *c, yaml_node_t *root)
{
    yaml_document_t *doc = c->doc;
    size_t n = (size_t)(doc->nodes.top - doc->nodes.start);
    if (!root || n == 0) return 0;
    const uint64_t cap = (uint64_t)SDB_MANIFEST_MAX_NODES + 1;
    uint64_t *size = calloc(n, sizeof *size);
    unsigned char *state = calloc(n, 1);  /* 0 unseen, 1 on the walk's path, 2 sized */
    struct frame { int id; size_t next; } *st = malloc((SDB_MANIFEST_MAX_DEPTH + 1) * sizeof *st);
    if (!size || !state || !st) {
        free(size); free(state); free(st);
        ERR(c->m, (sdb_pos){0, 0}, "out of memory checking the YAML's aliases");
        return -1;
    }
    int rc = 0, sp = 0;
    st[0].id = (int)(root - doc->nodes.start) + 1;
    st[0].next = 0;
    state[st[0].id - 1] = 1;
    while (sp >= 0 && !rc) {
        struct frame *f = &st[sp];
        yaml_node_t *node = &doc->nodes.start[f->id - 1];
        size_t nkids = node->type == YAML_SEQUENCE_NODE
                           ? (size_t)(node->data.sequence.items.top - node->data.sequence.items.start)
                       : node->type == YAML_MAPPING_NODE
                           ? 2 * (size_t)(node->data.mapping.pairs.top - node->data.mapping.pairs.start)
                           : 0;
        if (f->next == nkids) { /* all children sized: this node's expanded size */
            uint64_t total = 1;
            for (size_t k = 0; k < nkids; k++) {
                int kid = node->type == YAML_SEQUENCE_NODE ? node->data.sequence.items.start[k]
                          : k % 2 ? node->data.mapping.pairs.start[k / 2].value
                                  : node->data.mapping.pairs.start[k / 2].key;
                total += size[kid - 1];
                if (total > cap) total = cap;
            }
            size[f->id - 1] = total;
            state[f->id - 1] = 2;
            if (total >= cap) {
                ERR(c->m, npos(root), "the YAML expands to more than %ld nodes through its aliases (*name): "
                    "refused (the limit of a manifest)", SDB_MANIFEST_MAX_NODES);
                rc = -1;
            }
            sp--;
            continue;
        }
        size_t k = f->next++;
        int kid = node->type == YAML_SEQUENCE_NODE ? node->data.sequence.items.start[k]
                  : k % 2 ? node->data.mapping.pairs.start[k / 2].value
                          : node->data.mapping.pairs.start[k / 2].key;
        assert(kid >= 1 && (size_t)kid <= n);
        if (state[kid - 1] == 2) continue;
        if (state[kid - 1] == 1) {
            ERR(c->m, npos(&doc->nodes.start[kid - 1]), "an alias refers to a collection that contains it "
                "(an endless YAML structure): refused");
            rc = -1;
            break;
        }
        if (sp + 1 > SDB_MANIFEST_MAX_DEPTH) {
            ERR(c->m, npos(&doc->nodes.start[kid - 1]), "the YAML nests deeper than %d levels: refused "
                "(a manifest needs 4)", SDB_MANIFEST_MAX_DEPTH);
            rc = -1;
            break;
        }
        sp++;
        st[sp].id = kid;
        st[sp].next = 0;
        state[kid - 1] = 1;
    }
    free(size); free(state); free(st);
    return rc;
}

static sdb_pos npos(const yaml_node_t *n)
{
    sdb_pos p = {0, 0};
    if (n) { p.line = (int)n->start_mark.line + 1; p.col = (int)n->start_mark.column + 1; }
    return p;
}

static const char *sval(const yaml_node_t *n) { return (const char *)n->data.scalar.value; }
static int is_plain(const yaml_node_t *n) { return n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE; }

static int plain_is_null(const yaml_node_t *n)
{
    if (n->type != YAML_SCALAR_NODE || !is_plain(n)) return 0;
    const char *s = sval(n);
    return !s[0] || !strcmp(s, "~") || !strcmp(s, "null") || !strcmp(s, "Null") || !strcmp(s, "NULL");
}
static int plain_is_bool(const yaml_node_t *n)
{
    if (n->type != YAML_SCALAR_NODE || !is_plain(n)) return 0;
    const char *s = sval(n);
    return !strcmp(s, "true") || !strcmp(s, "false") || !strcmp(s, "True") || !strcmp(s, "False") ||
           !strcmp(s, "TRUE") || !strcmp(s, "FALSE");
}
static int plain_number(const yaml_node_t *n, double *out)
{
    if (n->type != YAML_SCALAR_NODE || !is_plain(n)) return 0;
    const char *s = sval(n);
    if (!s[0]) return 0;
    if (!strcmp(s, ".inf") || !strcmp(s, "+.inf") || !strcmp(s, ".Inf")) { *out = INFINITY; return 1; }
    if (!strcmp(s, "-.inf") || !strcmp(s, "-.Inf")) { *out = -INFINITY; return 1; }
    if (!strcmp(s, ".nan") || !strcmp(s, ".NaN") || !strcmp(s, ".NAN")) { *out = NAN; return 1; }
    const char *p = s;
    if (*p == '+' || *p == '-') p++;
    if (!isdigit((unsigned char)*p) && !(*p == '.' && isdigit((unsigned char)p[1]))) return 0;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (*end) return 0;
    *out = v;
    return 1;
}
static int plain_is_int(const yaml_node_t *n)
{
    if (n->type != YAML_SCALAR_NODE || !is_plain(n)) return 0;
    const char *s = sval(n);
    if (*s == '+' || *s == '-') s++;
    if (!*s) return 0;
    for (; *s; s++) if (!isdigit((unsigned char)*s)) return 0;
    return 1;
}

static const char *kind(const yaml_node_t *n)
{
    double d;
    if (n->type == YAML_MAPPING_NODE) return "a mapping";
    if (n->type == YAML_SEQUENCE_NODE) return "a list";
    if (plain_is_null(n)) return "null";
    if (plain_is_bool(n)) return "a boolean";
    if (plain_is_int(n)) return "an integer";
    if (plain_number(n, &d)) return "a number";
    return "a string";
}

/* A string value: any scalar but null/booleans-as-plain; numbers written plainly are accepted as
 * their text (e.g. `id: 0001`). */
static int get_string(ctx *c, const yaml_node_t *n, const char *key, const char **out)
{
    if (n->type != YAML_SCALAR_NODE || plain_is_null(n) || plain_is_bool(n)) {
        ERR(c->m, npos(n), "'%s' must be a string, got %s", key, kind(n));
        return -1;
    }
    *out = sval(n);
    return 0;
}

static int get_int(ctx *c, const yaml_node_t *n, const char *key, long long lo, long long hi, long long *out)
{
    if (!plain_is_int(n)) {
        double d;
        if (plain_number(n, &d) && isfinite(d))
            ERR(c->m, npos(n), "'%s' must be a whole number, got %s", key, sval(n));
        else
            ERR(c->m, npos(n), "'%s' must be a whole number, got %s", key, kind(n));
        return -1;
    }
    errno = 0;
    long long v = strtoll(sval(n), NULL, 10);
    if (errno || v < lo || v > hi) {
        ERR(c->m, npos(n), "'%s' is out of range: %s (allowed %lld..%lld)", key, sval(n), lo, hi);
        return -1;
    }
    *out = v;
    return 0;
}

static int get_double(ctx *c, const yaml_node_t *n, const char *key, double lo, double hi,
                      int lo_open, double *out)
{
    double v;
    if (!plain_number(n, &v)) {
        ERR(c->m, npos(n), "'%s' must be a number, got %s", key, kind(n));
        return -1;
    }
    if (!isfinite(v) || v < lo || v > hi || (lo_open && v == lo)) {
        ERR(c->m, npos(n), "'%s' is out of range: %s (allowed %s%g..%g]", key, sval(n), lo_open ? "(" : "[", lo, hi);
        return -1;
    }
    *out = v;
    return 0;
}

/* A boolean: a plain true/false (YAML 1.2 core schema). */
static int get_bool(ctx *c, const yaml_node_t *n, const char *key, long long *out)
{
    if (!plain_is_bool(n)) {
        ERR(c->m, npos(n), "'%s' must be true or false, got %s", key, kind(n));
        return -1;
    }
    *out = sval(n)[0] == 't' || sval(n)[0] == 'T';
    return 0;
}

/* ---- job fields --------------------------------------------------------------------------- */

/* The values one mapping (a job entry or defaults) sets. */
typedef struct {
    int set[SDB_JK_COUNT];
    sdb_pos pos[SDB_JK_COUNT];
    const char *str[SDB_JK_COUNT]; /* string-valued keys (borrowed from the document) */
    long long ival[SDB_JK_COUNT];
    double dval[SDB_JK_COUNT];
    int seed_auto;
    const char *glob;  /* glob entries */
    sdb_pos glob_pos;
    sdb_pos entry_pos;
} fields;

static int find_key(const char *k)
{
    for (int i = 0; i < SDB_JK_COUNT; i++) if (!strcmp(k, key_names[i])) return i;
    return -1;
}

static int valid_id(const char *s)
{
    if (!s[0] || strlen(s) > 200) return 0;
    if (!isalnum((unsigned char)s[0])) return 0;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && *s != '.' && *s != '_' && *s != '-') return 0;
    return 1;
}

static int has_placeholder(const char *s) { return strchr(s, '{') != NULL; }

static void read_fields(ctx *c, yaml_node_t *map, int is_defaults, fields *f)
{
    memset(f, 0, sizeof *f);
    f->entry_pos = npos(map);
    const char *where = is_defaults ? "defaults" : "a job";
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
        yaml_node_t *kn = yaml_document_get_node(c->doc, p->key);
        yaml_node_t *vn = yaml_document_get_node(c->doc, p->value);
        if (kn->type != YAML_SCALAR_NODE) { ERR(c->m, npos(kn), "keys must be strings, got %s", kind(kn)); continue; }
        const char *k = sval(kn);
        if (!is_defaults && !strcmp(k, "glob")) {
            if (f->glob) { ERR(c->m, npos(kn), "duplicate key 'glob' (first at line %d)", f->glob_pos.line); continue; }
            const char *g;
            if (get_string(c, vn, "glob", &g) == 0) {
                if (!g[0]) ERR(c->m, npos(vn), "'glob' must not be empty");
                f->glob = g;
                f->glob_pos = npos(vn);
            }
            continue;
        }
        int ki = find_key(k);
        if (ki < 0) {
            ERR(c->m, npos(kn), "unknown key '%s' in %s (allowed: id, glob, image, mask, prompt, negative_prompt, "
                "seed, steps, guidance_scale, strength, scheduler, eta, width, height, padding_mask_crop, output, "
                "keep_unmasked, mask_blur, mask_dilate, masked_content, color_match, inpaint_area, only_masked_size, "
                "jpeg_quality, vae, vae_tiling)", k, where);
            continue;
        }
        if (is_defaults && (ki == SDB_JK_ID || ki == SDB_JK_OUTPUT)) {
            ERR(c->m, npos(kn), "'%s' cannot have a default (it must differ between jobs)", k);
            continue;
        }
        if (f->set[ki] || (f->pos[ki].line && !f->set[ki])) {
            ERR(c->m, npos(kn), "duplicate key '%s' (first at line %d)", k, f->pos[ki].line);
            continue;
        }
        f->pos[ki] = npos(vn);
        long long iv;
        double dv;
        const char *sv;
        int ok = -1;
        switch ((sdb_job_key)ki) {
        case SDB_JK_ID:
            if ((ok = get_string(c, vn, k, &sv)) == 0) {
                if (!has_placeholder(sv) && !valid_id(sv)) {
                    ERR(c->m, npos(vn), "invalid id '%s': use letters, digits, '.', '_' and '-', starting with a letter or digit (it names the output file)", sv);
                    ok = -1;
                } else f->str[ki] = sv;
            }
            break;
        case SDB_JK_IMAGE: case SDB_JK_MASK: case SDB_JK_OUTPUT:
            if ((ok = get_string(c, vn, k, &sv)) == 0) {
                if (!sv[0]) { ERR(c->m, npos(vn), "'%s' must not be empty", k); ok = -1; }
                else f->str[ki] = sv;
            }
            if (ok == 0 && ki == SDB_JK_OUTPUT && sdb_image_format_of_path(sv) < 0) {
                ERR(c->m, npos(vn), "'output' must name a .png, .jpg or .jpeg file, got '%s'", sv);
                ok = -1;
            }
            break;
        case SDB_JK_VAE:
            if ((ok = get_string(c, vn, k, &sv)) == 0) {
                if (!sv[0]) { ERR(c->m, npos(vn), "'vae' must not be empty"); ok = -1; }
                else f->str[ki] = sv;
            }
            break;
        case SDB_JK_PROMPT: case SDB_JK_NEGATIVE_PROMPT:
            if ((ok = get_string(c, vn, k, &sv)) == 0) f->str[ki] = sv;
            break;
        case SDB_JK_SCHEDULER:
            if ((ok = get_string(c, vn, k, &sv)) == 0) {
                int known = 0;
                for (int i = 0; sdb_scheduler_names[i]; i++) if (!strcmp(sv, sdb_scheduler_names[i])) known = 1;
                if (!known) {
                    ERR(c->m, npos(vn), "unknown scheduler '%s' (known: pndm, ddim, euler, euler_a, lms, dpmpp_2m, dpmpp_2m_karras)", sv);
                    ok = -1;
                } else f->str[ki] = sv;
            }
            break;
        case SDB_JK_SEED:
            if (vn->type == YAML_SCALAR_NODE && !strcmp(sval(vn), "auto")) { f->seed_auto = 1; ok = 0; break; }
            if (!plain_is_int(vn)) {
                ERR(c->m, npos(vn), "'seed' must be a whole number or \"auto\", got %s", kind(vn));
                break;
            }
            {
                const char *s = sval(vn);
                errno = 0;
                char *end;
                unsigned long long u = strtoull(s, &end, 10);
                if (s[0] == '-' || errno) {
                    ERR(c->m, npos(vn), "'seed' is out of range: %s (allowed 0..18446744073709551615)", s);
                    break;
                }
                f->ival[ki] = (long long)u;
                ok = 0;
            }
            break;
        case SDB_JK_STEPS:
            if ((ok = get_int(c, vn, k, 1, 1000, &iv)) == 0) f->ival[ki] = iv;
            break;
        case SDB_JK_WIDTH: case SDB_JK_HEIGHT:
            if ((ok = get_int(c, vn, k, 8, 8192, &iv)) == 0) {
                if (iv % 8) { ERR(c->m, npos(vn), "'%s' must be a multiple of 8, got %lld", k, iv); ok = -1; }
                else f->ival[ki] = iv;
            }
            break;
        case SDB_JK_PADDING_MASK_CROP:
            if ((ok = get_int(c, vn, k, 0, 8192, &iv)) == 0) f->ival[ki] = iv;
            break;
        case SDB_JK_GUIDANCE_SCALE:
            if ((ok = get_double(c, vn, k, 0, 100, 0, &dv)) == 0) f->dval[ki] = dv;
            break;
        case SDB_JK_STRENGTH:
            if ((ok = get_double(c, vn, k, 0, 1, 1, &dv)) == 0) f->dval[ki] = dv;
            break;
        case SDB_JK_ETA:
            if ((ok = get_double(c, vn, k, 0, 1, 0, &dv)) == 0) f->dval[ki] = dv;
            break;
        /* issue 17: restoration options */
        case SDB_JK_KEEP_UNMASKED: case SDB_JK_COLOR_MATCH:
            if ((ok = get_bool(c, vn, k, &iv)) == 0) f->ival[ki] = iv;
            break;
        case SDB_JK_MASK_BLUR:
            if ((ok = get_int(c, vn, k, 0, 256, &iv)) == 0) f->ival[ki] = iv;
            break;
        case SDB_JK_MASK_DILATE:
            if ((ok = get_int(c, vn, k, 0, 1024, &iv)) == 0) f->ival[ki] = iv;
            break;
        case SDB_JK_JPEG_QUALITY:
            if ((ok = get_int(c, vn, k, 1, 100, &iv)) == 0) f->ival[ki] = iv;
            break;
        case SDB_JK_ONLY_MASKED_SIZE:
            if ((ok = get_int(c, vn, k, 64, 4096, &iv)) == 0) {
                if (iv % 8) { ERR(c->m, npos(vn), "'%s' must be a multiple of 8, got %lld", k, iv); ok = -1; }
                else f->ival[ki] = iv;
            }
            break;
        case SDB_JK_MASKED_CONTENT: case SDB_JK_INPAINT_AREA:
            if ((ok = get_string(c, vn, k, &sv)) == 0) {
                int v = ki == SDB_JK_MASKED_CONTENT ? sdb_masked_content_parse(sv) : sdb_inpaint_area_parse(sv);
                if (v < 0) {
                    ERR(c->m, npos(vn), ki == SDB_JK_MASKED_CONTENT
                        ? "unknown masked_content '%s' (known: original, fill, latent_noise, latent_nothing)"
                        : "unknown inpaint_area '%s' (known: whole, masked)", sv);
                    ok = -1;
                } else f->ival[ki] = v;
            }
            break;
        case SDB_JK_VAE_TILING:
            if ((ok = get_string(c, vn, k, &sv)) == 0) {
                int mode = sdb_vae_tiling_parse(sv);
                if (mode < 0) {
                    ERR(c->m, npos(vn), "'vae_tiling' must be auto, on or off, got '%s'", sv);
                    ok = -1;
                } else f->ival[ki] = mode;
            }
            break;
        default: break;
        }
        if (ok == 0) f->set[ki] = 1;
    }
}

/* ---- templates: {stem} {name} {dir} --------------------------------------------------------- */

static char *subst(ctx *c, const char *tmpl, const char *match, sdb_pos pos, const char *key, int *bad)
{
    char *dir = sdb_path_dirname(match);
    const char *slash = strrchr(match, '/');
    const char *name = slash ? slash + 1 : match;
    char stem[1024];
    snprintf(stem, sizeof stem, "%s", name);
    char *dot = strrchr(stem, '.');
    if (dot && dot != stem) *dot = '\0';
    size_t cap = strlen(tmpl) + 1;
    for (const char *s = tmpl; (s = strchr(s, '{')); s++) cap += strlen(match) + 16;
    char *out = malloc(cap + 1);
    if (!out || !dir) { free(out); free(dir); return NULL; }
    size_t o = 0;
    for (const char *s = tmpl; *s; ) {
        if (*s == '{') {
            const char *e = strchr(s, '}');
            const char *val = NULL;
            if (e) {
                size_t n = (size_t)(e - s - 1);
                if (n == 4 && !strncmp(s + 1, "stem", 4)) val = stem;
                else if (n == 4 && !strncmp(s + 1, "name", 4)) val = name;
                else if (n == 3 && !strncmp(s + 1, "dir", 3)) val = dir;
            }
            if (!val) {
                if (!*bad)
                    ERR(c->m, pos, "'%s': unknown placeholder in '%s' (use {stem}, {name} or {dir})", key, tmpl);
                *bad = 1;
                val = "";
                e = e ? e : s + strlen(s) - 1;
            }
            size_t vl = strlen(val);
            memcpy(out + o, val, vl);
            o += vl;
            s = e + 1;
        } else out[o++] = *s++;
    }
    out[o] = '\0';
    free(dir);
    return out;
}

/* ---- outputs stay inside output_dir ---------------------------------------------------------
 * A job's output (from `output:`, its id, a glob's {stem}) must lie below output_dir: a '..'
 * component is refused, and so is an absolute path outside output_dir unless the top-level
 * `allow_outputs_outside: true` allows it (`run` only: the daemon refuses such manifests).
 * Symlinks below output_dir are looked for by sdb_manifest_check (output_symlink) and refused
 * again when the file is written (sdb_wfile_open_beneath: the folder can change in between).
 * A refused output fails its job alone (counted in n_input_errors, like a bad input). */

static int has_dotdot(const char *p)
{
    for (const char *s = p; *s; ) {
        const char *e = strchr(s, '/');
        size_t n = e ? (size_t)(e - s) : strlen(s);
        if (n == 2 && s[0] == '.' && s[1] == '.') return 1;
        s += n;
        while (*s == '/') s++;
    }
    return 0;
}

static void job_output_error(sdb_manifest *m, sdb_job_spec *j, sdb_pos pos, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void job_output_error(sdb_manifest *m, sdb_job_spec *j, sdb_pos pos, const char *fmt, ...)
{
    char why[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    ERR(m, pos, "job '%s': %s", j->id ? j->id : "?", why);
    m->n_input_errors++;
    if (!j->bad_output) j->bad_output = strdup(why);
}

/* raw: the output as written (placeholders filled in); j->output: it resolved. */
static void output_confine(sdb_manifest *m, sdb_job_spec *j, const char *raw, sdb_pos pos)
{
    if (has_dotdot(raw))
        job_output_error(m, j, pos, "output '%s' has a '..' component: outputs stay inside output_dir %s", raw, m->output_dir);
    else if (raw[0] == '/' && !sdb_path_below(j->output, m->output_dir) && !m->allow_outputs_outside)
        job_output_error(m, j, pos, "output '%s' is an absolute path outside output_dir %s (a top-level "
                         "'allow_outputs_outside: true' allows that for 'sdbatch run', never for the daemon)", raw, m->output_dir);
}

void sdb_job_output_split(const sdb_manifest *m, const sdb_job_spec *j, char **root, const char **rel)
{
    if (m->output_dir && sdb_path_below(j->output, m->output_dir)) {
        *root = strdup(m->output_dir);
        size_t n = strlen(m->output_dir);
        *rel = j->output + n + (n > 1);
        return;
    }
    *root = sdb_path_dirname(j->output);
    const char *slash = strrchr(j->output, '/');
    *rel = slash ? slash + 1 : j->output;
}

/* A symlink among the folders of j's output below output_dir (checked when validating; the
 * write checks again). */
static void output_symlink(sdb_manifest *m, sdb_job_spec *j)
{
    if (j->bad_output || !m->output_dir || !sdb_path_below(j->output, m->output_dir)) return;
    size_t root_len = strlen(m->output_dir);
    char *p = strdup(j->output);
    if (!p) return;
    for (char *s = p + root_len + 1; (s = strchr(s, '/')); s++) {
        *s = '\0';
        struct stat sb;
        int is_link = lstat(p, &sb) == 0 && S_ISLNK(sb.st_mode);
        if (is_link) {
            char *target = realpath(p, NULL);
            char *root = realpath(m->output_dir, NULL);
            int out = !target || !root || !(sdb_path_below(target, root) || !strcmp(target, root));
            job_output_error(m, j, j->key_pos[SDB_JK_OUTPUT].line ? j->key_pos[SDB_JK_OUTPUT] : j->pos,
                             "output %s: %s is a symlink to %s%s; outputs are never written through a symlink "
                             "below output_dir", j->output, p, target ? target : "a missing target",
                             out ? ", out of output_dir" : "");
            free(target);
            free(root);
            break;
        }
        if (lstat(p, &sb) != 0) break;   /* missing: created at write time, never a symlink then */
        *s = '/';
    }
    free(p);
}

/* ---- resolving a job ----------------------------------------------------------------------- */

static char *xstrdup(const char *s) { return s ? strdup(s) : NULL; }

/* Frees every string of a job (a refused one in add_job, all of them in sdb_manifest_free). Each
 * refusal path of add_job once listed its own frees and forgot `vae` (a leak found by
 * fuzz_manifest: a bad job with a vae key). */
static void job_spec_free(sdb_job_spec *j)
{
    free(j->id); free(j->image); free(j->mask); free(j->prompt); free(j->negative_prompt);
    free(j->scheduler); free(j->output); free(j->bad_input); free(j->vae); free(j->bad_output);
}

static void add_job(ctx *c, const fields *d, const fields *f, const char *match)
{
    sdb_manifest *m = c->m;
    sdb_job_spec j;
    memset(&j, 0, sizeof j);
    j.pos = f->entry_pos;
    int bad = 0;
#define PICK(k) (f->set[k] ? f : d->set[k] ? d : NULL)
    for (int k = 0; k < SDB_JK_COUNT; k++) {
        const fields *src = PICK(k);
        if (src) j.key_pos[k] = src->pos[k];
    }
    /* strings with templates */
    const char *id_t = f->set[SDB_JK_ID] ? f->str[SDB_JK_ID] : (match ? "{stem}" : NULL);
    if (!id_t) {
        if (!bad) ERR(m, f->entry_pos, "job has no 'id' (every job needs a unique id, or a 'glob')");
        bad = 1;
    } else {
        sdb_pos ip = f->set[SDB_JK_ID] ? f->pos[SDB_JK_ID] : f->glob_pos;
        j.id = match ? subst(c, id_t, match, ip, "id", &bad) : strdup(id_t);
        if (j.id && !bad && !valid_id(j.id)) {
            ERR(m, ip, "invalid id '%s': use letters, digits, '.', '_' and '-', starting with a letter or digit", j.id);
            bad = 1;
        }
        if (!match && has_placeholder(id_t) && !bad) {
            ERR(m, ip, "'id' uses a placeholder but the job has no 'glob'");
            bad = 1;
        }
    }
    j.key_pos[SDB_JK_ID] = f->set[SDB_JK_ID] ? f->pos[SDB_JK_ID] : f->glob_pos;
    if (match) {
        j.image = strdup(match);
        j.key_pos[SDB_JK_IMAGE] = f->glob_pos;
    } else if (PICK(SDB_JK_IMAGE)) {
        j.image = abs_path(m->dir, PICK(SDB_JK_IMAGE)->str[SDB_JK_IMAGE]);
    }
    if (PICK(SDB_JK_MASK) && !strcmp(PICK(SDB_JK_MASK)->str[SDB_JK_MASK], "alpha")) {
        j.mask_alpha = 1;   /* issue 17: the image's transparent area is the mask */
        if (!j.image && !bad) {
            ERR(m, j.key_pos[SDB_JK_MASK], "job '%s': 'mask: alpha' needs an image (with an alpha channel)", j.id ? j.id : "?");
            bad = 1;
        }
    } else if (PICK(SDB_JK_MASK)) {
        const char *t = PICK(SDB_JK_MASK)->str[SDB_JK_MASK];
        if (match) {
            char *s = subst(c, t, match, j.key_pos[SDB_JK_MASK], "mask", &bad);
            j.mask = s ? abs_path(m->dir, s) : NULL;
            free(s);
        } else j.mask = abs_path(m->dir, t);
        if (!j.image && !bad) {
            ERR(m, j.key_pos[SDB_JK_MASK], "job '%s' has a mask but no image", j.id ? j.id : "?");
            bad = 1;
        }
    }
    if (PICK(SDB_JK_PROMPT)) j.prompt = xstrdup(PICK(SDB_JK_PROMPT)->str[SDB_JK_PROMPT]);
    else if (!bad) {
        ERR(m, f->entry_pos, "job '%s' has no 'prompt' (give one here or in defaults)", j.id ? j.id : "?");
        bad = 1;
    }
    j.negative_prompt = strdup(PICK(SDB_JK_NEGATIVE_PROMPT) ? PICK(SDB_JK_NEGATIVE_PROMPT)->str[SDB_JK_NEGATIVE_PROMPT] : "");
    if (PICK(SDB_JK_SCHEDULER)) j.scheduler = xstrdup(PICK(SDB_JK_SCHEDULER)->str[SDB_JK_SCHEDULER]);
    if (PICK(SDB_JK_VAE)) {
        const char *v = PICK(SDB_JK_VAE)->str[SDB_JK_VAE];
        sdb_err ve;
        if (sdb_model_resolve(v, m->dir, getenv("SDB_MODELS"), "vae", &j.vae, &ve) != 0) {
            j.vae = abs_path(m->dir, v); /* missing: the check reports it for this job alone */
        } else {
            char *a = abs_path(NULL, j.vae);   /* the state and the daemon's spool need it absolute */
            free(j.vae);
            j.vae = a;
        }
    }
    const fields *sd = PICK(SDB_JK_SEED);
    if (!sd || sd->seed_auto) { j.seed_auto = 1; j.seed = j.id ? sdb_seed_from_id(j.id) : 0; }
    else j.seed = (uint64_t)sd->ival[SDB_JK_SEED];
    j.steps = PICK(SDB_JK_STEPS) ? (int)PICK(SDB_JK_STEPS)->ival[SDB_JK_STEPS] : 50;
    j.guidance_scale = PICK(SDB_JK_GUIDANCE_SCALE) ? PICK(SDB_JK_GUIDANCE_SCALE)->dval[SDB_JK_GUIDANCE_SCALE] : 7.5;
    j.strength = PICK(SDB_JK_STRENGTH) ? PICK(SDB_JK_STRENGTH)->dval[SDB_JK_STRENGTH] : 1.0;
    j.eta = PICK(SDB_JK_ETA) ? PICK(SDB_JK_ETA)->dval[SDB_JK_ETA] : 0.0;
    j.width = PICK(SDB_JK_WIDTH) ? (int)PICK(SDB_JK_WIDTH)->ival[SDB_JK_WIDTH] : 0;
    j.height = PICK(SDB_JK_HEIGHT) ? (int)PICK(SDB_JK_HEIGHT)->ival[SDB_JK_HEIGHT] : 0;
    j.padding_mask_crop = PICK(SDB_JK_PADDING_MASK_CROP) ? (int)PICK(SDB_JK_PADDING_MASK_CROP)->ival[SDB_JK_PADDING_MASK_CROP] : 0;
    j.vae_tiling = PICK(SDB_JK_VAE_TILING) ? (int)PICK(SDB_JK_VAE_TILING)->ival[SDB_JK_VAE_TILING] : SDB_VAE_TILING_AUTO;
    /* issue 17: restoration options (each 0 when unset) */
#define OPT(k) (PICK(k) ? (int)PICK(k)->ival[k] : 0)
    j.keep_unmasked = OPT(SDB_JK_KEEP_UNMASKED);
    j.mask_blur = OPT(SDB_JK_MASK_BLUR);
    j.mask_dilate = OPT(SDB_JK_MASK_DILATE);
    j.masked_content = OPT(SDB_JK_MASKED_CONTENT);
    j.color_match = OPT(SDB_JK_COLOR_MATCH);
    j.inpaint_area = OPT(SDB_JK_INPAINT_AREA);
    j.only_masked_size = OPT(SDB_JK_ONLY_MASKED_SIZE);
    j.jpeg_quality = OPT(SDB_JK_JPEG_QUALITY);
#undef OPT
    {
        const int has_mask = j.mask || j.mask_alpha;
        static const sdb_job_key need_mask[] = {SDB_JK_KEEP_UNMASKED, SDB_JK_MASK_BLUR, SDB_JK_MASK_DILATE, SDB_JK_MASKED_CONTENT};
        for (size_t q = 0; q < sizeof need_mask / sizeof need_mask[0] && !bad && !has_mask; q++)
            if (PICK(need_mask[q]) && PICK(need_mask[q])->ival[need_mask[q]]) {
                ERR(m, j.key_pos[need_mask[q]], "'%s' needs a mask (job '%s' has none)", key_names[need_mask[q]], j.id ? j.id : "?");
                bad = 1;
            }
        if (!bad && !has_mask && j.inpaint_area == SDB_AREA_MASKED) {
            ERR(m, j.key_pos[SDB_JK_INPAINT_AREA], "'inpaint_area: masked' needs a mask (job '%s' has none)", j.id ? j.id : "?");
            bad = 1;
        }
        if (!bad && j.color_match && !j.image) {
            ERR(m, j.key_pos[SDB_JK_COLOR_MATCH], "'color_match' needs an image (job '%s' has none)", j.id ? j.id : "?");
            bad = 1;
        }
        if (!bad && j.inpaint_area == SDB_AREA_WHOLE && j.padding_mask_crop) {
            ERR(m, j.key_pos[SDB_JK_PADDING_MASK_CROP], "'padding_mask_crop' crops around the mask: it contradicts 'inpaint_area: whole' (line %d)",
                j.key_pos[SDB_JK_INPAINT_AREA].line);
            bad = 1;
        }
        if (!bad && j.only_masked_size && j.inpaint_area != SDB_AREA_MASKED &&
            !(j.inpaint_area == SDB_AREA_NONE && j.padding_mask_crop)) {
            ERR(m, j.key_pos[SDB_JK_ONLY_MASKED_SIZE], "'only_masked_size' is the working size of the crop: it needs 'inpaint_area: masked'");
            bad = 1;
        }
        if (!bad && j.only_masked_size && (PICK(SDB_JK_WIDTH) || PICK(SDB_JK_HEIGHT))) {
            ERR(m, j.key_pos[SDB_JK_ONLY_MASKED_SIZE], "'only_masked_size' and 'width'/'height' both set the working size: give one");
            bad = 1;
        }
    }
    if (j.padding_mask_crop && !j.mask && !j.mask_alpha && !bad) {
        ERR(m, j.key_pos[SDB_JK_PADDING_MASK_CROP], "'padding_mask_crop' needs a mask");
        bad = 1;
    }
    if (!j.image && !bad && j.strength < 1.0 && f->set[SDB_JK_STRENGTH]) {
        ERR(m, j.key_pos[SDB_JK_STRENGTH], "'strength' below 1 needs an image");
        bad = 1;
    }
    if (f->set[SDB_JK_OUTPUT]) {
        const char *t = f->str[SDB_JK_OUTPUT];
        char *s = match ? subst(c, t, match, f->pos[SDB_JK_OUTPUT], "output", &bad) : strdup(t);
        if (!match && s && has_placeholder(s) && !bad) {
            ERR(m, f->pos[SDB_JK_OUTPUT], "'output' uses a placeholder but the job has no 'glob'");
            bad = 1;
        }
        j.output = s && m->output_dir ? abs_path(m->output_dir, s) : NULL;
        if (s && j.output && !bad) output_confine(m, &j, s, f->pos[SDB_JK_OUTPUT]);
        free(s);
    } else if (j.id && m->output_dir) {
        char name[512];
        snprintf(name, sizeof name, "%s.png", j.id);
        j.output = abs_path(m->output_dir, name);
    }
#undef PICK
    if (bad || !j.id) {
        job_spec_free(&j);
        return;
    }
    /* unique ids and outputs (hash sets: a manifest may hold SDB_MANIFEST_MAX_JOBS jobs) */
    int i = job_set_find(&c->ids, m, 0, j.id);
    if (i >= 0) {
        ERR(m, j.key_pos[SDB_JK_ID], "duplicate job id '%s' (first at line %d)", j.id, m->jobs[i].key_pos[SDB_JK_ID].line);
        bad = 1;
    } else if (j.output && (i = job_set_find(&c->outputs, m, 1, j.output)) >= 0) {
        ERR(m, f->set[SDB_JK_OUTPUT] ? f->pos[SDB_JK_OUTPUT] : j.key_pos[SDB_JK_ID],
            "jobs '%s' and '%s' write the same output %s", m->jobs[i].id, j.id, j.output);
        bad = 1;
    }
    if (bad) {
        job_spec_free(&j);
        return;
    }
    if (m->n_jobs >= SDB_MANIFEST_MAX_JOBS) {
        if (!c->too_many_jobs)
            ERR(m, j.key_pos[SDB_JK_ID], "more than %d jobs (the limit of one manifest): split it", SDB_MANIFEST_MAX_JOBS);
        c->too_many_jobs = 1;
        job_spec_free(&j);
        return;
    }
    if ((m->n_jobs & (m->n_jobs - 1)) == 0) {
        sdb_job_spec *nj = realloc(m->jobs, (m->n_jobs ? m->n_jobs * 2 : 1) * sizeof *nj);
        if (!nj) { job_spec_free(&j); return; }
        m->jobs = nj;
    }
    m->jobs[m->n_jobs++] = j;
    job_set_add(&c->ids, m, 0, m->n_jobs - 1);
    if (j.output) job_set_add(&c->outputs, m, 1, m->n_jobs - 1);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static void expand_job(ctx *c, const fields *d, const fields *f)
{
    if (f->glob) {
        if (f->set[SDB_JK_IMAGE]) {
            ERR(c->m, f->pos[SDB_JK_IMAGE], "a 'glob' entry takes its images from the glob: remove 'image'");
            return;
        }
        char *pat = abs_path(c->m->dir, f->glob);
        glob_t g;
        memset(&g, 0, sizeof g);
        int rc = pat ? glob(pat, GLOB_NOSORT, NULL, &g) : GLOB_NOSPACE;
        if (rc == GLOB_NOMATCH || (rc == 0 && g.gl_pathc == 0)) {
            ERR(c->m, f->glob_pos, "glob '%s' matches no files (looked for %s)", f->glob, pat ? pat : "?");
        } else if (rc != 0) {
            ERR(c->m, f->glob_pos, "glob '%s' failed", f->glob);
        } else {
            qsort(g.gl_pathv, g.gl_pathc, sizeof(char *), cmp_str);
            for (size_t i = 0; i < g.gl_pathc; i++) {
                if (sdb_is_dir(g.gl_pathv[i])) continue;
                add_job(c, d, f, g.gl_pathv[i]);
            }
        }
        if (rc == 0) globfree(&g);
        free(pat);
        return;
    }
    if (f->set[SDB_JK_ID] && f->str[SDB_JK_ID] && has_placeholder(f->str[SDB_JK_ID])) {
        ERR(c->m, f->pos[SDB_JK_ID], "'id' uses a placeholder but the job has no 'glob'");
        return;
    }
    if (!f->set[SDB_JK_ID] && f->pos[SDB_JK_ID].line) return; /* bad id already reported */
    add_job(c, d, f, NULL);
}

/* ---- top level ---------------------------------------------------------------------------- */

static int is_single_file(const char *model) { return model && !sdb_is_dir(model) && sdb_file_exists(model); }

/* A single-file model's tokenizer when the manifest names none and model_config has none: looked
 * for from the manifest's folder (model_find.h); check_model reports when there is none. */
static void find_tokenizer(sdb_manifest *m)
{
    if (m->tokenizer || !is_single_file(m->model)) return;
    if (m->model_config) {
        char *t = sdb_path_join(m->model_config, "tokenizer");
        int has = t && sdb_is_dir(t);
        free(t);
        if (has) return;
    }
    char *found = NULL;
    sdb_err e;
    if (sdb_tokenizer_find(m->model, m->dir, getenv("SDB_MODELS"), getenv("SDB_TOKENIZER"), &found, &e) == 0) {
        m->tokenizer = abs_path(NULL, found);
        free(found);
    }
}

static void parse_root(ctx *c, yaml_node_t *root)
{
    sdb_manifest *m = c->m;
    if (!root) { ERR(m, (sdb_pos){1, 1}, "the manifest is empty (expected a mapping with version, model, output_dir and jobs)"); return; }
    if (root->type != YAML_MAPPING_NODE) {
        ERR(m, npos(root), "the manifest must be a mapping (version, model, output_dir, defaults, jobs), got %s", kind(root));
        return;
    }
    yaml_node_t *ver = NULL, *model = NULL, *outdir = NULL, *defaults = NULL, *jobs = NULL, *mcfg = NULL, *tok = NULL, *prio = NULL;
    yaml_node_t *outside = NULL;   /* allow_outputs_outside (see output_confine) */
    for (yaml_node_pair_t *p = root->data.mapping.pairs.start; p < root->data.mapping.pairs.top; p++) {
        yaml_node_t *kn = yaml_document_get_node(c->doc, p->key);
        yaml_node_t *vn = yaml_document_get_node(c->doc, p->value);
        if (kn->type != YAML_SCALAR_NODE) { ERR(m, npos(kn), "keys must be strings, got %s", kind(kn)); continue; }
        const char *k = sval(kn);
        yaml_node_t **slot = !strcmp(k, "version") ? &ver : !strcmp(k, "model") ? &model :
                             !strcmp(k, "output_dir") ? &outdir : !strcmp(k, "defaults") ? &defaults :
                             !strcmp(k, "jobs") ? &jobs : !strcmp(k, "model_config") ? &mcfg :
                             !strcmp(k, "tokenizer") ? &tok : !strcmp(k, "priority") ? &prio :
                             !strcmp(k, "allow_outputs_outside") ? &outside : NULL;
        if (!slot) {
            ERR(m, npos(kn), "unknown top-level key '%s' (allowed: version, model, model_config, tokenizer, output_dir, "
                "allow_outputs_outside, priority, defaults, jobs)", k);
            continue;
        }
        if (*slot) { ERR(m, npos(kn), "duplicate key '%s' (first at line %d)", k, npos(*slot).line); continue; }
        *slot = vn;
    }
    sdb_pos top = npos(root);
    if (!ver) ERR(m, top, "missing 'version' (this sdbatch reads version: 1)");
    else {
        long long v;
        if (get_int(c, ver, "version", LLONG_MIN, LLONG_MAX, &v) == 0) {
            if (v != 1) ERR(m, npos(ver), "unsupported manifest version %lld (this sdbatch reads version 1)", v);
            else m->version = 1;
        }
    }
    const char *s;
    if (!model) ERR(m, top, "missing 'model' (a diffusers folder or a .safetensors checkpoint)");
    else if (get_string(c, model, "model", &s) == 0) {
        char *found = NULL;
        sdb_err me;
        m->model_name = strdup(s);
        /* a bare name found in models/ (else the path as written: check_model reports it) */
        if (sdb_model_resolve(s, m->dir, getenv("SDB_MODELS"), "model", &found, &me) == 0) {
            m->model = abs_path(NULL, found);
            free(found);
        } else {
            m->model = abs_path(m->dir, s);
        }
        m->model_pos = npos(model);
    }
    if (mcfg && get_string(c, mcfg, "model_config", &s) == 0) { m->model_config = abs_path(m->dir, s); m->model_config_pos = npos(mcfg); }
    if (tok && get_string(c, tok, "tokenizer", &s) == 0) { m->tokenizer = abs_path(m->dir, s); m->tokenizer_pos = npos(tok); }
    find_tokenizer(m);
    if (prio) {   /* the daemon's queue order (src/jobs/daemon.c); nothing else reads it */
        long long pv;
        (void)get_int(c, prio, "priority", -1000000, 1000000, &pv);
    }
    if (outside) {
        if (!plain_is_bool(outside)) ERR(m, npos(outside), "'allow_outputs_outside' must be true or false, got %s", kind(outside));
        else m->allow_outputs_outside = sval(outside)[0] == 't' || sval(outside)[0] == 'T';
        m->allow_outputs_outside_pos = npos(outside);
    }
    if (!outdir) ERR(m, top, "missing 'output_dir'");
    else if (get_string(c, outdir, "output_dir", &s) == 0) { m->output_dir = abs_path(m->dir, s); m->output_dir_pos = npos(outdir); }
    fields d;
    memset(&d, 0, sizeof d);
    if (defaults) {
        if (defaults->type == YAML_MAPPING_NODE) read_fields(c, defaults, 1, &d);
        else if (!plain_is_null(defaults)) ERR(m, npos(defaults), "'defaults' must be a mapping of job keys, got %s", kind(defaults));
    }
    if (!jobs) { ERR(m, top, "missing 'jobs' (a list of jobs)"); return; }
    if (jobs->type != YAML_SEQUENCE_NODE) { ERR(m, npos(jobs), "'jobs' must be a list, got %s", kind(jobs)); return; }
    if (jobs->data.sequence.items.start == jobs->data.sequence.items.top) {
        ERR(m, npos(jobs), "'jobs' is empty");
        return;
    }
    for (yaml_node_item_t *it = jobs->data.sequence.items.start; it < jobs->data.sequence.items.top; it++) {
        yaml_node_t *jn = yaml_document_get_node(c->doc, *it);
        if (jn->type != YAML_MAPPING_NODE) { ERR(m, npos(jn), "each job must be a mapping, got %s", kind(jn)); continue; }
        fields f;
        read_fields(c, jn, 0, &f);
        if (f.glob && f.set[SDB_JK_ID] && !has_placeholder(f.str[SDB_JK_ID])) {
            ERR(m, f.pos[SDB_JK_ID], "the 'id' of a 'glob' entry must use {stem} or {name} to differ between files");
            continue;
        }
        expand_job(c, &d, &f);
    }
}

int sdb_manifest_parse(sdb_manifest *m, const char *text, size_t len, const char *path, sdb_err *err)
{
    memset(m, 0, sizeof *m);
    m->path = strdup(path);
    char *d = sdb_path_dirname(path);
    m->dir = d ? abs_path(NULL, d) : NULL;
    free(d);
    if (!m->path || !m->dir) return sdb_fail(err, SDB_ENOMEM, "out of memory");
    if (len > (size_t)SDB_MANIFEST_MAX_BYTES) {
        ERR(m, (sdb_pos){0, 0}, "%zu bytes, more than the %ld-byte limit of a manifest: split it", len, SDB_MANIFEST_MAX_BYTES);
        return finish(m, err);
    }
    yaml_parser_t parser;
    yaml_document_t doc;
    if (!yaml_parser_initialize(&parser)) return sdb_fail(err, SDB_ENOMEM, "out of memory");
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    if (!yaml_parser_load(&parser, &doc)) {
        sdb_pos p = {(int)parser.problem_mark.line + 1, (int)parser.problem_mark.column + 1};
        if (parser.context)
            ERR(m, p, "YAML syntax error: %s %s (line %d)", parser.problem ? parser.problem : "?",
                parser.context, (int)parser.context_mark.line + 1);
        else
            ERR(m, p, "YAML syntax error: %s", parser.problem ? parser.problem : "?");
        yaml_parser_delete(&parser);
        return finish(m, err);
    }
    ctx c = {m, &doc, 0, {NULL, 0, 0}, {NULL, 0, 0}};
    if (check_expansion(&c, yaml_document_get_root_node(&doc)) == 0)
        parse_root(&c, yaml_document_get_root_node(&doc));
    free(c.ids.slot);
    free(c.outputs.slot);
    /* a second document is a mistake worth reporting */
    yaml_document_t doc2;
    if (yaml_parser_load(&parser, &doc2)) {
        yaml_node_t *r2 = yaml_document_get_root_node(&doc2);
        if (r2) ERR(m, npos(r2), "a manifest holds one YAML document; remove the second '---'");
        yaml_document_delete(&doc2);
    }
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    return finish(m, err);
}

int sdb_manifest_load(sdb_manifest *m, const char *path, sdb_err *err)
{
    char *text;
    size_t len;
    struct stat sb;
    if (stat(path, &sb) == 0 && S_ISREG(sb.st_mode) && sb.st_size > SDB_MANIFEST_MAX_BYTES) {
        memset(m, 0, sizeof *m);
        return sdb_fail(err, SDB_EFORMAT, "%s: %lld bytes, more than the %ld-byte limit of a manifest: split it",
                        path, (long long)sb.st_size, SDB_MANIFEST_MAX_BYTES);
    }
    int rc = sdb_read_file(path, &text, &len, err);
    if (rc) { memset(m, 0, sizeof *m); return rc; }
    rc = sdb_manifest_parse(m, text, len, path, err);
    free(text);
    return rc;
}

int sdb_manifest_find(const sdb_manifest *m, const char *id)
{
    for (int i = 0; i < m->n_jobs; i++) if (!strcmp(m->jobs[i].id, id)) return i;
    return -1;
}

void sdb_manifest_free(sdb_manifest *m)
{
    for (int i = 0; i < m->n_jobs; i++) job_spec_free(&m->jobs[i]);
    free(m->jobs);
    for (int i = 0; i < m->n_diags; i++) free(m->diags[i].text);
    free(m->diags);
    free(m->path); free(m->dir); free(m->model); free(m->model_name); free(m->output_dir); free(m->model_config); free(m->tokenizer);
    memset(m, 0, sizeof *m);
}

uint64_t sdb_seed_from_id(const char *id)
{
    char hex[65];
    sdb_sha256_hex(id, strlen(id), hex);
    uint64_t v = 0;
    for (int i = 0; i < 16; i++) {
        char ch = hex[i];
        v = (v << 4) | (uint64_t)(ch <= '9' ? ch - '0' : ch - 'a' + 10);
    }
    return v & 0x7fffffffffffffffULL;
}

/* ---- file checks ---------------------------------------------------------------------------- */

/* A cache of the inputs, so a mask shared by 10,000 jobs is read once. */
typedef struct {
    char *path;
    int kind;       /* input_get's decode argument (VAE_INPUT: a separate VAE) */
    int state;      /* 0 unread, 1 ok, -1 failed */
    int w, h, c;
    char sha[65];
    char why[512];
} input;
typedef struct { input *v; size_t n, cap; } inputs;

/* decode: 0 hash the bytes, 1 also decode, VAE_INPUT a separate VAE (sha = sdb_vae_source_id) */
enum { VAE_INPUT = 2 };
static input *input_get(inputs *in, const char *path, int decode)
{
    for (size_t i = in->n; i-- > 0; )   /* recent first: consecutive jobs share folders/masks */
        if (!strcmp(in->v[i].path, path) && (in->v[i].kind == VAE_INPUT) == (decode == VAE_INPUT)) return &in->v[i];
    if (in->n == in->cap) {
        size_t cap = in->cap ? in->cap * 2 : 64;
        input *nv = realloc(in->v, cap * sizeof *nv);
        if (!nv) return NULL;
        in->v = nv;
        in->cap = cap;
    }
    input *e = &in->v[in->n++];
    memset(e, 0, sizeof *e);
    e->path = strdup(path);
    e->kind = decode;
    if (decode == VAE_INPUT) { /* the weights' id, without loading them */
        sdb_err verr;
        e->state = sdb_vae_source_id(path, e->sha, &verr) == 0 ? 1 : -1;
        if (e->state < 0) { e->sha[0] = 0; snprintf(e->why, sizeof e->why, "%s", verr.msg); }
        return e;
    }
    char *buf;
    size_t len;
    sdb_err err;
    sdb_err_clear(&err);
    if (!sdb_file_exists(path)) { e->state = -1; snprintf(e->why, sizeof e->why, "does not exist"); return e; }
    if (sdb_read_file(path, &buf, &len, &err)) {
        e->state = -1;
        snprintf(e->why, sizeof e->why, "cannot be read: %s", err.msg);
        return e;
    }
    sdb_sha256_hex(buf, len, e->sha);
    e->state = 1;
    if (decode) {
        sdb_image img;
        if (sdb_image_load(path, &img, 0, 0, &err)) {
            e->state = -1;
            snprintf(e->why, sizeof e->why, "cannot be decoded: %s", err.msg);
        } else {
            e->w = img.w;
            e->h = img.h;
            e->c = img.c;
            sdb_image_free(&img);
        }
    }
    free(buf);
    return e;
}

static void hash_job(sdb_job_spec *j, const input *img, const input *mask, const input *vae)
{
    /* params_hash over the text below; content_hash over the same without the output line */
    char *s = NULL, *tail = NULL;
    size_t n = 0, tn = 0;
    FILE *f = open_memstream(&s, &n);
    if (!f) return;
    fprintf(f, "sdbatch-params-v1\nid=%s\nprompt=%zu:%s\nnegative_prompt=%zu:%s\nseed=%llu\nsteps=%d\n"
               "guidance_scale=%.17g\nstrength=%.17g\neta=%.17g\nscheduler=%s\nwidth=%d\nheight=%d\n"
               "padding_mask_crop=%d\n",
            j->id, strlen(j->prompt), j->prompt, strlen(j->negative_prompt), j->negative_prompt,
            (unsigned long long)j->seed, j->steps, j->guidance_scale, j->strength, j->eta,
            j->scheduler ? j->scheduler : "", j->width, j->height, j->padding_mask_crop);
    FILE *t = open_memstream(&tail, &tn);
    if (!t) { fclose(f); free(s); return; }
    /* the bytes decide (whether they decode does not: check and hash_inputs must agree) */
    fprintf(t, "image=%s\nmask=%s\n", !j->image ? "none" : img && img->sha[0] ? img->sha : "missing",
            j->mask_alpha ? "alpha" : !j->mask ? "none" : mask && mask->sha[0] ? mask->sha : "missing");
    /* issue 17: the restoration options, each only when set (jobs without them keep their identity) */
    if (j->keep_unmasked) fprintf(t, "keep_unmasked=1\n");
    if (j->mask_blur) fprintf(t, "mask_blur=%d\n", j->mask_blur);
    if (j->mask_dilate) fprintf(t, "mask_dilate=%d\n", j->mask_dilate);
    if (j->masked_content) fprintf(t, "masked_content=%s\n", sdb_masked_content_name(j->masked_content));
    if (j->color_match) fprintf(t, "color_match=1\n");
    if (j->inpaint_area) fprintf(t, "inpaint_area=%s\n", sdb_inpaint_area_name(j->inpaint_area));
    if (j->only_masked_size) fprintf(t, "only_masked_size=%d\n", j->only_masked_size);
    if (j->jpeg_quality) fprintf(t, "jpeg_quality=%d\n", j->jpeg_quality);
    /* a separate VAE's weights (jobs without one hash as before) */
    if (j->vae) fprintf(t, "vae=%s\n", vae && vae->sha[0] ? vae->sha : "missing");
    /* issue 17: only when not the default, so that older jobs keep their identity */
    if (j->vae_tiling != SDB_VAE_TILING_AUTO) fprintf(t, "vae_tiling=%s\n", sdb_vae_tiling_name(j->vae_tiling));
    fclose(t);
    fflush(f);
    size_t common = n;
    fprintf(f, "output=%s\n%s", j->output ? j->output : "", tail);
    fclose(f);
    sdb_sha256_hex(s, n, j->params_hash);
    /* the same text without the output line */
    char *c = malloc(common + tn + 1);
    if (c) {
        memcpy(c, s, common);
        memcpy(c + common, tail, tn);
        sdb_sha256_hex(c, common + tn, j->content_hash);
        free(c);
    }
    free(tail);
    free(s);
}

void sdb_job_output_identity(const sdb_job_spec *j, const char *model_id, char out[65])
{
    char buf[256];
    int n = snprintf(buf, sizeof buf, "sdbatch-output-v1\n%s\n%s\n", j->content_hash, model_id ? model_id : "");
    sdb_sha256_hex(buf, (size_t)n, out);
}

void sdb_job_identity(const sdb_job_spec *j, const char *model_id, char out[65])
{
    char buf[256];
    int n = snprintf(buf, sizeof buf, "sdbatch-job-v1\n%s\n%s\n", j->params_hash, model_id ? model_id : "");
    sdb_sha256_hex(buf, (size_t)n, out);
}

/* Returns the U-Net's in_channels when the model's config says it (else 0). */
static int check_model(sdb_manifest *m)
{
    int unet_channels = 0;
    if (!m->model) return 0;
    sdb_err err;
    sdb_err_clear(&err);
    char *cfgdir = NULL;
    if (is_single_file(m->model)) {
        /* a single-file checkpoint: its weights, its configs (given, or inferred), its tokenizer */
        sdb_st *st = NULL;
        if (sdb_st_open(&st, m->model, &err)) { ERR(m, m->model_pos, "model: %s", err.msg); return 0; }
        if (m->model_config) {
            cfgdir = strdup(m->model_config);
            char *u = cfgdir ? sdb_path_join(cfgdir, "unet/config.json") : NULL;
            if (u && !sdb_file_exists(u)) {
                ERR(m, m->model_config_pos, "model_config: %s has no unet/config.json (it must be a diffusers folder with the component configs)", cfgdir);
                free(u);
                free(cfgdir);
                sdb_st_close(st);
                return 0;
            }
            free(u);
        } else {
            sdb_ldm_configs inferred;
            if (sdb_ldm_infer_configs(st, &inferred, &err)) ERR(m, m->model_pos, "model: %s", err.msg);
            else {
                long long ch;
                if (sdb_config_int(&inferred.unet, "in_channels", 4, &ch, &err) == 0) unet_channels = (int)ch;
            }
            sdb_ldm_configs_free(&inferred);
        }
        sdb_st_close(st);
        if (!m->tokenizer && !cfgdir) {
            char *found = NULL;
            if (sdb_tokenizer_find(m->model, m->dir, getenv("SDB_MODELS"), getenv("SDB_TOKENIZER"), &found, &err))
                ERR(m, m->model_pos, "model: %s", err.msg);
            free(found);
        } else if (m->tokenizer && !cfgdir) {
            for (int i = 0; i < 2; i++) {
                char *p = sdb_path_join(m->tokenizer, i ? "merges.txt" : "vocab.json");
                if (p && !sdb_file_exists(p))
                    ERR(m, m->tokenizer_pos.line ? m->tokenizer_pos : m->model_pos, "model: tokenizer file %s is missing", p);
                free(p);
            }
        }
        if (!cfgdir) return unet_channels;
    }
    if (cfgdir || sdb_is_dir(m->model)) {
        const char *root = cfgdir ? cfgdir : m->model;
        sdb_pos at = cfgdir && m->model_config ? m->model_config_pos : m->model_pos;
        static const char *const cfgs[] = {"unet/config.json", "vae/config.json", "text_encoder/config.json",
                                           "scheduler/scheduler_config.json", "model_index.json", NULL};
        for (int i = 0; cfgs[i]; i++) {
            if (cfgdir && i == 4) break;   /* model_index.json: folders only */
            char *p = sdb_path_join(root, cfgs[i]);
            sdb_config cfg;
            memset(&cfg, 0, sizeof cfg);
            if (!p) continue;
            if (sdb_config_load(&cfg, p, &err)) ERR(m, at, "model: %s", err.msg);
            else {
                long long ch;
                if (i == 0 && sdb_config_int(&cfg, "in_channels", 4, &ch, &err) == 0) unet_channels = (int)ch;
                sdb_config_free(&cfg);
            }
            free(p);
        }
        if (!cfgdir && m->model_config)
            ERR(m, m->model_config_pos, "'model_config' is for single-file checkpoints; the model is a folder with its own configs");
        if (!cfgdir && m->tokenizer)
            ERR(m, m->tokenizer_pos, "'tokenizer' is for single-file checkpoints; the model is a folder with its own tokenizer/");
        int own_tok = cfgdir && m->tokenizer;
        char *tokdir = own_tok ? strdup(m->tokenizer) : sdb_path_join(root, "tokenizer");
        sdb_pos tat = own_tok && m->tokenizer_pos.line ? m->tokenizer_pos : at;
        static const char *const files[] = {"vocab.json", "merges.txt", NULL};
        for (int i = 0; files[i] && tokdir; i++) {
            char *p = sdb_path_join(tokdir, files[i]);
            if (p && !sdb_file_exists(p)) ERR(m, tat, "model: tokenizer file %s is missing%s", p,
                                              cfgdir && !m->tokenizer ? " (set 'tokenizer:' to the tokenizer folder)" : "");
            free(p);
        }
        free(tokdir);
        free(cfgdir);
    } else {
        sdb_err re;
        char *found = NULL;
        if (m->model_name && sdb_model_resolve(m->model_name, m->dir, getenv("SDB_MODELS"), "model", &found, &re) != 0)
            ERR(m, m->model_pos, "%s", re.msg);
        else
            ERR(m, m->model_pos, "model '%s' does not exist", m->model);
        free(found);
    }
    return unet_channels;
}

static int check_or_hash(sdb_manifest *m, int full, sdb_err *err)
{
    inputs in = {0};
    int unet_channels = full ? check_model(m) : 0;
    for (int i = 0; i < m->n_jobs; i++) {
        sdb_job_spec *j = &m->jobs[i];
        input *img = j->image ? input_get(&in, j->image, full) : NULL;
        input *mask = j->mask ? input_get(&in, j->mask, full) : NULL;
        if (full && unet_channels == 9 && (!j->image || (!j->mask && !j->mask_alpha)))
            ERR(m, j->pos, "job '%s': the model is an inpainting model (9-channel U-Net): give the job an image and a mask", j->id);
        if (full) {
            free(j->bad_input);
            j->bad_input = NULL;
            if (img && img->state < 0) {
                ERR(m, j->key_pos[SDB_JK_IMAGE], "job '%s': image %s %s", j->id, j->image, img->why);
                m->n_input_errors++;
                if (asprintf(&j->bad_input, "image %s %s", j->image, img->why) < 0) j->bad_input = NULL;
            }
            if (j->mask_alpha && img && img->state > 0 && img->c != 4) {   /* issue 17 */
                ERR(m, j->key_pos[SDB_JK_MASK], "job '%s': 'mask: alpha' but image %s has no alpha channel", j->id, j->image);
                m->n_input_errors++;
                if (!j->bad_input && asprintf(&j->bad_input, "image %s has no alpha channel (mask: alpha)", j->image) < 0) j->bad_input = NULL;
            }
            if (mask && mask->state < 0) {
                ERR(m, j->key_pos[SDB_JK_MASK], "job '%s': mask %s %s", j->id, j->mask, mask->why);
                m->n_input_errors++;
                if (!j->bad_input && asprintf(&j->bad_input, "mask %s %s", j->mask, mask->why) < 0) j->bad_input = NULL;
            }
            if (img && mask && img->state > 0 && mask->state > 0 && img->w && mask->w &&
                (img->w != mask->w || img->h != mask->h))
                WARN(m, j->key_pos[SDB_JK_MASK], "job '%s': mask is %dx%d but the image is %dx%d (the mask is resized to the image)",
                     j->id, mask->w, mask->h, img->w, img->h);
            if (img && img->state > 0 && img->w && !j->width && !j->height && (img->w % 8 || img->h % 8))
                WARN(m, j->key_pos[SDB_JK_IMAGE], "job '%s': image size %dx%d is not a multiple of 8 (it is resized down to %dx%d)",
                     j->id, img->w, img->h, img->w / 8 * 8, img->h / 8 * 8);
            output_symlink(m, j);
        }
        const input *vid = j->vae ? input_get(&in, j->vae, VAE_INPUT) : NULL;
        if (full && vid && vid->state < 0) {
            ERR(m, j->key_pos[SDB_JK_VAE], "job '%s': vae: %s (a bare name is looked up in models/ beside the manifest, then in $SDB_MODELS)", j->id, vid->why);
            m->n_input_errors++;
            if (!j->bad_input && asprintf(&j->bad_input, "vae: %s", vid->why) < 0) j->bad_input = NULL;
        }
        hash_job(j, img, mask, vid);
    }
    for (size_t i = 0; i < in.n; i++) free(in.v[i].path);
    free(in.v);
    return full ? finish(m, err) : 0;
}

int sdb_manifest_check(sdb_manifest *m, sdb_err *err) { return check_or_hash(m, 1, err); }
int sdb_manifest_hash_inputs(sdb_manifest *m, sdb_err *err) { return check_or_hash(m, 0, err); }
