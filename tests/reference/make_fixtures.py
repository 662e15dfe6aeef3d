#!/usr/bin/env python3
"""PyTorch reference fixtures for b3's parity tests.

Usage: make_fixtures.py OUTDIR
       make_fixtures.py --torchvision-forward ARCH WEIGHTS INPUT OUT
         (the reverse direction: loads a weights file that b3 wrote into
         torchvision's ARCH(num_classes=10) with load_state_dict(strict=True)
         and writes the eval-mode "logits" for INPUT's "input" to OUT)

Writes safetensors files (written here by hand: only python3-torch and
python3-torchvision, Debian's 1.13 / 0.14, are needed) into OUTDIR:

  layers.safetensors              per layer case "<case>.": inputs and parameters
                                  (f32), the upstream gradient, and PyTorch's
                                  outputs, gradients and updated buffers, once in
                                  f64 ("<case>.f64.") and once in f32 ("<case>.f32.")
  <model>_b<N>_<S>.weights        seeded torchvision weights and buffers (f32,
                                  state_dict keys), for b3 parity --weights
  <model>_b<N>_<S>.input          "input" [N, 3, S, S] f32 and "target" [N] i64
  <model>_b<N>_<S>.expected_f32   one training-mode forward (dropout 0), the loss
  <model>_b<N>_<S>.expected_f64   and backward, in f32 / in f64: "logits", "loss",
                                  "grad.<parameter>", "state.<buffer>" (the keys
                                  b3 parity writes)
  optim.expected_f32/_f64         from mobilenet_v3_large_b4_64's weights and
                                  batch: the state_dict after 3 steps of SGD
                                  ("sgd.<key>"), of Adam ("adam.<key>") and of AdamW
                                  ("adamw.<key>", weight decay 0.1), and the
                                  losses of 20 Adam steps ("adam20.losses", f64)

Every file's __metadata__ holds "format_version" (FORMAT_VERSION below; bump it
together with kFixtureFormatVersion in tests/support/fixtures.h when the
layout changes), the torch version and what the file holds. The f64 results
start from the same f32 values, cast, so the f64 run is the "exact" reference
and the f32 run measures PyTorch's own f32 error (rounding, and the chance
branch flips at activation kinks that rounding causes).
Deterministic: fixed seeds, and torch uses one thread.
"""

import copy
import json
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from torchvision.ops import SqueezeExcitation

FORMAT_VERSION = 1

SAFETENSORS_DTYPES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.uint8: "U8",
}

# The model fixtures: (torchvision model, batch, image size).
MODEL_CONFIGS = [
    ("mobilenet_v3_large", 4, 64),
    ("mobilenet_v3_small", 4, 64),
    ("mobilenet_v3_large", 2, 224),
    ("mobilenet_v3_small", 2, 224),
    ("mobilenet_v3_large", 3, 96),  # the size the parity issue measured PyTorch's f32 error at
]
NUM_CLASSES = 10

# The optimizer fixtures (the C++ test reads these from the file's metadata).
OPTIM_CONFIG = "mobilenet_v3_large_b4_64"
SGD = dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3)
ADAM = dict(lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
ADAMW = dict(lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1)
ADAM_LONG_STEPS = 20


def save_safetensors(path, tensors, metadata):
    """Writes `tensors` (name -> tensor, in order) as a safetensors file, atomically."""
    assert sys.byteorder == "little", "safetensors data is little-endian"
    header = {"__metadata__": {k: str(v) for k, v in metadata.items()}}
    blobs = []
    offset = 0
    for name, t in tensors.items():
        t = t.detach().cpu().contiguous()
        data = t.numpy().tobytes()
        header[name] = {
            "dtype": SAFETENSORS_DTYPES[t.dtype],
            "shape": list(t.shape),
            "data_offsets": [offset, offset + len(data)],
        }
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)  # pad the header so the data starts 8-byte aligned
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(len(text).to_bytes(8, "little"))
        f.write(text)
        for data in blobs:
            f.write(data)
    os.replace(tmp, path)


def load_safetensors(path):
    """Reads a safetensors file into {name: tensor} (header order)."""
    torch_dtypes = {v: k for k, v in SAFETENSORS_DTYPES.items()}
    with open(path, "rb") as f:
        header_size = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(header_size))
        data = f.read()
    header.pop("__metadata__", None)
    out = {}
    for name, entry in header.items():
        begin, end = entry["data_offsets"]
        dtype = torch_dtypes[entry["dtype"]]
        if end > begin:
            flat = torch.frombuffer(bytearray(data[begin:end]), dtype=dtype)
        else:
            flat = torch.empty(0, dtype=dtype)
        out[name] = flat.reshape(entry["shape"])
    return out


