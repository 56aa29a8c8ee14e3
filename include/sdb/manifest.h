/*
 * manifest.h — batch manifests: the YAML file `sdbatch run/validate/status` read (format in
 * schemas/manifest.schema.json and the README).
 *
 * Loading a manifest parses it with libyaml, checks it against the schema (keys, types, ranges,
 * unique ids, glob expansion) and resolves every job to its final parameters. Checking it
 * (sdb_manifest_check) then looks at the files: inputs exist and decode, image/mask sizes, the
 * model's configs load. Neither stops at the first problem: every error and warning is collected
 * in the manifest's diagnostics as "file:line:column: message", pointing at the YAML node at fault.
 */
#ifndef SDB_MANIFEST_H
#define SDB_MANIFEST_H

#include <stdint.h>
#include "sdb/error.h"

/* Limits on what a manifest may hold (README, "Limits"); each is refused with a diagnostic that
 * names it. MAX_NODES counts the YAML nodes with every alias (*name) expanded, so a
 * "billion laughs" document is refused from its node table, without expanding anything; MAX_DEPTH
 * is how deeply its collections may nest (a manifest needs 4). */
#define SDB_MANIFEST_MAX_BYTES (64L * 1024 * 1024)
#define SDB_MANIFEST_MAX_JOBS 1000000
#define SDB_MANIFEST_MAX_NODES 20000000L
#define SDB_MANIFEST_MAX_DEPTH 64

/* A position in the manifest, 1-based (0 = unknown). */
typedef struct sdb_pos { int line, col; } sdb_pos;

/* The job keys (also the keys allowed under `defaults:` except id and output). */
typedef enum {
    SDB_JK_ID, SDB_JK_IMAGE, SDB_JK_MASK, SDB_JK_PROMPT, SDB_JK_NEGATIVE_PROMPT, SDB_JK_SEED,
    SDB_JK_STEPS, SDB_JK_GUIDANCE_SCALE, SDB_JK_STRENGTH, SDB_JK_SCHEDULER, SDB_JK_ETA,
    SDB_JK_WIDTH, SDB_JK_HEIGHT, SDB_JK_PADDING_MASK_CROP, SDB_JK_OUTPUT,
    /* issue 17: restoration options */
    SDB_JK_KEEP_UNMASKED, SDB_JK_MASK_BLUR, SDB_JK_MASK_DILATE, SDB_JK_MASKED_CONTENT, SDB_JK_COLOR_MATCH,
    SDB_JK_INPAINT_AREA, SDB_JK_ONLY_MASKED_SIZE, SDB_JK_JPEG_QUALITY,
    SDB_JK_VAE,             /* issue 16: a separate VAE */
    SDB_JK_VAE_TILING,      /* issue 17: big images */
    SDB_JK_COUNT
} sdb_job_key;
const char *sdb_job_key_name(sdb_job_key k);

/* One resolved job. Paths are resolved (relative ones against the manifest's folder; `output`
 * against output_dir). */
typedef struct sdb_job_spec {
    char *id;
    char *image;            /* NULL: txt2img */
    char *mask;             /* NULL: img2img (with an image) */
    char *prompt;
    char *negative_prompt;  /* never NULL ("" by default) */
    uint64_t seed;
    int seed_auto;          /* seed was "auto" (derived from the id) */
    int steps;
    double guidance_scale, strength, eta;
    char *scheduler;        /* NULL = the model's own */
    int width, height;      /* 0 = the input's own size */
    int padding_mask_crop;
    char *output;           /* output path: .png, .jpg or .jpeg */
    char *vae;              /* a separate VAE (file or folder, resolved like the model); NULL = the model's own */
    /* issue 17: restoration options, 0 = unset (diffusers' behaviour); part of params_hash only
     * when nonzero, so the identities of jobs without them do not change */
    int keep_unmasked, mask_blur, mask_dilate, color_match, only_masked_size, jpeg_quality;
    int masked_content;     /* sdb_masked_content */
    int inpaint_area;       /* sdb_inpaint_area */
    int mask_alpha;         /* `mask: alpha`: the image's transparent area is the mask (mask is NULL) */
    int vae_tiling;         /* sdb_vae_tiling (pipeline.h): 0 = auto */
    sdb_pos pos;                     /* the job's entry in `jobs:` */
    sdb_pos key_pos[SDB_JK_COUNT];   /* where each key's value came from (job or defaults), 0 = default */
    char params_hash[65];   /* SHA-256 of the resolved parameters and the inputs' contents (set by
                               sdb_manifest_check, or sdb_manifest_hash_inputs) */
    char content_hash[65];  /* the same without the output path (set with params_hash) */
    char *bad_input;        /* set by sdb_manifest_check: why an input is missing/undecodable */
    char *bad_output;       /* why the output path is refused: absolute outside output_dir, a '..'
                               component (set when parsed), a symlink below output_dir (set by
                               sdb_manifest_check). `run` fails such a job alone */
} sdb_job_spec;

