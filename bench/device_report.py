"""The device check's report: sections run in order under a wall-clock budget; each one's
outcome (figures, checks with their limits, table rows, or its error and traceback summary)
is written to device_check.json and device_check.md as soon as it ends, so a run killed
midway still leaves every finished section on disk."""

from __future__ import annotations

import json
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Check:
    """One pass / fail figure: `value` against `limit` (said in words, e.g. "<= 1e-05")."""

    name: str
    value: Any
    limit: str
    ok: bool


def at_most(name: str, value: float, limit: float) -> Check:
    return Check(name, value, f"<= {limit:g}", bool(value <= limit))


def equal(name: str, value: Any, expected: Any) -> Check:
    return Check(name, value, f"== {expected}", value == expected)


class Report:
    """Sections in the order they ran: name -> {"status", "seconds", ...what it returned}.
    status: "pass" / "FAIL" (a section with checks), "done" (figures only), "error" (it
    raised: "error", "traceback"), "skipped" ("why")."""

    def __init__(self, out: Path, budget_s: float, meta: dict[str, Any]) -> None:
        self.out, self.budget_s, self.meta = out, budget_s, meta
        self.sections: dict[str, dict[str, Any]] = {}
        self.start = time.perf_counter()
        out.mkdir(parents=True, exist_ok=True)

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        return self.budget_s - self.elapsed()

    def log(self, message: str) -> None:
        print(f"[{self.elapsed():6.1f} s] {message}", flush=True)

    def run(self, name: str, section: Callable[[], dict[str, Any]], needs_s: float = 0) -> None:
        """Run one section (it returns {"checks": [Check], "figures": {...}, "rows": [...],
        "notes": [...], ...}); an exception is recorded, never raised. needs_s: skip it when
        less than that is left of the budget."""
        if self.left() < needs_s:
            why = f"{self.left():.0f} s of the budget left, it needs about {needs_s:.0f} s"
            return self.skip(name, why)
        self.log(f"{name} ...")
        start = time.perf_counter()
        try:
            result = section()
            checks = result.get("checks", [])
            status = ("pass" if all(c.ok for c in checks) else "FAIL") if checks else "done"
        except Exception as err:  # one broken section must not cost the others
            lines = traceback.format_exc().strip().splitlines()
            result = {"error": f"{type(err).__name__}: {err}", "traceback": lines[-14:]}
            status = "error"
        seconds = time.perf_counter() - start
        self.sections[name] = {"status": status, "seconds": round(seconds, 2), **result}
        self.write()
        self.log(f"{name}: {status} in {seconds:.1f} s" + _failures(self.sections[name]))

    def skip(self, name: str, why: str) -> None:
        self.sections[name] = {"status": "skipped", "why": why}
        self.write()
        self.log(f"{name}: skipped ({why})")

    def ok(self) -> bool:
        """No check failed and no section raised (a skipped section is no failure)."""
        return all(s["status"] in ("pass", "done", "skipped") for s in self.sections.values())

    def write(self) -> None:
        meta = {**self.meta, "wall_s": round(self.elapsed(), 1)}
        doc = {"meta": meta, "sections": self.sections}
        text = json.dumps(doc, indent=1, default=_plain)
        _write(self.out / "device_check.json", text + "\n")
        _write(self.out / "device_check.md", markdown(meta, self.sections))


def _plain(obj: Any) -> Any:
    if isinstance(obj, Check):
        return asdict(obj)
    if hasattr(obj, "item"):  # numpy / torch scalars
        return obj.item()
    return str(obj)


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _failures(section: dict[str, Any]) -> str:
    if section["status"] == "error":
        return f": {section['error']}"
    bad = [c.name for c in section.get("checks", []) if not c.ok]
    return f" (failed: {', '.join(bad)})" if bad else ""


def fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def table(rows: list[dict[str, Any]]) -> list[str]:
    """Rows (dicts with the same keys) as a Markdown table."""
    if not rows:
        return []
    keys = list(rows[0])
    out = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    out += ["| " + " | ".join(fmt(r.get(k)).replace("|", "\\|") for k in keys) + " |" for r in rows]
    return out


def markdown(meta: dict[str, Any], sections: dict[str, dict[str, Any]]) -> str:
    lines = [f"# Device check: {meta.get('device_name', meta.get('device'))}", ""]
    lines += [f"- {k}: {fmt(v)}" for k, v in meta.items()]
    lines += ["", "| section | status | seconds |", "|---|---|---|"]
    lines += [f"| {n} | {s['status']} | {fmt(s.get('seconds'))} |" for n, s in sections.items()]
    for name, s in sections.items():
        lines += ["", f"## {name}: {s['status']}", ""]
        if s["status"] == "skipped":
            lines.append(f"Skipped: {s['why']}")
        if "error" in s:
            lines += [f"Error: `{s['error']}`", "", "```", *s["traceback"], "```"]
        if s.get("checks"):
            checks = [
                {"check": c.name, "value": c.value, "limit": c.limit, "ok": c.ok}
                for c in s["checks"]
            ]
            lines += [*table(checks), ""]
        lines += [f"- {k}: {fmt(v)}" for k, v in s.get("figures", {}).items()]
        if s.get("rows"):
            lines += ["", *table(s["rows"])]
        lines += [f"- note: {n}" for n in s.get("notes", [])]
    return "\n".join(lines) + "\n"
