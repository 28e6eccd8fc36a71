"""MusicActor: MusicGen held warm; generates a whole batch of tracks per call."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from actors.audio import finish, write_audio
from actors.engines import load_music
from actors.jobs import worker_info, writable, KIND_TRACK, media_dir


class MusicActor:
    def __init__(
        self,
        out: str,
        engine: str,
        model_id: str,
        tiny_cache: str,
        guidance_scale: float = 3.0,
        do_sample: bool = True,
        top_k: int = 250,
        temperature: float = 1.0,
        formats: tuple[str, ...] = ("ogg",),
    ):
        self.out = Path(out)
        self.worker = worker_info("MusicActor")
        self.m = load_music(engine, model_id, Path(tiny_cache))
        self.formats = list(formats)
        self.gen_kwargs = dict(
            guidance_scale=guidance_scale, do_sample=do_sample, top_k=top_k, temperature=temperature
        )

    # ------------------------------------------------------------------ Ray Data entry
    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        todo = [i for i, kind in enumerate(batch["kind"]) if kind == KIND_TRACK]
        if not todo:
            return batch
        batch = writable(batch)
        try:
            results = self._generate([batch[c][todo] for c in ("prompt", "duration_s", "seed")])
        except Exception:
            # One bad track must not sink its batch-mates: retry them one by one.
            results = []
            for i in todo:
                try:
                    results += self._generate([batch[c][[i]] for c in ("prompt", "duration_s", "seed")])
                except Exception as e:  # the row records the error; the batch goes on
                    results.append(e)
        for i, res in zip(todo, results):
            if isinstance(res, Exception):
                batch["status"][i] = "failed"
                batch["error"][i] = f"{type(res).__name__}: {res}"[:2000]
                continue
            audio, gen_s = res
            self._write(batch, i, audio, gen_s)
        return batch

    # ------------------------------------------------------------------ steps
    def _generate(self, cols) -> list[tuple[np.ndarray, float]]:
        """One generate() call for all prompts; each output trimmed to its own duration."""
        prompts, durations, seeds = cols
        m = self.m
        # 1. check inputs: one call holds at most max_positions decoder steps
        frames = [int(round(float(d) * m.frame_rate)) for d in durations]
        max_tokens = max(frames) + m.num_codebooks - 1  # the delay pattern costs codebooks-1 steps
        if max_tokens > m.max_positions:
            raise ValueError(
                f"duration_s={max(durations):.1f} needs {max_tokens} decoder steps; "
                f"this model's window is {m.max_positions} steps"
            )
        # 2. tokenize (padding=True: prompts of any length share one batch)
        inputs = m.processor.tokenizer(list(map(str, prompts)), padding=True, return_tensors="pt").to(m.device)
        # 3. generate, seeded from the batch's track seeds so the same batch reproduces
        torch.manual_seed(int(sum(int(s) for s in seeds)) & 0x7FFFFFFF)
        t0 = time.perf_counter()
        with torch.inference_mode():
            audio = m.model.generate(**inputs, max_new_tokens=max_tokens, **self.gen_kwargs)
        gen_s = (time.perf_counter() - t0) / len(prompts)
        # 4. trim each track to its asked duration
        audio = audio[:, 0].float().cpu().numpy()
        need = [int(round(float(d) * m.sample_rate)) for d in durations]
        short = [i for i, n in enumerate(need) if audio.shape[1] < n]
        if short:
            raise RuntimeError(f"model returned {audio.shape[1]} samples, {need[short[0]]} asked")
        return [(audio[k, : need[k]], gen_s) for k in range(len(prompts))]

    def _write(self, batch, i, audio: np.ndarray, gen_s: float) -> None:
        t0 = time.perf_counter()
        album_id, track_no = str(batch["album_id"][i]), int(batch["item_no"][i])
        stem = self.out / media_dir(album_id) / f"track-{track_no:02d}"
        try:
            paths = write_audio(finish(audio, self.m.sample_rate), self.m.sample_rate, stem, self.formats)
        except Exception as e:
            batch["status"][i] = "failed"
            batch["error"][i] = f"encoding failed: {type(e).__name__}: {e}"
            return
        rel = [str(p.relative_to(self.out)) for p in paths]
        batch["status"][i] = "ok"
        batch["worker"][i] = json.dumps({**self.worker, "done": time.time()})
        batch["path"][i] = rel[0]
        batch["paths"][i] = "|".join(rel)
        batch["actual_s"][i] = len(audio) / self.m.sample_rate
        batch["sample_rate"][i] = self.m.sample_rate
        batch["gen_s"][i] = gen_s
        batch["encode_s"][i] = time.perf_counter() - t0
