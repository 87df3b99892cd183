"""Which int8 kernels this CPU gives XNNPACK, and a switch to run them without Intel's AMX.

XNNPACK picks its int8 matrix kernels when it starts, by CPU: AMX tiles (Intel Xeon since Sapphire Rapids)
when Linux grants the process AMX's tile state, else AVX-512 VNNI, AVX-VNNI or AVX2 on x86, dot products on
ARM. The same int8 file therefore runs different kernels, at a different speed, on two x86 hosts, and phones
have no AMX. Benchmarks record what ran (``cpu_facts``) and can deny AMX (``deny_amx``), so one AMX host
measures both kernels.
"""

import ctypes
import os
import platform
import struct
import sys

_ARCH_REQ_XCOMP_PERM = 0x1023  # arch_prctl: ask for an extended state component (AMX's tile data is 18)
_XFEATURE_XTILEDATA = 18
_SYS_ARCH_PRCTL = 158  # x86-64
_AUDIT_ARCH_X86_64 = 0xC000003E
_PR_SET_NO_NEW_PRIVS, _PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 38, 22, 2
_EPERM = 1

# the flags that decide XNNPACK's int8 kernels, best first, as /proc/cpuinfo spells them
INT8_KERNELS = (("amx_int8", "AMX tiles"), ("avx512_vnni", "AVX-512 VNNI"), ("avx_vnni", "AVX-VNNI"),
                ("avx2", "AVX2"), ("i8mm", "ARM int8 matrix multiply"), ("asimddp", "ARM dot product"),
                ("asimd", "ARM NEON"))


def _cpuinfo():
    """(model name, set of flags) from /proc/cpuinfo's first processor; empty where there is none."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("model name", "Model", "CPU part") and name in ("", platform.machine()):
                    name = value.strip()
                elif key in ("flags", "Features"):
                    flags = set(value.split())
                    break
    except OSError:
        pass
    return name, flags


def _is_linux_x86_64():
    return sys.platform.startswith("linux") and platform.machine() in ("x86_64", "AMD64")


def amx_granted(flags=None):
    """Whether this process may use AMX tiles: the CPU has them (``flags``: /proc/cpuinfo's, read when not given)
    and Linux grants their state (as XNNPACK asks)."""
    if not (_is_linux_x86_64() and "amx_int8" in (_cpuinfo()[1] if flags is None else flags)):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.syscall(_SYS_ARCH_PRCTL, _ARCH_REQ_XCOMP_PERM, _XFEATURE_XTILEDATA) == 0


def cpu_facts():
    """This machine, for a benchmark's JSON: its CPU, cores, Python, and the int8 kernels XNNPACK will pick."""
    name, flags = _cpuinfo()
    kernels = next((label for flag, label in INT8_KERNELS if flag in flags), "scalar")
    if kernels == "AMX tiles" and not amx_granted(flags):
        kernels = next((label for flag, label in INT8_KERNELS[1:] if flag in flags), "scalar") + " (AMX denied)"
    return {"cpu": name, "cpus": os.cpu_count(), "machine": platform.machine(), "int8_kernels": kernels,
            "python": sys.version.split()[0], "flags": sorted(flag for flag, _ in INT8_KERNELS if flag in flags)}


def _instruction(code, jump_true, jump_false, k):
    return struct.pack("HBBI", code, jump_true, jump_false, k)


class _Program(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def deny_amx():
    """From now on this process and its children are refused AMX's tile state (a seccomp filter on that one
    ``arch_prctl`` request), so XNNPACK (and oneDNN) take their next-best int8 kernels. It cannot be undone;
    call it before any runtime starts. OSError where Linux refuses the filter; a no-op off x86-64 Linux."""
    if not _is_linux_x86_64():
        return
    load, jump_equal, ret = 0x20, 0x15, 0x06  # BPF_LD|BPF_W|BPF_ABS, BPF_JMP|BPF_JEQ|BPF_K, BPF_RET|BPF_K
    allow, refuse = 0x7FFF0000, 0x00050000 | _EPERM  # SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO(EPERM)
    program = b"".join([
        _instruction(load, 0, 0, 4), _instruction(jump_equal, 0, 5, _AUDIT_ARCH_X86_64),  # seccomp_data.arch
        _instruction(load, 0, 0, 0), _instruction(jump_equal, 0, 3, _SYS_ARCH_PRCTL),  # .nr
        _instruction(load, 0, 0, 16), _instruction(jump_equal, 0, 1, _ARCH_REQ_XCOMP_PERM),  # .args[0], low half
        _instruction(ret, 0, 0, refuse), _instruction(ret, 0, 0, allow)])
    buffer = ctypes.create_string_buffer(program, len(program))
    filters = _Program(len(program) // 8, ctypes.addressof(buffer))
    libc = ctypes.CDLL(None, use_errno=True)
    if (libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
            or libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(filters), 0, 0) != 0):
        error = ctypes.get_errno()
        raise OSError(error, f"cannot deny AMX to this process (seccomp: {os.strerror(error)})")
