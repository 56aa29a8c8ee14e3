/*
 * cmd_generate.c — `sdbatch generate`: one image from the command line (inpaint with --image and
 * --mask, img2img with --image alone, txt2img with neither), written atomically as a PNG that
 * carries its parameters in AUTOMATIC1111's `parameters` text chunk.
 */
#include "cli.h"

#include "sdb/a1111.h"
#include "sdb/fsutil.h"
#include "sdb/image.h"
#include "sdb/pipeline.h"
#include "sdb/sched.h"
#include "sdb/threads.h"

#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void usage(FILE *f)
{
    fprintf(f,
"usage: sdbatch generate --model PATH --prompt TEXT --output PATH [options]\n"
"       sdbatch generate --from IMAGE.png --model PATH [--image PATH --mask PATH] --output PATH [options]\n"
"\n"
"Runs Stable Diffusion 1.x once, as diffusers' pipelines do: inpainting with --image and --mask,\n"
"img2img with --image alone, txt2img with neither.\n"
"\n"
"  --model PATH            diffusers pipeline folder, or a single-file .safetensors checkpoint;\n"
"                          a bare NAME is looked up as models/NAME[.safetensors], then in the\n"
"                          folders of $SDB_MODELS (colon-separated)\n"
"  --config DIR            (single file) a diffusers folder whose configs to use (default: SD 1.x's,\n"
"                          inferred from the file's tensors)\n"
"  --tokenizer DIR         (single file) tokenizer folder (default: DIR/tokenizer of --config, else\n"
"                          tokenizer/ beside the file, models/tokenizer, $SDB_MODELS/*/tokenizer,\n"
"                          $SDB_TOKENIZER)\n"
"  --vae PATH              a separate VAE: single-file .safetensors or diffusers vae/ folder (or a\n"
"                          bare name, as --model); adds VAE hash to the PNG parameters\n"
"  --prompt TEXT           what to paint\n"
"  --negative-prompt TEXT  what to avoid (default: none)\n"
"  --image PATH            input image (PNG or JPEG)\n"
"  --mask PATH|alpha       inpainting mask: white = repaint, black = keep; `alpha`: the image's\n"
"                          transparent area is the mask\n"
"  --seed N                random seed (default: a random one, printed and stored in the PNG)\n"
"  --steps N               denoising steps (default 50)\n"
"  --guidance-scale F      classifier-free guidance (default 7.5; <= 1 disables it)\n"
"  --strength F            in (0, 1]: how much of the image is re-noised (default 1.0)\n"
"  --scheduler NAME        %s (default: the model's own)\n"
"  --eta F                 DDIM's eta (default 0)\n"
"  --width W --height H    work at this size (multiples of 8), as diffusers does; default: the\n"
"                          input's own size (padded to multiples of 8 and cropped back)\n"
"  --padding-mask-crop N   inpaint only a crop around the mask, grown by N pixels, then paste back\n"
"  --threads N             threads (default: $OMP_NUM_THREADS, else $SLURM_CPUS_PER_TASK, else the\n"
"                          CPUs this process may use: its affinity mask, or its cgroups' CPU\n"
"                          quota when smaller)\n"
"  --weights f32|f16       f16: keep the weight matrices as IEEE half in memory (about half the\n"
"                          weights' RAM; an F16 model gives the same image, an F32 one is\n"
"                          rounded to half); default f32\n"
"  --vae-tiling MODE       auto|on|off: tiled VAE for big images (bounded memory, within 2/255\n"
"                          of the untiled VAE; the tiles are parked on disk in $TMPDIR, ~7 GiB\n"
"                          at 2048x2048);\n"
"                          auto (default) tiles only above (2 x tile)^2 pixels (1024x1024 for SD 1.x)\n"
"  --conv auto|direct|winograd  the 3x3 convolutions' path: Winograd F(4x4,3x3) (4x fewer\n"
"                          multiply-adds, the same image within float rounding) or im2col + GEMM;\n"
"                          default auto: Winograd where it is faster for the layer's shape\n"
"                          (F(2x2,3x3) on small latents)\n"
"  --keep-filters MIB      keep the U-Net's weights in the form its kernels use (Winograd-\n"
"                          transformed filters, linear layers' panels on AVX2 CPUs) in up to\n"
"                          MIB MiB of memory instead of making them every step: faster steps,\n"
"                          the same image (SD 1.5: 3634 MiB keeps all a 256x256 image uses,\n"
"                          6959 MiB a 512x512 one); default 0\n"
"  --from IMAGE.png        take the prompt, seed, steps, sampler, CFG scale, strength and sdbatch's\n"
"                          own settings from that PNG's `parameters` chunk (sdbatch's or\n"
"                          AUTOMATIC1111's); any option given here overrides them. With the same\n"
"                          inputs and model, an sdbatch image is reproduced exactly\n"
"  --output PATH           the image to write (atomically): .png, or .jpg/.jpeg; its folder must\n"
"                          exist; a symlink is refused (never replaced nor written through)\n"
"  -q, --quiet             no progress bar\n"
"\n"
"Restoration options (the manifest keys of the same names; all off = diffusers' pipeline exactly):\n"
"  --keep-unmasked         pixels outside the mask come back bit-identical (composite over the\n"
"                          input by the mask, at the input's size)\n"
"  --mask-blur N           Gaussian blur of the mask (AUTOMATIC1111's \"Mask blur\")\n"
"  --mask-dilate N         grow the mask by N pixels first (max filter)\n"
"  --masked-content MODE   original | fill | latent_noise | latent_nothing: what the masked area\n"
"                          starts from (A1111's \"Masked content\"; strength < 1 keeps some of it)\n"
"  --color-match           match the output's colours to the input's (A1111's colour correction)\n"
"  --inpaint-area AREA     whole | masked: masked works on a crop around the mask (padded by\n"
"                          --padding-mask-crop, default 32) and pastes it back\n"
"  --only-masked-size N    working size (N x N) of that crop (default: the model's native size)\n"
"  --jpeg-quality N        1..100 for a .jpg output (default 80)\n", sdb_sched_names());
}

