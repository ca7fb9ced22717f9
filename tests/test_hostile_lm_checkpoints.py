"""Issue 25: language-model checkpoints that claim more than they store, and files that would be
parsed into gigabytes, are refused before memory is spent.

Each case edits a real saved GRPO ``LMPolicy`` zip (a tiny GPT-2, a tiny Llama, a GPT-2 with LoRA)
or a ``save_pretrained`` directory it names, then loads it. It must end in a named error (or a
bounded, correct load), with the process's resident memory growing by less than 200 MB while it
runs (sampled every 2 ms from ``/proc/self/statm``). Time is never asserted; the
``pytest.mark.timeout`` markers only catch a hang. ``pytest -s`` prints each case's time and RSS
growth.
"""

from __future__ import annotations

import json
import warnings
import zipfile
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("peft")

from memory_bound import MB, RSS_BOUND, RssGrowth  # noqa: E402

from egsw_gym import GRPO  # noqa: E402
from egsw_gym.common.env_util import build_vec_env  # noqa: E402
from egsw_gym.common.serialization import SAFE_DATA_MEMBER, UnsafeCheckpointError  # noqa: E402
from egsw_gym.common.tokenizer import load_tokenizer  # noqa: E402

torch.set_num_threads(1)
ENV_KWARGS = dict(max_new_tokens=4)
GPT = dict(n_layer=1, n_embd=32, n_head=2)
LLAMA = dict(model_type="llama", hidden_size=32, intermediate_size=64, num_hidden_layers=1,
             num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256)  # fmt: skip
REPORT: list[tuple[str, str, float, float]] = []
pytestmark = pytest.mark.timeout(120)  # a hang guard for each case, not a performance assertion


def refused(case: str, load, match: str, error=ValueError) -> BaseException:
    """Run ``load``; assert a named error matching ``match`` and RSS growth under 200 MB."""
    with RssGrowth() as rss:
        with pytest.raises(error, match=match) as info:
            load()
    REPORT.append((case, str(info.value)[:160], rss.seconds, rss.growth / MB))
    assert rss.growth < RSS_BOUND, f"{case}: RSS grew {rss.growth / MB:.0f} MB"
    return info.value


@pytest.fixture(scope="module", autouse=True)
def report():
    yield
    for case, message, seconds, growth in REPORT:
        print(f"\n{case}: {seconds:.2f} s, RSS +{growth:.1f} MB: {message}")


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("lm")
    out = {}
    for name, kwargs in (("gpt", dict(model_config=GPT)), ("llama", dict(model_config=LLAMA)),
                         ("lora", dict(model_config=GPT, lora_config=dict(r=4)))):  # fmt: skip
        model = GRPO("LMPolicy", "egsw/Arithmetic-v0", group_size=2, n_groups=1, env_kwargs=ENV_KWARGS,
                     policy_kwargs=kwargs, seed=0)  # fmt: skip
        model.save(folder / f"{name}.zip")
        out[name] = folder / f"{name}.zip"
    return out


@pytest.fixture(scope="module")
def env():
    return build_vec_env("egsw/Arithmetic-v0", 2, env_kwargs=ENV_KWARGS)


def edit_zip(src: Path, dst: Path, data=None, safe=None) -> Path:
    with zipfile.ZipFile(src) as zf:
        content = {n: zf.read(n) for n in zf.namelist()}
    for member, fn in (("data", data), (SAFE_DATA_MEMBER, safe)):
        if fn is not None:
            value = json.loads(content[member])
            fn(value)
            content[member] = json.dumps(value).encode()
    with zipfile.ZipFile(dst, "w") as zf:
        for name, raw in content.items():
            zf.writestr(name, raw)
    return dst


def set_config(field, value, key="model_config"):
    return lambda d: d["policy_kwargs"][key].__setitem__(field, value)


@pytest.mark.parametrize("name", ["gpt", "llama", "lora"])
def test_the_real_files_load(saved, env, name):
    with RssGrowth() as rss:
        GRPO.load(saved[name], env=env)
    REPORT.append((f"real {name} zip loads", "", rss.seconds, rss.growth / MB))


