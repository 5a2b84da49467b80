#!/usr/bin/env bash
# Checks that the shell's top-level modules (src/*) import each other without cycles, and that the
# layering holds:
#   store, config  import none of runtime, io, ops, sim
#   io             imports none of runtime, ops, sim
#   ops            imports none of runtime, sim (the messages it exchanges are in `bus`)
#   bus            imports none of io, ops, runtime, store, sim (plain messages)
# An edge is a `crate::X` path (also inside `crate::{X, Y}` groups) in a file of another top-level
# module; comment lines are ignored, and so are the core's re-exported modules (`crate::lorawan`, ...:
# the core imports nothing from the shell). Prints the edges; exits 1 on a cycle or a broken rule.
# Usage: tools/import-cycles.sh [SRC_DIR]   (default: src of this repository)
set -euo pipefail
src="${1:-$(dirname "$0")/../src}"
exec python3 - "$src" "$(cd "$(dirname "$0")" && pwd)" <<'EOF'
import importlib.util, os, re, sys
from collections import defaultdict

src = os.path.normpath(sys.argv[1])
TOOLS = sys.argv[2]
CORE = {"aggregate", "commands", "control", "decode", "device_frames", "district", "events", "ingest",
        "keys", "loops", "lorawan", "meter", "netserver", "reading", "test_support", "topic"}
FORBIDDEN = {
    "store": {"runtime", "io", "ops", "sim"},
    "config": {"runtime", "io", "ops", "sim"},
    "io": {"runtime", "ops", "sim"},
    "ops": {"runtime", "sim"},
    "bus": {"io", "ops", "runtime", "store", "sim"},
}
IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

# The path and circle helpers of tools/module-cycles.py.
spec = importlib.util.spec_from_file_location("module_cycles", os.path.join(TOOLS, "module-cycles.py"))
module_cycles = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module_cycles)

edges = defaultdict(set)  # (from, to) -> {"file: path"}
for root, _, files in os.walk(src):
    for f in sorted(files):
        if not f.endswith(".rs"):
            continue
        path = os.path.join(root, f)
        rel = os.path.relpath(path, src)
        if rel in ("lib.rs", "main.rs"):
            continue
        area = rel.split(os.sep)[0].removesuffix(".rs")
        with open(path, encoding="utf-8") as fh:
            text = "\n".join(l for l in fh.read().split("\n") if not l.lstrip().startswith("//"))
        for m in re.finditer(r"\bcrate::", text):
            rest = m.end()
            if text.startswith("{", rest):
                targets = [p[0] for p in module_cycles.group(text, rest + 1)]
            else:
                t = IDENT.match(text, rest)
                targets = [t.group(0)] if t else []
            for t in targets:
                if t == area or t in CORE or t == "self":
                    continue
                edges[(area, t)].add(rel)

print("edges between the shell's top-level modules (module -> imported module: files):")
for (a, b) in sorted(edges):
    print(f"  {a} -> {b}: {', '.join(sorted(edges[(a, b)]))}")

# Cycles: the circles finder of tools/module-cycles.py.
graph = defaultdict(set)
for (a, b) in edges:
    graph[a].add(b)
nodes = sorted(set(graph) | {b for bs in graph.values() for b in bs})
sccs = module_cycles.circles(graph)

failed = False
for scc in sccs:
    if len(scc) > 1:
        failed = True
        inner = [f"{a} -> {b}" for (a, b) in sorted(edges) if a in scc and b in scc]
        print(f"CYCLE between {', '.join(scc)}: {'; '.join(inner)}")
for (a, b) in sorted(edges):
    if b in FORBIDDEN.get(a, ()):
        failed = True
        print(f"LAYERING: {a} must not import {b} ({', '.join(sorted(edges[(a, b)]))})")
if failed:
    sys.exit(1)
print(f"no cycles among {len(nodes)} modules; layering holds")
EOF
