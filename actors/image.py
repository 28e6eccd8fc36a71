"""ImageActor: a Stable Diffusion pipeline held warm; renders covers and track art in batches.

Per call, for the cover and art rows of a batch (other rows pass through untouched), in
groups of ``batch_size`` images:

  1. house style around each director prompt; the style's negative prompt
  2. encode: prompts that fit CLIP's 77 tokens go to the pipeline as text; a longer one
     is encoded in 75-token chunks whose embeddings are concatenated (``long_prompts=
     "chunk"``), or cut by CLIP (``"truncate"``); either way the row's ``prompt_note`` says so
  3. base render, one seeded generator per image (image k is the same in any batch)
  4. optional hires pass: upscale, then img2img on the same components (no second load)
  5. CLIP score of each image against its director prompt (``score``)

A row whose image fails is a failed row; the rest of the batch completes.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from actors.engines import load_image
from actors.faults import GuardedStage
from actors.jobs import worker_info, writable
from albumforge.atomic import WriteError
from albumforge.rows import KIND_ART, KIND_COVER, STATUS_OK, media_dir

if TYPE_CHECKING:  # the section type only
    from albumforge.config import ImageConfig

log = logging.getLogger(__name__)

IMAGE_KINDS = (KIND_COVER, KIND_ART)


def image_name(kind: str, item_no: int) -> str:
    """File name of an image in its album folder: cover.png, track-NN.png."""
    if kind == KIND_COVER:
        return "cover.png"
    if kind == KIND_ART:
        return f"track-{int(item_no):02d}.png"
    raise ValueError(f"kind={kind!r} is not an image kind (expected one of {IMAGE_KINDS})")


def _join(*parts: str) -> str:
    return ", ".join(p.strip() for p in parts if p and p.strip())


class ImageActor(GuardedStage):
    actor_name = "ImageActor"
    media_folder = staticmethod(media_dir)  # where a row's images go: media/<album_id> (songs: media/songs/<id>)

    def __init__(self, out: str, image: ImageConfig, tiny_cache: str, run_id: str | None = None,
                 max_deaths: int = 3, time_scale: float = 1.0):
        """``image``: the run's image section (model, LoRA, embeddings, steps, size, house
        style, prompt handling, hires pass, CLIP; its own checks already ran);
        ``run_id``/``max_deaths``: the crash guard; ``time_scale``: the sim engine's."""
        self._start_guard(out, run_id, max_deaths)  # see actors.faults: deaths are counted, not looped
        self.worker = worker_info("ImageActor")
        self.batch_size = image.batch_size
        self.pipe = self._load(image.model_id, lambda: load_image(
            image.engine, image.model_id, Path(tiny_cache), single_file_config=image.single_file_config,
            lora_path=image.lora_path, lora_scale=image.lora_scale,
            textual_inversion=[e.model_dump() for e in image.textual_inversion], time_scale=time_scale))
        if self.pipe is None:  # the model cannot load here (self.broken says why): every image fails, named
            return
        self.call_kwargs = dict(num_inference_steps=image.steps, guidance_scale=image.guidance_scale,
                                width=image.width, height=image.height)
        self.style_prefix, self.style_suffix, self.negative_prompt = image.style_words()
        self.long_prompts, self.max_prompt_tokens = image.long_prompts, image.max_prompt_tokens
        self.hires_pipe = None
        if image.hires_scale != 1.0:
            from diffusers import StableDiffusionImg2ImgPipeline

            # the same modules (UNet, VAE, text encoder, fused LoRA, embeddings): no second load
            self.hires_pipe = StableDiffusionImg2ImgPipeline(
                **self.pipe.components, requires_safety_checker=self.pipe.config.get("requires_safety_checker", True)
            )
            self.hires_pipe.set_progress_bar_config(disable=True)
            self.hires_size = image.hires_size()
            self.hires_kwargs = dict(num_inference_steps=image.hires_steps, strength=image.hires_strength,
                                     guidance_scale=image.guidance_scale)
        self.scorer = None
        if image.clip_model:
            from actors.quality import ClipScorer

            try:
                self.scorer = ClipScorer(image.engine, image.clip_model, tiny_cache)
            except Exception as e:  # no CLIP here (offline, not cached): images go unscored
                log.warning("no CLIP score: cannot load clip_model=%r (%s: %s)", image.clip_model,
                            type(e).__name__, e)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        todo = [i for i, kind in enumerate(batch["kind"]) if kind in IMAGE_KINDS]
        if not todo:
            return batch
        batch = writable(batch)
        self._process(batch, todo, self.batch_size, self._make)
        return batch

    def _make(self, batch, idx: list[int]) -> None:
        """Render the images ``idx`` as one pipeline call, then write each."""
        for i, res in zip(idx, self._render(idx, batch)):
            self._write(batch, i, *res)

    def _render(self, idx: list[int], batch) -> list[tuple]:
        with self._on_gpu():  # encode, render, hires and score: this actor's busy time
            return self._render_group(idx, batch)

    def _render_group(self, idx: list[int], batch) -> list[tuple]:
        t0 = time.perf_counter()
        # 1. house style around each director prompt
        asked = [str(batch["prompt"][i]) for i in idx]
        prompts = [_join(self.style_prefix, p, self.style_suffix) for p in asked]
        negatives = [self.negative_prompt] * len(prompts)
        # 2. encode: text when everything fits, else chunked embeddings (or CLIP's cut), noted
        text_kwargs, notes = self._encode(prompts, negatives)
        # 3. base render; one generator per image: image k is the same whatever batch it lands in
        generators = [torch.Generator(device="cpu").manual_seed(int(batch["seed"][i])) for i in idx]
        with torch.inference_mode():
            images = self.pipe(generator=generators, **text_kwargs, **self.call_kwargs).images
            # 4. hires: upscale, then img2img at hires_strength (same embeddings, same generators)
            if self.hires_pipe is not None:
                from PIL import Image

                upscaled = [im.resize(self.hires_size, Image.LANCZOS) for im in images]
                images = self.hires_pipe(image=upscaled, generator=generators, **text_kwargs,
                                         **self.hires_kwargs).images
        # 5. CLIP score against the director's prompt (the style is shared by every image)
        scores = [math.nan] * len(images)
        if self.scorer is not None:
            try:
                scores = self.scorer.score(images, asked)
            except Exception as e:  # a score is a signal, never a reason to lose the image
                log.warning("CLIP score failed: %s: %s", type(e).__name__, e)
        gen_s = (time.perf_counter() - t0) / len(idx)
        return [(img, gen_s, note, score) for img, note, score in zip(images, notes, scores)]

    # ------------------------------------------------------------ prompt encoding
    def _encode(self, prompts: list[str], negatives: list[str]) -> tuple[dict, list[str]]:
        """Pipeline text arguments for a group of prompts, and a note per image."""
        tok = self.pipe.tokenizer
        limit = tok.model_max_length - 2  # 75: BOS and EOS take two of CLIP's 77 positions
        # textual inversion: multi-vector tokens expand before counting
        conv = [self.pipe.maybe_convert_prompt(p, tok) for p in prompts]
        conv_neg = [self.pipe.maybe_convert_prompt(n, tok) for n in negatives]
        ids = [tok(p, add_special_tokens=False, verbose=False).input_ids for p in conv]
        ids_neg = [tok(n, add_special_tokens=False, verbose=False).input_ids for n in conv_neg]
        if all(len(x) <= limit for x in ids + ids_neg):
            neg = negatives if any(negatives) else None
            return dict(prompt=prompts, negative_prompt=neg), [""] * len(prompts)
        if self.long_prompts == "truncate":
            notes = [_join(self._cut_note(tok, p, limit, "prompt"), self._cut_note(tok, n, limit, "negative"))
                     for p, n in zip(ids, ids_neg)]
            return dict(prompt=prompts, negative_prompt=negatives), notes
        cap = max(limit, self.max_prompt_tokens // limit * limit)  # whole chunks
        notes = [_join(self._chunk_note(tok, p, limit, cap, "prompt"), self._chunk_note(tok, n, limit, cap, "negative"))
                 for p, n in zip(ids, ids_neg)]
        ids = [x[:cap] for x in ids]
        ids_neg = [x[:cap] for x in ids_neg]
        n_chunks = max(1, max(math.ceil(len(x) / limit) for x in ids + ids_neg))
        return dict(prompt_embeds=self._embed(ids, n_chunks, limit),
                    negative_prompt_embeds=self._embed(ids_neg, n_chunks, limit)), notes

    @staticmethod
    def _cut_note(tok, ids: list[int], limit: int, what: str) -> str:
        if len(ids) <= limit:
            return ""
        dropped = tok.decode(ids[limit:]).strip()
        return f"{what} truncated: {len(ids)} tokens, CLIP kept {limit}; dropped {dropped[:200]!r}"

    @staticmethod
    def _chunk_note(tok, ids: list[int], limit: int, cap: int, what: str) -> str:
        if len(ids) <= limit:
            return ""
        kept = min(len(ids), cap)
        note = f"{what} chunked: {kept} tokens in {math.ceil(kept / limit)} chunks of {limit}"
        if len(ids) > cap:
            note += f"; cut at max_prompt_tokens={cap}, dropped {tok.decode(ids[cap:]).strip()[:200]!r}"
        return note

    def _embed(self, id_lists: list[list[int]], n_chunks: int, limit: int) -> torch.Tensor:
        """Each prompt as ``n_chunks`` CLIP windows ([BOS] 75 tokens [EOS] padding), encoded
        separately and concatenated along the sequence: (batch, n_chunks * 77, dim). A
        one-chunk prompt gives exactly the pipeline's own encoding."""
        tok, enc = self.pipe.tokenizer, self.pipe.text_encoder
        bos, eos = tok.bos_token_id, tok.eos_token_id
        pad = tok.pad_token_id if tok.pad_token_id is not None else eos
        windows, masks = [], []
        for ids in id_lists:
            for c in range(n_chunks):
                part = ids[c * limit:(c + 1) * limit]
                windows.append([bos, *part, eos] + [pad] * (limit - len(part)))
                masks.append([1] * (len(part) + 2) + [0] * (limit - len(part)))
        input_ids = torch.tensor(windows, device=enc.device)
        use_mask = getattr(enc.config, "use_attention_mask", False)
        with torch.inference_mode():
            hidden = enc(input_ids, attention_mask=torch.tensor(masks, device=enc.device) if use_mask else None)[0]
        return hidden.reshape(len(id_lists), n_chunks * (limit + 2), hidden.shape[-1])

    # ------------------------------------------------------------ files and columns
    def _write(self, batch, i, image, gen_s: float, note: str, score: float) -> None:
        t0 = time.perf_counter()
        rel = f"{self.media_folder(str(batch['album_id'][i]))}/{image_name(str(batch['kind'][i]), int(batch['item_no'][i]))}"
        try:
            with self.out.writing(rel) as tmp:  # a temp file of this writer's own; OUT gets it whole or not at all
                image.save(tmp, format="PNG")
        except WriteError as e:  # disk full, permissions, a folder in the way: only this image fails
            self._fail(batch, i, str(e))
            return
        batch["status"][i] = STATUS_OK
        batch["error"][i] = ""
        batch["worker"][i] = json.dumps({**self.worker, "done": time.time()})
        batch["path"][i] = rel
        batch["paths"][i] = rel
        batch["width"][i], batch["height"][i] = image.size
        batch["gen_s"][i] = gen_s
        batch["encode_s"][i] = time.perf_counter() - t0
        batch["prompt_note"][i] = note
        batch["score"][i] = score
