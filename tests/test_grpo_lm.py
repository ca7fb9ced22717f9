"""GRPO with ``"LMPolicy"`` on the batched text environment, through ``model.learn()``.

Small on purpose (a one-layer, 32-wide GPT-2, a handful of updates): the whole file runs in well
under a minute on one CPU thread. The learning claim itself (+20 points of held-out accuracy) is
measured by ``benchmarks/lm_learning.py``; here a cheap sanity check stands in for it.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3.common.vec_env import VecMonitor

import egsw_gym  # noqa: F401  (registers the egsw/ ids)
from egsw_gym import EGSW, GRPO
from egsw_gym.algorithms.grpo import GroupBatch
from egsw_gym.common.vec_env import VectorEnvAdapter
from egsw_gym.envs.tasks import Problem
from egsw_gym.envs.vector import TextGenerationVectorEnv, find_text_vector_env

ENV_ID = "egsw/Arithmetic-v0"
#: a tiny model: fast enough for many updates in a test, still a real transformers GPT-2
TINY = dict(n_layer=1, n_embd=32, n_head=2)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture
def make_model(tiny_lm_grpo):
    """The conftest's tiny-LM GRPO with this file's defaults: 16 slots, groups of 4, no EGSW unless asked."""

    def make(seed: int = 0, **kwargs) -> GRPO:
        defaults = dict(n_envs=16, group_size=4, n_groups=4, learning_rate=1e-3, ent_coef=0.0, egsw=None)
        defaults.update(env_kwargs=None, device="cpu", seed=seed)
        return tiny_lm_grpo(**{**defaults, **kwargs})

    return make


def collect(model: GRPO) -> GroupBatch:
    """One batch of groups, as ``learn`` collects it."""
    _, callback = model._setup_learn(1, None, True, "test", False)
    batch = model.collect_groups(model.env, callback)
    assert batch is not None
    return batch


def test_id_string_builds_the_batched_vector_env(make_model):
    model = make_model()
    assert isinstance(model.env, VecMonitor)
    assert isinstance(model.env.venv, VectorEnvAdapter)
    assert isinstance(model.env.venv.venv, TextGenerationVectorEnv)
    assert model.env.num_envs == 16


def test_control_ids_keep_the_dummy_vec_env():
    from stable_baselines3.common.vec_env import DummyVecEnv

    model = GRPO("MlpPolicy", "CartPole-v1", n_envs=4, group_size=4, n_groups=1, seed=0, device="cpu")
    assert isinstance(model.env, DummyVecEnv)


def test_learn_runs_and_logs_lm_metrics(make_model):
    model = make_model(egsw=EGSW(alpha=0.1), beta=0.04)
    # log_interval=None: nothing is dumped, so the logger still holds the last update's values.
    model.learn(400, log_interval=None)
    recorded = dict(model.logger.name_to_value)
    assert model.num_timesteps >= 400
    for key in (
        "rollout/correct",  # fraction of right answers among the batch's completions (info "correct")
        "train/episode_len_mean",  # completion length, EOS included
        "train/entropy",
        "train/kl",
        "train/clip_fraction",
        "egsw/weight_ess",
        "time/valid_steps_per_s",  # generated tokens per second
    ):
        assert key in recorded, f"{key} not logged; got {sorted(recorded)}"
    assert 0.0 <= recorded["rollout/correct"] <= 1.0


def test_groups_share_prompts_and_rewards_match_the_verifier(monkeypatch, make_model):
    model = make_model(n_envs=16, group_size=4, n_groups=8)  # two rounds of four groups
    seeds_seen: list[list[int]] = []
    original = GRPO._set_reset_seeds

    def spy(env, seeds):
        seeds_seen.append([int(s) for s in seeds])
        return original(env, seeds)

    monkeypatch.setattr(GRPO, "_set_reset_seeds", staticmethod(spy))
    batch = collect(model)
    seeds = [s for round_seeds in seeds_seen for s in round_seeds]
    assert len(seeds) == 32

    ids, attn = batch.first_obs["input_ids"], batch.first_obs["attention_mask"]
    for g in range(8):
        rows = slice(4 * g, 4 * g + 4)
        assert (ids[rows] == ids[4 * g]).all() and (attn[rows] == attn[4 * g]).all()
        assert len(set(seeds[rows])) == 1
        assert int(batch.group_ids[4 * g]) == int(batch.group_ids[4 * g + 3])
    assert len({tuple(ids[4 * g].tolist()) for g in range(8)}) > 1  # different groups, different prompts

    # Replay each member's reset seed on a single environment: same prompt, and the batch's return
    # is the task verifier's score of the decoded completion.
    single = gym.make(ENV_ID)
    task, tokenizer = single.unwrapped.task, single.unwrapped.tokenizer
    eos = tokenizer.eos_token_id
    returns = (batch.rewards * batch.mask).sum(dim=1)
    for i, seed in enumerate(seeds):
        obs, info = single.reset(seed=seed)
        np.testing.assert_array_equal(obs["input_ids"], ids[i].numpy())
        tokens = batch.actions[i][batch.mask[i]].tolist()
        assert tokens[-1] == eos or len(tokens) == single.unwrapped.max_new_tokens
        text = tokenizer.decode([t for t in tokens if t != eos], skip_special_tokens=True)
        expected = task.score(text, Problem(info["prompt"], info["answer"])).score
        assert float(returns[i]) == pytest.approx(expected)


def test_same_seed_same_parameters(make_model):
    # The untrained model earns no reward (zero advantages); the entropy bonus makes every update
    # depend on what was sampled, so that a different seed must give different parameters.
    kwargs = dict(egsw=EGSW(), ent_coef=0.01)
    models = []
    for seed in (3, 3, 4):
        # Seeding is global (SB3): build and train one model at a time.
        model = make_model(seed=seed, **kwargs)
        if not models:
            init = [p.detach().clone() for p in model.policy.parameters()]
        model.learn(300)
        models.append(model)
    a, b, c = models
    for pa, pb in zip(a.policy.parameters(), b.policy.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert any(not torch.equal(p0, pa) for p0, pa in zip(init, a.policy.parameters(), strict=True))
    assert any(
        not torch.equal(pa, pc) for pa, pc in zip(a.policy.parameters(), c.policy.parameters(), strict=True)
    )


def test_the_seed_sets_the_tiny_models_initial_weights(make_model):
    """As for SB3's own networks: same seed, same initial model; another seed, another model;
    model_config={"seed": s} pins the weights whatever the algorithm's seed."""

    def initial(algo_seed: int, **config) -> list[torch.Tensor]:
        model = make_model(seed=algo_seed, policy_kwargs=dict(model_config=dict(TINY, **config)))
        return [p.detach().clone() for p in model.policy.parameters()]

    a, b, c = initial(3), initial(3), initial(4)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert any(not torch.equal(x, z) for x, z in zip(a, c, strict=True))
    pinned_3, pinned_4 = initial(3, seed=7), initial(4, seed=7)
    assert all(torch.equal(x, y) for x, y in zip(pinned_3, pinned_4, strict=True))


