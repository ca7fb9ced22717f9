"""Checkpoints that load without running code from the file.

Stable-Baselines3 stores every attribute it cannot write as JSON (spaces, schedules, the policy
class, ``policy_kwargs`` holding classes, numpy arrays) as a base64 cloudpickle, and
``BaseAlgorithm.load`` unpickles those entries, so loading a checkpoint from elsewhere can run
arbitrary code. Tensors are already safe (SB3 reads them with ``torch.load(weights_only=True)``).

:class:`SafeSerializationMixin` closes the gap for our algorithms:

- ``save`` adds ``egsw_gym_safe_data.json``: a plain-data encoding of each entry SB3 pickled
  (:mod:`egsw_gym.common.plain_data`), and ``egsw_gym_rng_state.json`` (:mod:`egsw_gym.common.rng_state`).
- ``load`` first checks the zip's headers (zip bombs, lying sizes, :mod:`egsw_gym.common.safe_zip`),
  then reads ``data`` and our member with bounded ``json.loads`` only, rebuilds every entry under
  strict rules (classes only in declared class slots, by exact module and qualname, from an
  allow-list or the caller's ``trusted_classes``, subclassing the slot's base), validates the values
  with the same checks the constructor uses (:meth:`SafeSerializationMixin._validate_loaded_params`)
  and hands every entry to SB3 as ``custom_objects``, so SB3 never calls ``cloudpickle.loads``. Any
  way a tampered or truncated file fails ends in :class:`UnsafeCheckpointError` naming the member and
  entry. ``allow_pickle=True`` restores SB3's behaviour for files you trust.
- A callable schedule (``learning_rate=lambda p: ...``) is saved as its values at 1001 progress
  points and comes back as a :class:`~egsw_gym.common.schedules.TabulatedSchedule` (exact at those
  points, linear in between), with a warning naming the entry. One that cannot be tabulated (it
  raises, or returns a non-finite value), and any callable in a zip written by plain SB3, comes back
  as a stand-in that lets the model ``predict``; ``learn`` then raises a ``ValueError`` naming the
  entry and the ``custom_objects`` key that supplies it. Entries a model cannot be built without (the policy
  class, the spaces, ``policy_kwargs``) are refused with the same hint. Run-time state (last
  observation, episode statistics) is dropped with a warning.
- Zips written by plain SB3 have no plain-data member; their entries are rebuilt from what SB3 prints
  next to each pickle (:mod:`egsw_gym.common.sb3_legacy`), still without unpickling.
- A file does not choose where the program writes: a saved ``tensorboard_log`` is not restored (pass
  ``load(..., tensorboard_log=...)``). The global RNG streams are only restored on request
  (``restore_rng=True``, the exact-resume path of ``docs/RESUME.md``).
"""

from __future__ import annotations

import collections
import io
import itertools
import json
import math
import os
import pickle
import warnings
import zipfile
from typing import Any

from egsw_gym.common.plain_data import (
    CLASS_SLOTS,
    SCHEDULE_ENTRIES,
    DecodeContext,
    PlainDataLimits,
    UnsafeCheckpointError,
    check_entry_sizes,
    decode_plain,
    encode_plain,
    parse_json,
)
from egsw_gym.common.rng_state import RNG_STATE_MEMBER, get_rng_state, set_rng_state
from egsw_gym.common.safe_zip import ZIP_ERRORS, ZipLimits, check_archive, open_checkpoint, read_text_member
from egsw_gym.common.sb3_legacy import rebuild_from_description
from egsw_gym.common.schedules import TABLE_POINTS, is_tabulated

__all__ = [
    "SafeSerializationMixin",
    "MissingEntry",
    "encode_plain",
    "decode_plain",
    "SAFE_DATA_MEMBER",
    "RNG_STATE_MEMBER",
    "UnsafeCheckpointError",
    "get_rng_state",
    "set_rng_state",
]

