#!/usr/bin/env bash
# One command, fresh machine: install spine_keras (Python packages only), then run the whole day on the built-in
# phantom -> cube -> check -> train (uamd, 2D) -> export (SavedModel) -> predict a held-out exam, with Dice/IoU.
# It runs the paper's preset (the paper's augmentation and uamd at a demo size); without `--preset paper` both
# commands take the default recipe instead (docs/training.md).
set -euo pipefail
cd "$(dirname "$0")/.."

python -m pip install -q --disable-pip-version-check -r requirements.txt
python -m pip install -q --disable-pip-version-check --no-deps -e .

OUT=${DEMO_OUT:-demo}
EPOCHS=${DEMO_EPOCHS:-6}
mkdir -p "$OUT"
spine-phantom --out "$OUT/data" --list data_lists/demo.txt --cases 6
spine-phantom --out "$OUT/heldout" --list "$OUT/heldout.txt" --cases 1 --seed 1
spine-make-cube data_lists/demo.txt -o "$OUT/cube.h5" --force --classes background,vertebra,disc --preset paper \
    --shape 128,128 --min-foreground 0.01 --augment 1
spine-check-cube "$OUT/cube.h5" --png "$OUT/cube.png"
rm -rf "$OUT/run"
spine-train --cube "$OUT/cube.h5" --preset paper --arch uamd --filters 8 --lr 0.003 --epochs "$EPOCHS" \
    --out "$OUT/run" --export
spine-predict "$OUT/run/export" "$OUT/heldout.txt" -o "$OUT/prediction"
echo "demo done: cube $OUT/cube.h5, montage $OUT/cube.png, run $OUT/run, prediction $OUT/prediction"
