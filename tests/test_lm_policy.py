"""LMPolicy: KV-cached act() vs teacher-forced evaluate_sequences(), left padding, saving, LoRA, warm start."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from gymnasium import spaces

pytest.importorskip("transformers")


from egsw_gym.common.tokenizer import load_tokenizer  # noqa: E402
from egsw_gym.policies.lm import LMPolicy, prepare_prompt, sequence_log_probs  # noqa: E402
from egsw_gym.policies.lm.accel.runs import distinct_prompts  # noqa: E402

torch.set_num_threads(1)

P, N = 10, 6
VOCAB = 100  # the built-in character tokenizer
SMALL = {"n_layer": 2, "n_embd": 32, "n_head": 2, "n_positions": 64}


def obs_space(length: int = P + N) -> spaces.Dict:
    return spaces.Dict(
        {
            "input_ids": spaces.Box(0, VOCAB - 1, (length,), np.int64),
            "attention_mask": spaces.Box(0, 1, (length,), np.int64),
        }
    )


def make_policy(**kwargs) -> LMPolicy:
    kwargs.setdefault("model_config", dict(SMALL))
    return LMPolicy(obs_space(), spaces.Discrete(VOCAB), lambda _: 1e-3, **kwargs)


def first_obs(lengths, seed: int = 0) -> dict[str, torch.Tensor]:
    """Env-format first observations: prompts of the given lengths left-padded into P slots."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.zeros(len(lengths), P + N, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, n in enumerate(lengths):
        ids[i, P - n : P] = torch.randint(4, VOCAB, (n,), generator=gen)
        mask[i, P - n : P] = 1
    return {"input_ids": ids, "attention_mask": mask}


