"""Copy the README pictures from the journey browser test's screenshots into docs/images/.

    python -m pytest tests/e2e/test_journey.py      # writes test-artifacts/screenshots/journey-*.png
    python scripts/readme_images.py                 # crops, shrinks and writes docs/images/*.png

Each picture is cut to the part worth showing (the pages are long), kept at most 1280 pixels
wide, and reduced to a 256-colour palette without dithering (screenshots are flat colours and
text: they stay sharp and become a fraction of the size)."""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "test-artifacts" / "screenshots"
TARGET = ROOT / "docs" / "images"
MAX_WIDTH = 1280


@dataclass(frozen=True)
class Picture:
    source: str  # screenshot name without .png
    target: str  # file name in docs/images without .png
    max_height: int | None = None  # keep the top of long pages only
    caption: str = ""


PICTURES = (
    Picture("journey-11-home-qa", "home-qa", 900, "QA's home page: what waits for QA"),
    Picture("journey-05-batch-record", "batch-record", 1450, "Batch record: donor, cord, growth, steps, passages"),
    Picture("journey-07-potency-overlay", "potency-overlay", 1000, "BV2 potency: a scored field with cell outlines"),
    Picture("journey-12-release-review", "release-review", None, "QA release review with the e-signature"),
    Picture("journey-18-dispense-wrong-vial", "dispense-wrong-vial", 960, "Scan to dispense: a wrong vial is refused"),
    Picture("journey-21-certificate", "certificate", None, "Chain-of-custody certificate, first page"),
    Picture("journey-24-accountability", "accountability", 480, "Lot accountability"),
)


def optimise(image: Image.Image, max_height: int | None) -> Image.Image:
    """Crop to ``max_height``, shrink to MAX_WIDTH, reduce to a 256-colour palette."""
    image = image.convert("RGB")
    if max_height is not None and image.height > max_height:
        image = image.crop((0, 0, image.width, max_height))
    if image.width > MAX_WIDTH:
        image = image.resize((MAX_WIDTH, round(image.height * MAX_WIDTH / image.width)), Image.Resampling.LANCZOS)
    return image.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)


def build(source: Path = SOURCE, target: Path = TARGET, pictures=PICTURES) -> list[Path]:
    missing = [p.source for p in pictures if not (source / f"{p.source}.png").exists()]
    if missing:
        raise FileNotFoundError(f"missing screenshots in {source}: {', '.join(missing)} "
                                "(run: python -m pytest tests/e2e/test_journey.py)")
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for picture in pictures:
        with Image.open(source / f"{picture.source}.png") as image:
            out = target / f"{picture.target}.png"
            optimise(image, picture.max_height).save(out, optimize=True)
            written.append(out)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=SOURCE)
    parser.add_argument("--target", type=Path, default=TARGET)
    args = parser.parse_args(argv)
    try:
        written = build(args.source, args.target)
    except FileNotFoundError as error:
        print(error, file=sys.stderr)
        return 1
    for path in written:
        with Image.open(path) as image:
            print(f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}: "
                  f"{image.width}×{image.height}, {path.stat().st_size // 1024} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
