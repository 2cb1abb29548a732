"""Causal language models: pre-norm blocks of a token mixer (DeltaNet or attention) and a SwiGLU MLP.

Legend: B batch, T new tokens, C hidden size, V vocabulary size.
"""

from dataclasses import dataclass

import torch
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from ..layers import Attention, DeltaNet
from ..modules import RMSNorm, ShortConvolution, SwiGLU
from ..modules.conv import positions_in_sequence
from ..modules.loss import next_token_loss
from .cache import AssocMemCache
from .config import AssocMemConfig


def build_mixer(config: AssocMemConfig, layer_type: str) -> nn.Module:
    if layer_type == "deltanet":
        return DeltaNet(
            config.hidden_size,
            config.num_heads,
            use_short_conv=config.use_short_conv,
            conv_size=config.conv_size,
            allow_neg_eigval=config.allow_neg_eigval,
            use_output_gate=config.use_output_gate,
            use_delta_rule=config.use_delta_rule,
            norm_eps=config.norm_eps,
            backend=config.delta_rule_backend,
            chunk_size=config.chunk_size,
        )
    window = config.window_size if layer_type == "swa" else None
    return Attention(config.hidden_size, config.num_heads, config.num_kv_heads, window, config.rope_theta)


class AssocMemBlock(nn.Module):
    """x + mixer(norm(x)), then x + SwiGLU(norm(x))."""

    def __init__(self, config: AssocMemConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.layer_type = config.mixer_types[layer_idx]
        self.mixer_norm = RMSNorm(config.hidden_size, config.norm_eps)
        self.mixer = build_mixer(config, self.layer_type)
        self.mlp_norm = RMSNorm(config.hidden_size, config.norm_eps)
        self.mlp = SwiGLU(config.hidden_size, config.intermediate_size)

    def forward(self, x_BTC, *, positions, attention_mask, cu_seqlens, state, use_cache):
        mixed, new_state = self.mixer(
            self.mixer_norm(x_BTC),
            positions=positions,
            attention_mask=attention_mask,
            cu_seqlens=cu_seqlens,
            state=state,
            use_cache=use_cache,
        )
        x_BTC = x_BTC + mixed
        x_BTC = x_BTC + self.mlp(self.mlp_norm(x_BTC))
        return x_BTC, new_state


# The cache field is called `cache` (newer transformers renames `past_key_values` to it when an output is
# built); `past_key_values` stays readable as a property.
@dataclass
class AssocMemModelOutput(ModelOutput):
    last_hidden_state: torch.FloatTensor | None = None
    cache: AssocMemCache | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None

    @property
    def past_key_values(self) -> AssocMemCache | None:
        return self.cache


@dataclass
class AssocMemCausalLMOutput(ModelOutput):
    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    cache: AssocMemCache | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None

    @property
    def past_key_values(self) -> AssocMemCache | None:
        return self.cache


def _one_cache(cache, past_key_values, where: str):
    if cache is not None and past_key_values is not None and cache is not past_key_values:
        raise ValueError(f"{where}: give the cache as `cache` or `past_key_values`, not both")
    return cache if cache is not None else past_key_values


class AssocMemPreTrainedModel(PreTrainedModel):
    config_class = AssocMemConfig
    base_model_prefix = "model"
    _no_split_modules = ["AssocMemBlock"]
    # A DeltaNet state cannot be rolled back, so generation modes that rewind the cache are refused.
    _is_stateful = True

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False  # the model makes its own AssocMemCache on the first forward with use_cache

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Embedding)):
            init.normal_(module.weight, mean=0.0, std=std)
            if getattr(module, "bias", None) is not None:
                init.zeros_(module.bias)
        elif isinstance(module, RMSNorm):
            init.ones_(module.weight)
        elif isinstance(module, ShortConvolution):
            bound = module.kernel_size**-0.5
            init.uniform_(module.weight, -bound, bound)


def _check_batch_inputs(input_ids, inputs_embeds, attention_mask, cu_seqlens, cache):
    if (input_ids is None) == (inputs_embeds is None):
        raise ValueError("AssocMemModel: give exactly one of input_ids [B, T] and inputs_embeds [B, T, C]")
    B, T = (input_ids if input_ids is not None else inputs_embeds).shape[:2]
    past = 0 if cache is None else cache.seen_tokens
    if attention_mask is not None:
        if attention_mask.dim() != 2 or attention_mask.shape != (B, past + T):
            raise ValueError(
                f"AssocMemModel: attention_mask must be [B, past + T] = [{B}, {past + T}] (1 = token, 0 = padding), "
                f"got {tuple(attention_mask.shape)}"
            )
    if cu_seqlens is not None:
        if B != 1:
            raise ValueError(f"AssocMemModel: cu_seqlens needs the sequences packed into batch size 1, got B = {B}")
        if attention_mask is not None or cache is not None:
            raise ValueError("AssocMemModel: cu_seqlens cannot be combined with attention_mask or a cache")
        if cu_seqlens.dim() != 1 or int(cu_seqlens[0]) != 0 or int(cu_seqlens[-1]) != T:
            raise ValueError(f"AssocMemModel: cu_seqlens must be 1-D offsets from 0 to T = {T}, got "
                             f"{cu_seqlens.tolist()}")
    return B, T, past


