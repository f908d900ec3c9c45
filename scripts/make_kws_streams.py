"""Labelled keyword streams from real clips, for `tmlrepair fit-stream`: the device's int8 posteriors over time.

    python scripts/make_kws_streams.py -o DIR [--hours 1.0] [--noise 0.08] [--seed 0]

No labelled keyword stream ships here, so this builds two, and says so: MLPerf Tiny's 45 labelled sww
spectrograms (../shared/real/mlperf_tiny/data/sww_calibration_samples.npz, 30 frames x 40 features each) are
split per class, by clip, into a calibration and a holdout half; each stream lays its half's clips end to end in
random order (class 0 is the wake word, as we read the MLPerf reference: 0 marvin, 1 silence, 2 other; about one
utterance in eight is the wake word), each clip at a random gain (0.8-1.2) with Gaussian feature noise
(``--noise``, in the features' units; 0 for clean clips) so that the background makes mistakes to count. The
sww int8 model (str_ww_ref_model.tflite) runs as the device runs it (the integer program, bit-exact with TFLite
Micro) on every 30-frame window, one step per frame; a frame is taken as 32 ms (an assumption: it scales "per
hour"). Writes DIR/calib_stream.npz and DIR/holdout_stream.npz (scores, times_ms, events, duration_ms).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from repair.models import load_pair
from repair.program.runner import ProgramRunner

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "real" / "mlperf_tiny"
FRAME_MS = 32
KEYWORD, SILENCE = 0, 1
WINDOW = 30


def split_clips(labels: np.ndarray, rng) -> tuple[list[int], list[int]]:
    """Each class's clips halved at random: (calibration clips, holdout clips); no clip in both."""
    calib, hold = [], []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        calib += members[: len(members) // 2].tolist()
        hold += members[len(members) // 2:].tolist()
    return calib, hold


def build_stream(runner: ProgramRunner, specs, labels, clips, hours: float, noise: float, rng) -> dict:
    """Clips of ``clips`` end to end (wake word ~1 in 8), their int8 posteriors at every frame from the 30th."""
    frames = int(hours * 3.6e6 / FRAME_MS)
    kw = [i for i in clips if labels[i] == KEYWORD]
    other = [i for i in clips if labels[i] != KEYWORD]
    feats, events, t = [], [], 0
    while t < frames:
        i = int(rng.choice(kw)) if rng.random() < 1 / 8 else int(rng.choice(other))
        clip = specs[i, :, 0, :] * rng.uniform(0.8, 1.2) + rng.normal(0, noise, specs[i, :, 0, :].shape)
        feats.append(np.clip(clip, 0, None))
        events.append((t * FRAME_MS, (t + WINDOW) * FRAME_MS, int(labels[i])))
        t += WINDOW
    x = np.concatenate(feats)[:frames].astype(np.float32)
    scores = []
    for start in range(WINDOW - 1, frames, 4096):
        ends = np.arange(start, min(start + 4096, frames))
        windows = np.stack([x[e - WINDOW + 1:e + 1] for e in ends])[:, :, None, :]
        scores.append(runner.output_integers(windows))
    times = (np.arange(WINDOW - 1, frames) + 1) * FRAME_MS
    return {"scores": np.concatenate(scores).astype(np.int8), "times_ms": times.astype(np.int64),
            "events": np.array(events, np.int64), "duration_ms": float(times[-1] - times[0])}


def make_streams(out: Path, hours: float = 1.0, noise: float = 0.08, seed: int = 0) -> dict[str, Path]:
    data = np.load(REAL / "data" / "sww_calibration_samples.npz")
    specs, labels = data["specs"], data["labels"].astype(int)
    rng = np.random.default_rng(seed)
    pair = load_pair(REAL / "models" / "sww_float.onnx", REAL / "tflite" / "str_ww_ref_model.tflite")
    runner = ProgramRunner.for_pair(pair)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, clips in zip(("calib", "holdout"), split_clips(labels, rng)):
        stream = build_stream(runner, specs, labels, clips, hours, noise, rng)
        paths[name] = out / f"{name}_stream.npz"
        np.savez(paths[name], **stream)
        n_kw = int(np.sum(stream["events"][:, 2] == KEYWORD))
        print(f"{paths[name]}: {len(stream['times_ms']):,} steps, {n_kw} wake-word utterances in "
              f"{len(stream['events'])}, {stream['duration_ms'] / 3.6e6:.2f} h", flush=True)
    return paths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--out", type=Path, required=True, help="Folder for the two stream files.")
    ap.add_argument("--hours", type=float, default=1.0, help="Length of each stream.")
    ap.add_argument("--noise", type=float, default=0.08, help="Gaussian feature noise per clip (0: clean).")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    make_streams(args.out, args.hours, args.noise, args.seed)


if __name__ == "__main__":
    main()
