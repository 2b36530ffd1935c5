"""The IMPALA algorithm as pure functions of tensors: V-trace, the paper's alternative
off-policy corrections, the actor-critic loss and PopArt. Imports torch only: no I/O,
no threads, no processes."""
