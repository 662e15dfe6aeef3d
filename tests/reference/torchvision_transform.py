#!/usr/bin/env python3
"""The reference for tests/test_data_torchvision.cpp: applies torchvision's
transforms to the images the test wrote, with the crop offsets and flips the
test chose, and writes the results as raw float32 [N, C, H, W].

    torchvision_transform.py JOBS.json

JOBS.json (written by the test) is a list of jobs (one Python start for all:
importing torch takes seconds), each with:
    images      path of N*H*W*C uint8 bytes (HWC images, one after another)
    n, height, width, channels
    resize      R: transforms.Resize((R, R)), bilinear; 0 = none
    crop        C: F.crop(img, top, left, C, C) at the given offsets; 0 = none
    params      [[top, left, flip], ...] one per image
    mean, std   [] or one per channel: transforms.Normalize(mean, std)
    paths       which pipelines to run: "tensor" (uint8 tensor -> resize ->
                crop -> flip -> convert_image_dtype), "pil" (PIL image ->
                resize -> crop -> flip -> to_tensor), as the reference
                benchmark does on torchvision's CIFAR10 (PIL images)
    out_prefix  writes <out_prefix><path>.f32 for each path
"""
import json
import sys

import numpy as np
import torch
import torchvision.transforms.functional as F
from PIL import Image
from torchvision.transforms import InterpolationMode


def run(spec, path):
    raw = np.fromfile(spec["images"], dtype=np.uint8)
    n, h, w, c = spec["n"], spec["height"], spec["width"], spec["channels"]
    images = raw.reshape(n, h, w, c)
    outputs = []
    for i in range(n):
        top, left, flip = spec["params"][i]
        if path == "tensor":
            img = torch.from_numpy(images[i].copy()).permute(2, 0, 1).contiguous()  # uint8 CHW
        else:
            img = Image.fromarray(images[i], mode="RGB")
        if spec["resize"] > 0:
            size = [spec["resize"], spec["resize"]]
            img = F.resize(img, size, interpolation=InterpolationMode.BILINEAR)
        if spec["crop"] > 0:
            img = F.crop(img, top, left, spec["crop"], spec["crop"])
        if flip:
            img = F.hflip(img)
        if path == "tensor":
            x = F.convert_image_dtype(img, torch.float32)  # uint8 / 255
        else:
            x = F.to_tensor(img)  # uint8 / 255
        if spec["mean"]:
            x = F.normalize(x, spec["mean"], spec["std"])
        outputs.append(x)
    result = torch.stack(outputs).contiguous()
    result.numpy().astype(np.float32).tofile(spec["out_prefix"] + path + ".f32")


def main():
    with open(sys.argv[1]) as f:
        jobs = json.load(f)
    for spec in jobs:
        for path in spec["paths"]:
            run(spec, path)


if __name__ == "__main__":
    main()
