"""`python -m flexi_core …` (or `flexidit …`): the command line that the app, the benchmarks and the checks rely on.

Each command parses its flags and calls the library (`generate`, `distill`, `evaluate`, `bench`, ...); the work
itself lives there. Over 400 lines because the seven commands' argparse declarations and help texts live together
here, in one place a user reads with `--help`.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import FlexiDiTError, message
from .inputs import SAMPLERS

JUDGE_JOBS = ("judge", "judge-texture")  # `train` jobs that train a judge (shapes/judge.py)


def cmd_train(args):
    import torch
    from . import registry
    from .shapes import train
    from .shapes.vae import VAE_LEVELS
    torch.set_num_threads(args.threads)
    run_dir = Path(args.run_dir or f"runs/{args.model}")
    limit = None if args.minutes is None else 60 * args.minutes
    # each job's own defaults (steps, batch size, learning rate) unless given
    given = {k: v for k, v in dict(steps=args.steps, batch_size=args.batch_size, lr=args.lr).items() if v is not None}
    if args.geometry_weight is not None and args.model not in JUDGE_JOBS:
        raise FlexiDiTError(f"--geometry-weight is for the judge jobs ({', '.join(JUDGE_JOBS)})")
    if args.model in VAE_LEVELS:
        train.train_vae(run_dir, name=args.model, time_limit=limit, **given)
        if args.export:
            print("latent scale", train.export_vae(run_dir, registry.ASSETS / args.model, name=args.model))
        return
    if args.model == "vae-decoder":
        train.finetune_vae_decoder(registry.ASSETS / "vae", run_dir, **given)
        return
    if args.model in JUDGE_JOBS:
        from .shapes import judge
        if args.model == "judge-texture":
            given["textured"] = True
        if args.init_from is not None:
            given["init_from"] = args.init_from
        if args.geometry_weight is not None:
            given["geometry_weight"] = args.geometry_weight
        judge.train_judge(run_dir, **given)
        if args.export:
            judge.export_judge(run_dir, registry.ASSETS / f"{args.model}.safetensors")
        return
    from .loading import load_embedded_vae
    spec = registry.get_spec(args.model)
    if not spec.embedded:
        raise FlexiDiTError(f"{args.model} is a public checkpoint; only embedded models train from scratch here")
    _check_paraphrase(args.paraphrase, spec)
    if args.train_only and args.init_from is None:
        raise FlexiDiTError("--train-only fine-tunes part of a trained model: give it --init-from")
    device = _training_device(args.device)
    vae = load_embedded_vae(name=spec.vae)
    model = train.train_base(spec, vae, vae.config.scaling_factor, run_dir, **given, device=device,
                             init_from=args.init_from, data_workers=args.data_workers, paraphrase=args.paraphrase,
                             train_only=args.train_only, time_limit=limit, weak_first=args.weak_first,
                             bf16=args.bf16)
    if model is None:
        print(f"{spec.name}: the weak phase is unfinished; nothing exported. Run the same command again to resume")
    elif args.export:
        train.export_transformer(model, run_dir, registry.ASSETS / spec.name / "transformer")


def _budget_list(text: str) -> tuple[float, ...]:
    try:
        budgets = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers") from None
    if not all(0 < b <= 1 for b in budgets):
        raise argparse.ArgumentTypeError(f"{text!r}: every budget is a fraction of the static FLOPs, in (0, 1]")
    return budgets


def _prefixes(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def _check_paraphrase(rate: float, spec):
    if not 0 <= rate <= 1:
        raise FlexiDiTError(f"--paraphrase {rate}: a chance, in [0, 1]")
    if rate and not (spec.embedded and spec.conditioning == "text"):
        raise FlexiDiTError(f"--paraphrase: {spec.name} has no procedural captions (embedded text models only)")


def parse_patch(text: str, video: bool) -> tuple:
    """'4' -> (1, 4, 4); '2x2x2' -> (2, 2, 2)."""
    try:
        parts = [int(v) for v in text.lower().split("x")]
    except ValueError:
        raise FlexiDiTError(f"patch size {text!r} is not a number or TxHxW") from None
    if len(parts) == 1:
        return (1, parts[0], parts[0])
    if len(parts) == 3 and video:
        return tuple(parts)
    raise FlexiDiTError(f"patch size {text!r}: use P (images) or TxHxW (video)")


def cmd_flops(args):
    from . import flops, registry
    spec = registry.get_spec(args.model)
    patch = parse_patch(args.patch_size, spec.modality == "video") if args.patch_size else spec.native_patch
    value = flops.spec_flops(spec, patch, batch=1)
    print(f"model {spec.name} ({spec.family}), latent {spec.latent_shape}, patch {'x'.join(map(str, patch))}, "
          f"batch 1, one forward; GFLOPs (multiply-add = 2):")
    print(f"{value / 1e9:.4f}")


def _device(name: str) -> str:
    """'auto' -> cuda if torch sees a GPU, else cpu; anything else is checked to be a usable device."""
    import torch
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        torch.device(name)
    except RuntimeError:
        raise FlexiDiTError(f"--device {name!r} is not a device: use auto, cpu, cuda, cuda:1 …") from None
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise FlexiDiTError(f"--device {name}: no CUDA GPU is available here; use --device cpu")
    return name


def _training_device(name: str) -> str:
    import torch
    device = _device(name)
    if device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True  # ample for training
    return device


def _load(args):
    from .loading import load_model
    device = _device(args.device)
    return load_model(args.model, args.variant, weights_dir=args.weights_dir,
                      flexify_file=Path(args.flexify_weights) if args.flexify_weights else None,
                      merged=args.merged, allow_download=args.allow_download, device=device)


def cmd_generate(args):
    import json
    from tqdm import tqdm
    from .generate import generate
    from .media import save_media
    from .schedule import Schedule
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)  # a folder that cannot be made fails now, not after sampling
    if args.json and not Path(args.json).parent.is_dir():
        raise FlexiDiTError(f"--json {args.json}: the folder {Path(args.json).parent} does not exist")
    model = _load(args)
    steps = model.spec.steps if args.steps is None else args.steps
    schedule = None
    if args.schedule:
        schedule = Schedule.parse(args.schedule, steps, args.weak_mode or next(iter(model.flexible.weak_modes)),
                                  args.lead or 0, weak_guidance=args.weak_guidance != "off")
    if not model.flexify_trained:
        print(f"note: no flexify weights for {model.spec.name} ({model.variant}); the weak patch size runs its "
              f"untrained PI-resize initialisation", file=sys.stderr)
    with tqdm(total=100, desc="sampling", bar_format="{l_bar}{bar}| {postfix}", mininterval=0.5) as bar:
        def progress(fraction, text):
            bar.n = round(100 * fraction)
            bar.set_postfix_str(text)
        result = generate(model, class_label=args.class_label, prompt=args.prompt, budget=args.budget, steps=steps,
                          seed=args.seed, guidance=args.cfg, sampler=args.sampler, weak_mode=args.weak_mode,
                          lead=args.lead, schedule=schedule, compare=args.compare, fewer_steps=args.compare,
                          weak_guidance=WEAK_GUIDANCE[args.weak_guidance], progress=progress)
    stem = f"{model.spec.name}-seed{args.seed}"
    files = {name: str(save_media(run.pixels, out / f"{stem}-{name.replace('_', '-')}"))
             for name, run in result.runs.items()}
    report = result.report(model, files=files, seed=args.seed)
    flex, static, fewer = result.flexible, result.static, result.fewer
    summary = f"flexible: {flex.flops / 1e9:.3f} GFLOPs, {flex.seconds:.2f} s ({flex.schedule.weak_steps} weak steps)"
    if static:
        summary += (f"; static: {static.flops / 1e9:.3f} GFLOPs, {static.seconds:.2f} s; FLOPs ratio "
                    f"{result.flops_ratio:.3f}, flexible {result.time_verdict} (steps alternated); "
                    f"PSNR {report['agreement']['psnr']:.1f} dB, SSIM {report['agreement']['ssim']:.3f}")
    if fewer:
        summary += f"; fewer steps: {fewer.schedule.steps} static steps, {fewer.flops / 1e9:.3f} GFLOPs"
    print(summary)
    for name, text in (report["judge"] or {}).items():
        print(f"judge, {name.replace('_', ' ')}: {text}")
    print("files:", ", ".join(files.values()))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=float))


def cmd_flexify(args):
    import json
    import torch
    from . import distill, registry
    from .shapes import data, train
    from .loading import load_model
    torch.set_num_threads(args.threads)
    _check_paraphrase(args.paraphrase, registry.get_spec(args.model))
    # --restart: the original transformer (not a shared variant's fine-tuned copy) with fresh weak layers
    model = load_model(args.model, args.variant, weights_dir=args.weights_dir, allow_download=args.allow_download,
                       fresh=args.restart, lora_rank=args.lora_rank)
    spec = model.spec
    if args.source == "data" and not spec.embedded:
        raise FlexiDiTError("--source data needs the procedural dataset: embedded models only")
    train_steps = model.scheduler_config["num_train_timesteps"]
    if not 0 <= args.min_timestep < train_steps:
        raise FlexiDiTError(f"--min-timestep must lie in [0, {train_steps - 1}]")
    device = _training_device(args.device)
    model.flexible.to(device)  # the text encoder stays on the CPU: conditioning moves over per batch
    if args.source == "data":
        model.vae.to(device)  # encodes the procedural batches
    captions = train.procedural_captions(spec, args.paraphrase) if spec.embedded else None
    draw, null = distill.condition_sampler(model, args.prompts, captions)
    batches = train.PrefetchedBatches(args.batch_size, seed_offset=data.SEEDS["distill-data"],
                                      video=spec.modality == "video",
                                      workers=args.data_workers if args.source == "data" else 0,
                                      paraphrase=args.paraphrase, textured=spec.textured)
    run_dir = Path(args.run_dir or f"runs/flexify-{spec.name}-{args.variant}")
    try:
        data_batch = train.procedural_xt(model, batches, args.min_timestep) if args.source == "data" else None
        info = distill.distill(model.flexible, spec, args.steps, args.batch_size, run_dir, draw, null,
                               model.scheduler_config, args.source, data_batch, args.lr,
                               min_timestep=args.min_timestep)
    finally:
        batches.close()
    from .registry import ASSETS
    out = Path(args.out) if args.out else ASSETS / spec.name / f"flexify-{args.variant}.safetensors"
    out.parent.mkdir(parents=True, exist_ok=True)
    model.flexible.cpu().save_flexify(out, model=spec.name)
    print(json.dumps({**info, "file": str(out)}))


def _step_list(text: str) -> tuple[int, ...]:
    from .inputs import MAX_STEPS
    try:
        steps = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of whole numbers") from None
    if not all(1 <= s <= MAX_STEPS for s in steps):
        raise argparse.ArgumentTypeError(f"{text!r}: every step count is a whole number from 1 to {MAX_STEPS}")
    return steps


def cmd_evaluate(args):
    import json
    import torch
    from .shapes import frontier
    from .shapes.evaluate import BUDGETS, evaluate, markdown_table
    torch.set_num_threads(args.threads)
    quick, variants = args.quick, tuple(args.variants.split(","))
    sweep = args.frontier or args.sweep_steps or args.frontier_steps
    if sweep and (args.steps or args.no_baselines):
        raise FlexiDiTError("--steps and --no-baselines belong to the budget table; the frontier sweeps --sweep-steps")
    if args.plot and not sweep:
        raise FlexiDiTError("--plot draws the frontier: add --frontier (or --sweep-steps)")
    if sweep:
        result = frontier.frontier(
            args.model, n=args.samples or (16 if quick else 256),
            steps=args.sweep_steps or ((4, 6) if quick else frontier.SWEEP_STEPS),
            frontier_steps=args.frontier_steps or ((1, 2, 3, 4, 6) if quick else frontier.FRONTIER_STEPS),
            budgets=args.budgets or ((0.55,) if quick else frontier.SWEEP_BUDGETS), sampler=args.sampler,
            variants=variants, weak_mode=args.weak_mode, guidance=args.cfg, lead=args.lead,
            paraphrase=args.paraphrase, weak_guidance=WEAK_GUIDANCE[args.weak_guidance])
        print(frontier.markdown_table(result))
        if args.plot:
            frontier.plot(result, Path(args.plot))
    else:
        result = evaluate(args.model, n=args.samples or (16 if quick else 256),
                          steps=args.steps or (10 if quick else None),
                          budgets=args.budgets or ((1.0, 0.55) if quick else BUDGETS), variants=variants,
                          baselines=not args.no_baselines, weak_mode=args.weak_mode, guidance=args.cfg,
                          lead=args.lead, paraphrase=args.paraphrase, sampler=args.sampler,
                          weak_guidance=WEAK_GUIDANCE[args.weak_guidance])
        print(markdown_table(result))
    if not result["variants"]:
        print(f"note: {args.model} has no flexify weights for {args.variants}: static rows only; "
              f"`python -m flexi_core flexify --model {args.model}` trains the weak path", file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=float))


def cmd_bench(args):
    import torch
    from .bench import run_bench
    if args.threads:
        torch.set_num_threads(args.threads)
    ints = lambda text: [int(v) for v in text.split(",")] if text else None  # noqa: E731
    report = run_bench(Path(args.out), quick=args.quick, models=args.models.split(",") if args.models else None,
                       quality_json=args.quality_json, sections=args.sections.split(",") if args.sections else None,
                       repeats=args.repeats, batches=ints(args.batches), steps=args.steps, big_steps=args.big_steps,
                       threads=args.threads, quality_samples=args.quality_samples,
                       command="python -m flexi_core " + " ".join(sys.argv[1:]))
    print(report["markdown"])
    print(f"wrote {Path(args.out) / 'bench.json'}, {Path(args.out) / 'bench.md'} and plots", file=sys.stderr)


def cmd_card(args):
    import torch
    from .shapes import card
    from .registry import ASSETS
    torch.set_num_threads(args.threads)
    if not card.training_curves(Path("runs"), ASSETS / "training-curves.png"):
        print("no training logs under runs/: training-curves.png left as it is")
    for name in args.models.split(","):
        if name not in card.CURVES:  # a model beside the defaults: its own figure
            card.training_curves(Path("runs"), ASSETS / f"training-curves-{name}.png", names=(name,))
        conditions = card.sample_grid(name, ASSETS / f"samples-{name}.png", steps=args.steps)
        print(name, "columns:", "; ".join(conditions))


PARAPHRASE_HELP = ("embedded text models: chance that a caption's colour or shape word is a synonym "
                   "(data.SYNONYMS)")
WEAK_GUIDANCE = {None: None, "on": True, "off": False}
WEAK_GUIDANCE_HELP = ("on: the weak steps run classifier-free guidance (an unconditional pass each); off: the "
                      "conditional pass alone, at half the cost (default: the model's rule; shapes runs them without "
                      "below a 50%% budget)")
LEAD_HELP = ("native steps that run before the weak ones (default: the model's measured share, e.g. 3 of 25 for "
             "shapes-video's spatial mode, else 0)")


def _add_model_args(p, generation: bool = True):
    p.add_argument("--model", required=True, help="shapes, shapes-text, shapes-video, shapes-textured, "
                                                  "shapes-text-textured, dit-xl-2-256, pixart-alpha-256, cogvideox-2b")
    p.add_argument("--variant", default="lora", choices=["lora", "shared"])
    p.add_argument("--weights-dir", help="local folder of a public checkpoint (default: the Hugging Face cache)")
    p.add_argument("--allow-download", action="store_true", help="let from_pretrained download public weights")
    if generation:
        p.add_argument("--flexify-weights", help="flexify .safetensors (default: the shipped one, if any)")
        p.add_argument("--merged", action="store_true", help="merge LoRA adapters into per-patch copies")
        p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 …")


THREADS = 2  # the development and CI machines' cores


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m flexi_core", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train an embedded model: vae, vae-2x, vae-2x-texture (on textured data), "
                                     "vae-decoder (decoder-only fine-tune of the shipped autoencoder), judge, "
                                     "judge-texture (a judge that also reads textures, the textured models' judge), "
                                     "or any embedded model of the registry (shapes, shapes-text, shapes-video, ...)")
    p.add_argument("--model", required=True)
    p.add_argument("--steps", type=int, help="default: the job's own (vae 2000, vae-decoder 800, judge 2000, "
                                             "base transformers 5500)")
    p.add_argument("--batch-size", type=int, help="default: the job's own (judge 64, the rest 32)")
    p.add_argument("--lr", type=float, help="default: the job's own (vae 1e-3, vae-decoder 3e-4, judge 2e-3, "
                                            "base transformers 8e-4)")
    p.add_argument("--threads", type=int, default=THREADS, help=f"torch CPU threads (default {THREADS})")
    p.add_argument("--minutes", type=float,
                   help="end the run after so many minutes of CPU time in all its legs, with a checkpoint")
    p.add_argument("--run-dir", help="checkpoint folder (default runs/MODEL); training resumes from it")
    p.add_argument("--export", action="store_true", help="write the EMA weights (fp16) to assets/ when done")
    p.add_argument("--device", default="cpu", help="cpu or cuda (base transformers)")
    p.add_argument("--init-from", type=Path, help="with an empty --run-dir: start a new leg from exported weights "
                   "(a transformer folder or .safetensors file; a judge file for judge jobs) instead of from "
                   "scratch; fresh optimizer and schedule")
    p.add_argument("--geometry-weight", type=float,
                   help="judge jobs: weight of the centre and radius regression in the loss (default 20, the shipped "
                        "judges'; 1000-3000 reads size and position four times as precisely, at a cost in texture "
                        "reading: assets/README.md)")
    p.add_argument("--weak-first", type=int, default=0, metavar="STEPS",
                   help="progressive training (base transformers): STEPS through the first weak patch at a fraction "
                        "of the cost, then its layers resized onto the native patch for --steps more")
    p.add_argument("--data-workers", type=int, default=0,
                   help="processes that draw the procedural batches ahead (keeps a GPU busy)")
    p.add_argument("--bf16", action="store_true",
                   help="base transformers: the forward under bfloat16 autocast (fp32 weights; about 1.5x faster "
                        "on a CPU with AVX512-BF16, and on GPUs)")
    p.add_argument("--paraphrase", type=float, default=0.0, help=PARAPHRASE_HELP)
    p.add_argument("--train-only", type=_prefixes, default=(), metavar="PREFIXES",
                   help="comma-separated parameter-name prefixes; the rest stays frozen (e.g. caption_projection: "
                        "new words without touching the transformer body the flexify files were trained on)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("generate", help="sample with a compute budget (and the static baseline with --compare)")
    _add_model_args(p)
    p.add_argument("--class-label", help="class name or index (class-conditioned models)")
    p.add_argument("--prompt", help="text prompt (text-conditioned models)")
    p.add_argument("--budget", type=float, help="fraction of the static FLOPs, in (0, 1] (default: the model's)")
    p.add_argument("--schedule", help="explicit 'x/y': native model for the last x conditional / y unconditional "
                                      "steps (overrides --budget)")
    p.add_argument("--steps", type=int, help="denoising steps (default: the model's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cfg", type=float, help="classifier-free guidance scale (default: the model's; <= 1: off)")
    p.add_argument("--sampler", choices=SAMPLERS, help="default: the model's (ddim: DDIM, dpm: DPM-Solver++)")
    p.add_argument("--weak-mode", help="video: temporal or spatial (default: the first)")
    p.add_argument("--lead", type=int, help=LEAD_HELP)
    p.add_argument("--weak-guidance", choices=["on", "off"], help=WEAK_GUIDANCE_HELP)
    p.add_argument("--compare", action="store_true", help="also sample the static model from the same seed, and the "
                   "static model with fewer steps at no more than the flexible run's FLOPs")
    p.add_argument("--out-dir", default="outputs")
    p.add_argument("--json", help="write a JSON report here")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("flops", help="GFLOPs of one forward at batch 1 (no weights needed)")
    p.add_argument("--model", required=True)
    p.add_argument("--patch-size", help="P or TxHxW (default: native)")
    p.set_defaults(func=cmd_flops)

    p = sub.add_parser("flexify", help="distil the native model into its weak patch sizes")
    _add_model_args(p, generation=False)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--lora-rank", type=int,
                   help="LoRA rank of new adapters (default 8 for embedded models, 32 for public ones)")
    p.add_argument("--source", default="self", choices=["self", "data"],
                   help="x_t from the teacher's own trajectories (data-free) or from the procedural dataset")
    p.add_argument("--prompts", help="text file, one prompt per line (text models without procedural captions)")
    p.add_argument("--paraphrase", type=float, default=0.0, help=PARAPHRASE_HELP)
    p.add_argument("--min-timestep", type=int, default=0,
                   help="distil only at t >= this (of 1000): the noisy steps the weak model serves (default 0: all)")
    p.add_argument("--threads", type=int, default=THREADS, help=f"torch CPU threads (default {THREADS})")
    p.add_argument("--restart", action="store_true",
                   help="start afresh from the original transformer (PI-resize init), not from the flexify weights")
    p.add_argument("--run-dir")
    p.add_argument("--out", help="output .safetensors (default assets/MODEL/flexify-VARIANT.safetensors)")
    p.add_argument("--device", default="cpu",
                   help="cpu or cuda (transformer and VAE; the text encoder stays on the CPU)")
    p.add_argument("--data-workers", type=int, default=0,
                   help="--source data: processes that draw the procedural batches ahead (keeps a GPU busy)")
    p.set_defaults(func=cmd_flexify)

    p = sub.add_parser("evaluate", help="judge accuracy, Fréchet distance and agreement vs FLOPs (embedded models)")
    p.add_argument("--model", required=True)
    p.add_argument("--samples", type=int, help="samples per row (default 256; 16 with --quick)")
    p.add_argument("--steps", type=int)
    p.add_argument("--variants", default="lora,shared")
    p.add_argument("--budgets", type=_budget_list, help="comma-separated fractions of the static FLOPs "
                   "(default 1,0.75,0.55,0.4,0.25; the static row always runs)")
    p.add_argument("--weak-mode", help="video: temporal or spatial")
    p.add_argument("--lead", type=int, help=LEAD_HELP)
    p.add_argument("--weak-guidance", choices=["on", "off"], help=WEAK_GUIDANCE_HELP)
    p.add_argument("--cfg", type=float, help="classifier-free guidance scale for every row (default: the model's)")
    p.add_argument("--no-baselines", action="store_true")
    p.add_argument("--paraphrase", choices=["trained", "held-out"],
                   help="text models: every caption names colour and shape with a synonym that training used "
                        "(`train --paraphrase`) or one it never saw")
    p.add_argument("--sampler", choices=SAMPLERS, help="every row's sampler (default: the model's)")
    p.add_argument("--frontier", action="store_true",
                   help="the quality-vs-FLOPs frontier: the static model at --frontier-steps and FlexiDiT at each "
                        "budget (default 0.75,0.55,0.4) for each of --sweep-steps, with frontier gains")
    p.add_argument("--sweep-steps", type=_step_list, metavar="N,N,…",
                   help="FlexiDiT's step counts (implies --frontier; default 4,6,8,10,25)")
    p.add_argument("--frontier-steps", type=_step_list, metavar="N,N,…",
                   help="the static frontier's step counts (implies --frontier; default 1-6,8,10,13,16,20,25)")
    p.add_argument("--plot", help="frontier: write its accuracy and Fréchet vs FLOPs plot (PNG) here")
    p.add_argument("--quick", action="store_true", help="16 samples, 10 steps, budgets 100%% and 55%%; with "
                   "--frontier: static 1,2,3,4,6 steps, FlexiDiT at 4 and 6 steps, budget 55%%")
    p.add_argument("--threads", type=int, default=THREADS, help=f"torch CPU threads (default {THREADS})")
    p.add_argument("--json")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("bench", help="FLOPs anchors, wall-clock vs FLOPs, quality vs FLOPs and memory: tables, "
                                     "JSON and plots")
    p.add_argument("--quick", action="store_true", help="about a minute: embedded models (LoRA), a 2-layer "
                                                        "DiT-XL/2 per-step check, one memory model, no evaluate")
    p.add_argument("--out", default="outputs/bench", help="folder for bench.json, bench.md and the plots")
    p.add_argument("--models", help="comma-separated (default: shapes, shapes-text, shapes-video, dit-xl-2-256, "
                                    "pixart-alpha-256)")
    p.add_argument("--quality-json", nargs="+", metavar="FILE", help="`evaluate --json` outputs to plot")
    p.add_argument("--quality-samples", type=int, help="samples per row when bench runs evaluate itself (256)")
    p.add_argument("--sections", help="comma-separated subset of flops,wallclock,quality,memory")
    p.add_argument("--repeats", type=int, help="timed repeats per measurement, medians reported (3)")
    p.add_argument("--batches", help="comma-separated batch sizes (1,8)")
    p.add_argument("--steps", type=int, help="denoising steps per timed sample, embedded models (4; 3 with --quick)")
    p.add_argument("--big-steps", type=int, help="denoising steps per timed sample, DiT-XL/2 and PixArt (3)")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's own default)")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("card", help="model-card figures: training curves (from runs/) and sample grids")
    p.add_argument("--models", default="shapes,shapes-text,shapes-video")
    p.add_argument("--steps", type=int)
    p.add_argument("--threads", type=int, default=THREADS, help=f"torch CPU threads (default {THREADS})")
    p.set_defaults(func=cmd_card)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    import torch
    try:
        args.func(args)
    except (FlexiDiTError, OSError) as e:  # what the user can fix: bad input, missing or unwritable files
        print(f"error: {message(e)}", file=sys.stderr)
        return 2
    except (MemoryError, torch.OutOfMemoryError):
        print("error: out of memory; use fewer steps, the CPU, or a model that fits this machine", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0
