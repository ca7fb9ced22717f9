"""The ``"compile"`` acceleration (``policies/lm/accel/static_decode.py``): same tokens, log-probs and
entropies as the plain path, and the fallback to it when compilation is unavailable or fails.

The fast tests run the static path with compilation replaced by the plain function (the static
cache, bucketing, padding and fallbacks are all exercised; only inductor is not); one slow test
compiles for real.
"""

from __future__ import annotations

import contextlib
import copy
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch

import egsw_gym  # noqa: F401  (registers the egsw/ ids)
import egsw_gym.policies.lm as lm_module
import egsw_gym.policies.lm.accel.static_decode as decode_module
from egsw_gym.policies.lm import LMPolicy
from egsw_gym.policies.lm.accel import DEFAULT_ACCEL, StaticRound
from egsw_gym.policies.lm.accel.runs import distinct_prompts

SMALL = dict(n_layer=2, n_embd=32, n_head=2, seed=0)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture
def no_inductor(monkeypatch):
    """The static path without compilation (the step function runs as plain Python)."""
    monkeypatch.setattr(decode_module, "_compile", lambda fn, device: fn)


def make_env(n: int = 6, new_tokens: int = 10):
    return gym.make_vec(
        "egsw/Arithmetic-v0",
        n,
        vectorization_mode="vector_entry_point",
        max_prompt_tokens=8,
        max_new_tokens=new_tokens,
    )


def policies(venv, **kwargs) -> tuple[LMPolicy, LMPolicy]:
    """A plain-path policy and a static-path policy sharing one model."""
    eager = LMPolicy(
        venv.single_observation_space,
        venv.single_action_space,
        lambda _: 1e-3,
        model_config=SMALL,
        accel=(),
        **kwargs,
    )
    static = LMPolicy(
        venv.single_observation_space,
        venv.single_action_space,
        lambda _: 1e-3,
        model=eager.model,
        accel=("compile",),
        **kwargs,
    )
    return eager, static


def rollout(policy: LMPolicy, obs: dict, steps: int, deterministic: bool = False, seed: int = 1):
    torch.manual_seed(seed)
    state, out = None, []
    for _ in range(steps):
        actions, log_probs, entropies, state = policy.act(obs, state, deterministic)
        out.append((actions, log_probs, entropies))
    return [torch.stack(x, 1) for x in zip(*out, strict=True)], state


def assert_same(a, b):
    torch.testing.assert_close(a[0], b[0], rtol=0, atol=0)  # same tokens
    torch.testing.assert_close(a[1], b[1], rtol=0, atol=1e-5)  # log-probs
    torch.testing.assert_close(a[2], b[2], rtol=0, atol=1e-5)  # entropies


