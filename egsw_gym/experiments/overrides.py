"""``--set KEY=VALUE`` preset overrides: parsed strictly, every key and value checked before a run.

``KEY`` is dotted (``grpo.learning_rate``, ``egsw.alpha``, ``n_timesteps``,
``env_kwargs.max_new_tokens``); ``VALUE`` is YAML (``1e-3``, ``true``, ``[64, 64]``,
``{n_layer: 2}``), read by a loader that refuses aliases and anchors (``&a``, ``*a``: an alias
bomb expands a few hundred characters into gigabytes), explicit tags (``!!python/...``) and
nesting deeper than :data:`MAX_DEPTH`. Then the keys are checked:

- top level: the run settings (``n_timesteps``, ``eval_freq``, ``eval_episodes``,
  ``warm_start_steps``, ``env_kwargs``, ``warm_start_kwargs``), ``egsw`` and one block per base
  algorithm (``ppo``, ``grpo``);
- in an algorithm block: ``n_envs``, ``policy``, ``normalize``, ``egsw`` and the algorithm
  class's constructor arguments, values checked against their annotations; the arguments the
  command line sets itself (``seed``, ``device``, ``tensorboard_log``, ``verbose``, ``env``) are
  refused with the flag to use instead;
- ``egsw.*``: the fields of :class:`~egsw_gym.egsw.EGSW`; ``warm_start_kwargs.*``: the arguments
  of :func:`~egsw_gym.llm.warm_start`.

An unknown or misspelt key is refused with the closest valid one. Every problem is an
:class:`OverrideError` (a ``ValueError``) of one line naming the ``--set`` item.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import inspect
import math
import re
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, Literal, Union

import yaml

from egsw_gym.egsw import EGSW

__all__ = ["OverrideError", "parse_overrides", "check_overrides", "MAX_DEPTH", "MAX_VALUE_CHARS"]

#: longest VALUE text, most dotted KEY parts, deepest nesting of lists and mappings in a VALUE
MAX_VALUE_CHARS = 10_000
MAX_KEY_PARTS = 6
MAX_DEPTH = 8
#: largest integer an override may hold (beyond it numbers lose precision as floats anyway)
MAX_INT = 2**53
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


class OverrideError(ValueError):
    """A ``--set`` item that cannot be applied: one line naming it and the fix."""


def _show(item: str) -> str:
    return repr(item) if len(item) <= 80 else repr(item[:77] + "...")


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader without aliases, anchors or explicit tags, and with bounded nesting."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            raise OverrideError("YAML aliases (*name) are not allowed")
        if getattr(event, "anchor", None) is not None:
            raise OverrideError("YAML anchors (&name) are not allowed")
        if getattr(event, "tag", None) not in (None, "!"):
            raise OverrideError(f"YAML tags ({event.tag}) are not allowed")
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise OverrideError(f"lists and mappings nested more than {MAX_DEPTH} deep")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _plain(value: Any) -> Any:
    """Refuse what YAML can produce but a preset cannot hold (dates, non-string keys, non-finite floats)."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        if abs(value) > MAX_INT:
            raise OverrideError(f"integer {value:.3g} is beyond +-2**53")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise OverrideError(f"non-finite number {value!r}")
        return value
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        bad = [k for k in value if not isinstance(k, str)]
        if bad:
            raise OverrideError(f"mapping keys must be strings, got {bad[0]!r}")
        return {k: _plain(v) for k, v in value.items()}
    raise OverrideError(f"a {type(value).__name__} value is not allowed (quote it to pass a string)")


def _parse_value(text: str) -> Any:
    """A YAML value; ``1e-3`` is a float (PyYAML's YAML 1.1 reads it as a string)."""
    if len(text) > MAX_VALUE_CHARS:
        raise OverrideError(f"the value is longer than {MAX_VALUE_CHARS} characters")
    try:
        value = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - the loader is a SafeLoader
    except yaml.YAMLError as err:
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise OverrideError(f"not a valid YAML value ({problem})") from None
    except RecursionError:
        raise OverrideError(f"lists and mappings nested more than {MAX_DEPTH} deep") from None
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        value = float(value)
    return _plain(value)


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """``["grpo.learning_rate=1e-3", "n_timesteps=5000"]`` -> checked nested dict of YAML values.

    Parameters
    ----------
    items : list of str, optional
        ``KEY=VALUE`` strings, as given to ``--set``.

    Raises
    ------
    OverrideError
        For a malformed item, a refused YAML construct, an unknown key (with the closest valid
        one) or a value of the wrong type or range.
    """
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise OverrideError(f"--set expects KEY=VALUE (e.g. grpo.learning_rate=1e-3), got {_show(item)}")
        key, text = item.split("=", 1)
        parts = key.strip().split(".")
        if len(parts) > MAX_KEY_PARTS:
            raise OverrideError(f"--set {_show(item)}: KEY has more than {MAX_KEY_PARTS} dotted parts")
        if not all(_NAME.fullmatch(p) for p in parts):
            raise OverrideError(f"--set {_show(item)}: KEY must be dotted names such as grpo.learning_rate")
        try:
            value = _parse_value(text)
        except OverrideError as err:
            raise OverrideError(f"--set {_show(item)}: {err}") from None
        node = out
        for k, p in enumerate(parts[:-1]):
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise OverrideError(
                    f"--set {_show(item)}: {'.'.join(parts[: k + 1])} was set to a value by an earlier --set"
                )
        node[parts[-1]] = value
    return check_overrides(out)


