"""A real subword tokenizer end to end, offline: byte-level BPE + a ChatML chat template + a tiny
Qwen2-shaped model saved with ``save_pretrained``, used the way a local Qwen checkpoint would be."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor

import egsw_gym  # noqa: F401
from egsw_gym import GRPO
from egsw_gym.envs.tasks import ArithmeticTask
from egsw_gym.envs.text_generation import TextGenerationEnv
from egsw_gym.envs.vector import find_text_vector_env
from egsw_gym.llm.warm_start import evaluate_accuracy

#: Qwen2.5's ChatML template, simplified (no tools): a default system message, then turns.
CHATML = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def _corpus() -> list[str]:
    task = ArithmeticTask(seed=0)
    lines = []
    for i in range(400):
        p = task.problem(i)
        lines.append(f"{p.prompt}{p.answer}")
    lines += ["You are a helpful assistant.", "system user assistant", "Reason step by step, \\boxed{}"]
    return lines


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A local directory holding a byte-level BPE tokenizer with a chat template and a tiny Qwen2."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    core.train_from_iterator(_corpus(), trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, eos_token="<|im_end|>", pad_token="<|endoftext|>", padding_side="left"
    )
    tok.chat_template = CHATML
    config = Qwen2Config(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config)
    path = tmp_path_factory.mktemp("qwen_tiny")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def test_chat_template_prompt_matches_apply_chat_template_token_for_token(checkpoint):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(checkpoint, local_files_only=True)
    for system in (None, "", "Answer with a number."):
        env = TextGenerationEnv("arithmetic", tokenizer=checkpoint, system_prompt=system)
        assert env.core.use_chat_template
        for seed in range(5):
            obs, info = env.reset(seed=seed)
            messages = ([{"role": "system", "content": system}] if system else []) + [
                {"role": "user", "content": info["prompt"]}
            ]
            want = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
            want = list(want["input_ids"] if hasattr(want, "keys") else want)
            P = env.max_prompt_tokens
            got = obs["input_ids"][:P][obs["attention_mask"][:P] == 1].tolist()
            assert got == want
            text = tok.decode(got)
            assert text.endswith("<|im_start|>assistant\n") and info["prompt"] in text
    raw = TextGenerationEnv("arithmetic", tokenizer=checkpoint, chat_template=False)
    obs, info = raw.reset(seed=0)
    P = raw.max_prompt_tokens
    assert obs["input_ids"][:P][obs["attention_mask"][:P] == 1].tolist() == tok.encode(info["prompt"])


def test_subword_episode_eos_and_lengths(checkpoint):
    env = TextGenerationEnv("arithmetic", tokenizer=checkpoint)
    tok = env.tokenizer
    assert env.eos_token_id == tok.convert_tokens_to_ids("<|im_end|>")
    _, info = env.reset(seed=3)
    ids = tok.encode(info["answer"])
    for t in ids:
        env.step(t)
    _, reward, terminated, truncated, final = env.step(env.eos_token_id)
    assert terminated and not truncated and reward == 1.0 and final["completion"] == info["answer"]
    assert final["num_new_tokens"] == len(ids) + 1
    # every prompt of the task fits the default budget (template + one token per character at most)
    for seed in range(50):
        env.reset(seed=seed)
    with pytest.raises(ValueError, match="max_prompt_tokens"):
        TextGenerationEnv("arithmetic", tokenizer=checkpoint, max_prompt_tokens=8).reset(seed=0)
    with pytest.raises(ValueError, match="chat template"):
        TextGenerationEnv("arithmetic", chat_template=True)  # the character tokenizer has none
    with pytest.raises(ValueError, match="eos_token"):
        TextGenerationEnv("arithmetic", tokenizer=checkpoint, eos_token="<|nope|>")
    swapped = TextGenerationEnv("arithmetic", tokenizer=tok, eos_token="<|endoftext|>")
    assert swapped.eos_token_id == swapped.tokenizer.convert_tokens_to_ids("<|endoftext|>")
    assert tok.eos_token == "<|im_end|>"  # the caller's tokenizer object is not modified
    gym_check_env(env, skip_render_check=True)


def test_grpo_learn_save_load_evaluate_with_a_local_checkpoint(checkpoint, tmp_path):
    pytest.importorskip("reasoning_gym")
    env_kwargs = dict(
        tokenizer=checkpoint,
        dataset="chain_sum",
        size=500,
        num_test=20,
        answer_format="r1",
        format_weight=0.5,
        max_new_tokens=12,
    )
    model = GRPO(
        "LMPolicy",
        "egsw/ReasoningGym-v0",
        n_envs=8,
        group_size=4,
        n_groups=2,
        n_epochs=1,
        env_kwargs=env_kwargs,
        policy_kwargs=dict(model=checkpoint),
        seed=0,
        device="cpu",
    )
    assert type(model.policy.base_model).__name__ == "Qwen2ForCausalLM"
    venv = find_text_vector_env(model.env)
    assert venv.core.use_chat_template and "<think>" in venv.core.task.system_prompt
    before = [p.detach().clone() for p in model.policy.parameters()]
    model.learn(3 * 8 * 12)  # a few updates
    assert any(not torch.equal(a, b) for a, b in zip(before, model.policy.parameters(), strict=True))
    path = tmp_path / "qwen_grpo.zip"
    model.save(path)
    loaded = GRPO.load(path, device="cpu")
    for a, b in zip(model.policy.parameters(), loaded.policy.parameters(), strict=True):
        assert torch.equal(a, b)
    env = Monitor(gym.make("egsw/ReasoningGym-v0", **env_kwargs))
    obs, _ = env.reset(seed=1)
    assert loaded.predict(obs, deterministic=True)[0] == model.predict(obs, deterministic=True)[0]
    mean, _ = evaluate_policy(loaded, env, n_eval_episodes=2, deterministic=True)
    assert 0.0 <= mean <= 1.0
    acc = evaluate_accuracy(loaded.policy, "egsw/ReasoningGym-v0", n=4, env_kwargs=env_kwargs)
    assert acc["n"] == 4 and acc["accuracy"] in (0.0, 0.25, 0.5, 0.75, 1.0)
    assert np.isfinite(mean)
