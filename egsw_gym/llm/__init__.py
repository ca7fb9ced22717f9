"""Language-model helpers: the supervised warm start and held-out evaluation of ``LMPolicy``.

``transformers`` is imported only when these functions run, so ``import egsw_gym.llm`` stays cheap.
"""

from egsw_gym.llm.warm_start import evaluate_accuracy, generate_completions, warm_start

__all__ = ["warm_start", "evaluate_accuracy", "generate_completions"]
