"""The ``egsw_gym.policies.lm`` package keeps the paths of the former ``lm.py`` / ``lm_decode.py`` modules.

Checkpoints written before the split name the policy class ``egsw_gym.policies.lm.LMPolicy`` (in the
plain-data member and in the pickled ``policy_class``); they must still load, into the same class.
"""

from __future__ import annotations

import importlib
import json
import sys
import zipfile

import pytest
import torch

pytest.importorskip("transformers")

import egsw_gym.policies.lm as lm_package  # noqa: E402
from egsw_gym import GRPO  # noqa: E402
from egsw_gym.common.serialization import SAFE_DATA_MEMBER  # noqa: E402
from egsw_gym.policies.lm import LMPolicy  # noqa: E402
from egsw_gym.policies.lm import decode as decode_module  # noqa: E402

OLD_PATH = "egsw_gym.policies.lm.LMPolicy"


@pytest.fixture
def old_checkpoint(tiny_lm_grpo, monkeypatch, tmp_path):
    """A saved tiny-LM GRPO whose policy class is named by the pre-package path, and the model saved."""
    model = tiny_lm_grpo()
    model.learn(total_timesteps=16)
    # Before the split the class lived in egsw_gym/policies/lm.py: that is the name save() wrote.
    monkeypatch.setattr(LMPolicy, "__module__", "egsw_gym.policies.lm")
    model.save(tmp_path / "old")
    monkeypatch.undo()
    assert LMPolicy.__module__ == "egsw_gym.policies.lm.policy"
    return tmp_path / "old.zip", model


def test_checkpoint_naming_the_pre_package_path_loads(old_checkpoint, flat_params):
    path, model = old_checkpoint
    with zipfile.ZipFile(path) as archive:
        safe = json.loads(archive.read(SAFE_DATA_MEMBER))
        data = archive.read("data").decode()
    assert safe["policy_class"]["path"] == OLD_PATH
    assert '"__module__": "egsw_gym.policies.lm"' in data  # the pickled class names the old module too
    for allow_pickle in (False, True):
        loaded = GRPO.load(path, allow_pickle=allow_pickle)
        assert type(loaded.policy) is LMPolicy
        assert torch.equal(flat_params(loaded), flat_params(model))


def test_public_names_are_re_exported_from_the_package():
    for name in lm_package.__all__:
        assert getattr(lm_package, name) is not None
    assert lm_package.LMPolicy is LMPolicy
    assert lm_package.sequence_log_probs.__module__ == "egsw_gym.policies.lm.forward"
    assert lm_package.prepare_prompt.__module__ == "egsw_gym.policies.lm.inputs"


def test_lm_decode_is_a_deprecated_alias_of_the_decode_module(monkeypatch):
    monkeypatch.delitem(sys.modules, "egsw_gym.policies.lm_decode", raising=False)
    with pytest.warns(DeprecationWarning, match="egsw_gym.policies.lm.decode"):
        alias = importlib.import_module("egsw_gym.policies.lm_decode")
    assert alias is decode_module  # the module itself: a monkeypatch on the alias reaches the decoder


def test_envs_tokenizer_is_the_common_tokenizer():
    import egsw_gym.common.tokenizer as common
    import egsw_gym.envs.tokenizer as old

    assert old.build_char_tokenizer is common.build_char_tokenizer
    assert old.load_tokenizer is common.load_tokenizer
    assert old.__all__ == common.__all__
