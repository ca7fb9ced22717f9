"""The text vector env's no-autoreset mode, and GRPO rounds that use it.

A GRPO round keeps only each slot's first episode; with SAME_STEP autoreset the env would sample,
encode and later verify episodes that are thrown away. Holding finished slots must give the same
first episodes (observations, rewards, dones, infos) with fewer task samples and verifier calls.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from stable_baselines3.common.env_util import make_vec_env

import egsw_gym  # noqa: F401  (registers the egsw/ ids)
from egsw_gym import GRPO
from egsw_gym.algorithms.grpo import rollout as grpo_rollout
from egsw_gym.envs.vector import TextGenerationVectorEnv, find_text_vector_env, hold_finished_episodes


class Counts:
    """Counts the task samples (``choose_problem``) and verifier calls (``finish``) of an env's core."""

    def __init__(self, env: TextGenerationVectorEnv, monkeypatch: pytest.MonkeyPatch) -> None:
        self.samples = self.verifications = 0
        core = env.core
        choose, finish = core.choose_problem, core.finish

        def counted_choose(*a, **k):
            self.samples += 1
            return choose(*a, **k)

        def counted_finish(*a, **k):
            self.verifications += 1
            return finish(*a, **k)

        monkeypatch.setattr(core, "choose_problem", counted_choose)
        monkeypatch.setattr(core, "finish", counted_finish)


def play_round(env: TextGenerationVectorEnv, seed: int) -> list[dict]:
    """Reset with ``seed`` and step random tokens (EOS likely) for max_new_tokens steps; per-step records."""
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    records = [{"obs": obs}]
    for _ in range(env.max_new_tokens):
        # EOS often, so episodes end at different steps and autoreset has work to do.
        actions = np.where(
            rng.random(env.num_envs) < 0.3, env.eos_token_id, rng.integers(4, 20, env.num_envs)
        )
        obs, rewards, terminated, truncated, info = env.step(actions.astype(np.int64))
        records.append(dict(obs=obs, rewards=rewards, terminated=terminated, truncated=truncated, info=info))
    return records


def test_held_slots_give_the_same_first_episodes_with_fewer_samples(monkeypatch):
    n = 12
    auto = TextGenerationVectorEnv(n, "arithmetic", max_new_tokens=6)
    held = TextGenerationVectorEnv(n, "arithmetic", max_new_tokens=6)
    assert hold_finished_episodes(held) and held._hold_pending
    counts_auto, counts_held = Counts(auto, monkeypatch), Counts(held, monkeypatch)
    a, h = play_round(auto, 7), play_round(held, 7)

    active = np.ones(n, dtype=bool)
    for step_a, step_h in zip(a[1:], h[1:], strict=True):
        # Every slot still in its first episode sees identical data in both modes.
        for key in ("rewards", "terminated", "truncated"):
            np.testing.assert_array_equal(step_a[key][active], step_h[key][active])
        done = (step_a["terminated"] | step_a["truncated"]) & active
        going = active & ~done  # (a finishing slot's obs is the next episode's under autoreset)
        for key in ("input_ids", "attention_mask"):
            np.testing.assert_array_equal(step_a["obs"][key][going], step_h["obs"][key][going])
        for i in np.flatnonzero(done):
            for key in ("input_ids", "attention_mask"):
                np.testing.assert_array_equal(
                    step_a["info"]["final_obs"][i][key], step_h["info"]["final_obs"][i][key]
                )
            assert step_a["info"]["final_info"]["correct"][i] == step_h["info"]["final_info"]["correct"][i]
        # Held slots: no reward, never done again, observation frozen at the final one.
        waiting = ~active
        assert not step_h["rewards"][waiting].any()
        assert not (step_h["terminated"] | step_h["truncated"])[waiting].any()
        active &= ~done
    assert not active.any(), "every slot's first episode ended within max_new_tokens steps"
    last_h = h[-1]["obs"]["input_ids"]
    first_done = [next(s for s in h[1:] if s["terminated"][i] or s["truncated"][i]) for i in range(n)]
    for i in range(n):
        np.testing.assert_array_equal(last_h[i], first_done[i]["info"]["final_obs"][i]["input_ids"])

    # One task sample per slot (the reset) and one verification per slot; autoreset did more of both.
    assert (counts_held.samples, counts_held.verifications) == (n, n)
    assert counts_auto.samples > n and counts_auto.verifications > n

    # The hold covered that reset's episodes only: the next reset releases the slots and restores
    # SAME_STEP autoreset (evaluate_policy on the env would otherwise wait forever).
    samples = counts_held.samples
    play_round(held, 7)
    assert counts_held.samples > samples + n and held.autoreset and not held._hold_episodes
    # autoreset=False holds every reset's episodes.
    held.autoreset = False
    samples = counts_held.samples
    play_round(held, 7)
    play_round(held, 8)
    assert counts_held.samples == samples + 2 * n


