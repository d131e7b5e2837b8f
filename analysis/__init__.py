"""From a finished sweep to the paper's evidence: MLflow runs -> one tidy table -> the paper's
aggregation (PROTOCOL §6) -> Pareto fronts (Figure 1), reconstructions (Figure 2), the
headline table (PROTOCOL §1) and Optuna's own front.

The CLIs run from the repository root as `python -m analysis.<module>`: `collect`, `pareto`,
`reconstructions`, `paper_table`, `optuna_front`. Each reads an MLflow store, writes its files
under `--out` and logs them as artifacts of the experiment's "analysis" run. They share
`store` (MLflow I/O, AnalysisError), `cli` (parser, `error: ...` and exit status 2, last
lines), `figures` (DPI, family order, Agg, saving) and `smoke` (the tiny sweeps of --smoke).
Pure functions (`aggregate`, `pareto.pareto_mask`, `reconstructions.choose`,
`paper_table.headline`) take and return pandas / numpy objects and import no MLflow.
"""
