#!/usr/bin/env bash
# Every relative link in the repository's Markdown files must resolve: to a file or a
# directory of this checkout, and, for `file.md#anchor`, to a heading of that file
# (GitHub's anchor rules: lower case, punctuation dropped, spaces to hyphens). Links to
# http(s) and mailto are not fetched. Exits non-zero listing every broken link.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 - <<'EOF'
import os, re, subprocess, sys

files = subprocess.run(["git", "ls-files", "*.md"], capture_output=True, text=True, check=True).stdout.split()
files = [f for f in files if not f.startswith("fuzz/corpus/") and os.path.exists(f)]
link = re.compile(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
fence = re.compile(r"^\s*```")

def anchors(path):
    out, inside = set(), False
    seen = {}
    for line in open(path, encoding="utf-8"):
        if fence.match(line):
            inside = not inside
            continue
        if inside or not line.startswith("#"):
            continue
        text = line.lstrip("#").strip().lower()
        text = re.sub(r"[`*_]", "", text)
        slug = re.sub(r"[^\w\- ]", "", text).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out

broken = []
for f in files:
    inside = False
    for no, line in enumerate(open(f, encoding="utf-8"), 1):
        if fence.match(line):
            inside = not inside
            continue
        if inside:
            continue
        for target in link.findall(line):
            if re.match(r"^(https?:|mailto:)", target):
                continue
            path, _, anchor = target.partition("#")
            full = os.path.normpath(os.path.join(os.path.dirname(f), path)) if path else f
            if not os.path.exists(full):
                broken.append(f"{f}:{no}: {target} (no such file)")
            elif anchor and full.endswith(".md") and anchor not in anchors(full):
                broken.append(f"{f}:{no}: {target} (no such heading)")
for b in broken:
    print(b)
print(f"{len(files)} Markdown files, {len(broken)} broken relative links")
sys.exit(1 if broken else 0)
EOF
