#!/usr/bin/env bash
# Attack throughput on one GPU (fp32 and fp16) against the bare U-Net floor, with the paper's
# 35.7M-parameter CIFAR-10 DDPM U-Net (random weights). Finishes within 8 minutes: the python
# script skips what would start after its --budget (420 s) and `timeout` stops it at 470 s.
#
#   benchmarks/gpu_check.sh [--tiny] [more options of benchmarks/gpu_check.py]
#
# Writes benchmarks/gpu_check.json (or --json PATH); --tiny checks the script on the CPU in seconds.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${PYTHON:-$here/../.venv/bin/python}"
[ -x "$python" ] || python=python3
"$python" -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")' >&2
exec timeout 470 "$python" "$here/gpu_check.py" "$@"
