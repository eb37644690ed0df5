#!/usr/bin/env bash
# GPU check on the PyTorch backend of Keras (bench/README.md, "GPU check on PyTorch"), for a GPU
# machine with PyTorch and JAX but no TensorFlow, no keras package and no package registry:
#
#   bash bench/gpu_check_torch.sh --prepare  # here, with a registry: wheels/ to carry (36 MiB)
#   bash bench/gpu_check_torch.sh            # there, from the repo root: installs the carried
#                                            # wheels, then bench/gpu_check_torch.py (~5 min)
#   bash bench/gpu_check_torch.sh --cpu      # the same steps on the CPU, tiny, no install
#
# --prepare downloads, for Python 3.12 on manylinux x86_64, the wheels of keras, keras-tuner,
# optuna and optuna-integration and of those of their requirements that the GPU machine lacks
# (bench/README.md lists what it has), and copies a part of the photos and the MobileNetV2
# weights into wheels/data/: ../shared does not travel to that machine. wheels/ is ignored by
# git; the device tool carries it (carry: ["wheels"]). Other options go to gpu_check_torch.py.
set -euo pipefail
cd "$(dirname "$0")/.."

# What the GPU machine lacks, at the versions constraints.txt pins where it pins them.
WANTED=(keras==3.15.1 keras-tuner==1.4.8 optuna==5.0.0 optuna-integration==5.0.0)
MISSING="keras keras_tuner kt_legacy namex optree optuna optuna_integration alembic mako \
colorlog sqlalchemy"
SHARED=../shared/data
PYTHON=${PYTHON:-python3}  # on the GPU machine, the one that holds PyTorch
TRAIN_PER_CLASS=320 VALIDATION_PER_CLASS=60

prepare() {
  local scratch
  scratch=$(mktemp -d)
  rm -rf wheels && mkdir -p wheels/data
  # The whole closure, resolved as pip resolves it there; then only what is missing travels.
  "$PYTHON" -m pip download --quiet --disable-pip-version-check --only-binary=:all: \
    --python-version 3.12 --implementation cp --platform manylinux2014_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_28_x86_64 -d "$scratch" "${WANTED[@]}"
  for name in $MISSING; do
    cp "$scratch"/"$name"-[0-9]*.whl wheels/
  done
  rm -rf "$scratch"
  cp "$SHARED/keras-models/mobilenet_v2_1.0_160_stanford-dogs_no_top.weights.h5" wheels/data/
  for split in train validation; do
    keep=$TRAIN_PER_CLASS
    [ "$split" = train ] || keep=$VALIDATION_PER_CLASS
    for class in cats dogs; do
      mkdir -p "wheels/data/photos/$split/$class"
      find "$SHARED/cats_and_dogs_filtered/$split/$class" -name '*.jpg' | sort | head -n "$keep" \
        | xargs cp -t "wheels/data/photos/$split/$class"
    done
  done
  echo "wheels: $(du -ch wheels/*.whl | tail -n 1 | cut -f1); data: $(du -sh wheels/data | cut -f1)"
  echo "wheels/ in all: $(du -sh wheels | cut -f1) (the tree and carried paths: 64 MiB at most)"
}

case ${1:-} in
  --prepare) prepare ;;
  --cpu) exec "$PYTHON" bench/gpu_check_torch.py "$@" ;;
  *)
    [ -d wheels ] || { echo "no wheels/: run bash bench/gpu_check_torch.sh --prepare first" >&2; exit 2; }
    start=$(date +%s.%N)
    # --no-index: that machine reaches no registry; what it has already is kept.
    "$PYTHON" -m pip install --quiet --disable-pip-version-check --no-index --find-links wheels \
      "${WANTED[@]}"
    GPU_CHECK_INSTALL_S=$("$PYTHON" -c "import time; print(round(time.time() - $start, 1))") \
      exec "$PYTHON" bench/gpu_check_torch.py "$@"
    ;;
esac
