#!/usr/bin/env python3
"""No import circles between modules (files) of a crate.

Usage: tools/module-cycles.py SRC_DIR [SRC_DIR ...]   (e.g. src crates/core/src)

Every `crate::a::b`, `super::x` and grouped `{...}` path in a file is resolved to the deepest module
(file) it names; an edge between a module and its own ancestor or descendant is not a circle (a parent
declares and re-exports its children). Exits 1 and prints the circles when two modules import each
other, directly or around a ring. Comment lines are skipped. Run by tools/import-cycles.sh (CI).
"""
import os
import re
import sys
from collections import defaultdict

IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
PATH = re.compile(rf"\b(crate|super)((?:::(?:{IDENT}|super))*)(::\{{)?")


def modules(src):
    """module path (tuple) -> file, for every .rs file under src."""
    mods = {}
    for root, _, files in os.walk(src):
        for f in files:
            if not f.endswith(".rs"):
                continue
            rel = os.path.relpath(os.path.join(root, f), src).split(os.sep)
            if rel[-1] in ("lib.rs", "main.rs"):
                parts = rel[:-1]
            elif rel[-1] == "mod.rs":
                parts = rel[:-1]
            else:
                parts = rel[:-1] + [rel[-1][:-3]]
            mods[tuple(parts)] = os.path.join(*rel)
    return mods


def group(text, start):
    """The paths inside the `{...}` group whose `{` is at text[start - 1], top level only."""
    depth, item, items = 1, "", []
    for ch in text[start:]:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                items.append(item)
                break
        if depth == 1 and ch == ",":
            items.append(item)
            item = ""
        else:
            item += ch
    out = []
    for it in items:
        m = re.match(rf"\s*((?:{IDENT})(?:::{IDENT})*)", it)
        if m:
            out.append(m.group(1).split("::"))
    return out


def resolve(mods, base, segs):
    """The deepest known module named by base + segs."""
    path = list(base)
    best = tuple(path) if tuple(path) in mods else None
    for s in segs:
        if s == "super":
            path = path[:-1]
        elif s == "self":
            continue
        else:
            path.append(s)
        if tuple(path) in mods:
            best = tuple(path)
    return best


def circles(graph):
    """The circles of a directed graph {node: {node, ...}}: its strongly connected components with
    more than one node (Tarjan), each sorted."""
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            scc = []
            while True:
                w = stack.pop()
                on.discard(w)
                scc.append(w)
                if w == v:
                    break
            if len(scc) > 1:
                out.append(sorted(scc))

    sys.setrecursionlimit(10000)
    for v in sorted(set(graph) | {w for ws in graph.values() for w in ws}):
        if v not in index:
            strong(v)
    return out


def check(src):
    mods = modules(src)
    edges = defaultdict(set)
    for mod, rel in mods.items():
        with open(os.path.join(src, rel), encoding="utf-8") as fh:
            text = "\n".join(l for l in fh.read().split("\n") if not l.lstrip().startswith("//"))
        # `super` in a mod.rs/lib.rs file is the parent of the module the file is; in a leaf file too.
        for m in PATH.finditer(text):
            head, tail, brace = m.group(1), m.group(2), m.group(3)
            segs = [s for s in tail.split("::") if s]
            base = () if head == "crate" else mod[:-1]
            prefixes = [segs + g for g in group(text, m.end())] if brace else [segs]
            for p in prefixes:
                target = resolve(mods, base, p)
                if target is None or target == mod:
                    continue
                if target[: len(mod)] == mod or mod[: len(target)] == target:
                    continue  # ancestor / descendant
                edges[mod].add(target)
    sccs = circles(edges)
    name = lambda m: "::".join(m) or "crate"
    n_edges = sum(len(v) for v in edges.values())
    if sccs:
        for scc in sccs:
            print(f"module-cycles: CIRCLE in {src}: " + " <-> ".join(name(m) for m in scc))
            for a in scc:
                for b in sorted(edges[a]):
                    if b in scc:
                        print(f"    {name(a)} -> {name(b)}")
        return False
    print(f"module-cycles: {src}: no circles among {len(mods)} modules ({n_edges} imports)")
    return True


if __name__ == "__main__":
    ok = all([check(d) for d in sys.argv[1:] or ["src"]])
    sys.exit(0 if ok else 1)
