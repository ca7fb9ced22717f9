"""The ``egsw_gym.policies.lm`` package keeps the public paths 0.1.0 checkpoints name.

Checkpoints written before the split (``tests/data/*_v010.zip``, saved by egsw-gym 0.1.0) name the
classes by their public paths; they must still load, into the same classes.
"""

from __future__ import annotations

import importlib
import json
import zipfile
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")

import egsw_gym.policies.lm as lm_package  # noqa: E402
from egsw_gym import GRPO, PPO  # noqa: E402
from egsw_gym.algorithms.ppo import EGSWRolloutBuffer  # noqa: E402
from egsw_gym.common.env_util import build_vec_env  # noqa: E402
from egsw_gym.common.serialization import SAFE_DATA_MEMBER  # noqa: E402
from egsw_gym.policies.lm import LMPolicy  # noqa: E402

DATA = Path(__file__).parent / "data"


@pytest.mark.parametrize(
    ("algo", "name", "policy_module", "env_id", "n_envs", "env_kwargs"),
    [
        (PPO, "ppo_cartpole_v010.zip", "stable_baselines3.common.policies", "CartPole-v1", 1, None),
        (GRPO, "grpo_cartpole_v010.zip", "egsw_gym.policies.mlp", "CartPole-v1", 4, None),
        (GRPO, "grpo_lm_v010.zip", "egsw_gym.policies.lm", "egsw/Arithmetic-v0", 4, {"max_new_tokens": 4}),
    ],
)
def test_checkpoints_of_egsw_gym_0_1_0_load_predict_and_train(
    algo, name, policy_module, env_id, n_envs, env_kwargs, one_thread
):
    """Files saved by egsw-gym 0.1.0 (before the PPO, GRPO and LM policy modules became packages) name
    ``egsw_gym.algorithms.ppo.EGSWRolloutBuffer`` and ``egsw_gym.policies.lm.LMPolicy``; the strict
    class check (a class is accepted only under the module it reports) still finds them, because the
    packages report their public path. Then the model predicts and trains on."""
    with zipfile.ZipFile(DATA / name) as archive:
        safe = json.loads(archive.read(SAFE_DATA_MEMBER))
    assert all("path" in v for v in safe.values() if isinstance(v, dict) and v.get("__kind__") == "class")
    model = algo.load(DATA / name, env=build_vec_env(env_id, n_envs, env_kwargs=env_kwargs))
    assert type(model.policy).__module__ == policy_module
    before = [p.detach().clone() for p in model.policy.parameters()]
    obs = model.env.reset()
    action, _ = model.predict(obs, deterministic=True)
    assert model.env.action_space.contains(action[0])
    model.learn(64, reset_num_timesteps=False)
    after = list(model.policy.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))


def test_saved_class_names_are_the_public_paths(tiny_lm_grpo, tmp_path):
    """New files name the same public paths as 0.1.0 did (so either version's files load in the other)."""
    tiny_lm_grpo().save(tmp_path / "lm")
    with zipfile.ZipFile(tmp_path / "lm.zip") as archive:
        safe = json.loads(archive.read(SAFE_DATA_MEMBER))
    assert (safe["policy_class"]["module"], safe["policy_class"]["qualname"]) == (
        "egsw_gym.policies.lm",
        "LMPolicy",
    )
    for cls, module in ((LMPolicy, "egsw_gym.policies.lm"), (PPO, "egsw_gym.algorithms.ppo"),
                        (EGSWRolloutBuffer, "egsw_gym.algorithms.ppo"), (GRPO, "egsw_gym.algorithms.grpo")):  # fmt: skip
        assert cls.__module__ == module
        assert getattr(importlib.import_module(module), cls.__qualname__) is cls


def test_public_names_are_re_exported_from_the_package():
    for name in lm_package.__all__:
        assert getattr(lm_package, name) is not None
    assert lm_package.LMPolicy is LMPolicy
    assert lm_package.sequence_log_probs.__module__ == "egsw_gym.policies.lm.forward"
    assert lm_package.prepare_prompt.__module__ == "egsw_gym.policies.lm.inputs"
    assert lm_package.DEFAULT_ACCEL == ("shared_decode", "prefix_tree", "decode_cache")


def test_envs_tokenizer_is_the_common_tokenizer():
    import egsw_gym.common.tokenizer as common
    import egsw_gym.envs.tokenizer as old

    assert old.build_char_tokenizer is common.build_char_tokenizer
    assert old.load_tokenizer is common.load_tokenizer
    assert old.__all__ == common.__all__
