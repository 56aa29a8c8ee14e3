#!/usr/bin/env bash
# fetch-model.sh — downloads the real Stable Diffusion 1.5 inpainting weights (diffusers folder
# layout, fp16 variant: ~2.1 GB) from the Hugging Face hub into models/sd15-inpainting/, with curl,
# resumably, checking each file's SHA-256.
#
# runwayml/stable-diffusion-inpainting is no longer on the hub; its maintained copy is
# stable-diffusion-v1-5/stable-diffusion-inpainting (same files). The checksums below are the
# hub's Git LFS pointers ("oid sha256:...") of those files; the three tokenizer files are
# byte-identical to every SD 1.x repository's. Small JSON configs have no published checksum:
# their computed SHA-256 is printed and marked "not verified".
#
# Without network access (or for tests and benchmarks), use the random-weight model instead:
#   build/sdbatch-make-random-model models/random-sd15 --size full      (see README)
set -euo pipefail

REPO_DEFAULT="stable-diffusion-v1-5/stable-diffusion-inpainting"
REPO="${SDB_MODEL_REPO:-$REPO_DEFAULT}"
REVISION="main"
ENDPOINT="${HF_ENDPOINT:-https://huggingface.co}"
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DEST="$SCRIPT_DIR/../models/sd15-inpainting"
WITH_SAFETY=0
VERIFY=1
TOKENIZER_ONLY=0
DEST_GIVEN=0

usage() {
    cat <<EOF
usage: tools/fetch-model.sh [--dest DIR] [--repo OWNER/NAME] [--revision REV]
                            [--with-safety-checker] [--tokenizer] [--no-verify] [--help]

Downloads Stable Diffusion 1.5 inpainting (diffusers layout, fp16 weights, ~2.1 GB) from the
Hugging Face hub into DIR (default: models/sd15-inpainting beside tools/), then prints the
command to use it. Interrupted downloads resume where they stopped (curl -C -); files already
present with the right checksum are skipped.

  --dest DIR             target folder (default: models/sd15-inpainting)
  --repo OWNER/NAME      hub repository (default: $REPO_DEFAULT,
                         the maintained copy of runwayml/stable-diffusion-inpainting;
                         or set SDB_MODEL_REPO). Checksums are only known for the default.
  --revision REV         branch, tag or commit (default: main)
  --with-safety-checker  also fetch safety_checker/ and feature_extractor/ (~0.6 GB; sdbatch
                         does not use them, diffusers' from_pretrained expects them)
  --tokenizer            fetch only the CLIP tokenizer (4 small files, ~1.6 MB) into
                         DIR/tokenizer (default DIR: models/, so models/tokenizer/): what a
                         single-file checkpoint (.safetensors) needs beside it, since it holds none
  --no-verify            skip the SHA-256 checks (not recommended)
  -h, --help             this text

Environment:
  HF_TOKEN       a Hugging Face access token, sent as "Authorization: Bearer ..." (needed if the
                 repository is gated for your account; a free account token is enough)
  HF_ENDPOINT    hub address (default https://huggingface.co), e.g. a mirror
  SDB_MODEL_REPO default for --repo

Needs: bash, curl, sha256sum (coreutils). The model's licence is CreativeML OpenRAIL-M:
read it on the repository page before use.
EOF
}

die() { echo "fetch-model: error: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
    case "$1" in
        -h|--help) usage; exit 0 ;;
        --dest) [ $# -ge 2 ] || die "--dest needs a folder"; DEST="$2"; DEST_GIVEN=1; shift 2 ;;
        --dest=*) DEST="${1#*=}"; DEST_GIVEN=1; shift ;;
        --tokenizer) TOKENIZER_ONLY=1; shift ;;
        --repo) [ $# -ge 2 ] || die "--repo needs OWNER/NAME"; REPO="$2"; shift 2 ;;
        --repo=*) REPO="${1#*=}"; shift ;;
        --revision) [ $# -ge 2 ] || die "--revision needs a value"; REVISION="$2"; shift 2 ;;
        --revision=*) REVISION="${1#*=}"; shift ;;
        --with-safety-checker) WITH_SAFETY=1; shift ;;
        --no-verify) VERIFY=0; shift ;;
        *) echo "fetch-model: unknown option '$1'" >&2; usage >&2; exit 2 ;;
    esac
done

