#!/usr/bin/env python3
"""List a root file system for comparison: path, type, mode, owner, sha256 or link target.

    rootfs-listing.py ROOT > listing          one line per path, sorted
    rootfs-listing.py --diff BEFORE AFTER     paths added, removed or changed

The API file systems and scratch areas (/proc, /sys, /dev, /run, /tmp) are left out;
nothing else is. Modification times are not compared: content, mode and owner are.
"""

from __future__ import annotations

import hashlib
import os
import stat
import sys

SKIP = {"proc", "sys", "dev", "run", "tmp"}


def entry(root: str, path: str) -> str:
    st = os.lstat(path)
    rel = "/" + os.path.relpath(path, root)
    meta = f"{stat.filemode(st.st_mode)} {st.st_uid}:{st.st_gid}"
    if stat.S_ISLNK(st.st_mode):
        return f"{rel}\t{meta}\t-> {os.readlink(path)}"
    if stat.S_ISREG(st.st_mode):
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        return f"{rel}\t{meta}\t{h.hexdigest()}"
    return f"{rel}\t{meta}"


def listing(root: str) -> list[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        if dirpath == root:
            dirnames[:] = [d for d in dirnames if d not in SKIP]
        for name in dirnames + filenames:
            out.append(entry(root, os.path.join(dirpath, name)))
    return sorted(out)


def diff(before: str, after: str) -> list[str]:
    def load(p: str) -> dict[str, str]:
        with open(p) as f:
            return {line.split("\t", 1)[0]: line.rstrip("\n") for line in f}

    a, b = load(before), load(after)
    lines = [f"+ {b[p]}" for p in sorted(b.keys() - a.keys())]
    lines += [f"- {a[p]}" for p in sorted(a.keys() - b.keys())]
    lines += [f"~ {b[p]}" for p in sorted(a.keys() & b.keys()) if a[p] != b[p]]
    return lines


if __name__ == "__main__":
    if sys.argv[1] == "--diff":
        print("\n".join(diff(sys.argv[2], sys.argv[3])))
    else:
        print("\n".join(listing(os.path.abspath(sys.argv[1]))))
