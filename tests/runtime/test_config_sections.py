"""The config is composed of sections; run directories written before a field existed still load."""

import dataclasses

import pytest

from impala_rl.config import SECTIONS, ConfigError, TrainConfig


def test_every_field_belongs_to_one_section_and_sections_read_back():
    cfg = TrainConfig(discount=0.9, lr_anneal=False)
    groups = {f.name: f.metadata["group"] for f in dataclasses.fields(cfg)}
    assert set(groups.values()) == set(SECTIONS)
    assert cfg.section("agent")["discount"] == 0.9 and "discount" not in cfg.section("optimiser")
    assert cfg.section("optimiser")["lr_anneal"] is False
    merged = {k: v for name in SECTIONS for k, v in cfg.section(name).items()}
    assert merged == cfg.to_dict() | {"mlp_sizes": cfg.mlp_sizes}
    with pytest.raises(ConfigError, match="section 'algo' is not one of: environment, model, agent"):
        cfg.section("algo")


def test_a_config_json_from_before_the_agent_field_loads_as_impala():
    old = TrainConfig().to_dict()
    for key in ("agent", "mlp_activation", "value_torso"):  # fields added since
        del old[key]
    cfg = TrainConfig.from_dict(old)
    assert cfg.agent == "impala" and cfg.value_torso == "shared" and cfg.mlp_activation == "relu"
    with pytest.raises(ConfigError, match="unknown config keys: bogus"):
        TrainConfig.from_dict({**old, "bogus": 1})