command -v curl >/dev/null 2>&1 || die "curl is not installed (Debian: apt-get install curl)"
command -v sha256sum >/dev/null 2>&1 || die "sha256sum is not installed (Debian: coreutils)"
case "$REPO" in */*) ;; *) die "--repo must look like OWNER/NAME, not '$REPO'" ;; esac

# path <TAB> expected sha256 ("-" = none published). Weights: Git LFS oids of the hub files.
FILES="model_index.json	-
scheduler/scheduler_config.json	-
unet/config.json	-
unet/diffusion_pytorch_model.fp16.safetensors	24b788b4a777748377cc20364eea4ae113c8c42f4468c16bc8c02fdae5492af9
vae/config.json	-
vae/diffusion_pytorch_model.fp16.safetensors	4fbcf0ebe55a0984f5a5e00d8c4521d52359af7229bb4d81890039d2aa16dd7c
text_encoder/config.json	-
text_encoder/model.fp16.safetensors	77795e2023adcf39bc29a884661950380bd093cf0750a966d473d1718dc9ef4e
tokenizer/merges.txt	9fd691f7c8039210e0fced15865466c65820d09b63988b0174bfe25de299051a
tokenizer/special_tokens_map.json	c4864a9376a8401918425bed71fc14fc0e81f9b59ec45c1cf96cccb2df508eac
tokenizer/tokenizer_config.json	-
tokenizer/vocab.json	e089ad92ba36837a0d31433e555c8f45fe601ab5c221d4f607ded32d9f7a4349"
if [ "$WITH_SAFETY" = 1 ]; then
    FILES="$FILES
safety_checker/config.json	-
safety_checker/model.fp16.safetensors	-
feature_extractor/preprocessor_config.json	-"
fi
if [ "$TOKENIZER_ONLY" = 1 ]; then
    # only the tokenizer files, into DEST/tokenizer (DEST default: models/)
    FILES="$(printf '%s\n' "$FILES" | grep '^tokenizer/')"
    [ "$DEST_GIVEN" = 1 ] || DEST="$SCRIPT_DIR/../models"
fi
if [ "$REPO" != "$REPO_DEFAULT" ]; then
    echo "fetch-model: note: checksums are known only for $REPO_DEFAULT; files of $REPO are not verified" >&2
fi

CURL_AUTH=()
if [ -n "${HF_TOKEN:-}" ]; then
    CURL_AUTH=(-H "Authorization: Bearer $HF_TOKEN")
fi

mkdir -p "$DEST" || die "cannot create $DEST"
echo "fetch-model: $REPO@$REVISION -> $DEST"

unverified=0
# download URL OUT [extra curl options]
download() {
    local url="$1" out="$2"
    shift 2
    curl --fail --location --show-error --progress-bar \
         --retry 5 --retry-delay 5 --connect-timeout 30 \
         ${CURL_AUTH[@]+"${CURL_AUTH[@]}"} "$@" -o "$out" "$url"
}

# fetch PATH EXPECTED_SHA256
fetch() {
    local rel="$1" want="$2" out="$DEST/$1" part url got rc
    part="$out.part"
    url="$ENDPOINT/$REPO/resolve/$REVISION/$rel"
    mkdir -p "$(dirname "$out")"
    if [ -f "$out" ]; then
        if [ "$want" = "-" ] || [ "$VERIFY" = 0 ]; then
            echo "  have  $rel"
            return 0
        fi
        got="$(sha256sum "$out" | cut -d' ' -f1)"
        if [ "$got" = "$want" ]; then
            echo "  ok    $rel (sha256 verified)"
            return 0
        fi
        echo "  bad   $rel: sha256 $got, expected $want; downloading again" >&2
        rm -f "$out" "$part"
    fi
    echo "  get   $rel"
    # Small files without a checksum are fetched whole; the weights resume a .part left by an
    # interrupted run (curl -C -). --retry covers transient network errors.
    [ "$want" != "-" ] || rm -f "$part"
    rc=0
    download "$url" "$part" -C - || rc=$?
    if [ "$rc" != 0 ] && [ -s "$part" ] && [ "$want" != "-" ] &&
       [ "$(sha256sum "$part" | cut -d' ' -f1)" = "$want" ]; then
        rc=0 # the .part was already complete (the server answers 416 to the resume request)
    fi
    if [ "$rc" = 33 ]; then
        echo "        the server cannot resume; downloading $rel from the start" >&2
        rm -f "$part"
        rc=0
        download "$url" "$part" || rc=$?
    fi
    if [ "$rc" = 22 ]; then
        if [ -z "${HF_TOKEN:-}" ]; then
            die "$url: HTTP error (no such file, or the repository needs a token: set HF_TOKEN)"
        fi
        die "$url: HTTP error (no such file, or HF_TOKEN has no access to $REPO)"
    elif [ "$rc" != 0 ]; then
        die "$url: curl failed (exit $rc); run the script again to resume"
    fi
    got="$(sha256sum "$part" | cut -d' ' -f1)"
    if [ "$want" != "-" ] && [ "$VERIFY" = 1 ]; then
        if [ "$got" != "$want" ]; then
            rm -f "$part"
            die "$rel: sha256 $got does not match the published $want (partial or corrupted download removed; run again)"
        fi
        echo "        sha256 $got verified"
    elif [ "$VERIFY" = 0 ]; then
        echo "        sha256 $got (not verified: --no-verify)"
    else
        echo "        sha256 $got (could not verify: no published checksum for this file)"
        unverified=$((unverified + 1))
    fi
    mv -f "$part" "$out"
}

while IFS='	' read -r rel sha; do
    [ -n "$rel" ] || continue
    fetch "$rel" "$sha"
done <<EOF
$FILES
EOF

echo "fetch-model: done: $DEST"
if [ "$unverified" -gt 0 ]; then
    echo "fetch-model: $unverified small file(s) had no published checksum (their sha256 is printed above)"
fi
if [ "$TOKENIZER_ONLY" = 1 ]; then
    echo "Single-file checkpoints in $DEST (or anywhere, with SDB_TOKENIZER=$DEST/tokenizer) now find it."
else
    echo "Use it with:  sdbatch generate --model $DEST --prompt '...' --image IN.png --mask MASK.png --output OUT.png"
fi
