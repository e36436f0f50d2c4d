#!/usr/bin/env bash
# Fails when Rust code (tests included) names a path outside the checkout, such as
# `../shared/fixtures`: a clone with nothing beside it must build and pass its tests alone.
# A string literal that climbs with `..` is resolved against its crate's directory (where
# `CARGO_MANIFEST_DIR` points); it must stay inside the repository. See docs/architecture.md
# ("Tests and fixtures").
set -euo pipefail
cd "$(dirname "$0")/.."

python3 - <<'PY'
import os, re, sys

root = os.path.realpath(".")
literal = re.compile(r'"((?:[^"\\\n]|\\.)*)"')
problems = []

def crate_dir(path):
    d = os.path.dirname(path)
    while d.startswith(root):
        if os.path.exists(os.path.join(d, "Cargo.toml")):
            return d
        d = os.path.dirname(d)
    return root

for top, dirs, files in os.walk(root):
    dirs[:] = [d for d in dirs if d not in ("target", ".git", "node_modules")]
    for name in files:
        if not name.endswith(".rs"):
            continue
        path = os.path.join(top, name)
        base = crate_dir(path)
        with open(path, encoding="utf-8", errors="replace") as f:
            for number, line in enumerate(f, 1):
                if line.lstrip().startswith("//"):
                    continue
                for text in literal.findall(line):
                    if "../" not in text and not text.endswith(".."):
                        continue
                    resolved = os.path.normpath(os.path.join(base, text.lstrip("/")))
                    if resolved != root and not resolved.startswith(root + os.sep):
                        rel = os.path.relpath(path, root)
                        problems.append(f"{rel}:{number}: \"{text}\" leaves the checkout ({resolved})")

if problems:
    print("paths outside the repository (keep fixtures and data in the tree):", file=sys.stderr)
    for p in problems:
        print("  " + p, file=sys.stderr)
    sys.exit(1)
print("check-paths: every path named in the code stays inside the checkout")
PY
