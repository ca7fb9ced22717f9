"""Issue 11, section 1: hostile checkpoint files attack the loading mechanism; nothing runs, nothing blows up.

Every hostile file is built from a REAL saved model (PPO MlpPolicy on CartPole with every class slot
filled, GRPO MlpPolicy, a tiny-LM GRPO) and loaded with process spawning, shell calls, file removal
and unpickling replaced by spies that record any call. Each case asserts: no spy was called and no
sentinel file appeared, the error is ``UnsafeCheckpointError`` (or a ``ValueError``) whose message
names the member / entry, and peak traced memory and RSS growth stay < 100 MB. Load times are
recorded (``pytest -s`` prints a summary: cases, errors by type, max time, max memory) but never
asserted; a pytest-timeout marker guards against a hang.
"""

from __future__ import annotations

import base64
import collections
import copy
import importlib
import json
import multiprocessing
import os
import pickle
import platform
import resource
import shutil
import subprocess
import time
import tracemalloc
import zipfile
from pathlib import Path

import cloudpickle
import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, FlattenExtractor

from egsw_gym import EGSW, GRPO, PPO
from egsw_gym.common.env_util import build_vec_env
from egsw_gym.common.schedules import TABLE_POINTS, TabulatedSchedule
from egsw_gym.common.serialization import RNG_STATE_MEMBER, SAFE_DATA_MEMBER, UnsafeCheckpointError

torch.set_num_threads(1)
pytestmark = pytest.mark.timeout(600)  # a hang guard, not a performance assertion

RESULTS: list[dict] = []
#: pickles that are nothing but a reference to a dangerous global (made before any spy is installed)
GLOBAL_PICKLES = {"os.system": pickle.dumps(os.system), "subprocess.Popen": pickle.dumps(subprocess.Popen)}
MB = 2**20
SPIED: list[str] = []

# ------------------------------------------------------------------------------------ saved models

PPO_KWARGS = dict(
    activation_fn=torch.nn.Tanh,
    net_arch=dict(pi=[16], vf=[16]),
    features_extractor_class=FlattenExtractor,
    features_extractor_kwargs={},
    optimizer_class=torch.optim.Adam,
    optimizer_kwargs=dict(eps=1e-5),
)
GRPO_KWARGS = dict(activation_fn=torch.nn.ReLU, net_arch=[16], optimizer_class=torch.optim.Adam)


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("saved")
    # Allowed modules that payloads walk through are imported here, so the timed loads measure the
    # checks and not transformers' cold import (seconds; an LM load pays it anyway).
    importlib.import_module("transformers.utils.import_utils")
    ppo = PPO("MlpPolicy", make_vec_env("CartPole-v1", n_envs=2, seed=0), n_steps=16, batch_size=16,
              n_epochs=1, policy_kwargs=PPO_KWARGS, egsw=EGSW(mode="trajectory"), seed=0)  # fmt: skip
    ppo.learn(32).save(folder / "ppo.zip")
    grpo = GRPO("MlpPolicy", "CartPole-v1", group_size=2, n_groups=1, policy_kwargs=GRPO_KWARGS, seed=0)
    grpo.learn(20).save(folder / "grpo.zip")
    return {"ppo": folder / "ppo.zip", "grpo": folder / "grpo.zip"}


ALGOS = {"ppo": PPO, "grpo": GRPO}

# ------------------------------------------------------------------------------------ helpers


def members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


