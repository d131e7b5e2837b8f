"""Non-dominated fronts and the paper's Figure 1: per setting (PROTOCOL §6 aggregate), test
reconstruction (x, lower is better) against the Higgins score (y, higher is better) on
(a) 4 and (b) 5 factors; a colour per family, a marker per β / λ1, error bars = spread of the
kept pairs; the front of each family (dashed) and of all settings (dotted); a marker's
opacity is the setting's bootstrap probability of lying on the front of all settings.

    python -m analysis.pareto -e NAME [--x test/recon --x-mode min]
                              [--y metric/beta_vae_4 --y metric/beta_vae_5 --y-mode max]
                              [--draws 1000]

Writes figure1.png, figure1.svg, figure1_points.csv (every setting, with p_front and
p_front_<by>) and figure1_fronts.csv (front members; `front` = family or "all"); logs them
under `figure1/` of the analysis run.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import numpy as np
import pandas as pd

from analysis import cli
from analysis.aggregate import (
    RECON,
    SCORES,
    aggregate,
    budget,
    keep_top,
    label_settings,
    paper_pairs,
)
from analysis.figures import DPI, MARKERS, family_key, pyplot, save

FIG1_INCHES = (13.0, 5.5)  # at figures.DPI the PNG is always 1300 x 550 pixels
BLOCK = 256  # points compared at once: memory BLOCK·n·k bools
DRAW_CHUNK = 200  # bootstrap draws resampled at once: memory DRAW_CHUNK × pairs rows
ALPHA_FLOOR = 0.15  # Figure 1's least opacity: a setting rarely on the front stays visible


def pareto_mask(points: np.ndarray, maximize: Sequence[bool]) -> np.ndarray:
    """points: (n, k) float; maximize: k flags -> (n,) bool, True on the non-dominated front.

    q dominates p when q is at least as good in every coordinate and strictly better in one,
    so duplicates and ties leave both points on the front. A point with a NaN (a failed or
    unscored model) is never on the front and dominates nothing.
    """
    pts = np.asarray(points, dtype=float)
    if pts.ndim != 2 or pts.shape[1] != len(maximize):
        raise ValueError(f"points {pts.shape} do not match {len(maximize)} objectives")
    cost = pts * np.where(np.asarray(maximize, dtype=bool), -1.0, 1.0)  # minimise all
    finite = np.isfinite(cost).all(axis=1)
    q = cost[finite]
    on = np.ones(len(q), dtype=bool)
    for start in range(0, len(q), BLOCK):
        p = q[start : start + BLOCK, None, :]  # (b, 1, k) against every q (1, m, k)
        dominated = ((q[None] <= p).all(-1) & (q[None] < p).any(-1)).any(-1)
        on[start : start + BLOCK] = ~dominated
    mask = np.zeros(len(pts), dtype=bool)
    mask[finite] = on
    return mask


def fronts(
    table: pd.DataFrame,
    x: str,
    y: str,
    maximize: tuple[bool, bool] = (False, True),
    by: str = "family",
) -> pd.DataFrame:
    """The rows of `table` on the front of their `by` group and on the overall front; column
    `front` = the group's name or "all" (a row can appear in both), sorted by x."""
    parts = []
    groups = [("all", table), *((str(k), g) for k, g in table.groupby(by, sort=False))]
    for name, group in groups:
        members = group[pareto_mask(group[[x, y]].to_numpy(dtype=float), maximize)]
        parts.append(members.assign(front=name))
    out = pd.concat(parts, ignore_index=True) if parts else table.assign(front=[])
    return out.sort_values(["front", x], kind="stable").reset_index(drop=True)


