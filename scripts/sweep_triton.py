"""Launch settings of the Triton chunk kernels on this GPU: one kernel at a time, the rest fixed.

For each head size D (T = 4096, B = 8, H = 2048 / D, bf16), times forward and forward+backward with the
defaults and with fla's chunk_delta_rule beside them, then tries (num_warps, num_stages) per kernel and
keeps the fastest (coordinate descent) by the summed time of that shape and a long one
(T = 16384, B = 2), with tile variants for dqkw, wy_bwd and the state kernels; also times forward+backward
with the backward's chunk.HALF_OPERANDS switched off and with more of its bits on, with V' and dV' in bf16
(chunk.HALF_VPRIME), with bf16 operands in the backward's recomputing state pass and in the reverse state
pass's A^T dV' (both shapes), the forward with each of state_fwd's bits, and forward+backward (with its
peak memory) with chunk.KEEP_STATES off and on, version 12's storage options (chunk.HALF_A, HALF_DW; both
shapes), and forward+backward with dqkw and wy_bwd as two kernels or one (chunk.FUSED_WY_BWD,
D <= 128).
Usage: python scripts/sweep_triton.py [OUT.json [D ...]] (head sizes in the order given; default 64 128 256).
SWEEP_KERNELS="dqkw_wy state_bwd" sweeps the launch options of those kernels only (default: every kernel;
"none": only the candidates above); the others keep the settings they have. SWEEP_OPTIONS="4,2 8,1" tries
those (num_warps, num_stages) only.
Prints the table and writes JSON to the path given (after each head size) or to stdout.
"""

import json
import os
import sys

import torch

from assocmem import delta_rule
from assocmem.bench.delta_rule_gpu import _events_ms, _fla, _inputs, _runner
from assocmem.ops.delta_rule.triton import chunk as tchunk

OPTIONS = [(2, 2), (4, 1), (4, 2), (4, 3), (8, 1), (8, 2), (8, 3)]
if os.environ.get("SWEEP_OPTIONS"):
    OPTIONS = [tuple(int(n) for n in option.split(",")) for option in os.environ["SWEEP_OPTIONS"].split()]


def _disagreement(call, reference) -> float:
    """Largest relative difference of a candidate's output and gradients from the defaults' (inf if any is
    not finite): a bf16 or fused candidate that a GPU compiler gets wrong must not win on time alone."""
    worst = 0.0
    for a, b in zip(call(), reference, strict=True):
        if not torch.isfinite(a).all():
            return float("inf")
        worst = max(worst, ((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-30)).item())
    return worst


def _timed_if_it_agrees(call, reference, timed=None, bound=1e-2) -> dict:
    """{"fwd+bwd": time of a candidate's `timed` (default: `call`, one forward+backward)}, or inf where `call`
    disagrees with the defaults' `reference` by `bound` or more."""
    timed = timed or call
    off = _disagreement(call, reference)
    return {"fwd+bwd": _events_ms(timed, reps=10) if off < bound else float("inf"), "vs_defaults": off}
FWD_KERNELS = ("wy_fwd", "state_fwd")


