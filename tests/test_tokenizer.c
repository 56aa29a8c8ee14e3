/*
 * test_tokenizer.c — the CLIP tokenizer against every prompt of refs/tokenizer.json (77 input ids,
 * the untruncated BPE token strings, the cleaned text, the truncation warning), the
 * `sdbatch tokenize` command, load speed, and malformed tokenizer files (each must fail with an
 * error naming the file).
 */
#include "harness.h"
#include "sdb/fsutil.h"
#include "sdb/tokenizer.h"

#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *tok_dir(void) { return sdb_t_path("models/tiny-sd-inpaint/tokenizer"); }

typedef struct { int n_warn; char last[4096]; } log_capture;

static void capture_sink(void *ud, sdb_log_level level, const char *msg)
{
    log_capture *c = ud;
    if (level == SDB_LOG_WARN) c->n_warn++;
    snprintf(c->last, sizeof c->last, "%s", msg);
}

static void test_reference_prompts(void)
{
    sdb_err err = {0};
    sdb_tokenizer *tok = NULL;
    CHECK_OK(sdb_tokenizer_load(&tok, tok_dir(), &err), &err);
    if (!tok) return;
    CHECK(sdb_tokenizer_max_length(tok) == 77);
    CHECK(sdb_tokenizer_bos(tok) == 49406);
    CHECK(sdb_tokenizer_eos(tok) == 49407);
    CHECK(sdb_tokenizer_pad(tok) == 49407);
    CHECK(sdb_tokenizer_vocab_size(tok) == 49408);

    json_error_t je;
    /* JSON_ALLOW_NUL: one prompt contains U+0000 */
    json_t *root = json_load_file(sdb_t_path("refs/tokenizer.json"), JSON_ALLOW_NUL, &je);
    CHECKF(root != NULL, "refs/tokenizer.json: %s", je.text);
    if (!root) { sdb_tokenizer_free(tok); return; }
    json_t *cases = json_object_get(root, "cases");
    CHECK(json_is_array(cases) && json_array_size(cases) == 40);
    size_t ci;
    json_t *c;
    int n_ok = 0, n_trunc = 0;
    json_array_foreach(cases, ci, c) {
        json_t *jp = json_object_get(c, "prompt");
        const char *prompt = json_string_value(jp);
        long plen = (long)json_string_length(jp);
        json_t *ref_ids = json_object_get(c, "input_ids"), *ref_tokens = json_object_get(c, "tokens");
        int ref_nu = (int)json_integer_value(json_object_get(c, "n_tokens_untruncated"));
        int truncated = json_is_true(json_object_get(c, "truncated"));
        CHECK(json_array_size(ref_ids) == 77);

        log_capture cap = {0};
        sdb_log log = {capture_sink, &cap, SDB_LOG_DEBUG};
        int32_t ids[77];
        int nu = -1, same = 1;
        CHECK_OK(sdb_tokenizer_encode(tok, prompt, plen, ids, &nu, &log, &err), &err);
        for (int i = 0; i < 77; i++) same &= ids[i] == json_integer_value(json_array_get(ref_ids, (size_t)i));
        CHECKF(same, "case %zu (%s): input_ids differ", ci, prompt);
        CHECKF(nu == ref_nu, "case %zu: %d untruncated tokens, reference %d", ci, nu, ref_nu);
        CHECKF(cap.n_warn == truncated, "case %zu: %d truncation warnings, truncated=%d", ci, cap.n_warn, truncated);
        if (truncated) {
            n_trunc++;
            CHECKF(strstr(cap.last, "truncated because CLIP can only handle sequences up to 77 tokens: ") != NULL,
                   "warning: %s", cap.last);
            fprintf(stderr, "  truncation warning: %s\n", cap.last);
        }

        /* the untruncated BPE strings */
        int32_t *all = NULL;
        int n = 0;
        CHECK_OK(sdb_tokenizer_tokenize(tok, prompt, plen, &all, &n, &err), &err);
        int tok_same = (size_t)n == json_array_size(ref_tokens);
        for (int i = 0; tok_same && i < n; i++) {
            const char *p = sdb_tokenizer_piece(tok, all[i]);
            tok_same = p && !strcmp(p, json_string_value(json_array_get(ref_tokens, (size_t)i)));
        }
        CHECKF(tok_same, "case %zu (%s): BPE token strings differ (%d vs %zu)", ci, prompt, n, json_array_size(ref_tokens));
        free(all);

        /* the cleaned text (exclude the special-token case: cleaned_text there is of the whole prompt) */
        char *clean = sdb_tokenizer_clean(prompt, plen);
        const char *ref_clean = json_string_value(json_object_get(c, "cleaned_text"));
        if (ref_clean && !strstr(prompt, "<|"))
            CHECKF(clean && !strcmp(clean, ref_clean), "case %zu: cleaned '%s', reference '%s'", ci, clean, ref_clean);
        free(clean);
        n_ok += same && tok_same;
    }
    fprintf(stderr, "  %d/40 prompts identical, %d truncated\n", n_ok, n_trunc);
    CHECK(n_trunc == 2);
    json_decref(root);
    sdb_tokenizer_free(tok);
}