# --- fronts with their uncertainty -------------------------------------------------------------
def front_probability(
    runs: pd.DataFrame,
    score: str,
    recon: str = RECON,
    keep: float = 0.5,
    draws: int = 1000,
    seed: int = 0,
    maximize: tuple[bool, bool] = (False, True),
    by: str | None = None,
) -> pd.DataFrame:
    """Per setting, the bootstrap probability of lying on the front of all settings.

    runs: tidy table (analysis.collect; labelled if it has no `setting`). Each draw
    resamples, within every setting, its finished models (rows) with replacement and,
    within each drawn model, its metric runs with replacement; then applies the paper's
    aggregation (paper_pairs' pairs, keep_top, means of the kept pairs) and marks the
    settings on the (recon, score) front with pareto_mask.
    Returns one row per setting of `runs` (first-appearance order): setting, p_front in
    [0, 1] (0 for a setting with no finished run) and, with `by` (e.g. "family"), the `by`
    value and p_front_<by>, the probability of lying on the front of its own group.
    """
    if draws < 1:
        raise ValueError(f"draws must be >= 1, got {draws}")
    if "setting" not in runs:
        runs = label_settings(runs)
    settings = pd.unique(runs["setting"])
    # A model is one row of the table: its position names it, whatever the run ids say.
    pairs = paper_pairs(runs.assign(run_id=np.arange(len(runs))), score, recon)
    pairs = pairs.sort_values("run_id", kind="stable")  # a model's pairs contiguous
    _, pair_start, pair_count = np.unique(  # per model (M,): its first pair, its pairs
        pairs["run_id"].to_numpy(), return_index=True, return_counts=True
    )
    setting_of = pd.Index(settings).get_indexer(pairs["setting"].to_numpy()[pair_start])
    by_setting = np.argsort(setting_of, kind="stable")  # models grouped by setting
    slot_setting = setting_of[by_setting]  # each draw fills these model slots
    sizes = np.bincount(slot_setting, minlength=len(settings))
    first = np.cumsum(sizes) - sizes
    values = pairs[["recon", "score"]].to_numpy(dtype=float)
    groups = None if by is None else runs.groupby("setting", sort=False)[by].first()
    members = [] if groups is None else list(groups.groupby(groups, sort=False).indices.values())
    rng = np.random.default_rng(seed)
    on_all = np.zeros(len(settings))
    on_own = np.zeros(len(settings))
    for start in range(0, draws, DRAW_CHUNK):
        d = min(DRAW_CHUNK, draws - start)
        # Slot of setting s: a uniform one of its sizes[s] models, first[s] + ⌊u · sizes[s]⌋.
        slots = first[slot_setting] + (rng.random((d, len(slot_setting))) * sizes[slot_setting])
        chosen = by_setting[slots.astype(int)].reshape(-1)  # (d · M,) drawn models
        counts = pair_count[chosen]
        owner = np.repeat(np.arange(len(chosen)), counts)  # drawn model of each drawn pair
        offset = (rng.random(len(owner)) * counts[owner]).astype(int)  # its metric run, drawn
        rows = pair_start[chosen][owner] + offset
        # (draw, setting) as one group key, so keep_top runs once over every draw.
        key = np.repeat(np.arange(d), len(slot_setting))[owner] * len(settings)
        key += np.tile(slot_setting, d)[owner]
        drawn = pd.DataFrame({"setting": key, "recon": values[rows, 0], "score": values[rows, 1]})
        kept = keep_top(drawn, keep)
        at = kept["setting"].to_numpy()
        n = np.bincount(at, minlength=d * len(settings))
        with np.errstate(invalid="ignore"):  # a setting without pairs: NaN, never on a front
            means = np.stack(
                [np.bincount(at, kept[c].to_numpy(), len(n)) / n for c in ("recon", "score")], -1
            ).reshape(d, len(settings), 2)
        for points in means:
            on_all += pareto_mask(points, maximize)
            for group in members:
                on_own[group] += pareto_mask(points[group], maximize)
    out = pd.DataFrame({"setting": settings, "p_front": on_all / draws})
    if groups is not None:
        out[by] = groups.loc[settings].to_numpy()
        out[f"p_front_{by}"] = on_own / draws
    return out


# --- Figure 1 ---------------------------------------------------------------------------------
def _scale(key: str) -> float:
    """Higgins scores are fractions; the paper plots percent."""
    return 100.0 if key.startswith("metric/beta_vae") else 1.0


