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


class FakeCluster:
    """A resource view whose GPUs appear after ``after`` seconds of fake time, and the requests made."""

    def __init__(self, after: float | None) -> None:
        self.now, self.after, self.requests, self.said = 0.0, after, [], []

    def resources(self) -> dict[str, float]:
        up = self.after is not None and self.now >= self.after
        return {"CPU": 8.0, **({"GPU": 2.0} if up else {})}

    def sleep(self, s: float) -> None:
        self.now += s


def _wait(c: FakeCluster, device: str, grow: bool, timeout: float = 60.0):
    from mdps_ray.orchestration.cluster import wait_for_pool

    return wait_for_pool(device, 2, timeout, c.resources, c.requests.append, grow, c.said.append,
                         clock=lambda: c.now, sleep=c.sleep)


def test_cuda_on_an_autoscaling_cluster_requests_and_waits_for_its_gpus() -> None:
    c = FakeCluster(after=30.0)
    plan = _wait(c, "cuda", grow=True)
    assert plan.device == "cuda" and plan.num_actors == 2 and c.requests == [2]
    assert c.said and all("waiting for 2 GPU(s)" in line for line in c.said) and c.now >= 30.0


def test_cuda_fails_in_one_line_when_the_gpus_never_come_or_cannot() -> None:
    with pytest.raises(ValueError, match=r"expected 2 GPU\(s\) for device=cuda within 60 s, the cluster has 0"):
        _wait(FakeCluster(after=None), "cuda", grow=True)
    never = FakeCluster(after=None)
    with pytest.raises(ValueError, match="an embedded Ray has no autoscaler"):
        _wait(never, "cuda", grow=False)
    assert never.requests == [] and never.now == 0.0  # at once: nothing to wait for


def test_auto_on_a_cluster_without_gpus_says_it_scores_on_cpu() -> None:
    c = FakeCluster(after=None)
    assert _wait(c, "auto", grow=True).device == "cpu"
    assert "scoring on CPU (device=auto)" in c.said[0]
    quiet = FakeCluster(after=None)
    assert _wait(quiet, "auto", grow=False).device == "cpu" and quiet.said == []  # the embedded Ray: expected
