"""The two training commands, named after them (sft.py, rl.py), and the run lifecycle they share
(lifecycle.py). Each command module exposes `build_trainer(cfg)` and `run_<command>(cfg)`."""
