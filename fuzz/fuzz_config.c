/*
 * fuzz_config.c — libFuzzer harness: JSON config text (config.json, model_index.json,
 * scheduler_config.json) through sdb_config_parse and every accessor, then through the readers
 * that turn a config into model and scheduler settings: the VAE and CLIP config readers (the
 * parsed config, as their file loaders pass it), the LDM U-Net layout and every scheduler's
 * constructor. Any input ends in a config or an error with a message. Nothing touches the disk.
 */
#include "sdb/clip.h"
#include "sdb/config.h"
#include "sdb/ldm_names.h"
#include "sdb/sched.h"
#include "sdb/vae.h"
#include "fuzz_util.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const keys[] = {
    "_class_name", "in_channels", "out_channels", "block_out_channels", "layers_per_block",
    "down_block_types", "up_block_types", "num_train_timesteps", "beta_start", "beta_end",
    "beta_schedule", "use_karras_sigmas", "prediction_type", "hidden_size", "scaling_factor", "x", "",
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    if (!text) return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    sdb_config c;
    sdb_err err = {0};
    if (sdb_config_parse(&c, text, "fuzz.json", &err) == 0) {
        for (size_t k = 0; k < sizeof keys / sizeof *keys; k++) {
            long long ll, arr[8];
            double d;
            int b, n, ir;
            const char *s, *sa[8];
            (void)sdb_config_has(&c, keys[k]);
            (void)sdb_config_int(&c, keys[k], 7, &ll, &err);
            (void)sdb_config_int_range(&c, keys[k], 7, -5, 5000, &ir, &err);
            (void)sdb_config_double(&c, keys[k], 0.5, &d, &err);
            (void)sdb_config_bool(&c, keys[k], 1, &b, &err);
            (void)sdb_config_string(&c, keys[k], "def", &s, &err);
            (void)sdb_config_int_array(&c, keys[k], arr, 8, &n, &err);
            (void)sdb_config_string_array(&c, keys[k], sa, 8, &n, &err);
        }
        sdb_vae_config vc;
        (void)sdb_vae_config_parse(&vc, &c, &err);
        sdb_clip_config cc;
        (void)sdb_clip_config_parse(&cc, &c, &err);
        sdb_ldm_unet_layout l;
        (void)sdb_ldm_unet_layout_from_config(&l, &c, &err);
        const char *name;
        (void)sdb_sched_default_name(&c, &name, &err);
        static const char *const scheds[] = {NULL, "ddim", "pndm", "euler", "euler_a", "lms",
                                             "dpmpp_2m", "dpmpp_2m_karras", "unknown"};
        for (size_t k = 0; k < sizeof scheds / sizeof *scheds; k++) {
            sdb_sched *s = NULL;
            if (sdb_sched_create(&s, scheds[k], &c, &err) == 0) sdb_sched_free(s);
            else FUZZ_CHECK(err.msg[0]);
        }
        sdb_config_free(&c);
    } else {
        FUZZ_CHECK(err.code != 0 && err.msg[0]);
    }
    free(text);
    return 0;
}
