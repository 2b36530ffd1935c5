"""Population based training (seed 003): the rules (:mod:`impala_rl.pbt.rules`)."""
