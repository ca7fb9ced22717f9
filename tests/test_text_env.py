"""TextGenerationEnv, TextGenerationVectorEnv and the SB3 adapter: checkers, episode mechanics,
reset semantics, equivalence of the batched and the single environment."""

from __future__ import annotations

import json
import warnings
from decimal import Decimal

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env
from stable_baselines3.common.vec_env import DummyVecEnv

import egsw_gym  # noqa: F401  (registers the ids)
import egsw_gym.envs.vector as vector_module
from egsw_gym.common.tokenizer import build_char_tokenizer
from egsw_gym.common.vec_env import VectorEnvAdapter
from egsw_gym.envs.tasks import ArithmeticTask
from egsw_gym.envs.text_generation import TextGenerationEnv
from egsw_gym.envs.vector import TextGenerationVectorEnv, merge_infos

IDS = ["egsw/Arithmetic-v0", "egsw/Countdown-v0", "egsw/GSM8K-v0"]
EOS = 1


def _tokens(env, text: str) -> list[int]:
    return list(env.unwrapped.tokenizer.encode(text))


def _play(env, text: str, eos: bool = True):
    """Feed the tokens of ``text`` (then EOS) until the episode ends; return the last step."""
    out = None
    for tok in _tokens(env, text) + ([env.unwrapped.eos_token_id] if eos else []):
        out = env.step(tok)
        if out[2] or out[3]:
            return out
    return out


# ---------------------------------------------------------------------------------------- checkers
@pytest.mark.parametrize("env_id", IDS)
def test_registered_envs_pass_both_checkers(env_id):
    env = gym.make(env_id)  # no arguments
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gym_check_env(env.unwrapped)
        sb3_check_env(env.unwrapped)
    assert env.unwrapped.task.name == env_id.split("/")[1].split("-")[0].lower()
    assert env.action_space.n == len(env.unwrapped.tokenizer)


