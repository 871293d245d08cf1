#!/usr/bin/env python3
"""SASS of the GPU kernels without a GPU: what the CUDA plugin compiles, disassembled, so an instruction-bound kernel can be
changed and its instruction count compared here before device time is spent (docs/gpu-kernels.md#instruction-counts).

Assembles the translation unit as KernelSource.Assemble does (the host's defines, tuning defines, PE_CUDA, the portability
header, kernels.cu), compiles it to PTX with NVRTC (libnvrtc.so, e.g. Debian's libnvrtc11.2), assembles it with ptxas and
disassembles with nvdisasm (Debian's nvidia-cuda-toolkit; `apt-get download` + `dpkg -x` is enough, set CUDA_BIN).

  scripts/kernels/sass.py attention_split_q8_0_h128                 # SASS of one kernel and its instruction mix
  scripts/kernels/sass.py attention_split_q8_0_h128 -D KV_BYTE_PERMUTE=1 --summary
  scripts/kernels/sass.py --list                                    # the kernels and their registers

--summary prints, per kernel: registers, spills, total instructions, and the instructions of each innermost loop (a range a
backward branch closes; attend's aligned walk is the one with the 16-bit or 8-byte loads and the shuffles), with their opcode
mix: what an instruction-bound loop's time follows.
"""
import argparse, ctypes, ctypes.util, os, re, subprocess, sys, tempfile
from collections import Counter

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
KERNELS = os.path.join(ROOT, "backends", "Gpu", "Kernels")


def host_defines():
    """The host's defines (KernelSource.Defines), read from LaunchGeometry.cs so this never disagrees with the plugin."""
    src = open(os.path.join(KERNELS, "KernelSource.cs")).read()
    geo = open(os.path.join(KERNELS, "LaunchGeometry.cs")).read()
    block = src[src.index("Defines { get; } ="):]
    block = block[:block.index("];")]
    out = []
    for name, member in re.findall(r'\("([A-Z0-9_]+)", LaunchGeometry\.(\w+)\)', block):
        m = re.search(r"public const int %s = (\d+);" % member, geo)
        if not m:
            sys.exit(f"LaunchGeometry.{member} is not a literal constant; update scripts/kernels/sass.py")
        out.append((name, int(m.group(1))))
    return out


def translation_unit(tuning):
    tuning_names = {n for n, _ in tuning}
    defines = [(n, v) for n, v in host_defines() if n not in tuning_names] + tuning + [("PE_CUDA", 1), ("PE_DEVICE_WARP", 32)]
    text = "".join(f"#define {n} {v}\n" for n, v in defines)
    text += '#line 1 "gpu_portability.h"\n' + open(os.path.join(KERNELS, "gpu_portability.h")).read() + "\n"
    return text + '#line 1 "kernels.cu"\n' + open(os.path.join(KERNELS, "kernels.cu")).read()


def nvrtc_ptx(source, arch):
    name = os.environ.get("NVRTC_LIB") or ctypes.util.find_library("nvrtc") or "libnvrtc.so.11.2"
    lib = ctypes.CDLL(name)
    prog = ctypes.c_void_p()
    if lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), b"pluginengine_kernels.cu", 0, None, None):
        sys.exit("nvrtcCreateProgram failed")
    opts = [f"--gpu-architecture=compute_{arch}".encode(), b"--std=c++17"]
    rc = lib.nvrtcCompileProgram(prog, len(opts), (ctypes.c_char_p * len(opts))(*opts))
    size = ctypes.c_size_t()
    lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    lib.nvrtcGetProgramLog(prog, log)
    if rc:
        sys.exit("NVRTC: " + log.value.decode(errors="replace"))
    lib.nvrtcGetPTXSize(prog, ctypes.byref(size))
    ptx = ctypes.create_string_buffer(size.value)
    lib.nvrtcGetPTX(prog, ptx)
    return ptx.value.decode()


def tool(name):
    return os.path.join(os.environ.get("CUDA_BIN", "/opt/cudatk/usr/bin"), name)


