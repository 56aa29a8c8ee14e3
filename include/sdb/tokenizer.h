/*
 * tokenizer.h — the CLIP byte-level BPE tokenizer of SD 1.x, giving the same ids as transformers'
 * slow `CLIPTokenizer(padding="max_length", max_length=77, truncation=True)` when ftfy is not
 * installed (its BasicTokenizer fallback). See tokenizer.c for the exact text path and where it
 * can differ from Python.
 *
 * A tokenizer is read from a diffusers `tokenizer/` folder: vocab.json, merges.txt and, when
 * present, tokenizer_config.json / special_tokens_map.json (bos, eos, pad, unk, model_max_length).
 * It is immutable after loading: encode may be called from several threads at once.
 */
#ifndef SDB_TOKENIZER_H
#define SDB_TOKENIZER_H

#include <stdint.h>
#include "sdb/error.h"
#include "sdb/log.h"

typedef struct sdb_tokenizer sdb_tokenizer;

/* Loads the tokenizer in `dir` (the folder holding vocab.json and merges.txt). Errors name the
 * file and, for merges.txt, the line. */
int sdb_tokenizer_load(sdb_tokenizer **out, const char *dir, sdb_err *err);
void sdb_tokenizer_free(sdb_tokenizer *t);

int sdb_tokenizer_max_length(const sdb_tokenizer *t); /* model_max_length (77) */
int32_t sdb_tokenizer_bos(const sdb_tokenizer *t);    /* 49406 */
int32_t sdb_tokenizer_eos(const sdb_tokenizer *t);    /* 49407 */
int32_t sdb_tokenizer_pad(const sdb_tokenizer *t);    /* 49407 for SD (pad = eos) */
int sdb_tokenizer_vocab_size(const sdb_tokenizer *t); /* largest id + 1 */
/* The vocabulary string of an id ("cat</w>", "<|endoftext|>"), or NULL when out of range. */
const char *sdb_tokenizer_piece(const sdb_tokenizer *t, int32_t id);

/* The BPE ids of `text` (UTF-8 of `len` bytes, or NUL-terminated when len < 0; invalid bytes
 * count as U+FFFD, which the cleaning drops, as do NUL characters), without bos/eos and
 * untruncated: *ids is malloc'd (caller frees), *n its length. */
int sdb_tokenizer_tokenize(const sdb_tokenizer *t, const char *text, long len, int32_t **ids,
                           int *n, sdb_err *err);

/* The model input for `text`: exactly max_length ids = bos, the first max_length-2 BPE ids, eos,
 * then pad. When the text had more tokens, a warning naming the dropped text goes to `log`
 * (may be NULL). *n_untruncated (may be NULL) receives the untruncated length incl. bos/eos. */
int sdb_tokenizer_encode(const sdb_tokenizer *t, const char *text, long len, int32_t *ids,
                         int *n_untruncated, const sdb_log *log, sdb_err *err);

/* The text of ids as transformers' decode does it (byte-level pieces joined, "</w>" -> " ",
 * stripped, then clean_up_tokenization: " ," -> ",", " 's" -> "'s", ...); malloc'd, caller
 * frees. Ids out of range are skipped. */
char *sdb_tokenizer_decode(const sdb_tokenizer *t, const int32_t *ids, int n);

/* The cleaned text the BPE regex runs on (BasicTokenizer fallback: see tokenizer.c), for
 * debugging; malloc'd UTF-8, caller frees. Special-token strings are not split off here. */
char *sdb_tokenizer_clean(const char *text, long len);

/* Test hooks: force the BPE merge loop (1), the equivalent heap algorithm (2) or the automatic
 * choice (0: the heap for long pieces when the merges allow it); whether they allow it. */
void sdb_tokenizer_debug_bpe_mode(sdb_tokenizer *t, int mode);
int sdb_tokenizer_debug_monotonic(const sdb_tokenizer *t);

#endif
