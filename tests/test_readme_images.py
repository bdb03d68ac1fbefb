"""scripts/readme_images.py: README pictures are cropped, at most 1280 px wide, palette PNGs, and
the script says which screenshots are missing instead of writing half a set."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("readme_images", ROOT / "scripts" / "readme_images.py")
readme_images = importlib.util.module_from_spec(spec)
sys.modules["readme_images"] = readme_images  # dataclasses look their module up
spec.loader.exec_module(readme_images)


def _screenshot(path: Path, width: int, height: int) -> None:
    image = Image.new("RGB", (width, height), (245, 246, 250))
    draw = ImageDraw.Draw(image)
    for y in range(0, height, 40):  # text-like stripes in a few colours
        draw.rectangle((20, y, width - 20, y + 12), fill=(20 + y % 200, 60, 120))
    image.save(path)


def test_pictures_are_cropped_shrunk_and_reduced_to_a_palette(tmp_path):
    source, target = tmp_path / "shots", tmp_path / "images"
    source.mkdir()
    pictures = (readme_images.Picture("tall", "tall-page", max_height=900),
                readme_images.Picture("wide", "wide-page"))
    _screenshot(source / "tall.png", 1280, 3000)
    _screenshot(source / "wide.png", 2560, 800)
    written = readme_images.build(source, target, pictures)
    assert [p.name for p in written] == ["tall-page.png", "wide-page.png"]
    with Image.open(target / "tall-page.png") as tall, Image.open(target / "wide-page.png") as wide:
        assert tall.size == (1280, 900)
        assert wide.size == (1280, 400)
        assert tall.mode == wide.mode == "P"
    assert (target / "tall-page.png").stat().st_size < (source / "tall.png").stat().st_size


def test_missing_screenshots_are_named_and_nothing_is_written(tmp_path, capsys):
    source, target = tmp_path / "shots", tmp_path / "images"
    source.mkdir()
    _screenshot(source / "journey-11-home-qa.png", 1280, 900)
    assert readme_images.main(["--source", str(source), "--target", str(target)]) == 1
    error = capsys.readouterr().err
    assert "journey-05-batch-record" in error and "journey-11-home-qa" not in error
    assert not target.exists()
