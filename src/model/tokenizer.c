/*
 * tokenizer.c — CLIP byte-level BPE (see tokenizer.h), matching transformers' slow CLIPTokenizer
 * (4.45) on the path it takes when ftfy is NOT installed, which is what the references used.
 *
 * The text path, in order (Python names in brackets):
 *  1. UTF-8 is decoded; an invalid byte sequence becomes U+FFFD (as bytes.decode(errors="replace")
 *     would give), which step 3 then drops.
 *  2. The exact special-token strings (bos/eos/pad/unk: "<|startoftext|>", "<|endoftext|>", and
 *     any added_tokens_decoder / added_tokens.json entry, which must be vocab.json's own entry:
 *     tokens added beyond the vocabulary are refused at load) are split off first,
 *     case-sensitively, leftmost-longest [tokens_trie.split]; they become their ids. Every other
 *     part goes through steps 3-6 on its own.
 *  3. BasicTokenizer(do_lower_case=True, strip_accents=False, do_split_on_punc=False).tokenize:
 *     drop U+0000, U+FFFD and every category C* character except \t \n \r [_clean_text]; map
 *     \t \n \r and category Zs to ' '; put ' ' around CJK ideographs [_tokenize_chinese_chars];
 *     NFC; split on Python whitespace [str.split]; str.lower() each word; join with ' '.
 *  4. The regex <\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|
 *     [^\s\p{L}\p{N}]+ (IGNORECASE), tried in that order at each position (findall). A piece
 *     that is exactly "<|startoftext|>" / "<|endoftext|>" maps straight to that id (the bpe cache
 *     is seeded with them), e.g. from a typed "<|ENDOFTEXT|>" that the lowering turned into it.
 *  5. Each piece's UTF-8 bytes are mapped through GPT-2's bytes_to_unicode; "</w>" is appended to
 *     the last symbol; merges are applied lowest rank first (rank = merges.txt line order; only the
 *     first 48894 merges after the "#version" line are used, as transformers slices them), every
 *     non-overlapping occurrence of the chosen pair left to right, until no pair has a rank.
 *  6. Truncation keeps bos + the first max_length-2 ids + eos; padding appends pad (= eos for SD).
 *
 * Symbols are handled as vocabulary ids: loading checks that every merge's two parts and their
 * concatenation are in vocab.json (true for CLIP, whose vocabulary is exactly the 512 byte
 * symbols, the merge results and the two special tokens), so an unknown token can never occur.
 *
 * Where this can differ from a REAL ftfy install (transformers' other path: ftfy.fix_text, then
 * whitespace_clean and .lower(), no BasicTokenizer): ftfy unescapes HTML entities ("&amp;"),
 * uncurls quotes, expands ligatures ("ﬁ"), folds full-width letters, repairs mojibake; it does NOT
 * put spaces around CJK ideographs nor delete format/control characters (U+200B, \x07). Such
 * prompts get other ids than with ftfy (refs/tokenizer.json: input_ids_if_ftfy_path_nfc_only);
 * this file follows the fallback, which is what diffusers users without ftfy get.
 *
 * Where this can differ from Python's str.lower() / unicodedata / the `regex` module:
 *  - str.lower() uses FULL case mapping: the only unconditional full lowercase mapping, U+0130
 *    'İ' -> "i̇" (i + U+0307), is reproduced here, and so is the context-dependent Final_Sigma rule
 *    (Σ -> ς at the end of a cased word), which CPython implements. utf8proc alone would give the
 *    simple mappings ('İ' -> 'i', Σ -> σ always). Python's Cased / Case_Ignorable properties are
 *    approximated from utf8proc's categories and case mappings plus the short lists below, which
 *    can only matter for a Σ next to exotic characters.
 *  - utf8proc 2.8 implements Unicode 15.0; Python 3.11's unicodedata is 14.0. A character assigned
 *    in 15.0 is Cn (dropped) for Python but may be a letter here, and vice versa for other versions.
 *  - The regex module with IGNORECASE also lets 'ſ' (U+017F) and 'K' (U+212A) match 's'/'k' in
 *    the literal alternatives: handled. Whether it lets a non-letter whose case variant is a
 *    letter (U+0345 combining ypogegrammeni) match \p{L} is not reproduced: such a mark is treated
 *    by its own category (Mn).
 */
#include "sdb/tokenizer.h"

#include <assert.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "sdb/fsutil.h"

#define CLIP_MAX_MERGES (49152 - 256 - 2) /* transformers: merges[1 : 49152-256-2+1] */
#define MAX_SPECIAL 64
#define BYTE_CP_LIMIT 324 /* bytes_to_unicode maps the 256 bytes into [0, 256 + 68) */

/* ---- hash tables ------------------------------------------------------------------------- */

static uint64_t hash_bytes(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++) { h ^= (unsigned char)s[i]; h *= 1099511628211ull; }
    return h ^ (h >> 29);
}

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 30; x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27; x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

typedef struct { int32_t a, b, rank, result; } merge_slot; /* a < 0: empty */

struct sdb_tokenizer {
    char **pieces;        /* id -> vocabulary string (NULL for unused ids) */
    int n_ids;            /* largest id + 1 */
    int32_t *vslots;      /* vocab hash: ids, -1 empty */
    size_t vcap;          /* power of two */
    merge_slot *mslots;   /* merge hash keyed by (a, b) */
    size_t mcap;
    int32_t byte_id[256], byte_end_id[256]; /* bytes_to_unicode symbol, and with "</w>" */
    uint32_t byte_cp[256];                  /* bytes_to_unicode */
    int16_t cp_byte[BYTE_CP_LIMIT];         /* its inverse (byte_decoder): code point -> byte, -1 none */
    int32_t bos, eos, pad, unk;
    int32_t sot_id, eot_id;                 /* "<|startoftext|>" / "<|endoftext|>" (bpe cache) */
    char *special[MAX_SPECIAL];             /* distinct added-token strings split off first */
    int32_t special_id[MAX_SPECIAL];
    int n_special;
    int max_length;
    int monotonic;                          /* merges allow the heap BPE (see bpe_heap) */
    int bpe_mode;                           /* 0 auto, 1 loop, 2 heap (tests) */
};

