"""DDP on CPU (gloo, two processes) gives the one-process result for the same global batch."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from conftest import TINY_VIT_CFG, make_encoder
from safetensors.torch import load_file

from aft_bench.models.loading import save_encoder
from aft_bench.training.arguments import config_from_args
from aft_bench.training.trainer import train


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _argv(ckpt: Path, out: Path) -> list[str]:
    return ["--encoder", f"ckpt:{ckpt}", "--data", "shapes:32", "--batch-size", "8", "--max-steps", "3",
            "--pgd-steps", "2", "--lr", "1e-4", "--save-every", "3", "--out", str(out), "--device", "cpu"]


def _worker(rank: int, world: int, port: int, argv: list[str]) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    train(config_from_args(argv))


def test_two_gloo_processes_match_one_process(tmp_path):
    encoder = make_encoder(TINY_VIT_CFG, "tiny-vit")
    ckpt = save_encoder(encoder, tmp_path / "tiny.safetensors", encoder.card)
    # fork: the children inherit the imported modules (spawn would re-import torch and open_clip).
    # One thread in the parent at fork time and in each rank: a forked child that enters a multi-threaded
    # OpenMP region the parent's pool already used can deadlock (libgomp is not fork-safe).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        mp.start_processes(_worker, args=(2, _free_port(), [*_argv(ckpt, tmp_path / "ddp"), "--threads", "1"]),
                           nprocs=2, join=True, start_method="fork")
        single = train(config_from_args(_argv(ckpt, tmp_path / "one")))
    finally:
        torch.set_num_threads(threads)
    one = load_file(single.encoder_path)
    two = load_file(tmp_path / "ddp" / "encoder.safetensors")
    start = load_file(ckpt)
    moved = max((one[k] - start[k]).abs().max().item() for k in one if k.startswith("visual."))
    assert moved > 1e-5  # training changed the weights: the comparison below is not vacuous
    for key in one:
        assert torch.allclose(one[key], two[key], rtol=1e-4, atol=1e-6), key
    assert pytest.approx(0.0, abs=0.0) == sum((one[k] - start[k]).abs().sum().item()
                                              for k in one if not k.startswith("visual."))
