"""The running observation normaliser: exact moments in any batching, clipping, and use in the net."""

import torch

from impala_rl.models import ImpalaNet, NetConfig
from impala_rl.models.normalizer import ObservationNormalizer


def test_running_moments_equal_the_moments_of_everything_seen():
    g = torch.Generator().manual_seed(0)
    data = torch.randn(100, 3, generator=g, dtype=torch.float64) * torch.tensor([1.0, 5.0, 0.1]) + 7.0
    norm = ObservationNormalizer((3,))
    for chunk in (data[:1], data[1:40], data[40:41], data[41:]):
        norm.update(chunk)
    torch.testing.assert_close(norm.mean, data.mean(0))
    torch.testing.assert_close(norm.var, data.var(0, unbiased=False))
    assert float(norm.count) == 100


def test_forward_standardises_and_clips():
    norm = ObservationNormalizer((2,), clip=3.0)
    norm.update(torch.tensor([[0.0, 10.0], [2.0, 10.0]]))  # mean (1, 10), var (1, 0)
    out = norm(torch.tensor([[2.0, 10.0], [100.0, 9.0]]))
    torch.testing.assert_close(out, torch.tensor([[1.0, 0.0], [3.0, -3.0]]), atol=1e-4, rtol=0)


def test_network_normalises_before_the_torso_and_publishes_the_statistics():
    net = ImpalaNet((2,), 2, config=NetConfig(normalize_observations=True))
    assert {"obs_norm.mean", "obs_norm.var", "obs_norm.count"} <= set(net.state_dict())
    obs = torch.tensor([[[1000.0, -1000.0]]])
    rest = dict(last_action=torch.zeros(1, 1, dtype=torch.long), last_reward=torch.zeros(1, 1),
                first=torch.ones(1, 1, dtype=torch.bool))
    net.obs_norm.update(obs)
    normalised = net.obs_norm(obs)
    torch.testing.assert_close(normalised, torch.zeros(1, 1, 2))
    with torch.no_grad():
        out = net(obs, **rest)[0]
        expected = net.policy_head(net.torso(torch.zeros(1, 2)))
    torch.testing.assert_close(out.policy_params[0], expected)
