"""PPO+EGSW on a MuJoCo v5 task, with VecNormalize, an EvalCallback and an atomic checkpoint callback.

python examples/ppo_mujoco.py [--env HalfCheetah-v5] [--timesteps 50000]
"""

import argparse
import tempfile

import torch
from stable_baselines3.common.callbacks import EvalCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecNormalize

from egsw_gym import EGSW, PPO
from egsw_gym.common.checkpoints import AtomicCheckpointCallback

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--env", default="HalfCheetah-v5")
parser.add_argument("--timesteps", type=int, default=50_000)
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--out", default=None, help="where checkpoints go (default: a temporary directory)")
args = parser.parse_args()
torch.set_num_threads(1)
out = args.out or tempfile.mkdtemp(prefix="egsw_mujoco_")

env = VecNormalize(make_vec_env(args.env, n_envs=4, seed=args.seed))
eval_env = VecNormalize(
    make_vec_env(args.env, n_envs=1, seed=args.seed + 100), training=False, norm_reward=False
)
# Step-wise EGSW: the 4 parallel environments at each rollout step form a comparison set. A small
# alpha because a Gaussian policy's differential entropy is large next to standardised advantages.
model = PPO(
    "MlpPolicy",
    env,
    n_steps=512,
    batch_size=64,
    egsw=EGSW(alpha=0.01, mode="step"),
    seed=args.seed,
    device="cpu",
    verbose=0,
)
callbacks = [
    EvalCallback(eval_env, eval_freq=max(args.timesteps // 8, 1), n_eval_episodes=3, verbose=1),
    AtomicCheckpointCallback(save_freq=max(args.timesteps // 4, 1), save_path=out, save_vecnormalize=True),
]
model.learn(total_timesteps=args.timesteps, callback=callbacks)
model.save(f"{out}/final")
print(f"checkpoints and final model in {out}; loaded EGSW config: {PPO.load(f'{out}/final').egsw}")
