"""Hopfield, HopfieldPooling and HopfieldLayer: shapes, options, errors, and two tasks each must learn."""

import pytest
import torch
import torch.nn as nn

from assocmem.data.hopfield_tasks import bit_pattern_mil, latch
from assocmem.layers import Hopfield, HopfieldLayer, HopfieldPooling


def test_hopfield_shapes_and_association():
    layer = Hopfield(12, stored_size=10, value_size=6, num_heads=3, head_size=4, value_head_size=5, output_size=7)
    R, Y, V = torch.randn(2, 5, 12), torch.randn(2, 9, 10), torch.randn(2, 9, 6)
    out, A = layer(R, Y, V, return_association=True)
    assert out.shape == (2, 5, 7) and A.shape == (2, 3, 5, 9)
    assert torch.allclose(A.sum(-1), torch.ones(2, 3, 5), atol=1e-6)
    assert torch.allclose(layer(R, Y, V), out)


def test_hopfield_one_step_equals_multihead_attention_math():
    layer = Hopfield(8, num_heads=2, normalize_state=False, normalize_stored=False, normalize_values=False, beta=0.5)
    R, Y = torch.randn(1, 3, 8), torch.randn(1, 6, 8)
    q = layer.q_proj(R).view(1, 3, 2, 4)
    k = layer.k_proj(Y).view(1, 6, 2, 4)
    v = layer.v_proj(Y).view(1, 6, 2, 4)
    A = (0.5 * torch.einsum("blhd,bshd->bhls", q, k)).softmax(-1)
    ref = layer.out_proj(torch.einsum("bhls,bshd->blhd", A, v).reshape(1, 3, 8))
    assert torch.allclose(layer(R, Y), ref, atol=1e-6)


def test_hopfield_mask_and_self_association():
    layer = Hopfield(8, num_heads=2)
    R = torch.randn(2, 5, 8)
    mask = torch.tensor([[True] * 5, [True, True, False, False, False]])
    out, A = layer(R, mask=mask, return_association=True)
    assert out.shape == (2, 5, 8)
    assert A[1, :, :, 2:].abs().max() == 0
    # Masked patterns do not change the output.
    R2 = R.clone()
    R2[1, 2:] = R2[1, 2:] + 100
    assert torch.allclose(layer(R2, R2, mask=mask)[1, :2], layer(R, R, mask=mask)[1, :2], atol=1e-5)


def test_learned_beta_steps_and_static_patterns():
    layer = Hopfield(
        8,
        num_heads=2,
        learn_beta=True,
        steps=3,
        tol=1e-4,
        grad="last",
        project_state=False,
        out_proj=False,
        dropout=0.1,
    )
    R, Y = torch.randn(2, 4, 8), torch.randn(2, 6, 8)
    out = layer(R, Y)
    assert out.shape == (2, 4, 8) and layer.output_size == 8
    out.square().sum().backward()
    assert layer.log_beta.grad is not None and layer.log_beta.grad.abs().sum() > 0
    layer.eval()
    assert torch.equal(layer(R, Y), layer(R, Y))


