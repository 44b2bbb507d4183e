#!/usr/bin/env bash
# Sets everything up, then runs the quickstarts: remote objects (a name server, a server process and
# a client), then the cluster (tasks, actors and shared-memory objects on a local cluster).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
python3 examples/quickstart.py
python3 examples/cluster_quickstart.py
