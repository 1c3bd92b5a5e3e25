"""Exports of a project to other trainers (musubi-tuner, the recipe's original)."""

from .musubi import MusubiExport, musubi_export, write_musubi_export

__all__ = ["MusubiExport", "musubi_export", "write_musubi_export"]
