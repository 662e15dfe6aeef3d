#!/usr/bin/env python3
"""The b3 batch-size experiment in PyTorch + torchvision, beside `b3 sweep`.

Same experiment, same report schema: torchvision's mobilenet_v3_large with a
10-class head, CIFAR-10 (binary files) or synthetic images, Resize ->
RandomCrop (train) / CenterCrop (eval) done on the training device from the
uint8 batch, Adam lr 5e-4, drop_last, validation after each epoch, the test set
at the end. Each batch size runs --repeats times, interleaved round-robin
(repeat r of every size before repeat r+1), with an optional cool-down, and
repeat r uses seed + r - 1. Per batch size: mean and sample std of train time,
images/s, inference time and accuracy, throughput relative to the best, and
Welch's t-test against the best and the next smaller size -- the formulas of
experiment/report.cpp, so the numbers mean the same.

PyTorch settings: eager by default; --format nhwc (channels_last, default) or
nchw; on CUDA autocast f16 with a GradScaler (--no-amp for f32) and
cudnn.benchmark; --compile wraps the model in torch.compile (PyTorch 2).
On the CPU it runs with Debian's torch 1.13 (/usr/bin/python3), f32, with the
same scaled-down defaults as b3 sweep (32x32, 10,000 training images, 1,000
validation and 1,000 test images).

Writes into --out: results.json (schema "b3-sweep/1", tool "pytorch"),
results.csv, runs.csv and results.md. Compare with
    b3 sweep ... --compare <out>/results.json
"""
import argparse
import contextlib
import csv
import datetime
import io
import json
import math
import os
import random
import sys
import threading
import time

SIGNIFICANCE_RULE = (
    "A difference is called larger than the run-to-run spread when Welch's two-sided t-test "
    "(unequal variances, Welch-Satterthwaite degrees of freedom) on the per-run values gives "
    "p < 0.05. With few runs the test has little power: \"no\" means \"not shown\", not "
    "\"equal\". Each comparison is tested on its own (no multiple-comparison correction).")


# --- Statistics: the same formulas as experiment/report.cpp -------------------

def summarize(values):
    values = list(values)
    s = {"count": len(values), "mean": None, "std": None, "min": None, "max": None}
    if not values:
        return s
    mean = sum(values) / len(values)
    s.update(mean=mean, min=min(values), max=max(values))
    if len(values) >= 2:
        s["std"] = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    return s


def _beta_continued_fraction(a, b, x):
    tiny, eps = 1e-300, 1e-15

    def guard(v):
        return tiny if abs(v) < tiny else v

    c = 1.0
    d = 1.0 / guard(1.0 - (a + b) * x / (a + 1.0))
    h = d
    for m in range(1, 10001):
        even = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))
        d = 1.0 / guard(1.0 + even * d)
        c = guard(1.0 + even / c)
        h *= d * c
        odd = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))
        d = 1.0 / guard(1.0 + odd * d)
        c = guard(1.0 + odd / c)
        step = d * c
        h *= step
        if abs(step - 1.0) < eps:
            return h
    raise RuntimeError("incomplete beta: no convergence")


def regularized_incomplete_beta(a, b, x):
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_prefactor = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x)
                     + b * math.log1p(-x))
    prefactor = math.exp(log_prefactor)
    if x < (a + 1.0) / (a + b + 2.0):
        return prefactor * _beta_continued_fraction(a, b, x) / a
    return 1.0 - prefactor * _beta_continued_fraction(b, a, 1.0 - x) / b


def student_t_two_sided_p(t, df):
    if math.isinf(t):
        return 0.0
    return regularized_incomplete_beta(df / 2.0, 0.5, df / (df + t * t))


