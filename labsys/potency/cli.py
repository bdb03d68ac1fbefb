"""`potency score`: score field images from the command line.

Mounted by the app as `flask --app wsgi potency score`; the command needs no application.

Output (stdout) is a JSON list with one object per field:
    {"file": str, "frame": int | null, "cell_count": int, "activated_count": int,
     "activation_fraction": float, "median_area_um2": float | null,
     "algorithm_version": str, "params": {"name": str, "version": int}}
`median_area_um2` is null for a field without cells. Exit code 0 when every file was read,
2 when any file was unreadable (reported on stderr, the others still scored) or the parameter
set is unknown.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import click
import numpy as np
import tifffile

from labsys.potency.analysis import score_field
from labsys.potency.image_files import UnreadableImage, read_fields
from labsys.potency.parameters import DEFAULT_PARAMETER_SET_NAME, get_parameter_set

potency_cli = click.Group("potency", help="BV2 potency image analysis.")


@potency_cli.command("score")
@click.argument("images", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--pixel-size-um", type=float, required=True, help="Pixel size in micrometres.")
@click.option("--params", "params_name", default=DEFAULT_PARAMETER_SET_NAME, show_default=True,
              help="Name of the parameter set.")
@click.option("--labels-out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for 16-bit label TIFFs (<stem>-labels.tif or <stem>-f<frame>-labels.tif).")
@click.option("--json", "as_json", is_flag=True, help="Print results as JSON (the only output format; accepted for the contract).")
@click.option("--channel", type=int, default=None, help="Channel of multichannel images (0-based).")
def score_command(images: tuple[Path, ...], pixel_size_um: float, params_name: str, labels_out: Path | None,
                  as_json: bool, channel: int | None) -> None:
    """Score each field of IMAGE... and print one JSON object per field."""
    try:
        params = get_parameter_set(params_name)
    except KeyError as error:
        click.echo(f"Error: {error.args[0]}", err=True)
        sys.exit(2)
    if pixel_size_um <= 0:
        click.echo("Error: --pixel-size-um must be positive.", err=True)
        sys.exit(2)
    if labels_out is not None:
        labels_out.mkdir(parents=True, exist_ok=True)
    results = []
    failed = False
    for path in images:
        try:
            fields = read_fields(path, channel=channel)
        except UnreadableImage as error:
            click.echo(f"Error: {error}", err=True)
            failed = True
            continue
        for frame, image in fields:
            result = score_field(image, pixel_size_um, params, exclude_border=True)
            median = result.median_area_um2
            results.append({
                "file": str(path),
                "frame": frame,
                "cell_count": result.cell_count,
                "activated_count": result.activated_count,
                "activation_fraction": result.activation_fraction,
                "median_area_um2": None if math.isnan(median) else median,
                "algorithm_version": result.algorithm_version,
                "params": {"name": params.name, "version": params.version},
            })
            if labels_out is not None:
                suffix = "-labels.tif" if frame is None else f"-f{frame}-labels.tif"
                tifffile.imwrite(labels_out / f"{path.stem}{suffix}", result.labels.astype(np.uint16))
    click.echo(json.dumps(results, indent=2))
    if failed:
        sys.exit(2)