static int32_t vocab_find(const sdb_tokenizer *t, const char *s, size_t n)
{
    size_t m = t->vcap - 1;
    for (size_t i = hash_bytes(s, n) & m;; i = (i + 1) & m) {
        int32_t id = t->vslots[i];
        if (id < 0) return -1;
        const char *p = t->pieces[id];
        if (strncmp(p, s, n) == 0 && p[n] == '\0') return id;
    }
}

static const merge_slot *merge_find(const sdb_tokenizer *t, int32_t a, int32_t b)
{
    size_t m = t->mcap - 1;
    for (size_t i = mix64(((uint64_t)(uint32_t)a << 32) | (uint32_t)b) & m;; i = (i + 1) & m) {
        const merge_slot *s = &t->mslots[i];
        if (s->a < 0) return NULL;
        if (s->a == a && s->b == b) return s;
    }
}

/* ---- bytes_to_unicode ---------------------------------------------------------------------- */

static void bytes_to_unicode(uint32_t cp[256])
{
    int n = 0;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        cp[b] = printable ? (uint32_t)b : (uint32_t)(256 + n++);
    }
}

static size_t put_utf8(uint32_t c, char *out)
{
    return (size_t)utf8proc_encode_char((utf8proc_int32_t)c, (utf8proc_uint8_t *)out);
}

/* ---- loading ------------------------------------------------------------------------------- */

void sdb_tokenizer_free(sdb_tokenizer *t)
{
    if (!t) return;
    if (t->pieces) for (int i = 0; i < t->n_ids; i++) free(t->pieces[i]);
    free(t->pieces);
    free(t->vslots);
    free(t->mslots);
    for (int i = 0; i < t->n_special; i++) free(t->special[i]);
    free(t);
}

static size_t pow2_at_least(size_t n)
{
    size_t c = 16;
    while (c < n) c <<= 1;
    return c;
}

static int load_vocab(sdb_tokenizer *t, const char *path, sdb_err *err)
{
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    if (!root) {
        if (je.line <= 0 && je.position == 0)
            return sdb_fail(err, SDB_EIO, "%s: %s", path, je.text);
        return sdb_fail(err, SDB_EFORMAT, "%s:%d:%d: invalid JSON: %s", path, je.line, je.column, je.text);
    }
    int rc = 0;
    if (!json_is_object(root) || json_object_size(root) == 0) {
        rc = sdb_fail(err, SDB_EFORMAT, "%s: expected a JSON object mapping token strings to ids", path);
        goto done;
    }
    const char *key;
    json_t *val;
    long long max_id = -1;
    json_object_foreach(root, key, val) {
        if (!json_is_integer(val) || json_integer_value(val) < 0 || json_integer_value(val) > 10000000) {
            rc = sdb_fail(err, SDB_EFORMAT, "%s: token '%s': id must be an integer in [0, 10000000]", path, key);
            goto done;
        }
        if (json_integer_value(val) > max_id) max_id = json_integer_value(val);
    }
    t->n_ids = (int)max_id + 1;
    t->pieces = calloc((size_t)t->n_ids, sizeof *t->pieces);
    t->vcap = pow2_at_least(2 * json_object_size(root));
    t->vslots = malloc(t->vcap * sizeof *t->vslots);
    if (!t->pieces || !t->vslots) { rc = sdb_fail(err, SDB_ENOMEM, "%s: out of memory", path); goto done; }
    memset(t->vslots, 0xff, t->vcap * sizeof *t->vslots);
    json_object_foreach(root, key, val) {
        int32_t id = (int32_t)json_integer_value(val);
        if (t->pieces[id]) {
            rc = sdb_fail(err, SDB_EFORMAT, "%s: id %d is given to both '%s' and '%s'", path, id, t->pieces[id], key);
            goto done;
        }
        size_t n = strlen(key);
        if (n == 0) { rc = sdb_fail(err, SDB_EFORMAT, "%s: empty token string (id %d)", path, id); goto done; }
        t->pieces[id] = strdup(key);
        if (!t->pieces[id]) { rc = sdb_fail(err, SDB_ENOMEM, "%s: out of memory", path); goto done; }
        size_t m = t->vcap - 1, i = hash_bytes(key, n) & m;
        while (t->vslots[i] >= 0) i = (i + 1) & m; /* keys are unique (a JSON object) */
        t->vslots[i] = id;
    }
done:
    json_decref(root);
    return rc;
}

