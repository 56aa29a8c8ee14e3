#!/usr/bin/env python3
"""make_seeds.py — writes the hand-made seed inputs of the fuzz harnesses into fuzz/corpus/NAME/
(standard library only). Fuzzing (tools/fuzz.sh) then adds the inputs that reached new coverage,
and -merge=1 keeps the corpus minimal. Seeds here: small valid files of each format, plus the
broken model files of issue 15 (truncated, wrong dtype, NaN/Inf, lying offsets, 2 GiB header)
so CI replays them. The state-database seeds are written by the store itself (test_fuzz_seeds
is not needed: see fuzz/README.md)."""
import json, os, struct, sys, zlib

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

def put(name, fname, data):
    d = os.path.join(HERE, "corpus", name)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    with open(os.path.join(d, fname), "wb") as f:
        f.write(data)

# ---- safetensors -------------------------------------------------------------------------------
def st(tensors, meta=None, header_override=None, trunc=None, pad_header=0):
    hdr, data = {}, b""
    if meta is not None:
        hdr["__metadata__"] = meta
    for name, dt, shape, raw in tensors:
        hdr[name] = {"dtype": dt, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(hdr, separators=(",", ":")).encode() + b" " * pad_header
    if header_override is not None:
        h = header_override
    out = struct.pack("<Q", len(h)) + h + data
    return out[:trunc] if trunc else out

f32 = lambda *v: struct.pack("<%df" % len(v), *v)
put("safetensors", "valid_f32_f16_bf16", st([
    ("conv.weight", "F32", [2, 1, 1, 2], f32(1, -2, 0.5, 3)),
    ("conv.bias", "F16", [2], struct.pack("<2H", 0x3c00, 0xc000)),
    ("norm.weight", "BF16", [3], struct.pack("<3H", 0x3f80, 0x4000, 0xbf80)),
], meta={"format": "pt"}))
put("safetensors", "valid_ints_f64", st([
    ("ids", "I64", [3], struct.pack("<3q", 1, -5, 49407)),
    ("mask", "BOOL", [4], b"\x00\x01\x01\x00"), ("b", "U8", [2], b"\x07\xff"),
    ("c", "I8", [2], b"\x80\x7f"), ("d", "I16", [1], struct.pack("<h", -3)),
    ("e", "I32", [1], struct.pack("<i", 70000)), ("x", "F64", [2], struct.pack("<2d", 0.25, -1e300)),
    ("empty", "F32", [0, 4], b""), ("scalar", "F32", [], f32(2.0)),
]))
# the model-file faults of issue 15
put("safetensors", "fault_truncated", st([("w", "F32", [4, 4], f32(*range(16)))], trunc=8 + 60))
put("safetensors", "fault_wrong_dtype", st([("w", "I64", [2], struct.pack("<2q", 1, 2))]))
put("safetensors", "fault_nan", st([("w", "F32", [2, 2], f32(0, float("nan"), 1, 2))]))
put("safetensors", "fault_inf_f16", st([("w", "F16", [3], struct.pack("<3H", 0, 0x7c00, 0))]))
put("safetensors", "fault_offsets_lie", st([("w", "F32", [2], f32(1, 2))],
    header_override=b'{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,4096]}}'))
put("safetensors", "fault_offsets_overlap", st([("a", "F32", [2], f32(1, 2))],
    header_override=b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}'))
put("safetensors", "fault_shape_mismatch", st([("w", "F32", [3], f32(1, 2))],
    header_override=b'{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}'))
put("safetensors", "fault_header_2gib", struct.pack("<Q", 2 << 30) + b'{"w":')
put("safetensors", "fault_header_huge_len", struct.pack("<Q", 0xffffffffffffffff) + b"{}")

# ---- config JSON -------------------------------------------------------------------------------
put("config", "unet.json", json.dumps({
    "_class_name": "UNet2DConditionModel", "in_channels": 9, "out_channels": 4,
    "block_out_channels": [32, 64], "layers_per_block": 1, "cross_attention_dim": 32,
    "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"], "attention_head_dim": 8, "sample_size": 8}))
put("config", "scheduler.json", json.dumps({
    "_class_name": "PNDMScheduler", "beta_start": 0.00085, "beta_end": 0.012,
    "beta_schedule": "scaled_linear", "num_train_timesteps": 1000, "set_alpha_to_one": False,
    "skip_prk_steps": True, "steps_offset": 1, "prediction_type": "epsilon"}))
put("config", "dpm.json", json.dumps({
    "_class_name": "DPMSolverMultistepScheduler", "algorithm_type": "dpmsolver++", "solver_order": 2,
    "use_karras_sigmas": True, "beta_schedule": "linear", "num_train_timesteps": 100}))
put("config", "vae.json", json.dumps({
    "_class_name": "AutoencoderKL", "in_channels": 3, "out_channels": 3, "latent_channels": 4,
    "block_out_channels": [32, 64], "layers_per_block": 1, "norm_num_groups": 32, "act_fn": "silu",
    "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D"],
    "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D"], "scaling_factor": 0.18215}))
