#!/bin/sh
# The README's first command: installs the dependencies, builds sdbatch (Release), and runs the
# main job on the bundled demo: if no real model is present in models/sd15-inpainting, a tiny
# random-weight model is generated into models/demo-tiny, and jobs/demo.yaml inpaints the bundled
# pictures in tests/data/ with it. Random weights paint coloured noise: the demo shows the machinery
# (validation, resumable SQLite state, progress, status), not image quality.
set -eu
cd "$(dirname "$0")/.."
tools/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)"
if [ ! -f models/demo-tiny/model_index.json ]; then
  echo "demo: no weights here; generating a tiny random-weight model into models/demo-tiny"
  build/sdbatch-make-random-model models/demo-tiny --size tiny
fi
build/sdbatch validate jobs/demo.yaml
rc=0
build/sdbatch run jobs/demo.yaml || rc=$?
build/sdbatch status jobs/demo.yaml
if [ -d models/sd15-inpainting ]; then
  echo "demo: a real model is in models/sd15-inpainting: try 'build/sdbatch run jobs/restore.yaml'"
fi
echo "demo: outputs are in out/demo/ (random weights: expect coloured noise in the masked area)"
exit $rc