def first_obs(venv, seed=0, groups: int | None = None):
    options = (
        None
        if groups is None
        else {"prompt_index": list(np.repeat(np.arange(groups), venv.num_envs // groups))}
    )
    obs, _ = venv.reset(seed=seed, options=options)
    return {k: torch.as_tensor(v) for k, v in obs.items()}


@pytest.mark.parametrize("deterministic", [False, True])
def test_static_path_matches_eager(no_inductor, monkeypatch, deterministic):
    venv = make_env(6)  # batch 6 runs in the batch-8 bucket (2 rounding rows)
    eager, static = policies(venv, temperature=0.7)
    obs = first_obs(venv)
    ref, _ = rollout(eager, obs, 10, deterministic)
    seen = []  # the attention implementation while a static step runs (choose_tokens ends the step)

    def spy(logits, uniform):
        seen.append(static.model.config._attn_implementation)
        return choose_tokens(logits, uniform)

    choose_tokens = decode_module.choose_tokens
    monkeypatch.setattr(decode_module, "choose_tokens", spy)
    got, state = rollout(static, obs, 10, deterministic)
    assert isinstance(state.accel, StaticRound) and state.cache is None, "the static path ran"
    # The bucket: batch 6 rounded up to 8; prompt + a round's steps rounded up to LENGTH_BUCKET.
    prompt_len = lm_module.prepare_prompt(obs["input_ids"], obs["attention_mask"])[0].shape[1]
    length = -(-(prompt_len + static.obs_len) // decode_module.LENGTH_BUCKET) * decode_module.LENGTH_BUCKET
    assert list(static._decoder.buckets) == [(8, length)]
    # The static steps ran with the math attention (CPU), and the model is back on its own after.
    assert seen and set(seen) == {"eager"}
    assert static.model.config._attn_implementation == "sdpa"
    assert_same(ref, got)
    # After an optimizer step the compiled step reads the new weights (no stale copy).
    with torch.no_grad():
        for p in eager.model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    ref2, _ = rollout(eager, obs, 10, deterministic, seed=2)
    got2, _ = rollout(static, obs, 10, deterministic, seed=2)
    assert_same(ref2, got2)
    assert not torch.equal(ref[1], ref2[1])


def test_static_path_with_shared_prompts_and_overflow(no_inductor, monkeypatch):
    venv = make_env(8)
    eager, static = policies(venv)
    obs = first_obs(venv, groups=2)  # two groups of 4 identical prompts: the shared prefill runs
    assert distinct_prompts(*lm_module.prepare_prompt(obs["input_ids"], obs["attention_mask"])) is not None
    monkeypatch.setattr(decode_module, "LENGTH_BUCKET", 16)  # a bucket shorter than the rollout
    # A bucket longer than MATH_ATTENTION_MAX_LENGTH keeps the model's SDPA attention.
    monkeypatch.setattr(decode_module, "MATH_ATTENTION_MAX_LENGTH", 8)
    seen = []
    choose_tokens = decode_module.choose_tokens
    monkeypatch.setattr(
        decode_module,
        "choose_tokens",
        lambda logits, u: seen.append(static.model.config._attn_implementation) or choose_tokens(logits, u),
    )
    ref, _ = rollout(eager, obs, 30)
    got, state = rollout(static, obs, 30)
    assert seen and set(seen) == {"sdpa"}
    # The bucket filled up mid-round: the round went on plainly from the copied cache.
    assert state.accel is None and state.cache is not None
    assert_same(ref, got)


def test_fallback_when_compilation_fails(monkeypatch):
    def broken(fn, device):
        def fail(*args):
            raise RuntimeError("inductor exploded")

        return fail

    monkeypatch.setattr(decode_module, "_compile", broken)
    venv = make_env(4)
    eager, static = policies(venv)
    obs = first_obs(venv)
    ref, _ = rollout(eager, obs, 8)
    with pytest.warns(UserWarning, match="compiled decoding is off.*inductor exploded"):
        got, state = rollout(static, obs, 8)
    assert_same(ref, got)
    assert static._decoder.failure is not None and state.accel is None
    # Later rounds stay eager without warning again.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again, state = rollout(static, obs, 8)
    assert state.accel is None
    assert_same(ref, again)


def test_fallback_when_compilation_is_unavailable(monkeypatch):
    monkeypatch.setattr(decode_module.shutil, "which", lambda name: None)  # no C++ compiler
    venv = make_env(4)
    eager, static = policies(venv)
    obs = first_obs(venv)
    with pytest.warns(UserWarning, match="no C\\+\\+ compiler"):
        got, state = rollout(static, obs, 6)
    assert state.accel is None
    assert_same(rollout(eager, obs, 6)[0], got)


def test_accel_validation_defaults_and_copies(no_inductor):
    venv = make_env(4)
    space = (venv.single_observation_space, venv.single_action_space, lambda _: 1e-3)
    with pytest.raises(ValueError, match="accel must name options"):
        LMPolicy(*space, accel=("compile", "turbo"))
    assert LMPolicy(*space, model_config=SMALL).accel == DEFAULT_ACCEL and "compile" not in DEFAULT_ACCEL
    assert LMPolicy(*space, model_config=SMALL, accel="all").accel == lm_module.ACCEL_OPTIONS
    assert LMPolicy(*space, model_config=SMALL, accel="compile").accel == ("compile",)
    _, static = policies(venv)
    rollout(static, first_obs(venv), 3)
    assert static._decoder is not None
    clone = copy.deepcopy(static)  # e.g. GRPO's reference policy: no decoder bound to the old model
    assert clone._decoder is None
    assert clone._get_constructor_parameters()["accel"] == ("compile",)


@pytest.mark.slow
def test_compiled_step_matches_eager():
    if decode_module.compile_available(torch.device("cpu")) is not None:
        pytest.skip("torch.compile is unavailable here")
    venv = make_env(8, new_tokens=12)
    eager, static = policies(venv)
    obs = first_obs(venv, groups=2)
    ref, _ = rollout(eager, obs, 12)
    got, state = rollout(static, obs, 12)
    assert static._decoder.failure is None and isinstance(state.accel, StaticRound)
    assert static._decoder.compiled_buckets == 1 and static._decoder.compile_seconds > 0
    assert_same(ref, got)


def test_guard_evaluation_is_skipped_only_while_nothing_guarded_changed(monkeypatch):
    monkeypatch.setattr(decode_module, "_compile", lambda fn, device: fn)
    skipped: list[int] = []
    monkeypatch.setattr(decode_module, "_SKIP_GUARDS", lambda: contextlib.nullcontext(skipped.append(1)))
    venv = make_env(4)
    eager, static = policies(venv)
    obs = first_obs(venv)
    ref, _ = rollout(eager, obs, 5)
    assert_same(ref, rollout(static, obs, 5)[0])
    assert len(skipped) == 3  # 4 decode steps: the first runs the guards, the next 3 skip them
    static.model.train()  # a guarded condition changed: the next call is guarded again
    rollout(static, obs, 5)
    assert len(skipped) == 6
    with torch.no_grad():
        for p in static.model.parameters():
            p.mul_(1.01)  # in-place weight updates (an optimizer step) keep the guards valid
    static.model.eval()
    rollout(static, obs, 5)
    assert len(skipped) == 9
