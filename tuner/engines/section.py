"""Assemble an ``EngineSection``: the one shape every engine's launch files take.

Each engine renders its options into a config file plus the server command that reads it; the
full command line, the launch line, one line per data-parallel replica and the file itself are
derived here the same way for all three engines.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from simulator.data.specs import DeploymentConfig
from tuner.engines import ENGINE_VERSIONS, check_engine
from tuner.engines.common import dump_yaml, replica_lines, shell_line
from tuner.engines.inputs import EngineInputs, EngineSection

__all__ = ["config_file_section", "replica_note"]


def replica_note(config: DeploymentConfig, *, why: str = "") -> str | None:
    """How to run ``dp`` replicas: independent servers behind a load balancer."""
    if config.dp <= 1:
        return None
    return (
        f"dp={config.dp}: {why}run one server per replica (lines in `replicas`), each on "
        f"{config.gpus_per_replica} GPU(s) and its own port, behind a load balancer"
    )


def config_file_section(
    engine: str,
    inputs: EngineInputs,
    *,
    args: list[str],
    server: list[str],
    launch_extra: Sequence[str] = (),
    config_file: str,
    options: dict[str, Any],
    notes: list[str],
    memory_fraction: float,
) -> EngineSection:
    """``args`` is the full command line; ``server + [--config FILE]`` the launch that reads
    the config file (``launch_extra`` goes before ``--config`` on the launch line only)."""
    with_file = [*server, "--config", config_file]
    return EngineSection(
        engine=engine,
        engine_version=ENGINE_VERSIONS[check_engine(engine)],
        command=shell_line(args),
        args=args,
        config_files={config_file: dump_yaml(options)},
        launch=shell_line([*server, *launch_extra, "--config", config_file]),
        replicas=replica_lines(
            config=inputs.config, argv=with_file, port=inputs.port, port_flag="--port"
        ),
        notes=notes,
        memory_fraction=memory_fraction,
    )
