"""GPU placement as pure functions of device counts (issue 19; no GPU here): the learner's GPU reserved,
one whole GPU per rollout worker on the others, one line (exit 2) when a plan needs more devices than exist,
the Ray instance started without the learner's GPU, and the weight-sync path each placement implies."""
import os

import pytest

from compose_rl.rollout.placement import PlacementError, plan_placement, ray_devices_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_cpu_machine_places_everything_on_cpus():
    p = plan_placement(workers=2, gpus=0, learner_on_gpu=False)
    assert p.learner == "cpu" and p.worker_devices == ("cpu", "cpu") and p.gpus_per_worker == 0
    assert p.sync == "object_store" and p.ray_visible_devices is None
    assert plan_placement(0, 0, False).sync == "in_process"


def test_colocated_engine_shares_the_learners_gpu_in_process():
    p = plan_placement(workers=0, gpus=1, learner_on_gpu=True)
    assert p.learner == "cuda:0" and p.worker_devices == () and p.sync == "in_process"
    assert "learner + engine on cuda:0" in p.line()


@pytest.mark.parametrize("gpus, learner, workers, want", [
    (4, 0, 3, ("cuda:1", "cuda:2", "cuda:3")),
    (4, 2, 3, ("cuda:0", "cuda:1", "cuda:3")),   # an explicit index: the others, in order
    (8, 0, 2, ("cuda:1", "cuda:2")),
])
def test_workers_never_land_on_the_learners_gpu(gpus, learner, workers, want):
    p = plan_placement(workers, gpus, True, learner_gpu=learner)
    assert p.learner == f"cuda:{learner}" and p.worker_devices == want
    assert f"cuda:{learner}" not in p.worker_devices and len(set(p.worker_devices)) == workers
    assert p.gpus_per_worker == 1.0 and p.sync == "nccl"
    # the Ray this process starts sees every GPU but the learner's, so Ray cannot hand it to a worker
    assert str(learner) not in p.ray_visible_devices.split(",")
    assert len(p.ray_visible_devices.split(",")) == gpus - 1


@pytest.mark.parametrize("workers, gpus, learner, key, hint", [
    (4, 4, 0, "rollout.workers", "rollout.workers <= 3"),
    (1, 1, 0, "rollout.workers", "rollout.workers: 0"),
    (2, 2, 5, "runtime.learner_gpu", "0..1"),
    (-1, 2, 0, "rollout.workers", "negative"),
])
def test_more_devices_than_exist_is_one_line(workers, gpus, learner, key, hint):
    with pytest.raises(PlacementError) as e:
        plan_placement(workers, gpus, True, learner_gpu=learner)
    msg = str(e.value)
    assert msg.startswith(key) and hint in msg and "\n" not in msg


def test_existing_cluster_counts_its_gpus():
    assert plan_placement(3, 1, True, cluster_gpus=3).gpus_per_worker == 1.0
    with pytest.raises(PlacementError, match="the Ray cluster offers 2"):
        plan_placement(3, 1, True, cluster_gpus=2)


def test_ray_devices_env_maps_back_to_physical_ids():
    assert ray_devices_env("1,2,3", None) == "1,2,3"
    assert ray_devices_env("1,2", "4,5,6") == "5,6"  # this process sees physical 4,5,6; the learner has 4
    assert ray_devices_env(None, "0,1") == "0,1"


def test_ray_gpu_env_is_set_only_while_ray_starts(monkeypatch):
    from compose_rl.rollout.factory import ray_gpu_env

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3,4")
    p = plan_placement(2, 3, True, learner_gpu=0)
    with ray_gpu_env(p):
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "3,4"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "2,3,4"


def test_plan_refuses_more_workers_than_gpus_in_one_line(capsys):
    from compose_rl.cli import main

    cfg = os.path.join(ROOT, "tests/fixtures/qwen3-4b-base/config.json")
    args = ["plan", os.path.join(ROOT, "recipes/gpu/spiral-kuhn-qwen3-4b.yaml"), "rollout.workers=3", "--device", "cuda",
            "--device-memory-gib", "141", "--config", cfg]
    assert main([*args, "--gpus", "2"]) == 2
    out = capsys.readouterr()
    assert out.out == "" and out.err.count("\n") == 1 and "rollout.workers: 3 workers need 4 GPUs" in out.err
    assert main([*args, "--gpus", "4"]) == 0
    assert "learner on cuda:0 (reserved), workers on cuda:1, cuda:2, cuda:3" in capsys.readouterr().out


def test_recipe_refuses_more_workers_than_gpus_before_writing(monkeypatch, tmp_path):
    """check_environment on a (faked) 2-GPU machine: 2 workers + the learner need 3 GPUs -> RecipeError."""
    import torch

    from compose_rl import precision
    from compose_rl.recipe import RecipeError, _check_placement, recipe_from_dict

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(precision.torch.cuda, "is_available", lambda: True)
    r = recipe_from_dict({"name": "t", "stages": ["sft"], "games": {"train": [{"name": "kuhn_poker"}]},
                          "rollout": {"workers": 2}, "output": str(tmp_path / "runs")})
    with pytest.raises(RecipeError) as e:
        _check_placement(r, "r.yaml")
    assert "rollout.workers: 2 workers need 3 GPUs" in str(e.value) and "\n" not in str(e.value)
    _check_placement(r.model_copy(update={"rollout": r.rollout.model_copy(update={"workers": 1})}), "r.yaml")
    assert not (tmp_path / "runs").exists()
