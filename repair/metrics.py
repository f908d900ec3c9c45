"""Metric functions: pure, numpy in, float out, float64 inside whatever the input dtype.

Calibration metrics follow Guo et al. 2017, "On Calibration of Modern Neural Networks"
(ICML): ECE over M = 15 equal-width confidence bins I_m = ((m−1)/M, m/M],
ECE = Σ_m |B_m|/n · |acc(B_m) − conf(B_m)|.
"""

from __future__ import annotations

import math

import numpy as np

ECE_BINS = 15
_EPS = 1e-12


def sqnr_db(signal_energy: float, noise_energy: float) -> float:
    """Signal-to-quantization-noise ratio, 10·log10(Σf² / Σ(f − q)²), in dB.

    Both energies are floored at float64 machine epsilon squared-norm, as
    ``onnxruntime.quantization.qdq_loss_debug.compute_signal_to_quantization_noice_ratio``
    floors its norms, so an exact match gives a large finite number, not inf.
    """
    eps = np.finfo(float).eps
    return 20.0 * math.log10(max(math.sqrt(signal_energy), eps) / max(math.sqrt(noise_energy), eps))


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def as_probabilities(out: np.ndarray) -> np.ndarray:
    """Rows that already are distributions (a model ending in Softmax) are kept; logits are softmaxed."""
    out = np.asarray(out, np.float64)
    if out.min() >= 0 and np.allclose(out.sum(axis=1), 1.0, atol=0.02):
        p = np.clip(out, 0.0, None)
        return p / p.sum(axis=1, keepdims=True)
    return softmax(out)


INT8_PROBABILITY_FLOOR = 1 / 512  # an int8 probability of 0 (q = -128) counts as half its step in NLL


def int8_probabilities(q) -> np.ndarray:
    """An int8 softmax's outputs (scale 1/256, zero point −128) as probabilities (q + 128) / 256."""
    return (np.asarray(q, np.float64) + 128.0) / 256.0


def nll(probs: np.ndarray, y: np.ndarray) -> float:
    """Mean negative log-likelihood −(1/n) Σ log p(y_i), probabilities floored at 1e-12."""
    p = np.asarray(probs, np.float64)[np.arange(len(y)), y]
    return float(-np.log(np.maximum(p, _EPS)).mean()) + 0.0  # + 0.0: no "-0" when every p = 1


def _ece_from(conf: np.ndarray, correct: np.ndarray, bins: np.ndarray, n_bins: int) -> float:
    acc = np.bincount(bins, weights=correct, minlength=n_bins)
    cs = np.bincount(bins, weights=conf, minlength=n_bins)
    return float(np.abs(acc - cs).sum() / len(conf))


def confidence_bins(conf: np.ndarray, n_bins: int = ECE_BINS) -> np.ndarray:
    """Bin index of each confidence for bins ((m−1)/M, m/M]; a confidence of 0 goes to the first bin."""
    return np.clip(np.ceil(np.asarray(conf, np.float64) * n_bins).astype(np.int64) - 1, 0, n_bins - 1)


def ece(probs: np.ndarray, y: np.ndarray, n_bins: int = ECE_BINS) -> float:
    """Expected calibration error of the top-1 confidence (Guo et al. 2017, eq. 3)."""
    p = np.asarray(probs, np.float64)
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    return _ece_from(conf, correct, confidence_bins(conf, n_bins), n_bins)


def ece_bootstrap(probs: np.ndarray, y: np.ndarray, n_boot: int = 200, seed: int = 0,
                  n_bins: int = ECE_BINS, level: float = 0.95) -> tuple[float, float, float]:
    """ECE with a percentile bootstrap interval: (ece, low, high).

    On small sets ECE is noisy (Guo et al.: on 450 samples the 95 % intervals before and
    after calibration overlap), so a point value alone misleads. ``ece_bootstraps`` of one model.
    """
    return ece_bootstraps([probs], y, n_boot, seed, n_bins, level)[0]


