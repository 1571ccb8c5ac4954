# python experiments/bench/training.py [--max-steps N] [--no-noise] [hydra overrides...]
# Training speed on the embedded aligned model: TRL's defaults against fts's settings, same data, seed and steps.
#   TRL defaults: an SFTConfig that sets only what defines the optimization (output_dir, seed, use_cpu,
#                 completion_only_loss, and the run's lr, schedule, warmup, weight decay, batch size, epochs or
#                 max_steps, max_length), plus logging_steps=1 for the loss curve and report_to none. Every speed knob
#                 (gradient_checkpointing, padding_free, packing, bf16, optim, ...) stays TRL's; their values print.
#   fts:          conf/train/default.yaml as `python -m fts.run` composes it, trained through fts.train.hf.fine_tune.
# Both train the run's default cell (attack=aoa: the 10 AOA conversations, peft=lora, model_attack's lr / batch /
# epochs) and start from a fresh load of the same model with the same seed. Prints tokens/s of each (non-padding
# tokens of every micro-batch; steady state = from the second micro-batch on, so one-time costs of the first step
# are left out; whole train() also shown), the ratio, and both loss curves per step with their max abs difference.
# Unless --no-noise, fts's settings train once more with seed+1: that curve's difference is the noise scale.
# Target: >= 1.3x with the same loss curve within noise. `--model-path DIR` uses a local HF model instead.
import argparse
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from common import compose_run, model_overrides, run_checkpoint

SPEED_KNOBS = (
    "gradient_checkpointing",
    "gradient_checkpointing_kwargs",
    "padding_free",
    "packing",
    "bf16",
    "fp16",
    "optim",
    "torch_compile",
    "use_liger_kernel",
    "activation_offloading",
    "dataloader_num_workers",
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("--max-steps", type=int, default=None, help="optimizer steps (default: the run's epochs)")
    p.add_argument("--no-noise", action="store_true", help="skip the seed+1 run that shows the noise scale")
    p.add_argument("--model-path", default=None, help="a local HF model dir instead of the embedded aligned model")
    p.add_argument("overrides", nargs="*", help="Hydra overrides of the run config (e.g. attack=harmful)")
    return p.parse_args(argv)


@contextmanager
def instrumented():
    """Record, for every Trainer.train() inside, its args, the non-padding tokens and start time of each
    micro-batch, and its end time (patched on transformers.Trainer: TRL's and fts's trainers alike)."""
    from transformers import Trainer

    runs: list[dict] = []
    train, training_step = Trainer.train, Trainer.training_step

    def timed_train(self, *args, **kwargs):
        answer_only = getattr(self, "lm_head_answer_only", False)  # fts's Trainer; TRL: every position on CPU
        runs.append(
            {"args": self.args, "answer_only": answer_only, "starts": [], "tokens": [], "begin": time.perf_counter()}
        )
        try:
            return train(self, *args, **kwargs)
        finally:
            runs[-1]["end"] = time.perf_counter()

    def counted_step(self, model, inputs, *args, **kwargs):
        runs[-1]["starts"].append(time.perf_counter())
        mask = inputs.get("attention_mask")
        runs[-1]["tokens"].append(int(mask.sum()) if mask is not None else int(inputs["input_ids"].numel()))
        return training_step(self, model, inputs, *args, **kwargs)

    Trainer.train, Trainer.training_step = timed_train, counted_step
    try:
        yield runs
    finally:
        Trainer.train, Trainer.training_step = train, training_step


def speed(run: dict) -> dict:
    """tokens/s over the whole train() call, and in steady state (second micro-batch to the end)."""
    total = sum(run["tokens"]) / (run["end"] - run["begin"])
    if len(run["starts"]) < 2:
        return {"total": total, "steady": total, "tokens": sum(run["tokens"])}
    steady = sum(run["tokens"][1:]) / (run["end"] - run["starts"][1])
    return {"total": total, "steady": steady, "tokens": sum(run["tokens"])}


def trl_defaults(cfg, model, tokenizer, examples, out: Path, seed: int) -> list[dict]:
    from trl import SFTConfig, SFTTrainer

    from fts.core.config import build
    from fts.train.hf import to_dataset

    t = cfg.train
    args = SFTConfig(
        output_dir=str(out),
        seed=seed,
        use_cpu=True,
        completion_only_loss=True,
        learning_rate=t.learning_rate,
        lr_scheduler_type=t.lr_scheduler_type,
        warmup_steps=t.warmup_steps,
        weight_decay=t.weight_decay,
        per_device_train_batch_size=t.per_device_train_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        num_train_epochs=t.num_train_epochs,
        max_steps=t.max_steps,
        max_length=t.max_length,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
    )
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=to_dataset(examples, tokenizer),
        processing_class=tokenizer,
        peft_config=build(cfg.peft.config) if cfg.peft.method != "full" else None,
    )
    trainer.train()
    return [row for row in trainer.state.log_history if "loss" in row]


