#!/usr/bin/env bash
# Sets everything up, then runs the quickstart: a name server, a server process and a client.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
python3 examples/quickstart.py
