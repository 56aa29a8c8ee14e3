/*
 * make_random_model.c — `sdbatch-make-random-model`: writes a Stable Diffusion 1.5 diffusers
 * pipeline folder with RANDOM weights, tiny or full size, F32 or F16, for demos, tests and
 * benchmarks on machines without the real weights. The pictures it makes are coloured noise.
 *
 *   sdbatch-make-random-model OUT_DIR [--size tiny|full] [--dtype f32|f16] [--inpaint|--txt2img]
 *                             [--seed N] [--fp16-variant]
 *
 * What it writes (all this project's own work; nothing is downloaded or copied):
 *   model_index.json, scheduler/scheduler_config.json (PNDM with SD 1.5 inpainting's values),
 *   unet/, vae/, text_encoder/ (config.json + weights), tokenizer/ (a CLIP-format byte-level BPE
 *   tokenizer generated here: see build_tokenizer).
 *
 * Tensor names and shapes are NOT listed here: the configs are written first, then the project's
 * own model loaders (sdb_unet_load, sdb_vae_load, sdb_clip_load) run on a recording sdb_weights
 * (sdb_weights_init_recorder), which notes every tensor they ask for with its exact shape. So the
 * files always match what the loaders expect, and for `full` they match the real SD 1.5
 * inpainting checkpoint (tests/test_modelgen.c checks both against the reference name lists).
 *
 * Values: every tensor has its own generator seeded from (--seed, component, tensor name), and
 * is filled in chunks of 64Ki values seeded from (tensor seed, chunk), so the output does not
 * depend on the order the loaders ask for tensors nor on the thread count. Initialisation as the
 * team's tiny test models (see shared/README.md): norm weights 1 + 0.2 N, biases 0.1 N,
 * conv/linear weights N / sqrt(fan_in), token embedding N, position embedding 0.5 N; VAE
 * quant_conv mean rows x4, logvar rows x0.5 with bias -4 (posterior std ~0.1-0.3), decoder.conv_out
 * weight x0.5 (decoded images mostly inside [-1, 1]). Activations stay O(1).
 *
 * Memory: weights are generated and written one tensor at a time (the full-size U-Net is 3.4 GB
 * of F32; the largest tensor is the 49408x768 token embedding, and the whole run stays under
 * ~300 MB), through a streaming
 * safetensors writer with the same format and atomic temp-file-and-rename as sdb_st_write.
 *
 * The file can be #included with MODELGEN_NO_MAIN defined (tests/test_modelgen.c does) to reach
 * the recorder and the tokenizer builder directly.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "sdb/error.h"
#include "sdb/fp16.h"
#include "sdb/fsutil.h"
#include "sdb/safetensors.h"
#include "sdb/weights.h"

/* The model loaders this tool runs in recording mode. */
#include "sdb/clip.h"
#include "sdb/unet.h"
#include "sdb/vae.h"

/* ------------------------------------------------------------------------------------------ */
/* Options                                                                                     */

typedef struct mg_opts {
    int full;          /* 0 = tiny (the team's tiny-sd-inpaint structure), 1 = SD 1.5 size */
    int inpaint;       /* 1 = 9-channel U-Net (StableDiffusionInpaintPipeline), 0 = 4-channel */
    int f16;           /* weights stored as F16 */
    int fp16_variant;  /* file names *.fp16.safetensors (diffusers' variant="fp16") */
    uint64_t seed;
} mg_opts;

static void mg_opts_default(mg_opts *o)
{
    memset(o, 0, sizeof *o);
    o->inpaint = 1;
    o->seed = 0;
}

/* The text encoder's vocabulary size (both sizes: CLIP's 49408). */
#define MG_VOCAB_SIZE 49408

/* ------------------------------------------------------------------------------------------ */
/* JSON helpers                                                                                */

static json_t *jint_array(const int *v, int n)
{
    json_t *a = json_array();
    for (int i = 0; i < n; i++) json_array_append_new(a, json_integer(v[i]));
    return a;
}

static json_t *jstr_array(const char *const *v, int n)
{
    json_t *a = json_array();
    for (int i = 0; i < n; i++) json_array_append_new(a, v[i] ? json_string(v[i]) : json_null());
    return a;
}

/* Writes a JSON object as diffusers / transformers do (indent 2, sorted keys, shortest-looking
 * reals), atomically, with a final newline. Takes ownership of obj. */
static int write_json(const char *dir, const char *name, json_t *obj, sdb_err *err)
{
    char *text = json_dumps(obj, JSON_INDENT(2) | JSON_SORT_KEYS | JSON_REAL_PRECISION(15));
    json_decref(obj);
    if (!text) return sdb_fail(err, SDB_ENOMEM, "out of memory");
    size_t n = strlen(text);
    char *buf = malloc(2 * n + 2);
    if (!buf) { free(text); return sdb_fail(err, SDB_ENOMEM, "out of memory"); }
    /* Python writes exponents with at least two digits (1e-05); jansson writes 1e-5. Our configs
     * hold no strings with digits after "e-", so this only touches numbers. */
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        buf[k++] = text[i];
        if ((text[i] == '-' || text[i] == '+') && i > 0 && text[i - 1] == 'e' && i + 1 < n &&
            text[i + 1] >= '0' && text[i + 1] <= '9' && (i + 2 >= n || text[i + 2] < '0' || text[i + 2] > '9'))
            buf[k++] = '0';
    }
    n = k;
    buf[n] = '\n';
    free(text);
    char *path = sdb_path_join(dir, name);
    int rc = path ? sdb_write_file_atomic(path, buf, n + 1, err) : sdb_fail(err, SDB_ENOMEM, "out of memory");
    free(path);
    free(buf);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* Configs: the values of runwayml/stable-diffusion-inpainting (full) and of the team's tiny
 * test models (tiny). These are facts about the architectures, written out here.              */