put("config", "clip.json", json.dumps({
    "architectures": ["CLIPTextModel"], "hidden_size": 32, "intermediate_size": 37,
    "num_attention_heads": 4, "num_hidden_layers": 2, "max_position_embeddings": 77,
    "vocab_size": 49408, "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5}))

# ---- manifests ---------------------------------------------------------------------------------
put("manifest", "jobs.yaml", """version: 1
model: models/m
output_dir: out
defaults:
  negative_prompt: "blurry"
  steps: 4
  guidance_scale: 7.5
  scheduler: ddim
  seed: auto
jobs:
  - id: one
    image: a.png
    mask: b.png
    prompt: "a lighthouse"
    seed: 1234
    strength: 0.75
    width: 64
    height: 48
  - id: two
    prompt: 'txt2img'
    output: two/x.png
    eta: 0.0
    padding_mask_crop: 8
""")
put("manifest", "glob.yaml", """version: 1
model: m.safetensors
model_config: cfg
tokenizer: tok
output_dir: out
priority: 3
jobs:
  - glob: "*.png"
    id: "g-{stem}"
    mask: "{dir}/b.png"
    prompt: "fix {name}"
    output: "{stem}/done.png"
  - glob: "sub/*.jpg"
    prompt: p
""")
put("manifest", "anchors.yaml", """version: 1
model: m
output_dir: o
defaults: &d {prompt: x, steps: 2}
jobs:
  - &j {id: a, prompt: "y"}
  - {id: b, prompt: *j}
""")
put("manifest", "billion_laughs.yaml",
    "a: &a [x, x, x, x, x, x, x, x, x, x]\n" +
    "".join("%s: &%s [%s]\n" % (chr(98 + i), chr(98 + i), ", ".join(["*" + chr(97 + i)] * 10)) for i in range(8)) +
    "version: 1\n")
put("manifest", "errors.yaml", """version: 2
model: [1]
output_dir: 3
unknown: 1
jobs:
  - id: "bad id!"
    steps: -1
    seed: "x"
    scheduler: nope
  - id: d
  - id: d
---
second: doc
""")

# ---- tokenizer ---------------------------------------------------------------------------------
put("tokenizer", "plain", "a photo of a cat, highly detailed, 8k")
put("tokenizer", "specials", "<|startoftext|>hello <|endoftext|> world's don't I'm")
put("tokenizer", "unicode", "Ça coûte 5€ — naïve café 東京 🐱 Ａ\u0301 ﬁ ¹²³ \t\n tabs")
put("tokenizer", "invalid_utf8", b"abc\xff\xfe\xc3(\xe2\x82 \xf0\x9f\x98 \xed\xa0\x80 end\x00nul")
put("tokenizer", "long", "word " * 120)
put("tokenizer", "punct", "((masterpiece)), [best:1.2] {x|y} a-b_c 'quoted' \"dq\" ... !!! 123,456.78")

# ---- PNG / JPEG ----------------------------------------------------------------------------------
def chunk(t, d):
    return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)

def png(w, h, bd, ct, rows, extra=b"", interlace=0, plte=None, trns=None):
    out = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, bd, ct, 0, 0, interlace))
    if plte is not None:
        out += chunk(b"PLTE", plte)
    if trns is not None:
        out += chunk(b"tRNS", trns)
    out += extra
    out += chunk(b"IDAT", zlib.compress(b"".join(b"\x00" + r for r in rows)))
    return out + chunk(b"IEND", b"")

