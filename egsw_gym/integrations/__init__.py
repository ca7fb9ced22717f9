"""Integrations of EGSW with other training libraries.

- :mod:`egsw_gym.integrations.trl`: EGSW on TRL's ``GRPOTrainer`` (vLLM generation, accelerate and
  DeepSpeed training), with datasets and reward functions made from this project's tasks. Needs
  the ``trl`` extra: ``pip install "egsw-gym[trl]"``.

Nothing is imported here, so ``import egsw_gym.integrations`` never needs an optional dependency.
"""
