#!/usr/bin/env python3
"""Run the agent's heavy code under the seccomp policy of MemoryDenyWriteExecute=yes.

systemd implements MemoryDenyWriteExecute= (src/shared/seccomp-util.c) as a seccomp
filter that fails with EPERM: mmap() asking for PROT_WRITE|PROT_EXEC together,
mprotect()/pkey_mprotect() adding PROT_EXEC, and shmat() with SHM_EXEC. This script
installs exactly those rules with libseccomp (through ctypes: no extra package), then
exec()s a fresh Python that imports numpy and scipy, loads every shipped model (those of
models.json that are present) with every TFLite runtime installed and runs each once, and
computes HRV on a sample. A library that needs W+X memory (a JIT, an executable stack in a
.so: the loader then calls mprotect with PROT_EXEC) fails here as it would under the unit.

    .venv/bin/python systemd/test-mdwe.py          # exit 0: the unit's setting is safe

A control runs first: under the filter, an anonymous W+X mmap must be refused.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import sys

SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_ACT_ERRNO = 0x00050000
SCMP_CMP_MASKED_EQ = 7
PROT_WRITE, PROT_EXEC = 0x2, 0x4
SHM_EXEC = 0o100000


class ArgCmp(ctypes.Structure):
    _fields_ = (
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    )


def install_mdwe_filter() -> None:
    """The seccomp rules systemd installs for MemoryDenyWriteExecute=yes."""
    name = ctypes.util.find_library("seccomp")
    if not name:
        raise SystemExit("libseccomp not found (apt install libseccomp2)")
    lib = ctypes.CDLL(name, use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = (ctypes.c_uint32,)
    lib.seccomp_syscall_resolve_name.argtypes = (ctypes.c_char_p,)
    lib.seccomp_rule_add_array.argtypes = (
        ctypes.c_void_p,
        ctypes.c_uint32,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.POINTER(ArgCmp),
    )
    lib.seccomp_load.argtypes = (ctypes.c_void_p,)
    ctx = lib.seccomp_init(SCMP_ACT_ALLOW)
    deny = SCMP_ACT_ERRNO | errno.EPERM
    rules = [
        ("mmap", 2, PROT_WRITE | PROT_EXEC, PROT_WRITE | PROT_EXEC),
        ("mmap2", 2, PROT_WRITE | PROT_EXEC, PROT_WRITE | PROT_EXEC),
        ("mprotect", 2, PROT_EXEC, PROT_EXEC),
        ("pkey_mprotect", 2, PROT_EXEC, PROT_EXEC),
        ("shmat", 2, SHM_EXEC, SHM_EXEC),
    ]
    for syscall, arg, mask, value in rules:
        nr = lib.seccomp_syscall_resolve_name(syscall.encode())
        if nr < 0:  # not on this architecture (mmap2 is 32-bit only)
            continue
        cmp = (ArgCmp * 1)(ArgCmp(arg, SCMP_CMP_MASKED_EQ, mask, value))
        rc = lib.seccomp_rule_add_array(ctx, deny, nr, 1, cmp)
        if rc < 0:
            raise SystemExit(f"seccomp_rule_add({syscall}) failed: {os.strerror(-rc)}")
    rc = lib.seccomp_load(ctx)  # sets no_new_privs first, as NoNewPrivileges=yes does
    if rc < 0:
        raise SystemExit(f"seccomp_load failed: {os.strerror(-rc)}")


WORKLOAD = r"""
import mmap
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
except PermissionError:
    print("control: W+X mmap refused (the filter is active)")
else:
    raise SystemExit("control failed: W+X mmap was allowed, the filter is not active")

import numpy as np, scipy.signal
from agent.vision.interpreter import MANIFEST_NAME, available_runtimes, load_model, models_dir
from agent.vision.interpreter import read_manifest
from agent.physio.hrv import hrv_features

shipped = models_dir()
paths = [shipped / f for f in read_manifest(shipped / MANIFEST_NAME) if (shipped / f).is_file()]
for runtime in available_runtimes():
    for path in paths:
        model = load_model(path, runtime=runtime)
        x = np.zeros(model.input.shape, model.input.dtype)
        out = model.run(x)
        print(f"{runtime} {model.runtime_version}: {path.name} ran, output {out[0].shape}")
rng = np.random.default_rng(0)
rr = 800 + 40 * np.sin(np.arange(300) / 4) + rng.normal(0, 10, 300)
feats = hrv_features(rr)
print(f"HRV on a 300-beat sample: RMSSD {feats.rmssd:.1f} ms, LF/HF {feats.lf_hf:.2f}")
print("OK: no W+X memory needed")
"""


def main() -> int:
    install_mdwe_filter()
    os.execv(sys.executable, [sys.executable, "-c", WORKLOAD])


if __name__ == "__main__":
    raise SystemExit(main())
