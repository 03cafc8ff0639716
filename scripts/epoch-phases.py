#!/usr/bin/env python3
"""Seconds per publish phase of each epoch, from a kt-directory log written with
RUST_LOG=info,akd=warn,akd::directory=info (kt-load run --directory-log ...).

akd logs when it has read the labels' versions, finished the VRF, finished the tree
insertion and committed; the publisher logs each epoch's total (ms=) and its audit
blob. Usage: python3 scripts/epoch-phases.py OUT/directory.log [...]
"""
import datetime
import re
import sys

MARKS = {
    "Retrieved": "versions",
    "Starting inserting": "vrf",
    "Committing transaction": "insert",
    "Transaction committed": "commit",
}


def seconds(stamp):
    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def main(paths):
    for path in paths:
        marks, published = {}, None
        with open(path, errors="replace") as log:
            for line in log:
                if " GET " in line or not line[:4].isdigit():
                    continue
                at = seconds(line.split()[0])
                for text, phase in MARKS.items():
                    if text in line:
                        marks[phase] = at
                if "published epoch" in line:
                    ms = int(re.search(r" ms=(\d+)", line).group(1))
                    epoch = re.search(r"epoch=(\d+)", line).group(1)
                    published = (epoch, at - ms / 1000, at, marks)
                    marks = {}
                elif "stored audit blob" in line and published:
                    epoch, start, end, m = published
                    blob = int(re.search(r" ms=(\d+)", line).group(1)) / 1000
                    if len(m) < len(MARKS):
                        print(f"{path}: epoch {epoch}: akd's phase lines missing (log filter?)")
                        continue
                    print(
                        f"{path}: epoch {epoch}: versions {m['versions'] - start:.1f} "
                        f"vrf {m['vrf'] - m['versions']:.1f} insert {m['insert'] - m['vrf']:.1f} "
                        f"commit {m['commit'] - m['insert']:.1f} after {end - m['commit']:.1f} "
                        f"publish {end - start:.1f} blob {blob:.1f} total {end - start + blob:.1f}"
                    )
                    published = None


if __name__ == "__main__":
    main(sys.argv[1:])