def figure1(
    panels: list[tuple[str, pd.DataFrame]],
    front_table: pd.DataFrame,
    x_label: str,
    subtitle: str,
    draws: int = 0,
) -> object:
    """panels: (title, aggregate table) each, with `p_front` (front_probability) when
    draws > 0: a marker's opacity, floored at ALPHA_FLOOR; front_table: fronts() rows with
    `panel`. Returns a matplotlib Figure of FIG1_INCHES."""
    plt = pyplot()
    import seaborn as sns

    fig, axes = plt.subplots(1, len(panels), figsize=FIG1_INCHES, dpi=DPI, squeeze=False)
    fig.subplots_adjust(left=0.06, right=0.80, top=0.86, bottom=0.11, wspace=0.22)
    families = sorted({f for _, t in panels for f in t["family"]}, key=family_key)
    # colorblind has 10 colours; the study's 11 families need distinct hues beyond that
    palette = "colorblind" if len(families) <= 10 else "husl"
    colours = dict(zip(families, sns.color_palette(palette, max(len(families), 3))))
    handles: dict[str, object] = {}
    for ax, (title, table) in zip(axes[0], panels):
        s = _scale(table["score_key"].iloc[0]) if len(table) else 1.0
        shown = table[table["n_kept"] > 0]
        for family in families:  # the legend lists families in figures.FAMILY_ORDER
            rows = shown[shown["family"] == family]
            for i, (_, r) in enumerate(rows.iterrows()):
                style = {"marker": MARKERS[i % len(MARKERS)], "color": colours[family]}
                p = r.get("p_front", np.nan)
                ax.errorbar(
                    r["recon_mean"], s * r["score_mean"], xerr=r["recon_std"],
                    yerr=s * r["score_std"], ls="none", ms=6, capsize=2, elinewidth=0.8,
                    alpha=max(ALPHA_FLOOR, p) if np.isfinite(p) else 1.0, **style,
                )  # fmt: skip
                # Plain markers in the legend: error-bar glyphs hide the marker shape.
                key = f"{family}: {r['knob']}"
                handles.setdefault(key, plt.Line2D([], [], ls="none", ms=6, **style))
        panel_fronts = front_table[front_table["panel"] == title]
        for name, members in panel_fronts.groupby("front", sort=False):
            style = (
                {"color": "black", "ls": ":", "lw": 1.6, "zorder": 0}
                if name == "all"
                else {"color": colours.get(name, "grey"), "ls": "--", "lw": 1.0}
            )
            ax.step(members["recon_mean"], s * members["score_mean"], where="post", **style)
        hidden = table[table["n_kept"] == 0]
        if len(hidden):
            note = ", ".join(f"{r.setting} ({r.n_failed} failed)" for r in hidden.itertuples())
            ax.text(0.01, 0.01, f"not shown: {note}", transform=ax.transAxes, fontsize=7)
        if shown.empty:
            ax.text(0.5, 0.5, "no finished runs", ha="center", transform=ax.transAxes)
        ax.set_title(title)
        ax.set_xlabel(x_label)
        ax.set_ylabel(f"{table['score_key'].iloc[0] if len(table) else ''}" + (" (%)" * (s > 1)))
        ax.grid(alpha=0.3)
    handles["front of a family"] = plt.Line2D([], [], color="grey", ls="--")
    handles["front of all settings"] = plt.Line2D([], [], color="black", ls=":", lw=1.6)
    if draws:
        key = f"opacity: P(on the front of all)\n({draws} bootstrap draws)"
        handles[key] = plt.Line2D([], [], ls="none", marker="o", color="grey", alpha=0.4)
    fig.legend(
        handles.values(), handles.keys(), loc="center left", bbox_to_anchor=(0.805, 0.5),
        fontsize=7 if len(handles) < 30 else 5, ncol=1 if len(handles) < 30 else 2,
        frameon=False,
    )  # fmt: skip
    fig.suptitle("Reconstruction vs disentanglement per setting (mean ± std of kept pairs)")
    fig.text(0.5, 0.925, subtitle, ha="center", fontsize=7, wrap=True)
    return fig


@cli.command
def main(argv: list[str] | None = None) -> int:
    from analysis.collect import runs_for

    p = cli.parser("python -m analysis.pareto", __doc__, table=True)
    p.add_argument("--x", default=RECON, help=f"x key (default {RECON})")
    p.add_argument("--x-mode", choices=("min", "max"), default="min")
    p.add_argument("--y", action="append", help="y key per panel (default: both Higgins)")
    p.add_argument("--y-mode", choices=("min", "max"), default="max")
    p.add_argument("--by", default="family", help="front per value of this column")
    p.add_argument("--keep", type=float, default=0.5, help="fraction of pairs kept (0.5)")
    p.add_argument(
        "--draws", type=int, default=1000, help="bootstrap draws of p_front (1000; 0 = off)"
    )
    args, target = cli.parse(p, argv)
    runs = runs_for(target, args.table)
    maximize = (args.x_mode == "max", args.y_mode == "max")
    panels, all_fronts = [], []
    for letter, y in zip("abcdefgh", args.y or SCORES):
        table = aggregate(runs, y, recon=args.x, keep=args.keep)
        if args.draws > 0:
            odds = front_probability(runs, y, args.x, args.keep, args.draws, 0, maximize, args.by)
            table = table.merge(odds.drop(columns=args.by), on="setting", how="left")
        factors = y.removeprefix("metric/beta_vae_")
        title = f"({letter}) {factors}-factor score" if factors.isdigit() else f"({letter}) {y}"
        panels.append((title, table.assign(panel=title)))
        front = fronts(table, "recon_mean", "score_mean", maximize, args.by)
        all_fronts.append(front.assign(panel=title))
    front_table = pd.concat(all_fronts, ignore_index=True)
    x_label = f"{args.x} (mean of kept pairs)"
    fig = figure1(panels, front_table, x_label, budget(runs), max(args.draws, 0))
    out = target.out
    paths = [out / "figure1.png", out / "figure1.svg"]
    save(fig, paths)
    points = pd.concat([t for _, t in panels], ignore_index=True)
    points.to_csv(out / "figure1_points.csv", index=False)
    front_table.to_csv(out / "figure1_fronts.csv", index=False)
    paths += [out / "figure1_points.csv", out / "figure1_fronts.csv"]
    cols = ["panel", "front", "setting", "recon_mean", "recon_std", "score_mean", "score_std"]
    cols += ["p_front"] * (args.draws > 0)
    print(front_table[cols].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    cli.wrote(target, paths, "figure1", {"raywae.analysis.figure1.budget": budget(runs)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
