"""Every shipped recipe resolves into a valid config, and the scripts are valid bash."""

from __future__ import annotations

import subprocess

import pytest

from catcli import config
from catcli.evaluation import EvalConfig
from catcli.trainers.rl import RLRunConfig
from catcli.trainers.sft import SFTRunConfig
from conftest import ROOT

RECIPES = sorted((ROOT / "recipes").glob("*.toml"))


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_recipe_resolves_and_validates(path):
    recipe = config.load_recipe(path)
    assert recipe and set(recipe) <= {"sft", "rl", "eval"}
    if "sft" in recipe:
        cfg = config.resolve(SFTRunConfig, "sft", recipe, {})
        cfg.validate()
        assert config.resolve(SFTRunConfig, "sft", recipe, {"max_steps": 3}).max_steps == 3  # flag wins
    if "rl" in recipe:
        config.resolve(RLRunConfig, "rl", recipe, {}).validate()
    if "eval" in recipe:
        config.resolve(EvalConfig, "eval", recipe, {}).validate()


@pytest.mark.parametrize("path", sorted((ROOT / "recipes").glob("*.sh")), ids=lambda p: p.name)
def test_scripts_parse(path):
    assert subprocess.run(["bash", "-n", str(path)]).returncode == 0


def test_sft_dry_run_prints_the_resolved_config(capsys):
    import json

    from catcli.cli import main

    assert main(["sft", "--recipe", str(ROOT / "recipes/sft_maj.toml"), "--strategy", "maj@16:k=4", "--dry-run"]) == 0
    cfg = json.loads(capsys.readouterr().out)["sft"]
    assert cfg["strategy"] == "maj@16:k=4" and cfg["target"] == "solution" and cfg["reduction"] == "token"
    assert cfg["lora_targets"] == ["q_proj", "k_proj", "v_proj", "o_proj"]