def write_zip(dst: Path, content: dict[str, bytes | None], compression=zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(dst, "w", compression=compression) as zf:
        for name, raw in content.items():
            if raw is not None:
                zf.writestr(name, raw)
    return dst


def tamper(src: Path, dst: Path, *, data=None, safe=None, rng=None, extra=None) -> Path:
    """Copy ``src`` with the JSON members edited by the given functions (dict -> None, in place)."""
    content = members(src)
    for name, edit in (("data", data), (SAFE_DATA_MEMBER, safe), (RNG_STATE_MEMBER, rng)):
        if edit is not None:
            value = json.loads(content[name])
            replaced = edit(value)
            content[name] = (replaced if isinstance(replaced, (bytes, str)) else json.dumps(value)).encode() \
                if not isinstance(replaced, bytes) else replaced  # fmt: skip
    content.update(extra or {})
    return write_zip(dst, content)


def set_path(tree: dict, path: str, value) -> None:
    """Set ``value`` at dotted ``path`` of a plain-data tree (walking ``{"__kind__": "dict"}`` wrappers)."""
    keys = path.split(".")
    node = tree
    for key in keys[:-1]:
        node = node.setdefault(key, {"__kind__": "dict", "items": {}})
        if isinstance(node, dict) and node.get("__kind__") == "dict":
            node = node["items"]
    node[keys[-1]] = value


@pytest.fixture
def spies(monkeypatch, tmp_path):
    """Record (and block) anything that would run code or touch the system."""
    SPIED.clear()
    # SB3's save() writes system info; its first call in a process runs `uname -p` (platform's cache).
    # Warm that cache before the spies go up, so saving a model here never trips them.
    platform.processor()

    def spy(name):
        def call(*_args, **_kwargs):
            SPIED.append(name)
            raise AssertionError(f"{name} was called while loading")

        return call

    monkeypatch.setattr(subprocess.Popen, "__init__", spy("subprocess.Popen"))
    monkeypatch.setattr(multiprocessing.Process, "start", spy("multiprocessing.Process.start"))
    for name in ("system", "popen", "execv", "execve", "remove", "unlink"):
        monkeypatch.setattr(os, name, spy(f"os.{name}"))
    monkeypatch.setattr(shutil, "rmtree", spy("shutil.rmtree"))
    monkeypatch.setattr(cloudpickle, "loads", spy("cloudpickle.loads"))
    monkeypatch.setattr(pickle, "loads", spy("pickle.loads"))
    return tmp_path / "sentinel"


def attack(
    category: str, algo: str, path: Path, sentinel: Path, match: str, **load_kwargs
):
    """Load a hostile file; assert a clear refusal, nothing run, and the memory bound (the time is
    recorded for the summary, never asserted: the module's pytest-timeout marker guards a hang)."""
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    start = time.perf_counter()
    try:
        ALGOS[algo].load(path, **load_kwargs)
    except Exception as err:  # noqa: BLE001 - the type is asserted below
        error = err
    else:
        error = None
    elapsed = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    rss_growth = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) * 1024
    RESULTS.append(
        dict(category=category, error=type(error).__name__, elapsed=elapsed, peak=max(peak, rss_growth))
    )
    assert error is not None, "the hostile file loaded"
    assert isinstance(error, ValueError), f"raw {type(error).__name__}: {error}"
    assert match in str(error), f"{match!r} not in: {error}"
    assert not SPIED, f"called while loading: {SPIED}"
    assert not sentinel.exists()
    assert peak < 100 * MB and rss_growth < 100 * MB, (
        f"peak {peak / MB:.0f} MB, rss growth {rss_growth / MB:.0f} MB"
    )
    return error


@pytest.fixture(scope="module", autouse=True)
def summary():
    yield
    if RESULTS:
        kinds = collections.Counter(r["error"] for r in RESULTS)
        cats = collections.Counter(r["category"] for r in RESULTS)
        print(f"\nhostile files: {len(RESULTS)} cases {dict(cats)}; errors {dict(kinds)}; max time "
              f"{max(r['elapsed'] for r in RESULTS):.3f} s; max memory {max(r['peak'] for r in RESULTS) / MB:.1f} MB")  # fmt: skip


def cls_ref(module: str, qualname: str) -> dict:
    return {"__kind__": "class", "module": module, "qualname": qualname}


# ------------------------------------------------------------------------------------ 1. class slots

#: every class slot (and where a model fills it) plus slots that declare no base, at every nesting level
SLOTS = {
    "ppo": ["policy_class", "rollout_buffer_class", "policy_kwargs.features_extractor_class",
            "policy_kwargs.activation_fn", "policy_kwargs.optimizer_class"],
    "grpo": ["policy_class", "policy_kwargs.activation_fn", "policy_kwargs.optimizer_class",
             "policy_kwargs.features_extractor_class"],
}  # fmt: skip
NON_SLOTS = ["policy_kwargs.features_extractor_kwargs.x", "policy_kwargs.optimizer_kwargs.eps",
             "policy_kwargs.net_arch", "policy_kwargs.deep.er.still", "clip_range", "observation_space",
             "ep_info_buffer", "egsw_injected"]  # fmt: skip
#: class references that walk through a module attribute to code, sit outside the allow-list, or
#: are real classes of an allowed module that subclass the wrong base
PAYLOADS = {
    "walk_to_process": cls_ref("stable_baselines3.common.vec_env.subproc_vec_env", "mp.Process"),
    "walk_to_os_system": cls_ref("stable_baselines3.common.utils", "os.system"),
    "walk_to_popen": cls_ref("transformers.utils.import_utils", "subprocess.Popen"),
    "walk_to_popen_legacy": {"__kind__": "class", "path": "transformers.utils.import_utils.subprocess.Popen"},
    "walk_legacy_path": {
        "__kind__": "class",
        "path": "stable_baselines3.common.vec_env.subproc_vec_env.mp.Process",
    },
    "reexport_outside": cls_ref("torch.nn.modules.module", "OrderedDict"),
    "outside_allow_list": cls_ref("subprocess", "Popen"),
    "main_module": cls_ref("egsw_gym.__main__", "X"),
    "wrong_base_subproc_env": cls_ref("stable_baselines3.common.vec_env.subproc_vec_env", "SubprocVecEnv"),
    "wrong_base_file_writer": cls_ref("stable_baselines3.common.logger", "HumanOutputFormat"),
    "not_strings": {"__kind__": "class", "module": ["os"], "qualname": {"a": 1}},
}


