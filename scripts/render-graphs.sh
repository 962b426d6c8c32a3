#!/usr/bin/env bash
# Regenerates the graph pictures in docs/: the example writes DOT sources, Graphviz renders them.
# Needs Graphviz (`apt-get install graphviz`); CI does not run this.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run --release --quiet --example profile -- --dot docs > /dev/null
for f in docs/softmax_composed docs/softmax_fused; do
    dot -Tsvg "$f.dot" -o "$f.svg"
    echo "rendered $f.svg"
done
