"""Plans read from disk are untrusted input: every field is checked before use.

A hand-edited ``plan.json`` must never give a traceback, C that fails its own self-test, or a device run that
"passes" with parameters no fit produced. ``check_plan`` and ``check_drift_report`` walk the whole document and
raise ``DataError`` naming the first bad field (``repairs[2].integer.thresholds_q[3]: 500 is outside
[-128, 127]``); the integer parameters are held to the ranges their C shims accept (``repair.fixedpoint``).
"""

from __future__ import annotations

from .. import fixedpoint as fp
from .. import fixedpoint_anomaly as fpa
from ..fields import Fields

TASKS = ("classifier", "anomaly_scores", "anomaly_stream", "keyword_stream")
CLASSIFIER = ("temperature", "vector_scaling", "class_thresholds")
ANOMALY = ("score_threshold", "window_boundary")
STREAM = ("stream_recognizer",)
MAX_MS = 1 << 30
MAX_RING = 4096
INT16 = (-(1 << 15), (1 << 15) - 1)
INT32 = (fp.Q31_MIN, fp.Q31_MAX)


def _softmax(doc: Fields, i: dict, where: str, k: int | None) -> None:
    m = doc.integer(i.get("softmax_multiplier"), f"{where}.softmax_multiplier", 0, fp.Q31_MAX)
    s = doc.integer(i.get("softmax_shift"), f"{where}.softmax_shift", 0, 30)
    d = doc.integer(i.get("softmax_diff_min"), f"{where}.softmax_diff_min", fp.Q31_MIN, 0)
    try:
        fp.check_softmax_params(k or 2, m, s, d)
    except fp.ParamError as e:
        doc.fail(f"{where}.softmax_*", str(e))


def _integer_params(doc: Fields, name: str, i: dict, where: str, k: int | None) -> None:
    """The C shim's parameters of a kept repair, in the ranges the C accepts."""
    if name == "temperature":
        _softmax(doc, i, where, k)
    elif name == "vector_scaling":
        mults = doc.integers(i.get("multipliers"), f"{where}.multipliers", -fp.Q31_MAX, fp.Q31_MAX, k)
        n = len(mults)
        doc.integers(i.get("shifts"), f"{where}.shifts", -31, fp.AFFINE_MAX_SHIFT, n)
        doc.integers(i.get("offsets"), f"{where}.offsets", -fp.AFFINE_MAX_OFFSET, fp.AFFINE_MAX_OFFSET, n)
        doc.integer(i.get("input_zero_point"), f"{where}.input_zero_point", -128, 127)
        doc.integer(i.get("output_zero_point"), f"{where}.output_zero_point", -128, 127)
        _softmax(doc, i, where, n)
    elif name == "class_thresholds":
        doc.integers(i.get("thresholds_q"), f"{where}.thresholds_q", -128, 127, k)
        doc.integer(i.get("bits"), f"{where}.bits", 8, 8)
    elif name == "score_threshold":
        doc.number(i.get("score_scale"), f"{where}.score_scale", positive=True)
        doc.integer(i.get("threshold_q"), f"{where}.threshold_q", *INT32)
    elif name == "stream_recognizer":
        doc.integer(i.get("average_window_ms"), f"{where}.average_window_ms", 1, MAX_MS)
        doc.integer(i.get("detection_threshold"), f"{where}.detection_threshold", 0, 255)
        doc.integer(i.get("suppression_ms"), f"{where}.suppression_ms", 0, MAX_MS)
        doc.integer(i.get("minimum_count"), f"{where}.minimum_count", 1, MAX_RING)
    elif name == "window_boundary":
        doc.number(i.get("value_scale"), f"{where}.value_scale", positive=True)
        doc.integer(i.get("window"), f"{where}.window", 2, fpa.MAX_WINDOW)
        doc.integer(i.get("alpha2_q"), f"{where}.alpha2_q", 0, fpa.MAX_ALPHA2_Q)
        doc.integer(i.get("alpha2_frac_bits"), f"{where}.alpha2_frac_bits", 0, 8)


