"""wan22-loratrain: train Wan 2.2 LoRAs with the AI_Characters recipe."""

__version__ = "0.1.0"
