"""The training system above agent/, sampling/, skills/, envs/ and rl/: rollouts, the trainer, evaluation."""