static int is_ws_byte(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

static int load_merges(sdb_tokenizer *t, const char *path, sdb_err *err)
{
    char *buf;
    size_t len;
    int rc = sdb_read_file(path, &buf, &len, err);
    if (rc) return rc;
    /* text.strip().split("\n")[1 : 1 + CLIP_MAX_MERGES] */
    char *s = buf, *e = buf + len;
    while (s < e && is_ws_byte(*s)) s++;
    while (e > s && is_ws_byte(e[-1])) e--;
    *e = '\0';
    int n_lines = 0;
    for (char *p = s; p < e; p++) n_lines += (*p == '\n');
    n_lines += (e > s);
    int n_merges = n_lines - 1 < CLIP_MAX_MERGES ? n_lines - 1 : CLIP_MAX_MERGES;
    if (n_merges < 0) n_merges = 0;
    t->mcap = pow2_at_least(2 * (size_t)n_merges + 2);
    t->mslots = malloc(t->mcap * sizeof *t->mslots);
    if (!t->mslots) { free(buf); return sdb_fail(err, SDB_ENOMEM, "%s: out of memory", path); }
    for (size_t i = 0; i < t->mcap; i++) t->mslots[i].a = -1;

    char *line = s;
    char joined[1024];
    for (int ln = 0; ln <= n_merges && line && line <= e; ln++) {
        char *nl = strchr(line, '\n');
        if (nl) *nl = '\0';
        if (ln > 0) { /* line 0 is the "#version" header */
            char *f[3];
            int nf = 0;
            for (char *p = line; *p && nf < 3;) {
                while (*p && is_ws_byte(*p)) *p++ = '\0';
                if (!*p) break;
                f[nf++] = p;
                while (*p && !is_ws_byte(*p)) p++;
            }
            if (nf != 2) {
                free(buf);
                return sdb_fail(err, SDB_EFORMAT, "%s:%d: expected two symbols separated by a space, got %d field%s",
                                path, ln + 1, nf, nf == 1 ? "" : "s");
            }
            int32_t a = vocab_find(t, f[0], strlen(f[0])), b = vocab_find(t, f[1], strlen(f[1]));
            int jl = snprintf(joined, sizeof joined, "%s%s", f[0], f[1]);
            int32_t r = jl < (int)sizeof joined ? vocab_find(t, joined, (size_t)jl) : -1;
            if (a < 0 || b < 0 || r < 0) {
                const char *what = a < 0 ? f[0] : b < 0 ? f[1] : joined;
                rc = sdb_fail(err, SDB_EFORMAT, "%s:%d: merge '%s %s' refers to '%s', which is not in vocab.json",
                              path, ln + 1, f[0], f[1], what);
                free(buf);
                return rc;
            }
            size_t m = t->mcap - 1, i = mix64(((uint64_t)(uint32_t)a << 32) | (uint32_t)b) & m;
            while (t->mslots[i].a >= 0 && !(t->mslots[i].a == a && t->mslots[i].b == b)) i = (i + 1) & m;
            /* a repeated pair takes its later rank, as dict(zip(merges, range(n))) does */
            t->mslots[i] = (merge_slot){a, b, ln - 1, r};
        }
        line = nl ? nl + 1 : NULL;
    }
    free(buf);
    /* monotonic: every merge's parts were created (if at all) only by lower-ranked merges */
    int32_t *created_max = malloc((size_t)t->n_ids * sizeof *created_max);
    if (!created_max) return sdb_fail(err, SDB_ENOMEM, "%s: out of memory", path);
    for (int i = 0; i < t->n_ids; i++) created_max[i] = -1;
    for (size_t i = 0; i < t->mcap; i++)
        if (t->mslots[i].a >= 0 && t->mslots[i].rank > created_max[t->mslots[i].result])
            created_max[t->mslots[i].result] = t->mslots[i].rank;
    t->monotonic = 1;
    for (size_t i = 0; i < t->mcap && t->monotonic; i++) {
        const merge_slot *ms = &t->mslots[i];
        if (ms->a >= 0 && (created_max[ms->a] >= ms->rank || created_max[ms->b] >= ms->rank)) t->monotonic = 0;
    }
    free(created_max);
    return 0;
}

/* A special token from a tokenizer_config.json / special_tokens_map.json value: a string, or an
 * AddedToken object with "content". */
static int special_value(json_t *root, const char *key, const char *path, char **out, sdb_err *err)
{
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) return 0;
    if (json_is_object(v)) v = json_object_get(v, "content");
    if (!v || !json_is_string(v) || json_string_length(v) == 0)
        return sdb_fail(err, SDB_EFORMAT, "%s: '%s' must be a token string or an object with a \"content\" string", path, key);
    char *s = strdup(json_string_value(v));
    if (!s) return sdb_fail(err, SDB_ENOMEM, "out of memory");
    free(*out);
    *out = s;
    return 0;
}

/* Adds an added token (split off before cleaning) after checking it is the vocabulary's own
 * entry: tokens beyond vocab.json (textual-inversion embeddings...) are not supported. */
static int add_split_token(sdb_tokenizer *t, const char *content, long long id, const char *path, sdb_err *err)
{
    int32_t vid = vocab_find(t, content, strlen(content));
    if (vid < 0)
        return sdb_fail(err, SDB_EUNSUPPORTED,
                        "%s: added token '%s' (id %lld) is not in vocab.json: tokens added beyond the vocabulary "
                        "(e.g. textual-inversion embeddings) are not supported", path, content, id);
    if (vid != id)
        return sdb_fail(err, SDB_EFORMAT, "%s: added token '%s' has id %lld, but vocab.json gives it %d",
                        path, content, id, vid);
    for (int j = 0; j < t->n_special; j++) if (!strcmp(t->special[j], content)) return 0;
    if (t->n_special == MAX_SPECIAL) return sdb_fail(err, SDB_EUNSUPPORTED, "%s: more than %d added tokens", path, MAX_SPECIAL);
    if (!(t->special[t->n_special] = strdup(content))) return sdb_fail(err, SDB_ENOMEM, "out of memory");
    t->special_id[t->n_special++] = vid;
    return 0;
}

/* tokenizer_config.json's "added_tokens_decoder" ({"49406": {"content": ...}}) and the older
 * added_tokens.json ({"content": id}). */
static int load_added_tokens(sdb_tokenizer *t, const char *dir, json_t *config, const char *config_path, sdb_err *err)
{
    json_t *dec = config ? json_object_get(config, "added_tokens_decoder") : NULL;
    const char *key;
    json_t *val;
    int rc = 0;
    if (dec && !json_is_null(dec)) {
        if (!json_is_object(dec)) return sdb_fail(err, SDB_EFORMAT, "%s: 'added_tokens_decoder' must be an object", config_path);
        json_object_foreach(dec, key, val) {
            json_t *c = json_is_object(val) ? json_object_get(val, "content") : NULL;
            char *end;
            long long id = strtoll(key, &end, 10);
            if (!c || !json_is_string(c) || *end || end == key)
                return sdb_fail(err, SDB_EFORMAT, "%s: added_tokens_decoder entry '%s' needs an integer key and a \"content\" string",
                                config_path, key);
            if ((rc = add_split_token(t, json_string_value(c), id, config_path, err))) return rc;
        }
    }
    char *path = sdb_path_join(dir, "added_tokens.json");
    if (!path) return sdb_fail(err, SDB_ENOMEM, "out of memory");
    if (sdb_file_exists(path)) {
        json_error_t je;
        json_t *root = json_load_file(path, 0, &je);
        if (!root) rc = sdb_fail(err, SDB_EFORMAT, "%s:%d:%d: invalid JSON: %s", path, je.line, je.column, je.text);
        else if (!json_is_object(root)) rc = sdb_fail(err, SDB_EFORMAT, "%s: expected a JSON object", path);
        else json_object_foreach(root, key, val) {
            if (!json_is_integer(val)) { rc = sdb_fail(err, SDB_EFORMAT, "%s: '%s': id must be an integer", path, key); break; }
            if ((rc = add_split_token(t, key, json_integer_value(val), path, err))) break;
        }
        if (root) json_decref(root);
    }
    free(path);
    return rc;
}

