#!/usr/bin/env bash
# PROGRAM on two ranks under torchrun (Python's launcher; its agent hosts the store).
#
#   tests/distributed/torchrun.sh TORCHRUN PYTHON PROGRAM [ARGS...]
#
# Spelled so that Debian 12's torchrun (1.13 on Python 3.11) runs it: underscore options, and
# --redirects/--tee of 1 (their default of 0 fails there: "'NoneType' object has no attribute
# 'get'"). Debian 13's torchrun (2.6) cannot start at all: its TCPStore asks for libuv, which
# Debian's PyTorch is built without, and no option turns that off; there the test is skipped
# (77) with the probe's message.
set -uo pipefail
torchrun=$1 python=$2
shift 2
if ! probe=$("$python" -c "import torch.distributed as d; d.TCPStore('127.0.0.1', 0, is_master=True)" 2>&1); then
  echo "torchrun: skipped: this PyTorch cannot make a TCPStore, so its torchrun cannot start: $(echo "$probe" | tail -n 1)"
  exit 77
fi
exec "$torchrun" --no_python --nproc_per_node 2 --master_port $((20000 + RANDOM % 20000)) \
  --redirects 1 --tee 1 "$@"