def _slot_cases():
    for algo, slots in SLOTS.items():
        for slot in slots:
            for name in PAYLOADS:
                yield pytest.param(algo, slot, name, id=f"{algo}-{slot}-{name}")


@pytest.mark.parametrize(("algo", "slot", "payload"), list(_slot_cases()))
def test_class_slot_attacks_in_the_plain_data_member(saved, tmp_path, spies, algo, slot, payload):
    bad = tamper(
        saved[algo], tmp_path / "bad.zip", safe=lambda s: set_path(s, slot, copy.deepcopy(PAYLOADS[payload]))
    )
    if "." in slot:  # the entry must be in SB3's data as a pickle so that our member is read for it
        bad = tamper(bad, tmp_path / "bad2.zip", data=lambda d: d.__setitem__(
            "policy_kwargs", {":type:": "<class 'dict'>", ":serialized:": "gAR9lC4="}))  # fmt: skip
    attack("class_slot", algo, bad, spies, slot)


@pytest.mark.parametrize("algo", ["ppo", "grpo"])
@pytest.mark.parametrize("path", NON_SLOTS)
@pytest.mark.parametrize("payload", ["allowed_class", "walk_to_process"])
def test_a_class_where_no_base_is_declared_is_refused(saved, tmp_path, spies, algo, path, payload):
    ref = cls_ref("torch.nn.modules.activation", "Tanh") if payload == "allowed_class" else PAYLOADS[payload]
    top = path.split(".")[0]

    def edit_data(d):
        d[top] = {":type:": "<class 'dict'>", ":serialized:": "gAR9lC4="}

    bad = tamper(saved[algo], tmp_path / "bad.zip", data=edit_data, safe=lambda s: set_path(s, path, ref))
    attack("class_outside_slot", algo, bad, spies, path)


#: classes smuggled through SB3's data member instead: our encoding inside plain JSON, a string where
#: a class belongs, a pickle of a global reference (read from opcodes only), a pickle that runs code
def _payload_pickle(sentinel: Path) -> str:
    class Payload:
        def __reduce__(self):
            return (open, (str(sentinel), "w"))

    return base64.b64encode(cloudpickle.dumps(Payload())).decode()


@pytest.mark.parametrize("algo", ["ppo", "grpo"])
@pytest.mark.parametrize(
    ("entry", "value", "match"),
    [
        (
            "policy_kwargs",
            {"features_extractor_kwargs": {"x": cls_ref("subprocess", "Popen")}},
            "policy_kwargs",
        ),
        ("policy_kwargs", {"activation_fn": "subprocess.Popen"}, "policy_kwargs.activation_fn"),
        ("policy_kwargs", {"optimizer_class": cls_ref("torch.optim.adam", "Adam")}, "policy_kwargs"),
        ("policy_kwargs", {"optimizer_kwargs": {"lr": {":serialized:": "x"}}}, "policy_kwargs"),
        (
            "rollout_buffer_kwargs",
            {"x": cls_ref("torch.nn.modules.activation", "Tanh")},
            "rollout_buffer_kwargs",
        ),
        ("policy_class", "stable_baselines3.common.utils.os.system", "policy_class"),
        ("policy_class", "GLOBAL:os.system", "policy_class"),
        ("policy_class", "GLOBAL:subprocess.Popen", "policy_class"),
        ("policy_kwargs", "GLOBAL:subprocess.Popen", "policy_kwargs"),
        ("policy_class", "PAYLOAD", "policy_class"),
        ("policy_kwargs", "PAYLOAD", "policy_kwargs"),
        ("observation_space", "PAYLOAD", "observation_space"),
    ],
)
def test_classes_smuggled_through_sb3_data_member(saved, tmp_path, spies, algo, entry, value, match):
    if value == "PAYLOAD" or (isinstance(value, str) and value.startswith("GLOBAL:")):
        if value == "PAYLOAD":
            serialized = _payload_pickle(spies)
        else:
            serialized = base64.b64encode(GLOBAL_PICKLES[value.removeprefix("GLOBAL:")]).decode()
        value = {":type:": "<class 'type'>", ":serialized:": serialized}

    def edit_safe(s):
        s.pop(entry, None)

    bad = tamper(
        saved[algo], tmp_path / "bad.zip", data=lambda d: d.__setitem__(entry, value), safe=edit_safe
    )
    attack("data_member", algo, bad, spies, match)


