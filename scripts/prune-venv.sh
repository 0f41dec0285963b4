#!/usr/bin/env bash
# Takes out of an installed virtual environment what the agent never loads, for both
# images (the Dockerfile's and flake.nix's), about 80 MB: pip and setuptools (nothing is
# installed at run time), ONNX Runtime's C library for other languages (its Python
# binding carries its own copy) and its model tools, and every package's own tests.
# The stack test (tests/test_stack.py) holds a spoken conversation on what is left.
#
# Usage: scripts/prune-venv.sh VENV
set -euo pipefail

venv=${1:?usage: prune-venv.sh VENV}
site=$(echo "$venv"/lib/python3*/site-packages)
[[ -d $site ]] || { echo "prune-venv.sh: no site-packages in $venv" >&2; exit 1; }

rm -rf "$venv"/bin/pip* "$site"/pip "$site"/pip-* \
    "$site"/setuptools "$site"/setuptools-* \
    "$site"/_distutils_hack "$site"/distutils-precedence.pth \
    "$site"/onnxruntime/capi/libonnxruntime.so.* \
    "$site"/onnxruntime/transformers \
    "$site"/onnxruntime/quantization \
    "$site"/onnxruntime/tools
find "$site" -depth -type d -name tests -exec rm -r {} +
