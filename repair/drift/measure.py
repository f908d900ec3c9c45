"""measure_drift: one streaming pass of each model over a set → DriftReport.

Stages (onnxruntime's qdq_loss_debug chain, made streaming): pair tensors once
(``build_tensor_map``) → expose the paired tensors as extra outputs → run both models
batch by batch → fold each batch into per-tensor ``TensorStats`` and keep only the
(small) model outputs → compute output metrics. Memory holds one batch of
activations, never the whole set's.
"""

from __future__ import annotations

import numpy as np

from .. import metrics as M
from ..data import CalibrationSet, check_fits
from ..errors import DataError
from ..models import ModelPair, build_tensor_map
from ..models.task import anomaly_scores, detect_task
from ..program import host
from ..program.runner import COMPUTED_BY, ProgramRunner
from ..progress import Progress
from .report import SCHEMA, DriftReport
from .stats import TensorStats

TASKS = ("auto", "classifier", "reconstruction", "score", "tensor")


def measure_drift(pair: ModelPair, data: CalibrationSet, *, strategy: str = "auto", task: str = "auto",
                  batch_size: int = 256, bootstrap: int = 200, seed: int = 0, check_weights: bool = True,
                  progress: Progress | None = None, return_outputs: bool = False, int8_runtime: str = "program",
                  channel_factors: dict[str, list[float]] | None = None):
    """Measure how far ``pair.int8`` departs from ``pair.float`` on ``data``.

    Per paired tensor: SQNR, cosine, MAE, max abs error, per-channel mean error,
    saturation. Per output, by task: top-1 agreement, accuracy, NLL, ECE (15 bins,
    bootstrap 95 % interval), KL divergence (classifier); score shift and AUROC
    (reconstruction/score). ``check_weights=False`` measures a pair whose layers hold
    different weights (refused by default: see ``build_tensor_map``) and flags it.
    ``int8_runtime``: "program" (default: the int8 tensors as the device computes them, the integer program,
    bit-exact with TFLite Micro) or "onnxruntime" (its float simulation of QDQ, to compare with ORT's tools);
    QOperator models and models the program cannot express always run on onnxruntime, and the report says which.
    ``channel_factors``: int8 tensor → per-channel factors of an equalized model (a plan's ``in_model.equalized``):
    those tensors are compared with the float model in its units (``TensorStats``).

    Returns the ``DriftReport``; with ``return_outputs``, ``(report, {"float": …, "int8": …})``
    holding what the pass collected per sample — dequantized outputs (classifier, tensor) or
    anomaly scores (reconstruction, score) — so a caller needs no second pass.
    """
    if int8_runtime not in ("program", "onnxruntime"):
        raise ValueError("int8_runtime must be 'program' or 'onnxruntime'")
    task, data, batch_size = _checked_task(pair, data, task, batch_size)
    tmap = build_tensor_map(pair, {pair.float.inputs[0].name: data.x[:1]}, strategy, check_weights)
    # the int8 side as the device computes it (the integer program); onnxruntime's float simulation of QDQ
    # only where the program cannot express the model (QOperator, an op outside its set), and labelled so
    program = (None if pair.int8.index.is_qoperator or int8_runtime == "onnxruntime" else
               ProgramRunner.for_pair(pair))
    factors = channel_factors or {}
    run = _DriftPass(pair, tmap, task, program, factors)
    # a caller's batch above twice the integer program's own (about 4 MB per tensor, ``IntProgram.auto_batch``) runs
    # in the program's: every paired tensor of a batch is held from both models at once, and beyond that size they
    # leave the caches (ic_resnet8, 1,000 samples, interleaved in one run: 0.64 s in batches of 64 against 0.76 s in
    # 256; docs/drift.md); up to twice it is taken whole, as ``ProgramRunner.run`` takes it. Not for a model whose
    # batch dimension is fixed: it takes the batch it was exported with.
    step = batch_size
    if program is not None and pair.max_batch is None and batch_size > 2 * program.program.auto_batch():
        step = program.program.auto_batch()
    yf_all, yq_all, metrics = run.collect(data, step, progress or Progress(0, enabled=False),
                                          lambda yf, yq: _output_metrics(task, yf, yq, data.y, bootstrap, seed))
    output = {**run.output_row(), **metrics}
    computed_by = COMPUTED_BY if program is not None else "onnxruntime's float simulation of QDQ" + (
        " (asked for)" if int8_runtime == "onnxruntime" else " (the integer program cannot express this model)")
    report = DriftReport(
        schema=SCHEMA,
        tensors=run.tensor_rows(),
        unmatched=[{"int8_name": u.int8_name, "reason": u.reason} for u in tmap.unmatched],
        outputs=[output],
        pairing={"strategy": tmap.strategy, "quantized_total": tmap.quantized_total,
                 "paired": len(tmap.pairs), "coverage": tmap.coverage,
                 "weight_mismatches": len(tmap.weight_mismatches)},
        provenance={"models": pair.to_dict(), "data": data.summary(),
                    "settings": {"batch_size": batch_size, "bootstrap": bootstrap, "seed": seed,
                                 "strategy": strategy, "task": task, "check_weights": check_weights,
                                 "equalized_tensors": sorted(set(factors) & {p.int8_name for p in tmap.pairs})},
                    "int8_computed_by": computed_by},
    )
    return (report, {"float": yf_all, "int8": yq_all}) if return_outputs else report


