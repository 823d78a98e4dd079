"""catcli's decoding loop against exact distributions and transformers' own `generate`."""

from __future__ import annotations

import pytest
import torch

from catcli.samples import SamplingSettings, draw_tokens, nucleus, sample_completions
from conftest import tiny_llama

# ---------------------------------------------------------------- the next token


def _hf_nucleus(logits, temperature, top_p):
    """transformers' own warpers, as generate applies them, in float64."""
    from transformers.generation.logits_process import TemperatureLogitsWarper, TopPLogitsWarper

    scores = TemperatureLogitsWarper(temperature)(None, logits.double())
    scores = TopPLogitsWarper(top_p)(None, scores)
    return torch.softmax(scores, -1)


@pytest.mark.parametrize("temperature, top_p", [(1.0, 0.9), (0.8, 0.95), (0.5, 0.5), (1.3, 0.99), (1.0, 1.0)])
def test_nucleus_is_transformers_temperature_then_top_p(temperature, top_p):
    g = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(64, 40, generator=g, dtype=torch.float64)
    torch.testing.assert_close(nucleus(logits, temperature, top_p), _hf_nucleus(logits, temperature, top_p))


def _grid_frequencies(logits, temperature, top_p, draws: int = 20000):
    """How often draw_tokens picks each token over an even grid of uniforms: p to within 1/draws."""
    u = (torch.arange(draws, dtype=torch.float64) + 0.5) / draws
    tokens = draw_tokens(logits.expand(draws, -1), temperature, top_p, u)
    return torch.bincount(tokens, minlength=logits.shape[-1]).double() / draws


@pytest.mark.parametrize(
    "scale, vocab, top_p, nucleus_size",
    [
        (4.0, 300, 0.9, (1, 64)),  # within the top 64
        (4.0, 300, 1.0, (300, 300)),  # no top-p: the whole vocabulary
        (2.0, 3000, 0.95, (65, 1024)),  # widened to the top 1,024
        (0.05, 300, 0.95, (65, 300)),  # flat: the top k widens to the whole vocabulary
    ],
)
def test_draw_tokens_draws_exactly_the_nucleus(scale, vocab, top_p, nucleus_size):
    g = torch.Generator().manual_seed(1)
    logits = scale * torch.randn(1, vocab, generator=g)
    exact = nucleus(logits, 0.9, top_p)[0].float()
    assert nucleus_size[0] <= int((exact > 0).sum()) <= nucleus_size[1]
    freq = _grid_frequencies(logits, 0.9, top_p).float()
    assert (freq[exact == 0] == 0).all()  # never a token outside the nucleus
    torch.testing.assert_close(freq, exact, rtol=0, atol=2 / 20000)


def test_a_uniform_next_to_one_never_picks_a_token_without_weight():
    # in float32 a u within 3e-8 of 1 rounded the target up to the total: the last, zero-weight entry
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.2, 0.0, 0.0]]))
    for u in (1 - 1e-9, 1 - 2**-25, 1 - 2**-53):
        for top_p in (1.0, 0.99):  # the whole vocabulary in order, and a top-k selection
            assert draw_tokens(logits, 1.0, top_p, torch.tensor([u], dtype=torch.float64)).item() == 2


def test_greedy_is_the_argmax():
    logits = torch.tensor([[0.1, 3.0, 2.9], [5.0, -1.0, 4.0]])
    assert draw_tokens(logits, 0.0, 0.95, torch.rand(2)).tolist() == [1, 0]


def _peaked_tiny_llama():
    """The tiny random Llama with its head scaled up, so a few tokens hold most of the mass."""
    model, tok = tiny_llama()
    tok.pad_token = tok.eos_token
    with torch.no_grad():
        model.lm_head.weight.mul_(35)  # 8 tokens in its top-0.9 nucleus after the test prompt
    return model, tok


def _chi_square_p(counts: list[int], expected: list[float]) -> float:
    """Pearson's goodness-of-fit p-value: P[chi2(df) >= statistic], df = outcomes - 1."""
    stat = sum((c - e) ** 2 / e for c, e in zip(counts, expected))
    df = torch.tensor((len(counts) - 1) / 2, dtype=torch.float64)
    return torch.special.gammaincc(df, torch.tensor(stat / 2, dtype=torch.float64)).item()


