"""Train and evaluate one (algorithm, environment, seed) run, writing its learning curve as CSV.

A run directory holds ``config.json`` (the :class:`RunSpec`), ``curve.csv`` (one row per
evaluation: ``timesteps, eval_mean, eval_std, wall_s``), ``model.zip`` and, once finished,
``result.json``. ``result.json`` is written last and atomically, so its presence means the run is
complete: :func:`train_run` skips such runs and restarts any other one from scratch.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.logger import configure
from stable_baselines3.common.utils import check_for_correct_spaces
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecNormalize, sync_envs_normalization

from egsw_gym.algorithms.registry import BASES, get_algorithm
from egsw_gym.common.checkpoints import save_atomic
from egsw_gym.common.env_util import build_vec_env, is_text_env
from egsw_gym.envs.vector import find_text_vector_env
from egsw_gym.experiments.presets import RunSpec
from egsw_gym.experiments.provenance import code_version, run_provenance
from egsw_gym.experiments.rundir import read_json_file
from egsw_gym.llm import evaluate_accuracy, warm_start
from egsw_gym.llm.warm_start_artifact import cached_warm_start, isolated_rng

__all__ = [
    "is_text_env",
    "make_env",
    "make_model",
    "evaluate_model",
    "train_run",
    "EvalCurveCallback",
    "save_normalization",
    "load_normalization",
    "warm_start_config",
]


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=float))
    os.replace(tmp, path)  # atomic on POSIX: readers see the old file or the new one, never half


def make_env(
    spec: RunSpec, *, n_envs: int | None = None, seed: int | None = None, split: str | None = None
) -> VecEnv:
    """The vectorised training (or evaluation) environment of a run.

    Text environments (:func:`~egsw_gym.common.env_util.is_text_env`) are built by GRPO's factory,
    :func:`~egsw_gym.common.env_util.build_vec_env` (the batched ``vector_entry_point`` behind the SB3
    adapter and ``VecMonitor``); everything else goes through SB3's ``make_vec_env``.
    """
    n_envs = spec.n_envs if n_envs is None else n_envs
    seed = spec.seed if seed is None else seed
    env_kwargs = dict(spec.env_kwargs)
    if is_text_env(spec.env_id):
        if split is not None:
            env_kwargs["split"] = split
        return build_vec_env(spec.env_id, n_envs, env_kwargs=env_kwargs, seed=seed)
    return make_vec_env(spec.env_id, n_envs=n_envs, seed=seed, env_kwargs=env_kwargs, vec_env_cls=DummyVecEnv)


def warm_start_config(spec: RunSpec) -> dict[str, Any]:
    """Everything a run's warm start depends on (its artifact's key, see :func:`make_model`).

    The task (``env_id``, ``env_kwargs``), the seed (initial weights and data order), the policy
    and its ``policy_kwargs`` (the model), and the warm start's steps and settings; not the
    algorithm, so GRPO and GRPO+EGSW of one seed share it.
    """
    return {
        "env_id": spec.env_id,
        "env_kwargs": spec.env_kwargs,
        "seed": spec.seed,
        "policy": spec.policy,
        "policy_kwargs": spec.algo_kwargs.get("policy_kwargs"),
        "steps": spec.warm_start_steps,
        "warm_start_kwargs": spec.warm_start_kwargs,
    }


def make_model(
    spec: RunSpec,
    *,
    tensorboard_log: str | None = None,
    verbose: int = 0,
    warm_start_dir: str | os.PathLike | None = None,
):
    """Instantiate the algorithm of ``spec`` on its training environment (warm-started if asked).

    With ``warm_start_dir``, the warm start is the saved artifact of :func:`warm_start_config`
    (trained and saved there by the first run that needs it,
    :func:`~egsw_gym.llm.warm_start_artifact.cached_warm_start`), so every run of the same task,
    seed and warm-start settings starts RL from the same weights. Either way the warm start runs
    with the global random generators restored afterwards, so what follows does not depend on
    whether it was trained or loaded.
    """
    env = make_env(spec)
    if spec.normalize:
        # Rewards are normalised for a learned critic (PPO) only: GRPO normalises returns within each
        # group already, and its presets were tuned with observation normalisation alone.
        norm_reward = BASES[spec.base_algo].normalize_reward
        env = VecNormalize(env, gamma=spec.algo_kwargs.get("gamma", 0.99), norm_reward=norm_reward)
    algo_cls = get_algorithm(spec.algo).cls
    model = algo_cls(
        spec.policy,
        env,
        egsw=spec.egsw,
        seed=spec.seed,
        device="cpu",
        verbose=verbose,
        tensorboard_log=tensorboard_log,
        **spec.algorithm_kwargs(),
    )
    if spec.warm_start_steps and spec.policy == "LMPolicy":
        venv = find_text_vector_env(env)  # the batched text env: its task, tokenizer and prompt encoding
        if venv is None:
            raise ValueError(
                f"warm_start_steps needs a text-generation environment (egsw/*), got env_id={spec.env_id!r}"
            )

        def train() -> dict[str, Any]:
            return warm_start(
                model.policy,
                venv.task,
                venv.tokenizer,
                steps=spec.warm_start_steps,
                seed=spec.seed,
                env=venv,
                **spec.warm_start_kwargs,
            )

        with isolated_rng():
            if warm_start_dir is None:
                model.warm_start_result = train()
            else:
                model.warm_start_result = cached_warm_start(
                    model.policy, warm_start_dir, warm_start_config(spec), train, code_version()
                )
        # The KL reference (beta > 0) was copied from the untrained model at construction; anchor it
        # to the warm-started one, the "base model" RL starts from.
        model.sync_reference_policy()
    return model


def evaluate_model(
    model, spec: RunSpec, eval_env: VecEnv | None = None, normalization_path: str | os.PathLike | None = None
) -> tuple[float, float]:
    """Mean and std of the evaluation score: episode return (control) or held-out accuracy (text).

    For runs with ``normalize``, the observation statistics come from the model's training env, or,
    for a loaded model without one, from ``normalization_path`` (see :func:`save_normalization`).
    """
    if is_text_env(spec.env_id):
        # Greedy accuracy only (k=0): sampled pass@k would double the cost of every curve point.
        acc = evaluate_accuracy(
            model.policy, spec.env_id, n=spec.eval_episodes, greedy=True, k=0, env_kwargs=spec.env_kwargs
        )
        value = float(acc["accuracy"])
        return value, float(np.sqrt(value * (1 - value)))
    if eval_env is None:
        eval_env = make_env(spec, n_envs=1, seed=spec.seed + 10_000)
        if spec.normalize:
            eval_env = VecNormalize(eval_env, training=False, norm_reward=False)
    if spec.normalize:
        if model.get_vec_normalize_env() is not None:
            sync_envs_normalization(model.get_env(), eval_env)
        elif normalization_path is not None:
            load_normalization(eval_env, normalization_path)
        else:
            raise ValueError(
                "this run normalises observations: pass normalization_path= (vecnormalize.json of the run)"
            )
    # A model for another env (a mixed-up or tampered run directory) is a named error, not a traceback.
    check_for_correct_spaces(eval_env, model.observation_space, model.action_space)
    mean, std = evaluate_policy(model, eval_env, n_eval_episodes=spec.eval_episodes, deterministic=True)
    return float(mean), float(std)


def save_normalization(env: VecNormalize, path: str | os.PathLike) -> None:
    """Write ``VecNormalize`` statistics as JSON (SB3's own ``save`` pickles the wrapper).

    Parameters
    ----------
    env : VecNormalize
        The training env's normaliser.
    path : path
        Target file, written atomically.
    """

    def stats(rms) -> dict[str, Any]:
        return {
            "mean": np.asarray(rms.mean).tolist(),
            "var": np.asarray(rms.var).tolist(),
            "count": float(rms.count),
        }

    if isinstance(env.obs_rms, dict):
        raise ValueError("save_normalization supports Box observations only, got Dict observation statistics")
    data = {
        "obs_rms": stats(env.obs_rms),
        "ret_rms": stats(env.ret_rms),
        "clip_obs": env.clip_obs,
        "clip_reward": env.clip_reward,
        "epsilon": env.epsilon,
        "norm_obs": env.norm_obs,
        "norm_reward": env.norm_reward,
        "gamma": env.gamma,
    }
    _write_json_atomic(Path(path), data)


def load_normalization(env: VecNormalize, path: str | os.PathLike) -> VecNormalize:
    """Load statistics written by :func:`save_normalization` into ``env`` (plain JSON, nothing unpickled).

    Raises
    ------
    ValueError
        Naming the file and the entry, for a missing, oversized, malformed or mismatched file.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path} not found: this run normalises observations and needs its statistics")
    if path.stat().st_size > 64 * 2**20:
        raise ValueError(f"{path} is larger than 64 MiB: not a normalisation file")
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise ValueError(f"{path} is not valid JSON: {type(err).__name__}") from None
    entry = "the file"
    try:
        stats = {}
        for name in ("obs_rms", "ret_rms"):
            rms = getattr(env, name)
            for field in ("mean", "var"):
                entry = f"{name}.{field}"
                value = np.asarray(data[name][field], dtype=np.float64)
                if value.shape != np.shape(getattr(rms, field)) or not np.all(np.isfinite(value)):
                    raise ValueError(f"expected finite numbers of shape {np.shape(getattr(rms, field))}")
                if field == "var" and np.any(value < 0):
                    raise ValueError("variances must be >= 0")
                stats[entry] = value
            entry = f"{name}.count"
            count = data[name]["count"]
            if isinstance(count, bool) or not isinstance(count, (int, float)) or not count > 0:
                raise ValueError("expected a number > 0")
            stats[entry] = float(count)
        clips = []
        for entry in ("clip_obs", "clip_reward", "epsilon"):
            value = data[entry]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
                raise ValueError("expected a number > 0")
            clips.append(float(value))
    except (KeyError, TypeError, ValueError) as err:
        detail = f"missing {err}" if isinstance(err, KeyError) else str(err)
        raise ValueError(f"{path}, entry {entry!r}: {detail}") from None
    for name in ("obs_rms", "ret_rms"):
        rms = getattr(env, name)
        rms.mean, rms.var, rms.count = stats[f"{name}.mean"], stats[f"{name}.var"], stats[f"{name}.count"]
    env.clip_obs, env.clip_reward, env.epsilon = clips
    return env