/* Extra cases worked out from transformers' code (not in the reference file). */
static void test_edge_cases(void)
{
    sdb_err err = {0};
    sdb_tokenizer *tok = NULL;
    CHECK_OK(sdb_tokenizer_load(&tok, tok_dir(), &err), &err);
    if (!tok) return;
    int32_t a[77], b[77];
    /* an upper-case special string is lowered by the cleaning, then matched by the regex and the
     * bpe cache: it is the special id too */
    CHECK_OK(sdb_tokenizer_encode(tok, "hello <|ENDOFTEXT|> world", -1, a, NULL, NULL, &err), &err);
    CHECK_OK(sdb_tokenizer_encode(tok, "hello <|endoftext|> world", -1, b, NULL, NULL, &err), &err);
    CHECK(memcmp(a, b, sizeof a) == 0 && a[2] == 49407);
    /* invalid UTF-8 is dropped like U+FFFD */
    CHECK_OK(sdb_tokenizer_encode(tok, "cat\xff with a hat", -1, a, NULL, NULL, &err), &err);
    CHECK_OK(sdb_tokenizer_encode(tok, "cat with a hat", -1, b, NULL, NULL, &err), &err);
    CHECK(memcmp(a, b, sizeof a) == 0);
    /* Python's full lowercase of U+0130 and the final sigma */
    char *cl = sdb_tokenizer_clean("\xC4\xB0STANBUL \xCE\x9F\xCE\x94\xCE\x9F\xCE\xA3 \xCE\xA3", -1);
    CHECKF(cl && !strcmp(cl, "i\xCC\x87stanbul \xCE\xBF\xCE\xB4\xCE\xBF\xCF\x82 \xCF\x83"), "clean: %s", cl);
    free(cl);
    /* decode as transformers (used for the truncation warning) */
    {
        int32_t *d = NULL;
        int nd = 0;
        CHECK_OK(sdb_tokenizer_tokenize(tok, "Hello,  World's end! caf\xC3\xA9 \xF0\x9F\x98\x80", -1, &d, &nd, &err), &err);
        char *txt = d ? sdb_tokenizer_decode(tok, d, nd) : NULL;
        CHECKF(txt && !strcmp(txt, "hello, world's end! caf\xC3\xA9 \xF0\x9F\x98\x80"), "decode: '%s'", txt);
        free(txt);
        free(d);
    }
    /* a huge prompt: bounded output, no crash */
    size_t big = 200000;
    char *s = malloc(big + 1);
    for (size_t i = 0; i < big; i++) s[i] = (i % 7 == 6) ? ' ' : "abcdefg"[i % 7];
    s[big] = 0;
    int nu = 0;
    CHECK_OK(sdb_tokenizer_encode(tok, s, -1, a, &nu, NULL, &err), &err);
    CHECK(nu > 77 && a[76] == 49407 && a[0] == 49406);
    free(s);
    sdb_tokenizer_free(tok);
}

