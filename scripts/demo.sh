#!/usr/bin/env bash
# Run the seed's demo: sample_stream_solar -> 3 s tumbling window -> $group temperature
# statistics. Output goes to the console unless connections.toml (or
# MQLFLOW_CONNECTIONS) defines MyOutputGoesHere. Stop with Ctrl-C.
# Extra arguments are passed to demo(), e.g.  scripts/demo.sh "max_events=200"
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
scripts/bootstrap.sh
exec .venv/bin/python -m bytewax.run "flows.solar_demo:demo(${1:-})"