def compare(a, b):
    """Welch's test of summary a against summary b, as report::compare."""
    out = {"relative_difference": None, "t": None, "df": None, "p_value": None,
           "significant": False, "verdict": "n/a (needs >= 2 runs each)"}
    if a["count"] and b["count"] and b["mean"]:
        out["relative_difference"] = a["mean"] / b["mean"] - 1.0
    if a["count"] < 2 or b["count"] < 2:
        return out
    va = a["std"] ** 2 / a["count"]
    vb = b["std"] ** 2 / b["count"]
    se2 = va + vb
    diff = a["mean"] - b["mean"]
    if se2 == 0.0:
        p = 1.0 if diff == 0.0 else 0.0
        out.update(t=None, df=float(a["count"] + b["count"] - 2), p_value=p)
    else:
        t = diff / math.sqrt(se2)
        df = se2 * se2 / (va * va / (a["count"] - 1) + vb * vb / (b["count"] - 1))
        p = student_t_two_sided_p(t, df)
        out.update(t=t, df=df, p_value=p)
    out["significant"] = p < 0.05
    out["verdict"] = "%s (p=%.3g)" % ("yes" if out["significant"] else "no", p)
    return out


def size_category(v):
    if v > 0 and v & (v - 1) == 0:
        return "power of two"
    return "multiple of 8" if v % 8 == 0 else "other"


def parse_size_list(text):
    """'7,8,9', '120-136', '100-200:8' -> sizes, with the errors b3 gives."""
    if not text.strip():
        raise ValueError("--batch-sizes: the list is empty (give sizes like 127,128,129)")
    sizes = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            raise ValueError("--batch-sizes: empty item in '%s'" % text)
        step = 1
        if ":" in item:
            item, step_text = item.split(":", 1)
            step = int(step_text)
            if step <= 0:
                raise ValueError("--batch-sizes: the step after ':' must be positive")
        if "-" in item[1:]:
            low, high = item.split("-", 1) if not item.startswith("-") else (item, item)
            first, last = int(low), int(high)
        else:
            first = last = int(item)
        if first <= 0:
            raise ValueError("--batch-sizes: sizes must be positive, got %d" % first)
        if last < first:
            raise ValueError("--batch-sizes: '%s' is a reversed range" % item)
        for v in range(first, last + 1, step):
            if v in sizes:
                raise ValueError("--batch-sizes: %d is listed twice" % v)
            sizes.append(v)
    return sizes


# --- Data ---------------------------------------------------------------------

def load_data(args, torch):
    """Returns (train_x, train_y, val_x, val_y, test_x, test_y, description): uint8 NCHW."""
    if args.data == "synthetic":
        gen = torch.Generator().manual_seed(args.seed)
        files, tests = 50000, 10000
        description = ("SYNTHETIC data (torch.randint, seed %d, not CIFAR-10): %d train / %d test "
                       "images of 32x32x3, 10 classes" % (args.seed, files, tests))
        # Only the images a run reads are made (memory): the split indices below.
        need_train = files
        train_x = None
        train_y = torch.arange(files) % 10
        test_y = torch.arange(tests) % 10
        test_count = tests if not args.test_limit else min(tests, args.test_limit)
        test_x = torch.randint(0, 256, (test_count, 3, 32, 32), generator=gen, dtype=torch.uint8)
        test_y = test_y[:test_count]

        def make_images(count):
            return torch.randint(0, 256, (count, 3, 32, 32), generator=gen, dtype=torch.uint8)
    else:
        import numpy as np
        folder = args.data
        if os.path.isdir(os.path.join(folder, "cifar-10-batches-bin")):
            folder = os.path.join(folder, "cifar-10-batches-bin")

        def read(names):
            records = []
            for name in names:
                path = os.path.join(folder, name)
                if not os.path.exists(path):
                    sys.exit("pytorch_b3.py: %s is missing (need CIFAR-10 binary files)" % path)
                records.append(np.fromfile(path, dtype=np.uint8).reshape(-1, 3073))
            r = np.concatenate(records)
            return (torch.from_numpy(r[:, 1:].reshape(-1, 3, 32, 32).copy()),
                    torch.from_numpy(r[:, 0].astype(np.int64)))

        train_x, train_y = read(["data_batch_%d.bin" % i for i in range(1, 6)])
        test_x, test_y = read(["test_batch.bin"])
        if args.test_limit:
            test_x, test_y = test_x[:args.test_limit], test_y[:args.test_limit]
        need_train = train_x.shape[0]
        description = "CIFAR-10 binary files in %s" % folder
        make_images = None
    # Seeded split: validation = the last validation_size of a permutation.
    perm = torch.randperm(need_train, generator=torch.Generator().manual_seed(args.seed))
    val_idx = perm[need_train - args.validation_size:] if args.validation_size else perm[:0]
    train_idx = perm[:need_train - args.validation_size]
    if args.train_limit:
        train_idx = train_idx[:args.train_limit]
    if train_x is None:  # synthetic: make exactly the images used
        tx, vx = make_images(len(train_idx)), make_images(len(val_idx))
    else:
        tx, vx = train_x[train_idx], train_x[val_idx]
    description += "; split (seed %d) into %d train / %d validation" % (
        args.seed, need_train - args.validation_size, args.validation_size)
    if args.train_limit:
        description += "; training limited to the first %d" % args.train_limit
    if args.test_limit:
        description += "; test limited to the first %d" % args.test_limit
    return tx, train_y[train_idx], vx, train_y[val_idx], test_x, test_y, description