/* The heap BPE used for long pieces gives exactly the merge loop's result. */
static void test_bpe_heap_equals_loop(void)
{
    sdb_err err = {0};
    sdb_tokenizer *tok = NULL;
    CHECK_OK(sdb_tokenizer_load(&tok, tok_dir(), &err), &err);
    if (!tok) return;
    CHECK(sdb_tokenizer_debug_monotonic(tok) == 1);
    static const char *alphabet[] = {"a", "b", "e", "i", "n", "o", "r", "s", "t", "l", "x", "q", "z",
                                     "\xC3\xA9", "\xC3\xBC", "\xF0\x9F\x98\x80", "\xD0\xB8", "\xE6\x97\xA5"};
    unsigned rng = 12345;
    int n_cases = 0, n_same = 0;
    char *text = malloc(4 * 3000 + 1);
    for (int len = 1; len <= 3000; len = len < 40 ? len + 1 : len * 5 / 4) {
        for (int rep = 0; rep < 4; rep++) {
            size_t o = 0;
            for (int i = 0; i < len; i++) {
                rng = rng * 1103515245u + 12345u;
                /* mostly English letters (long merges), sometimes multi-byte characters */
                unsigned r = (rng >> 16) % (rep == 3 ? 18 : 13);
                size_t k = strlen(alphabet[r]);
                memcpy(text + o, alphabet[r], k);
                o += k;
            }
            text[o] = 0;
            int32_t *a = NULL, *b = NULL;
            int na = 0, nb = 0;
            sdb_tokenizer_debug_bpe_mode(tok, 1);
            CHECK_OK(sdb_tokenizer_tokenize(tok, text, -1, &a, &na, &err), &err);
            sdb_tokenizer_debug_bpe_mode(tok, 2);
            CHECK_OK(sdb_tokenizer_tokenize(tok, text, -1, &b, &nb, &err), &err);
            int same = a && b && na == nb && !memcmp(a, b, (size_t)na * sizeof *a);
            CHECKF(same, "length %d rep %d: loop and heap BPE differ (%d vs %d tokens)", len, rep, na, nb);
            n_same += same;
            n_cases++;
            free(a);
            free(b);
        }
    }
    fprintf(stderr, "  %d/%d random words identical\n", n_same, n_cases);
    sdb_tokenizer_debug_bpe_mode(tok, 0);
    /* a 300000-character word (a pasted blob) stays fast */
    size_t big = 300000;
    char *s = malloc(big + 1);
    for (size_t i = 0; i < big; i++) { rng = rng * 1103515245u + 12345u; s[i] = (char)('a' + (rng >> 16) % 26); }
    s[big] = 0;
    int32_t ids[77];
    int nu = 0;
    double t0 = sdb_now_mono();
    CHECK_OK(sdb_tokenizer_encode(tok, s, -1, ids, &nu, NULL, &err), &err);
    double dt = sdb_now_mono() - t0;
    /* a figure, not a timed assertion (machines are noisy; a quadratic BPE would take minutes) */
    fprintf(stderr, "  300000-letter word: %d tokens in %.3f s\n", nu, dt);
    free(s);
    free(text);
    sdb_tokenizer_free(tok);
}

static void test_load_speed(void)
{
    sdb_err err = {0};
    double t0 = sdb_now_mono();
    sdb_tokenizer *tok = NULL;
    CHECK_OK(sdb_tokenizer_load(&tok, tok_dir(), &err), &err);
    double dt = sdb_now_mono() - t0;
    fprintf(stderr, "  load: %.3f s (a figure, not an assertion)\n", dt);
    CHECK(tok && sdb_tokenizer_vocab_size(tok) == 49408);
    sdb_tokenizer_free(tok);
}