CONFIG_CASES = {
    "gpt n_inner=4e6": ("gpt", set_config("n_inner", 4_000_000), "policy_kwargs.model_config"),
    "gpt n_inner=4e6 (a float)": ("gpt", set_config("n_inner", 4e6), "policy_kwargs.model_config"),
    "gpt n_positions=1e7": ("gpt", set_config("n_positions", 10_000_000), "policy_kwargs.model_config"),
    "gpt n_layer=1e5": ("gpt", set_config("n_layer", 100_000), "more than .* layers"),
    "gpt n_layer=2 (one more than stored)": ("gpt", set_config("n_layer", 2), "stored weights do not hold"),
    "gpt n_embd=2**20": ("gpt", set_config("n_embd", 2**20), "policy_kwargs.model_config"),
    "gpt vocab_size=1e9": ("gpt", set_config("vocab_size", 10**9), "policy_kwargs.model_config"),
    "gpt n_head=0": ("gpt", set_config("n_head", 0), "policy_kwargs.model_config"),
    "llama intermediate_size=1e7": (
        "llama",
        set_config("intermediate_size", 10**7),
        "policy_kwargs.model_config",
    ),
    "llama intermediate_size=1e8": (
        "llama",
        set_config("intermediate_size", 10**8),
        "policy_kwargs.model_config",
    ),
    "llama num_hidden_layers=1e5": ("llama", set_config("num_hidden_layers", 10**5), "more than .* layers"),
    "llama hidden_size=2**16": ("llama", set_config("hidden_size", 2**16), "policy_kwargs.model_config"),
    "lora r=1e6": ("lora", set_config("r", 10**6, "lora_config"), "policy_kwargs.lora_config"),
    "lora r=16 (not the stored 4)": ("lora", set_config("r", 16, "lora_config"), "policy_kwargs.lora_config"),
    "lora r=0": ("lora", set_config("r", 0, "lora_config"), "lora_config"),
}


@pytest.mark.parametrize("case", list(CONFIG_CASES))
def test_a_config_claiming_another_model_is_refused_before_allocating(saved, env, tmp_path, case):
    name, edit, match = CONFIG_CASES[case]
    bad = edit_zip(saved[name], tmp_path / "bad.zip", data=edit)
    refused(case, lambda: GRPO.load(bad, env=env), match, UnsafeCheckpointError)


def test_llama_max_position_embeddings_allocates_nothing_it_scales(saved, env, tmp_path):
    """Llama's positions are rotary (no table sized by them): a huge value loads, bounded, and is caught
    by the policy's position check only where observations need them."""
    bad = edit_zip(saved["llama"], tmp_path / "pos.zip", data=set_config("max_position_embeddings", 10**9))
    with RssGrowth() as rss:
        GRPO.load(bad, env=env)
    REPORT.append(("llama max_position_embeddings=1e9 loads", "", rss.seconds, rss.growth / MB))
    assert rss.growth < RSS_BOUND


def _model_dir(tmp_path: Path, edit) -> Path:
    from egsw_gym.policies.tiny_lm import build_tiny_lm

    folder = tmp_path / "model_dir"
    build_tiny_lm(100, **GPT).save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    edit(config)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize(("field", "value", "match"), [("n_layer", 100_000, "more than .* layers"),
                                                       ("n_inner", 4_000_000, "does not describe the stored")])  # fmt: skip
def test_a_model_directory_whose_config_does_not_match_its_weights(saved, env, tmp_path, field, value, match):
    folder = _model_dir(tmp_path, lambda c: c.__setitem__(field, value))

    def named(d):
        d["policy_kwargs"] = {"model": str(folder)}

    bad = edit_zip(saved["gpt"], tmp_path / "dir.zip", data=named)
    refused(f"checkpoint naming a model dir with {field}={value}", lambda: GRPO.load(bad, env=env), match)
    refused(
        f"GRPO(policy_kwargs=dict(model=dir with {field}={value}))",
        lambda: GRPO(
            "LMPolicy",
            "egsw/Arithmetic-v0",
            group_size=2,
            n_groups=1,
            env_kwargs=ENV_KWARGS,
            policy_kwargs=dict(model=str(folder)),
        ),  # fmt: skip
        match,
    )


def test_a_matching_model_directory_loads(tmp_path):
    folder = _model_dir(tmp_path, lambda c: None)
    GRPO("LMPolicy", "egsw/Arithmetic-v0", group_size=2, n_groups=1, env_kwargs=ENV_KWARGS,
         policy_kwargs=dict(model=str(folder)))  # fmt: skip


def _big_tokenizer(folder: Path, entries: int) -> Path:
    folder.mkdir()
    with open(folder / "tokenizer.json", "w") as fh:
        fh.write('{"version": "1.0", "model": {"type": "WordLevel", "unk_token": "[UNK]", "vocab": {')
        for start in range(0, entries, 100_000):
            fh.write(",".join(f'"t{i}": {i}' for i in range(start, min(start + 100_000, entries))))
            fh.write("," if start + 100_000 < entries else "")
        fh.write("}}}")
    return folder


def test_a_three_million_entry_tokenizer_is_refused_unread(tmp_path):
    folder = _big_tokenizer(tmp_path / "tok", 3_000_000)
    refused(
        "tokenizer.json of 3e6 entries", lambda: load_tokenizer(str(folder)), "tokenizer.json holds more than"
    )


