"""The Ray backend where no cluster is needed: what a run reserves, errors that say what to do
(Ray not installed, no --ray), and refusals that store nothing. The runs on a real Ray are in
tests/ray."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import pytest

from mcp_server.cli import main
from mcp_server.config import ServerConfig
from mcp_server.core.errors import InvalidInputError, UnavailableError
from mcp_server.core.models import RunResources, StartTrainingArgs
from mcp_server.core.ray_actors import actor_options, describe_death
from mcp_server.core.service import open_service
from trainer.spec import TrainingSpec

TINY = {"dataset": "blobs", "epochs": 2, "hidden_sizes": [8], "device": "cpu"}


def test_a_run_reserves_one_cpu_and_a_gpu_only_for_cuda() -> None:
    cpu = TrainingSpec.model_validate({"device": "cpu"})
    cuda = TrainingSpec.model_validate({"device": "cuda"})
    assert actor_options(cpu, None) == {"num_cpus": 1, "num_gpus": 0}
    assert actor_options(cuda, None) == {"num_cpus": 1, "num_gpus": 1}
    asked = RunResources(num_cpus=4, num_gpus=0.5, memory_mb=512)
    assert actor_options(cuda, asked) == {"num_cpus": 4, "num_gpus": 0.5, "memory": 512 << 20}
    with pytest.raises(InvalidInputError, match="needs a GPU") as refused:
        actor_options(cuda, RunResources(num_gpus=0))
    assert refused.value.field == "resources.num_gpus"


def test_a_dead_actors_error_reads_as_one_line() -> None:
    error = ValueError(
        "The actor died unexpectedly before finishing this task.\n\tclass_name: RunActor\n"
        "\tpid: 42\nThe actor is dead because its worker process has died."
    )
    assert describe_death(error) == (
        "The actor died unexpectedly before finishing this task. "
        "The actor is dead because its worker process has died."
    )


@pytest.mark.anyio
async def test_backend_ray_without_ray_installed_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails, as where it is absent
    async with open_service(ServerConfig(data_dir=tmp_path)) as service:
        for args in ({**TINY, "backend": "ray"}, {**TINY, "backend": "ray", "device": "cuda"}):
            with pytest.raises(UnavailableError, match=r'pip install "training-mcp\[ray\]"') as e:
                await service.start_training(StartTrainingArgs.model_validate(args))
            assert e.value.field == "backend"
        assert (await service.list_operations()).returned == 0


@pytest.mark.anyio
async def test_backend_ray_on_a_server_without_ray_says_to_serve_with_it(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    async with open_service(ServerConfig(data_dir=tmp_path)) as service:
        with pytest.raises(UnavailableError, match="serve with --ray auto") as refused:
            await service.start_training(
                StartTrainingArgs.model_validate({**TINY, "backend": "ray"})
            )
        assert refused.value.field == "backend"
        with pytest.raises(InvalidInputError, match="only a Ray run") as not_ray:
            await service.start_training(
                StartTrainingArgs.model_validate({**TINY, "resources": {"num_cpus": 2}})
            )
        assert not_ray.value.field == "resources"
        assert (await service.list_operations()).returned == 0


def test_serve_refuses_ray_it_cannot_use_before_starting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data = ["--data-dir", str(tmp_path)]
    monkeypatch.setitem(sys.modules, "ray", None)
    assert main(["serve", "--http", "--ray", "auto", *data]) == 2
    assert 'Ray is not installed; install it with pip install "training-mcp[ray]"' in (
        capsys.readouterr().err
    )
    monkeypatch.delitem(sys.modules, "ray")
    pytest.importorskip("ray")
    assert main(["serve", "--ray", "auto", *data]) == 2
    assert "serve with --http" in capsys.readouterr().err
    assert main(["serve", "--http", "--ray", "auto", "--ray-retries", "-1", *data]) == 2
    assert "--ray-retries: must be between 0 and 100" in capsys.readouterr().err


@pytest.mark.anyio
async def test_an_entry_point_for_ray_is_checked_before_it_needs_a_cluster(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    declared = tmp_path / "entry_points.toml"
    declared.write_text(
        '[entry_points.train]\ncommand = ["python", "train.py", "{epochs}"]\n'
        '[entry_points.train.parameters]\nepochs = { type = "int", default = 2, min = 1 }\n'
        '[entry_points.tb]\ncommand = ["python", "tb.py"]\ntensorboard_logdir = "runs"\n'
    )
    config = ServerConfig(data_dir=tmp_path / "data", entry_points_file=declared)
    refusals: list[tuple[dict[str, Any], type[Exception], str]] = [
        ({"entry_point": "nope"}, InvalidInputError, "entry_point: 'nope' is not declared; "
         "declared: tb, train"),
        ({"entry_point": "train", "params": {"epochs": 0}}, InvalidInputError, "params.epochs"),
        ({"entry_point": "tb"}, InvalidInputError, "tensorboard_logdir"),
        ({"entry_point": "train", "epochs": 3}, InvalidInputError, "epochs: an entry point"),
        ({"entry_point": "train"}, UnavailableError, "serve with --ray auto"),
    ]  # fmt: skip
    async with open_service(config) as service:
        for args, error, message in refusals:
            with pytest.raises(error, match=re.escape(message)):
                await service.start_training(
                    StartTrainingArgs.model_validate({**args, "backend": "ray"})
                )
        with pytest.raises(InvalidInputError, match="resources with backend 'ray'") as local:
            await service.start_training(
                StartTrainingArgs.model_validate(
                    {"entry_point": "train", "resources": {"num_cpus": 2}}
                )
            )
        assert local.value.field == "resources"
        assert (await service.list_operations()).returned == 0
