"""Where a DeviceLink goes: a board on a pyserial URL, the virtual device (`sim`) or QEMU (`qemu`).

``sim``  the device harness built for this machine with its C compiler (``$CC``, else cc/gcc), run as a
         process on a pseudo-terminal; SIGUSR1 restarts it like a power cycle.
``qemu`` the same harness built with arm-none-eabi-gcc for the Arm MPS2 AN386 board (Cortex-M4) and
         run by qemu-system-arm with ``-icount shift=0`` (one instruction per virtual nanosecond, so
         SysTick counts exactly 40 instructions per tick), its UART on a pseudo-terminal.
Builds are cached under ``$TMLREPAIR_CACHE`` (default ``~/.cache/tmlrepair``), keyed by the sources,
the compiler's version and the flags, and written atomically, so concurrent runs are safe.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import DeviceError
from ..resources import c_library_dir as library_dir
from ..resources import cache_dir, host_compiler
from .link import DEFAULT_TIMEOUTS, DeviceLink, Timeouts

QEMU_INSTRUCTIONS_PER_TICK = 40  # mps2-an386: SYSCLK 25 MHz, 1 instruction = 1 ns under -icount shift=0
HOST_FLAGS = ("-std=c99", "-O2", "-Wall", "-Wextra", "-Wconversion", "-Werror")
ARM_FLAGS = ("-std=c99", "-Os", "-Wall", "-Wextra", "-Werror", "-mcpu=cortex-m4", "-mthumb", "-mfpu=fpv4-sp-d16",
             "-mfloat-abi=hard", "-ffunction-sections", "-fdata-sections")
ARM_LINK = ("--specs=nano.specs", "--specs=nosys.specs", "-nostartfiles", "-Wl,--gc-sections")


def device_sources(port: str, model_sources: tuple[Path, ...] = ()) -> list[Path]:
    """C files of the harness for ``port`` ("posix" or "mps2-an386"); without a model, the shim-only stub."""
    root = library_dir()
    lib = sorted((root / "src").glob("*.c"))
    dev = [root / "device" / "tmlr_device.c"]
    model = list(model_sources) or [root / "device" / "tmlr_no_model.c"]
    main = sorted((root / "ports" / port).glob("*.c"))
    return lib + dev + model + main


def _compiler_version(cc: str) -> str:
    try:
        return subprocess.run([cc, "--version"], capture_output=True, text=True, check=True).stdout.splitlines()[0]
    except (OSError, subprocess.CalledProcessError, IndexError) as e:
        raise DeviceError(f"cannot run the C compiler {cc!r} ({e}): install it or set CC") from None


def model_build_flags(model_sources: tuple[Path, ...]) -> list[str]:
    """Flags a generated model asks the device build for (its tensor staging size): lines marked
    ``BUILD_FLAG_MARK`` in its first lines."""
    from ..codegen.model_c import BUILD_FLAG_MARK

    flags = []
    for src in model_sources:
        for line in Path(src).read_text().splitlines()[:5]:
            if BUILD_FLAG_MARK in line:
                flags += line.split(BUILD_FLAG_MARK, 1)[1].replace("*/", "").split()
    bad = [f for f in flags if not re.fullmatch(r"-D(TMLR_DEV_MAX_TENSOR|TMLR_MODEL_MAX_COL)=\d{1,7}", f)]
    if bad:
        raise DeviceError(f"a model source asks for build flags tmlrepair does not give: {bad}; regenerate it")
    return flags


def build(port: str, *, model_sources: tuple[Path, ...] = (), extra_flags: tuple[str, ...] = ()) -> Path:
    """Compile the harness for ``port`` (cached); return the executable or ELF path."""
    root = library_dir()
    srcs = device_sources(port, model_sources)
    extra_flags = (*extra_flags, *model_build_flags(model_sources))
    includes = [f"-I{root / 'include'}", f"-I{root / 'device'}"] + sorted({f"-I{s.parent}" for s in model_sources})
    if port == "posix":
        cc = host_compiler()
        if not cc:
            raise DeviceError("no C compiler found for the virtual device: install gcc (or set CC)")
        flags, tail, name, hashed = [*HOST_FLAGS, *extra_flags], [], "tmlr_device", []
    else:
        cc = shutil.which("arm-none-eabi-gcc")
        if not cc:
            raise DeviceError("arm-none-eabi-gcc not found: apt-get install --no-install-recommends "
                              "gcc-arm-none-eabi libnewlib-arm-none-eabi")
        ld = root / "ports" / port / f"{port}.ld"
        flags, tail, name, hashed = [*ARM_FLAGS, *extra_flags], [f"-T{ld}", *ARM_LINK], "firmware.elf", [ld]
    key = hashlib.sha256()
    for part in (_compiler_version(cc), " ".join(flags + tail + includes), port):
        key.update(part.encode() + b"\0")
    for src in srcs + sorted((root / "include").glob("*.h")) + sorted((root / "device").glob("*.h")) + hashed:
        key.update(src.read_bytes())
    out_dir = cache_dir() / f"{port}-{key.hexdigest()[:16]}"
    target = out_dir / name
    if target.is_file():
        return target
    out_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=".build-")
    os.close(fd)
    cmd = [cc, *flags, *includes, *map(str, srcs), *tail, "-o", tmp]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        os.unlink(tmp)
        first = next((ln for ln in proc.stderr.splitlines() if "error" in ln), proc.stderr.strip()[:300])
        raise DeviceError(f"building the {port} device failed: {first}")
    os.chmod(tmp, 0o755)
    os.replace(tmp, target)
    return target


@dataclass
class Process:
    """A running device process (the virtual device or QEMU) and the pty its serial port is on."""

    proc: subprocess.Popen
    tty_path: str
    keep_fd: int | None = None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.keep_fd is not None:
            os.close(self.keep_fd)
            self.keep_fd = None


def start_sim(executable: Path) -> Process:
    """Run the virtual device on a fresh pseudo-terminal; returns the path pyserial opens."""
    import tty  # POSIX only: imported here so --serial COM3 works on Windows

    master, slave = os.openpty()
    tty.setraw(slave)
    proc = subprocess.Popen([str(executable)], stdin=master, stdout=master, close_fds=True)
    os.close(master)
    return Process(proc, os.ttyname(slave), keep_fd=slave)


def start_qemu(elf: Path, *, timeout: float = 10.0) -> Process:
    """Boot ``elf`` on qemu-system-arm mps2-an386 with its UART0 on a pty (deterministic -icount shift=0)."""
    qemu = shutil.which("qemu-system-arm")
    if not qemu:
        raise DeviceError("qemu-system-arm not found: apt-get install --no-install-recommends qemu-system-arm")
    cmd = [qemu, "-M", "mps2-an386", "-kernel", str(elf), "-nographic", "-monitor", "none", "-serial", "pty",
           "-icount", "shift=0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True)
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line.strip())
        m = re.search(r"char device redirected to (/dev/\S+)", line)
        if m:
            return Process(proc, m.group(1))
    proc.kill()
    raise DeviceError(f"qemu-system-arm did not open its serial port: {' | '.join(seen)[-300:] or 'no output'}")


def model_source(program, title: str, pre_shim: dict | None = None) -> Path:
    """The C of an int8 program (repair.program), written once under the cache, named by its content;
    ``pre_shim``: its integer input pre-shim, for a device that takes raw readings."""
    from ..codegen.model_c import emit_model_c

    text = emit_model_c(program, title=title, pre_shim=pre_shim)
    path = cache_dir() / "models" / f"{hashlib.sha256(text.encode()).hexdigest()[:16]}.c"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".model-")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    return path


def open_link(url: str, *, timeouts: Timeouts = DEFAULT_TIMEOUTS, retries: int = 8, trace=None,
              baudrate: int = 115200, model_c: Path | None = None,
              build_flags: tuple[str, ...] = ()) -> DeviceLink:
    """A DeviceLink to ``url``: ``sim``, ``qemu``, or any pyserial URL (/dev/ttyACM0, socket://h:p, loop://).

    ``model_c``: for sim and qemu, firmware that runs this model (``model_source``); else shim-only firmware.
    ``build_flags``: extra compiler flags for that firmware (e.g. a deliberately faulty variant,
    ``-DTMLR_FAULT_SINGLE_ROUNDING``, to test ``diagnose``).
    """
    import serial

    if url in ("sim", "qemu"):
        models = (model_c,) if model_c else ()
        proc = (start_sim(build("posix", model_sources=models, extra_flags=build_flags)) if url == "sim"
                else start_qemu(build("mps2-an386", model_sources=models, extra_flags=build_flags)))
        try:
            port = serial.Serial(proc.tty_path, baudrate, timeout=0.02)
        except (serial.SerialException, OSError) as e:
            proc.stop()
            raise DeviceError(f"cannot open the {url} device's pty {proc.tty_path}: {e}") from None
        restart = (lambda: proc.proc.send_signal(signal.SIGUSR1)) if url == "sim" else None
        return DeviceLink(port, f"the {url} device", timeouts=timeouts, retries=retries, trace=trace,
                          on_close=proc.stop, restart=restart)
    try:
        port = serial.serial_for_url(url, baudrate=baudrate, timeout=0.02)
    except (serial.SerialException, OSError, ValueError) as e:
        raise DeviceError(f"cannot open {url}: {e}: check the port name (ls /dev/ttyACM* /dev/ttyUSB*) and that "
                          f"you may use it (the dialout group)") from None
    return DeviceLink(port, url, timeouts=timeouts, retries=retries, trace=trace)