class EvalCurveCallback(BaseCallback):
    """Evaluate every ``spec.eval_freq`` environment steps and append a row to ``curve.csv``.

    Parameters
    ----------
    spec : RunSpec
        The run (evaluation settings come from it).
    curve_path : pathlib.Path
        CSV file to append to (created with a header).
    """

    def __init__(self, spec: RunSpec, curve_path: Path):
        super().__init__()
        self.spec, self.curve_path = spec, curve_path
        self._next_eval = 0
        self._t0 = time.perf_counter()
        self._eval_env: VecEnv | None = None
        self.curve_rows = 0
        self.last: tuple[float, float] = (float("nan"), float("nan"))
        #: the first evaluation (before any update: e.g. the warm-started LM's accuracy)
        self.first: tuple[float, float] = (float("nan"), float("nan"))

    def _init_callback(self) -> None:
        with open(self.curve_path, "w", newline="") as f:
            csv.writer(f).writerow(["timesteps", "eval_mean", "eval_std", "wall_s"])
        self._next_eval = 0
        self.curve_rows = 0

    def evaluate_now(self) -> None:
        """Evaluate and append one row (also called once after training)."""
        mean, std = evaluate_model(self.model, self.spec, self._eval_env)
        if self.curve_rows == 0:
            self.first = (mean, std)
        self.curve_rows += 1
        self.last = (mean, std)
        self.logger.record("eval/mean", mean)
        with open(self.curve_path, "a", newline="") as f:
            csv.writer(f).writerow([self.num_timesteps, mean, std, round(time.perf_counter() - self._t0, 2)])

    def _on_step(self) -> bool:
        if self.num_timesteps >= self._next_eval:
            self.evaluate_now()
            self._next_eval = self.num_timesteps + self.spec.eval_freq
        return True


