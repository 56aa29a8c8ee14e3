#!/bin/sh
# check-single-file.sh — the full-size manual check of single-file loading: writes the LDM single
# file of a diffusers SD 1.x folder (build/sdbatch-to-single-file) into WORKDIR with only a
# tokenizer/ beside it, generates one small inpainting with each (no --config for the single file:
# its configs are inferred), and compares the pixels (the PNGs' parameters differ in Model hash).
#
#   tools/check-single-file.sh MODEL_DIR WORKDIR      e.g. a random model from
#   build/sdbatch-make-random-model /tmp/sd15 --size full
#
# Needs ~4.3 GB in WORKDIR for an F32 model and python3 (zlib) for the pixel comparison; run it
# niced on a shared machine (nice -n 10 tools/check-single-file.sh ...).
set -eu
[ $# -eq 2 ] || { echo "usage: $0 MODEL_DIR WORKDIR" >&2; exit 2; }
MODEL="$1"; WORK="$2"
B="$(cd "$(dirname "$0")/.." && pwd)/build"
D="$(cd "$(dirname "$0")/.." && pwd)/tests/data"
mkdir -p "$WORK"
[ -d "$WORK/tokenizer" ] || cp -r "$MODEL/tokenizer" "$WORK/tokenizer"
[ -f "$WORK/model.safetensors" ] || "$B/sdbatch-to-single-file" "$MODEL" "$WORK/model.safetensors"
for what in single folder; do
    if [ "$what" = single ]; then M="$WORK/model.safetensors"; else M="$MODEL"; fi
    "$B/sdbatch" generate --model "$M" --image "$D/demo.png" --mask "$D/demo-mask.png" \
        --width 128 --height 128 --prompt "a red teapot" --seed 42 --steps 3 -q --output "$WORK/$what.png"
done
python3 - "$WORK/single.png" "$WORK/folder.png" <<'PY'
import struct, sys, zlib
def pixels(path):
    b, i, idat = open(path, 'rb').read(), 8, b''
    while i < len(b):
        n = struct.unpack('>I', b[i:i + 4])[0]
        if b[i + 4:i + 8] == b'IDAT': idat += b[i + 8:i + 8 + n]
        i += 12 + n
    return zlib.decompress(idat)
same = pixels(sys.argv[1]) == pixels(sys.argv[2])
print("single file and folder give the same pixels" if same else "PIXELS DIFFER")
sys.exit(0 if same else 1)
PY
