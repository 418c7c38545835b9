"""Batch scoring work units, plain Python: what a Ray actor wraps and tests call directly.

- :class:`ScoringWorker` (one per actor): loads the prior, backbone and calibration once;
  each call scores the decodable images of a batch, then hands its two objects to a background
  writer (one in flight): the maps and reconstructions as one chunk object, then one staged Parquet
  part with a row per image (ok or error), the part last, so a staged row never names a map that
  was not written. The upload of batch N overlaps the scoring of batch N+1; call N+1 first waits for
  upload N and re-raises its error, and the actor's shutdown flushes the last one. The call returns
  the batch's part name: the driver waits for every returned part to appear and scores again, with
  writes in the call, any batch whose part never came (an actor that died with an upload in flight).
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from mdps_ray.api import Detector
from mdps_ray.config.jobs import ScoreJobConfig
from mdps_ray.config.method import scoring_hash
from mdps_ray.core.acquisition import acquisition_stats
from mdps_ray.data.decode import Batch
from mdps_ray.method.batching import CPU_BATCH, ChunkedScorer, default_batch, splittable
from mdps_ray.method.calibration import is_anomalous
from mdps_ray.method.scorer import ScoreResult
from mdps_ray.orchestration.faults import Faults, after_staged_batch
from mdps_ray.storage.maps import member_uri, write_chunk
from mdps_ray.storage.results import ACQUISITION_COLUMNS, part_name, rows_to_table, table_bytes, text_or_none
from mdps_ray.storage.runs import RunPaths, object_key
from mdps_ray.storage.uris import join, write_bytes
from mdps_ray.testing.scorer_double import ZeroCostDetector


class ScoringWorker:
    """Scores batches for one run; holds the model for its whole life (one per actor / GPU)."""

    def __init__(self, job: dict[str, Any], run_id: str, dt: str | None, device: str,
                 mask_threshold: float | None = None, num_threads: int | None = None,
                 driver_pid: int | None = None, faults: dict[str, Any] | None = None,
                 scorer_double: bool = False, sync_writes: bool = True) -> None:
        if num_threads:
            torch.set_num_threads(num_threads)
        self.job = ScoreJobConfig.model_validate(job)
        self.paths = RunPaths(self.job.out, run_id)
        self.dt = dt
        self.so = self.job.storage_options
        loader = ZeroCostDetector if scorer_double else Detector
        self.detector = loader.load(self.job.model, device=device, storage_options=self.so,
                                      overrides=self.job.method_patch(), transductive_threshold=mask_threshold,
                                      check_calibration=False)  # the driver warned already
        self.config = self.detector.config
        self.config_hash = scoring_hash(self.config.digest(), self.detector.device.type)
        self.score = self._chunked_scorer()
        self.batches = 0
        self.driver_pid = driver_pid
        self.faults = Faults(**(faults or {}))
        self.sync_writes = sync_writes
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="mdps-upload")
        self._inflight: Future[None] | None = None

    def _chunked_scorer(self) -> ChunkedScorer:
        """The scorer in chunks that fit: on a GPU as many images as its free memory holds (halved on
        out-of-memory); on a CPU the whole batch."""
        device = self.detector.device
        if device.type != "cuda":
            return ChunkedScorer(self.detector.scorer.score, self.job.batch_size or CPU_BATCH, split=False)
        limit = default_batch(self.config, "cuda", torch.cuda.mem_get_info(device)[0])
        return ChunkedScorer(self.detector.scorer.score, limit, splittable(self.config), torch.cuda.empty_cache)

    def __call__(self, batch: Batch) -> Batch:
        start = time.monotonic()
        part = part_name([str(x) for x in batch["image_id"]])
        ok = [i for i, e in enumerate(batch["decode_error"]) if not e]
        rows = [self._error_row(batch, i) for i, e in enumerate(batch["decode_error"]) if e]
        chunk_args = None
        if ok:
            ids = [str(batch["image_id"][i]) for i in ok]
            y = torch.from_numpy(np.stack([batch["pixels"][i] for i in ok])).to(self.detector.device)
            host = self._to_host(self.score(y, ids))
            host["acquisition"] = acquisition_stats(y).cpu().numpy()
            seconds = (time.monotonic() - start) / len(ok)
            chunk = self.paths.chunk_uri(part) if self.job.write_maps else None
            rows += [self._ok_row(batch, i, k, host, seconds, chunk) for k, i in enumerate(ok)]
            if chunk is not None:
                keys = [object_key(i) for i in ids]
                chunk_args = (chunk, dict(zip(keys, host["map"], strict=True)),
                              dict(zip(keys, host["recon"], strict=True)))
        staged = table_bytes(rows_to_table(rows))
        self.flush()  # the previous batch's upload: done, or its error raised here
        self._inflight = self._writer.submit(self._upload, chunk_args,
                                             join(self.paths.staging, part), staged)
        if self.sync_writes:
            self.flush()
        return {"image_id": np.array([r["image_id"] for r in rows], dtype=object),
                "status": np.array([r["status"] for r in rows], dtype=object),
                "part": np.array([part] * len(rows), dtype=object)}

    def _upload(self, chunk: tuple[str, dict[str, np.ndarray], dict[str, np.ndarray]] | None, part_uri: str,
                staged: bytes) -> None:
        """The batch's maps chunk, then its staged part (the part last: it names the maps)."""
        if chunk is not None:
            write_chunk(*chunk, self.so)
        write_bytes(part_uri, staged, self.so)
        self.batches += 1  # one writer thread: no race
        after_staged_batch(self.faults, self.batches, self.driver_pid, join(self.paths.root, "_fault_actor_killed"),
                           self.so)

    def flush(self) -> None:
        """Wait for the upload in flight; re-raise its error."""
        inflight, self._inflight = self._inflight, None
        if inflight is not None:
            inflight.result()

    def __del__(self) -> None:  # Ray Data's graceful actor shutdown calls this after the last batch
        try:
            self.flush()
        except Exception as err:  # nothing can be raised from here; the driver scores the batch again
            print(f"mdps: the last upload of a scoring actor failed ({err}); the driver scores that batch again")

    def _base_row(self, batch: Batch, i: int) -> dict[str, Any]:
        label = batch["label"][i]
        return {
            "run_id": self.paths.run_id, "image_id": str(batch["image_id"][i]), "uri": str(batch["uri"][i]),
            "category": str(batch["category"][i]), "split": text_or_none(batch["split"][i]),
            "defect_type": text_or_none(batch["defect_type"][i]),
            "label": None if label is None or (isinstance(label, float) and np.isnan(label)) else int(label),
            "model_digest": self.detector.model_digest, "config_hash": self.config_hash,
            "backbone_digest": self.detector.backbone_digest or None,
            "content_key": str(batch["content_key"][i]), "mask_uri": text_or_none(batch["mask_uri"][i]),
            "seed": self.config.sampler.seed, "n_samples": self.config.sampler.stage2.n_samples, "dt": self.dt,
        }

    def _error_row(self, batch: Batch, i: int) -> dict[str, Any]:
        return {**self._base_row(batch, i), "status": "error", "error": str(batch["decode_error"][i])}

    def _to_host(self, result: ScoreResult) -> dict[str, Any]:
        """The batch's outputs on the host in one copy each (not one device sync per image and field)."""
        cal = self.detector.calibration
        scores = result.score.detach().double().cpu()
        return {
            "score": scores.numpy(),
            "is_anomalous": None if cal is None else is_anomalous(scores, cal.score_threshold).numpy(),
            "p_value": None if cal is None else cal.p_values(scores),
            "map": result.anomaly_map[:, 0].detach().float().cpu().numpy(),
            "recon": ((result.reconstruction.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte()
            .permute(0, 2, 3, 1).cpu().numpy(),
            "area": None if result.mask is None else result.mask.float().mean(dim=(1, 2, 3)).cpu().numpy(),
        }

    def _ok_row(self, batch: Batch, i: int, k: int, host: dict[str, Any], seconds: float,
                chunk: str | None) -> dict[str, Any]:
        row = self._base_row(batch, i)
        amap = host["map"][k]
        map_uri = None if chunk is None else member_uri(chunk, object_key(row["image_id"]))
        flags, area, p = host["is_anomalous"], host["area"], host["p_value"]
        return {
            **row, "status": "ok", "error": None, "score": float(host["score"][k]),
            "is_anomalous": None if flags is None else bool(flags[k]),
            "p_value": None if p is None else float(p[k]),
            "map_uri": map_uri, "map_max": float(amap.max()), "map_mean": float(amap.mean()),
            **dict(zip(ACQUISITION_COLUMNS, (float(v) for v in host["acquisition"][k]), strict=True)),
            "anomalous_area_fraction": None if area is None else float(area[k]),
            "seconds": seconds,
        }


class StageOneRange:
    """Transductive pass 1: the min and max of each batch's stage-1 maps."""

    def __init__(self, job: dict[str, Any], device: str, num_threads: int | None = None) -> None:
        if num_threads:
            torch.set_num_threads(num_threads)
        jc = ScoreJobConfig.model_validate(job)
        self.detector = Detector.load(jc.model, device=device, storage_options=jc.storage_options,
                                      overrides=jc.method_patch())

    def __call__(self, batch: Batch) -> Batch:
        ok = [i for i, e in enumerate(batch["decode_error"]) if not e]
        if not ok:
            return {"lo": np.array([], dtype=np.float64), "hi": np.array([], dtype=np.float64)}
        y = torch.from_numpy(np.stack([batch["pixels"][i] for i in ok])).to(self.detector.device)
        scorer = self.detector.scorer
        maps = scorer.mask_evidence(scorer.stage1(y, [str(batch["image_id"][i]) for i in ok]), y)
        return {"lo": np.array([float(maps.min())]), "hi": np.array([float(maps.max())])}
