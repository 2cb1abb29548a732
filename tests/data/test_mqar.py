import pytest
import torch

from assocmem.data.mqar import IGNORE, MQAR, mqar

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
def test_layout_answers_and_determinism(device):
    task = mqar(50, vocab_size=64, seq_len=64, num_kv_pairs=8, seed=3, device=device)
    assert task.inputs.device.type == device
    assert task.inputs.shape == task.labels.shape == (50, 64) and len(task) == 50
    again = dict(vocab_size=64, seq_len=64, num_kv_pairs=8, device=device)
    assert torch.equal(task.inputs, mqar(50, seed=3, **again).inputs)
    assert not torch.equal(task.inputs, mqar(50, seed=4, **again).inputs)
    task = MQAR(task.inputs.cpu(), task.labels.cpu())
    for x, y in zip(task.inputs, task.labels):
        keys, values = x[0:16:2], x[1:16:2]
        assert len(set(keys.tolist())) == 8 and (keys >= 1).all() and (keys < 32).all() and (values >= 32).all()
        answered = (y != IGNORE).nonzero().flatten()
        assert len(answered) == 8 and (answered >= 16).all()
        lookup = dict(zip(keys.tolist(), values.tolist()))
        for t in answered.tolist():  # the token at t is a key asked again; its label is that key's value
            assert y[t].item() == lookup[x[t].item()] == x[t + 1].item()


@pytest.mark.parametrize("device", DEVICES)
def test_fillers_are_zero_unless_random(device):
    args = dict(vocab_size=64, seq_len=64, num_kv_pairs=8, seed=1, device=device)
    zero, rand = mqar(20, **args), mqar(20, random_fillers=True, **args)
    for task in (zero, rand):
        used = torch.zeros_like(task.inputs, dtype=torch.bool)
        used[:, :16] = True
        at = (task.labels != IGNORE).nonzero()
        used[at[:, 0], at[:, 1]] = used[at[:, 0], at[:, 1] + 1] = True
        fill = task.inputs[~used]
        if task is zero:
            assert (fill == 0).all() and (task.inputs[used] > 0).all()
        else:
            assert (fill != 0).float().mean() > 0.9 and len(fill.unique()) > 30


def test_power_law_favours_short_gaps():
    task = mqar(400, vocab_size=512, seq_len=512, num_kv_pairs=16, seed=0)
    positions = (task.labels != IGNORE).nonzero()[:, 1] - 32
    near, far = (positions < 120).float().mean(), (positions >= 360).float().mean()
    assert near > 2 * far


@pytest.mark.parametrize("kwargs, name", [
    (dict(num_kv_pairs=40, seq_len=128), "seq_len"),
    (dict(num_kv_pairs=40, vocab_size=64), "num_kv_pairs"),
    (dict(power_a=0.0), "power_a"),
    (dict(vocab_size=2), "vocab_size"),
])  # fmt: skip
def test_bad_arguments_are_named(kwargs, name):
    with pytest.raises(ValueError, match=name):
        mqar(4, **kwargs)