static int load_specials(sdb_tokenizer *t, const char *dir, sdb_err *err)
{
    static const char *keys[4] = {"bos_token", "eos_token", "pad_token", "unk_token"};
    static const char *defs[4] = {"<|startoftext|>", "<|endoftext|>", "<|endoftext|>", "<|endoftext|>"};
    char *val[4] = {0};
    int rc = 0;
    long long max_len = 77;
    int added_done = 0;
    for (int k = 0; k < 4 && !rc; k++) if (!(val[k] = strdup(defs[k]))) rc = sdb_fail(err, SDB_ENOMEM, "out of memory");
    /* transformers: tokenizer_config.json first, special_tokens_map.json overrides */
    const char *files[2] = {"tokenizer_config.json", "special_tokens_map.json"};
    for (int f = 0; f < 2 && !rc; f++) {
        char *path = sdb_path_join(dir, files[f]);
        if (!path) { rc = sdb_fail(err, SDB_ENOMEM, "out of memory"); break; }
        if (sdb_file_exists(path)) {
            json_error_t je;
            json_t *root = json_load_file(path, 0, &je);
            if (!root) rc = sdb_fail(err, SDB_EFORMAT, "%s:%d:%d: invalid JSON: %s", path, je.line, je.column, je.text);
            else if (!json_is_object(root)) rc = sdb_fail(err, SDB_EFORMAT, "%s: expected a JSON object", path);
            for (int k = 0; k < 4 && !rc; k++) rc = special_value(root, keys[k], path, &val[k], err);
            if (!rc && f == 0) { rc = load_added_tokens(t, dir, root, path, err); added_done = 1; }
            if (!rc && f == 0) {
                json_t *m = json_object_get(root, "model_max_length");
                if (m && !json_is_null(m)) {
                    if (!json_is_integer(m) && !json_is_real(m))
                        rc = sdb_fail(err, SDB_EFORMAT, "%s: model_max_length must be a number", path);
                    else {
                        double d = json_number_value(m);
                        /* transformers writes 1e30 (VERY_LARGE_INTEGER) when unknown: keep CLIP's 77 */
                        if (d >= 2 && d <= 4096) max_len = (long long)d;
                        else if (d < 2) rc = sdb_fail(err, SDB_EFORMAT, "%s: model_max_length %g is too small", path, d);
                    }
                }
            }
            if (root) json_decref(root);
        }
        free(path);
    }
    if (!rc && !added_done) rc = load_added_tokens(t, dir, NULL, NULL, err);
    if (!rc) {
        int32_t *ids[4] = {&t->bos, &t->eos, &t->pad, &t->unk};
        for (int k = 0; k < 4 && !rc; k++) {
            int32_t id = vocab_find(t, val[k], strlen(val[k]));
            if (id < 0) rc = sdb_fail(err, SDB_EFORMAT, "%s/vocab.json: %s '%s' is not in the vocabulary", dir, keys[k], val[k]);
            *ids[k] = id;
            if (!rc) rc = add_split_token(t, val[k], id, files[0], err);
        }
    }
    for (int k = 0; k < 4; k++) free(val[k]);
    t->max_length = (int)max_len;
    return rc;
}

int sdb_tokenizer_load(sdb_tokenizer **out, const char *dir, sdb_err *err)
{
    *out = NULL;
    sdb_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return sdb_fail(err, SDB_ENOMEM, "out of memory");
    char *vpath = sdb_path_join(dir, "vocab.json"), *mpath = sdb_path_join(dir, "merges.txt");
    int rc = (!vpath || !mpath) ? sdb_fail(err, SDB_ENOMEM, "out of memory") : 0;
    if (!rc && !sdb_is_dir(dir)) rc = sdb_fail(err, SDB_ENOTFOUND, "%s: tokenizer folder not found", dir);
    if (!rc && !sdb_file_exists(vpath)) rc = sdb_fail(err, SDB_ENOTFOUND, "%s: missing (the tokenizer's vocabulary)", vpath);
    if (!rc && !sdb_file_exists(mpath)) rc = sdb_fail(err, SDB_ENOTFOUND, "%s: missing (the tokenizer's BPE merges)", mpath);
    if (!rc) rc = load_vocab(t, vpath, err);
    if (!rc) {
        bytes_to_unicode(t->byte_cp);
        for (int c = 0; c < BYTE_CP_LIMIT; c++) t->cp_byte[c] = -1;
        for (int b = 0; b < 256; b++) {
            assert(t->byte_cp[b] < BYTE_CP_LIMIT && t->cp_byte[t->byte_cp[b]] < 0);
            t->cp_byte[t->byte_cp[b]] = (int16_t)b;
        }
        char sym[16];
        for (int b = 0; b < 256 && !rc; b++) {
            size_t n = put_utf8(t->byte_cp[b], sym);
            sym[n] = '\0';
            t->byte_id[b] = vocab_find(t, sym, n);
            if (t->byte_id[b] >= 0) {
                memcpy(sym + n, "</w>", 5);
                t->byte_end_id[b] = vocab_find(t, sym, n + 4);
            }
            if (t->byte_id[b] < 0 || t->byte_end_id[b] < 0)
                rc = sdb_fail(err, SDB_EFORMAT, "%s: byte symbol '%s' (byte 0x%02x) is missing: not a CLIP byte-level vocabulary",
                              vpath, sym, b);
        }
    }
    if (!rc) rc = load_merges(t, mpath, err);
    if (!rc) rc = load_specials(t, dir, err);
    if (!rc) {
        t->sot_id = vocab_find(t, "<|startoftext|>", 15);
        t->eot_id = vocab_find(t, "<|endoftext|>", 13);
        if (t->sot_id < 0) t->sot_id = t->unk;
        if (t->eot_id < 0) t->eot_id = t->unk;
    }
    free(vpath);
    free(mpath);
    if (rc) { sdb_tokenizer_free(t); return rc; }
    *out = t;
    return 0;
}

