"""The device link end to end: the compiled harness (sim, QEMU) driven through pyserial, faults included."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
import serial

from repair.device import protocol as P
from repair.device.framing import (
    Deframer,
    FrameError,
    cobs_decode,
    cobs_encode,
    crc16,
    decode_frame,
    encode_frame,
)
from repair.device.journal import Journal
from repair.device.link import DeviceLink, Timeouts
from repair.device.stream import ShimStream
from repair.device.targets import open_link
from repair.errors import DataError, DeviceError
from repair.plan.shims import AnomalyShim

from .conftest import ROOT, task_files
from .device_helpers import FaultyPort, classifier_shim, window_shim, window_stream

FAST = Timeouts(inter_byte=0.04, reply=0.1, overall=20.0)
needs_qemu = pytest.mark.skipif(shutil.which("qemu-system-arm") is None or shutil.which("arm-none-eabi-gcc") is None,
                                reason="qemu-system-arm or arm-none-eabi-gcc not installed (apt-get install "
                                       "--no-install-recommends qemu-system-arm gcc-arm-none-eabi "
                                       "libnewlib-arm-none-eabi)")


# ---------------------------------------------------------------------------------------------- framing
def test_crc_and_cobs_known_answers():
    assert crc16(b"123456789") == 0x29B1  # CRC-16/CCITT-FALSE check value
    assert cobs_encode(b"\x00") == b"\x01\x01"
    assert cobs_encode(b"\x11\x22\x00\x33") == b"\x03\x11\x22\x02\x33"
    assert cobs_encode(bytes(range(1, 255))) == b"\xff" + bytes(range(1, 255)) + b"\x01"


@pytest.mark.parametrize("n", [0, 1, 2, 253, 254, 255, 507, 508, 509, 2052])
def test_cobs_round_trip_and_overhead(n):
    rng = np.random.default_rng(n)
    for data in (bytes(n), rng.integers(1, 256, n).astype(np.uint8).tobytes(),
                 rng.integers(0, 3, n).astype(np.uint8).tobytes()):
        enc = cobs_encode(data)
        assert b"\x00" not in enc and cobs_decode(enc) == data and len(enc) <= n + n // 254 + 1


def test_deframer_resynchronises_after_garbage():
    frame = encode_frame(0x81, 7, b"hi\x00there")
    d = Deframer()
    chunks = d.feed(b"\x13\x37garbage" + b"\x00" + frame[:5]) + d.feed(frame[5:] + frame)
    with pytest.raises(FrameError):
        decode_frame(chunks[0])
    assert [decode_frame(c).payload for c in chunks[1:]] == [b"hi\x00there"] * 2


# ---------------------------------------------------------------------------------------------- sim device
@pytest.fixture(scope="module")
def sim():
    with open_link("sim", timeouts=FAST) as link:
        yield link


def test_hello_reports_the_firmware(sim):
    h = sim.hello()
    assert (h.protocol, h.library, h.max_payload, h.counter_hz) == (1, 100, 2048, 10 ** 9)
    assert not h.has_model and h.board.startswith("posix")


def test_shims_on_the_device_equal_the_python_reference(sim):
    rng = np.random.default_rng(1)
    for k, affine, thr in ((10, True, True), (4, False, True), (37, True, False), (2, False, False)):
        shim = classifier_shim(rng, k, affine, thr)
        sim.set_params(shim, 77)
        x = rng.integers(-128, 128, (3000, k))
        x[:3] = [[127] * k, [-128] * k, [127] + [-128] * (k - 1)]
        got = ShimStream(sim, shim, 77, max_payload=2048).run(x)
        want = shim.run(x)
        assert set(got) == set(want)
        for key in want:
            np.testing.assert_array_equal(got[key], want[key], err_msg=f"{key} K={k}")
    x = window_stream(rng, 6000)
    for shim in (window_shim(16), window_shim(2, 4095, 0), AnomalyShim("threshold", 1.0, threshold_q=900)):
        got = ShimStream(sim, shim, 78, max_payload=2048).run(x)
        np.testing.assert_array_equal(got["alarm"], shim.run(x)["alarm"])


@pytest.mark.parametrize("cmd,payload,code", [
    (P.SHIM, b"\x00" * 6, P.E_NO_PARAMS),
    (P.BENCH, b"\x00" * 4, P.E_NO_PARAMS),
    (P.INFER, b"\x00" * 4, P.E_NO_MODEL),
    (0x42, b"", P.E_UNKNOWN_COMMAND),
    (P.RESET, b"\x07", P.E_BAD_LENGTH),
    (P.SET_PARAMS, b"\x01\x00\x00\x00\x09", P.E_BAD_PARAMS),  # unknown shim kind
    (P.SET_PARAMS, b"\x00\x00\x00\x00\x02\x00\x00\x00\x00", P.E_BAD_PARAMS),  # params id 0
])
def test_device_refuses_bad_requests_with_a_reason(sim, cmd, payload, code):
    sim.reset(P.RESET_PARAMS)
    with pytest.raises(DeviceError) as e:
        sim.request(cmd, payload)
    assert e.value.code == code and P.ERROR_NAMES[code] in str(e.value)


def test_out_of_range_parameters_are_refused(sim):
    shim = classifier_shim(np.random.default_rng(2), 5)
    bad = shim.__class__(5, shim.affine, (shim.softmax[0], 40, shim.softmax[2]), shim.thresholds)  # shift ≥ 31
    with pytest.raises(DeviceError) as e:
        sim.set_params(bad, 5)
    assert e.value.code == P.E_BAD_PARAMS
    with pytest.raises(DeviceError) as e:
        sim.set_params(window_shim(2000), 5)  # window > 1024
    assert e.value.code == P.E_BAD_PARAMS


def test_window_refuses_a_sample_out_of_order(sim):
    shim = window_shim(8)
    sim.set_params(shim, 9)
    sim.shim(shim, np.arange(5), 0)
    with pytest.raises(DeviceError) as e:
        sim.shim(shim, np.arange(5), 7)
    assert e.value.code == P.E_STREAM_POS and e.value.detail == 5


# ---------------------------------------------------------------------------------------------- faults
def _faulty_run(shim, x, seed, **faults):
    link = open_link("sim", timeouts=FAST, retries=30)
    restart = link.restart
    link.port = FaultyPort(link.port, seed, restart=restart, **faults)
    try:
        out = ShimStream(link, shim, 1234, max_payload=256).run(x)  # small frames: many requests, many faults
        return out, link.port.counts, link.stats
    finally:
        link.close()


@pytest.mark.parametrize("kind", ["classifier", "window"])
def test_faults_on_the_wire_and_device_restarts_change_no_result(kind):
    rng = np.random.default_rng(11)
    if kind == "classifier":
        shim = classifier_shim(rng, 10)
        x = rng.integers(-128, 128, (1200, 10))
    else:
        shim = window_shim(24)
        x = window_stream(rng, 2500)
    want = shim.run(x)
    got, counts, stats = _faulty_run(shim, x, seed=3, drop=5e-4, corrupt=5e-4, duplicate=5e-4, delay=2e-4,
                                     restart_on_writes=(4, 19, 33))
    for key in want:
        np.testing.assert_array_equal(got[key], want[key])
    assert counts["restart"] == 3 and min(counts["drop"], counts["corrupt"], counts["duplicate"]) > 0
    assert stats.retransmissions > 0


def test_an_unanswering_device_fails_clearly_within_the_overall_timeout():
    port = serial.serial_for_url("loop://", timeout=0.01)  # echoes our own requests: never a reply
    link = DeviceLink(port, "loop://", timeouts=Timeouts(inter_byte=0.05, reply=0.2, overall=0.8), retries=100)
    t0 = time.monotonic()
    with pytest.raises(DeviceError, match=r"no answer from loop:// to hello within .*check the port name, the baud"):
        link.hello()
    assert time.monotonic() - t0 < 0.8 + 0.3
    assert link.stats.stale_replies > 0  # our own echoed frames were seen and ignored


def test_cli_errors_for_missing_and_silent_ports(tmp_path):
    for url, text in (("/dev/ttyNOPE0", "cannot open /dev/ttyNOPE0"), ("loop://", "no answer from loop://")):
        r = subprocess.run([sys.executable, "-m", "repair", "hello", "--serial", url, "--timeout", "0.5"],
                           capture_output=True, text=True, cwd=ROOT)
        assert r.returncode == 2 and text in r.stderr and "Traceback" not in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1


# ---------------------------------------------------------------------------------------------- journal
class _Interrupt(Exception):
    pass


class _StopAfter:
    """A progress sink that interrupts the run after ``n`` samples (as Ctrl-C or a pulled cable would)."""

    def __init__(self, n):
        self.n, self.done = n, 0

    def start(self, total, unit):
        pass

    def advance(self, k):
        self.done += k
        if self.done >= self.n:
            raise _Interrupt

    def finish(self):
        pass


def test_an_interrupted_run_resumes_without_losing_or_repeating_a_sample(sim, tmp_path):
    rng = np.random.default_rng(4)
    shim = window_shim(32)
    x = window_stream(rng, 3000)
    path, ident = tmp_path / "j.jsonl", {"phase": "test", "n": 3000}
    with pytest.raises(_Interrupt):
        ShimStream(sim, shim, 5, max_payload=512, journal=Journal(path, ident, resume=False),
                   progress=_StopAfter(1400)).run(x)
    with open(path, "a") as f:
        f.write('{"i": 1530, "out": {"ala')  # a line torn by the interruption
    with pytest.raises(DataError, match="--resume"):
        Journal(path, ident, resume=False)
    with pytest.raises(DataError, match="another run"):
        Journal(path, {"phase": "other"}, resume=True)
    sim.reset(P.RESET_PARAMS)  # a fresh device, as after a power cycle between the two runs
    journal = Journal(path, ident, resume=True)
    assert 1400 <= journal.done < 3000
    got = ShimStream(sim, shim, 5, max_payload=512, journal=journal).run(x)
    np.testing.assert_array_equal(got["alarm"], shim.run(x)["alarm"])
    indices = [json.loads(line)["i"] for line in path.read_text().splitlines()[1:]]
    assert indices == list(range(3000))


# ---------------------------------------------------------------------------------------------- commands
def test_calibrate_on_sim_then_validate_and_resume(tmp_path):
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "repair", "calibrate", "--serial", "sim", "--shim-only", "-o", str(out)],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    report = json.loads((out / "report.json").read_text())
    m = report["metrics"]
    assert report["bit_exact"] == {"samples": 1000, "differ": 0, "first_differing": []}
    assert m["device_shims"]["accuracy"] > m["int8"]["accuracy"] + 0.02
    assert (out / "c" / "tmlr_model_params.h").is_file() and not (out / ".journal-holdout.jsonl").exists()
    r = subprocess.run([sys.executable, "-m", "repair", "validate", "--serial", "sim", "--plan", str(out / "plan.json"),
                        "--data", str(task_files("digits")["holdout"])], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0 and "bit-exact: 1000/1000" in r.stdout, r.stderr
    r = subprocess.run([sys.executable, "-m", "repair", "calibrate", "-o", str(out)], capture_output=True, text=True,
                       cwd=ROOT)
    assert r.returncode == 2 and "exists" in r.stderr


@needs_qemu
@pytest.mark.parametrize("task,extra", [("digits", ["--shim-only"]),
                                        ("ecg", ["--anomaly-boundary", "window", "--window", "16"])])
def test_calibrate_on_the_emulated_cortex_m4(tmp_path, task, extra):
    out = tmp_path / task
    r = subprocess.run([sys.executable, "-m", "repair", "calibrate", "--serial", "qemu", "--task", task, "-o", str(out),
                        *extra], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["device"]["board"] == "mps2-an386 cortex-m4"
    assert report["bit_exact"]["differ"] == 0 and report["bit_exact"]["samples"] > 500
    if task == "ecg":  # the autoencoder's score computed on the board, equal to the twin
        assert report["score_on_device"]["differ"] == 0 and report["score_on_device"]["samples"] > 500


def test_the_ecg_anomaly_path_runs_on_the_sim_device(tmp_path):
    """ECG's autoencoder on the virtual device: model, reconstruction score and threshold alarm in one INFER,
    every score and alarm equal to the twin's; the holdout false-alarm rate reported against the target."""
    out = tmp_path / "ecg"
    r = subprocess.run([sys.executable, "-m", "repair", "calibrate", "--serial", "sim", "--task", "ecg", "-o", str(out)],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    report = json.loads((out / "report.json").read_text())
    score = report["score_on_device"]
    assert score["differ"] == 0 and score["alarms_differ"] == 0 and score["samples"] == report["holdout"]["n"]
    assert report["metrics"]["target_check"]["target"] == 0.1
    plan = json.loads((out / "plan.json").read_text())
    assert plan["provenance"]["reconstruction_score"]["size"] == 128
    assert "anomaly score computed on the device" in r.stdout


@needs_qemu
def test_qemu_counts_instructions_deterministically():
    shim = classifier_shim(np.random.default_rng(0), 10)
    counts = []
    for _ in range(2):
        with open_link("qemu") as link:
            link.set_params(shim, 3)
            counts.append(link.bench(shim, np.arange(10) - 5, 200))
    assert counts[0].ticks == counts[1].ticks and counts[0].checksum == counts[1].checksum
    assert 500 < counts[0].per_call() * 40 < 50000  # instructions per call of the whole chain