SAFE_DATA_MEMBER = "egsw_gym_safe_data.json"
#: attributes SB3 never saves (or that name live objects): a file carrying them is tampered
_FORBIDDEN_ENTRIES = frozenset(
    {"policy", "device", "env", "replay_buffer", "rollout_buffer", "_vec_normalize_env", "_episode_storage",
     "_logger", "_custom_logger", "ref_policy", "_dist", "egsw"}
)  # fmt: skip
#: run-time state that the next learn() rebuilds: dropped with a warning when it has no safe form
_RUNTIME_ENTRIES = {
    "_last_obs",
    "_last_episode_starts",
    "_last_original_obs",
    "ep_info_buffer",
    "ep_success_buffer",
}
_MAX_NET_WIDTH = 2**20
#: what rebuilding entries from a tampered file could raise besides our own errors
_BOUNDARY_ERRORS = (TypeError, AttributeError, KeyError, IndexError, OverflowError, RecursionError, MemoryError,
                    UnicodeError, AssertionError)  # fmt: skip


class MissingEntry:
    """Stands in for an entry the checkpoint could not carry safely (a lambda or closure schedule).

    While the model is being loaded it behaves as the constant 0.0 (the optimizer's learning rate is
    then restored from its saved state); afterwards calling it raises ``ValueError`` naming the entry
    and how to pass it back. ``learn`` checks for stand-ins before it starts.
    """

    def __init__(self, key: str) -> None:
        self.key = key
        self.loading = True

    @property
    def message(self) -> str:
        extra = " (lr_schedule is rebuilt from it)" if self.key in ("learning_rate", "lr_schedule") else ""
        key = "learning_rate" if self.key == "lr_schedule" else self.key
        return (
            f"checkpoint entry {self.key!r} was a Python callable, which a file cannot carry safely, so this "
            f"model can predict but not train. Pass it back: Model.load(path, custom_objects={{{key!r}: "
            f"your_schedule}}){extra}"
        )

    def __call__(self, *_args: Any) -> float:
        if self.loading:
            return 0.0
        raise ValueError(self.message)

    def __repr__(self) -> str:
        return f"MissingEntry({self.key!r})"


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _episode_info(item: Any) -> bool:
    return isinstance(item, dict) and all(_is_num(v) or isinstance(v, bool) for v in item.values())


#: entry -> (check, what is allowed): generic SB3 attributes, checked when present in a file
_GENERIC_CHECKS: dict[str, tuple[Any, str]] = {
    **{k: (lambda x: _is_int(x) and 0 <= x < 2**63, "an integer >= 0")
       for k in ("num_timesteps", "_total_timesteps", "_num_timesteps_at_start", "_n_updates", "_episode_num")},
    "n_envs": (lambda x: _is_int(x) and 1 <= x <= 2**20, "an integer >= 1"),
    "verbose": (lambda x: _is_int(x) and 0 <= x <= 10, "an integer in [0, 10]"),
    "seed": (lambda x: x is None or (_is_int(x) and abs(x) < 2**63), "None or an integer"),
    "_stats_window_size": (lambda x: _is_int(x) and 1 <= x <= 10**7, "an integer >= 1"),
    "use_sde": (lambda x: isinstance(x, bool), "True or False"),
    "sde_sample_freq": (lambda x: _is_int(x) and abs(x) < 2**63, "an integer"),
    "_current_progress_remaining": (_is_num, "a finite number"),
    "start_time": (lambda x: _is_num(x) or x is None, "a number"),
    "action_noise": (lambda x: x is None, "None"),
    "tensorboard_log": (lambda x: x is None or isinstance(x, str), "None or a path"),
    "policy_kwargs": (lambda x: isinstance(x, dict), "a dict"),
    "rollout_buffer_kwargs": (lambda x: x is None or isinstance(x, dict), "None or a dict"),
    "learning_rate": (lambda x: callable(x) or (_is_num(x) and x > 0), "a number > 0 or a schedule"),
    "lr_schedule": (callable, "a schedule"),
    "egsw_config": (lambda x: x is None or isinstance(x, dict), "None or a dict from EGSW.to_dict()"),
    "ep_info_buffer": (lambda x: x is None or (isinstance(x, collections.deque) and all(map(_episode_info, x))),
                       "a deque of episode-info dicts of numbers"),
    "ep_success_buffer": (lambda x: x is None or (isinstance(x, collections.deque) and all(
        _is_num(v) or isinstance(v, bool) for v in x)), "a deque of numbers"),
}  # fmt: skip


