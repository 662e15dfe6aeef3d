#!/usr/bin/env python3
"""PyTorch's side of `b3 bench-step`: the same training step, timed the same way.

One step = forward of torchvision's mobilenet_v3_large (10 classes, train mode),
cross-entropy, backward, SGD step (lr 0.01, momentum 0.9), zero_grad, on a
fixed synthetic batch in memory. Warm-up steps first, then N timed steps; the
median img/s is the figure. Memory is measured as b3 measures it: the peak
resident set (getrusage ru_maxrss) and the resident set once the model,
optimizer and batch exist; (peak - before) / batch is the step memory per image.

With --mode eval it is PyTorch's side of `b3 bench-infer` instead: the
forward pass alone, model.eval() under torch.inference_mode(), timed the same
way (median img/s over the timed forwards; memory per image likewise).

The memory allocator (glibc's malloc, or TCMalloc / jemalloc through
LD_PRELOAD) and the BLAS library the process loaded are read from
/proc/self/maps and printed: both change PyTorch's speed several-fold (see
experiment/pytorch_allocator.sh), so a figure without them means little.

The last line, starting with RESULT, is for experiment/compare_cpu.sh.
"""
import argparse
import resource
import statistics
import time


def current_rss_mib():
    with open("/proc/self/statm") as f:
        resident_pages = int(f.read().split()[1])
    return resident_pages * 4096 / (1024 * 1024)


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def loaded_libraries():
    """The file names of the shared libraries mapped into this process."""
    paths = set()
    with open("/proc/self/maps") as f:
        for line in f:
            fields = line.split()
            if len(fields) >= 6 and ".so" in fields[5]:
                paths.add(fields[5])
    return paths


def allocator_and_blas():
    """("tcmalloc" | "jemalloc" | "glibc", the BLAS: "openblas-pthread", "reference", ...)."""
    paths = loaded_libraries()
    names = [p.rsplit("/", 1)[-1] for p in paths]
    if any(n.startswith("libtcmalloc") for n in names):
        allocator = "tcmalloc"
    elif any(n.startswith("libjemalloc") for n in names):
        allocator = "jemalloc"
    else:
        allocator = "glibc"
    # BLAS calls go to the library behind libblas.so.3 (Debian's alternatives:
    # .../openblas-pthread/libblas.so.3, .../blas/libblas.so.3 for netlib's);
    # a libopenblas mapped beside the reference BLAS may serve LAPACK alone.
    blas = "none"
    for path in sorted(paths):
        name = path.rsplit("/", 1)[-1]
        if name.startswith("libblas.so"):
            folder = path.rsplit("/", 2)[-2]
            return allocator, ("reference" if folder == "blas" else folder)
        if name.startswith(("libopenblas", "libmkl", "libblis")):
            blas = name.split(".")[0][3:]
    return allocator, blas


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mobilenet_v3_large",
                        choices=["mobilenet_v3_large", "mobilenet_v3_small"])
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--format", default="nhwc", choices=["nchw", "nhwc"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mode", default="train", choices=["train", "eval"],
                        help="train: the training step; eval: the evaluation-mode forward")
    args = parser.parse_args()

    import torch
    import torchvision

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    memory_format = torch.channels_last if args.format == "nhwc" else torch.contiguous_format
    model = getattr(torchvision.models, args.model)(num_classes=args.classes)
    model = model.to(memory_format=memory_format).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()
    images = torch.randn(args.batch_size, 3, args.image_size, args.image_size)
    images = images.contiguous(memory_format=memory_format)
    labels = torch.randint(0, args.classes, (args.batch_size,))
    rss_before = current_rss_mib()

    def step():
        optimizer.zero_grad(set_to_none=True)
        logits = model(images)
        loss = loss_fn(logits, labels)
        loss.backward()
        optimizer.step()
        # as b3's train_step: the loss value and the correct count leave the step
        return loss.item(), int((logits.argmax(1) == labels).sum())

    if args.mode == "eval":
        model.eval()

        def step():  # noqa: F811 (the forward alone)
            with torch.inference_mode():
                logits = model(images)
            return float(logits.sum()), 0

    for _ in range(args.warmup):
        step()
    rates, cpu_seconds = [], []
    loss = 0.0
    for _ in range(args.steps):
        start, cpu_start = time.perf_counter(), time.process_time()
        loss, _ = step()
        rates.append(args.batch_size / (time.perf_counter() - start))
        cpu_seconds.append(time.process_time() - cpu_start)
    peak = peak_rss_mib()
    per_image = (peak - rss_before) / args.batch_size
    med = statistics.median(rates)
    what = "sgd" if args.mode == "train" else "eval forward"
    value = "loss" if args.mode == "train" else "sum of the logits"
    print(f"pytorch {torch.__version__} {args.model} {args.image_size}x{args.image_size} batch "
          f"{args.batch_size} {args.format} f32 {what}, {args.threads} threads: median {med:.2f} "
          f"img/s (min {min(rates):.2f}, max {max(rates):.2f}, {args.steps} steps after "
          f"{args.warmup} warm-up; {value} {loss:.6g}); CPU time "
          f"{statistics.median(cpu_seconds):.3f} s per step (median)")
    print(f"memory: peak RSS {peak:.1f} MiB, before the first step {rss_before:.1f} MiB, "
          f"step memory {per_image:.2f} MiB per image")
    allocator, blas = allocator_and_blas()
    print(f"libraries: allocator {allocator}, BLAS {blas}")
    if allocator == "glibc":
        print("  note: glibc's malloc gives every large tensor fresh pages; where page faults are slow"
              " this figure is PyTorch's page faults more than its kernels (LD_PRELOAD TCMalloc, as"
              " experiment/compare_cpu.sh does)")
    if blas == "reference":
        print("  note: the reference BLAS (netlib) is loaded; install libopenblas0-pthread")
    print(f"RESULT framework=pytorch mode={args.mode} format={args.format} image={args.image_size} "
          f"batch={args.batch_size} img_per_s={med:.3f} peak_rss_mib={peak:.1f} "
          f"mib_per_image={per_image:.3f} cpu_s_per_step={statistics.median(cpu_seconds):.4f} "
          f"allocator={allocator} blas={blas}")


if __name__ == "__main__":
    main()
