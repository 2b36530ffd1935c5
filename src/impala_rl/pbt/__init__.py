"""Population based training (seed 003): ``impala pbt`` (:mod:`impala_rl.pbt.run` names the parts)."""