static void test_cli(void)
{
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "'%s' tokenize --model '%s' --pieces 'cat with a hat' '' 2>&1",
             sdb_t_binary(), sdb_t_path("models/tiny-sd-inpaint"));
    FILE *p = popen(cmd, "r");
    CHECK(p != NULL);
    if (!p) return;
    char line[4][4096] = {{0}};
    for (int i = 0; i < 4; i++) if (!fgets(line[i], sizeof line[i], p)) break;
    int st = pclose(p);
    CHECK(st == 0);
    CHECKF(!strncmp(line[0], "49406 2368 593 320 3801 49407 49407 ", 36), "line 1: %s", line[0]);
    int count = 0;
    for (char *q = strtok(line[0], " \n"); q; q = strtok(NULL, " \n")) count++;
    CHECK(count == 77);
    CHECKF(!strcmp(line[1], "<|startoftext|> cat</w> with</w> a</w> hat</w> <|endoftext|>\n"), "line 2: %s", line[1]);
    CHECKF(!strncmp(line[2], "49406 49407 49407 ", 18), "line 3: %s", line[2]);
    CHECKF(!strcmp(line[3], "<|startoftext|> <|endoftext|>\n"), "line 4: %s", line[3]);

    snprintf(cmd, sizeof cmd, "'%s' tokenize --model /nonexistent/model x 2>&1", sdb_t_binary());
    p = popen(cmd, "r");
    char out[4096] = {0};
    size_t r = fread(out, 1, sizeof out - 1, p);
    out[r] = 0;
    st = pclose(p);
    CHECK(st != 0);
    CHECKF(strstr(out, "/nonexistent/model") != NULL, "%s", out);
}

/* A tokenizer folder with the real vocab and the given merges.txt / vocab.json overrides. */
static const char *make_dir(const char *vocab_text, const char *merges_text, const char *config_text)
{
    const char *d = sdb_t_tmpdir();
    sdb_err err = {0};
    char path[1024];
    if (vocab_text) {
        snprintf(path, sizeof path, "%s/vocab.json", d);
        sdb_write_file_atomic(path, vocab_text, strlen(vocab_text), &err);
    } else {
        char *v = NULL;
        size_t n = 0;
        sdb_read_file(sdb_t_path("models/tiny-sd-inpaint/tokenizer/vocab.json"), &v, &n, &err);
        snprintf(path, sizeof path, "%s/vocab.json", d);
        if (v) sdb_write_file_atomic(path, v, n, &err);
        free(v);
    }
    if (merges_text) {
        snprintf(path, sizeof path, "%s/merges.txt", d);
        sdb_write_file_atomic(path, merges_text, strlen(merges_text), &err);
    }
    if (config_text) {
        snprintf(path, sizeof path, "%s/tokenizer_config.json", d);
        sdb_write_file_atomic(path, config_text, strlen(config_text), &err);
    }
    return d;
}

static void expect_fail(const char *dir, const char *file_in_msg, const char *also, const char *what)
{
    sdb_err err = {0};
    sdb_tokenizer *tok = NULL;
    int rc = sdb_tokenizer_load(&tok, dir, &err);
    CHECKF(rc != 0 && tok == NULL, "%s: loading should fail", what);
    CHECKF(strstr(err.msg, file_in_msg) != NULL, "%s: message does not name %s: %s", what, file_in_msg, err.msg);
    if (also) CHECKF(strstr(err.msg, also) != NULL, "%s: message lacks '%s': %s", what, also, err.msg);
    fprintf(stderr, "  %-28s -> %s\n", what, err.msg);
    sdb_tokenizer_free(tok);
}

