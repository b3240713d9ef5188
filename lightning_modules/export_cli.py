"""Export a Lightning checkpoint of MuppetModule as a Hugging Face folder (lightning_modules/export.py):

    python -m lightning_modules.export_cli --checkpoint path/to/last.ckpt --output exported/
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lightning_modules.export import recorded_lengths, save_export
from lightning_modules.rebuild import module_from_checkpoint


def main(args: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="a Lightning checkpoint of MuppetModule")
    parser.add_argument("--output", required=True, help="folder to write")
    options = parser.parse_args(args)
    module = module_from_checkpoint(options.checkpoint)  # names a missing or damaged file
    lengths = recorded_lengths(Path(options.checkpoint), "--checkpoint")
    folder = save_export(module, Path(options.output), lengths=lengths)
    print(f"exported to {folder}")
    return folder


if __name__ == "__main__":
    main()