def _checked_task(pair: ModelPair, data: CalibrationSet, task: str, batch_size: int):
    """(task, data checked against the pair, batch size the models take), or one clear error."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}")
    if batch_size < 1:
        raise DataError(f"batch size {batch_size} must be at least 1")
    batch_size = pair.batch(batch_size)
    task = detect_task(pair) if task == "auto" else task
    n_classes = pair.float.outputs[0].shape[0] if task == "classifier" else (2 if task != "tensor" else None)
    if task in ("reconstruction", "score") and data.y is not None and len(data.y) and data.y.max() > 1:
        raise DataError(f"{data.source}: anomaly labels must be 0 (normal) or 1 (anomaly); found {int(data.y.max())}")
    return task, check_fits(data, pair, n_classes if task == "classifier" else None), batch_size


class _DriftPass:
    """One pass of both models over the data: every paired tensor's statistics folded batch by batch, and what the
    outputs say per sample (the outputs, or anomaly scores)."""

    def __init__(self, pair: ModelPair, tmap, task: str, program, factors: dict):
        self.pair, self.tmap, self.task, self.program = pair, tmap, task, program
        self.f_out, self.q_out = [s.name for s in pair.float.outputs], [s.name for s in pair.int8.outputs]
        self.f_names = tuple(dict.fromkeys([*self.f_out, *(p.float_name for p in tmap.pairs)]))
        self.q_names = tuple(dict.fromkeys([*self.q_out, *(p.int8_name for p in tmap.pairs)]))
        self.stats = [TensorStats(p.quant, p.channel_axis, factors.get(p.int8_name)) for p in tmap.pairs]
        self.out_stats = TensorStats(None, None)

    def collect(self, data: CalibrationSet, batch_size: int, bar: Progress, then):
        """One pass over ``data``: every paired tensor folded into its statistics in a worker thread, the outputs
        (or anomaly scores) kept per sample; returns ``(outputs_float, outputs_int8, then(those two))``, ``then``
        run here while the worker folds the last batches."""
        from collections import deque
        from concurrent.futures import ThreadPoolExecutor

        pair, in_name = self.pair, self.pair.float.inputs[0].name
        # The float model runs optimised (fusions move values by ~1e-7 relative). The int8 model
        # does not: ORT's QDQ fusions change int8 results by up to 3 LSB (ic_resnet8) depending
        # on which tensors are exposed, and a measurement must not depend on what it looks at. The float session
        # takes half the cores: the program's products take the others, and more threads than cores only queue
        # (digits, 5,000 samples, 2 cores, in one process: 0.229 → 0.210 s against onnxruntime's one per core).
        f_sess = pair.float.session(self.f_names, optimize=True, threads=max(1, _cores() // 2))
        q_sess = pair.int8.session(self.q_names) if self.program is None else None
        f_pos = {n: i for i, n in enumerate(self.f_names)}
        q_pos = {n: i for i, n in enumerate(self.q_names)}
        keep_full = self.task in ("classifier", "tensor")
        outs_f, outs_q = [], []

        def fold(n, fr, qr):
            for st, p in zip(self.stats, self.tmap.pairs):
                st.update(fr[f_pos[p.float_name]], qr[q_pos[p.int8_name]])
            bar.advance(n)

        def paired(xb, f_out):
            qr = self._int8_side(xb, q_sess)
            fr = f_out.result()
            yf = np.asarray(fr[f_pos[self.f_out[0]]], np.float32)
            yq = pair.int8_output_to_float(0, qr[q_pos[self.q_out[0]]])
            self.out_stats.update_values(yf, yq)
            outs_f.append(yf if keep_full else anomaly_scores(self.task, xb, yf))
            outs_q.append(yq if keep_full else anomaly_scores(self.task, xb, yq))
            return len(xb), fr, qr

        # The float model runs in a second thread while the int8 side runs here (both release the GIL), one batch
        # ahead: each side keeps working while the other finishes a batch, instead of the two meeting at every
        # batch (digits, 5,000 samples, in one process: 0.230 → 0.218 s; docs/drift.md). Once the float side is
        # done, its thread hashes the set for the report while the last batches run.
        pool = ThreadPoolExecutor(1, thread_name_prefix="tmlrepair-float")

        def infer():
            pending: deque = deque()
            for _, xb in data.batches(batch_size):
                pending.append((xb, pool.submit(f_sess.run, list(self.f_names), {in_name: xb})))
                if len(pending) == 2:
                    yield paired(*pending.popleft())
            pool.submit(getattr, data, "sha256")
            while pending:
                yield paired(*pending.popleft())

        def outputs():
            yf, yq = np.concatenate(outs_f), np.concatenate(outs_q)
            return yf, yq, then(yf, yq)

        bar.start(len(data), "samples")
        try:
            result = _overlapped(infer(), fold, outputs)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        bar.finish()
        return result

    def _int8_side(self, xb: np.ndarray, q_sess) -> list[np.ndarray]:
        """The paired int8 tensors of one batch: by the integer program, else by onnxruntime's session ``q_sess``."""
        if self.program is not None:
            return self.program.run(xb, list(self.q_names), codes=True)
        return q_sess.run(list(self.q_names), self.pair.int8_feed({self.pair.float.inputs[0].name: xb}))

    def tensor_rows(self) -> list[dict]:
        return [{"order": order, "float_name": p.float_name, "int8_name": p.int8_name, "op": p.op, "node": p.node,
                 "shape": list(p.shape), "paired_by": p.how, "weight_cosine": p.weight_cosine,
                 "weight_sign_agreement": p.weight_signs, "scale": p.quant.scale, "zero_point": p.quant.zero_point,
                 "dtype": p.quant.dtype, **st.to_dict()}
                for order, (p, st) in enumerate(zip(self.tmap.pairs, self.stats))]

    def output_row(self) -> dict:
        return {"float_name": self.f_out[0], "int8_name": self.q_out[0], "task": self.task,
                "sqnr_db": self.out_stats.sqnr_db, "cosine": self.out_stats.cosine,
                "max_abs_err": self.out_stats.max_abs}


