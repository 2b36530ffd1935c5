"""The config is composed of sections; run directories written before a field existed still load."""

import dataclasses

import pytest

from impala_rl.config import SECTIONS, ConfigError, TrainConfig


def test_every_field_belongs_to_one_section():
    groups = {f.name: f.metadata["group"] for f in dataclasses.fields(TrainConfig)}
    assert set(groups.values()) == set(SECTIONS)
    assert groups["discount"] == "agent" and groups["lr_anneal"] == "optimiser"


def test_a_config_json_from_before_the_agent_field_loads_as_impala():
    old = TrainConfig().to_dict()
    for key in ("agent", "mlp_activation", "value_torso"):  # fields added since
        del old[key]
    cfg = TrainConfig.from_dict(old)
    assert cfg.agent == "impala" and cfg.value_torso == "shared" and cfg.mlp_activation == "relu"
    with pytest.raises(ConfigError, match="unknown config keys: bogus"):
        TrainConfig.from_dict({**old, "bogus": 1})
