"""Every engine's section of a plan: its checkpoint, config file and launch, under its own
memory rule.

``render_engines`` renders each engine in ``tuner.engines.ENGINES`` for a chosen configuration
and memory plan. The chosen engine must render *and* hold the plan under its own budget rule,
or the plan is refused (a plan that cannot launch is never written); any other engine that
cannot serve it gets a refusal saying why.
"""

from __future__ import annotations

from pathlib import Path

from simulator.data.specs import DeploymentConfig, HardwareSpec, ModelSpec
from simulator.errors import ConfigError
from tuner.engines import EngineName
from tuner.engines.inputs import EngineInputs, EngineRefusal, EngineSection
from tuner.plan import MemoryPlan, hf_model_id

__all__ = ["VISION_TOWER_BYTES", "render_engines"]


def render_engines(
    *,
    config: DeploymentConfig,
    model: ModelSpec,
    hardware: HardwareSpec,
    memory: MemoryPlan,
    chosen: str,
    model_id: str | None = None,
    served_model_name: str | None = None,
) -> dict[EngineName, EngineSection | EngineRefusal]:
    """Every engine's section. The chosen engine must render *and* hold the plan under its own
    budget rule (KV cache at least what the plan needs, total within the GPU's memory), else
    ConfigError: a plan that cannot launch is never written. Other engines that cannot serve it
    get a refusal saying why. ``model_id``: what the user asked every engine to load."""
    from tuner.engines import ENGINES, kv_cache_bytes_given, render, total_bytes_used
    from tuner.handover.checkpoints import resolve
    from tuner.handover.topology import lay_out

    topology = lay_out(
        replicas=config.dp,
        gpus_per_replica=config.gpus_per_replica,
        gpus_per_node=hardware.gpus_per_node,
    )
    local = model_id or (hf_model_id(model) if Path(str(model.source)).exists() else None)
    sections: dict[EngineName, EngineSection | EngineRefusal] = {}
    needed = memory.kv_tokens_needed * memory.kv_bytes_per_token
    for engine in ENGINES:
        try:
            checkpoint = resolve(
                preset=model.name,
                weights=config.weight_dtype,
                engine=engine,
                model_id=local,
                hub_id=hf_model_id(model),
            )
            multimodal = model.model_type == "llama4_text"
            vision = VISION_TOWER_BYTES if multimodal and _loads_vision(engine) else 0.0
            inputs = EngineInputs(
                config=config,
                model_id=checkpoint.model_id,
                hbm_bytes=memory.device_memory_bytes,
                weights_bytes=memory.weights_bytes + memory.drafter_weights_bytes + vision,
                activation_bytes=memory.activation_bytes,
                reserved_bytes=memory.reserved_bytes,
                kv_cache_bytes=memory.kv_cache_bytes,
                served_model_name=served_model_name,
                checkpoints={engine: checkpoint},
                topology=topology,
                text_only=multimodal,
            )
            section = render(engine, inputs)
        except ConfigError as error:
            if engine == chosen:
                raise
            sections[engine] = EngineRefusal(engine=engine, error=str(error))
            continue
        fraction = section.memory_fraction
        kv = kv_cache_bytes_given(engine, inputs, fraction)
        total = total_bytes_used(engine, inputs, fraction)
        if engine == chosen and (kv < needed or total > inputs.hbm_bytes):
            raise ConfigError(
                f"{engine} would give the KV cache {kv / 1e9:.1f} GB (needs "
                f"{needed / 1e9:.1f} GB) using {total / 1e9:.1f} GB in all"
            )
        memory.engine_fractions[engine] = fraction
        sections[engine] = section
    return sections


# Llama 4's vision encoder and projector, in bf16: about 0.9 B parameters (config.json
# vision_config: 34 layers of width 1408, MLP 5632), which the text decoder's count leaves out.
VISION_TOWER_BYTES = 0.9e9 * 2


def _loads_vision(engine: str) -> bool:
    """Whether ``engine`` loads a multimodal checkpoint's vision tower when serving text
    (each renderer says, ``LOADS_VISION_TOWER``)."""
    from importlib import import_module

    return bool(import_module(f"tuner.engines.{engine}").LOADS_VISION_TOWER)