typedef struct sdb_diag { int is_error; char *text; } sdb_diag;

typedef struct sdb_manifest {
    char *path;        /* as given */
    char *dir;         /* its folder */
    int version;
    char *model;       /* resolved model path (a bare name looked up in models/ folders: model_find.h) */
    char *model_name;  /* as written */
    sdb_pos model_pos;
    char *model_config;   /* single-file checkpoints: a diffusers folder with the configs (NULL = inferred
                             from the tensors, SD 1.x) */
    char *tokenizer;      /* single-file checkpoints: the tokenizer folder: as written, else the one found
                             (sdb_tokenizer_find from the manifest's folder; NULL = <model_config>/tokenizer,
                             or none found) */
    sdb_pos model_config_pos, tokenizer_pos;
    char *output_dir;  /* resolved */
    sdb_pos output_dir_pos;
    sdb_job_spec *jobs;
    int n_jobs;
    sdb_diag *diags;
    int n_diags, n_errors, n_warnings, cap_diags;
    int n_input_errors;  /* errors that concern one job alone: its input files or its output path
                            (`run` fails those jobs alone; `validate` reports them like any other
                            error). n_errors > n_input_errors: the manifest itself is invalid */
    int allow_outputs_outside;   /* top-level `allow_outputs_outside: true`: absolute outputs
                                    outside output_dir are allowed (`run` only; the daemon refuses it) */
    sdb_pos allow_outputs_outside_pos;
} sdb_manifest;

/* Parses and schema-checks a manifest. Returns 0 when it has no errors; SDB_EFORMAT when it has
 * (the diagnostics say which; err gets the first one and the count); SDB_EIO when it cannot be
 * read. The manifest must be freed either way. */
int sdb_manifest_load(sdb_manifest *m, const char *path, sdb_err *err);
/* Same from text (path names it in messages; relative paths resolve against dirname(path)). */
int sdb_manifest_parse(sdb_manifest *m, const char *text, size_t len, const char *path, sdb_err *err);

/* The checks that touch files, without any compute: each input exists and decodes, the mask
 * matches the image's size (a warning: it is resized), the resolved size is a multiple of 8, the
 * model's configs load. Also fills each job's params_hash. Returns 0 or SDB_EFORMAT like load. */
int sdb_manifest_check(sdb_manifest *m, sdb_err *err);
/* Only fills params_hash (reads the inputs; no decode). Inputs that cannot be read hash as
 * "missing:<path>". */
int sdb_manifest_hash_inputs(sdb_manifest *m, sdb_err *err);

/* Where job j's output is written: *root is the folder below which no symlink is followed
 * (output_dir; for an absolute output outside it, allowed by allow_outputs_outside: the output's
 * own folder; malloc'd, NULL when out of memory) and *rel the path below it (points into
 * j->output). */
void sdb_job_output_split(const sdb_manifest *m, const sdb_job_spec *j, char **root, const char **rel);

/* Index of the job with this id, or -1. */
int sdb_manifest_find(const sdb_manifest *m, const char *id);
/* Prints every diagnostic, one a line, to f (FILE*). */
void sdb_manifest_print_diags(const sdb_manifest *m, void *f);
void sdb_manifest_free(sdb_manifest *m);

/* The stable seed of seed: "auto" — the first 8 bytes of SHA-256(id), big-endian, masked to
 * 63 bits. */
uint64_t sdb_seed_from_id(const char *id);
/* Known scheduler names (NULL-terminated). */
extern const char *const sdb_scheduler_names[];

/* A job's identity: SHA-256 hex over its params_hash and the model's id. */
void sdb_job_identity(const sdb_job_spec *j, const char *model_id, char out[65]);
/* The identity its output PNG carries (`sdbatch repair` knows the file by it): the same over
 * content_hash, so that the same job writes the same bytes in any folder (the file's place says
 * where it belongs). */
void sdb_job_output_identity(const sdb_job_spec *j, const char *model_id, char out[65]);

#endif