# ------------------------------------------------------------------------------------ 2. sizes


def _bomb(dst: Path, src: Path, member: str, size: int) -> Path:
    """``src`` with ``member`` replaced by ``size`` zero bytes, deflated (ratio ~1000), written in chunks."""
    content = members(src)
    with zipfile.ZipFile(dst, "w") as zf:
        for name, raw in content.items():
            if name != member:
                zf.writestr(name, raw)
        info = zipfile.ZipInfo(member)
        info.compress_type = zipfile.ZIP_DEFLATED
        with zf.open(info, "w", force_zip64=True) as out:
            chunk = bytes(MB)
            for _ in range(size // MB):
                out.write(chunk)
    return dst


@pytest.fixture(scope="module")
def bombs(saved, tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bombs")
    return {m: _bomb(folder / f"bomb_{i}.zip", saved["grpo"], m, 128 * MB)
            for i, m in enumerate(["data", "policy.pth", SAFE_DATA_MEMBER])}  # fmt: skip


@pytest.mark.parametrize("member", ["data", "policy.pth", SAFE_DATA_MEMBER])
def test_zip_bombs_are_refused_from_the_headers(bombs, spies, member):
    attack("zip_bomb", "grpo", bombs[member], spies, member)


def _lying_header(src: Path, dst: Path, member: str, claimed: int) -> Path:
    """A stored member whose central-directory entry claims ``claimed`` uncompressed bytes."""
    raw = bytearray(src.read_bytes())
    name = member.encode()
    pos = 0
    while (pos := raw.find(b"PK\x01\x02", pos)) != -1:
        name_len = int.from_bytes(raw[pos + 28 : pos + 30], "little")
        if raw[pos + 46 : pos + 46 + name_len] == name:
            raw[pos + 24 : pos + 28] = claimed.to_bytes(4, "little")  # uncompressed size
            break
        pos += 4
    assert pos != -1, member
    dst.write_bytes(bytes(raw))
    return dst


@pytest.mark.parametrize("member", ["data", "policy.pth", "policy.optimizer.pth"])
def test_a_header_that_claims_gigabytes_is_refused(saved, tmp_path, spies, member):
    bad = _lying_header(saved["grpo"], tmp_path / "bad.zip", member, 2**32 - 1)
    attack("lying_header", "grpo", bad, spies, member)


GIANT = {
    "ndarray_shape": ("_last_obs", {"__kind__": "ndarray", "dtype": "float64", "shape": [10**6, 10**6], "data": [0.0]}),
    "ndarray_overflow": ("_last_obs", {"__kind__": "ndarray", "dtype": "float32", "shape": [2**62, 2**62, 4], "data": []}),
    "ndarray_mismatch": ("_last_obs", {"__kind__": "ndarray", "dtype": "float32", "shape": [3, 4], "data": [1.0, 2.0]}),
    "ndarray_negative": ("_last_obs", {"__kind__": "ndarray", "dtype": "float32", "shape": [-1, 4], "data": []}),
    "ndarray_object": ("_last_obs", {"__kind__": "ndarray", "dtype": "O", "shape": [1], "data": [0]}),
    "ndarray_unicode": ("_last_obs", {"__kind__": "ndarray", "dtype": "<U1000000000", "shape": [1], "data": ["a"]}),
    "box_shape": ("observation_space", {"__kind__": "space", "space": {
        "type": "Box", "low": [0.0], "high": [1.0], "shape": [10**5, 10**5], "dtype": "float32"}}),
    "multibinary": ("observation_space", {"__kind__": "space", "space": {"type": "MultiBinary", "n": [10**6, 10**6]}}),
    "discrete_huge": ("action_space", {"__kind__": "space", "space": {"type": "Discrete", "n": 10**30, "start": 0}}),
    "deque_items": ("ep_info_buffer", {"__kind__": "deque", "maxlen": 10**12, "items": ["x"]}),
}  # fmt: skip


@pytest.mark.parametrize("case", list(GIANT))
def test_giant_plain_data_claims_are_refused_before_allocating(saved, tmp_path, spies, case):
    entry, value = GIANT[case]
    bad = tamper(saved["grpo"], tmp_path / "bad.zip", safe=lambda s: s.__setitem__(entry, value))
    attack("giant_claim", "grpo", bad, spies, entry)


@pytest.mark.parametrize(("n_steps", "n_envs"), [(10**9, 2), (2**40, 2), (1024, 2**20)])
def test_a_rollout_buffer_claiming_gigabytes_is_refused_before_allocating(
    saved, tmp_path, spies, n_steps, n_envs
):
    def edit(d):
        d.update(n_steps=n_steps, n_envs=n_envs)

    bad = tamper(saved["ppo"], tmp_path / "bad.zip", data=edit)
    attack("giant_claim", "ppo", bad, spies, "n_steps")


def test_a_features_extractor_wider_than_its_saved_weights_is_refused(saved, tmp_path, spies):
    def edit(s):
        set_path(s, "policy_kwargs.features_extractor_kwargs.features_dim", 10**9)

    bad = tamper(saved["ppo"], tmp_path / "bad.zip", safe=edit)
    attack("giant_claim", "ppo", bad, spies, "policy_kwargs.features_extractor_kwargs")


@pytest.mark.parametrize(
    ("algo", "net_arch"),
    [("ppo", {"pi": [2**20, 2**20], "vf": [16]}), ("grpo", [100_000, 100_000]), ("grpo", [2**40])],
)
def test_a_network_larger_than_its_saved_weights_is_refused_before_building(
    saved, tmp_path, spies, algo, net_arch
):
    def edit(s):
        set_path(s, "policy_kwargs.net_arch", json.loads(json.dumps(net_arch)))

    bad = tamper(saved[algo], tmp_path / "bad.zip", safe=edit, data=lambda d: d.__setitem__(
        "policy_kwargs", {":type:": "<class 'dict'>", ":serialized:": "gAR9lC4="}))  # fmt: skip
    attack("giant_claim", algo, bad, spies, "policy_kwargs.net_arch")


DEEP = 100_000


@pytest.mark.parametrize(
    ("member", "text"),
    [
        ("data", '{"num_timesteps": ' + "[" * DEEP + "]" * DEEP + "}"),
        (SAFE_DATA_MEMBER, '{"policy_class": ' + "[" * DEEP + "]" * DEEP + "}"),
        (SAFE_DATA_MEMBER, '{"lr_schedule": ' + '{"a": ' * 200 + "1" + "}" * 200 + "}"),
        (RNG_STATE_MEMBER, "[" * DEEP + "]" * DEEP),
        ("data", '{"num_timesteps": ' + "9" * 5000 + "}"),
        (SAFE_DATA_MEMBER, '{"_last_obs": ' + "1" * 100_000 + "}"),
        ("data", b"\xff\xfe{"),
        ("data", "[1, 2]"),
        ("data", '{"num_timesteps": '),
    ],
    ids=[
        "deep_data",
        "deep_safe",
        "deep_objects",
        "deep_rng",
        "huge_int_data",
        "huge_int_safe",
        "not_utf8",
        "not_object",
        "truncated_json",
    ],  # fmt: skip
)
def test_deep_nesting_huge_ints_and_bad_json_are_refused(saved, tmp_path, spies, member, text):
    raw = text if isinstance(text, bytes) else text.encode()
    content = {**members(saved["grpo"]), member: raw}
    bad = write_zip(tmp_path / "bad.zip", content)
    attack("json", "grpo", bad, spies, member, restore_rng=True)


# ------------------------------------------------------------------------------------ 3. damaged zips


@pytest.mark.parametrize("cut", [0.1, 0.5, 0.9, 0.999, -22, -1])
def test_truncated_zips_are_refused(saved, tmp_path, spies, cut):
    raw = saved["grpo"].read_bytes()
    end = int(len(raw) * cut) if cut > 0 else len(raw) + cut
    bad = tmp_path / "bad.zip"
    bad.write_bytes(raw[:end])
    # (a cut can leave torch's own zip inside policy.pth as the last one in the file: "no 'data' member")
    attack("truncated", "grpo", bad, spies, "checkpoint")


@pytest.mark.parametrize("member", ["data", "policy.pth", "policy.optimizer.pth", SAFE_DATA_MEMBER])
def test_flipped_bytes_in_a_member_are_refused_naming_it(saved, tmp_path, spies, member):
    content = members(saved["grpo"])
    raw = bytearray(content[member])
    raw[len(raw) // 2] ^= 0xFF
    path = write_zip(tmp_path / "bad.zip", content)
    blob = bytearray(path.read_bytes())
    start = blob.find(bytes(content[member]))
    blob[start + len(raw) // 2] ^= 0xFF  # after the CRC was written: the stored CRC no longer matches
    path.write_bytes(bytes(blob))
    attack("damaged", "grpo", path, spies, member)


@pytest.mark.parametrize("member", ["data", "policy.pth"])
def test_missing_members_are_refused_naming_them(saved, tmp_path, spies, member):
    bad = write_zip(tmp_path / "bad.zip", {**members(saved["grpo"]), member: None})
    attack("damaged", "grpo", bad, spies, member)


def test_weights_of_the_wrong_shape_are_a_named_error(saved, tmp_path, spies):
    content = members(saved["grpo"])
    content["policy.pth"] = members(saved["ppo"])["policy.pth"]
    attack("damaged", "grpo", write_zip(tmp_path / "bad.zip", content), spies, "policy.pth")


# ------------------------------------------------------------------------------------ 4. tampered values

TAMPERED = [
    ("ppo", "num_timesteps", -5), ("ppo", "n_steps", 0), ("ppo", "gamma", None), ("ppo", "batch_size", "64"),
    ("ppo", "n_epochs", 1.5), ("ppo", "ent_coef", "nan"), ("ppo", "max_grad_norm", -1),
    ("ppo", "egsw_config", {"alpha": -1.0}), ("ppo", "egsw_config", "trajectory"),
    ("ppo", "egsw_config", {"mode": "sideways"}), ("ppo", "n_envs", 0), ("ppo", "verbose", "loud"),
    ("ppo", "seed", "x"), ("ppo", "learning_rate", -1.0), ("ppo", "gae_lambda", 2.0),
    ("ppo", "_stats_window_size", 0), ("ppo", "use_sde", "yes"), ("ppo", "action_noise", {"sigma": 1}),
    ("grpo", "group_size", 1), ("grpo", "loss_type", "mystery"), ("grpo", "clip_range", 5.0),
    ("grpo", "beta", -1.0), ("grpo", "n_groups", None), ("grpo", "_n_updates", -1), ("grpo", "gamma", None),
    ("grpo", "policy_kwargs", "x"), ("grpo", "_total_timesteps", 2**70),
    ("grpo", "env", "CartPole-v1"), ("grpo", "env", "os:Popen-v0"), ("grpo", "predict", 1), ("grpo", "policy", {}),
    ("grpo", "_logger", None), ("grpo", "__class__", "x"), ("grpo", "device", "cuda:7"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("algo", "entry", "value"), TAMPERED, ids=[f"{a}-{e}-{v!r}"[:60] for a, e, v in TAMPERED]
)
def test_tampered_values_fail_the_constructor_checks(saved, tmp_path, spies, algo, entry, value):
    bad = tamper(saved[algo], tmp_path / "bad.zip", data=lambda d: d.__setitem__(entry, value))
    attack("tampered_value", algo, bad, spies, entry)


@pytest.mark.parametrize(
    ("algo", "entry"), [("ppo", "n_steps"), ("grpo", "group_size"), ("grpo", "observation_space")]
)
def test_a_deleted_entry_is_named(saved, tmp_path, spies, algo, entry):
    bad = tamper(
        saved[algo], tmp_path / "bad.zip", data=lambda d: d.pop(entry), safe=lambda s: s.pop(entry, None)
    )
    attack("tampered_value", algo, bad, spies, entry)


def test_a_saved_tensorboard_log_is_not_reused(saved, tmp_path):
    bad = tamper(
        saved["grpo"], tmp_path / "t.zip", data=lambda d: d.__setitem__("tensorboard_log", "/etc/evil")
    )
    assert GRPO.load(bad).tensorboard_log is None
    assert GRPO.load(bad, tensorboard_log=str(tmp_path / "tb")).tensorboard_log == str(tmp_path / "tb")


def test_load_leaves_the_global_random_streams_alone_unless_asked(saved, tmp_path):
    saved_state = json.loads(members(saved["grpo"])[RNG_STATE_MEMBER])
    unseeded = tamper(saved["grpo"], tmp_path / "unseeded.zip", data=lambda d: d.__setitem__("seed", None))
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    GRPO.load(unseeded)  # as SB3: nothing restored (only a saved seed reseeds, in _setup_model)
    assert np.array_equal(np.random.get_state()[1], before)
    assert torch.get_rng_state().tolist() != saved_state["torch"]
    GRPO.load(unseeded, restore_rng=True)  # the exact-resume path asks for it
    assert np.random.get_state()[1].tolist() == saved_state["numpy"]["key"]
    assert torch.get_rng_state().tolist() == saved_state["torch"]


# ------------------------------------------------------------------------------------ 5. user code, the SB3 way


class UserExtractor(BaseFeaturesExtractor):
    """A user's features extractor (defined outside the allow-list)."""

    def __init__(self, observation_space: gym.Space, width: int = 8) -> None:
        super().__init__(observation_space, width)
        self.net = torch.nn.Sequential(
            torch.nn.Linear(int(np.prod(observation_space.shape)), width), torch.nn.ReLU()
        )

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs)


def linear_schedule(initial: float):
    def schedule(progress: float) -> float:
        return progress * initial

    return schedule


def _obs():
    return np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32)


def test_callable_schedules_come_back_tabulated_and_train(
    saved, tmp_path, spies
):  # saved: SB3 save probes the platform once
    env = make_vec_env("CartPole-v1", n_envs=2, seed=0)
    lr = lambda p: 1e-3 * p**2  # noqa: E731 (curved: interpolation is not exact between the points)
    model = PPO("MlpPolicy", env, learning_rate=lr, clip_range=linear_schedule(0.2),
                n_steps=16, batch_size=16, n_epochs=1, seed=0).learn(32)  # fmt: skip
    model.save(tmp_path / "lambda.zip")
    with pytest.warns(
        UserWarning, match=r"\['learning_rate', 'lr_schedule', 'clip_range'\].*1001 progress points"
    ):
        loaded = PPO.load(tmp_path / "lambda.zip", env=env)
    assert isinstance(loaded.learning_rate, TabulatedSchedule) and loaded.learning_rate.__name__ == "<lambda>"
    assert loaded.clip_range.value_schedule.__name__ == "schedule"
    grid = [i / (TABLE_POINTS - 1) for i in range(TABLE_POINTS)]
    assert [loaded.lr_schedule(p) for p in grid] == [lr(p) for p in grid]  # exact at the points
    between = np.random.default_rng(0).uniform(0, 1, 500)
    errors = [abs(loaded.lr_schedule(p) - lr(p)) for p in between]
    assert 0 < max(errors) <= 1e-3 * 2 / 8 * 1e-6 * (1 + 1e-9)  # max|f''| h^2 / 8 with h = 1e-3
    assert all(type(loaded.lr_schedule(p)) is float for p in (np.float64(0.3), 0.5, 1, -1.0, 2.0))
    assert loaded.clip_range(0.25) == pytest.approx(0.05) and loaded.lr_schedule(2.0) == lr(1.0)
    assert np.array_equal(
        model.predict(_obs(), deterministic=True)[0], loaded.predict(_obs(), deterministic=True)[0]
    )
    loaded.learn(32, reset_num_timesteps=False)  # training continues from the table
    assert loaded.num_timesteps == 64
    loaded.save(tmp_path / "again.zip")  # the table re-encodes to itself
    again = PPO.load(tmp_path / "again.zip", env=env)
    assert (
        again.learning_rate == loaded.learning_rate
        and again.clip_range.value_schedule == loaded.clip_range.value_schedule
    )
    fixed = PPO.load(tmp_path / "lambda.zip", env=env, custom_objects={"learning_rate": lr})
    assert fixed.learning_rate is lr and fixed.lr_schedule(0.5) == lr(0.5)
    assert not SPIED


def test_callable_schedules_without_a_table_load_for_predict_and_learn_asks_for_them(saved, tmp_path, spies):
    """SB3-written zips (no plain-data member), and callables that cannot be tabulated, keep the stand-in."""
    import stable_baselines3 as sb3

    env = make_vec_env("CartPole-v1", n_envs=2, seed=0)
    kwargs = dict(n_steps=16, batch_size=16, n_epochs=1, seed=0)
    sb3.PPO("MlpPolicy", env, learning_rate=lambda p: 1e-3 * p, clip_range=linear_schedule(0.2),
            **kwargs).learn(32).save(tmp_path / "sb3.zip")  # fmt: skip
    gap = lambda p: float("nan") if 0.2 < p < 0.6 else 1e-3  # noqa: E731 (valid at both ends: constructible)
    PPO("MlpPolicy", env, learning_rate=gap, **kwargs).save(tmp_path / "gap.zip")
    for name, entry in (("sb3.zip", r"(learning_rate|clip_range)"), ("gap.zip", "learning_rate")):
        with pytest.warns(UserWarning, match="custom_objects"):
            loaded = PPO.load(tmp_path / name, env=env)
        assert not any(
            isinstance(getattr(loaded, k), TabulatedSchedule) for k in ("learning_rate", "clip_range")
        )
        loaded.predict(_obs(), deterministic=True)
        with pytest.raises(ValueError, match=rf"{entry}.*custom_objects"):
            loaded.learn(32)
    fixed = PPO.load(tmp_path / "sb3.zip", env=env, custom_objects={
        "learning_rate": lambda p: 1e-3 * p, "clip_range": linear_schedule(0.2)})  # fmt: skip
    fixed.learn(32, reset_num_timesteps=False)
    assert fixed.num_timesteps == 64 and fixed.lr_schedule(0.5) == pytest.approx(5e-4)
    assert not SPIED


def _table(**changes) -> dict:
    values = [1e-3] * TABLE_POINTS
    for index, value in changes.pop("at", {}).items():
        values[index] = value
    return {"__kind__": "tabulated_schedule", "name": "<lambda>", "values": values, **changes}


#: (entry, value) of a tampered tabulated schedule; each is refused naming the entry
TABULATED = {
    "too_short": ("lr_schedule", _table(values=[1e-3] * (TABLE_POINTS - 1))),
    "too_long": ("lr_schedule", _table(values=[1e-3] * (TABLE_POINTS + 1))),
    "huge": ("lr_schedule", _table(values=[0.5] * 200_000)),
    "not_a_list": ("lr_schedule", _table(values={"0": 1e-3})),
    "missing_values": ("lr_schedule", {"__kind__": "tabulated_schedule", "name": "f"}),
    "nan": ("lr_schedule", _table(at={17: float("nan")})),
    "inf": ("lr_schedule", _table(at={1000: float("inf")})),
    "str_value": ("lr_schedule", _table(at={3: "1e-3"})),
    "bool_value": ("lr_schedule", _table(at={0: True})),
    "nested_value": ("lr_schedule", _table(at={5: [1e-3]})),
    "long_name": ("lr_schedule", _table(name="x" * 10_000)),
    "name_not_str": ("lr_schedule", _table(name={"__kind__": "class"})),
    "inside_float_schedule": ("clip_range", {"__kind__": "float_schedule", "inner": _table(at={0: float("nan")})}),
    "non_schedule_entry": ("_last_obs", _table()),
    "space_entry": ("observation_space", _table()),
    "nested_entry": ("policy_kwargs.net_arch", _table()),
}  # fmt: skip


@pytest.mark.parametrize("case", list(TABULATED))
def test_tampered_tabulated_schedules_are_refused_naming_the_entry(saved, tmp_path, spies, case):
    entry, value = TABULATED[case]
    bad = tamper(saved["ppo"], tmp_path / "bad.zip", safe=lambda s: set_path(s, entry, value))
    err = attack("tabulated_schedule", "ppo", bad, spies, repr(entry))
    assert isinstance(err, UnsafeCheckpointError)


def test_user_features_extractor_needs_trusted_classes_or_custom_objects(tmp_path, spies):
    kwargs = dict(features_extractor_class=UserExtractor, features_extractor_kwargs=dict(width=8))
    model = PPO("MlpPolicy", "CartPole-v1", policy_kwargs=kwargs, n_steps=16, batch_size=16, seed=0)
    model.save(tmp_path / "user.zip")
    err = attack("user_class", "ppo", tmp_path / "user.zip", spies, "policy_kwargs.features_extractor_class")
    assert "trusted_classes" in str(err)
    for load_kwargs in (
        dict(trusted_classes=[UserExtractor]),
        dict(custom_objects={"policy_kwargs": kwargs}),
    ):
        loaded = PPO.load(tmp_path / "user.zip", **load_kwargs)
        assert isinstance(loaded.policy.features_extractor, UserExtractor)
        assert np.array_equal(
            model.predict(_obs(), deterministic=True)[0], loaded.predict(_obs(), deterministic=True)[0]
        )
    # trusted, but in a slot whose base it does not have: still refused
    bad = tamper(tmp_path / "user.zip", tmp_path / "bad.zip", safe=lambda s: set_path(
        s, "policy_kwargs.optimizer_class", cls_ref(__name__, "UserExtractor")))  # fmt: skip
    attack("user_class", "ppo", bad, spies, "policy_kwargs.optimizer_class", trusted_classes=[UserExtractor])
    with pytest.raises(ValueError, match="trusted_classes"):
        PPO.load(tmp_path / "user.zip", trusted_classes=["tests.UserExtractor"])


def test_a_tiny_lm_checkpoint_refuses_a_config_that_claims_a_huge_model(tmp_path, spies):
    env_kwargs = dict(max_new_tokens=4)
    model = GRPO("LMPolicy", "egsw/Arithmetic-v0", group_size=2, n_groups=1, env_kwargs=env_kwargs,
                 policy_kwargs=dict(model_config=dict(n_layer=1, n_embd=32, n_head=2)), seed=0)  # fmt: skip
    model.save(tmp_path / "lm.zip")
    env = build_vec_env("egsw/Arithmetic-v0", 2, env_kwargs=env_kwargs)
    GRPO.load(tmp_path / "lm.zip", env=env)  # the real file loads

    def edit(d):
        d["policy_kwargs"]["model_config"]["n_embd"] = 2**20

    bad = tamper(tmp_path / "lm.zip", tmp_path / "bad.zip", data=edit)
    attack("giant_claim", "grpo", bad, spies, "policy_kwargs.model_config")
    bad = tamper(tmp_path / "lm.zip", tmp_path / "bad2.zip",
                 data=lambda d: d["policy_kwargs"].__setitem__("model_config", cls_ref("subprocess", "Popen")))  # fmt: skip
    attack("class_outside_slot", "grpo", bad, spies, "policy_kwargs")
