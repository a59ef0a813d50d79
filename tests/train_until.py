"""Train a recipe under torchrun, optionally stopping after N global steps as a kill would
(``--stop-after``) or resuming (``--resume``); for the tests of distributed training."""

from __future__ import annotations

import argparse

from instructerc.cli.process_group import end_process_group, exit_group_member
from instructerc.evaluation.dev_scoring import predictor_dev_scoring
from instructerc.training.config import TrainConfig
from instructerc.training.trainer import Trainer

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("recipe")
    parser.add_argument("--stop-after", type=int)
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args()
    config = TrainConfig.from_yaml(args.recipe)
    # Ended as instructerc train ends a run of several processes.
    try:
        Trainer(config, progress=False, stop_after_steps=args.stop_after, dev_scoring=predictor_dev_scoring).run(resume=args.resume)
    finally:
        in_group = end_process_group()
    if in_group:
        exit_group_member(0)