def train_run(
    spec: RunSpec,
    run_dir: str | os.PathLike,
    *,
    progress_bar: bool = False,
    verbose: int = 0,
    torch_threads: int = 1,
    warm_start_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Train one run into ``run_dir`` (skipped when already finished) and return its result.

    ``result.json`` records, besides the scores, the resolved ``config`` (the :class:`RunSpec`)
    and its ``provenance`` (:func:`~egsw_gym.experiments.provenance.run_provenance`: code
    version, package versions, CPU model and flags, torch threads). On one machine and one
    commit, two runs of the same spec write the same ``result.json`` and ``curve.csv`` except for
    wall-clock times (``wall_s``, ``warm_start.seconds`` of a freshly trained warm start, the
    ``wall_s`` column) and ``provenance.code.dirty``/``diff_sha256`` where the tree changed.

    Parameters
    ----------
    spec : RunSpec
        What to run.
    run_dir : path
        Output directory; an unfinished one is wiped and the run restarts cleanly.
    progress_bar : bool
        Show SB3's progress bar.
    verbose : int
        Algorithm verbosity.
    torch_threads : int
        ``torch.set_num_threads`` for this run (small networks train fastest on one thread).
    warm_start_dir : path or None
        Where language-model warm starts are saved and shared between runs (see
        :func:`make_model`); ``None`` trains the warm start inside the run.
    """
    run_dir = Path(run_dir)
    result_path = run_dir / "result.json"
    if result_path.exists():
        return read_json_file(result_path)  # a finished run: checked like every run file
    if run_dir.exists():
        shutil.rmtree(run_dir)  # interrupted earlier: restart cleanly rather than mix two partial runs
    run_dir.mkdir(parents=True)
    torch.set_num_threads(torch_threads)
    _write_json_atomic(run_dir / "config.json", spec.to_dict())
    t0 = time.perf_counter()
    model = make_model(spec, verbose=verbose, warm_start_dir=warm_start_dir)
    # The warm start's summary belongs in result.json, not in the model's checkpoint (SB3 saves
    # every attribute it is not told to exclude).
    warm_start_result = model.__dict__.pop("warm_start_result", None)
    model.set_logger(configure(str(run_dir / "logs"), ["csv"]))
    callback = EvalCurveCallback(spec, run_dir / "curve.csv")
    model.learn(total_timesteps=spec.n_timesteps, callback=callback, progress_bar=progress_bar)
    callback.evaluate_now()
    save_atomic(model, run_dir / "model.zip")
    if model.get_vec_normalize_env() is not None:
        save_normalization(model.get_vec_normalize_env(), run_dir / "vecnormalize.json")
    result = dict(
        algo=spec.algo,
        env_id=spec.env_id,
        seed=spec.seed,
        timesteps=int(model.num_timesteps),
        initial_eval_mean=callback.first[0],
        final_eval_mean=callback.last[0],
        final_eval_std=callback.last[1],
        wall_s=round(time.perf_counter() - t0, 2),
    )
    if warm_start_result is not None:
        result["warm_start"] = warm_start_result
    result["config"] = spec.to_dict()
    result["provenance"] = run_provenance()
    _write_json_atomic(result_path, result)
    return result
