"""Where a language model's training step spends its GPU time: for each comparison config given
(configs/compare/*.toml), training tokens/s and peak memory over a few steps of random tokens (bf16
autocast, AdamW, the config's batch and sequence length), then torch.profiler's top kernels by CUDA time.
With --compile the model is also timed under torch.compile.
Usage: python scripts/profile_model.py [--compile] [--steps N] [--batch B] CONFIG.toml [CONFIG.toml ...]"""

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

from assocmem.train.config import load_config
from assocmem.train.trainer import model_from_config


def build(cfg):
    return model_from_config(cfg, vocab_size=cfg.vocab_size, eos_token_id=0, bos_token_id=0, pad_token_id=0)


def step_fn(model, opt, batch):
    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = model(input_ids=batch, labels=batch)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def timed(step, steps):
    for _ in range(3):
        step()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("configs", nargs="+")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=None, help="sequences per step (default: the config's)")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    for path in args.configs:
        cfg = load_config(path)
        torch.manual_seed(0)
        model = build(cfg).cuda()
        params = sum(p.numel() for p in model.parameters())
        batch_size = args.batch or cfg.batch_size
        batch = torch.randint(0, cfg.vocab_size, (batch_size, cfg.seq_len), device="cuda")
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
        torch.cuda.reset_peak_memory_stats()
        seconds = timed(step_fn(model, opt, batch), args.steps)
        peak = torch.cuda.max_memory_allocated() / 2**30
        tokens = batch_size * cfg.seq_len
        print(f"\n== {path}: {params / 1e6:.1f}M parameters, batch {batch_size} x {cfg.seq_len}: "
              f"{seconds * 1e3:.1f} ms/step, {tokens / seconds:,.0f} tok/s, peak {peak:.1f} GB", flush=True)
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            step_fn(model, opt, batch)()
            torch.cuda.synchronize()
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=args.top, max_name_column_width=70))
        if args.compile:
            compiled = torch.compile(model)
            start = time.perf_counter()
            seconds = timed(step_fn(compiled, opt, batch), args.steps)
            warmup = time.perf_counter() - start - seconds * args.steps
            print(f"== {path} under torch.compile: {seconds * 1e3:.1f} ms/step, {tokens / seconds:,.0f} tok/s "
                  f"(compile and warm-up {warmup:.0f} s)", flush=True)
        del model, opt
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