def torchvision_forward(arch, weights, inputs, out):
    model = getattr(torchvision.models, arch)(num_classes=NUM_CLASSES, dropout=0.0)
    model.load_state_dict(load_safetensors(weights), strict=True)
    model.eval()
    with torch.no_grad():
        logits = model(load_safetensors(inputs)["input"])
    save_safetensors(out, {"logits": logits},
                     metadata(f"torchvision {arch} eval-mode logits on weights written by b3"))


def metadata(what, **extra):
    out = {
        "format_version": FORMAT_VERSION,
        "generator": "tests/reference/make_fixtures.py",
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "contents": what,
    }
    out.update(extra)
    return out


# ----------------------------------------------------------------- layers --


def run_case(module, inputs, grad_seed):
    """Forward + backward of `module` on `inputs` with a seeded upstream gradient.

    Returns (output, {input name: grad}, {param name: grad}, {buffer name: value}, grad_y).
    """
    xs = {name: x.detach().clone().requires_grad_(x.is_floating_point()) for name, x in inputs.items()}
    y = module(*xs.values())
    g = torch.Generator().manual_seed(grad_seed)
    grad_y = torch.randn(y.shape, generator=g, dtype=torch.float32).to(y.dtype)
    (y * grad_y).sum().backward()
    input_grads = {name: x.grad for name, x in xs.items() if x.grad is not None}
    param_grads = {name: p.grad for name, p in module.named_parameters()}
    buffers = {name: b.detach().clone() for name, b in module.named_buffers()}
    return y, input_grads, param_grads, buffers, grad_y


class CrossEntropy(nn.Module):
    def forward(self, logits, target):
        return F.cross_entropy(logits, target)


