"""The sweeper of `aevae-train resume=SWEEP_DIR` (see aevae.commands.sweeps): Hydra's basic sweeper that
launches only the jobs of the sweep in `hydra.sweep.dir` that did not finish."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf, open_dict

from aevae.engine.internals import basic_sweeper, hydra_config_as

log = logging.getLogger(__name__)


class ResumeSweeper(basic_sweeper()):  # type: ignore[misc]
    """Enumerates the sweep's jobs exactly as the basic sweeper that started it did (its own
    `split_arguments`, on the overrides saved in multirun.yaml), leaves the finished ones alone
    and hands the others to the sweep's launcher. multirun.yaml is left as it was."""

    def sweep(self, arguments: list[str]) -> Any:
        from aevae.commands.sweeps import relaunches, saved_overrides

        assert self.config is not None and self.launcher is not None and self.hydra_context is not None
        sweep_dir = Path(self.config.hydra.sweep.dir)
        saved, _ = saved_overrides(sweep_dir)
        extra = [a for a in arguments if a not in saved]  # the command line: the sweep's own, then these
        params = [f"{key}={value}" for key, value in self.params.items()]
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        (jobs,) = self.split_arguments(parser.parse_overrides([*params, *saved]), None)
        todo = relaunches(sweep_dir, jobs, extra, self._subdir)
        if not todo:
            log.info("all %d jobs of %s have finished: nothing to resume", len(jobs), sweep_dir)
            return []
        log.info("resuming %d of the %d jobs of %s", len(todo), len(jobs), sweep_dir)
        returns, launched = [], 0
        for batch in self.split_overrides_to_chunks(todo, self.max_batch_size):
            self.validate_batch_is_legal(batch)
            results = self.launcher.launch(batch, initial_job_idx=launched)
            for result in results:
                _ = result.return_value  # raises for a failed job, as the basic sweeper does
            launched += len(batch)
            returns.append(results)
        return returns

    def _subdir(self, num: int, overrides: list[str]) -> str:
        """The job dir name job `num` would have had in the first launch: its config composed
        and numbered as a launcher does, then `hydra.sweep.subdir` read from it."""
        assert self.config is not None and self.hydra_context is not None
        config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        with open_dict(config):
            config.hydra.job.num = num
        with hydra_config_as(config):  # for ${hydra:...} in the subdir
            return str(OmegaConf.select(config, "hydra.sweep.subdir"))
