"""What autograd keeps for the backward of a language model's training step, per token, by the line of our code
that saved it: the activations behind the peak memory of `assocmem bench models` (parameters left out).

Runs on the CPU at a short length (the bytes per token do not depend on it, but for the states kept per chunk).
With --triton (TRITON_INTERPRET=1) the layers take the Triton backends, as on a GPU; PyTorch's own ops may keep
other tensors on the CPU than on CUDA (F.rms_norm is one: its CPU form keeps float32 intermediates, its CUDA
kernel only the input and one number per row), so rows under modules/norm.py are not what a GPU keeps.
Usage: python scripts/saved_bytes.py [--preset deltanet-340m] [--layers 1] [--T 128] [--triton] [--out FILE.json]
"""

import argparse
import collections
import json
import os
import traceback

import torch


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="deltanet-340m")
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--T", type=int, default=128)
    parser.add_argument("--triton", action="store_true", help="Triton backends (sets TRITON_INTERPRET=1)")
    parser.add_argument("--out", help="JSON path")
    args = parser.parse_args()
    if args.triton:
        os.environ["TRITON_INTERPRET"] = "1"
    from assocmem.models import preset_config
    from assocmem.models.modeling import AssocMemForCausalLM

    torch.manual_seed(0)
    config = preset_config(args.preset, num_layers=args.layers)
    model = AssocMemForCausalLM(config).to(torch.bfloat16)
    if args.triton:
        for module in model.modules():
            if hasattr(module, "backend") and module.backend == "auto":
                module.backend = "triton"
    parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}
    sites: collections.Counter = collections.Counter()
    seen: set = set()

    def pack(t):
        storage = t.untyped_storage()
        key = storage.data_ptr()
        if key not in parameters and key not in seen:
            seen.add(key)
            ours = f"{os.sep}assocmem{os.sep}"
            frames = [f for f in traceback.extract_stack() if ours in f.filename]
            site = f"{frames[-1].filename.split(ours)[-1]}:{frames[-1].lineno}" if frames else "?"
            sites[(site, tuple(t.shape), str(t.dtype).replace("torch.", ""))] += storage.nbytes()
        return t

    ids = torch.randint(0, config.vocab_size, (1, args.T))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(ids, labels=ids)
    rows = [{"site": site, "shape": list(shape), "dtype": dtype, "bytes_per_token": nbytes / args.T}
            for (site, shape, dtype), nbytes in sorted(sites.items(), key=lambda item: -item[1])]  # fmt: skip
    total = sum(row["bytes_per_token"] for row in rows)
    backends = "Triton" if args.triton else "PyTorch"
    print(f"{args.preset}, {args.layers} layer(s), T = {args.T}, bf16, {backends} backends")
    print(f"{'bytes/token':>12}  {'site':48s} shape, dtype")
    for row in rows:
        print(f"{row['bytes_per_token']:12.0f}  {row['site']:48s} {tuple(row['shape'])}, {row['dtype']}")
    print(f"{total:12.0f}  in all")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"preset": args.preset, "layers": args.layers, "T": args.T, "triton": args.triton,
                       "torch": torch.__version__, "rows": rows, "bytes_per_token": total}, f, indent=1)  # fmt: skip


if __name__ == "__main__":
    main()