int sdb_tokenizer_max_length(const sdb_tokenizer *t) { return t->max_length; }
int32_t sdb_tokenizer_bos(const sdb_tokenizer *t) { return t->bos; }
int32_t sdb_tokenizer_eos(const sdb_tokenizer *t) { return t->eos; }
int32_t sdb_tokenizer_pad(const sdb_tokenizer *t) { return t->pad; }
int sdb_tokenizer_vocab_size(const sdb_tokenizer *t) { return t->n_ids; }
const char *sdb_tokenizer_piece(const sdb_tokenizer *t, int32_t id)
{
    return (id >= 0 && id < t->n_ids) ? t->pieces[id] : NULL;
}

/* ---- code point buffers ---------------------------------------------------------------------- */

typedef struct { int32_t *v; size_t n, cap; } cpbuf;

static int cp_push(cpbuf *b, int32_t c)
{
    if (b->n == b->cap) {
        size_t nc = b->cap ? 2 * b->cap : 64;
        int32_t *p = realloc(b->v, nc * sizeof *p);
        if (!p) return -1;
        b->v = p;
        b->cap = nc;
    }
    b->v[b->n++] = c;
    return 0;
}

static int decode_utf8(const char *s, size_t len, cpbuf *out)
{
    const utf8proc_uint8_t *p = (const utf8proc_uint8_t *)s;
    size_t i = 0;
    while (i < len) {
        utf8proc_int32_t c;
        utf8proc_ssize_t k = utf8proc_iterate(p + i, (utf8proc_ssize_t)(len - i), &c);
        if (k <= 0) { c = 0xFFFD; k = 1; }
        if (cp_push(out, c)) return -1;
        i += (size_t)k;
    }
    return 0;
}

/* ---- BasicTokenizer fallback ---------------------------------------------------------------- */

static int cat_of(int32_t c) { return (int)utf8proc_category(c); }

static int is_control(int32_t c) /* transformers _is_control */
{
    if (c == '\t' || c == '\n' || c == '\r') return 0;
    switch (cat_of(c)) {
    case UTF8PROC_CATEGORY_CC: case UTF8PROC_CATEGORY_CF: case UTF8PROC_CATEGORY_CS:
    case UTF8PROC_CATEGORY_CO: case UTF8PROC_CATEGORY_CN: return 1;
    default: return 0;
    }
}

static int is_whitespace(int32_t c) /* transformers _is_whitespace */
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || cat_of(c) == UTF8PROC_CATEGORY_ZS;
}

static int py_isspace(int32_t c) /* Python str.isspace (bidi WS/B/S or Zs) */
{
    return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 ||
           c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 ||
           c == 0x202F || c == 0x205F || c == 0x3000;
}

static int is_cjk(int32_t c) /* transformers _is_chinese_char */
{
    return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) || (c >= 0x20000 && c <= 0x2A6DF) ||
           (c >= 0x2A700 && c <= 0x2B73F) || (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B820 && c <= 0x2CEAF) ||
           (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

static int is_cased(int32_t c) /* Unicode Cased, approximated */
{
    int k = cat_of(c);
    if (k == UTF8PROC_CATEGORY_LU || k == UTF8PROC_CATEGORY_LL || k == UTF8PROC_CATEGORY_LT) return 1;
    if (utf8proc_tolower(c) != c || utf8proc_toupper(c) != c) return 1;
    return c == 0xAA || c == 0xBA || (c >= 0x2B0 && c <= 0x2B8) || c == 0x2C0 || c == 0x2C1 ||
           (c >= 0x2E0 && c <= 0x2E4) || c == 0x345 || c == 0x37A || (c >= 0x1D2C && c <= 0x1D6A) ||
           c == 0x1D78 || (c >= 0x1D9B && c <= 0x1DBF) || c == 0x2071 || c == 0x207F ||
           (c >= 0x2090 && c <= 0x209C) || (c >= 0x2160 && c <= 0x217F) || (c >= 0x24B6 && c <= 0x24E9) ||
           (c >= 0xA69C && c <= 0xA69D) || c == 0xA770 || (c >= 0xA7F8 && c <= 0xA7F9) ||
           (c >= 0xAB5C && c <= 0xAB5F);
}

static int is_case_ignorable(int32_t c) /* Unicode Case_Ignorable, approximated */
{
    switch (cat_of(c)) {
    case UTF8PROC_CATEGORY_MN: case UTF8PROC_CATEGORY_ME: case UTF8PROC_CATEGORY_CF:
    case UTF8PROC_CATEGORY_LM: case UTF8PROC_CATEGORY_SK: return 1;
    default: break;
    }
    return c == 0x27 || c == 0x2E || c == 0x3A || c == 0x5E || c == 0x60 || c == 0xA8 || c == 0xAD ||
           c == 0xAF || c == 0xB4 || c == 0xB7 || c == 0xB8 || c == 0x387 || c == 0x55F || c == 0x5F4 ||
           c == 0x2018 || c == 0x2019 || c == 0x2024 || c == 0x2027 || c == 0xFE13 || c == 0xFE52 ||
           c == 0xFE55 || c == 0xFF07 || c == 0xFF0E || c == 0xFF1A;
}

/* Python str.lower() of w[0..n) appended to out. */
static int py_lower(const int32_t *w, size_t n, cpbuf *out)
{
    for (size_t i = 0; i < n; i++) {
        int32_t c = w[i];
        if (c < 0x80) { if (cp_push(out, (c >= 'A' && c <= 'Z') ? c + 32 : c)) return -1; continue; }
        if (c == 0x130) { if (cp_push(out, 'i') || cp_push(out, 0x307)) return -1; continue; }
        if (c == 0x3A3) { /* CPython handle_capital_sigma */
            size_t j = i;
            int32_t before = 0;
            while (j > 0 && is_case_ignorable(w[j - 1])) j--;
            int final = j > 0 && is_cased(before = w[j - 1]);
            if (final) {
                size_t k = i + 1;
                while (k < n && is_case_ignorable(w[k])) k++;
                final = (k == n) || !is_cased(w[k]);
            }
            (void)before;
            if (cp_push(out, final ? 0x3C2 : 0x3C3)) return -1;
            continue;
        }
        if (cp_push(out, utf8proc_tolower(c))) return -1;
    }
    return 0;
}

/* NFC of in[0..n) into out (replacing its contents). */
static int nfc(const int32_t *in, size_t n, cpbuf *out)
{
    out->n = 0;
    if (n == 0) return 0;
    char *u8 = malloc(4 * n + 1);
    if (!u8) return -1;
    size_t m = 0;
    for (size_t i = 0; i < n; i++) m += put_utf8((uint32_t)in[i], u8 + m);
    u8[m] = '\0';
    utf8proc_uint8_t *norm = utf8proc_NFC((const utf8proc_uint8_t *)u8);
    free(u8);
    if (!norm) return -1;
    int rc = decode_utf8((const char *)norm, strlen((const char *)norm), out);
    free(norm);
    return rc;
}

/* BasicTokenizer(...).tokenize + " ".join: words of the result separated by single spaces. */
static int basic_clean(const int32_t *in, size_t n, cpbuf *out)
{
    cpbuf a = {0}, b = {0};
    int rc = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        int32_t c = in[i];
        if (c == 0 || c == 0xFFFD || is_control(c)) continue;
        if (is_whitespace(c)) { rc = cp_push(&a, ' '); continue; }
        if (is_cjk(c)) rc = cp_push(&a, ' ') || cp_push(&a, c) || cp_push(&a, ' ');
        else rc = cp_push(&a, c);
    }
    if (!rc) rc = nfc(a.v, a.n, &b);
    out->n = 0;
    for (size_t i = 0; i < b.n && !rc;) {
        while (i < b.n && py_isspace(b.v[i])) i++;
        size_t s = i;
        while (i < b.n && !py_isspace(b.v[i])) i++;
        if (i > s) {
            if (out->n) rc = cp_push(out, ' ');
            if (!rc) rc = py_lower(b.v + s, i - s, out);
        }
    }
    free(a.v);
    free(b.v);
    return rc;
}