def ece_bootstraps(probs_list, y: np.ndarray, n_boot: int = 200, seed: int = 0, n_bins: int = ECE_BINS,
                   level: float = 0.95, bin_sums=None) -> list[tuple[float, float, float]]:
    """``ece_bootstrap`` of several models' probabilities on the same labels, over the same resamples.

    A resample's ECE is Σ_m |S_m| / n with S_m = Σ_{i∈B_m} (correct_i − conf_i) over the samples it draws into bin
    m (Guo et al. 2017, eq. 3: |B_m|·|acc − conf| = |Σ_{i∈B_m} (correct_i − conf_i)|). The draws are made once, in
    chunks of ~2·10^6 indices, for every model; ``bin_sums`` turns a chunk into the sums S — ``resample_bin_sums``
    here by default, or the host build's C (``repair.program.host.resample_bin_sums``: two models, 5,000 samples,
    200 resamples, 13.6 → 8.8 ms with the draws; docs/drift.md), which takes the same draws. The resamples are the ones ``seed`` always gave: for each
    model alone, ``ece_bootstrap``'s.
    """
    n = len(y)
    points, bins_all, gaps_all = [], [], []
    for probs in probs_list:
        p = np.asarray(probs, np.float64)
        conf = p.max(axis=1)
        gap = (p.argmax(axis=1) == y) - conf
        bins = confidence_bins(conf, n_bins)
        points.append(float(np.abs(np.bincount(bins, weights=gap, minlength=n_bins)).sum() / n))
        bins_all.append(bins.astype(np.int32))
        gaps_all.append(gap)
    bins, gaps = np.array(bins_all), np.array(gaps_all)
    bin_sums = bin_sums or resample_bin_sums
    rng = np.random.default_rng(seed)
    boots = np.empty((len(gaps), n_boot))
    chunk = max(1, 2_000_000 // max(n, 1))
    for b0 in range(0, n_boot, chunk):
        b1 = min(n_boot, b0 + chunk)
        draws = rng.integers(0, n, size=(b1 - b0, n), dtype=np.int32)
        boots[:, b0:b1] = np.abs(bin_sums(draws, bins, gaps, n_bins)).sum(axis=2) / n
    a = (1.0 - level) / 2.0
    return [(point, *(float(v) for v in np.quantile(b, [a, 1.0 - a]))) for point, b in zip(points, boots)]


def resample_bin_sums(draws: np.ndarray, bins: np.ndarray, gaps: np.ndarray, n_bins: int) -> np.ndarray:
    """S[k, b, m] = Σ_j gaps[k, i_j]·[bins[k, i_j] = m] over the indices i_j that resample b draws (``draws``
    [B, n] int32; ``bins`` [K, n] int32, ``gaps`` [K, n] float64): per model k, resample b and bin m, float64
    [K, B, n_bins].

    With C_b,i the times resample b draws sample i, S[k, b, m] = Σ_{i∈B_m} C_b,i·gaps[k, i]: the counts C are made
    once for every model and each bin costs one matrix-vector product, by numpy's own einsum loop — BLAS (OpenBLAS),
    for the dense product and for the matrix-vector ones alike, ran on two threads that kept spinning after it and
    slowed the next onnxruntime pass by a quarter (measured on 5,000 samples)."""
    nb, n = draws.shape
    flat = (np.arange(nb, dtype=np.int64)[:, None] * n + draws).ravel()
    counts = np.bincount(flat, minlength=nb * n).reshape(nb, n).astype(np.float64)
    sums = np.zeros((len(gaps), nb, n_bins))
    for k, (bin_k, gap_k) in enumerate(zip(bins, gaps)):
        for m in range(n_bins):
            members = np.flatnonzero(bin_k == m)
            if members.size:
                sums[k, :, m] = np.einsum("bi,i->b", counts[:, members], gap_k[members])  # not BLAS
    return sums


def reliability(probs: np.ndarray, y: np.ndarray, n_bins: int = ECE_BINS) -> dict:
    """Per-bin count, accuracy and mean confidence, for reliability diagrams."""
    p = np.asarray(probs, np.float64)
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    bins = confidence_bins(conf, n_bins)
    count = np.bincount(bins, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.bincount(bins, weights=correct, minlength=n_bins) / count
        cs = np.bincount(bins, weights=conf, minlength=n_bins) / count
    return {"count": count.tolist(), "accuracy": np.nan_to_num(acc).tolist(), "confidence": np.nan_to_num(cs).tolist()}


def kl_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """Mean over samples of KL(p ‖ q) = Σ_k p_k log(p_k / q_k), q floored at 1e-12."""
    p = np.asarray(p, np.float64)
    q = np.maximum(np.asarray(q, np.float64), _EPS)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * (np.log(np.maximum(p, _EPS)) - np.log(q)), 0.0)
    return float(terms.sum(axis=1).mean())


def auroc(scores: np.ndarray, y: np.ndarray) -> float:
    """Area under the ROC curve, by the Mann–Whitney U statistic with average ranks for ties."""
    from scipy.stats import rankdata

    s = np.asarray(scores, np.float64)
    y = np.asarray(y).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> list[list[int]]:
    m = np.bincount(np.asarray(y_true) * n_classes + np.asarray(y_pred), minlength=n_classes * n_classes)
    return m.reshape(n_classes, n_classes).tolist()


# --------------------------------------------------------------------------- decisions

def alarm_rates(alarm: np.ndarray, y: np.ndarray | None) -> dict:
    """False-alarm rate (alarms among normal, y = 0) and detection rate (alarms among anomalies, y = 1)."""
    alarm = np.asarray(alarm).astype(bool)
    if y is None:
        return {"alarm_rate": float(alarm.mean()) if len(alarm) else float("nan"), "n": int(len(alarm))}
    y = np.asarray(y).astype(bool)
    out = {"n_normal": int((~y).sum()), "n_anomalous": int(y.sum())}
    out["false_alarm_rate"] = float(alarm[~y].mean()) if (~y).any() else float("nan")
    out["detection_rate"] = float(alarm[y].mean()) if y.any() else float("nan")
    return out


def rate_interval(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Clopper–Pearson interval of a rate k/n: the exact binomial interval (Clopper & Pearson 1934),
    [B⁻¹(α/2; k, n−k+1), B⁻¹(1−α/2; k+1, n−k)] with B the beta distribution, α = 1 − level."""
    from scipy.stats import beta

    a = 1.0 - level
    lo = 0.0 if k == 0 else float(beta.ppf(a / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - a / 2, k + 1, n - k))
    return lo, hi


def target_check(alarm: np.ndarray, y: np.ndarray | None, target: float, level: float = 0.95) -> dict | None:
    """Does the false-alarm rate reached on a labelled split agree with the target it was fitted to? ``missed``
    when the target lies outside the rate's Clopper–Pearson interval: more than sampling noise on this split."""
    if y is None:
        return None
    normal = ~np.asarray(y).astype(bool)
    n = int(normal.sum())
    if n == 0:
        return None
    k = int(np.asarray(alarm).astype(bool)[normal].sum())
    lo, hi = rate_interval(k, n, level)
    return {"target": float(target), "reached": k / n, "n_normal": n, "interval": [lo, hi], "level": level,
            "missed": not lo <= target <= hi}


def target_warning(check: dict | None, where: str) -> str | None:
    """One line for a missed target, or None."""
    if not check or not check["missed"]:
        return None
    lo, hi = check["interval"]
    return (f"false-alarm rate on {where} {check['reached']:.1%} misses the {check['target']:.1%} target (95% "
            f"interval {lo:.1%}–{hi:.1%} over {check['n_normal']} normal samples): the calibration split's normal "
            "data does not look like this split's; calibrate on data from the deployment, or a larger set")


def accept_reject_rates(decision: np.ndarray, y: np.ndarray, n_classes: int) -> dict:
    """For per-class accept decisions (class id, or −1 for none).

    false-accept rate FAR_k = P(decide k | y ≠ k), false-reject rate FRR_k = P(decide ≠ k | y = k),
    reported per class and as macro means, with the share of samples left undecided.
    """
    decision = np.asarray(decision)
    y = np.asarray(y)
    far, frr = [], []
    for k in range(n_classes):
        neg, pos = y != k, y == k
        far.append(float((decision[neg] == k).mean()) if neg.any() else float("nan"))
        frr.append(float((decision[pos] != k).mean()) if pos.any() else float("nan"))
    decided = decision >= 0
    return {"far_per_class": far, "frr_per_class": frr,
            "far_macro": float(np.nanmean(far)), "frr_macro": float(np.nanmean(frr)),
            "undecided": float((~decided).mean()),
            "accuracy_of_decided": float((decision[decided] == y[decided]).mean()) if decided.any() else float("nan")}



def stream_detection_rates(fire_times_ms: np.ndarray, fire_labels: np.ndarray, events: np.ndarray, keyword: int,
                           duration_ms: float, latency_ms: float) -> dict:
    """Keyword spotting on a stream: false accepts per hour and false-reject rate.

    ``events``: rows (start_ms, end_ms, label) of the utterances in the stream. A detection of ``keyword``
    is true if it falls in [start, end + latency] of a ``keyword`` event (the first such detection counts,
    later ones in the same event are ignored); every other detection of ``keyword`` is a false accept,
    counted against the label of the utterance it fell in (or "none": between utterances), as Edge Impulse's
    performance calibration breaks them down. Latency: from an utterance's start to its true detection.
    """
    ev = np.asarray(events, np.float64).reshape(-1, 3)
    kw = ev[ev[:, 2] == keyword]
    times = np.asarray(fire_times_ms, np.float64)[np.asarray(fire_labels) == keyword]
    hit = np.zeros(len(kw), bool)
    delay = np.zeros(len(kw))
    by_label: dict[str, int] = {}
    for t in times:
        inside = np.flatnonzero((kw[:, 0] <= t) & (t <= kw[:, 1] + latency_ms))
        if len(inside):
            if not hit[inside[0]]:
                delay[inside[0]] = t - kw[inside[0], 0]
            hit[inside[0]] = True
        else:
            during = np.flatnonzero((ev[:, 0] <= t) & (t < ev[:, 1]))
            label = str(int(ev[during[0], 2])) if len(during) else "none"
            by_label[label] = by_label.get(label, 0) + 1
    false = sum(by_label.values())
    hours = duration_ms / 3.6e6
    return {"false_accepts": int(false), "hours": hours, "fa_per_hour": false / hours if hours else float("nan"),
            "keyword_events": int(len(kw)), "false_reject_rate": float(1 - hit.mean()) if len(kw) else float("nan"),
            "false_accepts_by_label": dict(sorted(by_label.items())),
            "median_latency_ms": float(np.median(delay[hit])) if hit.any() else None}
