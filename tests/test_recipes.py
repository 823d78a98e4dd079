"""Every shipped recipe resolves into a valid config, and the scripts are valid bash."""

from __future__ import annotations

import subprocess

import pytest

from catcli import config
from catcli.config import EvalConfig, RLRunConfig, SFTRunConfig
from conftest import ROOT

RECIPES = sorted((ROOT / "recipes").glob("*.toml"))


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_recipe_resolves_and_validates(path):
    """A config checks itself when built: resolving is validating."""
    recipe = config.load_recipe(path)
    assert recipe and set(recipe) <= {"sft", "rl", "eval"}
    if "sft" in recipe:
        config.resolve(SFTRunConfig, "sft", recipe, {})
        assert config.resolve(SFTRunConfig, "sft", recipe, {"max_steps": 3}).max_steps == 3  # flag wins
    if "rl" in recipe:
        config.resolve(RLRunConfig, "rl", recipe, {})
    if "eval" in recipe:
        config.resolve(EvalConfig, "eval", recipe, {})


@pytest.mark.parametrize("path", sorted((ROOT / "recipes").glob("*.sh")), ids=lambda p: p.name)
def test_scripts_parse(path):
    assert subprocess.run(["bash", "-n", str(path)]).returncode == 0


def test_scripts_find_the_checkouts_catcli_when_path_has_none(tmp_path):
    venv_bin = tmp_path / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "catcli").write_text("#!/bin/sh\n")
    (venv_bin / "catcli").chmod(0o755)
    script = f"source {ROOT / 'recipes/lib.sh'}; command -v catcli"
    bare = {"PATH": "/usr/bin:/bin"}
    r = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=bare, capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == str(venv_bin / "catcli")
    r = subprocess.run(["bash", "-c", script], cwd=tmp_path.parent, env=bare, capture_output=True, text=True)
    assert r.returncode != 0  # outside a checkout with .venv nothing is added


def test_sft_dry_run_prints_the_resolved_config(capsys):
    import json

    from catcli.cli import main

    assert main(["sft", "--recipe", str(ROOT / "recipes/sft_maj.toml"), "--strategy", "maj@16:k=4", "--dry-run"]) == 0
    cfg = json.loads(capsys.readouterr().out)["sft"]
    assert cfg["strategy"] == "maj@16:k=4" and cfg["target"] == "solution" and cfg["reduction"] == "token"
    assert cfg["lora_targets"] == ["q_proj", "k_proj", "v_proj", "o_proj"]


@pytest.mark.parametrize("path", [p for p in RECIPES if "rl" in config.load_recipe(p)], ids=lambda p: p.name)
def test_rl_recipes_train_as_the_paper_does(path):
    """cat-spec §7: RL at a constant learning rate with no warm-up; the maj@N warm-up is 3 CE epochs
    at lr 2e-5 on 2,000 problems; explicit, so Unsloth's GPU defaults cannot fill them in."""
    recipe = config.load_recipe(path)
    assert {"optim", "lr_scheduler", "warmup_steps"} <= set(recipe["rl"])
    cfg = config.resolve(RLRunConfig, "rl", recipe, {})
    assert (cfg.lr_scheduler, cfg.warmup_steps, cfg.optim) == ("constant", 0, "adamw_torch")
    if "sft" in recipe and path.name.startswith("rl_"):  # the paper's CE warm-up (claim_rl's is CPU-sized)
        warmup = config.resolve(SFTRunConfig, "sft", recipe, {})
        assert (str(warmup.strategy), warmup.epochs, warmup.lr, warmup.limit) == ("ce", 3, 2e-5, 2000)
        assert (warmup.lr_scheduler, warmup.warmup_steps) == ("linear", 0)
        assert (warmup.lora_r, warmup.lora_alpha, warmup.lora_targets) == (cfg.lora_r, cfg.lora_alpha, cfg.lora_targets)
