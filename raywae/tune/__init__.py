"""The Tune layer, one concern a module: preflight (checks before Ray), connect (join a
cluster), search (grid / Optuna / random searchers), schedulers (Tune's and mo_asha), tuner
(build and run the Tuner). `raywae.sweep` is the CLI over it."""