def functions(sass):
    """{kernel name: ([instruction lines], {label: address})} from nvdisasm's output."""
    out, current, pending = {}, None, []
    for line in sass.splitlines():
        m = re.match(r"\s*\.text\.(\w+):", line)
        if m:
            current = out.setdefault(m.group(1), ([], {}))
            continue
        if current is None:
            continue
        m = re.match(r"\s*(\.L_x_\d+):", line)
        if m:
            pending.append(m.group(1))
            continue
        a = re.search(r"/\*([0-9a-f]{4,})\*/", line)
        if a:
            for label in pending:
                current[1][label] = int(a.group(1), 16)
            pending = []
            current[0].append(line)
    return out


def opcode(line):
    body = re.sub(r"/\*[0-9a-f]+\*/", "", line).strip().rstrip(";").strip()
    body = re.sub(r"^@!?U?P[T0-9]+\s+", "", body)
    return body.split()[0] if body else "?"


def loop_instructions(lines, labels):
    """The instructions inside backward branches' ranges (the loops), innermost ranges only, and each such loop as
    (start address, instruction count), largest first."""
    addr = [int(re.search(r"/\*([0-9a-f]{4,})\*/", l).group(1), 16) for l in lines]
    loops = []
    for i, l in enumerate(lines):
        m = re.search(r"\bBRA\b.*`\((\.L_x_\d+)\)", l)
        if m and m.group(1) in labels and labels[m.group(1)] <= addr[i]:
            loops.append((labels[m.group(1)], addr[i]))
    inner = [r for r in loops if not any(o != r and r[0] <= o[0] and o[1] <= r[1] for o in loops)]
    sizes = sorted(((s, sum(1 for a in addr if s <= a <= e)) for s, e in inner), key=lambda x: x[1], reverse=True)
    return [l for a, l in zip(addr, lines) if any(s <= a <= e for s, e in inner)], sizes


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("kernels", nargs="*", help="kernel names (regular expressions); none with --list")
    ap.add_argument("-D", action="append", default=[], help="tuning define NAME=INT (repeatable)")
    ap.add_argument("--arch", default="90")
    ap.add_argument("--summary", action="store_true", help="counts only, not the listing")
    ap.add_argument("--list", action="store_true")
    a = ap.parse_args()
    tuning = [(d.split("=")[0], int(d.split("=")[1])) for d in a.D]
    ptx = nvrtc_ptx(translation_unit(tuning), a.arch)
    with tempfile.TemporaryDirectory() as tmp:
        open(os.path.join(tmp, "k.ptx"), "w").write(ptx)
        res = subprocess.run([tool("ptxas"), f"-arch=sm_{a.arch}", "-v", "-o", os.path.join(tmp, "k.cubin"), os.path.join(tmp, "k.ptx")],
                             capture_output=True, text=True, check=True)
        regs, spills = {}, {}
        for name, body in re.findall(r"Compiling entry function '(\w+)'(.*?)(?=Compiling entry function|\Z)", res.stderr, re.S):
            m = re.search(r"Used (\d+) registers", body)
            regs[name] = m.group(1) if m else "?"
            m = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", body)
            spills[name] = f"{m.group(1)}/{m.group(2)}" if m else "?"
        sass = subprocess.run([tool("nvdisasm"), "-c", os.path.join(tmp, "k.cubin")], capture_output=True, text=True, check=True).stdout
    fns = functions(sass)
    if a.list:
        for n in sorted(fns):
            print(f"{n:48s} {regs.get(n, '?'):>4s} registers {len(fns[n][0]):6d} instructions {spills.get(n, '?'):>9s} spill bytes stored/loaded")
        return
    for n in sorted(fns):
        if not any(re.fullmatch(k, n) for k in a.kernels):
            continue
        lines, labels = fns[n]
        loop, loops = loop_instructions(lines, labels)
        sizes = ", ".join(f"{hex(s)}: {count}" for s, count in loops)
        print(f"== {n}: {regs.get(n, '?')} registers, {spills.get(n, '?')} spill bytes stored/loaded, {len(lines)} instructions")
        print(f"   innermost loops (start: instructions), largest first: {sizes}")
        print("   their mix: " + ", ".join(f"{op} {c}" for op, c in Counter(opcode(l) for l in loop).most_common()))
        if not a.summary:
            print("\n".join(lines))


if __name__ == "__main__":
    main()
