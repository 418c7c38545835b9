"""Actor-pool planning from a resource view, without a cluster."""

from __future__ import annotations

import pytest

from mdps_ray.orchestration.cluster import plan_pool


def test_one_actor_per_gpu() -> None:
    plan = plan_pool("auto", None, {"CPU": 16.0, "GPU": 4.0})
    assert (plan.device, plan.num_actors, plan.num_gpus, plan.decode_cpus) == ("cuda", 4, 1.0, 0.5)


def test_cpu_actors_leave_a_core_for_ray_datas_own_tasks() -> None:
    plan = plan_pool("auto", None, {"CPU": 2.0})
    assert plan.device == "cpu" and plan.num_actors == 1
    assert plan.num_cpus * plan.num_actors <= 2.0 - 1.0 and plan.decode_cpus == plan.num_cpus
    two = plan_pool("cpu", 2, {"CPU": 2.0})
    assert two.num_cpus * 2 <= 1.0  # two 1-CPU actors on 2 cores deadlock the read tasks


def test_cuda_without_gpus_is_one_clear_error() -> None:
    with pytest.raises(ValueError, match="expected GPUs in the Ray cluster"):
        plan_pool("cuda", None, {"CPU": 8.0})