static json_t *unet_config(const mg_opts *o)
{
    const int full_ch[4] = {320, 640, 1280, 1280}, tiny_ch[4] = {32, 64, 64, 64};
    const char *down[4] = {"CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"};
    const char *up[4] = {"UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"};
    json_t *c = json_object();
    json_object_set_new(c, "_class_name", json_string("UNet2DConditionModel"));
    json_object_set_new(c, "_diffusers_version", json_string("0.30.3"));
    json_object_set_new(c, "act_fn", json_string("silu"));
    json_object_set_new(c, "addition_embed_type", json_null());
    json_object_set_new(c, "addition_embed_type_num_heads", json_integer(64));
    json_object_set_new(c, "addition_time_embed_dim", json_null());
    json_object_set_new(c, "attention_head_dim", json_integer(8));
    json_object_set_new(c, "attention_type", json_string("default"));
    json_object_set_new(c, "block_out_channels", jint_array(o->full ? full_ch : tiny_ch, 4));
    json_object_set_new(c, "center_input_sample", json_false());
    json_object_set_new(c, "class_embed_type", json_null());
    json_object_set_new(c, "class_embeddings_concat", json_false());
    json_object_set_new(c, "conv_in_kernel", json_integer(3));
    json_object_set_new(c, "conv_out_kernel", json_integer(3));
    json_object_set_new(c, "cross_attention_dim", json_integer(o->full ? 768 : 32));
    json_object_set_new(c, "cross_attention_norm", json_null());
    json_object_set_new(c, "down_block_types", jstr_array(down, 4));
    json_object_set_new(c, "downsample_padding", json_integer(1));
    json_object_set_new(c, "dropout", json_real(0.0));
    json_object_set_new(c, "dual_cross_attention", json_false());
    json_object_set_new(c, "encoder_hid_dim", json_null());
    json_object_set_new(c, "encoder_hid_dim_type", json_null());
    json_object_set_new(c, "flip_sin_to_cos", json_true());
    json_object_set_new(c, "freq_shift", json_integer(0));
    json_object_set_new(c, "in_channels", json_integer(o->inpaint ? 9 : 4));
    json_object_set_new(c, "layers_per_block", json_integer(2));
    json_object_set_new(c, "mid_block_only_cross_attention", json_null());
    json_object_set_new(c, "mid_block_scale_factor", json_integer(1));
    json_object_set_new(c, "mid_block_type", json_string("UNetMidBlock2DCrossAttn"));
    json_object_set_new(c, "norm_eps", json_real(1e-05));
    json_object_set_new(c, "norm_num_groups", json_integer(o->full ? 32 : 8));
    json_object_set_new(c, "num_attention_heads", json_null());
    json_object_set_new(c, "num_class_embeds", json_null());
    json_object_set_new(c, "only_cross_attention", json_false());
    json_object_set_new(c, "out_channels", json_integer(4));
    json_object_set_new(c, "projection_class_embeddings_input_dim", json_null());
    json_object_set_new(c, "resnet_out_scale_factor", json_real(1.0));
    json_object_set_new(c, "resnet_skip_time_act", json_false());
    json_object_set_new(c, "resnet_time_scale_shift", json_string("default"));
    json_object_set_new(c, "reverse_transformer_layers_per_block", json_null());
    json_object_set_new(c, "sample_size", json_integer(o->full ? 64 : 16));
    json_object_set_new(c, "time_cond_proj_dim", json_null());
    json_object_set_new(c, "time_embedding_act_fn", json_null());
    json_object_set_new(c, "time_embedding_dim", json_null());
    json_object_set_new(c, "time_embedding_type", json_string("positional"));
    json_object_set_new(c, "timestep_post_act", json_null());
    json_object_set_new(c, "transformer_layers_per_block", json_integer(1));
    json_object_set_new(c, "up_block_types", jstr_array(up, 4));
    json_object_set_new(c, "upcast_attention", json_false());
    json_object_set_new(c, "use_linear_projection", json_false());
    return c;
}

static json_t *vae_config(const mg_opts *o)
{
    const int full_ch[4] = {128, 256, 512, 512}, tiny_ch[4] = {32, 64, 64, 64};
    const char *down[4] = {"DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"};
    const char *up[4] = {"UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"};
    json_t *c = json_object();
    json_object_set_new(c, "_class_name", json_string("AutoencoderKL"));
    json_object_set_new(c, "_diffusers_version", json_string("0.30.3"));
    json_object_set_new(c, "act_fn", json_string("silu"));
    json_object_set_new(c, "block_out_channels", jint_array(o->full ? full_ch : tiny_ch, 4));
    json_object_set_new(c, "down_block_types", jstr_array(down, 4));
    json_object_set_new(c, "force_upcast", json_true());
    json_object_set_new(c, "in_channels", json_integer(3));
    json_object_set_new(c, "latent_channels", json_integer(4));
    json_object_set_new(c, "latents_mean", json_null());
    json_object_set_new(c, "latents_std", json_null());
    json_object_set_new(c, "layers_per_block", json_integer(2));
    json_object_set_new(c, "mid_block_add_attention", json_true());
    json_object_set_new(c, "norm_num_groups", json_integer(o->full ? 32 : 8));
    json_object_set_new(c, "out_channels", json_integer(3));
    json_object_set_new(c, "sample_size", json_integer(o->full ? 512 : 128));
    json_object_set_new(c, "scaling_factor", json_real(0.18215));
    json_object_set_new(c, "shift_factor", json_null());
    json_object_set_new(c, "up_block_types", jstr_array(up, 4));
    json_object_set_new(c, "use_post_quant_conv", json_true());
    json_object_set_new(c, "use_quant_conv", json_true());
    return c;
}

static json_t *clip_config(const mg_opts *o)
{
    const char *arch[1] = {"CLIPTextModel"};
    json_t *c = json_object();
    json_object_set_new(c, "architectures", jstr_array(arch, 1));
    json_object_set_new(c, "attention_dropout", json_real(0.0));
    /* The real SD 1.x config keeps CLIP's old ids 0 / 2 (they only affect pooler_output); the
     * tiny test models use the tokenizer's 49406 / 49407. Mirror each. */
    json_object_set_new(c, "bos_token_id", json_integer(o->full ? 0 : 49406));
    if (o->full) json_object_set_new(c, "dropout", json_real(0.0));
    json_object_set_new(c, "eos_token_id", json_integer(o->full ? 2 : 49407));
    json_object_set_new(c, "hidden_act", json_string("quick_gelu"));
    json_object_set_new(c, "hidden_size", json_integer(o->full ? 768 : 32));
    json_object_set_new(c, "initializer_factor", json_real(1.0));
    json_object_set_new(c, "initializer_range", json_real(0.02));
    json_object_set_new(c, "intermediate_size", json_integer(o->full ? 3072 : 64));
    json_object_set_new(c, "layer_norm_eps", json_real(1e-05));
    json_object_set_new(c, "max_position_embeddings", json_integer(77));
    json_object_set_new(c, "model_type", json_string("clip_text_model"));
    json_object_set_new(c, "num_attention_heads", json_integer(o->full ? 12 : 4));
    json_object_set_new(c, "num_hidden_layers", json_integer(o->full ? 12 : 3));
    json_object_set_new(c, "pad_token_id", json_integer(1));
    json_object_set_new(c, "projection_dim", json_integer(o->full ? 768 : 32));
    json_object_set_new(c, "torch_dtype", json_string(o->f16 ? "float16" : "float32"));
    json_object_set_new(c, "transformers_version", json_string("4.45.0.dev0"));
    json_object_set_new(c, "vocab_size", json_integer(MG_VOCAB_SIZE));
    return c;
}

static json_t *scheduler_config(void)
{
    json_t *c = json_object();
    json_object_set_new(c, "_class_name", json_string("PNDMScheduler"));
    json_object_set_new(c, "_diffusers_version", json_string("0.30.3"));
    json_object_set_new(c, "beta_end", json_real(0.012));
    json_object_set_new(c, "beta_schedule", json_string("scaled_linear"));
    json_object_set_new(c, "beta_start", json_real(0.00085));
    json_object_set_new(c, "clip_sample", json_false());
    json_object_set_new(c, "num_train_timesteps", json_integer(1000));
    json_object_set_new(c, "set_alpha_to_one", json_false());
    json_object_set_new(c, "skip_prk_steps", json_true());
    json_object_set_new(c, "steps_offset", json_integer(1));
    json_object_set_new(c, "trained_betas", json_null());
    return c;
}