static void test_malformed(void)
{
    const char *ok_merges = "#version: 0.2\ni n\nt h\n";
    expect_fail("/nonexistent/tokenizer", "/nonexistent/tokenizer", NULL, "missing folder");
    expect_fail(make_dir(NULL, NULL, NULL), "merges.txt", "missing", "missing merges.txt");
    {
        const char *d = make_dir(NULL, ok_merges, NULL);
        char p[1024];
        snprintf(p, sizeof p, "%s/vocab.json", d);
        unlink(p);
        expect_fail(d, "vocab.json", "missing", "missing vocab.json");
    }
    expect_fail(make_dir("{\"a\": 1, ", ok_merges, NULL), "vocab.json", "invalid JSON", "truncated vocab JSON");
    expect_fail(make_dir("[1, 2]", ok_merges, NULL), "vocab.json", NULL, "vocab not an object");
    expect_fail(make_dir("{\"a\": \"x\"}", ok_merges, NULL), "vocab.json", "'a'", "vocab id not an integer");
    expect_fail(make_dir("{\"a\": 0, \"b\": 1}", ok_merges, NULL), "vocab.json", "byte symbol", "vocab without byte symbols");
    expect_fail(make_dir(NULL, "#version: 0.2\ni n\nzzqqx yy\n", NULL), "merges.txt:3", "zzqqx", "merge of unknown symbol");
    expect_fail(make_dir(NULL, "#version: 0.2\ni n\nt h e\n", NULL), "merges.txt:3", "two symbols", "merge line with 3 fields");
    expect_fail(make_dir(NULL, "#version: 0.2\ni n\n\nt h\n", NULL), "merges.txt:3", "two symbols", "empty merge line");
    /* "q" and "z</w>" exist, "qz</w>" does not */
    expect_fail(make_dir(NULL, "#version: 0.2\nq z</w>\n", NULL), "merges.txt:2", "qz</w>", "merge result not in vocab");
    expect_fail(make_dir(NULL, ok_merges, "{\"bos_token\": "), "tokenizer_config.json", "invalid JSON", "bad tokenizer_config");
    expect_fail(make_dir(NULL, ok_merges, "{\"eos_token\": \"<|nosuch|>\"}"), "vocab.json", "<|nosuch|>", "unknown eos token");
    expect_fail(make_dir(NULL, ok_merges, "{\"pad_token\": 5}"), "tokenizer_config.json", "pad_token", "pad token not a string");

    /* added tokens: the two specials listed as newer transformers save them are fine; a token
     * beyond vocab.json (textual inversion) is refused rather than tokenized wrongly */
    {
        const char *cfg = "{\"added_tokens_decoder\": {\"49406\": {\"content\": \"<|startoftext|>\", \"special\": true},"
                          " \"49407\": {\"content\": \"<|endoftext|>\", \"special\": true}}, \"model_max_length\": 77}";
        sdb_err e = {0};
        sdb_tokenizer *t2 = NULL;
        char *merges = NULL;
        size_t ml = 0;
        sdb_read_file(sdb_t_path("models/tiny-sd-inpaint/tokenizer/merges.txt"), &merges, &ml, &e);
        CHECK_OK(sdb_tokenizer_load(&t2, make_dir(NULL, merges, cfg), &e), &e);
        if (t2) {
            int32_t ids[77];
            CHECK_OK(sdb_tokenizer_encode(t2, "a<|endoftext|>b", -1, ids, NULL, NULL, &e), &e);
            CHECK(ids[0] == 49406 && ids[1] == 320 && ids[2] == 49407 && ids[3] == 321 && ids[4] == 49407);
        }
        sdb_tokenizer_free(t2);
        const char *bad = "{\"added_tokens_decoder\": {\"49408\": {\"content\": \"<cat-toy>\"}}}";
        expect_fail(make_dir(NULL, merges, bad), "tokenizer_config.json", "<cat-toy>", "added token beyond vocab");
        const char *d = make_dir(NULL, merges, NULL);
        char p[1024];
        snprintf(p, sizeof p, "%s/added_tokens.json", d);
        sdb_write_file_atomic(p, "{\"<cat-toy>\": 49408}", 20, &e);
        expect_fail(d, "added_tokens.json", "not supported", "added_tokens.json");
        free(merges);
    }
    /* a tiny valid merges file still loads and tokenizes (byte-level fallback) */
    sdb_err err = {0};
    sdb_tokenizer *tok = NULL;
    CHECK_OK(sdb_tokenizer_load(&tok, make_dir(NULL, ok_merges, NULL), &err), &err);
    if (tok) {
        int32_t *ids = NULL;
        int n = 0;
        CHECK_OK(sdb_tokenizer_tokenize(tok, "thin", -1, &ids, &n, &err), &err);
        /* t h i n</w>: "i n" (rank 0) needs "n" but the last symbol is "n</w>", so only "t h" */
        CHECK(n == 3);
        if (n == 3) {
            CHECK(!strcmp(sdb_tokenizer_piece(tok, ids[0]), "th"));
            CHECK(!strcmp(sdb_tokenizer_piece(tok, ids[1]), "i"));
            CHECK(!strcmp(sdb_tokenizer_piece(tok, ids[2]), "n</w>"));
        }
        free(ids);
        sdb_tokenizer_free(tok);
    }
}

int main(void)
{
    RUN(test_reference_prompts);
    RUN(test_edge_cases);
    RUN(test_bpe_heap_equals_loop);
    RUN(test_load_speed);
    RUN(test_cli);
    RUN(test_malformed);
    return sdb_t_done();
}
