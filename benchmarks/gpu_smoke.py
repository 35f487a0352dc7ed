"""One command that checks this plugin on a GPU, in under ten minutes on one card.

    python benchmarks/gpu_smoke.py                 # everything below
    python benchmarks/gpu_smoke.py --skip_tests    # without the CUDA test cases

It runs, on ``cuda:0``:

1. the test cases parametrized by device, on "cuda" (``pytest -k cuda``);
2. every model of this plugin (and RecBole's SASRec in sequence mode) for 2 epochs on ml-100k with
   ``gpu_id=0``, printing the device, seconds per epoch, evaluation seconds and test NDCG@10;
3. a resume: SASRec trained 1 epoch, resumed to 2 from its checkpoint;
4. that GPU checkpoint loaded on the CPU (``load_data_and_model`` with the CPU chosen);
5. DreamRec's evaluation timed with the paper's chain (S = 500 reverse steps) and S = 50;
6. host synchronisations of one training step of AsarRec, DreamRec and DiffRec, counted with
   ``torch.cuda.set_sync_debug_mode("warn")``.

Without a GPU it prints one line saying so and exits 0, so it can sit in any script.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
import warnings

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

MODELS = (("SASRec", {"train_mode": "sequence"}), ("DiffRec", {}), ("DreamRec", {}), ("ADARec", {}),
          ("ADARecReleased", {}), ("AsarRec", {}))
COMMON = {"epochs": 2, "hidden_size": 64, "show_progress": False, "state": "WARNING", "gpu_id": "0", "eval_step": 1}
SYNC_MODELS = ("AsarRec", "DreamRec", "DiffRec")


def build_parser():
    parser = argparse.ArgumentParser(prog="benchmarks/gpu_smoke.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--skip_tests", action="store_true", help="skip the CUDA test cases")
    parser.add_argument("--cpu", action="store_true",
                        help="rehearse every step on the CPU (where no GPU is: checks the script itself; no sync count)")
    return parser


def line(text):
    print(text, flush=True)


def train(model, work, **settings):
    from recbole_diffusion.quick_start import run

    result = run(model=model, dataset="ml-100k", config_dict={**COMMON, "checkpoint_dir": os.path.join(work, "saved"), **settings},
                 verbose=False)
    epoch = sum(result["epoch_seconds"]) / max(len(result["epoch_seconds"]), 1)
    evaluation = result["eval_seconds"][-1] if result["eval_seconds"] else float("nan")
    line(f"| {model} | {result['ranks'][0]['device']} | {epoch:.1f} | {evaluation:.1f} | {result['test_result']['ndcg@10']:.4f} |")
    return result


def count_syncs(model_name, work):
    """Host synchronisations in one training step of ``model_name`` (warnings of the sync debug mode)."""
    import torch

    from recbole_diffusion.config import Config
    from recbole_diffusion.quick_start import build_model
    from recbole_diffusion.utils import create_dataset, data_preparation

    config = Config(model=model_name, dataset="ml-100k", config_dict={**COMMON, "checkpoint_dir": os.path.join(work, "saved")})
    train_data, _, _ = data_preparation(config, create_dataset(config))
    model = build_model(config, train_data)
    batch = next(iter(train_data)).to(config["device"])
    model.calculate_loss(batch)  # warm-up: first-use allocations are not the step's
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            loss = model.calculate_loss(batch)
            loss = loss[0] if isinstance(loss, tuple) else loss
            loss.backward()
    finally:
        torch.cuda.set_sync_debug_mode(0)
    syncs = [w for w in caught if "synchroniz" in str(w.message)]
    line(f"| {model_name} | {len(syncs)} |")


def main(argv=None):
    args = build_parser().parse_args(argv)
    import torch

    if args.cpu:
        COMMON["gpu_id"] = ""
        line(f"gpu_smoke: a rehearsal on the CPU, torch {torch.__version__}")
    elif not torch.cuda.is_available():
        line("gpu_smoke: no CUDA device here (torch.cuda.is_available() is False); nothing to check")
        return 0
    else:
        line(f"gpu_smoke: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    sync = torch.cuda.synchronize if not args.cpu else (lambda: None)
    status = 0
    if not args.skip_tests and not args.cpu:
        tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "cuda", "tests"], cwd=REPO)
        line(f"CUDA test cases: exit code {tests.returncode}")
        status = status or int(tests.returncode not in (0, 5))
    with tempfile.TemporaryDirectory() as work:
        os.chdir(work)  # RecBole's log folders
        line("\n| model | device | s/epoch | eval s | test NDCG@10 |\n|---|---|---:|---:|---:|")
        for model, settings in MODELS:
            train(model, work, **settings)

        from benchmarks import common as bench
        from recbole_diffusion.config import Config
        from recbole_diffusion.quick_start import build_model, restore_model, run
        from recbole_diffusion.utils import create_dataset, data_preparation, get_trainer

        first = run(model="SASRec", dataset="ml-100k", verbose=False,
                    config_dict={**COMMON, "epochs": 1, "train_mode": "sequence", "checkpoint_dir": os.path.join(work, "resume")})
        resumed = run(model="SASRec", dataset="ml-100k", verbose=False, resume_file=first["saved_model_file"],
                      config_dict={**COMMON, "train_mode": "sequence", "checkpoint_dir": os.path.join(work, "resume")})
        line(f"\nresume: 1 epoch, then resumed to 2: {len(resumed['epoch_seconds'])} epoch run after the checkpoint, "
             f"test NDCG@10 {resumed['test_result']['ndcg@10']:.4f}")
        checkpoint, stored = bench.read_checkpoint(resumed["saved_model_file"])  # read on the CPU
        config = bench.checkpoint_config(stored, gpu_id="")  # the CPU: RecBole picks the device by gpu_id
        train_data, _, test_data = data_preparation(config, create_dataset(config))
        model = restore_model(config, train_data, checkpoint)
        line(f"its checkpoint loaded on the CPU: parameters on {next(model.parameters()).device}")

        line("\n| DreamRec evaluation | s |\n|---|---:|")
        for steps in (None, 50):
            config = Config(model="DreamRec", dataset="ml-100k", config_dict={**COMMON, "n_sample_steps": steps})
            train_data, valid_data, _ = data_preparation(config, create_dataset(config))
            trainer = get_trainer(config["MODEL_TYPE"], "DreamRec")(config, build_model(config, train_data))
            start = time.perf_counter()
            trainer.evaluate(valid_data, load_best_model=False)
            sync()
            line(f"| S = {steps or 'T (500)'} | {time.perf_counter() - start:.1f} |")

        if not args.cpu:
            line("\n| one training step | host syncs |\n|---|---:|")
            for name in SYNC_MODELS:
                count_syncs(name, work)
    return status


if __name__ == "__main__":
    sys.exit(main())
