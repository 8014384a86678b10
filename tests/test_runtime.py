"""runtime.device and runtime.threads: resolution, policy, config errors, resume fingerprint, and the CPU path."""

from __future__ import annotations

import pytest
import torch

from spikefed.experiment.config import ConfigError, RunSettings, build_settings
from spikefed.experiment.runner import fingerprint
from spikefed.runtime import DeviceError, busy_cores, choose_threads, resolve_device
from spikefed.seeding import Purpose, derive_seed, torch_generator


def test_resolve_device_forms() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")
    assert resolve_device("auto", cuda_available=False) == torch.device("cpu")
    assert resolve_device("auto", cuda_available=True, cuda_count=1) == torch.device("cuda")
    assert resolve_device("cuda", cuda_available=True, cuda_count=1) == torch.device("cuda")
    assert resolve_device("cuda:1", cuda_available=True, cuda_count=2) == torch.device("cuda", 1)


@pytest.mark.parametrize("spec, message", [
    ("gpu", "'gpu' is not a device; valid: cpu, cuda, cuda:N, auto"),
    ("cuda:x", "is not a device"),
    ("cuda:-1", "is not a device"),
    ("", "is not a device"),
])
def test_resolve_device_unknown(spec: str, message: str) -> None:
    with pytest.raises(DeviceError, match=message):
        resolve_device(spec, cuda_available=True, cuda_count=1)


def test_resolve_device_cuda_absent_or_out_of_range() -> None:
    with pytest.raises(DeviceError, match="asks for CUDA, but torch sees no CUDA device"):
        resolve_device("cuda", cuda_available=False)
    with pytest.raises(DeviceError, match="asks for CUDA"):
        resolve_device("cuda:0", cuda_available=False)
    with pytest.raises(DeviceError, match=r"only 2 CUDA device\(s\) here \(cuda:0..cuda:1\)"):
        resolve_device("cuda:2", cuda_available=True, cuda_count=2)
    with pytest.raises(DeviceError, match="must be a string"):
        resolve_device(0)  # type: ignore[arg-type]


def test_choose_threads_policy() -> None:
    assert busy_cores(1.4, 2) == 1 and busy_cores(0.4, 2) == 0 and busy_cores(9.0, 2) == 2
    assert choose_threads("auto", cores=2, load_average=0.2) == 2  # idle machine: every core
    assert choose_threads("auto", cores=2, load_average=1.1) == 1  # one core busy: the other one
    assert choose_threads("auto", cores=2, load_average=6.0) == 1  # never fewer than one
    assert choose_threads("auto", cores=16, load_average=3.6) == 12
    assert choose_threads(3, cores=2) == 3  # an explicit number is taken as it is
    assert choose_threads("torch") == torch.get_num_threads()
    for bad in (0, -2, "many", True, 1.5):
        with pytest.raises(ValueError, match="runtime.threads must be"):
            choose_threads(bad)  # type: ignore[arg-type]


def _fail(overrides: list[str]) -> str:
    with pytest.raises(ConfigError) as e:
        build_settings(RunSettings, None, overrides)
    return str(e.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_config_refuses_cuda_without_cuda() -> None:
    msg = _fail(["runtime.device=cuda"])
    assert "runtime.device" in msg and "torch sees no CUDA device" in msg
    assert build_settings(RunSettings, None, ["runtime.device=auto"]).runtime.device == "auto"


def test_config_errors() -> None:
    assert "is not a device" in _fail(["runtime.device=tpu"])
    assert "runtime.threads" in _fail(["runtime.threads=0"])
    assert "runtime.threads" in _fail(["runtime.threads=some"])
    assert "local.kernel" in _fail(["local.kernel=triton"])
    s = build_settings(RunSettings, None, ["runtime.threads=2", "local.kernel=compiled"])
    assert s.runtime.threads == 2 and s.local.to_train_config().kernel == "compiled"
    assert RunSettings().runtime.device == "cpu" and RunSettings().local.kernel == "loop"


def test_fingerprint_ignores_threads_and_cpu_device() -> None:
    base = fingerprint(RunSettings())
    assert fingerprint(build_settings(RunSettings, None, ["runtime.threads=1"])) == base
    assert fingerprint(build_settings(RunSettings, None, ["runtime.device=cpu"])) == base
    assert fingerprint(build_settings(RunSettings, None, ["local.kernel=compiled"])) != base


def test_torch_generator_device() -> None:
    g = torch_generator(3, Purpose.CLIENT, 1, 2, device="cpu")
    ref = torch.Generator().manual_seed(derive_seed(3, Purpose.CLIENT, 1, 2))
    assert torch.equal(torch.rand(5, generator=g), torch.rand(5, generator=ref))
    assert torch_generator(3, Purpose.CLIENT, 1, 2).device == torch.device("cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_torch_generator_cuda_is_seeded() -> None:
    a = torch_generator(3, Purpose.CLIENT, 1, 2, device="cuda")
    b = torch_generator(3, Purpose.CLIENT, 1, 2, device="cuda")
    assert a.device.type == "cuda"
    assert torch.equal(torch.rand(5, generator=a, device="cuda"), torch.rand(5, generator=b, device="cuda"))


def test_apply_threads_sets_torch() -> None:
    from spikefed.runtime import apply_threads

    before = torch.get_num_threads()
    try:
        assert apply_threads(1) == 1 and torch.get_num_threads() == 1
        assert apply_threads("torch") == 1  # leaves the current setting alone
    finally:
        torch.set_num_threads(before)
