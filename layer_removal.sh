#!/usr/bin/env bash
# Layer-removal sweep: fine-tune and benchmark the encoder cut to each depth, then
# write the sweep's table and plots with `benchmark.py summarize`.
#
# Usage:
#   bash layer_removal.sh [extra overrides passed to every run]
#   bash layer_removal.sh --data_folder /path/to/LibriSpeech --number_of_epochs 10
#   LAYERS="4 2" OUTPUT_ROOT=results/demo_sweep bash layer_removal.sh --data_folder ...
#
# Environment variables (defaults):
#   LAYERS       depths to sweep                    ("24 22 20 18 16 14 12", the paper's)
#   HPARAMS      YAML file                          (the recipe's hparams/layer_removal.yaml)
#   OUTPUT_ROOT  one folder per depth is made here  (results/layer_removal_sweep)
#   PYTHON       interpreter                        (python)
#
# A depth whose benchmark.json exists is skipped; an interrupted depth resumes from its
# last checkpoint, so a sweep killed half-way is restarted with the same command.
# It runs from the folder it is called from: relative paths (OUTPUT_ROOT, HPARAMS,
# --data_folder, ...) are the caller's, as with `python layer_removal.py`.
set -euo pipefail
RECIPE="$(cd "$(dirname "$0")" && pwd)"

LAYERS="${LAYERS:-24 22 20 18 16 14 12}"
HPARAMS="${HPARAMS:-$RECIPE/hparams/layer_removal.yaml}"
OUTPUT_ROOT="${OUTPUT_ROOT:-results/layer_removal_sweep}"
PYTHON="${PYTHON:-python}"

for argument in "$@"; do
    if [ "$argument" = "--help" ] || [ "$argument" = "-h" ]; then
        sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'
        echo
        exec "$PYTHON" "$RECIPE/layer_removal.py" "$HPARAMS" --help
    fi
done

for layers in $LAYERS; do
    output_folder="$OUTPUT_ROOT/${layers}_layers"
    if [ -f "$output_folder/benchmark.json" ]; then
        echo "layer_removal.sh: $layers layers already finished ($output_folder), skipping"
        continue
    fi
    echo "layer_removal.sh: fine-tuning with the first $layers layers -> $output_folder"
    "$PYTHON" "$RECIPE/layer_removal.py" "$HPARAMS" --considered_layers "$layers" \
        --output_folder "$output_folder" "$@"
done
"$PYTHON" "$RECIPE/benchmark.py" summarize "$OUTPUT_ROOT"
