#!/usr/bin/env python3
"""Run a command under the seccomp part of deploy/lb.service, as systemd would set it up.

usage: sandbox_exec.py ALLOWED_SYSCALLS_FILE -- COMMAND [ARG...]

Used by tests/deploy.sh where systemd is not PID 1 (so the unit cannot be started for real).
Reproduces, with libseccomp (libseccomp2, a dependency of systemd) through ctypes:
  SystemCallFilter=   allow-list from the file (one name a line), anything else fails with
                      EPERM (SystemCallErrorNumber=EPERM); native architecture only
                      (SystemCallArchitectures=native, libseccomp's default)
  MemoryDenyWriteExecute=yes   mmap with PROT_WRITE|PROT_EXEC, mprotect/pkey_mprotect adding
                      PROT_EXEC, shmat with SHM_EXEC fail with EPERM
  RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX   socket() of any other family fails with
                      EAFNOSUPPORT
  NoNewPrivileges=yes (libseccomp sets it before loading)
Mount, capability and namespace settings are not reproduced.
"""
import ctypes
import ctypes.util
import errno
import os
import socket
import sys

SCMP_ACT_ALLOW = 0x7FFF0000


def SCMP_ACT_ERRNO(e):
    return 0x00050000 | (e & 0xFFFF)


SCMP_CMP_EQ = 4
SCMP_CMP_MASKED_EQ = 7
PROT_WRITE, PROT_EXEC = 0x2, 0x4
SHM_EXEC = 0o100000


class ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]


def main():
    if len(sys.argv) < 4 or sys.argv[2] != "--":
        sys.exit(__doc__)
    names = [l.strip() for l in open(sys.argv[1]) if l.strip() and not l.startswith("#")]
    cmd = sys.argv[3:]

    lib = ctypes.CDLL(ctypes.util.find_library("seccomp") or "libseccomp.so.2", use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int,
                                           ctypes.c_uint, ctypes.POINTER(ArgCmp)]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]

    def nr(name):
        n = lib.seccomp_syscall_resolve_name(name.encode())
        return None if n < 0 else n

    def rule(ctx, action, name, *cmps):
        n = nr(name)
        if n is None:
            return
        arr = (ArgCmp * len(cmps))(*[ArgCmp(*c) for c in cmps]) if cmps else None
        r = lib.seccomp_rule_add_array(ctx, action, n, len(cmps), arr)
        if r != 0:
            sys.exit("sandbox_exec: rule %s: %s" % (name, os.strerror(-r)))

    # 1: MemoryDenyWriteExecute + RestrictAddressFamilies (default: allow)
    extra = lib.seccomp_init(SCMP_ACT_ALLOW)
    eperm = SCMP_ACT_ERRNO(errno.EPERM)
    wx = PROT_WRITE | PROT_EXEC
    rule(extra, eperm, "mmap", (2, SCMP_CMP_MASKED_EQ, wx, wx))
    rule(extra, eperm, "mprotect", (2, SCMP_CMP_MASKED_EQ, PROT_EXEC, PROT_EXEC))
    rule(extra, eperm, "pkey_mprotect", (2, SCMP_CMP_MASKED_EQ, PROT_EXEC, PROT_EXEC))
    rule(extra, eperm, "shmat", (2, SCMP_CMP_MASKED_EQ, SHM_EXEC, SHM_EXEC))
    allowed_af = {socket.AF_UNIX, socket.AF_INET, socket.AF_INET6}
    for af in range(0, 64):
        if af not in allowed_af:
            rule(extra, SCMP_ACT_ERRNO(errno.EAFNOSUPPORT), "socket", (0, SCMP_CMP_EQ, af, 0))

    # 2: the allow-list; loaded last because it does not allow seccomp() itself
    allow = lib.seccomp_init(eperm)
    unknown = [n for n in names if nr(n) is None]
    for n in names:
        rule(allow, SCMP_ACT_ALLOW, n)

    for ctx in (extra, allow):
        r = lib.seccomp_load(ctx)
        if r != 0:
            sys.exit("sandbox_exec: seccomp_load: %s" % os.strerror(-r))
    del unknown  # names of other architectures' calls: ignored, as systemd does
    os.execvp(cmd[0], cmd)


main()
