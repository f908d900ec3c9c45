"""Flash and static RAM of each C shim on a Cortex-M4 (arm-none-eabi-gcc -mcpu=cortex-m4 -mthumb -Os).

Each source in c_patches/src is compiled alone (-ffunction-sections -fdata-sections, as firmware
builds do) and measured with arm-none-eabi-size; `nm -u` lists what each object needs from outside
(a libgcc helper would add flash). Targets: all shims together <= 2 KB of flash and <= 128 B of static
RAM, the anomaly window's ring buffer (the caller's) aside.

    python scripts/bench_shim_size.py
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FLAGS = ["-std=c99", "-mcpu=cortex-m4", "-mthumb", "-Os", "-Wall", "-Wextra", "-Wconversion", "-Werror",
         "-ffunction-sections", "-fdata-sections", "-I", str(ROOT / "c_patches" / "include")]


def main() -> None:
    cc = shutil.which("arm-none-eabi-gcc")
    if cc is None:
        sys.exit("arm-none-eabi-gcc not found: apt-get install --no-install-recommends gcc-arm-none-eabi")
    print(subprocess.run([cc, "--version"], capture_output=True, text=True).stdout.splitlines()[0])
    print("\n| shim source | .text | .data | .bss | needs from outside |\n|---|---:|---:|---:|---|")
    total = [0, 0, 0]
    with tempfile.TemporaryDirectory() as tmp:
        for src in sorted((ROOT / "c_patches" / "src").glob("*.c")):
            obj = Path(tmp) / (src.stem + ".o")
            subprocess.run([cc, *FLAGS, "-c", str(src), "-o", str(obj)], check=True)
            size = subprocess.run(["arm-none-eabi-size", str(obj)], capture_output=True, text=True, check=True)
            text, data, bss = (int(v) for v in size.stdout.splitlines()[1].split()[:3])
            undef = subprocess.run(["arm-none-eabi-nm", "-u", str(obj)], capture_output=True, text=True).stdout.split()
            needs = ", ".join(u for u in undef if u != "U") or "–"
            total = [total[0] + text, total[1] + data, total[2] + bss]
            print(f"| {src.name} | {text} | {data} | {bss} | {needs} |")
    print(f"| **all shims** | **{total[0]}** | **{total[1]}** | **{total[2]}** | |")
    flash, ram = total[0] + total[1], total[1] + total[2]
    print(f"\nflash {flash} B (target <= 2048), static RAM {ram} B (target <= 128)")


if __name__ == "__main__":
    main()
