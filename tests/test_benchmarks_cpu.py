import json
import platform
import subprocess
import sys

import pytest

from keras_evit.benchmarks import cpu
from keras_evit.benchmarks.cpu import INT8_KERNELS, cpu_facts

X86_64_LINUX = sys.platform.startswith("linux") and platform.machine() == "x86_64"

# in a fresh process (a seccomp filter cannot be lifted): ask for AMX's tile state before and after deny_amx,
# and ask a child too, which inherits the filter. The module is loaded from its file: no TensorFlow to start
_LOAD = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("cpu", sys.argv[1])
cpu = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cpu)
"""
_DENY = _LOAD + """
import ctypes, json, subprocess
libc = ctypes.CDLL(None, use_errno=True)
def request(component):
    result = libc.syscall(158, 0x1023, component)  # arch_prctl(ARCH_REQ_XCOMP_PERM, component)
    return result, ctypes.get_errno() if result else 0
before = request(18)
cpu.deny_amx()
after = request(18)
fs = ctypes.c_ulong(0)
other = libc.syscall(158, 0x1003, ctypes.byref(fs))  # arch_prctl(ARCH_GET_FS): still allowed
child = subprocess.run([sys.executable, "-c", LOAD + "import json; print(json.dumps(cpu.cpu_facts()))", sys.argv[1]],
                       capture_output=True, text=True, check=True).stdout
print(json.dumps({"before": before, "after": after, "other": [other, fs.value != 0],
                  "facts": cpu.cpu_facts(), "child": json.loads(child)}))
"""


def test_cpu_facts_name_the_int8_kernels_the_flags_give():
    facts = cpu_facts()
    assert facts["cpus"] >= 1 and facts["cpu"] and facts["python"] == sys.version.split()[0]
    labels = [label for flag, label in INT8_KERNELS if flag in facts["flags"]] + ["scalar"]
    if facts["int8_kernels"].endswith(" (AMX denied)"):  # the CPU has AMX, Linux did not grant it
        assert labels[0] == "AMX tiles" and facts["int8_kernels"] == labels[1] + " (AMX denied)"
    else:
        assert facts["int8_kernels"] == labels[0]


@pytest.mark.skipif(not X86_64_LINUX, reason="AMX and its arch_prctl request are x86-64 Linux's")
def test_deny_amx_refuses_the_tile_state_to_the_process_and_its_children():
    out = subprocess.run([sys.executable, "-c", f"LOAD = {_LOAD!r}\n" + _DENY, cpu.__file__], capture_output=True,
                         text=True, check=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert result["before"][1] != 1  # granted (AMX) or EINVAL (no AMX here), never EPERM
    assert result["after"] == [-1, 1]  # EPERM: what XNNPACK takes as "no AMX"
    assert result["other"] == [0, True]  # the filter refuses that one request only
    if "amx_int8" in result["facts"]["flags"]:
        assert result["before"] == [0, 0]
        for facts in (result["facts"], result["child"]):
            assert facts["int8_kernels"] == "AVX-512 VNNI (AMX denied)"