def _cores() -> int:
    """The cores this process may run on (a container's or ``taskset``'s share, not the machine's)."""
    import os

    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _overlapped(items, consume, then, depth: int = 2):
    """Run ``consume(*item)`` in a worker thread while the next items are produced; once they are all produced,
    ``then()`` here while the worker finishes; returns what ``then`` returned.

    onnxruntime and numpy both release the GIL, so statistics of batch i are computed
    while batch i+1 runs through the models; at most ``depth`` batches wait in memory.
    """
    import queue
    import threading

    q: queue.Queue = queue.Queue(maxsize=depth)
    failure: list[BaseException] = []

    def worker():
        while (item := q.get()) is not None:
            if not failure:
                try:
                    consume(*item)
                except BaseException as exc:  # re-raised in the caller's thread below
                    failure.append(exc)

    t = threading.Thread(target=worker, name="tmlrepair-stats", daemon=True)
    t.start()
    stopped = False
    try:
        for item in items:
            if failure:
                break
            q.put(item)
        q.put(None)
        stopped = True
        result = None if failure else then()
    finally:
        if not stopped:
            q.put(None)
        t.join()
    if failure:
        raise failure[0]
    return result


def _output_metrics(task: str, yf: np.ndarray, yq: np.ndarray, y: np.ndarray | None,
                    bootstrap: int, seed: int) -> dict:
    out: dict = {"n": int(len(yf))}
    if task == "classifier":
        pf, pq = M.as_probabilities(yf), M.as_probabilities(yq)
        top_f, top_q = pf.argmax(1), pq.argmax(1)
        out["top1_agreement"] = float((top_f == top_q).mean())
        out["kl_divergence"] = M.kl_divergence(pf, pq)
        if y is not None:
            k = pf.shape[1]
            out["accuracy_float"] = float((top_f == y).mean())
            out["accuracy_int8"] = float((top_q == y).mean())
            out["nll_float"] = M.nll(pf, y)
            out["nll_int8"] = M.nll(pq, y)
            eces = M.ece_bootstraps([pf, pq], y, n_boot=bootstrap, seed=seed,  # both over the same resamples
                                     bin_sums=host.resample_bin_sums)
            for name, p, (e, lo, hi) in zip(("float", "int8"), (pf, pq), eces):
                out[f"ece_{name}"] = e
                out[f"ece_{name}_ci95"] = [lo, hi]
                out[f"reliability_{name}"] = M.reliability(p, y)
            out["confusion_float"] = M.confusion(y, top_f, k)
            out["confusion_int8"] = M.confusion(y, top_q, k)
    elif task in ("reconstruction", "score"):
        ref = yf if y is None else yf[y == 0]
        refq = yq if y is None else yq[y == 0]
        out["score_mean_float"] = float(ref.mean()) if len(ref) else None
        out["score_mean_int8"] = float(refq.mean()) if len(refq) else None
        if len(ref) and ref.mean() != 0:
            out["score_shift_rel"] = float(refq.mean() / ref.mean() - 1.0)
        out["score_shift_basis"] = "normal samples (y = 0)" if y is not None else "all samples"
        out["score_sqnr_db"] = M.sqnr_db(float(np.dot(yf, yf)), float(np.dot(yf - yq, yf - yq)))
        if y is not None and 0 < y.sum() < len(y):
            out["auroc_float"] = M.auroc(yf, y)
            out["auroc_int8"] = M.auroc(yq, y)
    return out
