"""Planner accuracy over recorded outcomes, on synthetic records."""

from __future__ import annotations

from moetrace.plan import contradiction, format_accuracy, plan_config, planner_accuracy
from moetrace.plan.check import outcome
from moetrace.presets import get_preset

FITS = {"verdict": "fits", "reason": "fits: weights 55 GiB"}
TIGHT = {"verdict": "tight", "reason": "tight: 1 GiB left"}
NOFIT = {"verdict": "will_not_fit", "reason": "predicted: weights 158 GiB/GPU exceed 140 GiB"}


def rec(model, config, status, error_type=None, plan=None, predicted=None, nested=False):
    r = {"model": model, "config": config, "status": status}
    if error_type:
        if nested:
            r["error"] = {"type": error_type, "message": "x"}
        else:
            r["error_type"] = error_type
    if plan is not None:
        r["plan"] = plan
    if predicted is not None:
        r["predicted"] = predicted
    return r


def test_outcome_table():
    assert outcome("fits", "success", None) == "fit_ok"
    assert outcome("tight", "success", None) == "fit_ok"
    assert outcome("will_not_fit", "failure", "OOM") == "oom_ok"
    assert outcome("fits", "failure", "OOM") == "fit_but_oom"
    assert outcome("will_not_fit", "success", None) == "no_fit_but_ran"
    assert outcome("fits", "failure", "Timeout") == "inconclusive"
    assert outcome("will_not_fit", "failure", "OOM", predicted=True) == "skipped"
    assert outcome(None, "success", None) == "no_plan"


def test_accuracy_counts_agreements_and_contradictions():
    records = [
        rec("A", "TP8_EP2_auto", "success", plan=FITS),
        rec("A", "TP4_auto", "failure", "OOM", plan=NOFIT),                      # launched anyway, OOM'd
        rec("B", "TP4_auto", "failure", "OOM", plan=NOFIT, predicted=True),     # skipped on prediction
        rec("C", "TP2_auto", "failure", "OOM", plan=FITS, nested=True),         # contradiction
        rec("D", "TP4_auto", "success", plan=NOFIT),                             # contradiction
        rec("E", "TP8_auto", "failure", "Timeout", plan=TIGHT),                  # says nothing about memory
        rec("F", "TP8_auto", "success"),                                         # no plan
    ]
    acc = planner_accuracy(records)
    assert acc["records"] == 7
    assert acc["agree"] == 2 and acc["contradictions"] == 2 and acc["evaluated"] == 4
    assert acc["accuracy"] == 0.5
    c = acc["counts"]
    assert (c["fit_ok"], c["oom_ok"], c["fit_but_oom"], c["no_fit_but_ran"]) == (1, 1, 1, 1)
    assert (c["inconclusive"], c["skipped"], c["no_plan"]) == (1, 1, 1)
    kinds = {(x["model"], x["kind"]) for x in acc["contradiction_list"]}
    assert kinds == {("C", "fit_but_oom"), ("D", "no_fit_but_ran")}
    assert acc["by_verdict"]["will_not_fit"] == {"success": 1, "oom": 1, "other_failure": 0}
    text = format_accuracy(acc)
    assert "50%" in text and "C TP2_auto: predicted fits, OOM" in text and "D TP4_auto" in text


def test_status_inferred_from_view_entries():
    # failure_results.json entries carry error_type but no status; success entries carry neither
    acc = planner_accuracy([{"model": "A", "config": "TP4_auto", "error_type": "OOM", "plan": NOFIT},
                            {"model": "A", "config": "TP8_auto", "itl_ms": 14.3, "plan": FITS}])
    assert acc["agree"] == 2 and acc["accuracy"] == 1.0


def test_empty_and_planless_records():
    acc = planner_accuracy([])
    assert acc["accuracy"] is None and acc["records"] == 0
    assert "n/a" in format_accuracy(acc)
    acc = planner_accuracy([rec("A", "TP8_auto", "success")])
    assert acc["accuracy"] is None and acc["counts"]["no_plan"] == 1


def test_plans_can_be_filled_in_for_old_records():
    ds = get_preset("DeepSeek-V3.1")

    def plan_for(model, config):
        return plan_config(get_preset(model), config)

    records = [rec("DeepSeek-V3.1", "TP4_auto", "failure", "OOM"),
               rec("DeepSeek-V3.1", "TP8_EP2_auto", "success"),
               rec("NoSuchModel", "TP8_auto", "success")]
    acc = planner_accuracy(records, plan_for=plan_for)
    assert acc["agree"] == 2 and acc["counts"]["no_plan"] == 1
    assert plan_config(ds, "TP4_auto").verdict == "will_not_fit"


def test_contradiction_line_for_a_record():
    assert contradiction(FITS, "success") is None
    assert contradiction(NOFIT, "failure", "OOM") is None
    assert contradiction(FITS, "failure", "Timeout") is None
    line = contradiction(NOFIT, "success")
    assert "predicted will_not_fit" in line and "succeeded" in line and "158 GiB" in line
    assert "failed with OOM" in contradiction(TIGHT, "failure", "OOM")
    p = plan_config(get_preset("Qwen3-235B"), "TP8_EP2_auto")
    assert "failed with OOM" in contradiction(p, "failure", "OOM")