put("image", "gray1.png", png(9, 3, 1, 0, [b"\xa5\x80"] * 3))
put("image", "gray2.png", png(5, 2, 2, 0, [b"\x1b\xc0"] * 2))
put("image", "gray4.png", png(3, 2, 4, 0, [b"\x0f\x70"] * 2))
put("image", "gray16.png", png(2, 2, 16, 0, [b"\x00\x10\x01\x00"] * 2))
put("image", "rgb8.png", png(3, 2, 8, 2, [bytes(range(9))] * 2))
put("image", "rgba16.png", png(2, 1, 16, 6, [bytes(range(16))]))
put("image", "la8.png", png(2, 2, 8, 4, [b"\x10\x80\x20\xff"] * 2))
put("image", "la16.png", png(1, 2, 16, 4, [b"\x10\x00\x80\x00"] * 2))
put("image", "pal4_trns.png", png(4, 2, 4, 3, [b"\x01\x23"] * 2, plte=bytes(range(12)), trns=b"\x00\x80"))
put("image", "pal8.png", png(3, 3, 8, 3, [b"\x00\x01\x05"] * 3, plte=bytes(range(6))))
put("image", "interlaced.png", png(9, 9, 8, 0, [bytes(range(9))] * 9, interlace=1))
put("image", "huge_header.png", png(100000, 100000, 8, 0, [b"\x00"]))
# the repository's own test images (PNG and baseline JPEG)
for f in ("street-136x96-mask.png", "garden-96x128-mask.png", "garden-96x128.jpg"):
    put("image", f, open(os.path.join(REPO, "tests", "data", f), "rb").read())

# ---- PNG text chunks -----------------------------------------------------------------------------
tiny = png(1, 1, 8, 0, [b"\x00"])
def with_text(*chunks):
    return tiny[:33] + b"".join(chunks) + tiny[33:]
put("png_text", "parameters_tEXt.png", with_text(chunk(b"tEXt", b"parameters\x00a cat\nNegative prompt: dog\n"
    b"Steps: 20, Sampler: DDIM, CFG scale: 7.5, Seed: 1234, Size: 512x512, Denoising strength: 0.75")))
put("png_text", "zTXt_latin1.png", with_text(chunk(b"zTXt", b"Comment\x00\x00" + zlib.compress("caf\xe9".encode("latin-1")))))
put("png_text", "iTXt_utf8.png", with_text(
    chunk(b"iTXt", b"parameters\x00\x00\x00en\x00parameters\x00" + "東京 🐱".encode()),
    chunk(b"iTXt", b"sdbatch\x00\x01\x00\x00\x00" + zlib.compress(b'{"identity":"abc"}'))))
put("png_text", "after_idat.png", tiny[:-12] + chunk(b"tEXt", b"k\x00v") + tiny[-12:])
# A1111 `parameters` text given directly (fuzz_png_text parses an input that is not a PNG as the text)
put("png_text", "a1111_text", 'a "quoted" cat, (masterpiece:1.2)\nNegative prompt: dog\nmore negative\n'
    'Steps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 42, Size: 512x768, Model hash: abc, '
    'Lora hashes: "a: 1, b: 2", Escaped: "line\\nnext \\u00e9\\ud83d\\ude00", Bad json: "x\\q", Working size: 0x0\n')
# regressions (hangs of sdb_a1111_parse, found while adding it to the harness): a 200 kB parameters
# line without one pair (every position rescanned the whole key run: O(n^2)), and 300,000 short
# lines (each line appended after a strlen of the prompt so far: O(n^2)); zTXt keeps them ~1 KB.
# They go to fuzz/regress/ (replayed by CI, not fuzzed: mutating 100 ms inputs slows a campaign)
def put_regress(name, fname, data):
    d = os.path.join(HERE, "regress", name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, fname), "wb") as f:
        f.write(data)
put_regress("png_text", "regress-a1111-long-line-without-pairs",
    with_text(chunk(b"zTXt", b"parameters\x00\x00" + zlib.compress(b"a" * 200000, 9))))
put_regress("png_text", "regress-a1111-many-lines",
    with_text(chunk(b"zTXt", b"parameters\x00\x00" + zlib.compress(b"a\n" * 300000 + b"x", 9))))
print("seeds written under", os.path.join(HERE, "corpus"))