def greedy_completions(model: GRPO, n: int = 24) -> list[list[int]]:
    from egsw_gym.llm import generate_completions
    from egsw_gym.llm.warm_start import encode_prompts

    env = gym.make(ENV_ID)
    task = env.unwrapped.task
    prompts = encode_prompts(env.unwrapped.tokenizer, [task.problem(i, "test") for i in range(n)], env)
    return generate_completions(model.policy, prompts, env.unwrapped.max_new_tokens, deterministic=True)


def test_save_load_round_trip(tmp_path, monkeypatch, make_model):
    model = make_model(egsw=EGSW(alpha=0.3, temperature=2.0, mode="trajectory"), beta=0.02)
    model.learn(300)
    path = tmp_path / "grpo_lm.zip"
    model.save(path)
    # No hub access: any attempt to reach the network fails the test.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    loaded = GRPO.load(path, device="cpu")
    assert loaded.egsw is not None and loaded.egsw.to_dict() == model.egsw.to_dict()
    assert loaded.beta == 0.02 and loaded.ref_policy is not None
    for pa, pb in zip(model.policy.parameters(), loaded.policy.parameters(), strict=True):
        assert torch.equal(pa, pb)
    for pa, pb in zip(model.ref_policy.parameters(), loaded.ref_policy.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert greedy_completions(loaded) == greedy_completions(model)
    obs = gym.make(ENV_ID).reset(seed=5)[0]
    assert loaded.predict(obs, deterministic=True)[0] == model.predict(obs, deterministic=True)[0]
    loaded.set_env(model.env)
    loaded.learn(200, reset_num_timesteps=False)  # and it trains on


def test_local_checkpoint_directory_as_model_and_tokenizer(tmp_path, make_model):
    base = make_model()
    ckpt = base.policy.save_pretrained(tmp_path / "ckpt")
    model = GRPO(
        "LMPolicy",
        ENV_ID,
        n_envs=8,
        group_size=4,
        n_groups=2,
        policy_kwargs=dict(model=ckpt),
        env_kwargs=dict(tokenizer=ckpt),
        seed=0,
        device="cpu",
    )
    for pa, pb in zip(base.policy.parameters(), model.policy.parameters(), strict=True):
        assert torch.equal(pa, pb)
    model.learn(100)
    path = tmp_path / "from_dir.zip"
    model.save(path)
    assert GRPO.load(path, device="cpu").policy.n_actions == model.policy.n_actions


def test_sync_reference_policy_after_a_warm_start(make_model):
    from egsw_gym.llm import warm_start

    model = make_model(beta=0.1)
    venv = find_text_vector_env(model.env)
    warm_start(model.policy, venv.task, venv.tokenizer, steps=3, batch_size=8, env=venv)
    assert any(
        not torch.equal(p, r)
        for p, r in zip(model.policy.parameters(), model.ref_policy.parameters(), strict=True)
    )
    model.sync_reference_policy()
    for p, r in zip(model.policy.parameters(), model.ref_policy.parameters(), strict=True):
        assert torch.equal(p, r)
    batch = collect(model)
    model.train(batch)
    assert model.logger.name_to_value["train/kl"] == pytest.approx(0.0, abs=1e-6)  # first step: policy == ref


def test_learning_sanity_accuracy_rises():
    """A cheap learning check on the example's task (reverse a 3-digit number), with the default
    model: from a warm start that is right about half the time, GRPO+EGSW raises held-out greedy
    accuracy by at least 20 points within ~30k generated tokens."""
    import importlib.util
    from pathlib import Path

    from egsw_gym.llm import evaluate_accuracy, warm_start

    path = Path(__file__).resolve().parents[1] / "examples" / "custom_task.py"
    spec = importlib.util.spec_from_file_location("custom_task_example", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    env_kwargs = dict(task=example.ReverseTask())
    model = GRPO(
        "LMPolicy",
        ENV_ID,
        env_kwargs=env_kwargs,
        n_envs=64,
        group_size=8,
        n_groups=8,
        n_epochs=1,
        learning_rate=2e-4,
        egsw=EGSW(alpha=0.1),
        seed=0,
        device="cpu",
    )
    venv = find_text_vector_env(model.env)
    warm_start(model.policy, venv.task, venv.tokenizer, steps=45, seed=0, env=venv)
    before = evaluate_accuracy(model.policy, ENV_ID, n=100, k=0, env_kwargs=env_kwargs)["accuracy"]
    model.learn(30_000)
    after = evaluate_accuracy(model.policy, ENV_ID, n=100, k=0, env_kwargs=env_kwargs)["accuracy"]
    assert 0.05 < before < 0.9 and after >= before + 0.2, (before, after)