def layer_cases():
    """(name, module, inputs, training) with f32 parameters and inputs."""
    torch.manual_seed(1234)
    cases = []

    def randn(*shape, scale=1.0):
        return torch.randn(*shape) * scale

    def conv(name, cin, cout, k, stride, groups, bias, x_shape):
        m = nn.Conv2d(cin, cout, k, stride=stride, padding=(k - 1) // 2, groups=groups, bias=bias)
        cases.append((name, m, {"x": randn(*x_shape)}, True))

    conv("conv1x1", 20, 24, 1, 1, 1, True, (3, 20, 7, 9))
    conv("conv3x3", 5, 7, 3, 1, 1, True, (2, 5, 9, 11))
    conv("conv3x3_s2", 3, 16, 3, 2, 1, False, (2, 3, 17, 15))  # MobileNetV3's stem
    conv("dw3x3_s1", 12, 12, 3, 1, 12, False, (2, 12, 9, 10))
    conv("dw3x3_s2", 12, 12, 3, 2, 12, False, (2, 12, 11, 10))
    conv("dw5x5_s1", 12, 12, 5, 1, 12, False, (2, 12, 9, 10))
    conv("dw5x5_s2", 12, 12, 5, 2, 12, False, (2, 12, 11, 10))

    for training in (True, False):
        bn = nn.BatchNorm2d(6, eps=1e-3, momentum=0.01)  # MobileNetV3's settings
        with torch.no_grad():
            bn.weight.copy_(1 + 0.2 * randn(6))
            bn.bias.copy_(0.2 * randn(6))
            bn.running_mean.copy_(0.5 * randn(6))
            bn.running_var.copy_(1 + torch.rand(6))
            bn.num_batches_tracked.fill_(3)
        x = randn(4, 6, 5, 7, scale=2.0) + 1.0
        cases.append(("bn_train" if training else "bn_eval", bn, {"x": x}, training))

    # Scale 4 spreads the inputs over every piece of the hard activations.
    cases.append(("relu", nn.ReLU(), {"x": randn(3, 5, 4, 6, scale=4.0)}, True))
    cases.append(("hardswish", nn.Hardswish(), {"x": randn(3, 5, 4, 6, scale=4.0)}, True))
    cases.append(("hardsigmoid", nn.Hardsigmoid(), {"x": randn(3, 5, 4, 6, scale=4.0)}, True))

    se = SqueezeExcitation(16, 8, scale_activation=nn.Hardsigmoid)  # as MobileNetV3 builds it
    with torch.no_grad():
        se.fc1.bias.copy_(0.3 * randn(8))
        se.fc2.bias.copy_(0.3 * randn(16))
    cases.append(("se", se, {"x": randn(2, 16, 5, 6, scale=2.0)}, True))

    cases.append(("linear", nn.Linear(17, 9), {"x": randn(5, 17)}, True))
    cases.append(("cross_entropy", CrossEntropy(),
                  {"logits": randn(6, 10, scale=3.0), "target": torch.randint(0, 10, (6,))}, True))

    # The same layers at MobileNetV3-Large's sizes (batch 2 at 224x224): sums of
    # thousands of terms, every CPU kernel's blocked and parallel path, no
    # activation kinks (which make f32 comparisons a matter of chance).
    conv("large_stem", 3, 16, 3, 2, 1, False, (2, 3, 224, 224))          # features.0
    conv("large_conv1x1", 24, 72, 1, 1, 1, False, (2, 24, 56, 56))       # features.3 expand
    conv("large_dw3x3_s1", 72, 72, 3, 1, 72, False, (2, 72, 56, 56))     # features.3 depthwise
    conv("large_dw5x5_s2", 72, 72, 5, 2, 72, False, (2, 72, 56, 56))     # features.4 depthwise
    conv("large_dw5x5_s1", 120, 120, 5, 1, 120, False, (2, 120, 28, 28))  # features.5 depthwise
    bn = nn.BatchNorm2d(16, eps=1e-3, momentum=0.01)
    with torch.no_grad():
        bn.weight.copy_(1 + 0.2 * randn(16))
        bn.bias.copy_(0.2 * randn(16))
    cases.append(("large_bn_train", bn, {"x": randn(2, 16, 112, 112, scale=2.0) + 1.0}, True))
    se = SqueezeExcitation(120, 32, scale_activation=nn.Hardsigmoid)  # features.5's
    cases.append(("large_se", se, {"x": randn(2, 120, 28, 28)}, True))
    cases.append(("large_linear", nn.Linear(960, 1280), {"x": randn(2, 960)}, True))  # classifier.0
    return cases


def make_layers(outdir):
    out = {}
    for index, (name, module, inputs, training) in enumerate(layer_cases()):
        module.train(training)
        for key, x in inputs.items():
            out[f"{name}.{key}"] = x
        for key, t in module.state_dict().items():
            out[f"{name}.param.{key}"] = t.clone()
        for dtype, tag in ((torch.float64, "f64"), (torch.float32, "f32")):
            m = copy.deepcopy(module).to(dtype)
            cast = {k: (x.to(dtype) if x.is_floating_point() else x) for k, x in inputs.items()}
            y, input_grads, param_grads, buffers, grad_y = run_case(m, cast, 100 + index)
            if tag == "f64":
                out[f"{name}.grad_y"] = grad_y.float()  # drawn in f32: exact in both dtypes
            out[f"{name}.{tag}.y"] = y.detach()
            for key, g in input_grads.items():
                out[f"{name}.{tag}.grad.{key}"] = g
            for key, g in param_grads.items():
                out[f"{name}.{tag}.grad.{key}"] = g
            for key, b in buffers.items():
                out[f"{name}.{tag}.state.{key}"] = b
    save_safetensors(os.path.join(outdir, "layers.safetensors"), out,
                     metadata("per-layer inputs, parameters, outputs and gradients"))


# ----------------------------------------------------------------- models --


def seeded_model(arch, seed):
    """torchvision's model with its own seeded init, then BatchNorm affine
    parameters and running statistics, and the biases, moved off their trivial
    initial values (1, 0, 0, 1), so that every one of them is really tested."""
    torch.manual_seed(seed)
    model = getattr(torchvision.models, arch)(num_classes=NUM_CLASSES, dropout=0.0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.weight.copy_(1 + 0.1 * torch.randn(c))
                m.bias.copy_(0.1 * torch.randn(c))
                m.running_mean.copy_(0.1 * torch.randn(c))
                m.running_var.copy_(1 + 0.2 * torch.rand(c))
                m.num_batches_tracked.fill_(5)
            elif isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None:
                m.bias.copy_(0.05 * torch.randn(m.bias.shape))
    return model


def training_forward_backward(model, x, target):
    """One training-mode forward, cross-entropy and backward; b3 parity's output keys."""
    model.train()
    model.zero_grad(set_to_none=True)
    logits = model(x)
    loss = F.cross_entropy(logits, target)
    loss.backward()
    out = {"logits": logits.detach(), "loss": loss.detach()}
    for name, p in model.named_parameters():
        out["grad." + name] = p.grad
    for name, b in model.named_buffers():
        out["state." + name] = b.detach().clone()
    return out


def config_name(arch, batch, size):
    return f"{arch}_b{batch}_{size}"


def model_inputs(batch, size, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, 3, size, size, generator=g)  # images in [0, 1], as the benchmark feeds
    target = torch.randint(0, NUM_CLASSES, (batch,), generator=g)
    return x, target


def make_models(outdir):
    for index, (arch, batch, size) in enumerate(MODEL_CONFIGS):
        name = config_name(arch, batch, size)
        model = seeded_model(arch, 10 + index)
        x, target = model_inputs(batch, size, 20 + index)
        described = f"{arch}(num_classes={NUM_CLASSES}, dropout=0), batch {batch}, {size}x{size}"
        save_safetensors(os.path.join(outdir, name + ".weights.safetensors"), model.state_dict(),
                         metadata("seeded weights and buffers of " + described))
        save_safetensors(os.path.join(outdir, name + ".input.safetensors"),
                         {"input": x, "target": target},
                         metadata("input and target for " + described))
        for dtype, tag in ((torch.float32, "f32"), (torch.float64, "f64")):
            m = copy.deepcopy(model).to(dtype)
            result = training_forward_backward(m, x.to(dtype), target)
            save_safetensors(os.path.join(outdir, f"{name}.expected_{tag}.safetensors"), result,
                             metadata(f"PyTorch in {tag}: one training step's forward and backward of "
                                      + described, dtype=tag))


def make_optim(outdir):
    arch, batch, size = "mobilenet_v3_large", 4, 64
    index = MODEL_CONFIGS.index((arch, batch, size))
    model = seeded_model(arch, 10 + index)
    x, target = model_inputs(batch, size, 20 + index)

    def train(dtype, make_optimizer, steps):
        m = copy.deepcopy(model).to(dtype)
        m.train()
        optimizer = make_optimizer(m.parameters())
        xd = x.to(dtype)
        losses = []
        for _ in range(steps):
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(m(xd), target)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        return m.state_dict(), torch.tensor(losses, dtype=torch.float64)

    for dtype, tag in ((torch.float32, "f32"), (torch.float64, "f64")):
        out = {}
        sgd_state, _ = train(dtype, lambda p: torch.optim.SGD(p, **SGD), 3)
        for key, t in sgd_state.items():
            out["sgd." + key] = t
        adam_state, _ = train(dtype, lambda p: torch.optim.Adam(p, **ADAM), 3)
        for key, t in adam_state.items():
            out["adam." + key] = t
        adamw_state, _ = train(dtype, lambda p: torch.optim.AdamW(p, **ADAMW), 3)
        for key, t in adamw_state.items():
            out["adamw." + key] = t
        _, losses = train(dtype, lambda p: torch.optim.Adam(p, **ADAM), ADAM_LONG_STEPS)
        out["adam20.losses"] = losses
        save_safetensors(
            os.path.join(outdir, f"optim.expected_{tag}.safetensors"), out,
            metadata(f"PyTorch in {tag}: state_dict after 3 training steps of SGD, of Adam and of "
                     f"AdamW on the batch of {OPTIM_CONFIG}, and the losses of {ADAM_LONG_STEPS} "
                     f"Adam steps",
                     dtype=tag, start=OPTIM_CONFIG,
                     sgd_lr=SGD["lr"], sgd_momentum=SGD["momentum"], sgd_nesterov=int(SGD["nesterov"]),
                     sgd_weight_decay=SGD["weight_decay"], adam_lr=ADAM["lr"], adam_beta1=ADAM["betas"][0],
                     adam_beta2=ADAM["betas"][1], adam_eps=ADAM["eps"],
                     adam_weight_decay=ADAM["weight_decay"], adam_long_steps=ADAM_LONG_STEPS,
                     adamw_weight_decay=ADAMW["weight_decay"]))


def main():
    if len(sys.argv) == 6 and sys.argv[1] == "--torchvision-forward":
        torch.set_num_threads(1)
        torchvision_forward(*sys.argv[2:])
        return
    if len(sys.argv) != 2:
        sys.exit("usage: make_fixtures.py OUTDIR | --torchvision-forward ARCH WEIGHTS INPUT OUT")
    outdir = sys.argv[1]
    os.makedirs(outdir, exist_ok=True)
    torch.set_num_threads(1)  # the same summation order on every machine
    torch.use_deterministic_algorithms(True)
    make_layers(outdir)
    make_models(outdir)
    make_optim(outdir)


if __name__ == "__main__":
    main()