static volatile sig_atomic_t g_stop; /* set by the signal handler (CLI only, never in the library) */
static void on_signal(int sig) { g_stop = sig; }

typedef struct { int tty, quiet; double t0; } progress;

static int on_step(void *ud, int step, int total)
{
    progress *p = ud;
    if (p->tty && !p->quiet) {
        int width = 30, fill = total ? step * width / total : width;
        double el = sdb_now_mono() - p->t0;
        fprintf(stderr, "\r  [%.*s%*s] step %d/%d  %.1f s/step ", fill, "##############################",
                width - fill, "", step, total, step ? el / step : 0.0);
        if (step == total) fputc('\n', stderr);
        fflush(stderr);
    }
    return g_stop != 0;
}

static uint64_t random_seed(void)
{
    uint64_t s = 0;
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) { if (read(fd, &s, sizeof s) != (ssize_t)sizeof s) s = 0; close(fd); }
    if (!s) s = (uint64_t)(sdb_now_wall() * 1e6) ^ (uint64_t)getpid();
    return s & 0xFFFFFFFFu; /* torch keeps 32 bits; print what matters */
}

int cmd_generate(int argc, char **argv)
{
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'}, {"prompt", required_argument, 0, 'p'},
        {"negative-prompt", required_argument, 0, 'n'}, {"image", required_argument, 0, 'i'},
        {"mask", required_argument, 0, 'k'}, {"seed", required_argument, 0, 's'},
        {"steps", required_argument, 0, 't'}, {"guidance-scale", required_argument, 0, 'g'},
        {"strength", required_argument, 0, 'r'}, {"scheduler", required_argument, 0, 'S'},
        {"eta", required_argument, 0, 'e'}, {"width", required_argument, 0, 'W'},
        {"height", required_argument, 0, 'H'}, {"padding-mask-crop", required_argument, 0, 'P'},
        {"threads", required_argument, 0, 'T'}, {"output", required_argument, 0, 'o'},
        {"tokenizer", required_argument, 0, 'z'}, {"config", required_argument, 0, 'c'},
        {"weights", required_argument, 0, 'w'}, {"vae", required_argument, 0, 'V'},
        /* issue 17: restoration options */
        {"keep-unmasked", no_argument, 0, 1001}, {"mask-blur", required_argument, 0, 1002},
        {"mask-dilate", required_argument, 0, 1003}, {"masked-content", required_argument, 0, 1004},
        {"color-match", no_argument, 0, 1005}, {"inpaint-area", required_argument, 0, 1006},
        {"only-masked-size", required_argument, 0, 1007}, {"jpeg-quality", required_argument, 0, 1008},
        {"conv", required_argument, 0, 'C'}, {"keep-filters", required_argument, 0, 1010},
        {"vae-tiling", required_argument, 0, 1009},
        {"from", required_argument, 0, 'F'},
        {"quiet", no_argument, 0, 'q'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    const char *model = NULL, *vae = NULL, *image_path = NULL, *mask_path = NULL, *output = NULL, *from = NULL;
    unsigned char given[2048] = {0}; /* options given on the command line (they win over --from) */
    sdb_model_opts mopts = {0};
    sdb_gen_params p;
    sdb_gen_params_default(&p);
    int have_seed = 0, quiet = 0, jpeg_quality = 0;
    long long v, threads = 0;
    double d;
    optind = 1;
    int c;
    while ((c = getopt_long(argc, argv, "qh", opts, NULL)) != -1) {
        if (c > 0 && c < (int)sizeof given) given[c] = 1;
        switch (c) {
        case 'F': from = optarg; break;
        case 'm': model = optarg; break;
        case 'p': p.prompt = optarg; break;
        case 'n': p.negative_prompt = optarg; break;
        case 'i': image_path = optarg; break;
        case 'k': mask_path = optarg; break;
        case 's': if (cli_parse_int("generate", "--seed", optarg, 0, INT64_MAX, &v)) return EXIT_USAGE; p.seed = (uint64_t)v; have_seed = 1; break;
        case 't': if (cli_parse_int("generate", "--steps", optarg, 1, 10000, &v)) return EXIT_USAGE; p.steps = (int)v; break;
        case 'g': if (cli_parse_double("generate", "--guidance-scale", optarg, &d)) return EXIT_USAGE; p.guidance_scale = d; break;
        case 'r': if (cli_parse_double("generate", "--strength", optarg, &d)) return EXIT_USAGE; p.strength = d; break;
        case 'S': p.scheduler = optarg; break;
        case 'e': if (cli_parse_double("generate", "--eta", optarg, &d)) return EXIT_USAGE; p.eta = d; break;
        case 'W': if (cli_parse_int("generate", "--width", optarg, 8, 16384, &v)) return EXIT_USAGE; p.width = (int)v; break;
        case 'H': if (cli_parse_int("generate", "--height", optarg, 8, 16384, &v)) return EXIT_USAGE; p.height = (int)v; break;
        case 'P': if (cli_parse_int("generate", "--padding-mask-crop", optarg, 0, 100000, &v)) return EXIT_USAGE; p.padding_mask_crop = (int)v; break;
        case 'T': if (cli_parse_int("generate", "--threads", optarg, 1, 1024, &threads)) return EXIT_USAGE; break;
        case 'o': output = optarg; break;
        case 'z': mopts.tokenizer_dir = optarg; break;
        case 'c': mopts.config_dir = optarg; break;
        case 'V': vae = optarg; break;
        case 'w':
            if (cli_parse_weights("generate", optarg, &mopts.weights_f16)) return EXIT_USAGE;
            break;
        /* issue 17: restoration options */
        case 1001: p.restore.keep_unmasked = 1; break;
        case 1002: if (cli_parse_int("generate", "--mask-blur", optarg, 0, 256, &v)) return EXIT_USAGE; p.restore.mask_blur = (int)v; break;
        case 1003: if (cli_parse_int("generate", "--mask-dilate", optarg, 0, 1024, &v)) return EXIT_USAGE; p.restore.mask_dilate = (int)v; break;
        case 1004: {
            int mc = sdb_masked_content_parse(optarg);
            if (mc < 0) return cli_usage_error("generate", "--masked-content: unknown '%s' (original, fill, latent_noise, latent_nothing)", optarg);
            p.restore.masked_content = (sdb_masked_content)mc;
            break;
        }
        case 1005: p.restore.color_match = 1; break;
        case 1006: {
            int a = sdb_inpaint_area_parse(optarg);
            if (a < 0) return cli_usage_error("generate", "--inpaint-area: unknown '%s' (whole, masked)", optarg);
            p.restore.inpaint_area = (sdb_inpaint_area)a;
            break;
        }
        case 1007:
            if (cli_parse_int("generate", "--only-masked-size", optarg, 64, 4096, &v)) return EXIT_USAGE;
            if (v % 8) return cli_usage_error("generate", "--only-masked-size must be a multiple of 8");
            p.restore.only_masked_size = (int)v;
            break;
        case 1008: if (cli_parse_int("generate", "--jpeg-quality", optarg, 1, 100, &v)) return EXIT_USAGE; jpeg_quality = (int)v; break;
        case 'C':
            if (cli_parse_conv("generate", optarg, &mopts.conv)) return EXIT_USAGE;
            break;
        case 1010:
            if (cli_parse_keep_filters("generate", optarg, &mopts.keep_filters)) return EXIT_USAGE;
            break;
        case 1009:
            if ((p.vae_tiling = sdb_vae_tiling_parse(optarg)) < 0)
                return cli_usage_error("generate", "--vae-tiling must be auto, on or off, got '%s'", optarg);
            break;
        case 'q': quiet = 1; break;
        case 'h': usage(stdout); return EXIT_OK;
        default: return cli_usage_error("generate", "unknown option");
        }
    }
    if (optind < argc) return cli_usage_error("generate", "unexpected argument '%s'", argv[optind]);
    if (!model) return cli_usage_error("generate", "--model is required");
    if (!p.prompt && !from) return cli_usage_error("generate", "--prompt is required (or --from IMAGE.png)");
    if (!output) return cli_usage_error("generate", "--output is required");
    if (sdb_image_format_of_path(output) < 0) return cli_usage_error("generate", "--output must end in .png, .jpg or .jpeg");
    if (mask_path && !strcmp(mask_path, "alpha")) { p.restore.mask_from_alpha = 1; mask_path = NULL; }
    if (p.restore.mask_from_alpha && !image_path) return cli_usage_error("generate", "--mask alpha needs --image");
    if (mask_path && !image_path) return cli_usage_error("generate", "--mask needs --image");
    if (!(p.strength > 0 && p.strength <= 1)) return cli_usage_error("generate", "--strength must be in (0, 1], got %g", p.strength);
    if ((p.width == 0) != (p.height == 0)) return cli_usage_error("generate", "give both --width and --height, or neither");
    if (p.width % 8 || p.height % 8) return cli_usage_error("generate", "--width and --height must be multiples of 8");
    if (p.scheduler) {
        sdb_sched_kind k;
        sdb_err e = {0};
        if (sdb_sched_kind_from_name(p.scheduler, &k, &e)) return cli_usage_error("generate", "%s", e.msg);
    }
    {   /* before minutes of work: the folder exists, the output is not a symlink (checked again at the write) */
        sdb_err e = {0};
        if (sdb_output_path_check(output, &e)) return cli_error("generate", &e);
    }
    sdb_a1111_params from_params = {0};
    if (from) {
        char *text = cli_read_parameters("generate", from);
        if (!text) return EXIT_FAILURE_RUN;
        sdb_err e = {0};
        int prc = sdb_a1111_parse(text, &from_params, &e);
        free(text);
        if (prc) return cli_error("generate", &e);
        if (!given['s'] && sdb_a1111_get(&from_params, "Seed")) have_seed = 1; /* set once the model is loaded */
    }
    if (!have_seed) p.seed = random_seed();
    if (!threads && !getenv("OMP_NUM_THREADS")) { /* OMP_NUM_THREADS, when set, rules */
        const char *s = getenv("SLURM_CPUS_PER_TASK");
        threads = s && atoi(s) > 0 ? atoi(s) : sdb_threads_available();
    }
    if (threads) sdb_threads_set((int)threads);

    sdb_log log = cli_logger();
    sdb_err err = {0};
    sdb_image image = {0}, mask = {0}, out = {0};
    int rc = 0;
    if (image_path) {
        if ((rc = sdb_image_load_ex(image_path, &image, 0, 0, SDB_LOAD_EXACT16, &err))) return cli_error("generate", &err);
        p.image = &image;
    }
    if (mask_path) {
        if ((rc = sdb_image_load_ex(mask_path, &mask, 0, 0, SDB_LOAD_EXACT16, &err))) { sdb_image_free(&image); return cli_error("generate", &err); }
        p.mask = &mask;
    }
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    sdb_model *m = NULL;
    char *model_path = NULL, *vae_path = NULL;
    if ((rc = cli_model_opts(model, vae, &mopts, &model_path, &vae_path, &err)) == 0)
        rc = sdb_model_load(&m, model_path, &mopts, &log, &err);
    free(model_path);
    free(vae_path);
    if (rc) {
        sdb_image_free(&image); sdb_image_free(&mask);
        return cli_error("generate", &err);
    }
    if (from) {
        /* --from's parameters, then every option given on the command line over them */
        sdb_gen_params q;
        sdb_gen_params_default(&q);
        q.image = p.image;
        q.mask = p.mask;
        if (given['S']) q.scheduler = p.scheduler;
        if ((rc = sdb_gen_params_from_a1111(m, &from_params, &q, &err))) {
            sdb_image_free(&image); sdb_image_free(&mask); sdb_model_free(m); sdb_a1111_free(&from_params);
            sdb_err_prefix(&err, "--from %s", from);
            return cli_error("generate", &err);
        }
        if (given['p']) q.prompt = p.prompt;
        if (given['n']) q.negative_prompt = p.negative_prompt;
        if (given['s'] || !sdb_a1111_get(&from_params, "Seed")) q.seed = p.seed;
        if (given['t']) q.steps = p.steps;
        if (given['g']) q.guidance_scale = p.guidance_scale;
        if (given['r']) q.strength = p.strength;
        if (given['S']) q.scheduler = p.scheduler;
        if (given['e']) q.eta = p.eta;
        if (given['W'] || given['H']) { q.width = p.width; q.height = p.height; }
        if (given['P']) q.padding_mask_crop = p.padding_mask_crop;
        if (given[1009]) q.vae_tiling = p.vae_tiling;
        if (given[1001]) q.restore.keep_unmasked = p.restore.keep_unmasked;
        if (given[1002]) q.restore.mask_blur = p.restore.mask_blur;
        if (given[1003]) q.restore.mask_dilate = p.restore.mask_dilate;
        if (given[1004]) q.restore.masked_content = p.restore.masked_content;
        if (given[1005]) q.restore.color_match = p.restore.color_match;
        if (given[1006]) q.restore.inpaint_area = p.restore.inpaint_area;
        if (given[1007]) q.restore.only_masked_size = p.restore.only_masked_size;
        if (given['k']) q.restore.mask_from_alpha = p.restore.mask_from_alpha; /* --mask FILE or alpha */
        if (q.restore.mask_from_alpha && !q.image) {
            sdb_image_free(&image); sdb_image_free(&mask); sdb_model_free(m); sdb_a1111_free(&from_params);
            return cli_usage_error("generate", "--from %s: its mask was the image's alpha: give --image", from);
        }
        p = q;
    }
    progress pr = {isatty(2), quiet, sdb_now_mono()};
    rc = sdb_generate(m, &p, on_step, &pr, &out, &log, &err);
    int code = EXIT_OK;
    if (rc == SDB_EINTERRUPTED) {
        fprintf(stderr, "\nsdbatch generate: interrupted; nothing written\n");
        code = g_stop == SIGTERM ? EXIT_SIGTERM : EXIT_SIGINT;
    } else if (rc) {
        code = cli_error("generate", &err);
    } else {
        char *params = sdb_gen_params_a1111(m, &p, out.w, out.h);
        if (out.c == 4 && sdb_image_format_of_path(output) == SDB_FMT_JPEG)
            fprintf(stderr, "sdbatch generate: warning: the input's alpha channel is dropped (JPEG has none)\n");
        if ((rc = sdb_image_write(output, &out, params ? params : "", jpeg_quality, &err))) code = cli_error("generate", &err);
        else printf("wrote %s (%dx%d, seed %llu, %d steps, %.1f s)\n", output, out.w, out.h,
                    (unsigned long long)p.seed, p.steps, sdb_now_mono() - pr.t0);
        free(params);
    }
    sdb_image_free(&out);
    sdb_image_free(&image);
    sdb_image_free(&mask);
    sdb_model_free(m);
    sdb_a1111_free(&from_params);
    return code;
}
