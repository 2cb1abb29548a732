import pytest
import torch

from assocmem.ops.linear_attention import linear_attention, linear_attention_naive, linear_attention_step

from .helpers import rel_err


@pytest.mark.parametrize("T, C", [(1, 64), (37, 16), (128, 64), (130, 32)])
def test_chunks_match_the_recurrence(T, C):
    torch.manual_seed(0)
    B, H, K, V = 2, 3, 8, 5
    q, k = torch.randn(B, T, H, K), torch.randn(B, T, H, K)
    v, h0 = torch.randn(B, T, H, V), torch.randn(B, H, K, V)
    o_ref, s_ref = linear_attention_naive(q, k, v, initial_state=h0, scale=0.3)
    o, s = linear_attention(q, k, v, initial_state=h0, output_final_state=True, chunk_size=C, scale=0.3)
    assert rel_err(o, o_ref) < 1e-5 and rel_err(s, s_ref.float()) < 1e-5


def test_steps_continue_a_prefix_and_packed_equals_one_by_one():
    torch.manual_seed(1)
    B, T, H, K, V = 1, 20, 2, 4, 6
    q, k, v = torch.randn(B, T, H, K), torch.randn(B, T, H, K), torch.randn(B, T, H, V)
    o_ref, s_ref = linear_attention_naive(q, k, v)
    o, s = linear_attention(q[:, :12], k[:, :12], v[:, :12], output_final_state=True)
    outs = [o]
    for t in range(12, T):
        ot, s = linear_attention_step(q[:, t], k[:, t], v[:, t], s)
        outs.append(ot[:, None])
    assert rel_err(torch.cat(outs, 1), o_ref) < 1e-5 and rel_err(s, s_ref.float()) < 1e-5
    cu = torch.tensor([0, 7, 7, 20])
    o, s = linear_attention(q, k, v, cu_seqlens=cu, output_final_state=True)
    first, _ = linear_attention_naive(q[:, :7], k[:, :7], v[:, :7])
    second, s2 = linear_attention_naive(q[:, 7:], k[:, 7:], v[:, 7:])
    assert rel_err(o, torch.cat([first, second], 1)) < 1e-5
    assert s.shape == (3, H, K, V) and s[1].abs().max() == 0 and rel_err(s[2:], s2.float()) < 1e-5


def test_gradients_flow_and_bad_shapes_are_named():
    q = torch.randn(1, 10, 1, 4, requires_grad=True)
    o, _ = linear_attention(q, torch.randn(1, 10, 1, 4), torch.randn(1, 10, 1, 3))
    o.sum().backward()
    assert q.grad is not None and torch.isfinite(q.grad).all() and q.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="linear_attention"):
        linear_attention(torch.randn(1, 10, 1, 4), torch.randn(1, 10, 1, 5), torch.randn(1, 10, 1, 3))