class SafeSerializationMixin:
    """Mix into an SB3 algorithm (before the SB3 class) to make ``load`` pickle-free. See module docs."""

    #: entries a model cannot be built without: refused (not set to None) when they cannot be rebuilt safely
    _safe_required_entries: tuple[str, ...] = (
        "policy_class",
        "observation_space",
        "action_space",
        "policy_kwargs",
    )
    _zip_limits = ZipLimits()
    _plain_limits = PlainDataLimits()
    #: largest rollout buffer a file may make ``load`` allocate (``n_steps`` x ``n_envs`` x observation)
    _max_buffer_bytes = 16 * 2**30

    def save(self, path, exclude=None, include=None) -> None:  # noqa: D102 (SB3's docstring applies)
        rng_state = get_rng_state()  # before anything else runs: the state of the training loop
        super().save(path, exclude=exclude, include=include)
        if isinstance(path, (str, os.PathLike)):
            path = os.fspath(path)
            if os.path.splitext(path)[1] == "":  # as SB3: ".zip" only when the name has no suffix
                path += ".zip"
        with open_checkpoint(path) as archive:
            data = json.loads(archive.read("data"))
        safe: dict[str, Any] = {}
        for key, value in data.items():
            if isinstance(value, dict) and ":serialized:" in value:
                try:
                    safe[key] = encode_plain(getattr(self, key), key)
                except (TypeError, AttributeError) as err:
                    safe[key] = {"__kind__": "unencodable", "reason": str(err)}
        if not isinstance(path, str):
            path.seek(0, io.SEEK_END)
        with zipfile.ZipFile(path, mode="a") as archive:
            archive.writestr(SAFE_DATA_MEMBER, json.dumps(safe))
            archive.writestr(RNG_STATE_MEMBER, json.dumps(rng_state))

    # ------------------------------------------------------------------ validation hook
    @classmethod
    def _validate_loaded_params(cls, data: dict[str, Any]) -> None:
        """Check the entries read from a file with the rules the constructor applies.

        Algorithms extend this (calling ``super()``) with their own constructor checks, called on the
        loaded values. Raises ``ValueError`` naming the entry; the caller adds the member name.
        """
        from egsw_gym.algorithms.egsw_config import as_egsw

        for key, (check, allowed) in _GENERIC_CHECKS.items():
            if key in data and not check(data[key]):
                raise ValueError(f"{key} must be {allowed}, got {_short(data[key])}")
        if data.get("egsw_config") is not None:
            try:
                as_egsw(data["egsw_config"])
            except (TypeError, ValueError) as err:
                raise ValueError(f"egsw_config: {err}") from err
        _check_schedule_values(data)

    @staticmethod
    def _loaded_settings(data: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
        """``{name: data[name]}`` for a constructor check; a missing entry is a named error."""
        missing = [n for n in names if n not in data]
        if missing:
            raise ValueError(f"entries {missing} are missing")
        # Stand-ins for callables the file could not carry are checked when learn() asks for them.
        return {n: data[n] for n in names if not isinstance(_unwrap(data[n]), MissingEntry)}

    # ------------------------------------------------------------------ load
    @classmethod
    def _safe_entries(
        cls, archive: zipfile.ZipFile, env: Any, custom: dict[str, Any], trusted: tuple[type, ...]
    ):
        """Every entry of ``data`` rebuilt from plain data and checked: ``(entries, missing callables)``."""
        limits = cls._plain_limits
        data_text = read_text_member(archive, "data", cls._zip_limits)
        if data_text is None:
            raise UnsafeCheckpointError("checkpoint has no 'data' member: not an SB3/egsw-gym checkpoint")
        data = parse_json(data_text, "data", limits)
        safe_text = read_text_member(archive, SAFE_DATA_MEMBER, cls._zip_limits)
        safe = parse_json(safe_text, SAFE_DATA_MEMBER, limits) if safe_text is not None else {}
        for member, value in (("data", data), (SAFE_DATA_MEMBER, safe)):
            if not isinstance(value, dict):
                raise UnsafeCheckpointError(f"checkpoint member {member!r} is not a JSON object")
            check_entry_sizes(value, member)
        data_ctx = DecodeContext("data", limits, trusted)
        safe_ctx = DecodeContext(SAFE_DATA_MEMBER, limits, trusted)
        entries: dict[str, Any] = {}
        missing: dict[str, MissingEntry] = {}
        dropped = []
        for key, value in data.items():
            cls._check_entry_name(key)
            if key in custom:
                continue
            if not (isinstance(value, dict) and ":serialized:" in value):
                entries[key] = _plain_entry(value, data_ctx, key)
                continue
            encoded = safe.get(key)
            if encoded is not None and not (
                isinstance(encoded, dict) and encoded.get("__kind__") == "unencodable"
            ):
                entries[key] = decode_plain(encoded, safe_ctx, key)
                continue
            ok, rebuilt = rebuild_from_description(key, value, env, data_ctx)
            if ok:
                entries[key] = rebuilt
            elif key in SCHEDULE_ENTRIES:
                entries[key] = missing[key] = MissingEntry(key)
            elif key in cls._safe_required_entries:
                raise UnsafeCheckpointError(_required_message(key))
            else:
                entries[key] = None
                dropped.append(key)
        if "tensorboard_log" in entries:
            entries["tensorboard_log"] = None  # a file does not choose where we write
        _warn_tabulated(entries, custom)
        if dropped:
            note = (
                " (run-time state that the next learn() rebuilds)" if set(dropped) <= _RUNTIME_ENTRIES else ""
            )
            warnings.warn(
                f"checkpoint entries {dropped} have no plain-data form and are not unpickled; they are set to "
                f"None{note}. Pass allow_pickle=True to restore them from a file you trust.",
                stacklevel=3,
            )
        return entries, missing

    @classmethod
    def _check_entry_name(cls, key: str) -> None:
        attr = getattr(cls, key, None)
        if key in _FORBIDDEN_ENTRIES or key.startswith("__") or callable(attr) or isinstance(attr, property):
            raise UnsafeCheckpointError(
                f"checkpoint member 'data', entry {key!r}: not a saved setting (it would replace "
                f"{'a method of ' + cls.__name__ if attr is not None else 'live state'})"
            )

    @classmethod
    def _check_entries(cls, entries: dict[str, Any], archive: zipfile.ZipFile) -> None:
        """Class slots hold classes, settings pass the constructor's checks, sizes fit the tensors."""
        for slot in CLASS_SLOTS:
            top, _, sub = slot.partition(".")
            holder = entries.get(top) if sub else entries
            name = sub or top
            if isinstance(holder, dict) and name in holder and not isinstance(holder[name], type):
                if not (slot == "rollout_buffer_class" and holder[name] is None):
                    raise UnsafeCheckpointError(
                        f"checkpoint member 'data', entry {slot!r}: expected a class, got {_short(holder[name])}"
                    )
        try:
            cls._validate_loaded_params(entries)
        except UnsafeCheckpointError:
            raise
        except (ValueError, TypeError) as err:
            raise UnsafeCheckpointError(f"checkpoint member 'data': {err}") from err
        _check_net_budget(entries, archive)
        _check_lm_policy(entries, archive)
        _check_buffer_budget(entries, cls._max_buffer_bytes)

    @classmethod
    def load(
        cls,
        path,
        env=None,
        device="auto",
        custom_objects=None,
        print_system_info=False,
        force_reset=True,
        allow_pickle: bool = False,
        restore_rng: bool = False,
        trusted_classes=(),
        **kwargs,
    ):
        """Load a model like SB3's ``load``, without running code from the file unless ``allow_pickle``.

        Parameters
        ----------
        path : str, os.PathLike or file-like
            The zip written by ``save`` (or by plain Stable-Baselines3).
        env, device, print_system_info, force_reset, **kwargs
            As in :meth:`stable_baselines3.common.base_class.BaseAlgorithm.load`. Pass
            ``force_reset=False`` (and an env in the saved state) to keep the saved last observation;
            ``tensorboard_log=...`` to log the next ``learn`` (a saved path is not reused).
        custom_objects : dict or None
            As in SB3: top-level entries of the file to replace (``learning_rate`` for a lambda
            schedule, ``policy_kwargs`` whole for user classes); they are used as given.
        allow_pickle : bool
            Opt-in for files you trust: let SB3 unpickle entries that have no plain-data form.
            Unpickling runs code the file chooses; never use it on files from elsewhere.
        restore_rng : bool
            Restore the global Python, NumPy and torch RNG states saved with the model (default False,
            as SB3), so that ``learn(..., reset_num_timesteps=False)`` continues the saved run's
            random stream exactly (``docs/RESUME.md``).
        trusted_classes : iterable of type
            Your own classes the file may name in a class slot (a custom features extractor or
            policy); matched by module and qualname, still required to subclass the slot's base.

        Raises
        ------
        UnsafeCheckpointError
            For a file that names code outside the rules, claims absurd sizes, is truncated or
            tampered; the message names the member and the entry.
        """
        if custom_objects is not None and not isinstance(custom_objects, dict):
            raise ValueError(f"custom_objects must be a dict or None, got {type(custom_objects).__name__}")
        trusted = tuple(trusted_classes or ())
        if not all(isinstance(c, type) for c in trusted):
            raise ValueError("trusted_classes must be a list of classes")
        custom = dict(custom_objects or {})
        missing: dict[str, MissingEntry] = {}
        with open_checkpoint(path) as archive:
            check_archive(archive, cls._zip_limits)
            try:
                bad = archive.testzip()  # CRC of every member, streamed in 1 MiB chunks
            except ZIP_ERRORS as err:
                raise UnsafeCheckpointError(f"checkpoint zip is damaged: {err}") from err
            if bad is not None:
                raise UnsafeCheckpointError(f"checkpoint member {bad!r} is damaged (CRC mismatch)")
            if not allow_pickle:
                try:
                    entries, missing = cls._safe_entries(archive, env, custom, trusted)
                    cls._check_entries({**entries, **custom}, archive)
                except _BOUNDARY_ERRORS as err:  # the boundary: a tampered file never leaks a raw error
                    raise UnsafeCheckpointError(
                        f"checkpoint member 'data' or {SAFE_DATA_MEMBER!r} is malformed: {type(err).__name__}: {err}"
                    ) from err
                custom = {**entries, **custom}
            rng_text = read_text_member(archive, RNG_STATE_MEMBER, cls._zip_limits) if restore_rng else None
        rng_state = (
            parse_json(rng_text, RNG_STATE_MEMBER, cls._plain_limits) if rng_text is not None else None
        )
        model = cls._sb3_load(path, env, device, custom, print_system_info, force_reset, kwargs)
        for stand_in in missing.values():
            stand_in.loading = False
        left = sorted(k for k, v in vars(model).items() if isinstance(_unwrap(v), MissingEntry))
        if left:
            warnings.warn(f"{_unwrap(getattr(model, left[0])).message}. Missing: {left}", stacklevel=2)
        if rng_state is not None:
            set_rng_state(rng_state)
        return model

    @classmethod
    def _sb3_load(cls, path, env, device, custom, print_system_info, force_reset, kwargs):
        """SB3's ``load`` with every entry from ``custom``; failures become errors naming the file's parts."""
        if not isinstance(path, (str, os.PathLike)):
            path.seek(0)
        try:
            return super().load(
                path,
                env=env,
                device=device,
                custom_objects=custom,
                print_system_info=print_system_info,
                force_reset=force_reset,
                **kwargs,
            )
        except pickle.UnpicklingError as err:
            raise UnsafeCheckpointError(
                "a tensor member (*.pth) of the checkpoint holds pickled objects other than tensors; "
                "torch.load(weights_only=True) refused to run them. The file is corrupt or malicious."
            ) from err
        except (ValueError, FileNotFoundError):
            raise  # SB3's own clear errors (an env whose spaces differ, ...)
        except Exception as err:  # noqa: BLE001 - the boundary: a damaged file never leaks a raw error
            raise UnsafeCheckpointError(
                "checkpoint could not be restored from its tensor members (policy.pth, policy.optimizer.pth, "
                f"pytorch_variables.pth) and the entries of 'data': {type(err).__name__}: {err}"
            ) from err

    def _setup_learn(self, *args: Any, **kwargs: Any):
        missing = [v for v in vars(self).values() if isinstance(_unwrap(v), MissingEntry)]
        if missing:
            raise ValueError(_unwrap(missing[0]).message)
        return super()._setup_learn(*args, **kwargs)


def _warn_tabulated(entries: dict[str, Any], custom: dict[str, Any]) -> None:
    """One warning naming the schedule entries that come back as tables of a saved callable's values."""
    keys = [k for k in SCHEDULE_ENTRIES if k in entries and is_tabulated(entries[k])]
    if "learning_rate" in custom and "lr_schedule" in keys:
        keys.remove("lr_schedule")  # SB3 rebuilds it from the learning_rate passed in
    if not keys:
        return
    example = "learning_rate" if keys[0] == "lr_schedule" else keys[0]
    warnings.warn(
        f"checkpoint entries {keys} were Python callables, restored from their values at {TABLE_POINTS} "
        f"progress points (exact there, linear in between); pass custom_objects={{{example!r}: fn}} for the "
        "function itself",
        stacklevel=4,
    )


def _unwrap(value: Any) -> Any:
    inner = getattr(value, "value_schedule", None)  # FloatSchedule(MissingEntry)
    return inner if isinstance(inner, MissingEntry) else value


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _required_message(key: str) -> str:
    hint = " or pass the env to load()" if key in ("observation_space", "action_space") else ""
    if key == "policy_kwargs":
        hint = " (for your own classes in it: trusted_classes=[...])"
    return (
        f"checkpoint member 'data', entry {key!r}: can only be restored by unpickling it (the file was probably "
        f"written by plain Stable-Baselines3 or holds a Python object). Pass custom_objects={{{key!r}: ...}}"
        f"{hint}, or allow_pickle=True if you trust the file (unpickling runs code the file chooses)."
    )


def _plain_entry(value: Any, ctx: DecodeContext, key: str) -> Any:
    """An entry SB3 wrote as plain JSON: used as it is, but never holding our encoded objects."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if "__kind__" in item or ":serialized:" in item:
                raise ctx.error(key, "a plain JSON entry holds an encoded object")
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return value


def _net_widths(net_arch: Any) -> list[list[int]]:
    lists = list(net_arch.values()) if isinstance(net_arch, dict) else [net_arch]
    widths = []
    for layers in lists:
        if not isinstance(layers, (list, tuple)) or not all(
            _is_int(w) and 0 < w <= _MAX_NET_WIDTH for w in layers
        ):
            raise UnsafeCheckpointError(
                f"checkpoint member 'data', entry 'policy_kwargs.net_arch': expected lists of layer widths in "
                f"[1, {_MAX_NET_WIDTH}], got {_short(net_arch)}"
            )
        widths.append(list(layers))
    return widths


def _check_buffer_budget(entries: dict[str, Any], max_bytes: int) -> None:
    """``n_steps`` x ``n_envs`` x the observation size must fit the rollout buffer bound (allocated at load)."""
    from gymnasium import spaces
    from stable_baselines3.common.preprocessing import get_obs_shape

    n_steps, n_envs, space = entries.get("n_steps"), entries.get("n_envs"), entries.get("observation_space")
    if not (_is_int(n_steps) and _is_int(n_envs) and isinstance(space, spaces.Space)):
        return
    shapes = get_obs_shape(space)
    per_step = sum(math.prod(s) for s in (shapes.values() if isinstance(shapes, dict) else [shapes])) + 8
    needed = 4 * n_steps * n_envs * per_step  # float32 observations plus actions, rewards, values, ...
    if needed > max_bytes:
        raise UnsafeCheckpointError(
            f"checkpoint member 'data', entry 'n_steps': a rollout buffer of n_steps={n_steps} x n_envs={n_envs} "
            f"x {per_step} values needs {needed / 2**30:.1f} GiB, more than {max_bytes / 2**30:.0f} GiB"
        )


def _check_net_budget(entries: dict[str, Any], archive: zipfile.ZipFile) -> None:
    """A ``net_arch`` (or LM config) cannot claim more parameters than ``policy.pth`` holds bytes for."""
    kwargs = entries.get("policy_kwargs")
    if not isinstance(kwargs, dict):
        return
    try:
        stored = archive.getinfo("policy.pth").file_size
    except KeyError:
        raise UnsafeCheckpointError("checkpoint has no 'policy.pth' member") from None
    claims = []
    if kwargs.get("net_arch") is not None:
        lower = sum(sum(a * b for a, b in itertools.pairwise(w)) for w in _net_widths(kwargs["net_arch"]))
        claims.append(("policy_kwargs.net_arch", lower))
    extractor_kwargs = kwargs.get("features_extractor_kwargs")
    if isinstance(extractor_kwargs, dict):  # a width (features_dim, ...) means at least that many weights
        widest = max((v for v in extractor_kwargs.values() if _is_int(v)), default=0)
        claims.append(("policy_kwargs.features_extractor_kwargs", widest))
    for entry, params in claims:
        if 2 * params > stored + 2**16:  # at least 2 bytes a parameter (float16) must be in policy.pth
            raise UnsafeCheckpointError(
                f"checkpoint member 'data', entry {entry!r}: claims at least {params} parameters but "
                f"'policy.pth' holds {stored} bytes"
            )


def _is_lm_policy(policy_class: Any) -> bool:
    return isinstance(policy_class, type) and any(
        c.__name__ == "LMPolicy" and c.__module__.startswith("egsw_gym.policies.lm")
        for c in policy_class.__mro__
    )


def _check_lm_policy(entries: dict[str, Any], archive: zipfile.ZipFile) -> None:
    """An LMPolicy's ``policy_kwargs`` must build (on the meta device, nothing allocated) exactly the model
    ``policy.pth`` stores: a config or LoRA rank edited to claim a larger model is refused before loading."""
    kwargs = entries.get("policy_kwargs")
    if not (_is_lm_policy(entries.get("policy_class")) and isinstance(kwargs, dict)):
        return
    from egsw_gym.common.lm_checkpoint import check_checkpoint_policy  # lazy: transformers
    from egsw_gym.common.model_size import zip_member_shapes

    try:
        stored = zip_member_shapes(archive, "policy.pth")
    except Exception as err:  # noqa: BLE001 - torch's unpickler refusing, a damaged member: one named error
        raise UnsafeCheckpointError(
            f"checkpoint member 'policy.pth' cannot be described: {type(err).__name__}: {err}"[:500]
        ) from err
    try:
        check_checkpoint_policy(kwargs, entries.get("observation_space"), entries.get("action_space"), stored)
    except (ValueError, TypeError) as err:
        raise UnsafeCheckpointError(f"checkpoint member 'data', {err}") from err


#: schedule entry -> (low, high) its values must stay within at every progress point of a file
_SCHEDULE_BOUNDS = {"learning_rate": (0.0, "lr"), "lr_schedule": (0.0, "lr"), "clip_range": (0.0, "coef"),
                    "clip_range_vf": (0.0, "coef")}  # fmt: skip


def _check_schedule_values(data: dict[str, Any]) -> None:
    """A loaded schedule (constant, linear or a table of a callable's values) is evaluated at every one of
    the ``TABLE_POINTS`` progress points and must stay finite and within the constructor's bounds there
    (a table of 1e308 learning rates is refused like ``learning_rate=1e308``)."""
    from egsw_gym.common.checks import MAX_COEF, MAX_LEARNING_RATE, check_schedule_value

    for key, (low, kind) in _SCHEDULE_BOUNDS.items():
        schedule = data.get(key)
        if not callable(schedule) or isinstance(_unwrap(schedule), MissingEntry):
            continue
        high = MAX_LEARNING_RATE if kind == "lr" else MAX_COEF
        for i in range(TABLE_POINTS):
            progress = i / (TABLE_POINTS - 1)
            check_schedule_value(key, schedule(progress), progress, low=low, high=high)