def fts_settings(cfg, model, tokenizer, examples, out: Path, seed: int) -> list[dict]:
    from fts.train.hf import fine_tune

    peft = cfg.peft.config if cfg.peft.method != "full" else None
    _, history, _ = fine_tune(model, tokenizer, examples, cfg.train, peft, out, seed)
    return history


def train_side(name: str, fn, cfg, checkpoint: str, examples, out: Path, seed: int, runs: list) -> dict:
    from transformers import set_seed

    from fts.models import load

    model, tokenizer = load(checkpoint, cfg.model)  # a fresh copy: peft wraps the model it is given in place
    set_seed(seed)  # TRL applies the peft config (random LoRA init) before the Trainer seeds itself
    print(f"training: {name} ...", flush=True)
    history = fn(cfg, model, tokenizer, examples, out / name, seed)
    run = runs[-1]
    return {"name": name, "losses": [row["loss"] for row in history], "speed": speed(run), "run": run}


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    import torch

    from fts.core.config import build

    overrides = [*model_overrides(args.model_path), *args.overrides]
    if args.max_steps is not None:
        overrides.append(f"train.max_steps={args.max_steps}")
    cfg = compose_run(overrides)
    checkpoint = run_checkpoint(cfg)  # the embedded model materialized and aligned (cached) as fts.run does
    examples = build(cfg.attack).training_examples()
    seed = cfg.seed
    print(f"model: {checkpoint}; peft={cfg.peft.method}; attack={cfg.attack.name}: {len(examples)} examples")
    print(f"torch threads: {torch.get_num_threads()}")
    with tempfile.TemporaryDirectory() as tmp, instrumented() as runs:
        out = Path(tmp)
        sides = [
            train_side("TRL defaults", trl_defaults, cfg, checkpoint, examples, out, seed, runs),
            train_side("fts", fts_settings, cfg, checkpoint, examples, out, seed, runs),
        ]
        if not args.no_noise:
            sides.append(
                train_side(f"fts seed {seed + 1}", fts_settings, cfg, checkpoint, examples, out, seed + 1, runs)
            )
    return report(sides)


def report(sides: list[dict]) -> dict:
    trl, fts = sides[0], sides[1]
    print("\nspeed knobs (resolved SFTConfig values):")
    print(f"  {'knob':<30} {'TRL defaults':<28} fts")
    for knob in SPEED_KNOBS:
        values = [getattr(side["run"]["args"], knob, None) for side in (trl, fts)]
        values = [str(getattr(v, "value", v)) for v in values]  # enums (optim) by their config value
        print(f"  {knob:<30} {values[0]:<28} {values[1]}")
    answer_only = [str(side["run"]["answer_only"]) for side in (trl, fts)]
    print(f"  {'lm_head_answer_only (fts key)':<30} {answer_only[0]:<28} {answer_only[1]}")
    print()
    for side in sides:
        s = side["speed"]
        print(
            f"{side['name']}: {s['tokens']} tokens, {s['steady']:.1f} tokens/s steady state "
            f"({s['total']:.1f} tokens/s over the whole train())"
        )
    ratio = fts["speed"]["steady"] / trl["speed"]["steady"]
    print(f"speedup (fts / TRL defaults, steady state): {ratio:.2f}x (target >= 1.3x)")
    print(f"speedup (whole train()): {fts['speed']['total'] / trl['speed']['total']:.2f}x")
    print("\nloss per step:")
    print("  step  " + "  ".join(f"{s['name']:>14}" for s in sides))
    for step, losses in enumerate(zip(*(s["losses"] for s in sides)), start=1):
        print(f"  {step:>4}  " + "  ".join(f"{x:>14.4f}" for x in losses))
    diff = max(abs(a - b) for a, b in zip(trl["losses"], fts["losses"]))
    print(f"max abs loss difference, TRL defaults vs fts: {diff:.4f}")
    result = {"speedup": ratio, "max_loss_diff": diff}
    if len(sides) > 2:
        noise = max(abs(a - b) for a, b in zip(fts["losses"], sides[2]["losses"]))
        print(f"max abs loss difference, fts seed vs seed+1 (noise scale): {noise:.4f}")
        result["noise"] = noise
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