def grouped_obs(lengths, group_size: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Every prompt of ``first_obs(lengths)`` repeated ``group_size`` times (GRPO's groups)."""
    obs = first_obs(lengths, seed)
    return {k: v.repeat_interleave(group_size, 0) for k, v in obs.items()}


def rollout(policy: LMPolicy, obs, steps: int = N, deterministic: bool = False):
    state, out = None, []
    for _ in range(steps):
        actions, log_probs, entropies, state = policy.act(obs, state, deterministic)
        out.append((actions, log_probs, entropies))
    return tuple(torch.stack(x, 1) for x in zip(*out, strict=True))


def reference_step(policy: LMPolicy, tokens: list[int], temperature: float = 1.0) -> torch.Tensor:
    """Log-softmax of the next token for one unpadded sequence: no padding, default positions."""
    with torch.no_grad():
        logits = policy.model(input_ids=torch.tensor([tokens])).logits[0, -1, :VOCAB].float()
    return torch.log_softmax(logits / temperature, -1)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_act_matches_evaluate_and_unpadded_reference(temperature):
    torch.manual_seed(0)
    policy = make_policy(temperature=temperature)
    lengths = [3, 10, 7, 1]
    obs = first_obs(lengths)
    actions, lp_act, ent_act = rollout(policy, obs)
    mask = torch.ones_like(actions, dtype=torch.bool)
    mask[0, 4:] = False  # an episode that ended early: padding after the end
    lp_eval, ent_eval = policy.evaluate_sequences(obs, None, torch.where(mask, actions, 0), mask)
    assert lp_eval.shape == ent_eval.shape == actions.shape
    assert torch.allclose(lp_eval[mask], lp_act[mask], atol=1e-4)
    assert torch.allclose(ent_eval[mask], ent_act[mask], atol=1e-4)
    assert (lp_eval[~mask] == 0).all()
    # The gold standard: each row alone, without any padding, with default positions.
    for i, n in enumerate(lengths):
        prompt = obs["input_ids"][i, P - n : P].tolist()
        for t in range(N):
            ref = reference_step(policy, prompt + actions[i, :t].tolist(), temperature)
            assert abs(ref[actions[i, t]] - lp_act[i, t]) < 1e-4
            # entropy is the exact Shannon entropy of the (tempered) sampling distribution
            assert abs(-(ref.exp() * ref).sum() - ent_act[i, t]) < 1e-4


def test_kv_cached_act_equals_uncached_forward():
    policy = make_policy()
    lengths = [2, 9, 5]
    obs = first_obs(lengths, seed=1)
    actions, lp_act, _ = rollout(policy, obs, deterministic=True)
    # Re-read each step's observation (prompt + generated tokens from slot P) without a cache.
    for t in range(N):
        ids = obs["input_ids"].clone()
        mask = obs["attention_mask"].clone()
        ids[:, P : P + t] = actions[:, :t]
        mask[:, P : P + t] = 1
        a, lp, _, _ = policy.act({"input_ids": ids, "attention_mask": mask}, None, deterministic=True)
        assert torch.equal(a, actions[:, t])
        assert torch.allclose(lp, lp_act[:, t], atol=1e-4)


def test_prepare_prompt_packs_right_padding_and_empty_rows():
    ids = torch.tensor([[0, 5, 6, 7, 0], [0, 0, 0, 8, 9], [0, 0, 0, 0, 0]])
    mask = (ids != 0).long()
    packed, pmask = prepare_prompt(ids, mask, fill_token_id=2)
    assert packed.tolist() == [[5, 6, 7], [0, 8, 9], [0, 0, 2]]
    assert pmask.tolist() == [[1, 1, 1], [0, 1, 1], [0, 0, 1]]


def test_gradients_flow_in_evaluate_sequences():
    policy = make_policy()
    obs = first_obs([4, 8])
    actions, _, _ = rollout(policy, obs)
    mask = torch.ones_like(actions, dtype=torch.bool)
    log_probs, entropies = policy.evaluate_sequences(obs, None, actions, mask)
    assert log_probs.requires_grad and entropies.requires_grad
    (log_probs.sum() + entropies.sum()).backward()
    grads = [p.grad for p in policy.parameters() if p.requires_grad]
    assert all(g is not None for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    # act's outputs are ordinary tensors (not inference tensors) usable next to graph tensors
    _, lp_old, _, _ = policy.act(obs, None)
    log_probs, _ = policy.evaluate_sequences(obs, None, actions, mask)
    (log_probs[:, 0] * lp_old).sum().backward()


def test_predict_single_and_batched_observation():
    policy = make_policy()
    obs = first_obs([3, 5])
    single = {k: v[0].numpy() for k, v in obs.items()}
    action, state = policy.predict(single, deterministic=True)
    assert state is None and np.ndim(action) == 0 and 0 <= int(action) < VOCAB
    batched, _ = policy.predict({k: v.numpy() for k, v in obs.items()}, deterministic=True)
    assert batched.shape == (2,) and int(batched[0]) == int(action)


def test_bad_spaces_and_models_raise_clear_errors():
    lr = lambda _: 1e-3  # noqa: E731
    with pytest.raises(ValueError, match="text-generation environment.*Box"):
        LMPolicy(spaces.Box(0, 1, (4,)), spaces.Discrete(VOCAB), lr)
    with pytest.raises(ValueError, match="Dict\\(input_ids"):
        LMPolicy(spaces.Dict({"obs": spaces.Box(0, 1, (4,))}), spaces.Discrete(VOCAB), lr)
    with pytest.raises(ValueError, match="action space"):
        LMPolicy(obs_space(), spaces.Box(-1, 1, (2,)), lr)
    with pytest.raises(ValueError, match="vocabulary \\(50 tokens\\) is smaller"):
        LMPolicy(obs_space(), spaces.Discrete(VOCAB), lr, model_config={**SMALL, "vocab_size": 50})
    with pytest.raises(ValueError, match="at most 8 positions"):
        LMPolicy(obs_space(), spaces.Discrete(VOCAB), lr, model_config={**SMALL, "n_positions": 8})
    with pytest.raises(ValueError, match="not a local directory"):
        LMPolicy(obs_space(), spaces.Discrete(VOCAB), lr, model="/nonexistent/checkpoint")


def test_directories_that_are_not_checkpoints_name_the_argument(tmp_path):
    # A directory (say, one a tampered checkpoint's policy_kwargs points at) that holds no model or
    # tokenizer: a ValueError naming the argument, not transformers' own message alone.
    (tmp_path / "config.json").write_text('{"model_type": "no-such-architecture"}')
    lr = lambda _: 1e-3  # noqa: E731
    with pytest.raises(ValueError, match="model=.*not a loadable causal-LM checkpoint"):
        LMPolicy(obs_space(), spaces.Discrete(VOCAB), lr, model=str(tmp_path))
    with pytest.raises(ValueError, match="tokenizer=.*not a loadable tokenizer"):
        load_tokenizer(str(tmp_path))


def test_directories_that_ship_code_are_refused_without_running_or_offering_it(tmp_path, capsys):
    # A config that names its own code (auto_map) next to that code: transformers' default
    # (trust_remote_code=None) would ask on a terminal whether to run it. Refused, never asked.
    marker = tmp_path / "ran"
    auto_map = {"AutoConfig": "evil.C", "AutoModelForCausalLM": "evil.M", "AutoTokenizer": ["evil.T", None]}
    for name, config in (("model", "config.json"), ("tok", "tokenizer_config.json")):
        (tmp_path / name).mkdir()
        (tmp_path / name / config).write_text(json.dumps({"model_type": "evil", "auto_map": auto_map}))
        (tmp_path / name / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('x')\n")
    lr = lambda _: 1e-3  # noqa: E731
    with pytest.raises(ValueError, match="(?s)model=.*not a loadable causal-LM checkpoint.*custom code"):
        LMPolicy(obs_space(), spaces.Discrete(VOCAB), lr, model=str(tmp_path / "model"))
    with pytest.raises(ValueError, match="(?s)tokenizer=.*not a loadable tokenizer.*custom code"):
        load_tokenizer(str(tmp_path / "tok"))
    assert not marker.exists()
    assert "Do you wish to run the custom code" not in capsys.readouterr().out


def test_larger_model_vocabulary_is_restricted_to_the_action_space():
    policy = make_policy(model_config={**SMALL, "vocab_size": 160})
    obs = first_obs([4, 6])
    actions, lp_act, _ = rollout(policy, obs)
    assert int(actions.max()) < VOCAB
    lp_eval, _ = policy.evaluate_sequences(obs, None, actions, torch.ones_like(actions, dtype=torch.bool))
    assert torch.allclose(lp_eval, lp_act, atol=1e-4)


LLAMA = {
    "model_type": "llama",
    "vocab_size": VOCAB,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "max_position_embeddings": 64,
}


@pytest.mark.parametrize("group_size", [1, 3])
def test_rotary_architecture_from_config_is_consistent(group_size):
    """Positions matter differently with rotary embeddings (Llama): same consistency, also when
    repeated prompts share their prompt pass (group_size 3)."""
    torch.manual_seed(0)
    policy = make_policy(model_config=dict(LLAMA))
    obs = grouped_obs([2, 9, 5], group_size)
    actions, lp_act, _ = rollout(policy, obs)
    mask = torch.ones_like(actions, dtype=torch.bool)
    lp_eval, _ = policy.evaluate_sequences(obs, None, actions, mask)
    assert torch.allclose(lp_eval, lp_act, atol=1e-4)
    ids, pmask = prepare_prompt(obs["input_ids"], obs["attention_mask"])
    unshared, _ = sequence_log_probs(policy.model, ids, pmask, actions, n_actions=VOCAB)
    assert torch.allclose(lp_eval, unshared, atol=1e-5)


def test_checkpoint_directory_round_trip_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    policy = make_policy()
    obs = first_obs([3, 7])
    actions, lp, _ = rollout(policy, obs)
    mask = torch.ones_like(actions, dtype=torch.bool)
    directory = policy.save_pretrained(tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "config.json").exists() and (tmp_path / "ckpt" / "tokenizer.json").exists()
    loaded = LMPolicy(obs_space(), spaces.Discrete(VOCAB), lambda _: 1e-3, model=directory)
    assert loaded.tokenizer.decode(loaded.tokenizer("12+7=")["input_ids"]) == "12+7="
    lp_loaded, _ = loaded.evaluate_sequences(obs, None, actions, mask)
    assert torch.allclose(lp_loaded, lp, atol=1e-5)

    # SB3's own policy save/load: state_dict plus constructor parameters, no hub, no original model.
    policy.save(str(tmp_path / "policy.pt"))
    restored = LMPolicy.load(str(tmp_path / "policy.pt"), device="cpu")
    lp_restored, _ = restored.evaluate_sequences(obs, None, actions, mask)
    assert torch.allclose(lp_restored, lp, atol=1e-5)
    # and the weights really are in the SB3 state_dict
    assert any(k.startswith("model.") for k in policy.state_dict())


def test_lora_trains_only_adapter_parameters(tmp_path):
    pytest.importorskip("peft")
    policy = make_policy(
        lora_config={"r": 4, "lora_alpha": 8, "lora_dropout": 0.1, "target_modules": ["c_attn"]}
    )
    trainable = {n for n, p in policy.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    optimized = sum(p.numel() for g in policy.optimizer.param_groups for p in g["params"])
    assert optimized == sum(p.numel() for n, p in policy.named_parameters() if n in trainable)
    before = {n: p.detach().clone() for n, p in policy.named_parameters()}
    obs = grouped_obs([3, 6], group_size=2)  # repeated prompts: the shared prompt pass through peft
    actions, lp_act, _ = rollout(policy, obs)
    mask = torch.ones_like(actions, dtype=torch.bool)
    log_probs, _ = policy.evaluate_sequences(obs, None, actions, mask)
    assert torch.allclose(log_probs, lp_act, atol=1e-4)
    for _ in range(2):  # LoRA B starts at zero: the second step is the one that moves A
        log_probs, _ = policy.evaluate_sequences(obs, None, actions, mask)
        policy.optimizer.zero_grad()
        (-log_probs.sum()).backward()
        policy.optimizer.step()
    for name, param in policy.named_parameters():
        changed = not torch.equal(param.detach(), before[name])
        assert changed == (name in trainable), name
    # merged save gives a standalone checkpoint that reproduces the adapted policy
    lp_trained, _ = policy.evaluate_sequences(obs, None, actions, mask)
    loaded = LMPolicy(
        obs_space(), spaces.Discrete(VOCAB), lambda _: 1e-3, model=policy.save_pretrained(tmp_path / "m")
    )
    lp_loaded, _ = loaded.evaluate_sequences(obs, None, actions, mask)
    assert torch.allclose(lp_loaded, lp_trained, atol=1e-4)


def test_act_on_the_vector_env_matches_evaluate_sequences():
    """The real rollout path: the batched text env (SAME_STEP autoreset) stepped with act()."""
    import gymnasium as gym

    import egsw_gym  # noqa: F401  (registers the egsw/* ids)

    venv = gym.make_vec("egsw/Arithmetic-v0", 6, vectorization_mode="vector_entry_point", max_new_tokens=5)
    policy = LMPolicy(venv.single_observation_space, venv.single_action_space, lambda _: 1e-3)
    obs, _ = venv.reset(seed=[0, 1, 2, 3, 4, 5])
    first = {k: torch.as_tensor(v) for k, v in obs.items()}
    state, active, steps = None, np.ones(6, dtype=bool), []
    while active.any():
        actions, log_probs, _, state = policy.act({k: torch.as_tensor(v) for k, v in obs.items()}, state)
        obs, _, terminated, truncated, _ = venv.step(actions.numpy())
        steps.append((actions, log_probs, torch.as_tensor(active.copy())))
        active &= ~(terminated | truncated)
    actions, lp_act, mask = (torch.stack(x, 1) for x in zip(*steps, strict=True))
    lp_eval, _ = policy.evaluate_sequences(first, None, actions, mask)
    assert torch.allclose(lp_eval[mask], lp_act[mask], atol=1e-4)


def test_warm_start_raises_arithmetic_accuracy():
    import gymnasium as gym

    import egsw_gym  # noqa: F401
    from egsw_gym.llm import evaluate_accuracy, warm_start

    env = gym.make("egsw/Arithmetic-v0")
    policy = LMPolicy(env.observation_space, env.action_space, lambda _: 1e-3)
    before = evaluate_accuracy(policy, env, n=200, k=0)
    stats = warm_start(policy, env.unwrapped.task, steps=150, batch_size=32, seed=0, env=env)
    after = evaluate_accuracy(policy, "egsw/Arithmetic-v0", n=200, k=4)
    assert stats["loss"] < 0.4 * stats["first_loss"]
    assert before["accuracy"] == 0.0
    assert after["accuracy"] > before["accuracy"]
    assert after["pass@4"] >= after["accuracy"] and after["pass@4"] > 0
    assert 1.5 <= after["mean_length"] <= 3.5  # learnt the format: a 1-3 digit answer, then EOS


def test_warm_start_temperature_overrides_the_policys():
    """``warm_start(temperature=1.0)`` on a policy sampling at 0.7 fits exactly what it fits on a
    policy sampling at 1.0 (the likelihood's temperature is the only difference between the two)."""
    import gymnasium as gym

    import egsw_gym  # noqa: F401
    from egsw_gym.llm import warm_start

    env = gym.make("egsw/Arithmetic-v0")
    sharp = LMPolicy(env.observation_space, env.action_space, lambda _: 1e-3, temperature=0.7)
    plain = LMPolicy(env.observation_space, env.action_space, lambda _: 1e-3, temperature=1.0)
    plain.load_state_dict(sharp.state_dict())
    warm_start(sharp, env.unwrapped.task, steps=5, batch_size=8, seed=0, env=env, temperature=1.0)
    warm_start(plain, env.unwrapped.task, steps=5, batch_size=8, seed=0, env=env)
    for a, b in zip(sharp.parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        warm_start(sharp, env.unwrapped.task, steps=1, env=env, temperature=0.0)


def test_distinct_prompts_merges_adjacent_repeats_and_ignores_padding_ids():
    ids = torch.tensor([[0, 5, 6], [3, 5, 6], [9, 7, 8], [0, 7, 8], [9, 9, 8], [9, 9, 8], [0, 5, 6]])
    mask = torch.tensor([[0, 1, 1], [0, 1, 1], [1, 1, 1], [1, 1, 1], [1, 1, 1], [1, 1, 1], [0, 1, 1]])
    first_rows, inverse = distinct_prompts(ids, mask)
    # rows 0 and 1 differ only under padding; 2 and 3 differ in a real token (the mask says so);
    # row 6 repeats row 0 but not adjacently, so it gets its own pass (correct, merely not shared)
    assert first_rows.tolist() == [0, 2, 3, 4, 6]
    assert inverse.tolist() == [0, 0, 1, 2, 3, 3, 4]
    assert distinct_prompts(ids[[0, 2, 3]], mask[[0, 2, 3]]) is None  # no adjacent repeat


@pytest.mark.parametrize("steps", [1, N])
def test_accelerated_training_pass_matches_the_plain_one_in_values_and_gradients(steps):
    """The default accelerations (a prefix tree over each group) == the plain teacher-forced pass."""
    torch.manual_seed(0)
    policy = make_policy()
    obs = grouped_obs([3, 10, 7, 1], group_size=4)
    actions = torch.randint(0, VOCAB, (16, steps))
    mask = torch.ones_like(actions, dtype=torch.bool)
    results = []
    for accel in (policy.accel, ()):
        policy.accel = accel
        policy.model.zero_grad()
        lp, ent = policy.evaluate_sequences(obs, None, actions, mask)
        (lp.sum() + 0.5 * ent.sum()).backward()
        grads = torch.cat([p.grad.flatten() for p in policy.model.parameters()])
        results.append((lp.detach(), ent.detach(), grads))
    (lp_s, ent_s, g_s), (lp_f, ent_f, g_f) = results
    assert torch.allclose(lp_s, lp_f, atol=1e-5) and torch.allclose(ent_s, ent_f, atol=1e-5)
    assert torch.allclose(g_s, g_f, rtol=1e-4, atol=1e-5)
    assert g_f.abs().max() > 1e-2  # the comparison is not between zero gradients


def test_chunked_training_pass_equals_one_pass():
    """sequence_log_probs(chunk_size=...) runs the rows in chunks: the same numbers as one pass."""
    torch.manual_seed(0)
    policy = make_policy()
    obs = first_obs([3, 10, 7, 1, 5])
    ids, mask = obs["input_ids"][:, :P], obs["attention_mask"][:, :P]
    actions = torch.randint(0, VOCAB, (5, N))
    whole = sequence_log_probs(policy.model, ids, mask, actions, n_actions=VOCAB, temperature=0.7)
    chunked = sequence_log_probs(
        policy.model, ids, mask, actions, n_actions=VOCAB, temperature=0.7, chunk_size=2
    )
    for a, b in zip(whole, chunked, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_shared_prefill_in_act_matches_evaluate_sequences():
    """act() prefills each distinct prompt once; its log-probs still match the training pass."""
    torch.manual_seed(0)
    policy = make_policy()
    obs = grouped_obs([3, 10, 7], group_size=4, seed=2)
    actions, lp_act, ent_act = rollout(policy, obs)
    mask = torch.ones_like(actions, dtype=torch.bool)
    lp_eval, ent_eval = policy.evaluate_sequences(obs, None, actions, mask)
    assert torch.allclose(lp_eval, lp_act, atol=1e-4) and torch.allclose(ent_eval, ent_act, atol=1e-4)
    # Rows of one group sampled independently after the shared prefill (not one copied sample).
    assert len({tuple(r) for r in actions[:4].tolist()}) > 1


def test_adam_optimizers_default_to_the_fused_kernel_unless_told_otherwise():
    assert make_policy().optimizer.defaults["fused"] is True
    chosen = make_policy(optimizer_kwargs={"foreach": True}).optimizer.defaults
    assert chosen["foreach"] is True and not chosen["fused"]
    sgd = make_policy(optimizer_class=torch.optim.SGD).optimizer.defaults
    assert "fused" not in sgd or not sgd["fused"]


def test_warm_start_stops_at_the_target_sampled_accuracy():
    """target_accuracy ends the warm start at the first check that meets it (a reproducible check)."""
    import gymnasium as gym

    import egsw_gym  # noqa: F401
    from egsw_gym.llm import evaluate_accuracy, warm_start

    env = gym.make("egsw/Arithmetic-v0")
    policy = LMPolicy(env.observation_space, env.action_space, lambda _: 1e-3)
    target = 0.02
    stats = warm_start(
        policy,
        env.unwrapped.task,
        steps=400,
        batch_size=32,
        seed=0,
        env=env,
        target_accuracy=target,
        eval_every=20,
        eval_problems=100,
    )
    assert stats["reached"] and stats["accuracy"] >= target
    assert stats["steps"] % 20 == 0 and stats["steps"] < 400  # stopped at a check, early
    again = evaluate_accuracy(policy, env, n=100, greedy=False, k=1, split="train", seed=0)
    assert again["pass@1"] == stats["accuracy"]  # the check is what a user would measure
    with pytest.raises(ValueError, match="target_accuracy"):
        warm_start(policy, env.unwrapped.task, steps=1, target_accuracy=1.5, env=env)
    with pytest.raises(ValueError, match="env="):
        warm_start(policy, env.unwrapped.task, steps=1, target_accuracy=0.5)


def test_sampled_tokens_follow_the_tempered_distribution():
    """act's inverse-CDF sampling draws each token with its (tempered) probability."""
    torch.manual_seed(0)
    policy = make_policy(temperature=0.7)
    logits = torch.randn(1, VOCAB) * 2
    logits[0, :10] = -1e9  # tokens with zero probability must never be drawn
    rows = logits.expand(40_000, VOCAB)
    actions, log_probs, _ = policy._next_token(rows, deterministic=False)
    expected = torch.softmax(logits[0] / 0.7, -1)
    freq = torch.bincount(actions, minlength=VOCAB).float() / len(actions)
    assert (freq[:10] == 0).all()
    assert (freq - expected).abs().max() < 0.01
    assert torch.allclose(log_probs, expected.log()[actions])
