"""A batched text-generation environment: many sequences stepped at once with numpy.

Same per-slot contract as :class:`~egsw_gym.envs.text_generation.TextGenerationEnv` (see that
module's docstring), batched: observations are ``{"input_ids": (n, L), "attention_mask": (n, L)}``
int64 arrays, actions a ``MultiDiscrete([vocab_size] * n)`` array. The token hot path is a handful
of numpy operations on those arrays; Python work per slot happens only when a slot's episode ends
(decode, verify, sample the next prompt).

Autoreset is ``AutoresetMode.SAME_STEP`` (like SB3): a slot whose episode ends is reset inside the
same ``step``; that step returns the new episode's first observation, the finished episode's
reward/terminated/truncated, and in ``info`` (gymnasium's dict-of-arrays with ``_key`` masks)
``final_obs`` (object array holding the finished slot's last observation dict) and ``final_info``
(the finished episode's info, see the single env), while the top-level keys hold the new
episode's reset info (``prompt``, ``answer``, ``prompt_index``, ``split``).

With ``autoreset=False`` (attribute), or for the episodes of the next ``reset()`` only after
:func:`hold_finished_episodes` (which finds the env under SB3/gymnasium wrappers), a finished slot
is scored exactly as above (``final_obs``/``final_info`` in that step's info) but *not*
reset: until the next ``reset()`` it keeps its last observation, ignores its actions, and returns
reward 0 and ``terminated = truncated = False`` (so episode counters such as ``VecMonitor`` see one
episode). A GRPO round plays one episode per slot and throws later episodes away, so this mode
saves sampling, encoding and verifying them.

Slot ``i`` is exactly a single environment reset with ``seed[i]``: stepping this environment
gives the same trajectories as ``n`` single environments with the same seeds and actions (each
single one calling ``reset()`` without a seed when its episode ends).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from .core import RESET_OPTION_KEYS, TextGenerationCore
from .tasks import Task
from .text_generation import check_render_mode, render_text_rgb

__all__ = ["TextGenerationVectorEnv", "find_text_vector_env", "hold_finished_episodes", "merge_infos"]


def merge_infos(entries: Sequence[tuple[int, dict[str, Any]]], num_envs: int) -> dict[str, Any]:
    """Gymnasium's vector info (dict of arrays with ``_key`` masks) from per-slot info dicts, in one pass.

    The result is exactly what ``VectorEnv._add_info`` builds when called once per entry, in
    order (same keys and key order, same array dtypes: taken from a key's first value; nested
    dicts merged recursively; ``final_obs`` an object array), but each key's array and mask are
    allocated once instead of being looked up and re-stored for every slot, which matters when a
    step finishes many of a large batch's episodes at once.

    Parameters
    ----------
    entries : sequence of (int, dict)
        ``(slot, info)`` pairs; a slot may appear more than once (later values win).
    num_envs : int
        Number of slots.

    Returns
    -------
    dict
    """
    by_key: dict[str, list[tuple[int, Any]]] = {}
    for slot, info in entries:
        for key, value in info.items():
            by_key.setdefault(key, []).append((slot, value))
    out: dict[str, Any] = {}
    for key, items in by_key.items():
        first = items[0][1]
        if key != "final_obs" and isinstance(first, dict):
            array: Any = merge_infos(items, num_envs)
        else:
            if key == "final_obs" or not (type(first) in (int, float, bool) or isinstance(first, np.number)):
                array = (
                    np.zeros((num_envs, *first.shape), dtype=first.dtype)
                    if key != "final_obs" and isinstance(first, np.ndarray)
                    else np.full(num_envs, fill_value=None, dtype=object)
                )
            else:
                array = np.zeros(num_envs, dtype=type(first))
            for slot, value in items:
                array[slot] = value
        mask = np.zeros(num_envs, dtype=np.bool_)
        mask[[slot for slot, _ in items]] = True
        out[key], out[f"_{key}"] = array, mask
    return out


class TextGenerationVectorEnv(VectorEnv):
    """``num_envs`` text-generation episodes stepped together.

    Parameters
    ----------
    num_envs : int
        Number of parallel sequences, at most :attr:`max_num_envs` (16,384; a class attribute:
        subclass or set it to allow more). Construction costs O(``num_envs`` x sequence length)
        memory and no per-slot work (each slot's generator is built at its first unseeded draw).
    task : str or Task
        As for :class:`~egsw_gym.envs.text_generation.TextGenerationEnv` (one task object is
        shared by all slots).
    tokenizer : None, str, os.PathLike or tokenizer object
        As for the single environment.
    max_prompt_tokens : int or None
        As for the single environment.
    max_new_tokens : int or None
        As for the single environment.
    split : str
        ``"train"`` or ``"test"``.
    data_path : str, os.PathLike or None
        JSONL file for ``task="jsonl"``.
    prompt_truncation : str
        ``"error"`` or ``"left"``.
    render_mode : str or None
        ``None``, ``"ansi"`` (``render()`` returns one string per slot) or ``"rgb_array"`` (one
        image per slot).
    **task_kwargs
        Forwarded to the task.

    Attributes
    ----------
    task : Task
        The shared task.
    tokenizer : transformers.PreTrainedTokenizerBase
        The tokenizer.
    core : TextGenerationCore
        Prompt encoding and scoring, as for the single environment.
    problems : list of Problem
        The current problem of each slot.
    autoreset : bool
        ``True`` (default): SAME_STEP autoreset, unless :func:`hold_finished_episodes` asked to hold
        the episodes of the latest ``reset()``. ``False``: finished slots always stay finished
        until the next ``reset()`` (see the module docstring); takes effect from the next step.
    supports_per_env_options : bool
        ``True``: ``reset(options={"prompt_index": [k_0, ..., k_{n-1}]})`` gives each slot its own
        option (``None`` entries sample); :class:`egsw_gym.common.vec_env.VectorEnvAdapter`
        relies on it for SB3's per-env ``set_options``.
    """

    metadata = {
        "render_modes": ["ansi", "rgb_array"],
        "render_fps": 4,
        "autoreset_mode": AutoresetMode.SAME_STEP,
    }
    #: most slots of one vector env: far above any batch of sequences one process generates, below the
    #: sizes whose (num_envs, seq_len) buffers and batched spaces would take gigabytes
    max_num_envs = 16_384
    supports_per_env_options = True

    def __init__(
        self,
        num_envs: int = 1,
        task: str | Task = "arithmetic",
        tokenizer: Any = None,
        max_prompt_tokens: int | None = None,
        max_new_tokens: int | None = None,
        split: str = "train",
        data_path: str | os.PathLike | None = None,
        prompt_truncation: str = "error",
        render_mode: str | None = None,
        **task_kwargs: Any,
    ):
        if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive int, got {num_envs!r}")
        if num_envs > self.max_num_envs:
            raise ValueError(
                f"num_envs={num_envs} is more than max_num_envs={self.max_num_envs} slots of one vector env; "
                "use fewer (a GRPO round of n_envs slots is repeated as often as needed) or raise "
                "TextGenerationVectorEnv.max_num_envs"
            )
        self.render_mode = check_render_mode(render_mode, self.metadata["render_modes"])
        self.num_envs = int(num_envs)
        self.core = TextGenerationCore(
            task,
            tokenizer,
            max_prompt_tokens,
            max_new_tokens,
            split,
            data_path,
            prompt_truncation,
            **task_kwargs,
        )
        c = self.core
        self.task, self.tokenizer, self.split = c.task, c.tokenizer, c.split
        self.max_prompt_tokens, self.max_new_tokens = c.max_prompt_tokens, c.max_new_tokens
        self.eos_token_id, self.pad_token_id, self.vocab_size = c.eos_token_id, c.pad_token_id, c.vocab_size
        self.single_observation_space = c.observation_space()
        self.single_action_space = c.action_space()
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        n, L = self.num_envs, c.seq_len
        self._ids = np.full((n, L), self.pad_token_id, dtype=np.int64)
        self._mask = np.zeros((n, L), dtype=np.int64)
        self._t = np.zeros(n, dtype=np.int64)
        self._rows = np.arange(n)
        self._held = np.zeros(n, dtype=bool)  # slots finished and waiting for reset() (autoreset off)
        self._any_held = False
        self.autoreset = True
        self._hold_pending = False  # hold_finished_episodes: hold the episodes of the next reset()
        self._hold_episodes = False  # ...which reset() moves here
        self._started = False
        self.problems: list[Any] = [None] * n
        self._rngs: list[np.random.Generator | None] = [None] * n  # built at the first draw (see _rng)
        # Slots reset with the same seed (and options) as an earlier slot of the same reset share its
        # problem; their own generator is only built, by replaying that reset's draw, if they ever
        # draw again (an autoreset). A GRPO round seeds group_size slots alike and never does.
        self._deferred: dict[int, tuple[int, dict | None]] = {}

    # ------------------------------------------------------------------------------------ helpers
    def _obs(self) -> dict[str, np.ndarray]:
        return {"input_ids": self._ids.copy(), "attention_mask": self._mask.copy()}

    def _rng(self, i: int) -> np.random.Generator:
        """Slot ``i``'s generator: built now if its seeded reset was shared (see ``_deferred``), or from
        fresh entropy at the slot's first draw when it was never seeded."""
        rng = self._rngs[i]
        if rng is None and i not in self._deferred:
            rng = self._rngs[i] = seeding.np_random(None)[0]
        if rng is None:
            seed, options = self._deferred.pop(i)
            rng = seeding.np_random(seed)[0]
            self.core.choose_problem(rng, options)  # the draw of the reset it shared
            self._rngs[i] = rng
        return rng

    def _reset_slots(self, slots: list[int], options: dict | None) -> dict[str, Any]:
        """Start the next episode of ``slots`` on one problem, chosen with the first slot's generator."""
        problem = self.core.choose_problem(self._rng(slots[0]), options)
        row, mask = self.core.encode(problem)
        P = self.max_prompt_tokens
        self._ids[slots] = self.pad_token_id
        self._mask[slots] = 0
        self._ids[slots, :P], self._mask[slots, :P] = row, mask
        self._t[slots] = 0
        for i in slots:
            self.problems[i] = problem
        return self.core.reset_info(problem)

    def _per_slot(self, name: str, value: Any, check, offset: bool = False) -> list:
        """Broadcast a scalar or ``None`` to all slots (``offset``: slot ``i`` gets ``value + i``),
        or validate a per-slot sequence."""
        if value is None or np.isscalar(value):
            value = check(value)
            if value is None or not offset:
                return [value] * self.num_envs
            return [value + i for i in range(self.num_envs)]
        if not isinstance(value, (Sequence, np.ndarray)) or len(value) != self.num_envs:
            raise ValueError(
                f"{name} must be None, a scalar or a sequence of {self.num_envs} entries, got {value!r}"
            )
        return [check(v) for v in value]

    @staticmethod
    def _check_seed(s: Any) -> int | None:
        if s is None:
            return None
        if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 0:
            raise ValueError(f"seed must be None, a non-negative int or a list of them, got {s!r}")
        return int(s)

    # ---------------------------------------------------------------------------------- gym API
    def reset(
        self, *, seed: int | Sequence[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Reset every slot.

        Parameters
        ----------
        seed : int, sequence of (int or None), or None
            An int ``s`` seeds slot ``i`` with ``s + i`` (as ``SyncVectorEnv`` does); a sequence
            gives each slot its seed (``None``: unseeded). A seeded slot samples exactly the
            prompt a single environment reset with that seed samples.
        options : dict or None
            ``{"prompt_index": k}`` puts problem ``k`` in every slot (a whole group on one prompt);
            ``{"prompt_index": [k_0, ..., k_{n-1}]}`` one per slot, ``None`` entries sampled.

        Returns
        -------
        tuple of (dict, dict)
            Batched observation and the reset infos (dict of arrays with ``_key`` masks).
        """
        obs, entries = self.reset_entries(seed=seed, options=options)
        return obs, merge_infos(entries, self.num_envs)

    def reset_entries(
        self, *, seed: int | Sequence[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], list[tuple[int, dict[str, Any]]]]:
        """:meth:`reset`, with the infos as ``(slot, info)`` pairs (:func:`merge_infos` builds the vector info).

        :class:`~egsw_gym.common.vec_env.VectorEnvAdapter` reads them as they are, for SB3's per-env
        info dicts, instead of merging them into arrays and splitting those again. Slots reset or
        scored alike share one dict: read them, do not change them.
        """
        if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
            super().reset(seed=int(seed))
        seeds = self._per_slot("seed", seed, self._check_seed, offset=True)
        slot_options: list[dict | None] = [None] * self.num_envs
        if options:
            unknown = [k for k in options if k not in RESET_OPTION_KEYS]
            if unknown:
                raise ValueError(f"unknown reset option(s) {unknown}; allowed: {RESET_OPTION_KEYS}")
            idx = self._per_slot("options['prompt_index']", options.get("prompt_index"), lambda v: v)
            slot_options = [None if k is None else {"prompt_index": k} for k in idx]
        resets: dict[tuple, list[int]] = {}  # slots reset alike: same seed and options (unseeded: alone)
        for i, s in enumerate(seeds):
            resets.setdefault((i,) if s is None else (s, str(slot_options[i])), []).append(i)
        entries = []
        for slots in resets.values():
            first, s = slots[0], seeds[slots[0]]
            if s is not None:
                self._rngs[first] = seeding.np_random(s)[0]
                self._deferred.pop(first, None)
            for i in slots[1:]:  # the first slot's problem; their generators deferred
                self._rngs[i], self._deferred[i] = None, (s, slot_options[i])
            info = self._reset_slots(slots, slot_options[first])
            entries.extend((i, info) for i in slots)
        self._held[:] = False
        self._any_held = False
        self._hold_episodes, self._hold_pending = self._hold_pending, False
        self._started = True
        return self._obs(), entries

    def step(
        self, actions: np.ndarray
    ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Append one token to every sequence; finished slots are scored and reset in place.

        Parameters
        ----------
        actions : numpy.ndarray
            ``(num_envs,)`` token ids in ``[0, vocab_size)``.

        Returns
        -------
        tuple
            ``(obs, rewards, terminated, truncated, infos)`` with ``rewards`` float64 ``(n,)``
            (nonzero only for slots whose episode ended), ``terminated``/``truncated`` bool ``(n,)``,
            and the SAME_STEP infos described in the module docstring.
        """
        obs, rewards, terminated, truncated, entries = self.step_entries(actions)
        return obs, rewards, terminated, truncated, merge_infos(entries, self.num_envs) if entries else {}

    def step_entries(
        self, actions: np.ndarray
    ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray, list[tuple[int, dict[str, Any]]]]:
        """:meth:`step`, with the infos as ``(slot, info)`` pairs (see :meth:`reset_entries`)."""
        if not self._started:
            raise RuntimeError("call reset() before step()")
        actions = np.asarray(actions)
        if actions.shape != (self.num_envs,) or not np.issubdtype(actions.dtype, np.integer):
            raise ValueError(
                f"actions must be an integer array of shape ({self.num_envs},) that action_space.contains "
                f"accepts, got {actions.dtype} {actions.shape}; floats and other types are not truncated to ids"
            )
        if actions.min() < 0 or actions.max() >= self.vocab_size:
            raise ValueError(f"actions must be token ids in [0, {self.vocab_size}), got {actions}")
        rows, acts = self._rows, actions
        if self._any_held:  # slots waiting for reset() (autoreset off) ignore their actions
            rows = np.flatnonzero(~self._held)
            acts = actions[rows]
        pos = self.max_prompt_tokens + self._t[rows]
        self._ids[rows, pos] = acts
        self._mask[rows, pos] = 1
        self._t[rows] += 1
        terminated = np.zeros(self.num_envs, dtype=bool)
        terminated[rows] = acts == self.eos_token_id
        truncated = ~terminated & (self._t >= self.max_new_tokens)
        if self._any_held:
            truncated &= ~self._held
        rewards = np.zeros(self.num_envs, dtype=np.float64)
        done = np.flatnonzero(terminated | truncated)
        if len(done) == 0:
            return self._obs(), rewards, terminated, truncated, []
        entries: list[tuple[int, dict[str, Any]]] = []
        P = self.max_prompt_tokens
        # The slots of a GRPO group share one problem object, and often a completion: score each
        # (problem, completion) once a step (the verifier is a function of the two). The entry
        # keeps its problem alive, so no later problem of this step can reuse its id.
        finished: dict[tuple[int, bytes], tuple[Any, float, dict[str, Any]]] = {}
        for i in done.tolist():
            final_obs = {"input_ids": self._ids[i].copy(), "attention_mask": self._mask[i].copy()}
            problem, generated = self.problems[i], self._ids[i, P : P + self._t[i]]
            key = (id(problem), generated.tobytes())
            if key not in finished:
                finished[key] = (problem, *self.core.finish(problem, generated))
            _, rewards[i], final_info = finished[key]
            entries.append((i, {"final_obs": final_obs, "final_info": final_info}))
            if self.autoreset and not self._hold_episodes:
                entries.append((i, self._reset_slots([i], None)))
            else:
                self._held[i] = self._any_held = True
        return self._obs(), rewards, terminated, truncated, entries

    def render(self) -> tuple[str, ...] | tuple[np.ndarray, ...] | None:
        """Per slot, the prompt followed by the completion so far: strings with ``render_mode="ansi"``,
        images of that text with ``"rgb_array"`` (see the single environment)."""
        if self.render_mode is None or not self._started:
            return None
        P = self.max_prompt_tokens
        texts = tuple(
            p.prompt + self.core.decode(self._ids[i, P : P + self._t[i]]) for i, p in enumerate(self.problems)
        )
        return texts if self.render_mode == "ansi" else tuple(render_text_rgb(t) for t in texts)


def find_text_vector_env(env: Any) -> TextGenerationVectorEnv | None:
    """The :class:`TextGenerationVectorEnv` inside ``env``, or ``None`` when there is none.

    ``env`` may be the vector env itself, or that env under gymnasium vector wrappers, an SB3
    :class:`~egsw_gym.common.vec_env.VectorEnvAdapter` and SB3 ``VecEnvWrapper`` s (``VecMonitor``...),
    as ``GRPO`` and :func:`~egsw_gym.common.env_util.build_vec_env` build it. Its ``task``,
    ``tokenizer`` and prompt encoding are what ``warm_start`` and evaluation need.

    Parameters
    ----------
    env : Any
        The environment.

    Returns
    -------
    TextGenerationVectorEnv or None
        The batched text environment; ``None`` for any other env (a ``DummyVecEnv`` of single envs...).
    """
    inner = getattr(env, "unwrapped", env)  # SB3 VecEnvWrapper chain -> innermost VecEnv
    inner = getattr(inner, "venv", inner)  # VectorEnvAdapter -> gymnasium VectorEnv
    inner = getattr(inner, "unwrapped", inner)  # gymnasium vector wrappers
    return inner if isinstance(inner, TextGenerationVectorEnv) else None


def hold_finished_episodes(env: Any, hold: bool = True) -> bool:
    """Hold the episodes of the next ``reset()`` of the :class:`TextGenerationVectorEnv` inside ``env``.

    After the next ``reset()`` every slot plays one episode and then waits (no autoreset) until the
    reset after it, which restores the env's own ``autoreset`` setting unless this is called again.
    ``env`` is anything :func:`find_text_vector_env` looks through. GRPO calls it before each round's
    reset: a round uses one episode per slot, so the episodes an autoreset would start (sample, encode,
    later verify) are wasted work. Scoping it to one reset keeps the env safe for other users
    (``evaluate_policy`` on a held env would wait forever for episodes that never end).

    Parameters
    ----------
    env : Any
        The environment.
    hold : bool
        ``True``: hold the next reset's episodes; ``False``: cancel a pending hold.

    Returns
    -------
    bool
        Whether a text vector env was found (``False``: nothing was changed, e.g. a ``DummyVecEnv``).
    """
    inner = find_text_vector_env(env)
    if inner is None:
        return False
    inner._hold_pending = bool(hold)
    return True
