#!/usr/bin/env bash
# Estimate the embedded n-gram LM (ARPA) with KenLM's lmplz, building lmplz first if needed.
#
# No Debian package or wheel ships lmplz, so it is compiled once from the PyPI `kenlm` source
# archive (needs cmake, a C++ compiler and the Boost, zlib, bz2 and lzma dev packages) into a
# cache folder. The LM text is the train-clean-100 transcripts plus the pre-training sentences
# written by tools/embedded/make_synthetic_corpus.py (the shipped list embedded/pretrain_sentences.tsv,
# so no audio is needed); dev and test text never enter it.
#
# Usage: tools/embedded/build_lm.sh [PRETRAIN_TEXT] [OUTPUT_ARPA]
#   PRETRAIN_TEXT  default embedded/pretrain_sentences.tsv (a header line, then
#                  voice<TAB>rate<TAB>pitch<TAB>text); a file not ending in .tsv is read as
#                  one sentence a line
#   OUTPUT_ARPA    default embedded/LibriSpeech/4-gram.arpa
# Environment: ORDER (default 4), KENLM_CACHE (default embedded/.cache/kenlm),
#              PYTHON (default python3; used for `pip download` and the load check).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
pretrain_text="${1:-$repo_root/embedded/pretrain_sentences.tsv}"
output_arpa="${2:-$repo_root/embedded/LibriSpeech/4-gram.arpa}"
order="${ORDER:-4}"
cache="${KENLM_CACHE:-$repo_root/embedded/.cache/kenlm}"
python="${PYTHON:-python3}"
kenlm_version="0.3.0"
train_dir="$repo_root/embedded/LibriSpeech/train-clean-100"
lmplz="$cache/build/bin/lmplz"

if [[ ! -x "$lmplz" ]]; then
    echo "Building lmplz from the kenlm==$kenlm_version source archive into $cache"
    mkdir -p "$cache"
    # --no-binary kenlm (not :all:) so that pip may use wheels for the build backend it runs.
    "$python" -m pip download --quiet --no-deps --no-binary kenlm \
        --dest "$cache" "kenlm==$kenlm_version"
    rm -rf "$cache/src"
    mkdir -p "$cache/src"
    tar -xzf "$cache/kenlm-$kenlm_version.tar.gz" -C "$cache/src" --strip-components=1
    if ! { cmake -S "$cache/src" -B "$cache/build" -DCMAKE_BUILD_TYPE=Release \
            && cmake --build "$cache/build" --target lmplz -j "$(nproc)"; } >"$cache/build.log" 2>&1; then
        tail -n 30 "$cache/build.log" >&2
        echo "Building lmplz failed; full log in $cache/build.log" >&2
        exit 1
    fi
fi

if [[ ! -d "$train_dir" ]]; then
    echo "Missing $train_dir: run tools/embedded/make_synthetic_corpus.py first" >&2
    exit 1
fi
if [[ ! -f "$pretrain_text" ]]; then
    echo "Missing $pretrain_text: run tools/embedded/make_synthetic_corpus.py first" >&2
    exit 1
fi

lm_text="$(mktemp)"
trap 'rm -f "$lm_text"' EXIT
# Transcript lines are "<utt-id> TEXT": drop the id. Sorted for a reproducible input order.
find "$train_dir" -name '*.trans.txt' -print0 | sort -z | xargs -0 cat | cut -d' ' -f2- >"$lm_text"
if [[ "$pretrain_text" == *.tsv ]]; then
    tail -n +2 "$pretrain_text" | cut -f4 >>"$lm_text"
else
    cat "$pretrain_text" >>"$lm_text"
fi
echo "LM text: $(wc -l <"$lm_text") sentences, $(wc -w <"$lm_text") words"

mkdir -p "$(dirname "$output_arpa")"
"$lmplz" --order "$order" --discount_fallback --memory 1G -T "${TMPDIR:-/tmp}" \
    --text "$lm_text" --arpa "$output_arpa" 2>"$cache/lmplz.log"
echo "Wrote $output_arpa ($(du -h "$output_arpa" | cut -f1))"

if "$python" -c "import kenlm" 2>/dev/null; then
    "$python" -c "import kenlm, sys; m = kenlm.Model(sys.argv[1]); print('kenlm.Model loads it: order', m.order)" "$output_arpa"
fi