static json_t *pair(const char *a, const char *b)
{
    const char *v[2] = {a, b};
    return jstr_array(v, 2);
}

static json_t *model_index(const mg_opts *o)
{
    json_t *c = json_object();
    json_object_set_new(c, "_class_name", json_string(o->inpaint ? "StableDiffusionInpaintPipeline"
                                                                  : "StableDiffusionPipeline"));
    json_object_set_new(c, "_diffusers_version", json_string("0.30.3"));
    json_object_set_new(c, "feature_extractor", pair(NULL, NULL));
    json_object_set_new(c, "image_encoder", pair(NULL, NULL));
    json_object_set_new(c, "requires_safety_checker", json_false());
    json_object_set_new(c, "safety_checker", pair(NULL, NULL));
    json_object_set_new(c, "scheduler", pair("diffusers", "PNDMScheduler"));
    json_object_set_new(c, "text_encoder", pair("transformers", "CLIPTextModel"));
    json_object_set_new(c, "tokenizer", pair("transformers", "CLIPTokenizer"));
    json_object_set_new(c, "unet", pair("diffusers", "UNet2DConditionModel"));
    json_object_set_new(c, "vae", pair("diffusers", "AutoencoderKL"));
    return c;
}

static json_t *added_token(const char *content, int with_type)
{
    json_t *t = json_object();
    if (with_type) json_object_set_new(t, "__type", json_string("AddedToken"));
    json_object_set_new(t, "content", json_string(content));
    json_object_set_new(t, "lstrip", json_false());
    json_object_set_new(t, "normalized", json_true());
    json_object_set_new(t, "rstrip", json_false());
    json_object_set_new(t, "single_word", json_false());
    return t;
}

static json_t *tokenizer_config(void)
{
    json_t *c = json_object();
    json_object_set_new(c, "add_prefix_space", json_false());
    json_object_set_new(c, "bos_token", added_token("<|startoftext|>", 1));
    json_object_set_new(c, "do_lower_case", json_true());
    json_object_set_new(c, "eos_token", added_token("<|endoftext|>", 1));
    json_object_set_new(c, "errors", json_string("replace"));
    json_object_set_new(c, "model_max_length", json_integer(77));
    json_object_set_new(c, "name_or_path", json_string("sdbatch-random-bpe"));
    json_object_set_new(c, "pad_token", json_string("<|endoftext|>"));
    json_object_set_new(c, "special_tokens_map_file", json_string("./special_tokens_map.json"));
    json_object_set_new(c, "tokenizer_class", json_string("CLIPTokenizer"));
    json_object_set_new(c, "unk_token", added_token("<|endoftext|>", 1));
    return c;
}

static json_t *special_tokens_map(void)
{
    json_t *c = json_object();
    json_object_set_new(c, "bos_token", added_token("<|startoftext|>", 0));
    json_object_set_new(c, "eos_token", added_token("<|endoftext|>", 0));
    json_object_set_new(c, "pad_token", json_string("<|endoftext|>"));
    json_object_set_new(c, "unk_token", added_token("<|endoftext|>", 0));
    return c;
}

/* ------------------------------------------------------------------------------------------ */
/* The tokenizer: a structurally valid CLIP byte-level BPE, generated without any vocabulary.
 *
 * Layout as CLIP's: ids 0..255 the 256 symbols of GPT-2's bytes_to_unicode (in its order),
 * 256..511 the same with "</w>" (end of word), then one token per merge (the concatenation of
 * the merge's two parts), then <|startoftext|> and <|endoftext|> as the last two ids. Merges are
 * made here, deterministically, in three phases, until there are vocab_size - 2 tokens (48894
 * merges at CLIP's 49408, exactly the number transformers' CLIPTokenizer reads):
 *   1. whole words from a list of common English / prompt words, and CLIP's contraction pieces
 *      ("'s</w>"...): each gets the merges that join what the BPE so far makes of it (see
 *      tok_word), so these words are single tokens;
 *   2. common English syllables and suffixes, word-inside and word-final, the same way;
 *   3. every letter pair, then every letter triple, then quadruples, in alphabetical order,
 *      each word-inside and word-final, until the count is reached.
 * Every merge joins two tokens that already exist and makes a token that does not, and no token
 * has "</w>" anywhere but at its end, so the BPE is well-formed; any text tokenizes, since every
 * byte has its own symbol.                                                                    */

static const char *const MG_WORDS[] = {
    "a", "an", "the", "of", "and", "in", "on", "with", "to", "at", "by", "for", "from", "is",
    "it", "as", "or", "be", "this", "that", "are", "was", "his", "her", "their", "its", "into",
    "over", "under", "near", "behind", "front", "top", "side", "inside", "outside", "very",
    "photo", "photograph", "picture", "image", "painting", "drawing", "illustration", "portrait",
    "landscape", "render", "art", "style", "detailed", "highly", "realistic", "photorealistic",
    "sharp", "focus", "quality", "best", "high", "resolution", "masterpiece", "beautiful",
    "cinematic", "lighting", "light", "dark", "bright", "soft", "warm", "cold", "color",
    "colorful", "vivid", "dramatic", "oil", "canvas", "watercolor", "sketch", "digital",
    "concept", "trending", "artstation", "octane", "unreal", "engine", "studio", "background",
    "foreground", "scene", "view", "close", "wide", "angle", "shot", "lens", "bokeh", "blurry",
    "blur", "noise", "ugly", "bad", "low", "deformed", "extra", "missing", "text", "watermark",
    "signature", "cropped", "worst", "jpeg", "artifacts",
    "red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white",
    "gray", "grey", "gold", "golden", "silver",
    "man", "woman", "person", "people", "child", "girl", "boy", "face", "eyes", "hair", "hand",
    "hands", "smile", "old", "young", "cat", "dog", "bird", "horse", "fish", "cow", "animal",
    "house", "home", "building", "city", "street", "road", "bridge", "tower", "castle", "church",
    "window", "door", "roof", "wall", "room", "table", "chair", "bed", "car", "boat", "ship",
    "train", "sky", "cloud", "clouds", "sun", "sunset", "sunrise", "moon", "star", "stars",
    "night", "day", "morning", "evening", "rain", "snow", "fog", "storm", "winter", "summer",
    "spring", "autumn", "tree", "trees", "forest", "wood", "flower", "flowers", "garden",
    "grass", "field", "meadow", "mountain", "mountains", "hill", "hills", "river", "lake",
    "sea", "ocean", "beach", "sand", "water", "stone", "rock", "fire", "ice", "glass",
    "metal", "paper", "fabric", "texture", "pattern", "surface", "ground", "floor", "path",
    "fence", "garden", "village", "valley", "desert", "island", "sunny", "cloudy", "misty",
    "big", "small", "large", "little", "tall", "long", "short", "round", "square", "new",
    "empty", "full", "clean", "natural", "ancient", "modern", "fantasy", "magic", "epic",
    "peaceful", "quiet", "happy", "sad", "wet", "dry", "shadow", "shadows", "reflection",
    "remove", "replace", "fill", "restore", "repair", "damaged", "torn", "scratch", "stain",
    "missing", "hole", "patch", "object", "objects", "thing", "one", "two", "three", "some",
    "no", "not", "there", "here", "what", "which", "who", "has", "have", "had", "can", "will",
    "made", "make", "like", "looking", "standing", "sitting", "walking", "flying", "running",
    "holding", "wearing", "covered", "filled", "made", "painted", "seen", "through", "between",
    "around", "above", "below", "along", "across", "against", "during", "without", "within",
};