def transform(x_uint8, image_size, train, generator, torch, F, memory_format):
    """Resize (bilinear, rounded to uint8 levels) -> random/center crop -> [0, 1]."""
    x = x_uint8.float()
    size = x.shape[-1]
    if image_size != size:
        resize = round(image_size * 256 / 224)
        x = F.interpolate(x, size=(resize, resize), mode="bilinear", align_corners=False)
        x = x.round().clamp_(0, 255)
        n = x.shape[0]
        if train:
            # One crop offset per image (RandomCrop per sample), by gathering.
            top = torch.randint(0, resize - image_size + 1, (n,), generator=generator)
            left = torch.randint(0, resize - image_size + 1, (n,), generator=generator)
            top, left = top.to(x.device), left.to(x.device)
            span = torch.arange(image_size, device=x.device)
            rows = (top[:, None] + span)[:, :, None]
            cols = (left[:, None] + span)[:, None, :]
            batch = torch.arange(n, device=x.device)[:, None, None]
            x = x.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)
        else:
            offset = int(round((resize - image_size) / 2.0))
            x = x[:, :, offset:offset + image_size, offset:offset + image_size]
    return (x / 255.0).contiguous(memory_format=memory_format)


# --- GPU sampling (optional: pynvml) --------------------------------------------

class GpuSampler:
    def __init__(self, index):
        import pynvml
        self.nvml = pynvml
        pynvml.nvmlInit()
        self.handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        self.samples = []
        self.stop_event = threading.Event()
        self.thread = None

    def _loop(self):
        while True:
            n = self.nvml
            try:
                self.samples.append((
                    n.nvmlDeviceGetClockInfo(self.handle, n.NVML_CLOCK_SM),
                    n.nvmlDeviceGetTemperature(self.handle, n.NVML_TEMPERATURE_GPU),
                    n.nvmlDeviceGetPowerUsage(self.handle) / 1000.0))
            except Exception:  # a failed reading is skipped, as in b3
                pass
            if self.stop_event.wait(0.2):
                return

    def start(self):
        self.samples, self.stop_event = [], threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def stop(self):
        self.stop_event.set()
        self.thread.join()
        if not self.samples:
            return None
        clocks = [s[0] for s in self.samples]
        return {"samples": len(self.samples),
                "clock_mean_mhz": sum(clocks) / len(clocks),
                "clock_min_mhz": min(clocks), "clock_max_mhz": max(clocks),
                "temperature_mean_c": sum(s[1] for s in self.samples) / len(self.samples),
                "temperature_max_c": max(s[1] for s in self.samples),
                "power_mean_w": sum(s[2] for s in self.samples) / len(self.samples),
                "power_max_w": max(s[2] for s in self.samples),
                "throttle_reasons": "not read"}


# --- One run --------------------------------------------------------------------