# ----------------------------------------------------------------------------------- key checks


def _int_in(lo: int, hi: int = MAX_INT) -> Callable[[str, Any], int]:
    def check(key: str, value: Any) -> int:
        v = _as_int(value)
        if v is None or not lo <= v <= hi:
            raise OverrideError(f"--set {key}={value!r}: must be a whole number in [{lo}, {hi}]")
        return v

    return check


def _mapping(key: str, value: Any) -> dict:
    if not isinstance(value, dict):
        raise OverrideError(
            f"--set {key}={value!r}: {key} is a mapping of settings; set its keys ({key}.NAME=VALUE)"
        )
    return value


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


#: run settings: key -> check (returns the value to use)
_RUN_CHECKS: dict[str, Callable[[str, Any], Any]] = {
    "n_timesteps": _int_in(1, 10**12),
    "eval_freq": _int_in(1, 10**12),
    "eval_episodes": _int_in(1, 10**6),
    "warm_start_steps": _int_in(0, 10**9),
    "env_kwargs": _mapping,
}
#: constructor arguments the command line sets itself, and what to use instead
_CLI_SET = {
    "seed": "the seed is the run's: use --seed (train) or --seeds (compare, study)",
    "device": "egsw-gym trains on the CPU; for another device use the Python API (PPO(..., device=...))",
    "tensorboard_log": "each run logs to <--out>/<env>/<algo>/seed<k>/logs; choose the place with --out",
    "verbose": "use --progress (train) for a progress bar",
    "env": "use --env (train) or --envs (compare, study)",
    "env_kwargs": "environment arguments are run settings: use env_kwargs.NAME=VALUE (top level)",
    "_init_setup_model": "it is internal to the algorithm class",
}
_BLOCK_RUN_CHECKS: dict[str, Callable[[str, Any], Any]] = {
    "n_envs": _int_in(1, 2**16),
    "policy": lambda key, v: v if isinstance(v, str) else _type_error(key, v, "a policy name (str)"),
    "normalize": lambda key, v: v if isinstance(v, bool) else _type_error(key, v, "true or false"),
}


def _type_error(key: str, value: Any, expected: str) -> Any:
    raise OverrideError(f"--set {key}={value!r}: expects {expected}, got {type(value).__name__}")


def _unknown(key: str, name: str, valid: list[str], what: str) -> OverrideError:
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ";"
    return OverrideError(f"--set {key}: unknown {what} {name!r}{hint} valid: {', '.join(sorted(valid))}")


@functools.cache
def _bases() -> dict[str, type]:
    """Preset block name -> algorithm class, from the algorithm table."""
    from egsw_gym.algorithms.registry import BASES

    return {name: base.cls for name, base in BASES.items()}


@functools.cache
def _signature(fn: Any, skip: tuple[str, ...]) -> dict[str, tuple[Any, str]]:
    """Parameter name -> (resolved annotation or Any, annotation text) of ``fn``."""
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # noqa: BLE001 - an annotation that cannot be resolved is left unchecked
        hints = {}
    params = inspect.signature(fn).parameters
    return {
        n: (hints.get(n, Any), str(p.annotation) if p.annotation is not inspect.Parameter.empty else "any")
        for n, p in params.items()
        if n not in skip and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }


def _egsw_fields() -> dict[str, tuple[Any, str]]:
    hints = typing.get_type_hints(EGSW)
    return {f.name: (hints.get(f.name, Any), str(f.type)) for f in dataclasses.fields(EGSW)}