def test_jsonl_env_passes_checkers(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(json.dumps({"prompt": f"{i}*2=", "answer": 2 * i}) for i in range(40)))
    env = gym.make("egsw/JSONL-v0", data_path=str(path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gym_check_env(env.unwrapped)
        sb3_check_env(env.unwrapped)
    assert env.unwrapped.max_prompt_tokens == max(len(f"{i}*2=") for i in range(40))


# ---------------------------------------------------------------------------------------- episodes
def test_observation_layout_and_correct_episode():
    env = TextGenerationEnv("arithmetic")
    P, N = env.max_prompt_tokens, env.max_new_tokens
    assert (P, N) == (6, 5) and env.observation_space["input_ids"].shape == (P + N,)
    obs, info = env.reset(options={"prompt_index": 0})
    prompt = _tokens(env, info["prompt"])
    ids, mask = obs["input_ids"], obs["attention_mask"]
    assert ids.dtype == np.int64 and mask.dtype == np.int64
    np.testing.assert_array_equal(ids[P - len(prompt) : P], prompt)  # left-padded prompt
    assert (ids[: P - len(prompt)] == env.pad_token_id).all() and (mask[: P - len(prompt)] == 0).all()
    assert (
        (mask[P - len(prompt) : P] == 1).all()
        and (mask[P:] == 0).all()
        and (ids[P:] == env.pad_token_id).all()
    )
    answer = _tokens(env, info["answer"])
    for t, tok in enumerate(answer):
        obs, r, term, trunc, step_info = env.step(tok)
        assert r == 0.0 and not term and not trunc and step_info == {}
        assert obs["input_ids"][P + t] == tok and obs["attention_mask"][P + t] == 1
        assert (obs["attention_mask"][P + t + 1 :] == 0).all()
    obs, r, term, trunc, final = env.step(env.eos_token_id)
    assert term and not trunc and r == 1.0
    assert obs["input_ids"][P + len(answer)] == env.eos_token_id
    assert final["completion"] == info["answer"] and final["score"] == 1.0 and final["correct"]
    assert final["num_new_tokens"] == len(answer) + 1
    for key in ("prompt", "answer", "prompt_index", "split", "format_ok", "parsed"):
        assert key in final
    with pytest.raises(RuntimeError, match="reset"):
        env.step(5)


@pytest.mark.parametrize("env_id", IDS)
def test_reference_completions_score_one(env_id):
    env = gym.make(env_id)
    task = env.unwrapped.task
    for k in range(5):
        _, info = env.reset(options={"prompt_index": k})
        ref = task.reference_completion(task.problem(k))
        _, r, term, _, final = _play(env, ref)
        assert term and r == 1.0 and final["completion"] == ref


def test_truncation_and_reward_equals_task_score():
    env = TextGenerationEnv("arithmetic", max_new_tokens=3)
    rng = np.random.default_rng(0)
    for _ in range(30):
        _, info = env.reset(seed=int(rng.integers(1000)))
        steps = 0
        while True:
            tok = int(rng.choice([EOS, *range(4, 14)], p=[0.1] + [0.09] * 10))
            obs, r, term, trunc, final = env.step(tok)
            steps += 1
            if term or trunc:
                break
            assert r == 0.0
        assert steps <= 3 and (trunc == (tok != EOS)) and term == (tok == EOS)
        problem = env.unwrapped.problem
        assert r == env.task.score(final["completion"], problem).score == final["score"]
        assert final["correct"] == env.task.score(final["completion"], problem).correct


def test_special_tokens_are_dropped_from_completion():
    env = TextGenerationEnv("arithmetic", max_new_tokens=6)
    env.reset(seed=0)
    tok = env.tokenizer
    for t in [tok.pad_token_id, tok.bos_token_id] + _tokens(env, "42"):
        env.step(t)
    *_, final = env.step(EOS)
    assert final["completion"] == "42"


# ------------------------------------------------------------------------------------------- reset
def test_seed_and_prompt_index_select_the_same_problem():
    env = TextGenerationEnv("gsm8k")
    o1, i1 = env.reset(seed=7)
    o2, i2 = env.reset(seed=7)
    assert i1 == i2 and all((o1[k] == o2[k]).all() for k in o1)
    _, i3 = env.reset()  # continues the generator: another prompt
    assert i3["prompt"] != i1["prompt"]
    o4, i4 = env.reset(options={"prompt_index": i1["prompt_index"]})
    assert i4 == i1 and (o4["input_ids"] == o1["input_ids"]).all()
    _, i5 = env.reset(seed=123, options={"prompt_index": 4})
    assert i5["prompt"] == env.task.problem(4).prompt and i5["prompt_index"] == 4
    other = TextGenerationEnv("gsm8k")
    assert other.reset(seed=7)[1] == i1  # a fresh env, same seed, same prompt


def test_test_split_env_only_gives_test_prompts():
    env = TextGenerationEnv("arithmetic", split="test")
    task = env.task
    test_prompts = {task.problem(i, "test").prompt for i in range(task.num_problems("test"))}
    for s in range(50):
        _, info = env.reset(seed=s)
        assert info["prompt"] in test_prompts and info["split"] == "test"
    train = TextGenerationEnv("arithmetic", split="train")
    for s in range(300):
        assert train.reset(seed=s)[1]["prompt"] not in test_prompts


def test_prompt_too_long_error_and_left_truncation():
    env = TextGenerationEnv("gsm8k", max_prompt_tokens=20)
    with pytest.raises(ValueError, match="max_prompt_tokens=20"):
        env.reset(seed=0)
    env = TextGenerationEnv("gsm8k", max_prompt_tokens=20, prompt_truncation="left")
    obs, info = env.reset(seed=0)
    assert (obs["attention_mask"][:20] == 1).all()
    np.testing.assert_array_equal(obs["input_ids"][:20], _tokens(env, info["prompt"])[-20:])


def test_difficulty_knobs_and_task_objects_are_forwarded():
    env = gym.make("egsw/Arithmetic-v0", digits=3, operators="*", max_new_tokens=9)
    assert env.unwrapped.task.digits == 3 and env.unwrapped.max_prompt_tokens == 8
    _, info = env.reset(seed=0)
    assert "*" in info["prompt"]
    task = ArithmeticTask(digits=1)
    env = TextGenerationEnv(task)
    assert env.task is task


def test_tokenizer_directory_and_object(tmp_path):
    tok = build_char_tokenizer()
    tok.save_pretrained(tmp_path / "tok")
    a = TextGenerationEnv("arithmetic", tokenizer=str(tmp_path / "tok"))
    b = TextGenerationEnv("arithmetic", tokenizer=tok)
    assert a.reset(seed=1)[0]["input_ids"].tolist() == b.reset(seed=1)[0]["input_ids"].tolist()
    assert b.tokenizer is tok


@pytest.mark.parametrize(
    "kwargs, arg",
    [
        ({"split": "validation"}, "split"),
        ({"prompt_truncation": "right"}, "prompt_truncation"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"max_prompt_tokens": -3}, "max_prompt_tokens"),
        ({"task": "poetry"}, "task"),
        ({"render_mode": "human"}, "render_mode"),
        ({"digits": 0}, "digits"),
        ({"tokenizer": "/no/such/dir"}, "tokenizer"),
    ],
)
def test_bad_kwargs_raise_value_error(kwargs, arg):
    with pytest.raises(ValueError, match=arg):
        TextGenerationEnv(**kwargs)


def test_bad_actions_and_options():
    env = TextGenerationEnv()
    with pytest.raises(ValueError, match="prompt_index"):
        env.reset(options={"prompt_idx": 3})
    with pytest.raises(ValueError, match="prompt index"):
        env.reset(options={"prompt_index": 10**12})
    env.reset(seed=0)
    with pytest.raises(ValueError, match="token id"):
        env.step(env.vocab_size)
    with pytest.raises(ValueError, match="token id"):
        env.step(-1)


@pytest.mark.parametrize(
    "action",
    [3.7, "5", np.float32(5.5), Decimal("5.9"), float("inf"), float("nan"), 5.0, [5], np.array([5]), None],
)
def test_step_rejects_what_the_action_space_rejects(action):
    env = TextGenerationEnv()
    env.reset(seed=0)
    assert not env.action_space.contains(action)
    with pytest.raises(ValueError, match="action"):
        env.step(action)
    venv = TextGenerationVectorEnv(2)
    venv.reset(seed=0)
    with pytest.raises(ValueError, match="action"):
        venv.step(np.array([action, action], dtype=object) if action is not None else None)
    for too_big in (env.vocab_size, 10**30, -1):
        with pytest.raises(ValueError, match="action"):
            env.step(too_big)
    for good in (np.int64(5), np.uint8(5), np.array(5, dtype=np.int32), 5):
        assert env.action_space.contains(good)
        env.step(good)  # accepted, as the space accepts it
    assert env.step(EOS)[2]


@pytest.mark.parametrize(
    "actions",
    [
        np.array([5.0, 6.0]),
        np.array([5, 6], np.float32),
        [3.7, 4],
        ["5", "6"],
        np.array([5, 6, 7]),
        np.array([[5, 6]]),
        np.array([5, 10**9]),
    ],
)
def test_vector_step_rejects_bad_action_arrays(actions):
    venv = TextGenerationVectorEnv(2)
    venv.reset(seed=0)
    with pytest.raises(ValueError, match="action"):
        venv.step(actions)
    venv.step(np.array([5, 6], dtype=np.int32))  # any integer dtype of the right shape passes


def test_sb3_make_vec_env_and_rgb_array_render():
    from stable_baselines3.common.env_util import make_vec_env

    venv = make_vec_env("egsw/Arithmetic-v0", n_envs=2, seed=0)  # SB3 passes render_mode="rgb_array"
    obs = venv.reset()
    assert obs["input_ids"].shape[0] == 2
    frames = venv.get_images()
    assert len(frames) == 2 and frames[0].dtype == np.uint8 and frames[0].shape[2] == 3
    assert frames[0].shape == frames[1].shape and (frames[0] < 128).any()  # some ink on the page
    venv.step(np.array([5, EOS]))
    venv.close()
    env = gym.make("egsw/Arithmetic-v0", render_mode="rgb_array")
    sb3_check_env(env.unwrapped, skip_render_check=False)
    gym_check_env(env.unwrapped)
    _, info = env.reset(seed=0)
    blank = env.render().copy()
    env.step(_tokens(env.unwrapped, "4")[0])
    assert env.render().shape == blank.shape and not np.array_equal(env.render(), blank)
    vrender = TextGenerationVectorEnv(2, render_mode="rgb_array")
    vrender.reset(seed=0)
    assert [f.shape for f in vrender.render()] == [blank.shape] * 2


def test_render_ansi():
    env = TextGenerationEnv(render_mode="ansi")
    _, info = env.reset(seed=0)
    env.step(_tokens(env, "4")[0])
    assert env.render() == info["prompt"] + "4"


# ------------------------------------------------------------------------------------------ vector
def _random_actions(rng, n, vocab):
    eos = rng.random(n) < 0.25
    return np.where(eos, EOS, rng.integers(4, vocab, size=n)).astype(np.int64)


@pytest.mark.parametrize("task", ["arithmetic", "countdown"])
def test_vector_env_matches_single_envs(task):
    # slots 0, 4 and 5 share a seed (a GRPO group): later episodes still follow each slot's own seed
    n, seeds = 6, [11, 12, 99, 3, 11, 11]
    venv = TextGenerationVectorEnv(n, task=task, max_new_tokens=6)
    envs = [TextGenerationEnv(task, max_new_tokens=6) for _ in range(n)]
    obs, infos = venv.reset(seed=seeds)
    singles = [e.reset(seed=s) for e, s in zip(envs, seeds, strict=True)]
    for i in range(n):
        for k in obs:
            np.testing.assert_array_equal(obs[k][i], singles[i][0][k])
        assert infos["prompt"][i] == singles[i][1]["prompt"]
    rng = np.random.default_rng(0)
    episodes = 0
    for _ in range(60):
        actions = _random_actions(rng, n, venv.vocab_size)
        obs, rew, term, trunc, infos = venv.step(actions)
        for i, env in enumerate(envs):
            o, r, te, tr, inf = env.step(int(actions[i]))
            assert (rew[i], term[i], trunc[i]) == (r, te, tr)
            if te or tr:
                episodes += 1
                for k in o:
                    np.testing.assert_array_equal(infos["final_obs"][i][k], o[k])
                for key, value in inf.items():
                    assert infos["_final_info"][i] and infos["final_info"][key][i] == value, key
                o, inf = env.reset()
                assert infos["prompt"][i] == inf["prompt"] and infos["prompt_index"][i] == inf["prompt_index"]
            else:
                assert "_final_obs" not in infos or not infos["_final_obs"][i]
            for k in o:
                np.testing.assert_array_equal(obs[k][i], o[k])
    assert episodes > 30


def test_a_step_scores_each_completion_of_a_shared_problem_once(monkeypatch):
    """Slots reset alike hold one problem: equal completions of it are verified once a step, with the
    same reward and final info in every slot; other completions and other problems on their own."""
    venv = TextGenerationVectorEnv(6, task="arithmetic", max_new_tokens=4)
    venv.reset(seed=[5, 5, 5, 5, 7, 7])
    calls = []
    score = venv.task.score
    monkeypatch.setattr(venv.task, "score", lambda c, p: calls.append((c, p.prompt)) or score(c, p))
    one, two = _tokens(venv, "1")[0], _tokens(venv, "2")[0]
    venv.step(np.array([one, one, two, one, one, one]))
    _, reward, term, _, infos = venv.step(np.full(6, EOS))
    assert term.all() and len(calls) == 3  # ("1", p5), ("2", p5), ("1", p7)
    assert len(set(calls)) == 3
    for i in range(6):
        expected = score("2" if i == 2 else "1", venv.problems[i])
        assert reward[i] == expected.score and infos["final_info"]["completion"][i] == (
            "2" if i == 2 else "1"
        )


def test_make_vec_and_vector_reset_options():
    venv = gym.make_vec("egsw/Arithmetic-v0", 4, vectorization_mode="vector_entry_point")
    assert isinstance(venv.unwrapped, TextGenerationVectorEnv)
    assert venv.metadata["autoreset_mode"] == gym.vector.AutoresetMode.SAME_STEP
    assert venv.observation_space["input_ids"].shape == (4, 11)
    _, infos = venv.reset(seed=5)
    single = TextGenerationEnv()
    assert [single.reset(seed=5 + i)[1]["prompt"] for i in range(4)] == list(infos["prompt"])
    _, infos = venv.reset(options={"prompt_index": 3})  # a group on one prompt
    assert len(set(infos["prompt"])) == 1 and infos["prompt_index"][0] == 3
    _, infos = venv.reset(seed=[1, 2, 3, 4], options={"prompt_index": [0, None, 2, None]})
    assert infos["prompt_index"][0] == 0 and infos["prompt_index"][2] == 2
    assert infos["prompt"][1] == single.reset(seed=2)[1]["prompt"]
    with pytest.raises(ValueError, match="seed"):
        venv.reset(seed=[1, 2])
    with pytest.raises(ValueError, match="actions"):
        venv.step(np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="actions"):
        venv.step(np.array([0, 1, 2, 10_000]))
    with pytest.raises(ValueError, match="num_envs"):
        TextGenerationVectorEnv(0)


# ----------------------------------------------------------------------------------------- adapter
class _PassThrough(gym.vector.VectorWrapper):
    """A wrapper that changes nothing (and passes per-env reset options through, as the env takes them)."""

    supports_per_env_options = True


class _Forwarding(_PassThrough):
    """...and forwards attribute lookups (step_entries too) to the env."""

    def __getattr__(self, name):
        return getattr(self.env, name)


@pytest.mark.parametrize("wrapper", [None, _PassThrough, _Forwarding])
def test_adapter_matches_dummy_vec_env(wrapper, monkeypatch):
    """Driven through the env's per-slot entries (no wrapper) or through a wrapper's step (which the
    adapter must not bypass, even when the wrapper forwards attribute lookups): DummyVecEnv's results."""
    n = 4
    vector = TextGenerationVectorEnv(n, max_new_tokens=4)
    merges = []
    monkeypatch.setattr(vector_module, "merge_infos", lambda *a: merges.append(1) or merge_infos(*a))
    adapter = VectorEnvAdapter(vector if wrapper is None else wrapper(vector))
    dummy = DummyVecEnv([lambda: TextGenerationEnv(max_new_tokens=4) for _ in range(n)])
    for v in (adapter, dummy):
        v.seed(21)
        v.set_options([{"prompt_index": 2}, {}, {"prompt_index": 5}, {}])
    oa, od = adapter.reset(), dummy.reset()
    for k in oa:
        np.testing.assert_array_equal(oa[k], od[k])
    assert adapter.reset_infos == dummy.reset_infos
    rng = np.random.default_rng(1)
    for _ in range(25):
        actions = _random_actions(rng, n, adapter.action_space.n)
        oa, ra, da, ia = adapter.step(actions)
        od, rd, dd, id_ = dummy.step(actions)
        np.testing.assert_array_equal(ra, rd)
        np.testing.assert_array_equal(da, dd)
        for k in oa:
            np.testing.assert_array_equal(oa[k], od[k])
        for a, d in zip(ia, id_, strict=True):
            assert a.keys() == d.keys()
            for key in a:
                if key == "terminal_observation":
                    assert all((a[key][k] == d[key][k]).all() for k in a[key])
                else:
                    assert a[key] == d[key], key
        assert adapter.reset_infos == dummy.reset_infos
    if wrapper is None:
        assert adapter.get_attr("max_new_tokens") == [4] * n
        assert adapter.env_is_wrapped(gym.Wrapper) == [False] * n
    # gymnasium's merged info is built only when a wrapper's step is what the adapter calls
    assert (len(merges) == 0) == (wrapper is None)


def test_adapter_rejects_next_step_autoreset_and_trains_ppo():
    from stable_baselines3 import PPO

    cart = gym.make_vec("CartPole-v1", 2, vectorization_mode="sync")
    with pytest.raises(ValueError, match="SAME_STEP"):
        VectorEnvAdapter(cart)
    venv = VectorEnvAdapter(TextGenerationVectorEnv(2))
    model = PPO("MultiInputPolicy", venv, n_steps=8, batch_size=16, n_epochs=1, device="cpu", seed=0)
    model.learn(16)
    actions, _ = model.predict(venv.reset(), deterministic=True)
    assert actions.shape == (2,)


def _same_info(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for key in a:
        if isinstance(a[key], dict):
            _same_info(a[key], b[key])
            continue
        assert a[key].dtype == b[key].dtype and a[key].shape == b[key].shape, key
        for x, y in zip(a[key], b[key], strict=True):
            if isinstance(x, dict):
                assert x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x)
            elif isinstance(x, np.ndarray):
                assert np.array_equal(x, y)
            else:
                assert x == y, (key, x, y)


def test_merge_infos_builds_what_gymnasium_add_info_builds():
    """The one-pass info merge == gymnasium's per-slot ``_add_info`` (keys, order, dtypes, values)."""
    env = TextGenerationVectorEnv(6)
    rng = np.random.default_rng(0)
    makers = [
        lambda: int(rng.integers(9)),
        lambda: float(rng.random()),
        lambda: bool(rng.integers(2)),
        lambda: f"s{rng.integers(9)}",
        lambda: np.arange(3) * int(rng.integers(3)),
        lambda: {"x": float(rng.random()), "y": f"t{rng.integers(3)}"},
    ]
    for _ in range(300):
        kinds = {k: makers[int(rng.integers(len(makers)))] for k in "abcd"}  # one type per key
        entries = []
        for _ in range(int(rng.integers(0, 9))):
            keys = rng.choice(["a", "b", "c", "d", "final_obs"], size=int(rng.integers(1, 4)), replace=False)
            info = {
                str(k): {"input_ids": np.arange(2) + int(rng.integers(5))} if k == "final_obs" else kinds[k]()
                for k in keys
            }
            entries.append((int(rng.integers(6)), info))
        expected: dict = {}
        for slot, info in entries:
            expected = env._add_info(expected, info, slot)
        _same_info(merge_infos(entries, 6), expected)