def run_once(args, torch, F, torchvision, data, batch_size, seed, steps, epochs, evaluate,
             device, amp, memory_format):
    train_x, train_y, val_x, val_y, test_x, test_y = data
    torch.manual_seed(seed)
    model = torchvision.models.mobilenet_v3_large(num_classes=10).to(device)
    model = model.to(memory_format=memory_format)
    if args.compile:
        model = torch.compile(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    scaler = torch.cuda.amp.GradScaler(enabled=amp)
    generator = torch.Generator().manual_seed(seed + 1)
    n = train_x.shape[0]
    per_epoch = n // batch_size
    done, images, train_seconds = 0, 0, 0.0
    val_acc = None

    def autocast():
        # f16 mixed precision on CUDA (torch.cuda.amp); nothing on the CPU.
        if amp:
            return torch.autocast("cuda", dtype=torch.float16)
        return contextlib.nullcontext()

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def evaluate_set(xs, ys):
        model.eval()
        correct, start = 0, time.perf_counter()
        with torch.no_grad():
            for i in range(0, xs.shape[0], args.eval_batch_size):
                x = transform(xs[i:i + args.eval_batch_size].to(device), args.image_size, False,
                              None, torch, F, memory_format)
                with autocast():
                    logits = model(x)
                correct += (logits.argmax(1).cpu() == ys[i:i + args.eval_batch_size]).sum().item()
        sync()
        return correct / max(1, xs.shape[0]), time.perf_counter() - start, xs.shape[0]

    def recalibrate_batchnorm(batches):
        # As b3's recalibrate_batchnorm: running statistics reset, then their
        # plain average (momentum None) over the first `batches` training
        # batches of epoch 0's order, BatchNorm alone in training mode.
        model.eval()
        norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None
            m.train()
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 1))
        with torch.no_grad():
            for b in range(min(batches, per_epoch)):
                idx = order[b * batch_size:(b + 1) * batch_size]
                x = transform(train_x[idx].to(device), args.image_size, True, generator, torch, F,
                              memory_format)
                with autocast():
                    model(x)
        model.eval()

    for epoch in range(epochs):
        model.train()
        order = torch.randperm(n, generator=generator)
        sync()
        start = time.perf_counter()
        for b in range(per_epoch):
            if steps and done >= steps:
                break
            idx = order[b * batch_size:(b + 1) * batch_size]
            x = transform(train_x[idx].to(device, non_blocking=True), args.image_size, True,
                          generator, torch, F, memory_format)
            y = train_y[idx].to(device, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            with autocast():
                loss = F.cross_entropy(model(x), y)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            done += 1
            images += batch_size
        sync()
        train_seconds += time.perf_counter() - start
        if evaluate and not args.no_validation and val_x.shape[0]:
            val_acc = evaluate_set(val_x, val_y)[0]
        if steps and done >= steps:
            break
    result = {"steps": done, "images": images, "train_seconds": train_seconds,
              "images_per_second": images / train_seconds if train_seconds > 0 else 0.0,
              "validation_accuracy": val_acc, "test_accuracy": None, "test_seconds": None,
              "test_images": 0, "test_accuracy_recalibrated": None}
    if evaluate and not args.no_test:
        acc, seconds, count = evaluate_set(test_x, test_y)
        result.update(test_accuracy=acc, test_seconds=seconds, test_images=count)
        if args.bn_recalibrate > 0:
            recalibrate_batchnorm(args.bn_recalibrate)
            result["test_accuracy_recalibrated"] = evaluate_set(test_x, test_y)[0]
    return result


# --- Reports ----------------------------------------------------------------------

def fmt(s, digits):
    if not s["count"]:
        return "n/a"
    if s["std"] is None:
        return "%.*f ± n/a" % (digits, s["mean"])
    return "%.*f ± %.*f" % (digits, s["mean"], digits, s["std"])


def summarize_runs(runs, batch_sizes):
    rows = []
    for b in sorted(batch_sizes):
        mine = [r for r in runs if r["batch_size"] == b]

        def pick(key, scale=1.0):
            return summarize([r[key] * scale for r in mine if r[key] is not None])

        rows.append({"batch_size": b, "category": size_category(b), "runs": len(mine),
                     "train_seconds": pick("train_seconds"),
                     "images_per_second": pick("images_per_second"),
                     "inference_seconds": pick("test_seconds"),
                     "test_accuracy_percent": pick("test_accuracy", 100.0),
                     "validation_accuracy_percent": pick("validation_accuracy", 100.0),
                     "test_accuracy_recalibrated_percent": pick("test_accuracy_recalibrated",
                                                                100.0)})
    best = max(rows, key=lambda r: r["images_per_second"]["mean"])
    for i, r in enumerate(rows):
        r["relative_throughput"] = r["images_per_second"]["mean"] / best["images_per_second"]["mean"]
        r["vs_best"] = compare(r["images_per_second"], best["images_per_second"])
        if r is best:
            r["vs_best"]["verdict"] = "(best)"
        r["vs_previous"] = compare(r["images_per_second"], rows[i - 1]["images_per_second"]) \
            if i > 0 else None
        r["previous_batch_size"] = rows[i - 1]["batch_size"] if i > 0 else None
    return rows, best["batch_size"]


def write_reports(out, config, runs, rows, best_batch, tool_version):
    os.makedirs(out, exist_ok=True)
    result = {"schema": "b3-sweep/1", "tool": "pytorch", "tool_version": tool_version,
              "created": datetime.datetime.utcnow().strftime("%Y-%m-%dT%H:%M:%SZ"),
              "config": config, "significance_rule": SIGNIFICANCE_RULE,
              "best_batch_size": best_batch, "runs": runs, "summary": rows}

    def write(name, text):
        tmp = os.path.join(out, name + ".tmp")
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, os.path.join(out, name))

    write("results.json", json.dumps(result, indent=2) + "\n")

    def n(v):
        return "" if v is None else "%.6g" % v

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["batch_size", "category", "runs", "train_seconds_mean", "train_seconds_std",
                "images_per_second_mean", "images_per_second_std", "relative_throughput",
                "p_vs_best", "significant_vs_best", "inference_seconds_mean",
                "inference_seconds_std", "test_accuracy_mean", "test_accuracy_std",
                "validation_accuracy_mean", "validation_accuracy_std",
                "test_accuracy_recalibrated_mean", "test_accuracy_recalibrated_std"])
    for r in rows:
        w.writerow([r["batch_size"], r["category"], r["runs"], n(r["train_seconds"]["mean"]),
                    n(r["train_seconds"]["std"]), n(r["images_per_second"]["mean"]),
                    n(r["images_per_second"]["std"]), n(r["relative_throughput"]),
                    n(r["vs_best"]["p_value"]), "yes" if r["vs_best"]["significant"] else "no",
                    n(r["inference_seconds"]["mean"]), n(r["inference_seconds"]["std"]),
                    n(r["test_accuracy_percent"]["mean"]), n(r["test_accuracy_percent"]["std"]),
                    n(r["validation_accuracy_percent"]["mean"]),
                    n(r["validation_accuracy_percent"]["std"]),
                    n(r["test_accuracy_recalibrated_percent"]["mean"]),
                    n(r["test_accuracy_recalibrated_percent"]["std"])])
    write("results.csv", buf.getvalue())

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["order", "batch_size", "repeat", "seed", "started", "steps", "images",
                "train_seconds", "images_per_second", "validation_accuracy", "test_accuracy",
                "test_seconds", "gpu_samples", "sm_clock_mean_mhz", "sm_clock_min_mhz",
                "temperature_max_c", "power_mean_w", "throttle_reasons",
                "test_accuracy_recalibrated"])
    for r in runs:
        g = r["gpu"] or {}
        w.writerow([r["order"], r["batch_size"], r["repeat"], r["seed"], r["started"],
                    r["steps"], r["images"], "%.6f" % r["train_seconds"],
                    "%.4f" % r["images_per_second"], n(r["validation_accuracy"]),
                    n(r["test_accuracy"]), n(r["test_seconds"]), g.get("samples", ""),
                    n(g.get("clock_mean_mhz")), n(g.get("clock_min_mhz")),
                    n(g.get("temperature_max_c")), n(g.get("power_mean_w")),
                    g.get("throttle_reasons", ""), n(r["test_accuracy_recalibrated"])])
    write("runs.csv", buf.getvalue())

    md = ["# pytorch_b3.py: batch size vs training speed (PyTorch)", "",
          "- device: %s (%s)" % (config["device"], config["device_name"]),
          "- dtype: %s; layout: %s; model: %s, Adam lr %g; %s%s" % (
              config["dtype"], config["layout"], config["model"], config["lr"], tool_version,
              ", torch.compile" if config.get("compile") else ", eager"),
          "- data: %s; images %dx%d" % (config["data"], config["image_size"], config["image_size"]),
          "- runs: %d per batch size, interleaved round-robin; repeat r uses seed %d+r-1" % (
              config["repeats"], config["seed"]), "",
          "| batch | kind | runs | train time (s) | images/s | relative to best | beyond spread "
          "vs best | inference (s) | test accuracy (%) |",
          "|---:|---|---:|---:|---:|---:|---|---:|---:|"]
    for r in rows:
        md.append("| %d | %s | %d | %s | %s | %.3f | %s | %s | %s |" % (
            r["batch_size"], r["category"], r["runs"], fmt(r["train_seconds"], 3),
            fmt(r["images_per_second"], 1), r["relative_throughput"], r["vs_best"]["verdict"],
            fmt(r["inference_seconds"], 3), fmt(r["test_accuracy_percent"], 2)))
    md += ["", SIGNIFICANCE_RULE, ""]
    write("results.md", "\n".join(md) + "\n")
    return "\n".join(md)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--data", default="synthetic",
                        help="'synthetic' or a folder with CIFAR-10 binary files")
    parser.add_argument("--batch-sizes", default="100,127,128,129,156,511,512,513")
    parser.add_argument("--repeats", type=int, default=3)
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=int, help="epochs per run (10; CPU: 1)")
    length.add_argument("--steps", type=int, help="optimizer steps per run instead of epochs")
    parser.add_argument("--image-size", type=int, help="224; CPU: 32")
    parser.add_argument("--train-limit", type=int, help="first N training images (CPU: 10000)")
    parser.add_argument("--validation-size", type=int, help="5000; CPU: 1000")
    parser.add_argument("--test-limit", type=int, help="first N test images (CPU: 1000)")
    parser.add_argument("--no-validation", action="store_true")
    parser.add_argument("--no-test", action="store_true")
    parser.add_argument("--eval-batch-size", type=int, default=256)
    parser.add_argument("--bn-recalibrate", type=int, default=0,
                        help="after the test, BatchNorm statistics over N training batches, "
                             "then the test again")
    parser.add_argument("--cooldown", type=float, default=0.0)
    parser.add_argument("--warmup-steps", type=int, default=2)
    parser.add_argument("--shuffle", action="store_true")
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--format", default="nhwc", choices=["nchw", "nhwc"])
    parser.add_argument("--no-amp", action="store_true", help="CUDA: f32 instead of autocast f16")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (CPU)")
    parser.add_argument("--out", default="pytorch-results")
    args = parser.parse_args()

    try:
        batch_sizes = parse_size_list(args.batch_sizes)
    except ValueError as e:
        parser.error(str(e))
    if args.repeats < 1:
        parser.error("--repeats must be at least 1, got %d" % args.repeats)
    for name in ("epochs", "steps"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error("--%s must be at least 1" % name)

    import torch
    import torch.nn.functional as F
    import torchvision
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("pytorch_b3.py: --device cuda, but torch.cuda.is_available() is False")
    if args.compile and not hasattr(torch, "compile"):
        sys.exit("pytorch_b3.py: --compile needs PyTorch 2 (this is %s)" % torch.__version__)
    if args.threads:
        torch.set_num_threads(args.threads)
    cpu = args.device == "cpu"
    # b3 sweep's CPU-sized defaults, so that the two sides run the same work.
    if args.image_size is None:
        args.image_size = 32 if cpu else 224
    if args.epochs is None:
        args.epochs = 1 if cpu else 10
    if args.train_limit is None:
        args.train_limit = 10000 if cpu else 0
    if args.validation_size is None:
        args.validation_size = 1000 if cpu else 5000
    if args.test_limit is None:
        args.test_limit = 1000 if cpu else 0

    device = torch.device(args.device)
    amp = device.type == "cuda" and not args.no_amp
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        device_name = torch.cuda.get_device_name(0)
    else:
        import platform
        name = platform.processor() or "cpu"
        try:
            with open("/proc/cpuinfo") as f:
                name = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
        except (OSError, StopIteration):
            pass
        threads = torch.get_num_threads()
        device_name = "%s, %d thread%s" % (name, threads, "" if threads == 1 else "s")
    memory_format = torch.channels_last if args.format == "nhwc" else torch.contiguous_format
    dtype = "f16 mixed (autocast + GradScaler)" if amp else "f32"
    tool_version = "torch %s, torchvision %s" % (torch.__version__, torchvision.__version__)

    *data, description = load_data(args, torch)
    train_size = data[0].shape[0]
    for b in batch_sizes:
        if b > train_size:
            sys.exit("pytorch_b3.py: --batch-sizes: batch size %d cannot fit: only %d training "
                     "images" % (b, train_size))
    if device.type == "cuda":  # the whole (uint8) set lives on the GPU, as b3 does its transforms
        data = [t.to(device) if i % 2 == 0 else t for i, t in enumerate(data)]

    sampler, gpu_note = None, "not sampled (CPU run)"
    if device.type == "cuda":
        try:
            sampler = GpuSampler(0)
            gpu_note = "sampled by pynvml every 200 ms during each run"
        except Exception as e:  # pynvml missing or NVML failing: say so
            gpu_note = "not sampled: pynvml unavailable (%s)" % e

    def epochs_for(b):
        if not args.steps:
            return args.epochs
        per_epoch = max(1, train_size // b)
        return max(1, -(-args.steps // per_epoch))

    if args.warmup_steps:
        print("warm-up: %d steps at batch %d (discarded)" % (args.warmup_steps, batch_sizes[0]))
        run_once(args, torch, F, torchvision, data, batch_sizes[0], args.seed, args.warmup_steps,
                 epochs_for(batch_sizes[0]), False, device, amp, memory_format)

    runs = []
    order_rng = random.Random(args.seed)
    total = args.repeats * len(batch_sizes)
    for repeat in range(1, args.repeats + 1):
        round_sizes = list(batch_sizes)
        if args.shuffle:
            order_rng.shuffle(round_sizes)
        for b in round_sizes:
            if runs and args.cooldown > 0:
                time.sleep(args.cooldown)
            seed = args.seed + repeat - 1
            started = datetime.datetime.utcnow().strftime("%Y-%m-%dT%H:%M:%SZ")
            if sampler:
                sampler.start()
            r = run_once(args, torch, F, torchvision, data, b, seed, args.steps or 0,
                         epochs_for(b), True, device, amp, memory_format)
            r.update(order=len(runs) + 1, batch_size=b, global_batch_size=b, repeat=repeat,
                     seed=seed, started=started, gpu=sampler.stop() if sampler else None)
            runs.append(r)
            print("[%d/%d] batch %d, repeat %d/%d: %d steps, %.3f s, %.1f img/s%s" % (
                r["order"], total, b, repeat, args.repeats, r["steps"], r["train_seconds"],
                r["images_per_second"],
                "" if r["test_accuracy"] is None else ", test acc %.2f%% (%.2f s)" % (
                    100 * r["test_accuracy"], r["test_seconds"])), flush=True)

    rows, best = summarize_runs(runs, batch_sizes)
    config = {"device": args.device, "device_name": device_name, "dtype": dtype,
              "layout": args.format, "model": "mobilenet_v3_large",
              "parameters": sum(p.numel() for p in
                                torchvision.models.mobilenet_v3_large(num_classes=10).parameters()),
              "image_size": args.image_size, "data": description,
              "epochs": None if args.steps else args.epochs, "steps": args.steps or 0,
              "train_limit": args.train_limit, "validation_size": args.validation_size,
              "validation": not args.no_validation, "test": not args.no_test,
              "test_limit": args.test_limit, "bn_recalibrate_batches": args.bn_recalibrate,
              "optimizer": "adam", "lr": args.lr,
              "seed": args.seed, "seed_rule": "repeat r (1-based) uses seed + r - 1",
              "batch_sizes": batch_sizes, "world_size": 1, "batch_sizes_are": "per step",
              "repeats": args.repeats,
              "order": "round-robin, shuffled within each round" if args.shuffle else "round-robin",
              "cooldown_seconds": args.cooldown, "warmup_steps": args.warmup_steps,
              "gpu_sampling": gpu_note, "compile": args.compile, "cudnn_benchmark": not cpu}
    print()
    print(write_reports(args.out, config, runs, rows, best, tool_version))
    print("wrote %s/results.json, results.csv, runs.csv, results.md" % args.out)


if __name__ == "__main__":
    main()