static const char *const MG_SYLLABLES[] = {
    "ing", "ed", "er", "est", "ly", "tion", "sion", "ness", "ment", "able", "ible", "ful",
    "less", "ous", "ive", "al", "ial", "ic", "ical", "ist", "ism", "ity", "ize", "ise", "ent",
    "ant", "ence", "ance", "ure", "age", "ary", "ery", "ory", "ship", "hood", "dom", "ward",
    "wards", "like", "re", "un", "in", "im", "dis", "pre", "pro", "con", "com", "de", "ex",
    "en", "em", "sub", "super", "inter", "trans", "over", "under", "out", "up", "mis", "non",
    "anti", "auto", "bio", "geo", "photo", "tele", "micro", "multi", "semi", "th", "sh", "ch",
    "wh", "ph", "qu", "ck", "ng", "st", "str", "sp", "sc", "sk", "sl", "sm", "sn", "sw", "tr",
    "dr", "br", "cr", "fr", "gr", "pr", "bl", "cl", "fl", "gl", "pl", "ee", "oo", "ea", "ai",
    "ay", "ey", "oa", "ou", "ow", "oi", "oy", "ie", "ue", "ui", "an", "on", "at", "it", "ar",
    "or", "ur", "ir", "ll", "ss", "tt", "ff", "nn", "mm", "pp", "rr", "es", "s", "y",
};

typedef struct mg_tok {
    char **tokens;   /* id -> UTF-8 token text */
    int n, cap;
    char **merges;   /* "left right" lines */
    int n_merges, cap_merges;
    /* open-addressing hash set of tokens -> id */
    int *slots;
    size_t n_slots;
} mg_tok;

static uint64_t fnv1a(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) { h ^= (unsigned char)*s; h *= 1099511628211ull; }
    return h;
}

static int tok_find(const mg_tok *t, const char *s)
{
    size_t m = t->n_slots - 1, i = (size_t)fnv1a(s) & m;
    while (t->slots[i] >= 0) {
        if (!strcmp(t->tokens[t->slots[i]], s)) return t->slots[i];
        i = (i + 1) & m;
    }
    return -1;
}

static int tok_add(mg_tok *t, const char *s)
{
    if (t->n == t->cap) {
        int nc = t->cap ? 2 * t->cap : 1024;
        char **p = realloc(t->tokens, (size_t)nc * sizeof *p);
        if (!p) return -1;
        t->tokens = p;
        t->cap = nc;
    }
    char *d = strdup(s);
    if (!d) return -1;
    size_t m = t->n_slots - 1, i = (size_t)fnv1a(s) & m;
    while (t->slots[i] >= 0) i = (i + 1) & m;
    t->slots[i] = t->n;
    t->tokens[t->n++] = d;
    return 0;
}

static void mg_tok_free(mg_tok *t)
{
    for (int i = 0; i < t->n; i++) free(t->tokens[i]);
    for (int i = 0; i < t->n_merges; i++) free(t->merges[i]);
    free(t->tokens);
    free(t->merges);
    free(t->slots);
    memset(t, 0, sizeof *t);
}

/* Adds the merge (left, right) unless its token exists or the merge count is reached.
 * Returns 1 when added, 0 when skipped, -1 on allocation failure. */
static int tok_merge(mg_tok *t, const char *left, const char *right, int target)
{
    if (t->n >= target) return 0;
    char joined[256];
    if (snprintf(joined, sizeof joined, "%s%s", left, right) >= (int)sizeof joined) return 0;
    if (tok_find(t, joined) >= 0) return 0;
    if (tok_find(t, left) < 0 || tok_find(t, right) < 0) return 0; /* never: parts exist first */
    if (t->n_merges == t->cap_merges) {
        int nc = t->cap_merges ? 2 * t->cap_merges : 1024;
        char **p = realloc(t->merges, (size_t)nc * sizeof *p);
        if (!p) return -1;
        t->merges = p;
        t->cap_merges = nc;
    }
    char *line = malloc(strlen(left) + strlen(right) + 2);
    if (!line) return -1;
    sprintf(line, "%s %s", left, right);
    t->merges[t->n_merges++] = line;
    return tok_add(t, joined) ? -1 : 1;
}

/* The rank of merge (l, r), or -1: merge k made token 512 + k. */
static int merge_rank(const mg_tok *t, const char *l, const char *r)
{
    char j[256];
    if (snprintf(j, sizeof j, "%s%s", l, r) >= (int)sizeof j) return -1;
    int id = tok_find(t, j);
    if (id < 512 || id - 512 >= t->n_merges) return -1;
    const char *m = t->merges[id - 512];
    size_t ll = strlen(l);
    return (!strncmp(m, l, ll) && m[ll] == ' ' && !strcmp(m + ll + 1, r)) ? id - 512 : -1;
}

#define MG_MAXW 48

static void join2(char *dst, const char *src) /* dst (MG_MAXW + 8 bytes) += src */
{
    char tmp[MG_MAXW + 8];
    snprintf(tmp, sizeof tmp, "%s%s", dst, src);
    memcpy(dst, tmp, sizeof tmp);
}

/* What the BPE with the merges so far makes of an ASCII word (as CLIP applies it: the lowest-
 * ranked adjacent pair is merged until none applies). parts: *np pieces. */
static void bpe_apply(const mg_tok *t, const char *w, int final, char parts[MG_MAXW][MG_MAXW + 8], int *np)
{
    int n = (int)strlen(w);
    for (int i = 0; i < n; i++) snprintf(parts[i], sizeof parts[i], "%c%s", w[i], (final && i == n - 1) ? "</w>" : "");
    for (;;) {
        int best = -1, best_rank = INT32_MAX;
        for (int i = 0; i + 1 < n; i++) {
            int r = merge_rank(t, parts[i], parts[i + 1]);
            if (r >= 0 && r < best_rank) { best_rank = r; best = i; }
        }
        if (best < 0) break;
        join2(parts[best], parts[best + 1]);
        for (int i = best + 1; i + 1 < n; i++) memcpy(parts[i], parts[i + 1], sizeof parts[i]);
        n--;
    }
    *np = n;
}

/* Makes an ASCII word (word-final when `final`) a single token: takes what the current BPE makes
 * of it and adds the merges joining those pieces left to right. Since every later merge ranks
 * higher, the word keeps tokenizing to itself whatever comes after. Stops early (leaving the word
 * in a few pieces) when a join would duplicate an existing token. */
static int tok_word(mg_tok *t, const char *w, int final, int target)
{
    size_t n = strlen(w);
    if (n < 2 || n >= MG_MAXW) return 0;
    char parts[MG_MAXW][MG_MAXW + 8];
    int np;
    bpe_apply(t, w, final, parts, &np);
    while (np > 1) {
        int rc = tok_merge(t, parts[0], parts[1], target);
        if (rc <= 0) return rc;
        join2(parts[0], parts[1]);
        for (int i = 1; i + 1 < np; i++) memcpy(parts[i], parts[i + 1], sizeof parts[i]);
        np--;
    }
    return 0;
}

