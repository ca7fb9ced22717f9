"""Worker of ``tests/test_trl_integration.py``: EGSW weights of EGSWGRPOTrainer on 2 gloo ranks.

``python -m torch.distributed.run --standalone --nproc_per_node 2 tests/trl_distributed_worker.py MODEL_DIR OUT``

Each rank builds the trainer (accelerate sees ``WORLD_SIZE=2`` on CPU: gloo), holds 3 of the 6
completions of a global batch of 3 groups of 2 (so the middle group spans the ranks) and saves, per
case, its local advantages, entropies, loss mask and weights to ``OUT/rank{r}.pt``:

- ``generated_trajectory``: a real generation round (``_generate_and_score_completions``);
- ``synthetic_step`` / ``synthetic_trajectory``: fixed inputs whose completion width differs
  between the ranks (4 and 5 tokens), so the padding across processes is exercised.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
warnings.filterwarnings("ignore")
torch.set_num_threads(1)

from test_trl_integration import make_trainer, task_dataset  # noqa: E402

from egsw_gym import EGSW  # noqa: E402


def main(model_dir: Path, out: Path) -> None:
    trainer = make_trainer(
        model_dir, out / "trainer", per_device_train_batch_size=3, num_generations=2, egsw_alpha=0.5
    )
    rank = trainer.accelerator.process_index
    assert trainer.accelerator.num_processes == 2, "not distributed"
    results = {}
    data = task_dataset("arithmetic", "train", 3)
    rows = [data[i] for i in range(3) for _ in range(2)][3 * rank : 3 * rank + 3]
    torch.manual_seed(rank)
    trainer.model.train()
    trainer._generate_and_score_completions(rows)
    results["generated_trajectory"] = dict(trainer.egsw_last, egsw=trainer.egsw)

    g = torch.Generator().manual_seed(10 + rank)
    width = 4 + rank
    adv = torch.randn(3, generator=g)
    ent = torch.rand(3, width, generator=g) * 3
    mask = torch.ones(3, width, dtype=torch.bool)
    mask[0, 2:] = False  # ragged lengths
    mask[2, width - 1 :] = False
    for mode in ("step", "trajectory"):
        trainer.egsw = EGSW(alpha=0.5, mode=mode)
        weights, _ = trainer.compute_egsw_weights(adv, ent, mask, group_size=2)
        results[f"synthetic_{mode}"] = dict(
            advantages=adv, entropies=ent, mask=mask, weights=weights, egsw=trainer.egsw
        )
    torch.save(results, out / f"rank{rank}.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