char *sdb_tokenizer_clean(const char *text, long len)
{
    cpbuf in = {0}, out = {0};
    size_t n = len < 0 ? strlen(text) : (size_t)len;
    char *res = NULL;
    if (!decode_utf8(text, n, &in) && !basic_clean(in.v, in.n, &out)) {
        res = malloc(4 * out.n + 1);
        if (res) {
            size_t m = 0;
            for (size_t i = 0; i < out.n; i++) m += put_utf8((uint32_t)out.v[i], res + m);
            res[m] = '\0';
        }
    }
    free(in.v);
    free(out.v);
    return res;
}

/* ---- regex + BPE ----------------------------------------------------------------------------- */

static int is_L(int32_t c)
{
    int k = cat_of(c);
    return k == UTF8PROC_CATEGORY_LU || k == UTF8PROC_CATEGORY_LL || k == UTF8PROC_CATEGORY_LT ||
           k == UTF8PROC_CATEGORY_LM || k == UTF8PROC_CATEGORY_LO;
}

static int is_N(int32_t c)
{
    int k = cat_of(c);
    return k == UTF8PROC_CATEGORY_ND || k == UTF8PROC_CATEGORY_NL || k == UTF8PROC_CATEGORY_NO;
}

/* IGNORECASE equality of a code point with a lowercase ASCII pattern character. */
static int ci_eq(int32_t c, char p)
{
    if (c == p) return 1;
    if (p >= 'a' && p <= 'z' && c == p - 32) return 1;
    return (p == 's' && c == 0x17F) || (p == 'k' && c == 0x212A);
}

static int lit_match(const int32_t *w, size_t n, size_t i, const char *lit)
{
    size_t k = strlen(lit);
    if (i + k > n) return 0;
    for (size_t j = 0; j < k; j++) if (!ci_eq(w[i + j], lit[j])) return 0;
    return (int)k;
}

typedef struct { int32_t *v; size_t n, cap; } idbuf;

static int id_push(idbuf *b, int32_t id)
{
    if (b->n == b->cap) {
        size_t nc = b->cap ? 2 * b->cap : 128;
        int32_t *p = realloc(b->v, nc * sizeof *p);
        if (!p) return -1;
        b->v = p;
        b->cap = nc;
    }
    b->v[b->n++] = id;
    return 0;
}

static int lit_exact(const int32_t *w, size_t n, const char *lit)
{
    size_t k = strlen(lit);
    if (n != k) return 0;
    for (size_t j = 0; j < k; j++) if (w[j] != (unsigned char)lit[j]) return 0;
    return 1;
}

/* The merge loop exactly as transformers writes it: find the lowest-ranked adjacent pair, merge
 * all its non-overlapping occurrences left to right, repeat. O(m) per merge, O(m^2) per piece. */
static size_t bpe_naive(const sdb_tokenizer *t, int32_t *s, size_t m)
{
    while (m > 1) {
        int32_t best = -1, ba = 0, bb = 0, res = 0;
        for (size_t i = 0; i + 1 < m; i++) {
            const merge_slot *ms = merge_find(t, s[i], s[i + 1]);
            if (ms && (best < 0 || ms->rank < best)) { best = ms->rank; ba = ms->a; bb = ms->b; res = ms->result; }
        }
        if (best < 0) break;
        size_t o = 0;
        for (size_t i = 0; i < m;) {
            if (i + 1 < m && s[i] == ba && s[i + 1] == bb) { s[o++] = res; i += 2; }
            else s[o++] = s[i++];
        }
        m = o;
    }
    return m;
}

