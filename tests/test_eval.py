"""`catcli eval` end to end on the embedded model, and kill / --resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, run_cli, start_cli, tiny_llama, wait_for

EVAL = ["eval", "--model", "smollm2-135m", "--data", "arith", "--max-new-tokens", "24"]


@pytest.mark.slow
def test_eval_writes_all_outputs(tmp_path):
    out = tmp_path / "run"
    r = run_cli(*EVAL, "--limit", "8", "--n", "8", "--k", "1,2,4,8", "--out", str(out), "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.loads(r.stdout)  # stdout is exactly one JSON object
    assert set(result["metrics"]) == {f"{m}@{k}" for m in ("pass", "maj") for k in (1, 2, 4, 8)}
    assert result["data"]["n_problems"] == 8 and len(result["data"]["fingerprint"]) == 64
    for name in ("eval.json", "run.json", "samples.jsonl", "curves.csv", "curves.png"):
        assert (out / name).stat().st_size > 0
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and all(len(r["completions"]) == 8 for r in rows)
    assert json.loads((out / "eval.json").read_text())["metrics"] == result["metrics"]
    # score recomputes the same numbers with no model
    s = run_cli("score", str(out / "samples.jsonl"), "--k", "1,2,4,8", "--json")
    assert json.loads(s.stdout)["metrics"] == result["metrics"]


@pytest.mark.slow
def test_killed_eval_resumes_to_the_uninterrupted_result(tmp_path):
    # 24 one-problem chunks: the kill lands after 2, so 22 are left and the run cannot finish
    # first even when this process is starved (with 6, 4 were left); 8-token completions keep
    # the uninterrupted reference run cheap
    args = ["eval", "--model", "smollm2-135m", "--data", "arith", "--max-new-tokens", "8"]
    args += ["--limit", "24", "--n", "2", "--k", "1,2", "--batch-size", "1", "--seed", "7"]
    ref = run_cli(*args, "--out", str(tmp_path / "ref"), "--json")
    assert ref.returncode == 0, ref.stderr[-2000:]

    out = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "catcli", *args, "--out", str(out)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    samples = out / "samples.jsonl"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        if samples.exists() and samples.read_text().count("\n") >= 2:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = samples.read_text().count("\n")
    assert 2 <= partial < 24

    again = run_cli(*args, "--out", str(out), "--json")
    assert again.returncode == 2 and "not empty" in again.stderr  # no silent clobbering
    resumed = run_cli(*args, "--out", str(out), "--resume", "--json")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    ids = [json.loads(line)["id"] for line in samples.read_text().splitlines()]
    assert len(ids) == len(set(ids)) == 24
    assert json.loads(resumed.stdout)["metrics"] == json.loads(ref.stdout)["metrics"]
    ref_rows = {
        json.loads(x)["id"]: json.loads(x)["completions"]
        for x in (tmp_path / "ref" / "samples.jsonl").read_text().splitlines()
    }
    got_rows = {json.loads(x)["id"]: json.loads(x)["completions"] for x in samples.read_text().splitlines()}
    assert got_rows == ref_rows


@pytest.mark.slow
def test_resume_with_other_settings_is_refused(tmp_path):
    out = tmp_path / "run"
    r = run_cli(*EVAL, "--limit", "2", "--n", "2", "--k", "1,2", "--batch-size", "1", "--out", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    # stderr is a pipe here, as in a script's log: one plain progress line per finished chunk
    assert "sampling: 1/2 problems done" in r.stderr and "sampling: 2/2 problems done" in r.stderr
    assert "ETA 0.0 min" in r.stderr
    r = run_cli(*EVAL, "--limit", "2", "--n", "2", "--k", "1,2", "--seed", "5", "--out", str(out), "--resume")
    assert r.returncode == 2 and "different seed" in r.stderr


@pytest.mark.slow
def test_sigint_keeps_finished_problems_and_exits_130(tmp_path):
    out = tmp_path / "run"
    # 500 one-problem chunks: once the first line is written, minutes of work are left, so the
    # SIGINT always lands mid-run (with 6 a busy machine once finished them all first); it stops
    # the run, so the size costs nothing
    proc = start_cli(*EVAL, "--limit", "500", "--n", "2", "--k", "1,2", "--batch-size", "1", "--out", str(out))
    samples = out / "samples.jsonl"
    wait_for(lambda: samples.exists() and samples.read_text().count("\n") >= 1, proc)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "rerun with --resume" in err and "Traceback" not in err
    rows = [json.loads(line) for line in samples.read_text().splitlines()]
    assert 1 <= len(rows) < 500 and not (out / "eval.json").exists()


def _plain_generate(model, tok, prompts, settings, seed):
    """The reference: `generate` with num_return_sequences, which recomputes each prompt n times."""
    import torch

    tok.padding_side = "left"
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    assert enc["attention_mask"][0].sum() < enc["attention_mask"][1].sum()  # the padding case is exercised
    torch.manual_seed(seed)
    with torch.inference_mode():
        out = model.generate(
            **enc, do_sample=True, temperature=settings.temperature, top_p=settings.top_p,
            max_new_tokens=settings.max_new_tokens, num_return_sequences=settings.n, pad_token_id=tok.pad_token_id,
        )  # fmt: skip
    return tok.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)


def test_shared_prompt_cache_samples_what_plain_generate_samples():
    """Prefilling each prompt once and copying its cache n times must not change a single token,
    also for prompts of different lengths (left padding)."""
    from catcli.samples import SamplingSettings, sample_completions

    model, tok = tiny_llama()
    tok.pad_token = tok.eos_token  # as load_model sets it
    prompts = ["Problem:\nWhat is $12 + 7$?", "Problem:\nWhat is $3 \\times 41$? Think step by step, then answer."]
    settings = SamplingSettings(n=5, temperature=1.0, top_p=0.95, max_new_tokens=12)
    steps = []  # the progress hook must see every token and not change a single draw
    shared = sample_completions(model, tok, prompts, settings, seed=7, on_step=lambda t, e: steps.append((t, e)))
    assert [t for t, _ in steps] == list(range(1, len(steps) + 1)) and 1 < len(steps) <= 12
    assert all(0 <= e <= 10 for _, e in steps) and [e for _, e in steps] == sorted(e for _, e in steps)

    plain = _plain_generate(model, tok, prompts, settings, seed=7)
    assert [c for row in shared for c in row] == plain
    assert len(set(plain)) > 5  # sampled, not one repeated string


def test_prompt_cache_is_shared_when_the_forward_returns_a_new_cache():
    """Unsloth's GPU forward builds its own cache instead of filling the one it is given: the
    prompts must still be computed once, and the tokens stay those of plain generate."""
    from transformers import DynamicCache

    from catcli.samples import SamplingSettings, sample_completions

    model, tok = tiny_llama()
    tok.pad_token = tok.eos_token
    prompts = ["Problem:\nWhat is $12 + 7$?", "Problem:\nWhat is $3 \\times 41$? Think, then answer."]
    settings = SamplingSettings(n=3, temperature=1.0, top_p=1.0, max_new_tokens=6)
    plain = _plain_generate(model, tok, prompts, settings, seed=3)

    original, widths = model.forward, []

    def unsloth_like_forward(*args, **kwargs):
        widths.append(kwargs["input_ids"].shape[1])
        given = kwargs.get("past_key_values")
        if given is None or given.get_seq_length() > 0:
            return original(*args, **kwargs)
        result = original(*args, **{**kwargs, "past_key_values": DynamicCache()})  # the caller's stays empty
        result.past_key_values = [(layer.keys, layer.values) for layer in result.past_key_values.layers]
        return result

    model.forward = unsloth_like_forward
    shared = sample_completions(model, tok, prompts, settings, seed=3)
    assert [c for row in shared for c in row] == plain
    assert sum(w > 1 for w in widths) == 1, widths  # one prefill; every later step feeds one token


@pytest.mark.gpu
def test_vllm_backend_matches_the_samples_contract(tmp_path):
    pytest.importorskip("vllm")
    out = tmp_path / "run"
    r = run_cli(*EVAL, "--limit", "4", "--n", "4", "--k", "1,4", "--backend", "vllm", "--out", str(out), "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all(len(row["completions"]) == 4 for row in rows)