def test_pooling_and_layer_shapes():
    pool = HopfieldPooling(10, num_queries=3, num_heads=2, output_size=4)
    Y = torch.randn(5, 7, 10)
    out, A = pool(Y, return_association=True)
    assert out.shape == (5, 3, 4) and A.shape == (5, 2, 3, 7)
    mask = torch.ones(5, 7, dtype=torch.bool)
    mask[:, 4:] = False
    assert torch.allclose(pool(Y, mask=mask), pool(Y[:, :4]), atol=1e-6)

    memory = HopfieldLayer(10, num_patterns=16, num_heads=2, output_size=3, steps=2)
    R = torch.randn(5, 7, 10)
    out, A = memory(R, return_association=True)
    assert out.shape == (5, 7, 3) and A.shape == (5, 2, 7, 16)
    # Without the association the batch is folded into one sequence of queries: the same numbers.
    assert torch.allclose(memory(R), out, atol=1e-6)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: Hopfield(0), r"`state_size` must be a positive integer"),
        (lambda: Hopfield(10, num_heads=3), r"`num_heads` \(3\) must divide `state_size` \(10\)"),
        (lambda: Hopfield(8, beta=0.0), r"`beta` must be a positive number"),
        (lambda: Hopfield(8, steps=0), r"`steps` must be an integer >= 1"),
        (lambda: Hopfield(8, dropout=1.5), r"`dropout` must be in \[0, 1\)"),
        (lambda: Hopfield(8, grad="none"), r"`grad` must be 'all' or 'last'"),
        (lambda: Hopfield(8, stored_size=6, project_stored=False), r"without its projection `stored_size` must equal"),
        (lambda: HopfieldPooling(8, num_queries=0), r"`num_queries` must be a positive integer"),
        (lambda: HopfieldLayer(8, num_patterns=0), r"`num_patterns` must be a positive integer"),
    ],
)
def test_bad_construction(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_bad_forward_inputs():
    layer = Hopfield(8)
    with pytest.raises(ValueError, match=r"`state` must be a 3-D tensor \[B, N, size\], got \[8\]"):
        layer(torch.randn(8))
    with pytest.raises(ValueError, match=r"`values` must have the \[B, S\] of `stored`"):
        layer(torch.randn(2, 3, 8), torch.randn(2, 4, 8), torch.randn(2, 5, 8))
    with pytest.raises(ValueError, match=r"`stored` must be \[B, S, input_size\]"):
        HopfieldPooling(8)(torch.randn(3, 8))
    with pytest.raises(ValueError, match=r"`state` must be \[B, L, input_size\]"):
        HopfieldLayer(8, num_patterns=4)(torch.randn(3, 8))


# --- learning: each layer solves the bit-pattern multiple-instance task and the latch task -------------


class PoolingModel(nn.Module):
    def __init__(self, features):
        super().__init__()
        self.pool = HopfieldPooling(features, num_heads=4, head_size=8, output_size=32)
        self.head = nn.Linear(32, 2)

    def forward(self, x):
        return self.head(self.pool(x)[:, 0])


class AssociationModel(nn.Module):
    """Self-association of the set, then instance scores and a max over the set."""

    def __init__(self, features):
        super().__init__()
        self.hopfield = Hopfield(features, num_heads=4, head_size=8, output_size=32)
        self.head = nn.Linear(32, 2)

    def forward(self, x):
        return self.head(torch.relu(self.hopfield(x))).amax(1)


class MemoryModel(nn.Module):
    """A lookup memory applied to every instance, then instance scores and a max over the set."""

    def __init__(self, features):
        super().__init__()
        self.memory = HopfieldLayer(features, num_patterns=16, num_heads=4, head_size=8, output_size=32)
        self.head = nn.Linear(32, 2)

    def forward(self, x):
        return self.head(torch.relu(self.memory(x))).amax(1)


def train_and_score(model, train, test, *, epochs=40, lr=3e-3, batch=64):
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(train.labels), generator=g).split(batch):
            loss = nn.functional.cross_entropy(model(train.inputs[idx]), train.labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            accuracy = (model(test.inputs).argmax(-1) == test.labels).float().mean().item()
        if accuracy >= 0.995:
            break
    return accuracy


TASKS = {
    "bit_pattern_mil": lambda seed: bit_pattern_mil(2000 if seed == 0 else 1000, bag_size=8, bits=16, seed=seed),
    "latch": lambda seed: latch(2000 if seed == 0 else 1000, length=20, vocab=12, seed=seed),
}


@pytest.mark.parametrize("model_cls", [PoolingModel, AssociationModel, MemoryModel])
@pytest.mark.parametrize("task", sorted(TASKS))
def test_layer_learns_task(model_cls, task):
    torch.manual_seed(0)
    train, test = TASKS[task](0), TASKS[task](1)
    model = model_cls(train.inputs.shape[-1])
    accuracy = train_and_score(model, train, test)
    assert accuracy >= 0.99, f"{model_cls.__name__} on {task}: test accuracy {accuracy:.3f}"