def check_plan(d, source: str) -> dict:
    """``d`` (a parsed plan.json) checked field by field; returns it. DataError names the first bad field. Long
    (about 65 lines) because it reads the schema top to bottom, one check per field, as the plan is written."""
    doc = Fields(source)
    d = doc.obj(d, "the plan")
    doc.finite_everywhere(d, "plan")
    task = d.get("task")
    if task not in TASKS:
        doc.fail("task", f"{task!r} is not one of {', '.join(TASKS)}")
    prov = doc.obj(d.get("provenance", {}), "provenance")
    in_model = doc.obj(d.get("in_model", {}), "in_model")
    changed = doc.obj(in_model.get("int8_input_changed", {}), "in_model.int8_input_changed")
    if changed:
        doc.number(changed.get("scale_after"), "in_model.int8_input_changed.scale_after", positive=True)
        doc.integer(changed.get("zero_point_after"), "in_model.int8_input_changed.zero_point_after", -128, 127)
    pre_shim = doc.obj(in_model.get("input_pre_shim", {}), "in_model.input_pre_shim")
    if "integer" in pre_shim:
        where = "in_model.input_pre_shim.integer"
        i = doc.obj(pre_shim["integer"], where)
        n = doc.integer(pre_shim.get("features"), "in_model.input_pre_shim.features", 1, 65536)
        lists = [doc.integers(i.get(k), f"{where}.{k}", -(1 << 31), (1 << 31) - 1, n)
                 for k in ("multipliers", "shifts", "offsets")]
        zp = doc.integer(pre_shim.get("input_zero_point"), "in_model.input_pre_shim.input_zero_point", -128, 127)
        try:
            fp.check_pre_shim_params(*lists, zp)
        except fp.ParamError as e:
            doc.fail(where, str(e))
    for name, factors in doc.obj(in_model.get("equalized", {}), "in_model.equalized").items():
        if not isinstance(factors, list) or not 0 < len(factors) <= 65536:
            doc.fail(f"in_model.equalized.{name}", "expected a list of per-channel factors")
        for c, v in enumerate(factors):
            doc.number(v, f"in_model.equalized.{name}[{c}]", positive=True)
    repairs = d.get("repairs")
    if not isinstance(repairs, list):
        doc.fail("repairs", "expected a list of repairs")
    k = None
    if task == "classifier":
        if prov.get("num_classes") is not None:
            k = doc.integer(prov["num_classes"], "provenance.num_classes", 2, fp.SOFTMAX_MAX_ROW)
        if "int8_output_quant" in prov:
            q = doc.obj(prov["int8_output_quant"], "provenance.int8_output_quant")
            doc.number(q.get("scale"), "provenance.int8_output_quant.scale", positive=True)
            doc.integer(q.get("zero_point"), "provenance.int8_output_quant.zero_point", -128, 127)
    if "reconstruction_score" in prov:
        _recon_score(doc, doc.obj(prov["reconstruction_score"], "provenance.reconstruction_score"))
    if task == "keyword_stream":
        k = doc.integer(prov.get("num_classes"), "provenance.num_classes", 1, 256)
        doc.integer(prov.get("keyword"), "provenance.keyword", 0, k - 1)
        doc.integer(prov.get("silence_class"), "provenance.silence_class", -1, k - 1)
        doc.integer(prov.get("ring_capacity"), "provenance.ring_capacity", 1, MAX_RING)
    allowed = {"classifier": CLASSIFIER, "keyword_stream": STREAM}.get(task, ANOMALY)
    for n, r in enumerate(repairs):
        where = f"repairs[{n}]"
        r = doc.obj(r, where)
        name = r.get("repair")
        if name not in allowed:
            doc.fail(f"{where}.repair", f"{name!r} is not a {task} repair ({', '.join(allowed)})")
        doc.flag(r.get("kept"), f"{where}.kept")
        doc.text(r.get("reason", ""), f"{where}.reason")
        doc.text(r.get("warning", ""), f"{where}.warning")
        for part in ("params", "fitted", "integer"):
            doc.obj(r.get(part, {}), f"{where}.{part}")
        if r["kept"]:
            _integer_params(doc, name, r.get("integer", {}), f"{where}.integer", k)
            _follows_from_fit(doc, r, prov, where)
    return d


def _recon_score(doc: Fields, r: dict) -> None:
    where = "provenance.reconstruction_score"
    doc.number(r.get("score_scale"), f"{where}.score_scale", positive=True)
    doc.integer(r.get("size"), f"{where}.size", 1, fpa.RECON_MAX_SIZE)
    for key in ("input_zero_point", "output_zero_point"):
        doc.integer(r.get(key), f"{where}.{key}", -128, 127)
    for key in ("mult_ee", "mult_ef", "mult_ff"):
        doc.integer(r.get(key), f"{where}.{key}", 0, fpa.RECON_MAX_MULT)
    doc.integer(r.get("shift"), f"{where}.shift", 0, fpa.RECON_MAX_SHIFT)


def _follows_from_fit(doc: Fields, entry: dict, prov: dict, where: str) -> None:
    """The C parameters must be what the fitted values give (a plan edited in one place but not the other, e.g.
    negated multipliers, is refused): recompute them from ``fitted`` and compare."""
    from ..repairs import from_dict

    name = entry["repair"]
    quant = prov.get("int8_output_quant") or {}
    try:
        rep = from_dict(entry)
        if name == "temperature":
            want = rep.integer_params(quant["scale"])
        elif name == "vector_scaling":
            want = rep.integer_params(quant["scale"], quant["zero_point"])
        elif name == "class_thresholds":
            want = rep.integer_params(entry["integer"].get("bits", 8))
        else:
            want = rep.integer_params()
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as e:
        doc.fail(f"{where}.fitted", f"cannot rebuild the repair from its fitted values ({type(e).__name__}: {e})")
    got = entry["integer"]
    for key, value in want.items():
        if got.get(key) != value:
            doc.fail(f"{where}.integer.{key}", f"{got.get(key)!r} is not what the fitted values give ({value!r}): "
                                               "the plan was edited")
