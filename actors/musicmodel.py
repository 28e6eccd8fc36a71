"""What a loaded music model is, for the actors: the model and what its actor needs to know.

Its own module so that every engine (``actors.engines`` for real and tiny weights,
``actors.sim``) builds one without importing the other.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class MusicModel:
    model: object  # MusicgenForConditionalGeneration | MusicgenMelodyForConditionalGeneration
    processor: object  # MusicgenProcessor | MusicgenMelodyProcessor | None (see load_music)
    tokenizer: object  # the T5 tokenizer of the text prompts
    device: str
    sample_rate: int
    frame_rate: int  # audio frames (decoder steps) per second
    num_codebooks: int
    max_positions: int  # decoder positions the model was built for: caps the tokens of one generate() call
    audio_channels: int = 1  # 2: stereo checkpoints (codebooks interleaved left/right)
    prefix_positions: int = 0  # decoder positions taken before the audio (melody: chroma frames)