def _warm_start_args() -> dict[str, tuple[Any, str]]:
    from egsw_gym.llm import warm_start

    # The run passes the policy, task, tokenizer, env and seed, and warm_start_steps is a run setting.
    return _signature(warm_start, ("policy_or_model", "task", "tokenizer", "steps", "seed", "env"))


def check_overrides(over: dict[str, Any]) -> dict[str, Any]:
    """Check the keys and values of nested overrides (see the module docstring); returns them coerced.

    Raises
    ------
    OverrideError
        Naming the first bad key or value, with the closest valid key for a misspelt one.
    """
    bases = _bases()
    out: dict[str, Any] = {}
    for name, value in over.items():
        if name in _RUN_CHECKS:
            out[name] = _RUN_CHECKS[name](name, value)
        elif name == "egsw":
            out[name] = _check_args(name, _mapping(name, value), _egsw_fields(), "EGSW field")
        elif name == "warm_start_kwargs":
            out[name] = _check_args(name, _mapping(name, value), _warm_start_args(), "warm_start argument")
        elif name in bases:
            out[name] = _check_block(name, value, bases[name])
        else:
            raise _unknown_top(name, bases)
    return out


def _unknown_top(name: str, bases: dict[str, type]) -> OverrideError:
    homes = [b for b, cls in bases.items() if name in _BLOCK_RUN_CHECKS or name in _block_args(cls)]
    if homes:
        where = " or ".join(f"{b}.{name}" for b in homes)
        return OverrideError(f"--set {name}: {name!r} is an algorithm setting; did you mean {where}?")
    valid = [*_RUN_CHECKS, "egsw", "warm_start_kwargs", *bases]
    return _unknown(name, name, valid, "key")


def _block_args(cls: type) -> dict[str, tuple[Any, str]]:
    return _signature(cls.__init__, ("self", "policy", "egsw", *_CLI_SET))


def _check_block(base: str, value: Any, cls: type) -> dict[str, Any]:
    block = _mapping(base, value)
    args = _block_args(cls)
    out: dict[str, Any] = {}
    for name, v in block.items():
        key = f"{base}.{name}"
        if name in _CLI_SET:
            raise OverrideError(f"--set {key}: {name} is not a --set key of {cls.__name__}; {_CLI_SET[name]}")
        if name in _BLOCK_RUN_CHECKS:
            out[name] = _BLOCK_RUN_CHECKS[name](key, v)
        elif name == "egsw":
            out[name] = _check_args(key, _mapping(key, v), _egsw_fields(), "EGSW field")
        elif name in args:
            out[name] = _check_value(key, v, *args[name])
        else:
            valid = [*args, *_BLOCK_RUN_CHECKS, "egsw"]
            raise _unknown(key, name, valid, f"{cls.__name__} setting")
    return out


def _check_args(prefix: str, block: dict[str, Any], args: dict[str, tuple[Any, str]], what: str) -> dict:
    out = {}
    for name, v in block.items():
        if name not in args:
            raise _unknown(f"{prefix}.{name}", name, list(args), what)
        out[name] = _check_value(f"{prefix}.{name}", v, *args[name])
    return out


def _check_value(key: str, value: Any, hint: Any, text: str) -> Any:
    """``value`` as ``hint`` accepts it (an integral float becomes an int), or an OverrideError."""
    ok, coerced = _accepts(hint, value)
    if not ok:
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
        raise OverrideError(f"--set {key}={shown}: expects {text}, got {type(value).__name__}")
    return coerced


def _accepts(hint: Any, value: Any) -> tuple[bool, Any]:
    """Whether a plain value fits the annotation ``hint``; unknown annotations accept anything."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True, value
    if origin in (Union, types.UnionType):
        for arm in args:
            ok, coerced = _accepts(arm, value)
            if ok:
                return True, coerced
        return False, value
    if origin is Literal:
        return value in args, value
    if hint is type(None):
        return value is None, value
    if hint is bool:
        return isinstance(value, bool), value
    if hint is int:
        v = _as_int(value)
        return v is not None, v
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool), value
    if hint is str:
        return isinstance(value, str), value
    if hint is dict or origin in (dict, Mapping):
        return isinstance(value, dict), value
    if hint in (list, tuple) or origin in (list, tuple):
        return isinstance(value, list), value
    if origin is Callable or hint is Callable:  # a schedule: RL Zoo's "lin_<x>" string
        return _is_linear_schedule(value), value
    if origin is type:
        return False, value  # a class cannot be written in YAML
    return True, value


def _is_linear_schedule(value: Any) -> bool:
    if not (isinstance(value, str) and value.startswith("lin_")):
        return False
    try:
        return math.isfinite(float(value[4:]))
    except ValueError:
        return False