def test_first_tokens_follow_the_distribution_that_generate_samples():
    """catcli's draws and `generate`'s, 3,000 each, both fit the exact temperature + top-p distribution."""
    from collections import Counter

    model, tok = _peaked_tiny_llama()
    prompt = "Problem:\nWhat is $12 + 7$?"
    settings = SamplingSettings(n=3000, temperature=0.9, top_p=0.9, max_new_tokens=1)
    enc = tok([prompt], return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        exact = nucleus(model(**enc).logits[0, -1], 0.9, 0.9)
    kept = exact.nonzero().squeeze(-1).tolist()
    assert 3 <= len(kept) <= 60  # a nucleus of a few tokens: the counts test every one
    by_text = Counter()  # tokens that decode to the same text are one outcome
    for i in kept:
        by_text[tok.decode([i], skip_special_tokens=True)] += exact[i].item()
    ours = [c.text for c in sample_completions(model, tok, [prompt], settings, seed=0)[0]]
    torch.manual_seed(0)
    with torch.inference_mode():  # top_k=0: generate's default top-k of 50 would cut the nucleus further
        out = model.generate(**enc, do_sample=True, temperature=0.9, top_p=0.9, top_k=0, max_new_tokens=1,
                             num_return_sequences=3000, pad_token_id=tok.pad_token_id)  # fmt: skip
    theirs = tok.batch_decode(out[:, -1:], skip_special_tokens=True)
    texts = sorted(by_text)
    for draws in (ours, theirs):
        assert set(draws) <= set(texts)
        counts = [draws.count(t) for t in texts]
        expected = [3000 * by_text[t] for t in texts]
        assert _chi_square_p(counts, expected) > 1e-4, (counts, [round(e) for e in expected])


# ---------------------------------------------------------------- decoding


def test_greedy_decoding_equals_generate_for_prompts_of_different_lengths():
    """Left padding, the shared prompt cache and the per-step positions: greedy tokens must be
    exactly those of `generate` on each prompt alone."""
    model, tok = tiny_llama()
    tok.pad_token = tok.eos_token
    prompts = ["Problem:\nWhat is $12 + 7$?", "Problem:\nWhat is $3 \\times 41$? Think step by step, then answer."]
    settings = SamplingSettings(n=2, temperature=0.0, max_new_tokens=10)
    ours = sample_completions(model, tok, prompts, settings, seed=0)
    for prompt, completions in zip(prompts, ours):
        enc = tok([prompt], return_tensors="pt", add_special_tokens=False)
        with torch.inference_mode():
            out = model.generate(**enc, do_sample=False, max_new_tokens=10, pad_token_id=tok.pad_token_id)
        want = tok.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        assert [c.text for c in completions] == [want, want]
        assert completions[0].tokens == 10 and completions[0].stop == "length"


def _spy_on_grouped_attention(monkeypatch):
    """Each call of the grouped attention: (query heads, key heads, whether a mask was given)."""
    from catcli import samples

    calls, real = [], samples._grouped_sdpa

    def spy(module, query, key, value, attention_mask, *args, **kwargs):
        calls.append((query.shape[1], key.shape[1], attention_mask is not None))
        return real(module, query, key, value, attention_mask, *args, **kwargs)

    monkeypatch.setattr(samples, "_grouped_sdpa", spy)
    return calls


def test_grouped_attention_reads_one_key_per_kv_head_and_gives_sdpas_logits(monkeypatch):
    from catcli.samples import grouped_kv_attention

    calls = _spy_on_grouped_attention(monkeypatch)
    model, tok = tiny_llama()  # 4 query heads over 2 KV heads
    tok.pad_token, tok.padding_side = tok.eos_token, "left"
    enc = tok(["Problem:\nWhat is $12 + 7$?", "Hi"], return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.inference_mode():
        want = model(**enc).logits
        with grouped_kv_attention(model):
            got = model(**enc).logits
        assert model.config._attn_implementation == "sdpa"
        assert calls == [(4, 2, True)] * 2  # both layers, the padding mask given, keys not copied per head
        torch.testing.assert_close(got[enc["attention_mask"].bool()], want[enc["attention_mask"].bool()])
        with pytest.raises(RuntimeError), grouped_kv_attention(model):
            raise RuntimeError
        assert model.config._attn_implementation == "sdpa"  # restored however the block ends


def test_sampling_uses_the_grouped_attention_at_every_step(monkeypatch):
    calls = _spy_on_grouped_attention(monkeypatch)
    model, tok = tiny_llama()
    tok.pad_token = tok.eos_token
    settings = SamplingSettings(n=2, temperature=0.0, max_new_tokens=5)
    sample_completions(model, tok, ["Problem:\nWhat is $12 + 7$?", "Hi"], settings, seed=0)
    assert len(calls) == 2 * 5 and all(kv == 2 and masked for _, kv, masked in calls)  # prefill + 4 steps
    assert model.config._attn_implementation == "sdpa"


class CountingModel(torch.nn.Module):
    """A model whose next token is the last one + 1, until token 40 (its end of sequence):
    a prompt ending in token t gives 39 - t tokens, then ends. Records each step's batch size."""

    eos = 40

    def __init__(self):
        super().__init__()
        from transformers import GenerationConfig

        self.generation_config = GenerationConfig(eos_token_id=self.eos)
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.batches: list[int] = []

    @property
    def device(self):
        return self.weight.device

    def forward(self, input_ids, attention_mask, position_ids, past_key_values, use_cache, logits_to_keep=0):
        from types import SimpleNamespace

        b, t = input_ids.shape
        self.batches.append(b)
        past_key_values.update(torch.zeros(b, 1, t, 2), torch.zeros(b, 1, t, 2), 0)  # one layer of cache
        assert past_key_values.get_seq_length() == attention_mask.shape[1]  # the mask grows with the cache
        logits = torch.full((b, t, 64), -1e9)
        logits[torch.arange(b), -1, (input_ids[:, -1] + 1).clamp(max=self.eos)] = 0.0
        return SimpleNamespace(logits=logits, past_key_values=past_key_values)


class CountingTokenizer:
    """Prompts are space-separated token ids; texts are the ids again."""

    padding_side = "right"
    eos_token_id = CountingModel.eos
    pad_token_id = 0

    def __call__(self, prompts, return_tensors, padding, add_special_tokens):
        from transformers import BatchEncoding

        rows = [[int(x) for x in p.split()] for p in prompts]
        width = max(map(len, rows))
        ids = torch.tensor([[0] * (width - len(r)) + r for r in rows])
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
        return BatchEncoding({"input_ids": ids, "attention_mask": mask})

    def batch_decode(self, rows, skip_special_tokens):
        return [" ".join(map(str, r)) for r in rows]


def test_sequences_that_end_leave_the_batch_and_say_why_they_stopped():
    model = CountingModel()
    prompts = ["5 36", "38", "1 2 3 30"]  # 3, 1 and 9 tokens before the end of sequence
    steps = []
    settings = SamplingSettings(n=2, temperature=1.0, top_p=1.0, max_new_tokens=6)
    out = sample_completions(
        model, CountingTokenizer(), prompts, settings, seed=0, on_step=lambda t, e: steps.append((t, e))
    )
    texts = [[c.text for c in row] for row in out]
    assert texts == [["37 38 39"] * 2, ["39"] * 2, ["31 32 33 34 35 36"] * 2]
    assert [(c.tokens, c.stop) for row in out for c in row[:1]] == [(3, "eos"), (1, "eos"), (6, "length")]
    # the prefill runs the 3 prompts once; then 6 rows, shrinking as sequences end (the last step feeds nothing)
    assert model.batches == [3, 6, 4, 4, 2, 2]
    assert steps == [(1, 0), (2, 2), (3, 2), (4, 4), (5, 4), (6, 4)]


class TableModel(CountingModel):
    """The next token's logits are a fixed random row of a table, chosen by the last token alone, so
    each sequence's distribution is its own whatever shares its batch."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(3)
        self.table = torch.randn(64, 64, generator=g)
        self.table[:, self.eos] += 2.0  # sequences end now and then, not at once

    def forward(self, input_ids, attention_mask, position_ids, past_key_values, use_cache, logits_to_keep=0):
        out = super().forward(input_ids, attention_mask, position_ids, past_key_values, use_cache)
        out.logits = self.table[input_ids[:, -1:]]
        return out


def test_a_sequences_draws_do_not_depend_on_when_others_end():
    """One generator per chunk and one uniform per sequence per step: a prompt sampled beside
    other prompts, whose sequences end at other steps, still gets the same tokens."""
    settings = SamplingSettings(n=4, temperature=1.0, top_p=0.9, max_new_tokens=12)
    tok = CountingTokenizer()
    first = sample_completions(TableModel(), tok, ["7", "11"], settings, seed=2)
    second = sample_completions(TableModel(), tok, ["7", "23"], settings, seed=2)
    assert first[0] == second[0]
    assert [c.tokens for c in first[1]] != [c.tokens for c in second[1]]  # the neighbours ended elsewhere
    assert len({c.text for c in first[0]}) > 1  # sampled: the rows differ
    assert sample_completions(TableModel(), tok, ["7", "11"], settings, seed=2) == first  # a function of (seed, chunk)


def test_completion_lengths_count_tokens_without_the_end_of_sequence():
    model = CountingModel()
    out = sample_completions(model, CountingTokenizer(), ["39"], SamplingSettings(n=1, max_new_tokens=4), seed=0)
    assert out[0][0].tokens == 0 and out[0][0].stop == "eos" and out[0][0].text == ""
    assert model.batches == [1]  # the prompt's forward alone: it ended at once
