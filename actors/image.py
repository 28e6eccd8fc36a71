"""ImageActor: a Stable Diffusion pipeline held warm; renders covers in batches."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from actors.engines import load_image
from actors.jobs import worker_info, writable, KIND_COVER, media_dir


class ImageActor:
    def __init__(
        self,
        out: str,
        engine: str,
        model_id: str,
        tiny_cache: str,
        steps: int = 30,
        guidance_scale: float = 7.5,
        width: int = 512,
        height: int = 512,
        negative_prompt: str = "",
    ):
        self.out = Path(out)
        self.worker = worker_info("ImageActor")
        self.pipe = load_image(engine, model_id, Path(tiny_cache))
        self.call_kwargs = dict(
            num_inference_steps=steps, guidance_scale=guidance_scale, width=width, height=height
        )
        self.negative_prompt = negative_prompt or None

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        todo = [i for i, kind in enumerate(batch["kind"]) if kind == KIND_COVER]
        if not todo:
            return batch
        batch = writable(batch)
        try:
            results = self._render(todo, batch)
        except Exception:
            results = []  # isolate the failing prompt: one image at a time
            for i in todo:
                try:
                    results += self._render([i], batch)
                except Exception as e:
                    results.append(e)
        for i, res in zip(todo, results):
            if isinstance(res, Exception):
                batch["status"][i] = "failed"
                batch["error"][i] = f"{type(res).__name__}: {res}"[:2000]
            else:
                self._write(batch, i, *res)
        return batch

    def _render(self, idx: list[int], batch) -> list[tuple]:
        prompts = [str(batch["prompt"][i]) for i in idx]
        # one generator per image: image k is the same whatever batch it lands in
        generators = [torch.Generator(device="cpu").manual_seed(int(batch["seed"][i])) for i in idx]
        t0 = time.perf_counter()
        with torch.inference_mode():
            images = self.pipe(
                prompts,
                negative_prompt=[self.negative_prompt] * len(prompts) if self.negative_prompt else None,
                generator=generators,
                **self.call_kwargs,
            ).images
        gen_s = (time.perf_counter() - t0) / len(prompts)
        return [(img, gen_s) for img in images]

    def _write(self, batch, i, image, gen_s: float) -> None:
        t0 = time.perf_counter()
        rel = f"{media_dir(str(batch['album_id'][i]))}/cover.png"
        path = self.out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(".tmp-cover.png")
        image.save(tmp, format="PNG")
        tmp.replace(path)
        batch["status"][i] = "ok"
        batch["worker"][i] = json.dumps({**self.worker, "done": time.time()})
        batch["path"][i] = rel
        batch["paths"][i] = rel
        batch["width"][i], batch["height"][i] = image.size
        batch["gen_s"][i] = gen_s
        batch["encode_s"][i] = time.perf_counter() - t0
