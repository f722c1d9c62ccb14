"""How right the planner was: its predictions against recorded outcomes.

A record (an attempt record of the results store, or a view entry) carries ``model``,
``config``, ``status`` ("success" / "failure"), ``error_type`` (top level or under
``error.type``), optionally ``plan`` (a :meth:`Plan.to_dict`) and ``predicted`` (true when
the sweep skipped the launch because the plan said it would not fit).

Outcomes:

=================  ==========================================  ===============
plan verdict       run                                         counted as
=================  ==========================================  ===============
fits / tight       success                                     agree
will_not_fit       failure, OOM (launched)                     agree
fits / tight       failure, OOM                                contradiction: fit_but_oom
will_not_fit       success                                     contradiction: no_fit_but_ran
any                failure of another class                    inconclusive
will_not_fit       skipped, never launched (``predicted``)     skipped (no evidence)
none               any                                         no_plan
=================  ==========================================  ===============
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

from ..results.record import Record

__all__ = ["contradiction", "format_accuracy", "outcome", "planner_accuracy"]

AGREE = ("fit_ok", "oom_ok")
CONTRADICT = ("fit_but_oom", "no_fit_but_ran")


def _facts(rec: Record | dict[str, Any]) -> tuple[Record, str, str | None, bool]:
    """(the record, its status, its error type, whether it was predicted, not launched) of an
    attempt record or a view entry (read as a record: its top-level fields land in ``extra``)."""
    r = Record.of(rec)
    et = r.extra.get("error_type")
    if et is None:
        et = r.the_error.type
    st = r.status if r.status in ("success", "failure") else \
        ("failure" if et or r.extra.get("error_message") is not None else "success")
    predicted = bool(r.predicted) if r.predicted is not None else bool(r.the_error.predicted)
    return r, st, et, predicted


def _verdict(plan: Any) -> str | None:
    if plan is None:
        return None
    if isinstance(plan, dict):
        return plan.get("verdict")
    return getattr(plan, "verdict", None)


def outcome(verdict: str | None, status: str, error_type: str | None, *, predicted: bool = False) -> str:
    """The class of one recorded attempt (see the module table)."""
    if predicted:
        return "skipped"
    if verdict is None:
        return "no_plan"
    fits = verdict in ("fits", "tight")
    if status == "success":
        return "fit_ok" if fits else "no_fit_but_ran"
    if error_type == "OOM":
        return "fit_but_oom" if fits else "oom_ok"
    return "inconclusive"


def contradiction(plan: Any, status: str, error_type: str | None = None) -> str | None:
    """One line for a record whose real run contradicts its plan, else None."""
    v = _verdict(plan)
    kind = outcome(v, status, error_type)
    if kind not in CONTRADICT:
        return None
    reason = plan.get("reason") if isinstance(plan, dict) else getattr(plan, "reason", "")
    if kind == "no_fit_but_ran":
        return f"contradicts the plan: predicted will_not_fit ({reason}) but the run succeeded"
    return f"contradicts the plan: predicted {v} ({reason}) but the run failed with OOM"


def planner_accuracy(records: Iterable[Record | dict[str, Any]], *,
                     plan_for: Callable[[str, str], Any] | None = None) -> dict[str, Any]:
    """Agreements and contradictions over all recorded outcomes. ``plan_for(model, config)``
    supplies a plan (object or dict) for records stored without one; each attempt counts once."""
    counts = {k: 0 for k in (*AGREE, *CONTRADICT, "inconclusive", "skipped", "no_plan")}
    by_verdict: dict[str, dict[str, int]] = {}
    contradictions: list[dict[str, Any]] = []
    total = 0
    for item in records:
        total += 1
        rec, st, et, predicted = _facts(item)
        plan = rec.plan
        if plan is None and plan_for is not None and not predicted:
            try:
                plan = plan_for(str(rec.model), str(rec.config))
            except Exception:  # a record of a model or config the planner cannot read
                plan = None
        v = _verdict(plan)
        kind = outcome(v, st, et, predicted=predicted)
        counts[kind] += 1
        if v is not None and kind != "skipped":
            row = by_verdict.setdefault(v, {"success": 0, "oom": 0, "other_failure": 0})
            row["success" if st == "success" else ("oom" if et == "OOM" else "other_failure")] += 1
        if kind in CONTRADICT:
            contradictions.append({"model": rec.model, "config": rec.config, "verdict": v,
                                   "status": st, "error_type": et, "kind": kind,
                                   "reason": (plan.get("reason") if isinstance(plan, dict)
                                              else getattr(plan, "reason", None))})
    agree = sum(counts[k] for k in AGREE)
    wrong = sum(counts[k] for k in CONTRADICT)
    return {
        "records": total,
        "evaluated": agree + wrong,
        "agree": agree,
        "contradictions": wrong,
        "accuracy": (agree / (agree + wrong)) if agree + wrong else None,
        "counts": counts,
        "by_verdict": by_verdict,
        "contradiction_list": contradictions,
    }


def format_accuracy(acc: dict[str, Any]) -> str:
    c = acc["counts"]
    pct = "n/a" if acc["accuracy"] is None else f"{100 * acc['accuracy']:.0f}%"
    lines = [
        f"Planner accuracy: {pct} ({acc['agree']} of {acc['evaluated']} launched runs with a plan agree; "
        f"{acc['records']} records).",
        "",
        "| outcome | count |",
        "|---|---:|",
        f"| predicted fit, ran | {c['fit_ok']} |",
        f"| predicted no fit, OOM | {c['oom_ok']} |",
        f"| predicted fit, OOM (contradiction) | {c['fit_but_oom']} |",
        f"| predicted no fit, ran (contradiction) | {c['no_fit_but_ran']} |",
        f"| failed for another reason (inconclusive) | {c['inconclusive']} |",
        f"| skipped on prediction (not launched) | {c['skipped']} |",
        f"| no plan | {c['no_plan']} |",
    ]
    if acc["by_verdict"]:
        lines += ["", "| verdict | success | OOM | other failure |", "|---|---:|---:|---:|"]
        for v, row in sorted(acc["by_verdict"].items()):
            lines.append(f"| {v} | {row['success']} | {row['oom']} | {row['other_failure']} |")
    if acc["contradiction_list"]:
        lines += ["", "Contradictions:", ""]
        for x in acc["contradiction_list"]:
            what = "ran" if x["kind"] == "no_fit_but_ran" else "OOM"
            lines.append(f"- {x['model']} {x['config']}: predicted {x['verdict']}, {what}"
                         + (f" ({x['reason']})" if x.get("reason") else ""))
    return "\n".join(lines) + "\n"