class AssocMemModel(AssocMemPreTrainedModel):
    """Embeddings, the blocks of `config.layer_types`, final RMSNorm; returns hidden states."""

    def __init__(self, config: AssocMemConfig):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(AssocMemBlock(config, i) for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.norm_eps)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_tokens = value

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        *,
        inputs_embeds: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        cu_seqlens: torch.Tensor | None = None,
        cache: AssocMemCache | None = None,
        past_key_values: AssocMemCache | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool = False,
        return_dict: bool = True,
    ) -> AssocMemModelOutput:
        """input_ids [B, T] (or inputs_embeds [B, T, C]); attention_mask [B, past + T] with 1 for tokens and
        0 for padding (left or right); cu_seqlens [N + 1] offsets of N sequences packed in B = 1;
        cache: the AssocMemCache of earlier calls (`past_key_values` is another name for it), created when
        use_cache is set and none is given; it is updated in place and returned."""
        cache = _one_cache(cache, past_key_values, "AssocMemModel")
        B, T, past = _check_batch_inputs(input_ids, inputs_embeds, attention_mask, cu_seqlens, cache)
        use_cache = self.config.use_cache if use_cache is None else use_cache
        if use_cache and cache is None:
            cache = AssocMemCache(len(self.layers))
        x = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
        device = x.device
        if cu_seqlens is not None:
            positions = positions_in_sequence(cu_seqlens.to(device), T)[None]
        elif attention_mask is not None:
            positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, past:]
        else:
            positions = torch.arange(past, past + T, device=device)[None]
        hidden_states = [] if output_hidden_states else None
        for i, layer in enumerate(self.layers):
            if hidden_states is not None:
                hidden_states.append(x)
            x, new_state = layer(
                x,
                positions=positions,
                attention_mask=attention_mask,
                cu_seqlens=cu_seqlens,
                state=None if cache is None else cache.states[i],
                use_cache=use_cache,
            )
            if use_cache:
                cache.states[i] = new_state
        x = self.norm(x)
        if hidden_states is not None:
            hidden_states.append(x)
        if use_cache:
            cache.seen_tokens = past + T
        out = AssocMemModelOutput(
            last_hidden_state=x,
            cache=cache if use_cache else None,
            hidden_states=tuple(hidden_states) if hidden_states is not None else None,
        )
        return out if return_dict else out.to_tuple()


class AssocMemForCausalLM(AssocMemPreTrainedModel, GenerationMixin):
    """AssocMemModel with a language-model head; works with `generate()` through its own cache."""

    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: AssocMemConfig):
        super().__init__(config)
        self.model = AssocMemModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.embed_tokens = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head = value

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        *,
        attention_mask: torch.Tensor | None = None,
        cu_seqlens: torch.Tensor | None = None,
        cache: AssocMemCache | None = None,
        past_key_values: AssocMemCache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int = 0,
        output_hidden_states: bool = False,
        return_dict: bool = True,
    ) -> AssocMemCausalLMOutput:
        """Arguments as `AssocMemModel.forward`, and
        labels [B, T]: next-token targets are labels shifted left by one; -100 is ignored.
        logits_to_keep > 0 computes logits for the last that many positions only."""
        cache = _one_cache(cache, past_key_values, "AssocMemForCausalLM")
        if use_cache is None:
            use_cache = self.config.use_cache and labels is None and not self.training
        out = self.model(
            input_ids,
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            cu_seqlens=cu_seqlens,
            cache=cache,
            use_cache=use_cache,
            output_hidden_states=output_hidden_states,
        )
        hidden = out.last_hidden_state
        if logits_to_keep:
            hidden = hidden[:, -logits_to_keep:]
        logits = self.lm_head(hidden)
        loss = None
        if labels is not None:
            if logits_to_keep:
                raise ValueError("AssocMemForCausalLM: labels need logits for every position (logits_to_keep=0)")
            loss = next_token_loss(logits, labels)
        result = AssocMemCausalLMOutput(
            loss=loss, logits=logits, cache=out.cache, hidden_states=out.hidden_states
        )
        return result if return_dict else result.to_tuple()

    # Generation: the cache holds how many tokens it has seen, so only the rest of input_ids is fed. This
    # works the same on every transformers 5.x, whatever name its generate() gives the cache argument.
    def prepare_inputs_for_generation(
        self,
        input_ids: torch.LongTensor,
        cache: AssocMemCache | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        use_cache: bool = True,
        logits_to_keep: int | None = None,
        past_key_values: AssocMemCache | None = None,
        **_generation_bookkeeping,
    ) -> dict:
        cache = _one_cache(cache, past_key_values, "prepare_inputs_for_generation")
        seen = 0 if cache is None else cache.seen_tokens
        inputs = {"attention_mask": attention_mask, "cache": cache, "use_cache": use_cache}
        if inputs_embeds is not None and seen == 0:
            inputs["inputs_embeds"] = inputs_embeds
        else:
            inputs["input_ids"] = input_ids[:, seen:].contiguous()
        if logits_to_keep is not None:
            inputs["logits_to_keep"] = logits_to_keep
        return inputs

    def _update_model_kwargs_for_generation(self, outputs, model_kwargs, *args, **kwargs):
        model_kwargs = super()._update_model_kwargs_for_generation(outputs, model_kwargs, *args, **kwargs)
        model_kwargs.pop("past_key_values", None)
        model_kwargs["cache"] = outputs.cache
        return model_kwargs