def test_a_tokenizer_file_over_its_size_cap_is_refused(tmp_path):
    folder = tmp_path / "tok"
    folder.mkdir()
    with open(folder / "vocab.txt", "wb") as fh:
        fh.truncate(40 * MB)  # sparse: no disk, no memory
    refused("vocab.txt of 40 MB", lambda: load_tokenizer(str(folder)), "vocab.txt is .* bytes, more than")


def _huge_list_zip(src: Path, dst: Path, values: int) -> Path:
    """``src`` with ``data['policy_kwargs']['x']`` a list of ``values`` floats, streamed to disk."""
    with zipfile.ZipFile(src) as zf:
        content = {n: zf.read(n) for n in zf.namelist()}
    data = json.loads(content.pop("data"))
    data["policy_kwargs"]["x"] = "@@"
    head, tail = json.dumps(data).split('"@@"')
    with zipfile.ZipFile(dst, "w") as zf:
        with zf.open("data", "w", force_zip64=True) as out:
            out.write(head.encode() + b"[")
            chunk = b"0.25, " * 1_000_000
            for _ in range(values // 1_000_000):
                out.write(chunk)
            out.write(b"0.25]" + tail.encode())
        for name, raw in content.items():
            zf.writestr(name, raw)
    return dst


def test_a_224_mb_data_member_of_one_float_list_is_refused_before_parsing(saved, env, tmp_path):
    bad = _huge_list_zip(saved["gpt"], tmp_path / "floats.zip", 40_000_000)
    assert bad.stat().st_size > 200 * MB
    refused("224 MB data member, one list of 4e7 floats", lambda: GRPO.load(bad, env=env),
            "holds more than .* JSON values", UnsafeCheckpointError)  # fmt: skip


def test_a_policy_kwargs_list_over_its_entry_cap_is_refused(saved, env, tmp_path):
    bad = edit_zip(saved["gpt"], tmp_path / "list.zip",
                   data=lambda d: d["policy_kwargs"].__setitem__("x", [0.5] * 100_000))  # fmt: skip
    refused("policy_kwargs list of 1e5 floats", lambda: GRPO.load(bad, env=env),
            "entry 'policy_kwargs': holds more than", UnsafeCheckpointError)  # fmt: skip


@pytest.fixture(scope="module")
def scheduled(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sched") / "lambda.zip"
    GRPO("MlpPolicy", "CartPole-v1", group_size=2, n_groups=1, learning_rate=lambda p: 3e-4 * p, seed=0).save(
        path
    )
    return path


def _table(value):
    def edit(safe):
        for key in ("learning_rate", "lr_schedule"):
            entry = safe[key]
            entry = entry.get("inner", entry)
            entry["values"] = [value] * len(entry["values"])

    return edit


SCHEDULE_CASES = {
    "table of 1e308": (_table(1e308), "learning_rate.* must be"),
    "table of 1e4": (_table(1e4), "learning_rate.* must be"),
    "table of -1": (_table(-1.0), "learning_rate.* must be"),
    "table of NaN": (_table(float("nan")), "finite number"),
}


@pytest.mark.parametrize("case", list(SCHEDULE_CASES))
def test_absurd_schedule_values_are_refused_like_constructor_values(scheduled, tmp_path, case):
    edit, match = SCHEDULE_CASES[case]
    bad = edit_zip(scheduled, tmp_path / "bad.zip", safe=edit)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tabulated-schedule note, when the table decodes at all
        refused(f"learning-rate {case}", lambda: GRPO.load(bad), match, UnsafeCheckpointError)


def test_the_constructor_refuses_the_same_learning_rates():
    for lr in (1e308, 1e4, float("nan"), float("inf"), lambda p: 1e308):
        with pytest.raises(ValueError, match="learning_rate"):
            GRPO("MlpPolicy", "CartPole-v1", group_size=2, n_groups=1, learning_rate=lr)


def test_only_layer_count_fields_are_bounded_as_layer_counts():
    """Qwen2's max_window_layers is a threshold, not a count: a real Qwen2 config passes the bound."""
    from egsw_gym.common.lm_checkpoint import check_layer_counts

    qwen2 = {"num_hidden_layers": 2, "max_window_layers": 28, "layer_norm_eps": 1e-6}
    check_layer_counts(qwen2, "model_config", limit=5)
    for key in ("num_hidden_layers", "n_layer", "num_decoder_layers", "decoder_layers"):
        with pytest.raises(ValueError, match=f"{key}=6 declares more than 5 layers"):
            check_layer_counts({key: 6}, "model_config", limit=5)