/* Encodes code point cp (< 0x800 here) as UTF-8. */
static void utf8_put(unsigned cp, char *out)
{
    if (cp < 0x80) { out[0] = (char)cp; out[1] = '\0'; }
    else { out[0] = (char)(0xC0 | (cp >> 6)); out[1] = (char)(0x80 | (cp & 0x3F)); out[2] = '\0'; }
}

/* GPT-2's bytes_to_unicode, as the list of code points in its (dict) order. */
static void bytes_to_unicode(unsigned cps[256])
{
    int n = 0, extra = 0, used[256] = {0};
    for (unsigned b = '!'; b <= '~'; b++) { cps[n++] = b; used[b] = 1; }
    for (unsigned b = 0xA1; b <= 0xAC; b++) { cps[n++] = b; used[b] = 1; }
    for (unsigned b = 0xAE; b <= 0xFF; b++) { cps[n++] = b; used[b] = 1; }
    for (unsigned b = 0; b < 256; b++)
        if (!used[b]) cps[n++] = 256 + (unsigned)extra++;
}

/* Builds the tokenizer for a vocabulary of vocab_size ids (the last two are the special tokens). */
static int build_tokenizer(mg_tok *t, int vocab_size, sdb_err *err)
{
    memset(t, 0, sizeof *t);
    t->n_slots = 1;
    while (t->n_slots < (size_t)vocab_size * 4) t->n_slots <<= 1;
    t->slots = malloc(t->n_slots * sizeof *t->slots);
    if (!t->slots) return sdb_fail(err, SDB_ENOMEM, "out of memory");
    memset(t->slots, 0xff, t->n_slots * sizeof *t->slots);
    const int target = vocab_size - 2;
    if (target < 512 + 26 * 26 * 2) return sdb_fail(err, SDB_EINVAL, "vocab_size %d is too small for a CLIP BPE", vocab_size);

    unsigned cps[256];
    bytes_to_unicode(cps);
    char s[16];
    for (int i = 0; i < 256; i++) { utf8_put(cps[i], s); if (tok_add(t, s)) goto oom; }
    for (int i = 0; i < 256; i++) { utf8_put(cps[i], s); strcat(s, "</w>"); if (tok_add(t, s)) goto oom; }

    /* 1. words and contraction pieces */
    for (size_t i = 0; i < sizeof MG_WORDS / sizeof MG_WORDS[0]; i++)
        if (tok_word(t, MG_WORDS[i], 1, target)) goto oom;
    const char *contr[] = {"s", "t", "re", "ve", "m", "ll", "d"};
    for (size_t i = 0; i < sizeof contr / sizeof contr[0]; i++) {
        char w[8];
        snprintf(w, sizeof w, "'%s", contr[i]);
        if (tok_word(t, w, 1, target)) goto oom;
    }
    /* 2. syllables, inside and at the end of words */
    for (size_t i = 0; i < sizeof MG_SYLLABLES / sizeof MG_SYLLABLES[0]; i++) {
        if (tok_word(t, MG_SYLLABLES[i], 0, target)) goto oom;
        if (tok_word(t, MG_SYLLABLES[i], 1, target)) goto oom;
    }
    /* 3. all letter n-grams, n = 2, 3, 4, ..., until the vocabulary is full */
    for (int len = 2; t->n < target && len <= 8; len++) {
        int idx[8] = {0};
        char g[9];
        for (;;) {
            for (int k = 0; k < len; k++) g[k] = (char)('a' + idx[k]);
            g[len] = '\0';
            char left[9], right[8];
            memcpy(left, g, (size_t)len - 1);
            left[len - 1] = '\0';
            snprintf(right, sizeof right, "%c", g[len - 1]);
            if (tok_find(t, left) >= 0) {
                if (tok_merge(t, left, right, target) < 0) goto oom;
                snprintf(right, sizeof right, "%c</w>", g[len - 1]);
                if (tok_merge(t, left, right, target) < 0) goto oom;
            }
            if (t->n >= target) break;
            int k = len - 1;
            while (k >= 0 && ++idx[k] == 26) idx[k--] = 0;
            if (k < 0) break;
        }
    }
    if (t->n != target) return sdb_fail(err, SDB_EINVAL, "tokenizer: only %d of %d tokens generated", t->n, target);
    if (tok_add(t, "<|startoftext|>") || tok_add(t, "<|endoftext|>")) goto oom;
    return 0;
oom:
    mg_tok_free(t);
    return sdb_fail(err, SDB_ENOMEM, "out of memory building the tokenizer");
}

/* vocab.json as transformers writes it: json.dumps(indent=2, sort_keys=True, ensure_ascii=False). */
static char **cmp_tokens; /* qsort context (the tool is single-threaded here) */
static int cmp_tok_ids(const void *a, const void *b)
{
    return strcmp(cmp_tokens[*(const int *)a], cmp_tokens[*(const int *)b]);
}

static int write_tokenizer(const char *dir, const mg_tok *t, sdb_err *err)
{
    int rc = sdb_mkdirs(dir, err);
    if (rc) return rc;
    int *order = malloc((size_t)t->n * sizeof *order);
    size_t cap = (size_t)t->n * 48 + 64, len = 0;
    char *buf = malloc(cap);
    if (!order || !buf) { free(order); free(buf); return sdb_fail(err, SDB_ENOMEM, "out of memory"); }
    for (int i = 0; i < t->n; i++) order[i] = i;
    cmp_tokens = t->tokens;
    qsort(order, (size_t)t->n, sizeof *order, cmp_tok_ids);
    len += (size_t)sprintf(buf + len, "{\n");
    for (int i = 0; i < t->n; i++) {
        const char *s = t->tokens[order[i]];
        len += (size_t)sprintf(buf + len, "  \"");
        for (; *s; s++) {
            if (*s == '"' || *s == '\\') buf[len++] = '\\';
            buf[len++] = *s;
        }
        len += (size_t)sprintf(buf + len, "\": %d%s\n", order[i], i + 1 < t->n ? "," : "");
    }
    len += (size_t)sprintf(buf + len, "}\n");
    free(order);
    char *path = sdb_path_join(dir, "vocab.json");
    rc = sdb_write_file_atomic(path, buf, len, err);
    free(path);
    free(buf);
    if (rc) return rc;

    cap = 32;
    for (int i = 0; i < t->n_merges; i++) cap += strlen(t->merges[i]) + 1;
    buf = malloc(cap);
    if (!buf) return sdb_fail(err, SDB_ENOMEM, "out of memory");
    len = (size_t)sprintf(buf, "#version: 0.2\n");
    for (int i = 0; i < t->n_merges; i++) {
        size_t l = strlen(t->merges[i]);
        memcpy(buf + len, t->merges[i], l);
        len += l;
        buf[len++] = '\n';
    }
    path = sdb_path_join(dir, "merges.txt");
    rc = sdb_write_file_atomic(path, buf, len, err);
    free(path);
    free(buf);
    if (rc) return rc;
    rc = write_json(dir, "tokenizer_config.json", tokenizer_config(), err);
    if (!rc) rc = write_json(dir, "special_tokens_map.json", special_tokens_map(), err);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* Random numbers: splitmix64 seeding, xoshiro256** stream, Box-Muller normals.                 */

typedef struct mg_rng { uint64_t s[4]; } mg_rng;

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static void mg_rng_seed(mg_rng *r, uint64_t seed)
{
    uint64_t x = seed;
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&x);
}

