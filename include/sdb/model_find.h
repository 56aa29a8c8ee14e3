/*
 * model_find.h — where models, VAEs and tokenizers are found: bare names in models/ folders, and
 * the tokenizer of a single-file checkpoint (which does not hold one).
 *
 * A model (or VAE) given as a path that exists is used as it is (relative to base_dir). A bare name
 * (no '/') that is not such a path is looked up as models/<name> and models/<name>.safetensors in
 * base_dir (the manifest's folder; the current folder on the command line), then in each folder of
 * models_path (the colon-separated $SDB_MODELS) as <dir>/<name> and <dir>/<name>.safetensors.
 *
 * A single file's tokenizer is looked for beside it (<its folder>/tokenizer), then in
 * <base_dir>/models/tokenizer, then in each <models_path dir>/tokenizer, then in tokenizer_env
 * ($SDB_TOKENIZER). A folder counts when it holds vocab.json.
 *
 * Errors list every place looked at. The environment is read by the callers, not here.
 */
#ifndef SDB_MODEL_FIND_H
#define SDB_MODEL_FIND_H

#include "sdb/error.h"

/* *out (malloc'd): the resolved path of model or VAE `name`. what = "model" / "vae" (messages). */
int sdb_model_resolve(const char *name, const char *base_dir, const char *models_path, const char *what,
                      char **out, sdb_err *err);
/* *out (malloc'd): the tokenizer folder for the single-file checkpoint `model_file`. */
int sdb_tokenizer_find(const char *model_file, const char *base_dir, const char *models_path,
                       const char *tokenizer_env, char **out, sdb_err *err);

#endif