/* The same result in O(m log m) with a heap of (rank, position) over a linked list of symbols.
 * It is only used when the merges are "monotonic" (every pair a merge can create has a higher
 * rank than that merge: true for any trained BPE, checked at load): then popping pairs in (rank,
 * position) order visits ranks in the order the loop above picks them, and each rank's
 * occurrences left to right, skipping overlapped ones, exactly as its merge pass does. */
typedef struct { int32_t rank, pos, a, b; } heap_ent;

static int hless(const heap_ent *x, const heap_ent *y)
{
    return x->rank < y->rank || (x->rank == y->rank && x->pos < y->pos);
}

static void heap_push(heap_ent *h, size_t *n, heap_ent e)
{
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!hless(&e, &h[p])) break;
        h[i] = h[p];
        i = p;
    }
    h[i] = e;
}

static heap_ent heap_pop(heap_ent *h, size_t *n)
{
    heap_ent top = h[0], last = h[--(*n)];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && hless(&h[c + 1], &h[c])) c++;
        if (!hless(&h[c], &last)) break;
        h[i] = h[c];
        i = c;
    }
    if (*n) h[i] = last;
    return top;
}

static size_t bpe_heap(const sdb_tokenizer *t, int32_t *s, size_t m)
{
    int32_t *nx = malloc(m * sizeof *nx), *pv = malloc(m * sizeof *pv);
    heap_ent *h = malloc(3 * m * sizeof *h);
    if (!nx || !pv || !h) { free(nx); free(pv); free(h); return bpe_naive(t, s, m); }
    size_t hn = 0;
    for (size_t i = 0; i < m; i++) {
        nx[i] = i + 1 < m ? (int32_t)(i + 1) : -1;
        pv[i] = (int32_t)i - 1;
        if (i + 1 < m) {
            const merge_slot *ms = merge_find(t, s[i], s[i + 1]);
            if (ms) heap_push(h, &hn, (heap_ent){ms->rank, (int32_t)i, s[i], s[i + 1]});
        }
    }
    while (hn) {
        heap_ent e = heap_pop(h, &hn);
        int32_t p = e.pos, q = nx[p];
        if (s[p] != e.a || q < 0 || s[q] != e.b) continue; /* stale */
        s[p] = merge_find(t, e.a, e.b)->result;
        s[q] = -1;
        nx[p] = nx[q];
        if (nx[q] >= 0) pv[nx[q]] = p;
        const merge_slot *ms;
        if (pv[p] >= 0 && (ms = merge_find(t, s[pv[p]], s[p])))
            heap_push(h, &hn, (heap_ent){ms->rank, pv[p], s[pv[p]], s[p]});
        if (nx[p] >= 0 && (ms = merge_find(t, s[p], s[nx[p]])))
            heap_push(h, &hn, (heap_ent){ms->rank, p, s[p], s[nx[p]]});
    }
    size_t o = 0;
    for (int32_t i = 0; i >= 0; i = nx[i]) s[o++] = s[i];
    free(nx);
    free(pv);
    free(h);
    return o;
}

#define BPE_HEAP_MIN 48 /* symbols; shorter pieces use the plain loop */

/* BPE of one regex piece; its ids are appended to out. sym is scratch. */
static int bpe_piece(const sdb_tokenizer *t, const int32_t *w, size_t n, idbuf *out, idbuf *sym)
{
    if (lit_exact(w, n, "<|startoftext|>")) return id_push(out, t->sot_id);
    if (lit_exact(w, n, "<|endoftext|>")) return id_push(out, t->eot_id);
    char bytes[8];
    sym->n = 0;
    /* UTF-8 bytes -> byte symbols; the last one with "</w>" */
    unsigned char last = 0;
    for (size_t i = 0; i < n; i++) {
        size_t k = put_utf8((uint32_t)w[i], bytes);
        for (size_t j = 0; j < k; j++) {
            last = (unsigned char)bytes[j];
            if (id_push(sym, t->byte_id[last])) return -1;
        }
    }
    if (sym->n == 0) return 0;
    sym->v[sym->n - 1] = t->byte_end_id[last];
    int mode = t->bpe_mode ? t->bpe_mode : (t->monotonic && sym->n >= BPE_HEAP_MIN) ? 2 : 1;
    size_t m = mode == 2 ? bpe_heap(t, sym->v, sym->n) : bpe_naive(t, sym->v, sym->n);
    for (size_t i = 0; i < m; i++) if (id_push(out, sym->v[i])) return -1;
    return 0;
}

void sdb_tokenizer_debug_bpe_mode(sdb_tokenizer *t, int mode) { t->bpe_mode = mode; }
int sdb_tokenizer_debug_monotonic(const sdb_tokenizer *t) { return t->monotonic; }

static const char *const contractions[] = {"'s", "'t", "'re", "'ve", "'m", "'ll", "'d"};

/* Regex findall over the cleaned text, BPE of each piece. */
static int tokenize_clean(const sdb_tokenizer *t, const int32_t *w, size_t n, idbuf *out, idbuf *sym)
{
    size_t i = 0;
    while (i < n) {
        size_t k = 0;
        if (!k) k = (size_t)lit_match(w, n, i, "<|startoftext|>");
        if (!k) k = (size_t)lit_match(w, n, i, "<|endoftext|>");
        for (int c = 0; !k && c < 7; c++) k = (size_t)lit_match(w, n, i, contractions[c]);
        if (!k && is_L(w[i])) { k = 1; while (i + k < n && is_L(w[i + k])) k++; }
        if (!k && is_N(w[i])) k = 1;
        if (!k && !py_isspace(w[i])) {
            k = 1;
            while (i + k < n && !py_isspace(w[i + k]) && !is_L(w[i + k]) && !is_N(w[i + k])) k++;
        }
        if (!k) { i++; continue; }
        if (bpe_piece(t, w + i, k, out, sym)) return -1;
        i += k;
    }
    return 0;
}