def main(out=None, heads=(64, 128, 256)):
    torch.manual_seed(0)
    fla_chunk, _, _ = _fla()
    report = {}
    only = os.environ.get("SWEEP_KERNELS", "").split()
    for D in heads:
        H, T, B = 2048 // D, 4096, 8
        inputs = _inputs(B, T, H, D, "cuda")
        do = torch.randn(B, T, H, D, device="cuda", dtype=torch.bfloat16)
        ours = {bw: _runner(lambda q, k, v, b: delta_rule(q, k, v, b, backend="triton")[0], inputs, do, bw)
                for bw in (False, True)}  # fmt: skip
        # A second, long shape (same tokens per batch): a setting is scored by the sum of both times, so that
        # one chosen at T = 4096 cannot cost the long sequences (version 6's single-stage forward did).
        long_inputs = _inputs(2, 16384, H, D, "cuda")
        long_do = torch.randn(2, 16384, H, D, device="cuda", dtype=torch.bfloat16)
        long = {bw: _runner(lambda q, k, v, b: delta_rule(q, k, v, b, backend="triton")[0], long_inputs, long_do, bw)
                for bw in (False, True)}  # fmt: skip
        both = {bw: lambda bw=bw, ours=ours, long=long: (ours[bw](), long[bw]()) for bw in (False, True)}  # one timing
        entry = {"default": {p: _events_ms(ours[bw], reps=10) for p, bw in (("fwd", False), ("fwd+bwd", True))}}
        if fla_chunk is not None:
            fla = {bw: _runner(lambda q, k, v, b: fla_chunk(q, k, v, b)[0], inputs, do, bw) for bw in (False, True)}
            entry["fla"] = {p: _events_ms(fla[bw], reps=10) for p, bw in (("fwd", False), ("fwd+bwd", True))}
        # What the bf16 rounding of intermediates buys (chunk.HALF_OPERANDS; NOTES.md, versions 6 and 7): the
        # backward's bits all off, and the forward's (state_fwd) bits one set at a time.
        saved = dict(tchunk.HALF_OPERANDS)
        tchunk.HALF_OPERANDS.update({name: 0 for name in saved})
        entry["half_operands_off"] = {"fwd+bwd": _events_ms(ours[True], reps=10)}
        fwd_bits = {}
        for bits in (0, 1, 2, 4, 1 | 2 | 4):
            tchunk.HALF_OPERANDS.update(saved)
            tchunk.HALF_OPERANDS["state_fwd"] = bits
            fwd_bits[bits] = entry[f"state_fwd_half_{bits}"] = {"fwd": _events_ms(ours[False], reps=10)}
        tchunk.HALF_OPERANDS.update(saved)
        # The backward's bf16 operands beyond the defaults (dqkw's four bits, wy_bwd's four: all within the
        # bounds under the interpreter once it rounds as the GPU does; NOTES.md, version 9).
        bwd_bits = {"default": {"dqkw": saved["dqkw"], "wy_bwd": saved["wy_bwd"]}, "dqkw_15": {"dqkw": 15},
                    "wy_bwd_15": {"wy_bwd": 15}, "both_15": {"dqkw": 15, "wy_bwd": 15}}  # fmt: skip
        reference = ours[True]()  # the defaults' output and gradients, to check each candidate against
        for label, bits in bwd_bits.items():
            tchunk.HALF_OPERANDS.update(saved)
            tchunk.HALF_OPERANDS.update(bits)
            entry[f"backward_half_{label}"] = _timed_if_it_agrees(ours[True], reference)
        tchunk.HALF_OPERANDS.update(saved)
        globals_chosen = {}
        if D == 128:  # settings that are not per head size follow the issue's main one (all within the bound)
            globals_chosen["state_fwd_half_operands"] = min(fwd_bits, key=lambda b: fwd_bits[b]["fwd"])
            tchunk.HALF_OPERANDS["state_fwd"] = globals_chosen["state_fwd_half_operands"]
            best = min(bwd_bits, key=lambda label: entry[f"backward_half_{label}"]["fwd+bwd"])
            globals_chosen["backward_half_operands"] = {**bwd_bits["default"], **bwd_bits[best]}
            tchunk.HALF_OPERANDS.update(globals_chosen["backward_half_operands"])
            # V' and dV' stored in bf16 between the kernels (chunk.HALF_VPRIME), with the bits just chosen.
            for on in (False, True):
                tchunk.HALF_VPRIME = on
                entry[f"half_vprime_{on}"] = _timed_if_it_agrees(ours[True], reference)
            globals_chosen["half_vprime"] = tchunk.HALF_VPRIME = (
                entry["half_vprime_True"]["fwd+bwd"] < entry["half_vprime_False"]["fwd+bwd"])
            # The bits of the backward's recomputing state pass (chunk.HALF_OPERANDS["state_recompute"]), timed
            # at both shapes together: the pass is longest at T = 16384, where few programs run the chain.
            recompute = {}
            for bits in (0, 1, 1 | 2, 1 | 2 | 4):
                tchunk.HALF_OPERANDS["state_recompute"] = bits
                recompute[bits] = entry[f"state_recompute_half_{bits}"] = _timed_if_it_agrees(
                    ours[True], reference, timed=both[True])
            globals_chosen["state_recompute_half_operands"] = min(recompute, key=lambda b: recompute[b]["fwd+bwd"])
            tchunk.HALF_OPERANDS["state_recompute"] = globals_chosen["state_recompute_half_operands"]
            # The reverse state pass with A^T dV' in bf16 too (state_bwd bit 2), both shapes.
            reverse = {}
            for bits in (1, 1 | 2):
                tchunk.HALF_OPERANDS["state_bwd"] = bits
                reverse[bits] = entry[f"state_bwd_half_{bits}"] = _timed_if_it_agrees(
                    ours[True], reference, timed=both[True])
            globals_chosen["state_bwd_half_operands"] = min(reverse, key=lambda b: reverse[b]["fwd+bwd"])
            tchunk.HALF_OPERANDS["state_bwd"] = globals_chosen["state_bwd_half_operands"]
        # The forward that keeps the chunk states for the backward (chunk.KEEP_STATES): time and peak memory.
        for keep in (False, True):
            tchunk.KEEP_STATES = keep
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            ours[True]()
            torch.cuda.synchronize()
            entry[f"keep_states_{keep}"] = {"fwd+bwd": _events_ms(ours[True], reps=10),
                                             "peak_gb": torch.cuda.max_memory_allocated() / 1e9}  # fmt: skip
        tchunk.KEEP_STATES = False
        if D == 128:
            keep = entry["keep_states_True"]["fwd+bwd"] < entry["keep_states_False"]["fwd+bwd"]
            globals_chosen["keep_states"] = tchunk.KEEP_STATES = keep
            # Version 12's storage options, one at a time on top of what is chosen so far, forward+backward at
            # both shapes: A in bf16 (chunk.HALF_A), dW and dK's part in bf16 (chunk.HALF_DW).
            reference = ours[True]()
            for flag in ("HALF_A", "HALF_DW"):
                timed = {}
                for on in (False, True):
                    setattr(tchunk, flag, on)
                    timed[on] = entry[f"{flag.lower()}_{on}"] = _timed_if_it_agrees(
                        ours[True], reference, timed=both[True])
                on = timed[True]["fwd+bwd"] < timed[False]["fwd+bwd"]
                globals_chosen[flag.lower()] = on
                setattr(tchunk, flag, on)
        # dqkw and wy_bwd as one kernel (chunk.FUSED_WY_BWD, key sizes up to FUSED_MAX_K), timed beside the
        # two kernels at both shapes with each one's launch options as they stand; the launch options of the
        # chosen form are swept below, the other form's skipped.
        fused = False
        if D <= tchunk.FUSED_MAX_K:
            reference = ours[True]()
            for on in (False, True):  # (times of both shapes together)
                tchunk.FUSED_WY_BWD[D] = on
                try:
                    entry[f"fused_wy_bwd_{on}"] = _timed_if_it_agrees(ours[True], reference, timed=both[True])
                except Exception as error:  # noqa: BLE001 - out of resources: the fused form is out
                    entry[f"fused_wy_bwd_{on}"] = {"fwd+bwd": float("inf"),
                                                   "error": f"{type(error).__name__}: {str(error)[:200]}"}
            fused = entry["fused_wy_bwd_True"]["fwd+bwd"] < entry["fused_wy_bwd_False"]["fwd+bwd"]
            tchunk.FUSED_WY_BWD[D] = fused
            globals_chosen["fused_wy_bwd"] = fused
        print(D, entry, flush=True)
        chosen = {}
        for name in tchunk.LAUNCH:
            if (name == "dqkw_wy") != fused and name in ("dqkw", "wy_bwd", "dqkw_wy"):
                continue  # the form of the backward not chosen above
            if only and name not in only:
                continue
            if name == "dv_local" and tchunk._store_p(True, D):
                continue  # not run by a training step at the defaults (version 14: P stored by the WY forward)
            bw = name not in FWD_KERNELS
            call = both[bw]
            # Tile variants: dqkw one key tile per head (it re-reads V', dV' and dO once per tile) and a value
            # tile of 32; the state kernels a value tile of 32 (twice the programs, half the state per
            # program); wy_bwd key and value tiles of 32 (with 8 warps: no spilled registers at K >= 128,
            # scripts/smem_check.py). Each variant: (label, {table: (key, value)}, what `chosen` records).
            variants = [("", {}, {})]
            if name == "dqkw_wy" and D >= 64:
                default = tchunk._fused_tile_v(D, D)
                other = 64 if default == 32 else 32
                variants = [(f"BV={default}", {}, {"tile_v": default}),
                            (f"BV={other}", {"FUSED_TILE_V": (D, other)}, {"tile_v": other})]
            elif name == "dqkw":
                variants = [(f"BK={tchunk.DQKW_TILE_K[D]}", {}, {"tile_k": tchunk.DQKW_TILE_K[D]})]
                if D > tchunk.DQKW_TILE_K[D]:
                    variants.append((f"BK={D}", {"DQKW_TILE_K": (D, D)}, {"tile_k": D}))
                if D >= 64:
                    record = {"tile_k": tchunk.DQKW_TILE_K[D], "tile_v": 32}
                    variants.append(("BV=32", {"DQKW_TILE_V": (D, 32)}, record))
            elif name in ("state_fwd", "state_bwd"):
                default = tchunk._state_tile_v(D, D, name)
                variants = [(f"BV={default}", {}, {"tile_v": default})]
                # (state_fwd at BV = 32 with 4 warps, 1 stage, K = 128 hit an illegal memory access on the
                # H200 under Triton 3.6, which ends the process's CUDA context: not tried below K = 256.)
                if default > 32 and not (name == "state_fwd" and D <= 128):
                    variants.append(("BV=32", {"STATE_TILE_V": ((name, D), 32)}, {"tile_v": 32}))
                elif default == 32 and D >= 256:  # K = 256: a 64-wide state (128 registers a thread at 4 warps)
                    variants.append(("BV=64", {"STATE_TILE_V": ((name, D), 64)}, {"tile_v": 64}))
                    if name == "state_fwd" and tchunk.WIDE_STATE_K256:  # and the rule between them (chunk.py)
                        variants[0] = ("BV=32", {"STATE_TILE_V": ((name, D), 32)}, {"tile_v": 32})
                        variants.insert(0, ("BV=rule", {}, {}))
            elif name == "wy_bwd" and D >= 256:
                # (tiles of 32 at K = 256 hit an illegal memory access on the H200 under Triton 3.6; the
                # interpreter computes them right.)
                variants = [("tile=64", {}, {"tile": 64})]
            elif name == "wy_bwd" and D >= 64:  # the default tile (whole heads at K = 128), then the others
                default = tchunk._wy_bwd_tiles(D, D)[0]
                variants = [(f"tile={default}", {}, {"tile": default})] + [
                    (f"tile={t}", {"WY_BWD_TILE": (D, t)}, {"tile": t})
                    for t in (128, 64, 32) if t != default and t <= D]  # fmt: skip
            times, records = {}, {}
            for label, assign, record in variants:
                saved_tables = {table: dict(getattr(tchunk, table)) for table in assign}
                for table, (key0, value) in assign.items():
                    getattr(tchunk, table)[key0] = value
                for warps, stages in OPTIONS:
                    key = f"{warps},{stages}" + (f",{label}" if len(variants) > 1 else "")
                    records[key] = (assign, record)
                    tchunk.LAUNCH_BY_K[(name, D)] = {"num_warps": warps, "num_stages": stages}
                    try:
                        times[key] = _events_ms(call, reps=5, repeats=3)
                    except Exception as error:  # noqa: BLE001 - out of resources etc.: that option is out
                        times[key] = f"{type(error).__name__}"
                        if type(error).__name__ == "AcceleratorError" or "illegal" in str(error):
                            # The CUDA context is gone: keep what was chosen so far and stop.
                            entry["chosen"] = {**chosen, **globals_chosen}
                            entry["stopped"] = f"{name} {key}: {type(error).__name__}: {str(error)[:200]}"
                            report[D] = entry
                            if out:
                                open(out, "w").write(json.dumps(report, indent=1))
                            sys.exit(f"sweep stopped at {name} {key}: {error}")
                for table, saved_table in saved_tables.items():  # back to the defaults for the next variant
                    getattr(tchunk, table).clear()
                    getattr(tchunk, table).update(saved_table)
            ok = {k: t for k, t in times.items() if isinstance(t, float)}
            best = min(ok, key=ok.get)
            warps, stages = map(int, best.split(",")[:2])
            tchunk.LAUNCH_BY_K[(name, D)] = {"num_warps": warps, "num_stages": stages}
            assign, record = records[best]
            for table, (key0, value) in assign.items():
                getattr(tchunk, table)[key0] = value
            chosen[name] = {"num_warps": warps, "num_stages": stages, **record, "times_ms": times}
            shown = {k: (round(t, 4) if isinstance(t, float) else t) for k, t in times.items()}
            print(D, name, best, shown, flush=True)
        entry["chosen"] = {**chosen, **globals_chosen}
        entry["tuned"] = {p: _events_ms(ours[bw], reps=10) for p, bw in (("fwd", False), ("fwd+bwd", True))}
        print(D, "tuned", entry["tuned"], flush=True)
        report[D] = entry
        if out:  # after every head size, so that a run stopped by its time limit keeps what it measured
            open(out, "w").write(json.dumps(report, indent=1))
        del inputs, do, long_inputs, long_do
        torch.cuda.empty_cache()
    text = json.dumps(report, indent=1)
    if out:
        open(out, "w").write(text)
    print(text)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None, tuple(int(a) for a in sys.argv[2:]) or (64, 128, 256))