def tiny_grpo(n_envs: int, n_groups: int, seed: int) -> GRPO:
    """GRPO with a one-layer, 32-wide LMPolicy on the batched arithmetic env (groups of 4)."""
    return GRPO(
        "LMPolicy",
        "egsw/Arithmetic-v0",
        n_envs=n_envs,
        group_size=4,
        n_groups=n_groups,
        n_epochs=1,
        policy_kwargs=dict(model_config=dict(n_layer=1, n_embd=32, n_head=2)),
        device="cpu",
        seed=seed,
    )


def test_hold_finished_episodes_finds_the_env_under_sb3_wrappers():
    model = tiny_grpo(n_envs=4, n_groups=1, seed=0)
    inner = find_text_vector_env(model.env)  # under VecMonitor and the VectorEnvAdapter
    assert isinstance(inner, TextGenerationVectorEnv) and find_text_vector_env(inner) is inner
    assert inner.num_envs == 4
    assert hold_finished_episodes(model.env) and inner._hold_pending
    assert hold_finished_episodes(model.env, hold=False) and not inner._hold_pending
    cartpole = make_vec_env("CartPole-v1", n_envs=1)
    assert find_text_vector_env(cartpole) is None
    assert not hold_finished_episodes(cartpole)


def _round_batch(monkeypatch: pytest.MonkeyPatch, hold: bool):
    model = tiny_grpo(n_envs=8, n_groups=4, seed=3)
    if not hold:
        monkeypatch.setattr(grpo_rollout, "hold_finished_episodes", lambda env, hold=True: False)
    counts = Counts(find_text_vector_env(model.env), monkeypatch)
    _, callback = model._setup_learn(1, None, True, "test", False)
    batch = model.collect_groups(model.env, callback)
    return batch, counts, [dict(e) for e in model.ep_info_buffer]


@pytest.mark.usefixtures("one_thread")
def test_grpo_round_same_batch_fewer_verifier_calls(monkeypatch):
    with monkeypatch.context() as patch:
        batch_auto, counts_auto, episodes_auto = _round_batch(patch, hold=False)
    batch_held, counts_held, episodes_held = _round_batch(monkeypatch, hold=True)
    for field in ("actions", "old_log_probs", "entropies", "rewards", "mask"):
        torch.testing.assert_close(getattr(batch_auto, field), getattr(batch_held, field), rtol=0, atol=0)
    for key in ("input_ids", "attention_mask"):
        torch.testing.assert_close(batch_auto.first_obs[key], batch_held.first_obs[key], rtol=0, atol=0)
    assert [(e["r"], e["l"]) for e in episodes_auto] == [(e["r"], e["l"]) for e in episodes_held]
    episodes = 8 * 2  # n_envs x rounds
    assert counts_held.verifications == episodes
    # At most one draw per slot and reset (the reset of _setup_learn: 8 slots; each round's reset:
    # one per group, since a group's slots share their seed and problem): no autoreset episode.
    assert counts_held.samples <= episodes + 8
    assert counts_auto.verifications >= counts_held.verifications  # > when an autoreset episode ends
    assert counts_auto.samples > counts_held.samples