static inline uint64_t rotl64(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static inline uint64_t mg_next(mg_rng *r)
{
    uint64_t *s = r->s, res = rotl64(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0]; s[3] ^= s[1]; s[1] ^= s[2]; s[0] ^= s[3]; s[2] ^= t; s[3] = rotl64(s[3], 45);
    return res;
}

/* Uniform in (0, 1]. */
static inline double mg_unif(mg_rng *r) { return ((double)(mg_next(r) >> 11) + 1.0) * 0x1.0p-53; }

/* n standard normal values. */
static void mg_randn(mg_rng *r, float *out, size_t n)
{
    const double two_pi = 6.283185307179586476925;
    size_t i = 0;
    for (; i + 1 < n; i += 2) {
        double u1 = mg_unif(r), u2 = mg_unif(r), m = sqrt(-2.0 * log(u1));
        out[i] = (float)(m * cos(two_pi * u2));
        out[i + 1] = (float)(m * sin(two_pi * u2));
    }
    if (i < n) {
        double u1 = mg_unif(r), u2 = mg_unif(r);
        out[i] = (float)(sqrt(-2.0 * log(u1)) * cos(two_pi * u2));
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Tensor lists (from the recorder) and their random values                                     */

typedef struct mg_tensor {
    char *name;
    int ndim;
    int64_t shape[SDB_MAX_DIMS];
} mg_tensor;

typedef struct mg_list {
    mg_tensor *t;
    int n;
    int64_t params;
} mg_list;

static void mg_list_free(mg_list *l)
{
    for (int i = 0; i < l->n; i++) free(l->t[i].name);
    free(l->t);
    memset(l, 0, sizeof *l);
}

static int64_t mg_numel(const mg_tensor *t)
{
    int64_t n = 1;
    for (int d = 0; d < t->ndim; d++) n *= t->shape[d];
    return n;
}

static int cmp_tensor_name(const void *a, const void *b)
{
    return strcmp(((const mg_tensor *)a)->name, ((const mg_tensor *)b)->name);
}

/* Copies a recorder's requests into a name-sorted list; a name asked for twice must have the
 * same shape both times (kept once). */
static int list_from_recorder(mg_list *out, const sdb_weights *w, sdb_err *err)
{
    memset(out, 0, sizeof *out);
    if (w->n_rec == 0) return sdb_fail(err, SDB_EINVAL, "%s: the loader requested no tensors", w->component);
    out->t = calloc((size_t)w->n_rec, sizeof *out->t);
    if (!out->t) return sdb_fail(err, SDB_ENOMEM, "out of memory");
    for (int i = 0; i < w->n_rec; i++) {
        mg_tensor *t = &out->t[out->n++];
        t->name = strdup(w->rec_names[i]);
        if (!t->name) { mg_list_free(out); return sdb_fail(err, SDB_ENOMEM, "out of memory"); }
        t->ndim = w->rec_ndim[i];
        memcpy(t->shape, w->rec_shapes[i], sizeof t->shape);
    }
    qsort(out->t, (size_t)out->n, sizeof *out->t, cmp_tensor_name);
    int k = 0;
    for (int i = 0; i < out->n; i++) {
        if (k > 0 && !strcmp(out->t[k - 1].name, out->t[i].name)) {
            const mg_tensor *a = &out->t[k - 1], *b = &out->t[i];
            int same = a->ndim == b->ndim;
            for (int d = 0; same && d < a->ndim; d++) same = a->shape[d] == b->shape[d];
            char name[256];
            snprintf(name, sizeof name, "%s", b->name);
            free(out->t[i].name);
            if (!same) {
                for (int j = i + 1; j < out->n; j++) free(out->t[j].name);
                out->n = k;
                mg_list_free(out);
                return sdb_fail(err, SDB_EINVAL, "%s: tensor '%s' requested with two different shapes", w->component, name);
            }
            continue;
        }
        out->t[k++] = out->t[i];
    }
    out->n = k;
    for (int i = 0; i < out->n; i++) out->params += mg_numel(&out->t[i]);
    return 0;
}

static int ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcmp(s + a - b, suffix);
}

#define MG_CHUNK 65536

/* Fills one tensor of `component` with its random initial values (see the top of the file). */
static void fill_tensor(const mg_opts *o, const char *component, const mg_tensor *t, float *x)
{
    int64_t n = mg_numel(t);
    char key[320];
    snprintf(key, sizeof key, "%s/%s", component, t->name);
    uint64_t tseed = fnv1a(key) ^ (o->seed * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull);
    double scale, offset = 0.0;
    const char *nm = t->name;
    if (ends_with(nm, "token_embedding.weight")) scale = 1.0;
    else if (ends_with(nm, "position_embedding.weight")) scale = 0.5;
    else if (ends_with(nm, ".bias")) scale = 0.1;
    else if (t->ndim == 1) { scale = 0.2; offset = 1.0; } /* 1-D weights are norm scales */
    else {
        int64_t fan_in = 1;
        for (int d = 1; d < t->ndim; d++) fan_in *= t->shape[d];
        scale = 1.0 / sqrt((double)fan_in);
    }
    int64_t nchunks = (n + MG_CHUNK - 1) / MG_CHUNK;
#pragma omp parallel for schedule(static) if (nchunks > 4)
    for (int64_t c = 0; c < nchunks; c++) {
        mg_rng r;
        uint64_t cs = tseed + 0xD1B54A32D192ED03ull * (uint64_t)(c + 1);
        mg_rng_seed(&r, cs);
        int64_t b = c * MG_CHUNK, e = b + MG_CHUNK < n ? b + MG_CHUNK : n;
        mg_randn(&r, x + b, (size_t)(e - b));
        for (int64_t i = b; i < e; i++) x[i] = (float)(offset + scale * x[i]);
    }

    /* Make the random VAE behave a little like a real one. */
    if (!strcmp(component, "vae")) {
        int64_t rows = t->ndim ? t->shape[0] : 1, per = rows ? n / rows : 0;
        if (!strcmp(nm, "quant_conv.weight") || !strcmp(nm, "quant_conv.bias")) {
            int bias = ends_with(nm, ".bias");
            int64_t half = rows / 2; /* mean rows, then logvar rows */
            for (int64_t r = 0; r < rows; r++)
                for (int64_t i = 0; i < per; i++) {
                    float *v = &x[r * per + i];
                    if (r < half) *v *= 4.0f;
                    else if (bias) *v = -4.0f + *v;
                    else *v *= 0.5f;
                }
        } else if (!strcmp(nm, "decoder.conv_out.weight")) {
            for (int64_t i = 0; i < n; i++) x[i] *= 0.5f;
        }
    }
}

/* Writes a safetensors file tensor by tensor: same format as sdb_st_write (header JSON with
 * __metadata__ {"format": "pt"} first, tensors in list order, header padded with spaces to 8
 * bytes), same atomic temp file + rename. Only one tensor is in memory at a time. */
static int write_weights(const char *path, const mg_opts *o, const char *component, const mg_list *l,
                         sdb_err *err)
{
    sdb_dtype dt = o->f16 ? SDB_DT_F16 : SDB_DT_F32;
    size_t esz = sdb_dtype_size(dt);
    json_t *root = json_object(), *meta = json_object();
    json_object_set_new(meta, "format", json_string("pt"));
    json_object_set_new(root, "__metadata__", meta);
    size_t off = 0, max_numel = 0;
    for (int i = 0; i < l->n; i++) {
        const mg_tensor *t = &l->t[i];
        size_t numel = (size_t)mg_numel(t), nb = numel * esz;
        if (numel > max_numel) max_numel = numel;
        json_t *e = json_object(), *shape = json_array(), *offs = json_array();
        for (int d = 0; d < t->ndim; d++) json_array_append_new(shape, json_integer(t->shape[d]));
        json_array_append_new(offs, json_integer((json_int_t)off));
        json_array_append_new(offs, json_integer((json_int_t)(off + nb)));
        json_object_set_new(e, "dtype", json_string(sdb_dtype_name(dt)));
        json_object_set_new(e, "shape", shape);
        json_object_set_new(e, "data_offsets", offs);
        json_object_set_new(root, t->name, e);
        off += nb;
    }
    char *hdr = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(root);
    float *buf = malloc(max_numel * sizeof(float) + 16);
    uint16_t *half = o->f16 ? malloc(max_numel * sizeof(uint16_t) + 16) : NULL;
    if (!hdr || !buf || (o->f16 && !half)) {
        free(hdr); free(buf); free(half);
        return sdb_fail(err, SDB_ENOMEM, "out of memory");
    }
    size_t hl = strlen(hdr), padded = (hl + 7) & ~(size_t)7;
    sdb_wfile wf;
    int rc = sdb_wfile_open(&wf, path, err);
    if (rc) { free(hdr); free(buf); free(half); return rc; }
    unsigned char len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (unsigned char)((uint64_t)padded >> (8 * i));
    rc = sdb_wfile_write(&wf, len8, 8, err);
    if (!rc) rc = sdb_wfile_write(&wf, hdr, hl, err);
    if (!rc && padded > hl) rc = sdb_wfile_write(&wf, "        ", padded - hl, err);
    free(hdr);
    for (int i = 0; !rc && i < l->n; i++) {
        const mg_tensor *t = &l->t[i];
        size_t numel = (size_t)mg_numel(t);
        fill_tensor(o, component, t, buf);
        if (o->f16) {
            int64_t nch = ((int64_t)numel + MG_CHUNK - 1) / MG_CHUNK;
#pragma omp parallel for schedule(static) if (nch > 4)
            for (int64_t c = 0; c < nch; c++) {
                size_t b = (size_t)c * MG_CHUNK, e = b + MG_CHUNK < numel ? b + MG_CHUNK : numel;
                sdb_f32_to_f16_array(buf + b, half + b, e - b);
            }
            rc = sdb_wfile_write(&wf, half, numel * sizeof(uint16_t), err);
        } else {
            rc = sdb_wfile_write(&wf, buf, numel * sizeof(float), err);
        }
    }
    free(buf);
    free(half);
    if (rc) { sdb_wfile_abort(&wf); return rc; }
    return sdb_wfile_commit(&wf, err);
}

/* ------------------------------------------------------------------------------------------ */
/* Recording: run the real loader of a component on a recording sdb_weights.                   */

static int record_component(const char *component, const char *config_path, mg_list *out, sdb_err *err)
{
    sdb_weights w;
    sdb_weights_init_recorder(&w, component);
    int rc;
    if (!strcmp(component, "unet")) {
        sdb_unet *m = NULL;
        rc = sdb_unet_load(&m, config_path, &w, err);
        if (m) sdb_unet_free(m);
    } else if (!strcmp(component, "vae")) {
        sdb_vae *m = NULL;
        rc = sdb_vae_load(&m, config_path, &w, err);
        if (m) sdb_vae_free(m);
    } else if (!strcmp(component, "text_encoder")) {
        sdb_clip *m = NULL;
        rc = sdb_clip_load(&m, config_path, &w, err);
        if (m) sdb_clip_free(m);
    } else {
        rc = sdb_fail(err, SDB_EINVAL, "unknown component '%s'", component);
    }
    if (!rc) rc = list_from_recorder(out, &w, err);
    else sdb_err_prefix(err, "recording the %s loader's tensors", component);
    sdb_weights_free(&w);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* The whole folder                                                                            */

static const char *const MG_COMPONENTS[3] = {"unet", "vae", "text_encoder"};

/* Writes model_index.json, scheduler/, tokenizer/ and every component's config.json. */
static int write_configs(const char *out_dir, const mg_opts *o, sdb_err *err)
{
    const char *dirs[] = {"scheduler", "unet", "vae", "text_encoder", "tokenizer"};
    int rc = sdb_mkdirs(out_dir, err);
    for (size_t i = 0; !rc && i < sizeof dirs / sizeof dirs[0]; i++) {
        char *d = sdb_path_join(out_dir, dirs[i]);
        rc = sdb_mkdirs(d, err);
        free(d);
    }
    if (rc) return rc;
    char *d;
    rc = write_json(out_dir, "model_index.json", model_index(o), err);
    if (!rc) { d = sdb_path_join(out_dir, "scheduler"); rc = write_json(d, "scheduler_config.json", scheduler_config(), err); free(d); }
    if (!rc) { d = sdb_path_join(out_dir, "unet"); rc = write_json(d, "config.json", unet_config(o), err); free(d); }
    if (!rc) { d = sdb_path_join(out_dir, "vae"); rc = write_json(d, "config.json", vae_config(o), err); free(d); }
    if (!rc) { d = sdb_path_join(out_dir, "text_encoder"); rc = write_json(d, "config.json", clip_config(o), err); free(d); }
    return rc;
}

static int write_tokenizer_dir(const char *out_dir, sdb_err *err)
{
    mg_tok t;
    int rc = build_tokenizer(&t, MG_VOCAB_SIZE, err);
    if (rc) return rc;
    char *d = sdb_path_join(out_dir, "tokenizer");
    rc = write_tokenizer(d, &t, err);
    free(d);
    mg_tok_free(&t);
    return rc;
}

/* Tensors of one component, as its loader asks for them given the config already in out_dir. */
static int component_tensors(const char *out_dir, const char *component, mg_list *l, sdb_err *err)
{
    char rel[64];
    snprintf(rel, sizeof rel, "%s/config.json", component);
    char *cfg = sdb_path_join(out_dir, rel);
    int rc = record_component(component, cfg, l, err);
    free(cfg);
    return rc;
}

static const char *weights_file_name(const char *component, int fp16_variant)
{
    if (!strcmp(component, "text_encoder")) return fp16_variant ? "model.fp16.safetensors" : "model.safetensors";
    return fp16_variant ? "diffusion_pytorch_model.fp16.safetensors" : "diffusion_pytorch_model.safetensors";
}

typedef struct mg_summary {
    int n_tensors[3];
    int64_t params[3];
} mg_summary;

/* A README.md in the folder, so nobody mistakes it for a real model. */
static int write_readme(const char *out_dir, const mg_opts *o, sdb_err *err)
{
    char text[1024];
    int n = snprintf(text, sizeof text,
        "# Random-weight Stable Diffusion 1.5 model (NOT a trained model)\n\n"
        "Written by sdbatch-make-random-model: %s structure, %s U-Net, %s weights, seed %" PRIu64 ".\n"
        "Every weight is random, so every picture it makes is coloured noise. It exists for demos,\n"
        "tests and speed benchmarks on machines without the real weights (tools/fetch-model.sh\n"
        "downloads those). The tokenizer is generated too (a CLIP-format BPE, not CLIP's vocabulary).\n"
        "Regenerate with: sdbatch-make-random-model DIR --size %s --dtype %s %s --seed %" PRIu64 "%s\n",
        o->full ? "full-size SD 1.5" : "tiny", o->inpaint ? "9-channel inpainting" : "4-channel",
        o->f16 ? "F16" : "F32", o->seed, o->full ? "full" : "tiny", o->f16 ? "f16" : "f32",
        o->inpaint ? "--inpaint" : "--txt2img", o->seed, o->fp16_variant ? " --fp16-variant" : "");
    char *path = sdb_path_join(out_dir, "README.md");
    int rc = path ? sdb_write_file_atomic(path, text, (size_t)n, err) : sdb_fail(err, SDB_ENOMEM, "out of memory");
    free(path);
    return rc;
}

static int make_random_model(const char *out_dir, const mg_opts *o, mg_summary *sum, FILE *progress, sdb_err *err)
{
    if (sum) memset(sum, 0, sizeof *sum);
    int rc = write_configs(out_dir, o, err);
    if (!rc) rc = write_readme(out_dir, o, err);
    if (!rc) rc = write_tokenizer_dir(out_dir, err);
    if (rc) return rc;
    for (int c = 0; c < 3; c++) {
        const char *comp = MG_COMPONENTS[c];
        mg_list l;
        rc = component_tensors(out_dir, comp, &l, err);
        if (rc) return rc;
        char rel[128];
        snprintf(rel, sizeof rel, "%s/%s", comp, weights_file_name(comp, o->fp16_variant));
        char *path = sdb_path_join(out_dir, rel);
        double t0 = sdb_now_mono();
        rc = write_weights(path, o, comp, &l, err);
        if (!rc && progress)
            fprintf(progress, "  %-12s %4d tensors %13" PRId64 " parameters  %s (%.1f s)\n", comp, l.n,
                    l.params, rel, sdb_now_mono() - t0);
        if (sum) { sum->n_tensors[c] = l.n; sum->params[c] = l.params; }
        free(path);
        mg_list_free(&l);
        if (rc) return rc;
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------ */

#ifndef MODELGEN_NO_MAIN
static void usage(FILE *f)
{
    fprintf(f,
        "usage: sdbatch-make-random-model OUT_DIR [--size tiny|full] [--dtype f32|f16]\n"
        "                                 [--inpaint|--txt2img] [--seed N] [--fp16-variant]\n\n"
        "Writes a Stable Diffusion 1.5 diffusers pipeline folder with RANDOM weights (for demos,\n"
        "tests and benchmarks without the real model; its pictures are coloured noise).\n\n"
        "  --size tiny     the team's tiny test-model structure (U-Net 32/64/64/64; ~26 MB F32) [default]\n"
        "  --size full     SD 1.5's exact structure (U-Net 320/640/1280/1280; ~4.3 GB F32, 2.1 GB F16)\n"
        "  --dtype f32|f16 weight storage type (default f32)\n"
        "  --inpaint       9-channel inpainting U-Net (StableDiffusionInpaintPipeline) [default]\n"
        "  --txt2img       4-channel U-Net (StableDiffusionPipeline)\n"
        "  --seed N        seed of the weights (default 0); same seed, same files\n"
        "  --fp16-variant  name the weight files *.fp16.safetensors (diffusers' variant=\"fp16\")\n\n"
        "Full size takes about a minute and writes 3.9 GB (F32) / 2.0 GB (F16), one tensor at a time\n"
        "(~300 MB of memory). The real weights: tools/fetch-model.sh.\n");
}

int main(int argc, char **argv)
{
    mg_opts o;
    mg_opts_default(&o);
    const char *out_dir = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(stdout); return 0; }
        else if (!strcmp(a, "--size") && i + 1 < argc) {
            const char *v = argv[++i];
            if (!strcmp(v, "tiny")) o.full = 0;
            else if (!strcmp(v, "full")) o.full = 1;
            else { fprintf(stderr, "sdbatch-make-random-model: --size must be tiny or full, not '%s'\n", v); return 2; }
        } else if (!strcmp(a, "--dtype") && i + 1 < argc) {
            const char *v = argv[++i];
            if (!strcmp(v, "f32") || !strcmp(v, "float32")) o.f16 = 0;
            else if (!strcmp(v, "f16") || !strcmp(v, "float16")) o.f16 = 1;
            else { fprintf(stderr, "sdbatch-make-random-model: --dtype must be f32 or f16, not '%s'\n", v); return 2; }
        } else if (!strcmp(a, "--inpaint")) o.inpaint = 1;
        else if (!strcmp(a, "--txt2img")) o.inpaint = 0;
        else if (!strcmp(a, "--fp16-variant")) o.fp16_variant = 1;
        else if (!strcmp(a, "--seed") && i + 1 < argc) {
            char *end;
            errno = 0;
            unsigned long long s = strtoull(argv[++i], &end, 10);
            if (errno || *end || argv[i][0] == '-' || !argv[i][0]) {
                fprintf(stderr, "sdbatch-make-random-model: --seed needs a non-negative integer, not '%s'\n", argv[i]);
                return 2;
            }
            o.seed = s;
        } else if (a[0] == '-') {
            fprintf(stderr, "sdbatch-make-random-model: unknown or incomplete option '%s'\n\n", a);
            usage(stderr);
            return 2;
        } else if (!out_dir) out_dir = a;
        else { fprintf(stderr, "sdbatch-make-random-model: more than one OUT_DIR ('%s', '%s')\n", out_dir, a); return 2; }
    }
    if (!out_dir) { usage(stderr); return 2; }
    fprintf(stderr, "sdbatch-make-random-model: writing a %s %s random-weight model (%s, seed %" PRIu64 ") to %s\n",
            o.full ? "full-size" : "tiny", o.inpaint ? "inpainting" : "txt2img", o.f16 ? "F16" : "F32", o.seed, out_dir);
    sdb_err err;
    sdb_err_clear(&err);
    double t0 = sdb_now_mono();
    mg_summary sum;
    int rc = make_random_model(out_dir, &o, &sum, stderr, &err);
    if (rc) {
        fprintf(stderr, "sdbatch-make-random-model: error: %s\n", err.msg);
        return 1;
    }
    fprintf(stderr, "sdbatch-make-random-model: done in %.1f s. Random weights: the images this model "
                    "makes are noise.\n", sdb_now_mono() - t0);
    return 0;
}
#endif
