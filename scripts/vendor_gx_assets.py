"""Vendor the CDN assets of GX Data Docs into plugins/static/gx/ from their npm packages.

Run once when GX changes its asset list (``plugins/gx_assets.py`` holds it): ``npm pack`` of each
package version into a temporary folder, then the one file it needs (and Font Awesome's woff2
fonts) copied out. Needs ``npm`` and access to the npm registry; the result is committed.
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "plugins"))
from gx_assets import ASSETS, FONT_PACKAGE, GX_DIR, WEBFONTS  # noqa: E402


def pack(package: str, into: Path) -> Path:
    name = subprocess.run(
        ["npm", "pack", package, "--silent", "--pack-destination", str(into)],
        check=True, capture_output=True, text=True, timeout=300,
    ).stdout.strip().splitlines()[-1]  # fmt: skip
    return into / name


def extract(tarball: Path, member: str, target: Path) -> None:
    with tarfile.open(tarball) as tar:
        data = tar.extractfile(f"package/{member}")
        if data is None:
            raise SystemExit(f"{tarball.name} has no {member}")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data.read())


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        tarballs: dict[str, Path] = {}
        for package, member, local in ASSETS.values():
            if package not in tarballs:
                tarballs[package] = pack(package, Path(tmp))
            extract(tarballs[package], member, GX_DIR / local)
        for font in WEBFONTS:
            extract(tarballs[FONT_PACKAGE], f"webfonts/{font}", GX_DIR / "webfonts" / font)
    print(f"vendored {len(ASSETS)} assets and {len(WEBFONTS)} fonts into {GX_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