int sdb_tokenizer_tokenize(const sdb_tokenizer *t, const char *text, long len, int32_t **ids,
                           int *n, sdb_err *err)
{
    *ids = NULL;
    *n = 0;
    size_t tl = len < 0 ? strlen(text) : (size_t)len;
    cpbuf in = {0}, clean = {0};
    idbuf out = {0}, sym = {0};
    int rc = decode_utf8(text, tl, &in);
    /* split off the exact special-token strings (leftmost, longest) */
    size_t start = 0;
    for (size_t i = 0; !rc && i <= in.n;) {
        int best = -1;
        size_t blen = 0;
        for (int s = 0; i < in.n && s < t->n_special; s++) {
            size_t k = strlen(t->special[s]);
            if (k > blen && i + k <= in.n) {
                size_t j = 0;
                while (j < k && in.v[i + j] == (unsigned char)t->special[s][j]) j++;
                if (j == k) { best = s; blen = k; }
            }
        }
        if (best >= 0 || i == in.n) {
            if (i > start) {
                rc = basic_clean(in.v + start, i - start, &clean);
                if (!rc) rc = tokenize_clean(t, clean.v, clean.n, &out, &sym);
            }
            if (best < 0) break;
            if (!rc) rc = id_push(&out, t->special_id[best]);
            i += blen;
            start = i;
        } else {
            i++;
        }
    }
    free(in.v);
    free(clean.v);
    free(sym.v);
    if (rc) { free(out.v); return sdb_fail(err, SDB_ENOMEM, "tokenizer: out of memory"); }
    if (out.n > 0x7fffffff) { free(out.v); return sdb_fail(err, SDB_EINVAL, "tokenizer: text too long"); }
    *ids = out.v;
    *n = (int)out.n;
    if (!*ids) *ids = malloc(sizeof(int32_t)); /* a valid pointer for an empty result */
    if (!*ids) return sdb_fail(err, SDB_ENOMEM, "tokenizer: out of memory");
    return 0;
}

char *sdb_tokenizer_decode(const sdb_tokenizer *t, const int32_t *ids, int n)
{
    /* byte_decoder: code point -> byte */
    size_t cap = 64, m = 0;
    for (int i = 0; i < n; i++) {
        const char *p = sdb_tokenizer_piece(t, ids[i]);
        if (p) cap += strlen(p);
    }
    unsigned char *raw = malloc(cap);
    if (!raw) return NULL;
    for (int i = 0; i < n; i++) {
        const char *p = sdb_tokenizer_piece(t, ids[i]);
        if (!p) continue;
        size_t pl = strlen(p), j = 0;
        while (j < pl) {
            utf8proc_int32_t c;
            utf8proc_ssize_t k = utf8proc_iterate((const utf8proc_uint8_t *)p + j, (utf8proc_ssize_t)(pl - j), &c);
            if (k <= 0) { k = 1; c = -1; }
            j += (size_t)k;
            if (c >= 0 && c < BYTE_CP_LIMIT && t->cp_byte[c] >= 0) raw[m++] = (unsigned char)t->cp_byte[c];
        }
    }
    /* "</w>" -> " ", invalid UTF-8 -> U+FFFD, strip */
    char *res = malloc(3 * m + 1);
    if (!res) { free(raw); return NULL; }
    size_t o = 0;
    for (size_t i = 0; i < m;) {
        if (i + 4 <= m && !memcmp(raw + i, "</w>", 4)) { res[o++] = ' '; i += 4; continue; }
        utf8proc_int32_t c;
        utf8proc_ssize_t k = utf8proc_iterate(raw + i, (utf8proc_ssize_t)(m - i), &c);
        if (k <= 0) { o += put_utf8(0xFFFD, res + o); i++; continue; }
        memcpy(res + o, raw + i, (size_t)k);
        o += (size_t)k;
        i += (size_t)k;
    }
    res[o] = '\0';
    free(raw);
    size_t s = 0;
    while (res[s] && is_ws_byte(res[s])) s++;
    while (o > s && is_ws_byte(res[o - 1])) res[--o] = '\0';
    if (s) memmove(res, res + s, o - s + 1);
    /* clean_up_tokenization (transformers' default for decode): each replace-all in order */
    static const char *const from[] = {" .", " ?", " !", " ,", " ' ", " n't", " 'm", " 's", " 've", " 're"};
    static const char *const to[] = {".", "?", "!", ",", "'", "n't", "'m", "'s", "'ve", "'re"};
    for (int r = 0; r < 10; r++) {
        size_t fl = strlen(from[r]), tl = strlen(to[r]), w = 0;
        for (size_t i = 0; res[i];) {
            if (res[i] == from[r][0] && !strncmp(res + i, from[r], fl)) { memmove(res + w, to[r], tl); w += tl; i += fl; }
            else res[w++] = res[i++];
        }
        res[w] = '\0';
    }
    return res;
}

int sdb_tokenizer_encode(const sdb_tokenizer *t, const char *text, long len, int32_t *ids,
                         int *n_untruncated, const sdb_log *log, sdb_err *err)
{
    int32_t *tok;
    int n;
    int rc = sdb_tokenizer_tokenize(t, text, len, &tok, &n, err);
    if (rc) return rc;
    int L = t->max_length, keep = n < L - 2 ? n : L - 2;
    ids[0] = t->bos;
    memcpy(ids + 1, tok, (size_t)keep * sizeof *ids);
    ids[1 + keep] = t->eos;
    for (int i = keep + 2; i < L; i++) ids[i] = t->pad;
    if (n_untruncated) *n_untruncated = n + 2;
    if (n > keep && log) {
        char *dropped = sdb_tokenizer_decode(t, tok + keep, n - keep);
        sdb_logf(log, SDB_LOG_WARN,
                 "The following part of your input was truncated because CLIP can only handle sequences up to %d tokens: %s",
                 L, dropped ? dropped : "(out of memory)");
        free(dropped);
    }
    free(tok);
    return 0;
}
